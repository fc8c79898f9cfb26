"""sources/synthetic.py and its job: contract, determinism, click-log consistency and signal, on real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.generate_synthetic import main
from sources.click_model import GENRES, START_TS, step_counts
from sources.synthetic import DEFAULTS, generate
from tests.synthetic_checks import oracle_vs_popularity

ROOT = Path(__file__).resolve().parent.parent


def read(raw: Path, name: str) -> pd.DataFrame:
    return pq.read_table(raw / name).to_pandas()


@pytest.fixture(scope="module")
def default_raw(tmp_path_factory) -> tuple[Path, dict]:
    """The generator at its default size (a couple of seconds)."""
    raw = tmp_path_factory.mktemp("synthetic") / "raw"
    summary = generate(str(raw))
    return raw, summary


@pytest.fixture(scope="module")
def default_data(default_raw):
    raw, _ = default_raw
    return read(raw, "impressions"), read(raw, "clicks"), read(raw, "items")


def files_of(raw: Path) -> dict[str, bytes]:
    return {str(p.relative_to(raw)): p.read_bytes() for p in sorted(raw.rglob("*")) if p.is_file()}


def test_step_counts_sum_exactly_and_follow_a_daily_pattern():
    counts = step_counts(200_000, 28 * 24)
    assert counts.sum() == 200_000 and (counts >= 0).all()
    by_hour = counts.reshape(28, 24).sum(axis=0)
    assert by_hour.max() > 2 * by_hour.min()
    assert step_counts(7, 48).sum() == 7


# -- contract -----------------------------------------------------------------------------------


def test_schema_matches_the_raw_contract(default_raw):
    raw, _ = default_raw
    imp = pq.read_schema(next((raw / "impressions").glob("*.parquet")))
    assert imp.field("user_id").type == pa.string()
    assert imp.field("item_id").type == pa.string()
    assert imp.field("ts").type == pa.int64()
    assert imp.field("impression_id").type == pa.string()
    assert imp.field("position").type in (pa.int32(), pa.int64())
    assert imp.field("p_click").type == pa.float64()
    clk = pq.read_schema(next((raw / "clicks").glob("*.parquet")))
    assert [(f.name, f.type) for f in clk] == [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("ts", pa.int64()),
        ("impression_id", pa.string()),
    ]
    items = pq.read_schema(next((raw / "items").glob("*.parquet")))
    assert items.field("item_id").type == pa.string()
    assert items.field("genres").type == pa.string()
    assert items.field("title").type == pa.string()
    assert pa.types.is_integer(items.field("release_year").type)
    assert items.field("duration_min").type == pa.float64()


def test_spark_reads_the_output_with_contract_types(default_raw, spark):
    raw, _ = default_raw
    types = dict(spark.read.parquet(str(raw / "impressions")).dtypes)
    assert types["user_id"] == "string" and types["ts"] == "bigint" and types["p_click"] == "double"
    assert types["position"] in ("int", "bigint")


def test_impressions_rows_ids_positions_and_time(default_data, default_raw):
    imps, _, items = default_data
    _, summary = default_raw
    assert len(imps) == DEFAULTS["impressions"] == summary["impressions"]
    assert imps["impression_id"].is_unique and imps["impression_id"].notna().all()
    assert imps["user_id"].str.fullmatch(r"u\d{5}").all()
    assert imps["item_id"].str.fullmatch(r"i\d{5}").all()
    assert imps["position"].between(1, 10).all()
    pos_counts = imps["position"].value_counts().sort_index()
    assert (np.diff(pos_counts.to_numpy()) < 0).all()  # slates are short more often than long
    end = START_TS + DEFAULTS["days"] * 86400
    assert imps["ts"].between(START_TS, end - 1).all()
    by_hour = ((imps["ts"] - START_TS) // 3600 % 24).value_counts()
    assert by_hour.max() > 2 * by_hour.min()  # daily pattern
    # heavy-tailed popularity and activity
    item_share = imps["item_id"].value_counts(normalize=True)
    assert item_share.iloc[:10].sum() > 0.08  # top 1 % of items get > 8 % of impressions
    user_share = imps["user_id"].value_counts(normalize=True)
    assert user_share.iloc[: len(user_share) // 10].sum() > 0.3
    assert set(imps["item_id"]) <= set(items["item_id"])


def test_items_table(default_data):
    imps, _, items = default_data
    assert len(items) == DEFAULTS["items"] and items["item_id"].is_unique
    assert items.loc[items["item_id"] == "i00042", "title"].item() == "Item 42"
    genre_lists = items["genres"].str.split("|")
    assert genre_lists.map(len).between(1, 3).all()
    assert genre_lists.map(lambda g: len(set(g)) == len(g) and set(g) <= set(GENRES)).all()
    assert len(set(genre_lists.explode())) >= 12
    years = items["release_year"]
    # Each item's year is missing with probability 0.05 (click_model.World): within 4 standard errors.
    missing, n = years.isna().mean(), len(years)
    assert years.isna().any() and abs(missing - 0.05) < 4 * np.sqrt(0.05 * 0.95 / n)
    assert years.dropna().between(1950, 2025).all()
    assert items["duration_min"].notna().all() and (items["duration_min"] > 0).all()


def test_p_click_is_a_probability_and_matches_the_realized_rate(default_raw):
    raw, summary = default_raw
    cal = oracle_vs_popularity(str(raw))
    imps = read(raw, "impressions")
    p = imps["p_click"].to_numpy()
    assert ((p > 0) & (p < 1)).all()
    assert 0.05 <= cal["click_rate"] <= 0.25  # the default world is dense (2,000 impressions per user): about 0.19
    se = np.sqrt(cal["mean_p_click"] * (1 - cal["mean_p_click"]) / len(p))
    assert abs(cal["click_rate"] - cal["mean_p_click"]) < 4 * se + 1e-3
    assert summary["click_rate"] == pytest.approx(cal["click_rate"], abs=2e-3)


def test_oracle_beats_popularity_at_default_size(default_raw):
    raw, _ = default_raw
    cal = oracle_vs_popularity(str(raw))
    assert cal["oracle_auc"] >= cal["popularity_auc"] + 0.08, cal
    assert 0.72 <= cal["oracle_auc"] <= 0.9, cal


def test_every_click_credits_a_real_impression_or_is_late_or_orphan(default_data, default_raw):
    imps, clicks, _ = default_data
    _, summary = default_raw
    assert len(clicks) == summary["clicks"]
    by_id = imps.set_index("impression_id")
    with_id = clicks[clicks["impression_id"].notna()]
    assert with_id["impression_id"].isin(by_id.index).all()
    target = by_id.loc[with_id["impression_id"]]
    assert (target["user_id"].to_numpy() == with_id["user_id"].to_numpy()).all()
    assert (target["item_id"].to_numpy() == with_id["item_id"].to_numpy()).all()
    delay_with_id = with_id["ts"].to_numpy() - target["ts"].to_numpy()

    # Clicks without an id: the latest impression of the same user and item at most 2 h before, else orphan.
    anonymous = clicks[clicks["impression_id"].isna()].drop(columns="impression_id").sort_values("ts")
    matched = pd.merge_asof(
        anonymous,
        imps[["user_id", "item_id", "ts", "impression_id"]].rename(columns={"ts": "imp_ts"}).sort_values("imp_ts"),
        left_on="ts",
        right_on="imp_ts",
        by=["user_id", "item_id"],
        direction="backward",
        tolerance=7200,
    )
    orphans = matched["impression_id"].isna()
    delay_anonymous = (matched.loc[~orphans, "ts"] - matched.loc[~orphans, "imp_ts"]).to_numpy()
    delays = np.concatenate([delay_with_id, delay_anonymous])
    regular = (delays >= 1) & (delays < 1800)
    late = (delays >= 35 * 60) & (delays <= 120 * 60)
    # A random orphan click that lands within 2 h after an impression of its pair passes for a credit here: only
    # those (the orphans the summary counts and the as-of match missed) may have another delay.
    assert (~(regular | late)).sum() <= summary["orphan_clicks"] - orphans.sum()
    credited = len(delays)
    assert 0.01 <= late.sum() / credited <= 0.02
    assert 0.77 <= len(with_id) / credited <= 0.83
    assert 0.002 <= orphans.sum() / len(clicks) <= 0.01
    # A random orphan may land within 2 h after an impression of its pair (more often in a dense world: 7 of 190
    # in the default one), and the as-of match then takes it for a credit; never the other way round.
    assert 0 <= summary["orphan_clicks"] - orphans.sum() <= max(3, 0.05 * summary["orphan_clicks"])
    assert np.median(delays[regular]) < 180  # mean ~2 minutes, exponential
    # one click per clicked impression
    assert with_id["impression_id"].is_unique


# -- determinism, atomic output, bounded memory ----------------------------------------------------


def test_same_seed_identical_files_different_seed_different(tmp_path):
    args = dict(users=300, items=200, days=3, impressions=12_000, chunk_rows=4_000)
    generate(str(tmp_path / "a"), seed=7, **args)
    generate(str(tmp_path / "b"), seed=7, **args)
    generate(str(tmp_path / "c"), seed=8, **args)
    a, b, c = files_of(tmp_path / "a"), files_of(tmp_path / "b"), files_of(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys()
    assert a["impressions/part-00000.parquet"] != c["impressions/part-00000.parquet"]
    assert not read(tmp_path / "a", "impressions").equals(read(tmp_path / "c", "impressions"))


def test_item_vectors_are_optional_and_change_nothing_else(tmp_path, capsys):
    args = dict(users=100, items=80, days=2, impressions=3_000, seed=4)
    generate(str(tmp_path / "plain"), **args)
    assert (
        main(["--output", str(tmp_path / "vec"), *[f"--{k}={v}" for k, v in args.items()], "--item-vector-dim=6"]) == 0
    )
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    # the last line, on stderr (stdout stays JSON), says where the outputs are
    assert captured.err.splitlines()[-1] == f"outputs: {tmp_path / 'vec'} (impressions/, clicks/, items/)"
    plain, vec = files_of(tmp_path / "plain"), files_of(tmp_path / "vec")
    # Impressions and clicks are byte-identical: the vectors come from a random stream of their own.
    assert {k: v for k, v in plain.items() if not k.startswith(("items", "_"))} == {
        k: v for k, v in vec.items() if not k.startswith(("items", "_"))
    }
    items = pq.read_table(tmp_path / "vec" / "items")
    assert items.schema.field("item_vec").type == pa.list_(pa.float32())
    vectors = np.stack(items.column("item_vec").to_pylist())
    assert vectors.shape == (80, 6) and np.isfinite(vectors).all() and vectors.std() > 0.1
    assert items.drop_columns(["item_vec"]).equals(pq.read_table(tmp_path / "plain" / "items"))
    # How informative they are: most, not all, of the latent factors are recoverable from them.
    assert 0.3 < summary["item_vector_r2"] < 1.0
    manifest = json.loads((tmp_path / "vec" / "_generator.json").read_text())
    assert manifest["params"]["item_vector_dim"] == 6 and manifest["item_vector_r2"] == summary["item_vector_r2"]
    assert "item_vector_dim" not in json.loads((tmp_path / "plain" / "_generator.json").read_text())["params"]
    # Noise lowers what they hold.
    noisy = generate(str(tmp_path / "noisy"), **args, item_vector_dim=6, item_vector_noise=2.0)
    assert noisy["item_vector_r2"] < summary["item_vector_r2"]


def test_chunked_part_files_and_exact_row_count(tmp_path):
    raw = tmp_path / "raw"
    summary = generate(str(raw), users=500, items=300, days=5, impressions=25_003, chunk_rows=5_000, seed=1)
    parts = sorted((raw / "impressions").glob("part-*.parquet"))
    assert len(parts) >= 5 and summary["part_files"] == len(parts)
    assert sorted(p.name for p in (raw / "clicks").glob("part-*.parquet")) == [p.name for p in parts]
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in parts]
    assert sum(sizes) == 25_003
    assert max(sizes) < 5_000 + 1_000  # a chunk is flushed as soon as it reaches chunk_rows (+ one hour's rows)
    manifest = json.loads((raw / "_generator.json").read_text())
    assert manifest["impressions"] == 25_003 and manifest["params"]["seed"] == 1


def test_rerun_replaces_output_and_failure_leaves_it_untouched(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "_generator.json").write_text("{}")  # an earlier output of the generator
    (raw / "stale.txt").write_text("old")
    generate(str(raw), users=50, items=40, days=1, impressions=500, seed=3)
    assert not (raw / "stale.txt").exists()
    before = files_of(raw)
    with pytest.raises(ValueError):
        generate(str(raw), users=50, items=5, days=1, impressions=500, seed=3)  # too few items for a slate
    assert files_of(raw) == before
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no staging directory left behind


def test_main_prints_a_summary(tmp_path, capsys):
    assert (
        main(
            [
                "--output",
                str(tmp_path / "raw"),
                "--users",
                "100",
                "--items",
                "50",
                "--days",
                "2",
                "--impressions",
                "2000",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["impressions"] == 2000 and summary["output"] == str(tmp_path / "raw")
    assert 0 < summary["click_rate"] < 1


@pytest.mark.slow
def test_runs_as_a_module(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.generate_synthetic",
            "--output",
            str(tmp_path / "raw"),
            "--users",
            "50",
            "--items",
            "30",
            "--days",
            "1",
            "--impressions",
            "300",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["impressions"] == 300
    assert "100%" in out.stderr  # progress logged
