"""One pass over events sorted by a key: the machinery features/history.py runs its kernels in.

Impressions (every column carried through) and the few click columns a pass needs are unioned into one
stream, shuffled by the key and sorted by (key, ts, ...) within each partition; `mapInArrow` hands each
partition to numpy in chunks of whole Arrow batches. The key whose rows cross a chunk boundary carries its
events of the last `horizon` (older ones can no longer count) into the next chunk, so memory is bounded by
a chunk of rows plus one key's horizon of narrow events, never by a key's whole history.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

CHUNK_ROWS = 1 << 16  # rows handed to numpy at once (at least): bounds the wide rows a task holds
OUT_BATCH_ROWS = 1 << 14  # Arrow batches handed back to the JVM
CLICK = "_history_click"  # internal column of the unioned stream: the row is a click
# On the rows of values computed by an earlier pass (`attached`): they sort just before their impression.
_ATTACHED = "_history_attached"
# On impressions that are history events only (a day build's lookback): they count, but get no features.
_HISTORY_ONLY = "_history_only"

Features = dict[str, pa.Array]


def segments(keys: pa.Array) -> np.ndarray:
    """Segment number of each row of a key-sorted column: a new segment starts where the key changes."""
    if len(keys) < 2:
        return np.zeros(len(keys), dtype=np.int64)
    later, earlier = keys.slice(1), keys.slice(0, len(keys) - 1)
    changed = pc.fill_null(pc.not_equal(later, earlier), True)
    changed = pc.and_not(changed, pc.and_(pc.is_null(later), pc.is_null(earlier)))  # null, null: same key
    return np.concatenate([[0], np.cumsum(changed.to_numpy(zero_copy_only=False), dtype=np.int64)])


def column(table: pa.Table, name: str, null=None) -> np.ndarray:
    values = table.column(name) if null is None else pc.fill_null(table.column(name), null)
    return values.combine_chunks().to_numpy(zero_copy_only=False)


def _chunks(batches: Iterator[pa.RecordBatch], min_rows: int) -> Iterator[pa.Table]:
    """Consecutive batches joined into tables of at least `min_rows` rows (the last may be smaller)."""
    pending, rows = [], 0
    for batch in batches:
        if batch.num_rows:
            pending.append(batch)
            rows += batch.num_rows
        if pending and rows >= min_rows:
            yield pa.Table.from_batches(pending)
            pending, rows = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


class _Attached:
    """The rows of values an earlier pass computed, waiting for the impression with the same `row_key`.

    They sort just before their impression, so when an impression arrives its row has been seen, in its
    chunk or an earlier one; a row is dropped once matched, so only the rows at a chunk's edge wait."""

    def __init__(self, row_key: str, columns: list[str]):
        self.row_key, self.columns, self.waiting = row_key, columns, None

    def take(self, chunk: pa.Table) -> pa.Table:
        """`chunk` without its attached rows, which join the waiting ones."""
        is_attached = column(chunk, _ATTACHED, null=False).astype(bool)
        arrived = chunk.filter(pa.array(is_attached)).select([self.row_key, *self.columns])
        self.waiting = arrived if self.waiting is None else pa.concat_tables([self.waiting, arrived])
        return chunk.filter(pa.array(~is_attached))

    def values_of(self, rows: pa.Table) -> dict[str, pa.Array]:
        """The attached values of each of `rows` (impressions), in their order; matched rows stop waiting."""
        keys = rows.column(self.row_key).combine_chunks()
        waiting = self.waiting.combine_chunks()
        position = pc.index_in(keys, value_set=waiting.column(self.row_key).combine_chunks())
        if position.null_count:
            missing = pc.filter(keys, pc.is_null(position))[0].as_py()
            raise RuntimeError(f"no attached values for the impression with {self.row_key}={missing!r}")
        values = {name: waiting.column(name).combine_chunks().take(position) for name in self.columns}
        matched = np.zeros(waiting.num_rows, dtype=bool)
        matched[position.to_numpy(zero_copy_only=False)] = True
        self.waiting = waiting.filter(pa.array(~matched))
        return values


def sorted_pass(
    batches: Iterator[pa.RecordBatch],
    key: str,
    horizon: int,
    event_columns: list[str],
    output_columns: list[str],
    compute: Callable[[pa.Table, np.ndarray, np.ndarray], Features],
    chunk_rows: int,
    attached: _Attached | None = None,
) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: `batches` are impression and click rows sorted by (key, ts, ...). Yields the
    impressions (`output_columns`) with the features `compute(events, segment, query)` gives them, then
    the `attached` values of each; impressions flagged history-only are events and yield nothing.

    The last key of a chunk may continue in the next one: its events within `horizon` of its latest time
    (all that can still count) are carried over, as events only, ahead of the next chunk's rows.
    """
    carried = None
    # Chunks do not grow with the carried events: wide rows stay bounded, and a key with more lookback
    # events than a chunk only has its narrow events re-read by each chunk.
    for chunk in _chunks(batches, chunk_rows):
        if attached is not None:
            chunk = attached.take(chunk)
            if not chunk.num_rows:
                continue
        events = chunk.select(event_columns)
        if carried is not None:
            events = pa.concat_tables([carried, events])
        segment = segments(events.column(key).combine_chunks())
        is_query = ~column(chunk, CLICK).astype(bool)
        if _HISTORY_ONLY in chunk.column_names:
            is_query &= ~column(chunk, _HISTORY_ONLY, null=False).astype(bool)
        if is_query.any():
            query = np.concatenate([np.zeros(events.num_rows - chunk.num_rows, dtype=bool), is_query])
            rows = chunk.filter(pa.array(is_query)).select(output_columns)
            added = compute(events, segment, query)
            if attached is not None:
                added.update(attached.values_of(rows))
            for name, values in added.items():
                rows = rows.append_column(name, values)
            yield from rows.combine_chunks().to_batches(max_chunksize=OUT_BATCH_ROWS)

        ts = column(events, "ts")
        tail = (segment == segment[-1]) & (ts >= ts[-1] - horizon)
        carried = events.filter(pa.array(tail))


def with_features(
    impressions: DataFrame,
    clicks: DataFrame,
    key: str,
    click_columns: dict[str, Column],
    sort: list[str],
    event_columns: list[str],
    added: list[T.StructField],
    horizon: int,
    compute: Callable[[pa.Table, np.ndarray, np.ndarray], Features],
    attached: tuple[DataFrame, str] | None = None,
    history_only: DataFrame | None = None,
) -> DataFrame:
    """`impressions` with the `added` features of one pass by `key`: impressions and the click columns
    the pass needs in one stream, shuffled by `key` and sorted by `sort` within partitions; every
    impression column is carried through.

    `history_only`: more impressions (the event columns the pass reads), counted as history events
    only: they get no features and are not output.

    `attached` = (rows, row key): narrow rows of values an earlier pass computed per impression (the sort
    columns, the row key and the values), shuffled in the same stream and appended to their impression:
    no join of the wide rows."""
    flagged = impressions.withColumn(CLICK, F.lit(False))
    click_rows = clicks.select(
        *[
            column.cast(impressions.schema[name].dataType).alias(name)
            if name in impressions.columns
            else column.alias(name)
            for name, column in click_columns.items()
        ],
        F.lit(True).alias(CLICK),
    )
    stream = flagged.unionByName(click_rows, allowMissingColumns=True)
    if history_only is not None:
        past = history_only.select(
            *[F.col(name).cast(impressions.schema[name].dataType) for name in history_only.columns],
            F.lit(False).alias(CLICK),
            F.lit(True).alias(_HISTORY_ONLY),
        )
        stream = stream.unionByName(past, allowMissingColumns=True)
    order = [F.col(name) for name in sort]
    fields, carry = list(impressions.schema.fields) + added, None
    if attached is not None:
        rows, row_key = attached
        values = [c for c in rows.columns if c not in sort and c != row_key]
        carry = _Attached(row_key, values)
        tagged = rows.select(*sort, row_key, *values).withColumns({CLICK: F.lit(False), _ATTACHED: F.lit(True)})
        stream = stream.withColumn(_ATTACHED, F.lit(False)).unionByName(tagged, allowMissingColumns=True)
        order.append(F.col(_ATTACHED).desc())  # before the impression it belongs to
        fields += [rows.schema[name] for name in values]
    stream = stream.repartition(key).sortWithinPartitions(*order)
    output, chunk_rows = list(impressions.columns), CHUNK_ROWS
    return stream.mapInArrow(
        lambda batches: sorted_pass(batches, key, horizon, event_columns, output, compute, chunk_rows, carry),
        T.StructType(fields),
    )
