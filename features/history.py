"""Point-in-time user history and item statistics.

Every feature of an impression at time `t` uses only events strictly before `t`
and no older than `t - lookback`: events in `[t - lookback, t)`. Events at `t`
itself, the impression's own included, never count for `t`, so impressions of
the same user (or item) at the same second all see the same history.

User history, from two kinds of event:

- a click enters history at the click's own time: it counts for `t` when
  `t - lookback <= click ts < t`;
- an impression that was not clicked (label 0) becomes a skip only once its
  attribution window has closed, at `impression ts + window`: it counts for `t`
  when `impression ts + window < t` and `impression ts >= t - lookback`.

`hist_click_items` / `hist_skip_items` are the last `max_len` of them, most
recent first (ties at one second: the larger item index first), padded with 0;
`hist_*_len` their lengths. `user_top_genres` are the `top_genres` most frequent
genres (padding 0 excluded; ties: the smaller index first) of the last
`genre_history_len` clicks, padded with 0. `user_impressions` / `user_clicks`
count all the user's impressions / clicks in `[t - lookback, t)`. For each item
vector column `v` (`items.vector_columns`), `user_v` is the mean of the vectors of
the clicks in `hist_click_items` (the last `max_len`), over those whose item has a
vector, and `user_v_len` how many that is; with none, `user_v` is null. `user_v` is
normalized with `v`'s statistics, so in the samples it is the mean of the clicked items'
normalized vectors, and zeros without any. Item
statistics count the item's impressions and clicks in `[t - lookback, t)` and
in `[t - recent, t)`.

How: one pass per key, one shuffle each. `point_in_time_features` runs the item
pass on narrow rows and lets its counts travel in the user pass's stream (each
row just before its impression), so the wide rows are shuffled once. The
impressions (every column, carried through) and the few click columns a pass
needs are unioned into one stream,
shuffled by the key (user for the history, item for the statistics) and sorted
by (key, ts, item) within each partition; `mapInArrow` hands each partition to
numpy. In one key's sorted events, a count over `[t - lookback, t)` is the
difference of two `searchsorted` positions, a last-N list is a gather just below
the upper one, and top genres count the tokens of each distinct window of clicks
once. No Python runs per row. `features/sorted_pass.py` runs the passes in
chunks of whole Arrow batches, so memory is bounded by a chunk of rows plus one
key's lookback of narrow events. Impressions given as `history_only` (a day
build's lookback) are events of both passes, on narrow rows, and make no output
row.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from features import declared
from features.declared import Declared
from features.sorted_pass import CLICK as _CLICK
from features.sorted_pass import Features, with_features
from features.sorted_pass import column as _column

_GENRES = "_history_genres"  # internal column of the unioned stream: the clicked item's genres
_VECTOR = "_history_vector_"  # + vector column: the clicked item's vector, on the click rows of the stream
_GENRE_TOKENS = "_history_genre_tokens"  # with raw ids: the clicked item's genres as strings
# With raw ids (output.raw_values): the raw form of the lists, as strings, for the test split's raw values.
RAW_LISTS = {
    "hist_click_items": "_raw_hist_click_items",
    "hist_skip_items": "_raw_hist_skip_items",
    "user_top_genres": "_raw_user_top_genres",
}
VECTOR_BLOCK_ROWS = 8192  # query rows whose last-N vectors are summed at once: bounds the temporaries


def pad_array(values: Column, length: int) -> Column:
    """The first `length` values, padded on the right with 0 to exactly `length`."""
    head = F.slice(values, 1, length)
    return F.concat(head, F.array_repeat(F.lit(0).cast("long"), F.lit(length) - F.size(head)))


# ---------------------------------------------------------------- numpy kernels
def _timeline(segment: np.ndarray, ts: np.ndarray, reach: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """(segment, time) -> one sorted int64 axis, for times down to `min ts - reach`: a time range of one
    key becomes a range of positions, found for all rows at once by `searchsorted`."""
    base = int(ts.min()) - reach - 1
    span = int(ts.max()) - base + 1
    if (int(segment.max()) + 1) * span >= 2**63:
        raise OverflowError(f"time span {span} s times {int(segment.max()) + 1} keys does not fit in int64")
    return lambda seg, t: seg * span + (t - base)


def _since(keys: np.ndarray, points: np.ndarray) -> np.ndarray:
    """How many of the sorted `keys` lie strictly before each point."""
    return np.searchsorted(keys, points, side="left")


def _last_n(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(values[hi-1], values[hi-2], ... down to lo) per row, at most n, padded with 0; and their lengths."""
    length = np.clip(hi - lo, 0, n)
    steps = np.arange(n)
    index = hi[:, None] - 1 - steps[None, :]
    index[steps[None, :] >= length[:, None]] = len(values)  # past the end: the padding appended below
    return np.append(values, 0).astype(np.int64, copy=False)[index], length


def _vector_matrix(lists: pa.Array, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(values [rows, length] float32, zeros where null; present [rows]) of a list<float> column
    whose non-null lists hold `length` values each (validation made sure of it)."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    present = np.asarray(lists.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    sizes = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    if (sizes[present] != length).any():
        raise ValueError(f"item vectors must all have length {length}, got lengths {sorted(set(sizes[present]))}")
    values = np.zeros((len(lists), length), dtype=np.float32)
    flat = pc.list_flatten(lists).to_numpy(zero_copy_only=False)
    values[present] = np.asarray(flat, dtype=np.float32).reshape(-1, length)
    return values, present


def _last_n_mean(
    values: np.ndarray, present: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the mean of the present rows among values[hi-1], values[hi-2], ... down to
    max(lo, hi - n) (the rows `_last_n` lists), and how many were present.

    Summed in float64 in that fixed order, most recent first, so a mean does not depend on how the
    rows were cut into chunks. Zeros where none was present.
    """
    width = values.shape[1]
    values = np.vstack([values, np.zeros((1, width), dtype=values.dtype)])  # row -1: padding
    present = np.append(present, False)
    length = np.clip(hi - lo, 0, n)
    mean = np.zeros((len(hi), width), dtype=np.float32)
    count = np.zeros(len(hi), dtype=np.int64)
    for start in range(0, len(hi), VECTOR_BLOCK_ROWS):
        rows = slice(start, start + VECTOR_BLOCK_ROWS)
        total = np.zeros((len(hi[rows]), width), dtype=np.float64)
        seen = np.zeros(len(hi[rows]), dtype=np.int64)
        for step in range(n):
            index = np.where(step < length[rows], hi[rows] - 1 - step, -1)
            use = present[index]
            total += np.where(use[:, None], values[index], 0.0)
            seen += use
        mean[rows] = total / np.maximum(seen, 1)[:, None]
        count[rows] = seen
    return mean, count


def _window_tokens(first: np.ndarray, last: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(window number, token) of every token > 0 in tokens[first[w]:last[w]], for all windows w at once."""
    sizes = last - first
    owner = np.repeat(np.arange(len(first)), sizes)
    token = tokens[np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes - first, sizes)]
    return owner[token > 0], token[token > 0]


def _top_tokens(start: np.ndarray, end: np.ndarray, offsets: np.ndarray, tokens: np.ndarray, k: int) -> np.ndarray:
    """Per row, the k most frequent tokens > 0 of the lists start..end-1 (ties: smaller token), padded with 0.

    `offsets`/`tokens` hold the lists flattened. Rows sharing a (start, end) window are counted once.
    """
    if not len(start) or not k:
        return np.zeros((len(start), k), dtype=np.int64)
    stride = len(offsets)
    windows, row_window = np.unique(start * stride + end, return_inverse=True)
    owner, token = _window_tokens(offsets[windows // stride], offsets[windows % stride], tokens)
    # Count each (window, token) ...
    order = np.lexsort((token, owner))
    owner, token = owner[order], token[order]
    new = np.ones(len(owner), dtype=bool)
    new[1:] = (owner[1:] != owner[:-1]) | (token[1:] != token[:-1])
    starts = np.flatnonzero(new)
    count = np.diff(np.append(starts, len(owner)))
    owner, token = owner[starts], token[starts]
    # ... then rank each window's tokens by count desc; the stable sort keeps the smaller token first on ties.
    order = np.lexsort((-count, owner))
    owner, token = owner[order], token[order]
    rank = np.arange(len(owner)) - np.searchsorted(owner, owner, side="left")
    top = rank < k
    per_window = np.zeros((len(windows), k), dtype=np.int64)
    per_window[owner[top], rank[top]] = token[top]
    return per_window[row_window]


def _lists(matrix: np.ndarray, value_type: pa.DataType | None = None, valid: np.ndarray | None = None) -> pa.Array:
    """Rows of a 2-d array as Arrow list<value_type> (default int64: Spark array<bigint>; float32:
    array<float>), null where not `valid` (None: every row valid)."""
    rows, width = matrix.shape
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32) if width else np.zeros(rows + 1, np.int32))
    values = pa.array(np.ascontiguousarray(matrix).reshape(-1), type=value_type or pa.int64())
    mask = None if valid is None else pa.array(~np.asarray(valid, dtype=bool))
    return pa.ListArray.from_arrays(offsets, values, mask=mask)


def _string_lists(strings: pa.Array, rows: np.ndarray, length: np.ndarray) -> pa.Array:
    """list<string> per row: strings[rows[r, :length[r]] - 1] (`rows` 1-based, as `_last_n` pads with 0)."""
    used = np.arange(rows.shape[1])[None, :] < length[:, None]
    offsets = pa.array(np.concatenate([[0], np.cumsum(length)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, strings.take(pa.array(rows[used] - 1)))


def _raw_lists(
    events: pa.Table,
    click: np.ndarray,
    skip: np.ndarray,
    spans: dict[str, tuple[np.ndarray, np.ndarray]],
    max_len: int,
    top: np.ndarray,
    genres: np.ndarray,
) -> Features:
    """The raw ids of the histories `_user_features` lists (the same rows, in the same order) and the raw
    genre of each top genre index (the first clicked genre string with that index: one of the tokens that
    the build mapped to it)."""
    item_id = events.column("item_id").combine_chunks().cast(pa.string())
    out = {}
    for name, rows in (("hist_click_items", click), ("hist_skip_items", skip)):
        lo, hi = spans[name]
        positions, length = _last_n(np.arange(1, int(rows.sum()) + 1), lo, hi, max_len)
        out[RAW_LISTS[name]] = _string_lists(pc.filter(item_id, pa.array(rows)), positions, length)
    tokens = pc.list_flatten(pc.filter(events.column(_GENRE_TOKENS).combine_chunks(), pa.array(click)))
    indices, first = np.unique(genres, return_index=True)
    rows = first[np.searchsorted(indices, top)] + 1 if len(indices) else np.zeros_like(top)
    out[RAW_LISTS["user_top_genres"]] = _string_lists(tokens, rows, (top > 0).sum(axis=1))
    return out


def _longs(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.int64, copy=False), type=pa.int64())


def _flat_lists(lists: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values) of a list column; a null list is empty, a null value 0 (padding)."""
    sizes = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    return offsets, pc.fill_null(pc.list_flatten(lists), 0).to_numpy(zero_copy_only=False)


def _user_features(
    events: pa.Table,
    seg: np.ndarray,
    query: np.ndarray,
    window: int,
    lookback: int,
    max_len: int,
    top_genres: int,
    genre_history_len: int,
    vector_columns: dict[str, int],
    raw_ids: bool = False,
) -> Features:
    """History of the `query` rows of user-sorted events (impressions and clicks); `seg` numbers the users.
    `raw_ids`: also the raw strings of the lists (RAW_LISTS)."""
    ts, item = _column(events, "ts"), _column(events, "item_idx", null=0)  # a missing item is padding
    click = _column(events, _CLICK).astype(bool)
    skip = ~click & (_column(events, "label", null=-1) == 0)
    at = _timeline(seg, ts, max(lookback, window))
    q_seg, q_ts = seg[query], ts[query]
    now, since = at(q_seg, q_ts), at(q_seg, q_ts - lookback)

    impression_keys, click_keys, skip_keys = (at(seg[rows], ts[rows]) for rows in (~click, click, skip))
    clicks_lo, clicks_hi = _since(click_keys, since), _since(click_keys, now)
    # A skip is known once its window has closed: impression ts + window < t.
    skips_lo, skips_hi = _since(skip_keys, since), _since(skip_keys, at(q_seg, q_ts - window))
    click_items, click_len = _last_n(item[click], clicks_lo, clicks_hi, max_len)
    skip_items, skip_len = _last_n(item[skip], skips_lo, skips_hi, max_len)

    offsets, genres = _flat_lists(pc.filter(events.column(_GENRES).combine_chunks(), pa.array(click)))
    genre_start = np.maximum(clicks_lo, clicks_hi - genre_history_len)
    top = _top_tokens(genre_start, clicks_hi, offsets, genres, top_genres)
    out = {
        "hist_click_items": _lists(click_items),
        "hist_skip_items": _lists(skip_items),
        "hist_click_len": _longs(click_len),
        "hist_skip_len": _longs(skip_len),
        "user_top_genres": _lists(top),
        "user_impressions": _longs(_since(impression_keys, now) - _since(impression_keys, since)),
        "user_clicks": _longs(clicks_hi - clicks_lo),
    }
    for name, length in vector_columns.items():
        clicked = pc.filter(events.column(_VECTOR + name).combine_chunks(), pa.array(click))
        values, present = _vector_matrix(clicked, length)
        mean, count = _last_n_mean(values, present, clicks_lo, clicks_hi, max_len)
        out[f"user_{name}"] = _lists(mean, pa.float32(), valid=count > 0)
        out[f"user_{name}_len"] = _longs(count)
    if raw_ids:
        spans = {"hist_click_items": (clicks_lo, clicks_hi), "hist_skip_items": (skips_lo, skips_hi)}
        out.update(_raw_lists(events, click, skip, spans, max_len, top, genres))
    return out


def _item_counts(events: pa.Table, seg: np.ndarray, query: np.ndarray, lookback: int, recent: int) -> Features:
    """Prior impressions and clicks of the `query` rows of item-sorted events, over lookback and recent."""
    ts, click = _column(events, "ts"), _column(events, _CLICK).astype(bool)
    at = _timeline(seg, ts, max(lookback, recent))
    q_seg, q_ts = seg[query], ts[query]
    now = at(q_seg, q_ts)
    out = {}
    for name, rows in (("impressions", ~click), ("clicks", click)):
        keys = at(seg[rows], ts[rows])
        before = _since(keys, now)
        out[f"item_{name}"] = _longs(before - _since(keys, at(q_seg, q_ts - lookback)))
        out[f"item_{name}_recent"] = _longs(before - _since(keys, at(q_seg, q_ts - recent)))
    return {name: out[name] for name in ITEM_STATISTICS}


# ---------------------------------------------------------------- the feature steps
def user_history_features(
    max_len: int, top_genres: int, vector_columns: dict[str, int] | None = None
) -> list[Declared]:
    """The model inputs `user_history` adds, in the order of its output columns (vector columns:
    item vector name -> length)."""
    features = [
        declared.sequence("hist_click_items", "item_id", max_len),
        declared.sequence("hist_skip_items", "item_id", max_len),
        declared.numeric("hist_click_len", count=True),
        declared.numeric("hist_skip_len", count=True),
        declared.multi_categorical("user_top_genres", "genre", top_genres),
        declared.numeric("user_impressions", count=True),
        declared.numeric("user_clicks", count=True),
    ]
    for name, length in (vector_columns or {}).items():
        # Normalized with the item vector's statistics: the user's vector is then the mean of the clicked
        # items' normalized vectors, in the same space as the target item's (dot products keep their meaning).
        features += [
            declared.vector(f"user_{name}", length, statistics_of=name),
            declared.numeric(f"user_{name}_len", count=True),
        ]
    return features


# The smoothed CTRs come from the counts and the train label rate, once it is fitted (`with_smoothed_ctr`).
SMOOTHED_CTR = {
    "item_ctr": ("item_clicks", "item_impressions"),
    "item_ctr_recent": ("item_clicks_recent", "item_impressions_recent"),
}
ITEM_STATISTICS_FEATURES = [
    declared.numeric("item_impressions", count=True),
    declared.numeric("item_clicks", count=True),
    declared.numeric("item_ctr"),
    declared.numeric("item_impressions_recent", count=True),
    declared.numeric("item_clicks_recent", count=True),
    declared.numeric("item_ctr_recent"),
]
ITEM_STATISTICS = [d.name for d in ITEM_STATISTICS_FEATURES if d.name not in SMOOTHED_CTR]  # what the pass counts


def _spark_field(feature: Declared) -> T.StructField:
    if feature.is_vector:
        return T.StructField(feature.name, T.ArrayType(T.FloatType()))
    return T.StructField(feature.name, T.ArrayType(T.LongType()) if feature.length is not None else T.LongType())


def user_history(
    impressions: DataFrame,
    clicks: DataFrame,
    window_seconds: int,
    lookback_seconds: int,
    max_len: int,
    top_genres: int,
    genre_history_len: int,
    vector_columns: dict[str, int] | None = None,
    attached: tuple[DataFrame, str] | None = None,
    history_only: DataFrame | None = None,
    raw_ids: bool = False,
) -> DataFrame:
    """Impressions with their user's point-in-time history.

    `impressions`: user_id, item_idx, ts, label (plus any other columns, kept).
    `clicks`: user_id, item_idx, ts, genre_idxs (indexed genres of the clicked item), and the
    clicked item's vector (array<float>, null when it has none) for each of `vector_columns`
    (name -> length).
    Adds: hist_click_items [max_len], hist_skip_items [max_len], hist_click_len,
    hist_skip_len, user_top_genres [top_genres], user_impressions, user_clicks; then per vector
    column `v`: user_v [length] (array<float>, null without any) and user_v_len.
    `attached` = (rows, row key): per-impression values of an earlier pass, appended last (see
    `_with_features`); the rows carry user_id, ts, item_idx, the row key and the values.
    `history_only`: earlier impressions (user_id, item_idx, ts, label) that count in the history but
    make no output row (a day build's lookback).
    `raw_ids`: also the lists as raw strings (RAW_LISTS: array<string>); then `clicks` and `history_only` carry
    item_id, and `clicks` the clicked item's genres (array<string>).
    """
    vector_columns = dict(vector_columns or {})
    added = [_spark_field(f) for f in user_history_features(max_len, top_genres, vector_columns)]
    if raw_ids:
        added += [T.StructField(name, T.ArrayType(T.StringType())) for name in RAW_LISTS.values()]

    def compute(events: pa.Table, segment: np.ndarray, query: np.ndarray) -> Features:
        features = _user_features(
            events,
            segment,
            query,
            window_seconds,
            lookback_seconds,
            max_len,
            top_genres,
            genre_history_len,
            vector_columns,
            raw_ids,
        )
        return {field.name: features[field.name] for field in added}  # Arrow columns go back by position

    click_columns = {
        "user_id": F.col("user_id"),
        "item_idx": F.col("item_idx"),
        "ts": F.col("ts"),
        _GENRES: F.col("genre_idxs").cast("array<bigint>"),
        **{_VECTOR + name: F.col(name).cast("array<float>") for name in vector_columns},
    }
    if raw_ids:
        click_columns.update({"item_id": F.col("item_id"), _GENRE_TOKENS: F.col("genres").cast("array<string>")})
    events = ["user_id", "ts", "item_idx", "label", _CLICK, _GENRES, *[_VECTOR + name for name in vector_columns]]
    # Sorted by item within a second: ties in the click and skip lists put the larger item first.
    return with_features(
        impressions,
        clicks,
        "user_id",
        click_columns,
        ["user_id", "ts", "item_idx"],
        events + (["item_id", _GENRE_TOKENS] if raw_ids else []),
        added,
        lookback_seconds,
        compute,
        attached,
        history_only,
    )


def item_statistics(
    impressions: DataFrame,
    clicks: DataFrame,
    lookback_seconds: int,
    recent_seconds: int,
    history_only: DataFrame | None = None,
) -> DataFrame:
    """Impressions with their item's prior impressions and clicks, over the lookback and a recent window.

    `impressions`: item_id, ts (plus any other columns, kept). `clicks`: item_id, ts.
    Adds item_impressions, item_clicks, item_impressions_recent, item_clicks_recent.
    `history_only`: earlier impressions (item_id, ts) that are counted but make no output row.
    """

    def compute(events: pa.Table, segment: np.ndarray, query: np.ndarray) -> Features:
        return _item_counts(events, segment, query, lookback_seconds, recent_seconds)

    return with_features(
        impressions,
        clicks,
        "item_id",
        {"item_id": F.col("item_id"), "ts": F.col("ts")},
        ["item_id", "ts"],
        ["item_id", "ts", _CLICK],
        [T.StructField(name, T.LongType()) for name in ITEM_STATISTICS],
        max(lookback_seconds, recent_seconds),
        compute,
        history_only=None if history_only is None else history_only.select("item_id", "ts"),
    )


def point_in_time_features(
    impressions: DataFrame,
    clicks: DataFrame,
    row_key: str,
    window_seconds: int,
    lookback_seconds: int,
    recent_seconds: int,
    max_len: int,
    top_genres: int,
    genre_history_len: int,
    vector_columns: dict[str, int] | None = None,
    history_only: DataFrame | None = None,
    raw_ids: bool = False,
) -> DataFrame:
    """`user_history`, then the `item_statistics` columns, with one shuffle of the wide rows.

    The item pass runs on narrow rows (the row key, user, item and time of each impression; `row_key`
    unique); its counts ride along the user pass's stream, each just before its impression, instead of
    a join or a second shuffle of every column. The columns and values are those of `user_history`
    followed by `item_statistics`.

    `history_only`: earlier impressions (user_id, item_id, item_idx, ts, label) that both passes count
    as events, on narrow rows, but that get no features and make no output row: a day build carries
    only its own day's impressions wide.

    `raw_ids`: also the lists as raw strings (`user_history`'s RAW_LISTS).
    """
    past_columns = ["user_id", "item_idx", "ts", "label"] + (["item_id"] if raw_ids else [])
    narrow = impressions.select(row_key, "user_id", "item_id", "item_idx", "ts")
    counts = item_statistics(narrow, clicks, lookback_seconds, recent_seconds, history_only).drop("item_id")
    return user_history(
        impressions,
        clicks,
        window_seconds,
        lookback_seconds,
        max_len,
        top_genres,
        genre_history_len,
        vector_columns,
        attached=(counts, row_key),
        history_only=None if history_only is None else history_only.select(*past_columns),
        raw_ids=raw_ids,
    )


def smoothed_ctr(clicks: str, impressions: str, prior: float, smoothing: float) -> Column:
    """(clicks + smoothing * prior) / (impressions + smoothing): the prior when nothing was seen."""
    return ((F.col(clicks) + smoothing * prior) / (F.col(impressions) + smoothing)).cast("double")


def with_smoothed_ctr(df: DataFrame, prior: float, smoothing: float) -> DataFrame:
    """Add item_ctr and item_ctr_recent from the item statistics and the train label rate `prior`."""
    for name, (clicks, impressions) in SMOOTHED_CTR.items():
        df = df.withColumn(name, smoothed_ctr(clicks, impressions, prior, smoothing))
    return df
