"""The embedded synthetic raw data: the click model's events written as Parquet (impressions, clicks, items).

numpy + pyarrow, no Spark. Time is simulated hour by hour, vectorized over the
impressions of an hour (`sources/click_model.py`, where the click model is
documented with its formula); the rows are buffered and written as one Parquet
file per chunk (RAW/impressions/part-00000.parquet, RAW/clicks/part-00000.parquet,
...) as the simulation goes, so memory stays bounded whatever the number of
impressions: only per-user and per-item state is kept. RAW/items/part-00000.parquet
holds the whole catalog. Everything is written to a hidden staging directory beside
RAW and swapped into place at the end (pipelines/publish.py), so a failed run leaves
nothing half-written. An existing RAW is replaced only when it is an earlier output
of this generator (it holds _generator.json) or empty; otherwise `generate` raises
OutputRefused. The same arguments give byte-identical files.

Each impression carries `p_click`, the true probability its click was drawn with. With
`item_vector_dim` > 0, RAW/items also has `item_vec` (list<float>): each item's dense vector, a
noisy projection of its latent factors (`click_model.item_vectors`); the summary's
`item_vector_r2` says how much of the factors they hold.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.publish import StagedOutput
from sources.click_model import MAX_POSITION, NEVER, START_TS, Churn, Simulator, Timeline, World, item_vectors

log = logging.getLogger("generate_synthetic")

# The demo's world: 2,000 impressions per user, enough for the models to learn the user x item factors
# (deepfm reaches 0.965 of the true p_click's AUC; 2,000 users gave 100 per user and 0.82: docs/model_quality.md).
DEFAULTS = {"users": 100, "items": 150, "days": 28, "impressions": 200_000, "seed": 42}
VECTOR_COLUMN = "item_vec"
DEFAULT_VECTOR_NOISE = 0.5
MIN_ITEMS = MAX_POSITION  # a slate shows up to MAX_POSITION distinct items
MANIFEST = "_generator.json"  # also what marks RAW as an earlier output of the generator

IMPRESSIONS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("ts", pa.int64()),
        ("impression_id", pa.string()),
        ("position", pa.int32()),
        ("p_click", pa.float64()),
    ]
)
CLICKS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("ts", pa.int64()),
        ("impression_id", pa.string()),
    ]
)
ITEMS_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("genres", pa.string()),
        ("title", pa.string()),
        ("release_year", pa.int32()),
        ("duration_min", pa.float64()),
    ]
)


def _ids(prefix: str, n: int, width: int) -> pa.Array:
    """prefix + zero-padded 1-based number, for 0..n-1."""
    numbers = pc.cast(pa.array(np.arange(1, n + 1, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(numbers, width, "0"), "")


class ChunkWriter:
    """Buffers step outputs and writes one impressions and one clicks Parquet file per chunk."""

    def __init__(self, root: str, user_ids: pa.Array, item_ids: pa.Array, chunk_rows: int, total: int):
        self.root, self.user_ids, self.item_ids = root, user_ids, item_ids
        self.chunk_rows, self.total = chunk_rows, total
        self.id_width = max(9, len(str(total)))
        self.imps: list[dict] = []
        self.clicks: list[dict] = []
        self.buffered = 0
        self.parts = 0
        self.impressions_written = 0
        self.clicks_written = 0
        for name in ("impressions", "clicks", "items"):
            os.makedirs(os.path.join(root, name), exist_ok=True)

    def add(self, ev, first_index: int) -> None:
        """Buffer one step; `first_index` is the global number of its first impression."""
        n = ev.n_impressions
        self.imps.append(
            {
                "user": ev.imp_user,
                "item": ev.imp_item,
                "ts": ev.imp_ts,
                "position": ev.imp_position,
                "p_click": ev.imp_p_click,
                "index": np.arange(first_index, first_index + n),
            }
        )
        global_imp = np.where(ev.click_imp >= 0, ev.click_imp + first_index, -1)
        self.clicks.append(
            {
                "user": ev.click_user,
                "item": ev.click_item,
                "ts": ev.click_ts,
                "index": np.where(ev.click_has_id, global_imp, -1),
            }
        )
        self.buffered += n
        if self.buffered >= self.chunk_rows:
            self.flush()

    def _impression_ids(self, index: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
        text = pc.utf8_lpad(pc.cast(pa.array(index + 1), pa.string()), self.id_width, "0")
        ids = pc.binary_join_element_wise("imp", text, "")
        if valid is not None:
            ids = pc.if_else(pa.array(valid), ids, pa.scalar(None, pa.string()))
        return ids

    def flush(self) -> None:
        if not self.imps:
            return
        imp = {k: np.concatenate([c[k] for c in self.imps]) for k in self.imps[0]}
        clk = {k: np.concatenate([c[k] for c in self.clicks]) for k in self.clicks[0]}
        order = np.argsort(clk["ts"], kind="stable")
        clk = {k: v[order] for k, v in clk.items()}
        name = f"part-{self.parts:05d}.parquet"
        imp_table = pa.Table.from_arrays(
            [
                self.user_ids.take(pa.array(imp["user"])),
                self.item_ids.take(pa.array(imp["item"])),
                pa.array(imp["ts"], pa.int64()),
                self._impression_ids(imp["index"]),
                pa.array(imp["position"], pa.int32()),
                pa.array(imp["p_click"], pa.float64()),
            ],
            schema=IMPRESSIONS_SCHEMA,
        )
        click_table = pa.Table.from_arrays(
            [
                self.user_ids.take(pa.array(clk["user"])),
                self.item_ids.take(pa.array(clk["item"])),
                pa.array(clk["ts"], pa.int64()),
                self._impression_ids(np.maximum(clk["index"], 0), clk["index"] >= 0),
            ],
            schema=CLICKS_SCHEMA,
        )
        pq.write_table(imp_table, os.path.join(self.root, "impressions", name))
        pq.write_table(click_table, os.path.join(self.root, "clicks", name))
        self.parts += 1
        self.impressions_written += imp_table.num_rows
        self.clicks_written += click_table.num_rows
        self.imps, self.clicks, self.buffered = [], [], 0


def write_items(
    root: str, world: World, item_ids: pa.Array, vectors: np.ndarray | None = None, timeline: Timeline | None = None
) -> int:
    """RAW/items: every item there is (with churn, the later ones too, with the time each is on offer from
    and until: `released_ts`, `retired_ts`, null when it never retires)."""
    n = world.n_items
    years = pa.array(world.release_year.astype(np.int32), pa.int32(), mask=world.release_year_null)
    titles = pc.binary_join_element_wise("Item ", pc.cast(pa.array(np.arange(1, n + 1)), pa.string()), "")
    columns = [
        item_ids,
        pa.array(world.item_genre_names(), pa.string()),
        titles,
        years,
        pa.array(world.duration_min, pa.float64()),
    ]
    schema = ITEMS_SCHEMA
    if timeline is not None:
        retired = timeline.item_retire
        columns += [pa.array(timeline.item_release, pa.int64()), pa.array(retired, pa.int64(), mask=retired == NEVER)]
        schema = schema.append(pa.field("released_ts", pa.int64())).append(pa.field("retired_ts", pa.int64()))
    if vectors is not None:
        width = vectors.shape[1]
        offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
        columns.append(pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1), pa.float32())))
        schema = schema.append(pa.field(VECTOR_COLUMN, pa.list_(pa.float32())))
    table = pa.Table.from_arrays(columns, schema=schema)
    pq.write_table(table, os.path.join(root, "items", "part-00000.parquet"))
    return n


def generate(
    output: str,
    users: int = DEFAULTS["users"],
    items: int = DEFAULTS["items"],
    days: int = DEFAULTS["days"],
    impressions: int = DEFAULTS["impressions"],
    seed: int = DEFAULTS["seed"],
    chunk_rows: int | None = None,
    item_vector_dim: int = 0,
    item_vector_noise: float = DEFAULT_VECTOR_NOISE,
    churn: Churn | None = None,
) -> dict:
    """Write RAW at `output` (atomically); return a summary. `item_vector_dim` > 0 adds the items'
    dense vectors (column `item_vec`), with noise `item_vector_noise` (click_model.item_vectors).
    `churn` (click_model.Churn) makes a world whose items and users come (and items go) over the days:
    `users` and `items` are then the first day's."""
    started = time.perf_counter()
    if chunk_rows is None:
        chunk_rows = min(250_000, max(10_000, -(-impressions // 10)))
    rng = np.random.default_rng(seed)
    timeline, params = None, {"users": users, "items": items, "days": days, "impressions": impressions, "seed": seed}
    if churn is not None:
        timeline = Timeline(churn, users, items, days, seed)
        users, items = churn.totals(users, items, days)
    world = World(users, items, rng)
    vectors, vector_r2 = (None, None)
    if item_vector_dim:
        vectors, vector_r2 = item_vectors(world, int(item_vector_dim), float(item_vector_noise), seed)
    sim = Simulator(world, rng, days, impressions, timeline=timeline)
    user_ids = _ids("u", users, max(5, len(str(users))))
    item_ids = _ids("i", items, max(5, len(str(items))))
    stats = {"p_click_sum": 0.0, "clicked": 0, "late": 0, "orphans": 0, "with_id": 0}
    with StagedOutput(output, markers=[MANIFEST]) as stage:
        staging = stage.path
        writer = ChunkWriter(staging, user_ids, item_ids, chunk_rows, impressions)
        generated, next_decile = 0, 1
        for s in range(sim.n_steps):
            ev = sim.step(s)
            writer.add(ev, generated)
            generated += ev.n_impressions
            stats["p_click_sum"] += float(ev.imp_p_click.sum())
            orphan = ev.click_imp < 0
            stats["clicked"] += int((~orphan).sum())
            stats["orphans"] += int(orphan.sum())
            stats["late"] += int(ev.click_late.sum())
            stats["with_id"] += int(ev.click_has_id.sum())
            while next_decile < 10 and generated * 10 >= next_decile * impressions:
                log.info(
                    "%3d%%: %d of %d impressions simulated, %d written in %d part files",
                    next_decile * 10,
                    generated,
                    impressions,
                    writer.impressions_written,
                    writer.parts,
                )
                next_decile += 1
        writer.flush()
        log.info(
            "100%%: %d impressions and %d clicks written in %d part files",
            writer.impressions_written,
            writer.clicks_written,
            writer.parts,
        )
        n_items = write_items(staging, world, item_ids, vectors, timeline)
        summary = {
            "output": stage.final,
            "impressions": writer.impressions_written,
            "clicks": writer.clicks_written,
            "clicked_impressions": stats["clicked"],
            "click_rate": round(stats["clicked"] / max(1, writer.impressions_written), 5),
            "mean_p_click": round(stats["p_click_sum"] / max(1, writer.impressions_written), 5),
            "late_clicks": stats["late"],
            "orphan_clicks": stats["orphans"],
            "clicks_with_impression_id": stats["with_id"],
            "items": n_items,
            "users": users,
            "part_files": writer.parts,
            "time_range": [START_TS, START_TS + days * 86400],
            "params": params,
        }
        if timeline is not None:  # only then, as for vectors below
            summary["params"]["churn"] = dataclasses.asdict(churn)
            summary["items_released_later"] = int((timeline.item_release > START_TS).sum())
            summary["users_arrived_later"] = int((timeline.user_arrival > START_TS).sum())
        if vectors is not None:  # only then: the manifest without vectors stays what it always was
            summary["params"].update(item_vector_dim=int(item_vector_dim), item_vector_noise=float(item_vector_noise))
            summary["item_vector_r2"] = round(vector_r2, 4)
        with open(os.path.join(staging, MANIFEST), "w") as fh:  # no path: identical for a seed
            json.dump({k: v for k, v in summary.items() if k != "output"}, fh, indent=2, sort_keys=True)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary
