"""Vectorized encoding of an Arrow batch into serialized `tf.train.Example` records.

Each column becomes a "ragged" byte array (one flat uint8 buffer plus a length
per row) holding that feature's map entry for every row; headers are varints of
per-row lengths, computed with numpy; the entries of a row are then laid side
by side with one scatter per column. There is no Python per value and no
protobuf object at all. Wire format, outermost first:

    Example  = 0x0a len Features
    Features = (0x0a len Entry)*                      # map<string, Feature>
    Entry    = 0x0a len key 0x12 len Feature
    Feature  = 0x0a len BytesList | 0x12 len FloatList | 0x1a len Int64List
    Int64List = 0x0a len varint*  (packed);  FloatList = 0x0a len f32le*  (packed)
    BytesList = (0x0a len bytes)*

A null value leaves the feature out of that row's Example.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

_SHIFTS = np.arange(10, dtype=np.uint64) * np.uint64(7)


class Ragged:
    """Per-row byte strings: `data` (uint8) holds row 0's bytes, then row 1's, ..."""

    __slots__ = ("data", "lengths")

    def __init__(self, data: np.ndarray, lengths: np.ndarray):
        self.data = data
        self.lengths = lengths.astype(np.int64, copy=False)

    @staticmethod
    def constant(value: bytes, rows: int, mask: np.ndarray | None = None) -> "Ragged":
        """`value` on every row (or only where `mask` is true)."""
        block = np.frombuffer(value, dtype=np.uint8)
        if mask is None:
            return Ragged(np.tile(block, rows), np.full(rows, len(block)))
        return Ragged(np.tile(block, int(mask.sum())), np.where(mask, len(block), 0))

    @staticmethod
    def fixed(matrix: np.ndarray, mask: np.ndarray | None = None) -> "Ragged":
        """Rows of a (rows, width) uint8 matrix (dropping rows where `mask` is false)."""
        rows, width = matrix.shape
        if mask is None:
            return Ragged(matrix.reshape(-1), np.full(rows, width))
        return Ragged(matrix[mask].reshape(-1), np.where(mask, width, 0))


def varints(values: np.ndarray, mask: np.ndarray | None = None) -> Ragged:
    """Each row of `values` (shape (rows,) or (rows, n), int64) as packed varints.

    Negative int64 are encoded as their 64-bit two's complement (10 bytes), as protobuf does.
    """
    v = np.asarray(values)
    if v.ndim == 1:
        v = v[:, None]
    u = v.astype(np.int64, copy=False).view(np.uint64)
    groups = (u[..., None] >> _SHIFTS) & np.uint64(0x7F)  # (rows, n, 10)
    # Number of 7-bit groups: 1 + index of the highest non-zero group.
    nonzero = groups != 0
    count = np.where(nonzero.any(-1), 9 - np.argmax(nonzero[..., ::-1], axis=-1), 0) + 1
    keep = np.arange(10) < count[..., None]
    more = np.arange(10) < (count[..., None] - 1)
    encoded = (groups | (more.astype(np.uint64) << np.uint64(7))).astype(np.uint8)
    if mask is not None:
        keep = keep & mask[:, None, None]
    return Ragged(encoded[keep], keep.sum(axis=(1, 2)))


def concat_rows(parts: list[Ragged]) -> Ragged:
    """Row-wise concatenation: row i of the result is row i of each part, in order."""
    rows = len(parts[0].lengths)
    lengths = np.zeros(rows, dtype=np.int64)
    for part in parts:
        lengths += part.lengths
    starts = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    out = np.empty(int(starts[-1]), dtype=np.uint8)
    cursor = starts[:-1].copy()  # where the next part goes, per row
    for part in parts:
        if len(part.data):
            part_starts = np.zeros(rows, dtype=np.int64)
            np.cumsum(part.lengths[:-1], out=part_starts[1:])
            shift = np.repeat(cursor - part_starts, part.lengths)
            out[np.arange(len(part.data), dtype=np.int64) + shift] = part.data
        cursor += part.lengths
    return Ragged(out, lengths)


def length_delimited(tag: int, body: Ragged, mask: np.ndarray | None = None) -> Ragged:
    """`tag varint(len) body` per row; rows where `mask` is false stay empty."""
    rows = len(body.lengths)
    return concat_rows([Ragged.constant(bytes([tag]), rows, mask), varints(body.lengths, mask), body])


def _valid_mask(array: pa.Array) -> np.ndarray | None:
    if array.null_count == 0:
        return None
    return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _list_matrix(array: pa.Array, dtype) -> np.ndarray:
    """A list column whose rows all have the same length, as a (rows, n) matrix."""
    if array.null_count:
        raise ValueError("sequence features must not be null (pad them instead)")
    offsets = np.asarray(array.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    widths = np.diff(offsets)
    if len(widths) and (widths != widths[0]).any():
        raise ValueError("sequence features must have the same length on every row")
    width = int(widths[0]) if len(widths) else 0
    values = array.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    flat = np.asarray(values.to_numpy(zero_copy_only=False), dtype=dtype)
    return flat.reshape(len(array), width)


def _strings(array: pa.Array, mask: np.ndarray | None) -> Ragged:
    array = array.cast(pa.large_binary()) if not pa.types.is_large_binary(array.type) else array
    _, offset_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int64)[array.offset:array.offset + len(array) + 1]
    lengths = np.diff(offsets)
    data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0]:offsets[-1]] if data_buffer is not None \
        else np.zeros(0, np.uint8)
    if mask is not None:
        lengths = np.where(mask, lengths, 0)  # a null's slot in the buffer is empty
    return Ragged(data, lengths)


def feature_payload(array: pa.Array, dtype: str) -> tuple[Ragged, np.ndarray | None]:
    """The encoded `Feature` message of every row, and the rows that have a value."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    mask = _valid_mask(array)
    is_list = pa.types.is_list(array.type) or pa.types.is_large_list(array.type)
    if dtype == "int64":
        if is_list:
            values = _list_matrix(array, np.int64)
        else:
            values = np.asarray(array.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        packed = varints(values, mask)
        inner = length_delimited(0x0A, packed, mask if mask is not None else None)
        if values.ndim == 2 and values.shape[1] == 0:
            inner = Ragged(np.zeros(0, np.uint8), np.zeros(len(values), np.int64))
        return length_delimited(0x1A, inner, mask), mask
    if dtype == "float32":
        if is_list:
            values = _list_matrix(array, np.float32)
        else:
            values = np.asarray(array.cast(pa.float64()).fill_null(0).to_numpy(zero_copy_only=False),
                                dtype=np.float32)[:, None]
        raw = values.astype("<f4").view(np.uint8).reshape(len(values), -1)
        packed = Ragged.fixed(raw, mask)
        inner = length_delimited(0x0A, packed, mask) if raw.shape[1] else \
            Ragged(np.zeros(0, np.uint8), np.zeros(len(values), np.int64))
        return length_delimited(0x12, inner, mask), mask
    if dtype == "string":
        if is_list:
            raise ValueError("string lists are not supported by the batch encoder")
        if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
                or pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type)):
            array = array.cast(pa.string())
        value = length_delimited(0x0A, _strings(array, mask), mask)
        return length_delimited(0x0A, value, mask), mask
    raise ValueError(f"unsupported dtype {dtype!r}")


def encode_batch(batch: pa.RecordBatch | pa.Table, features: list[tuple[str, str]]) -> Ragged:
    """Serialized Examples of every row of `batch`, one per row, as a Ragged."""
    rows = batch.num_rows
    entries = []
    for name, dtype in features:
        payload, mask = feature_payload(batch.column(name), dtype)
        key = name.encode("utf-8")
        prefix = bytes([0x0A]) + bytes(varints(np.array([len(key)])).data) + key + bytes([0x12])
        body = concat_rows([Ragged.constant(prefix, rows, mask), varints(payload.lengths, mask), payload])
        entries.append(length_delimited(0x0A, body, mask))
    features_body = concat_rows(entries) if entries else Ragged(np.zeros(0, np.uint8), np.zeros(rows, np.int64))
    return length_delimited(0x0A, features_body)


def iter_records(encoded: Ragged):
    """The serialized Examples one by one, as bytes."""
    data = encoded.data
    ends = np.cumsum(encoded.lengths)
    start = 0
    for end in ends.tolist():
        yield data[start:end].tobytes()
        start = end
