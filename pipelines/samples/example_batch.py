"""Vectorized encoding of an Arrow batch into serialized (and TFRecord-framed) `tf.train.Example` records.

Every row is laid out in one (rows, width) uint8 matrix made of slots, one slot per field of
the wire format, the same on every row: constant bytes (tags, keys), a varint as wide as the
batch's widest value of that field, packed floats, or a string as long as the batch's longest.
A boolean `keep` matrix of the same shape marks the bytes a row really has (a short varint,
a short string, a null feature's whole entry); one boolean compaction `matrix[keep]` then
yields all records back to back, so each output byte is written once and copied once.
There is no Python per row or per value and no protobuf object at all. Wire format,
outermost first:

    Example  = 0x0a len Features
    Features = (0x0a len Entry)*                      # map<string, Feature>
    Entry    = 0x0a len key 0x12 len Feature
    Feature  = 0x0a len BytesList | 0x12 len FloatList | 0x1a len Int64List
    Int64List = 0x0a len varint*  (packed);  FloatList = 0x0a len f32le*  (packed)
    BytesList = (0x0a len bytes)*

A null value leaves the feature out of that row's Example.

Block layout (`rows_per_record` n > 1, docs/feature_spec.md): one record is one Example whose
every feature holds the values of n consecutive rows one after another, so a block is laid
out as a row whose lists are n times wider: numeric values are reshaped from (rows, k) to
(rows / n, n * k), and strings (one length-delimited entry per value) by folding n rows'
entries side by side. A block cannot leave out one row's value: a null is written as the
reader's null value (`feature_spec.NULL_VALUES`: NaN, "", -1).

TFRecord framing (what `tf.io.TFRecordWriter` writes) is laid out in the same matrix:

    uint64le len | uint32le masked_crc32c(len) | data | uint32le masked_crc32c(data)
"""

from __future__ import annotations

from typing import NamedTuple

import google_crc32c
import numpy as np
import pyarrow as pa

from feature_spec import NULL_VALUES

_MASK_DELTA = 0xA282EAD8


class Ragged:
    """Per-row byte strings: `data` (uint8) holds row 0's bytes, then row 1's, ..."""

    __slots__ = ("data", "lengths")

    def __init__(self, data: np.ndarray, lengths: np.ndarray):
        self.data = data
        self.lengths = np.asarray(lengths, dtype=np.int64)


class Slot(NamedTuple):
    """One field of every row: `data` is bytes when constant, else a (rows, width) uint8 array.

    `keep` (rows, width) marks the bytes each row has (None: all of them); `present`
    (rows,) the rows that have the field at all (None: every row).
    """

    data: np.ndarray | bytes
    keep: np.ndarray | None = None
    present: np.ndarray | None = None


# ------------------------------------------------------------------ varints
def varint(value: int) -> bytes:
    """The protobuf base-128 varint of one int (negative ints as their 64-bit two's complement)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | int]:
    """Each row of `values` ((rows, n) int64) as packed varints, each slot as wide as the widest.

    Returns data and keep ((rows, n * width); keep is None when every byte is kept) and the
    encoded length of every row (an int when it is the same on every row, so that the
    headers above it stay constant). Negative int64 are their 64-bit two's complement
    (10 bytes), as protobuf encodes them.
    """
    u = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
    rows, n = u.shape
    top = int(u.max()) if u.size else 0
    width = max(1, (top.bit_length() + 6) // 7)
    if top < 2**32:
        u = u.astype(np.uint32)  # narrower arithmetic, same bits
    data = np.empty((rows, n, width), dtype=np.uint8)
    keep = np.ones((rows, n, width), dtype=bool)
    for group in range(width):
        data[..., group] = (u >> (7 * group)) & 0x7F
        if group + 1 < width:
            more = u >= (1 << (7 * (group + 1)))  # a further group follows
            data[..., group] |= more.view(np.uint8) << 7
            keep[..., group + 1] = more
    shape = (rows, n * width)
    if width == 1:
        return data.reshape(shape), None, n
    lengths = np.count_nonzero(keep.reshape(shape), axis=1).astype(np.int64)
    if rows and (lengths == lengths[0]).all():
        return data.reshape(shape), (None if lengths[0] == n * width else keep.reshape(shape)), int(lengths[0])
    return data.reshape(shape), keep.reshape(shape), lengths


def delimited(tag: int, body: list[Slot], length) -> tuple[list[Slot], object]:
    """`tag varint(length) body`, and its length; `length` is an int when the same on every row."""
    if isinstance(length, (int, np.integer)):
        header = bytes([tag]) + varint(int(length))
        if body and isinstance(body[0].data, bytes) and body[0].present is None:
            body = [Slot(header + body[0].data)] + body[1:]  # one constant slot, not two
        else:
            body = [Slot(header)] + body
        return body, len(header) + int(length)
    data, keep, width = varints(length[:, None])
    return [Slot(bytes([tag])), Slot(data, keep)] + body, 1 + width + length


# ------------------------------------------------------------------ columns
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


def _values(array: pa.Array, dtype) -> np.ndarray:
    """A scalar or fixed-length list column as a (rows, n) matrix (nulls as 0)."""
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        return _list_matrix(array, dtype)
    if dtype == np.float32:
        array = array.cast(pa.float64())  # so that decimals and ints convert too
    return np.asarray(array.fill_null(0).to_numpy(zero_copy_only=False), dtype=dtype)[:, None]


def _strings(array: pa.Array, mask: np.ndarray | None) -> tuple[Slot, np.ndarray]:
    """Each row's bytes in a slot as wide as the longest, and their lengths."""
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        raise ValueError("string lists are not supported by the batch encoder")
    kind = array.type
    if not (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
    ):
        array = array.cast(pa.string())
    array = array.cast(pa.large_binary())
    _, offset_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    lengths = np.diff(offsets)
    if mask is not None:
        lengths = np.where(mask, lengths, 0)  # a null's slot in the buffer is empty
    width = int(lengths.max()) if len(lengths) else 0
    positions = np.arange(width)
    if not width:
        return Slot(np.zeros((len(lengths), 0), dtype=np.uint8)), lengths
    flat = np.frombuffer(data_buffer, dtype=np.uint8)
    # Bytes past a row's end are read from the next rows (or the last byte) and never kept.
    data = flat[np.minimum(offsets[:-1, None] + positions, len(flat) - 1)]
    return Slot(data, positions < lengths[:, None]), lengths


def _int64_list(values: np.ndarray) -> tuple[list[Slot], object]:
    """`Feature.int64_list` of each row of `values` ((records, n) int64)."""
    if values.shape[1] == 0:
        return delimited(0x1A, [], 0)
    data, keep, packed = varints(values)
    inner, length = delimited(0x0A, [Slot(data, keep)], packed)
    return delimited(0x1A, inner, length)


def _float_list(values: np.ndarray) -> tuple[list[Slot], object]:
    """`Feature.float_list` of each row of `values` ((records, n) float32)."""
    if values.shape[1] == 0:
        return delimited(0x12, [], 0)
    raw = np.ascontiguousarray(values, dtype="<f4").view(np.uint8)
    inner, length = delimited(0x0A, [Slot(raw)], raw.shape[1])
    return delimited(0x12, inner, length)


def _as_blocks(values: np.ndarray, mask: np.ndarray | None, dtype: str, rows_per_record: int) -> np.ndarray:
    """(rows, k) values as (rows / n, n * k): each record is n consecutive rows, nulls as NULL_VALUES."""
    if mask is not None:
        values = np.where(mask[:, None], values, np.asarray(NULL_VALUES[dtype], dtype=values.dtype))
    return values.reshape(len(values) // rows_per_record, -1)


def _fold(slots: list[Slot], rows: int, rows_per_record: int) -> Slot:
    """Slots of `rows` rows as one slot of rows / n records, each holding n consecutive rows side by side."""
    data, keep = _layout(slots, rows)
    records = rows // rows_per_record
    return Slot(data.reshape(records, -1), keep.reshape(records, -1))


NUMPY_DTYPES = {"int64": np.int64, "float32": np.float32}


def feature_slots(
    array: pa.Array, dtype: str, rows_per_record: int = 1
) -> tuple[list[Slot], object, np.ndarray | None]:
    """The encoded `Feature` message of every record, its length, and the records that have a value.

    A record is one row, or with `rows_per_record` n > 1 a block of n consecutive rows
    (`len(array)` must then be a multiple of n), which always has a value.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    mask = _valid_mask(array)
    blocks = rows_per_record > 1
    if dtype == "string":
        slot, lengths = _strings(array, mask)  # a null row's string is empty: "" in a block
        entries, length = delimited(0x0A, [slot], lengths)  # each row's one BytesList value
        if blocks:
            entries, length = [_fold(entries, len(array), rows_per_record)], length.reshape(-1, rows_per_record).sum(1)
        return delimited(0x0A, entries, length) + (None if blocks else mask,)
    if dtype not in NUMPY_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}")
    values = _values(array, NUMPY_DTYPES[dtype])
    if blocks:
        values = _as_blocks(values, mask, dtype, rows_per_record)
    slots = _int64_list(values) if dtype == "int64" else _float_list(values)
    return slots + (None if blocks else mask,)


def _records(batch: pa.RecordBatch | pa.Table, rows_per_record: int) -> int:
    if rows_per_record < 1 or batch.num_rows % rows_per_record:
        raise ValueError(f"{batch.num_rows} rows do not make whole records of {rows_per_record} rows")
    return batch.num_rows // rows_per_record


def example_slots(
    batch: pa.RecordBatch | pa.Table, features: list[tuple[str, str]], rows_per_record: int = 1
) -> tuple[list[Slot], object]:
    """The slots of every record's serialized Example, and each record's Example length."""
    slots, features_length = [], np.zeros(_records(batch, rows_per_record), dtype=np.int64)
    for name, dtype in features:
        feature, length, mask = feature_slots(batch.column(name), dtype, rows_per_record)
        key = name.encode("utf-8")
        key_field = b"\x0a" + varint(len(key)) + key
        body, length = delimited(0x12, feature, length)
        entry, length = delimited(0x0A, [Slot(key_field)] + body, len(key_field) + length)
        if mask is not None:
            entry = [slot._replace(present=mask) for slot in entry]
            length = np.where(mask, length, 0)
        slots += entry
        features_length = features_length + length
    return delimited(0x0A, slots, features_length)


# ------------------------------------------------------------------ layout
def _width(slot: Slot) -> int:
    return len(slot.data) if isinstance(slot.data, bytes) else slot.data.shape[1]


def _present_spans(slots: list[Slot], bounds: list[int]):
    """(start, end, present) of the runs of consecutive slots sharing one `present` mask."""
    runs = []
    for slot, start, end in zip(slots, bounds, bounds[1:]):
        if slot.present is None:
            continue
        if runs and runs[-1][1] == start and runs[-1][2] is slot.present:
            runs[-1] = (runs[-1][0], end, slot.present)
        else:
            runs.append((start, end, slot.present))
    return runs


def _put(matrix: np.ndarray, start: int, end: int, block: np.ndarray) -> None:
    """matrix[:, start:end] = block, one (end - start)-byte item per row: numpy copies those
    several times faster than byte by byte."""
    if end > start:
        item = f"V{end - start}"
        matrix[:, start:end].view(item)[:] = np.ascontiguousarray(block).view(item)


def _layout(slots: list[Slot], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row's bytes in one (rows, width) matrix, and the (rows, width) mask of the bytes kept."""
    widths = [_width(slot) for slot in slots]
    bounds = np.cumsum([0] + widths).tolist()
    # Constants are written once into a template row, which then fills the whole matrix.
    template = b"".join(
        slot.data if isinstance(slot.data, bytes) else bytes(width) for slot, width in zip(slots, widths)
    )
    matrix = np.empty((rows, len(template)), dtype=np.uint8)
    matrix[:] = np.frombuffer(template, dtype=np.uint8)
    keep = np.ones(matrix.shape, dtype=bool)
    for slot, start, end in zip(slots, bounds, bounds[1:]):
        if not isinstance(slot.data, bytes):
            _put(matrix, start, end, slot.data)
        if slot.keep is not None:
            _put(keep, start, end, slot.keep)
    for start, end, present in _present_spans(slots, bounds):
        keep[np.flatnonzero(~present), start:end] = False
    return matrix, keep


def compact(slots: list[Slot], rows: int) -> np.ndarray:
    """All rows' kept bytes back to back: one (rows, width) matrix, one boolean compaction."""
    matrix, keep = _layout(slots, rows)
    return matrix[keep]


def encode_batch(batch: pa.RecordBatch | pa.Table, features: list[tuple[str, str]], rows_per_record: int = 1) -> Ragged:
    """Serialized Examples of `batch`, one per row or per block of `rows_per_record` rows, as a Ragged."""
    slots, lengths = example_slots(batch, features, rows_per_record)
    return Ragged(compact(slots, _records(batch, rows_per_record)), lengths)


def iter_records(encoded: Ragged):
    """The serialized Examples one by one, as bytes."""
    data = encoded.data
    ends = np.cumsum(encoded.lengths)
    start = 0
    for end in ends.tolist():
        yield data[start:end].tobytes()
        start = end


# ------------------------------------------------------------------ TFRecord framing
def _crc32c_table() -> np.ndarray:
    crc = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        crc = np.where(crc & 1, (crc >> 1) ^ np.uint32(0x82F63B78), crc >> 1).astype(np.uint32)
    return crc


_CRC32C_TABLE = _crc32c_table()


def crc32c_of_uint64(values: np.ndarray) -> np.ndarray:
    """CRC32C of each value's 8 little-endian bytes, table-driven over all values at once."""
    crc = np.full(len(values), 0xFFFFFFFF, dtype=np.uint32)
    for byte in np.ascontiguousarray(values, dtype="<u8").view(np.uint8).reshape(-1, 8).T:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ np.uint32(0xFFFFFFFF)


def masked(crc: np.ndarray) -> np.ndarray:
    """TFRecord's masked CRC: rotate right by 15 bits, add a constant (mod 2^32)."""
    crc = np.asarray(crc, dtype=np.uint64)
    return ((((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF).astype("<u4")


def _le_bytes(values: np.ndarray, dtype: str) -> Slot:
    raw = np.ascontiguousarray(values, dtype=dtype).view(np.uint8)
    return Slot(raw.reshape(len(values), np.dtype(dtype).itemsize))


def frame_batch(batch: pa.RecordBatch | pa.Table, features: list[tuple[str, str]], rows_per_record: int = 1) -> Ragged:
    """Every row (or block of `rows_per_record` rows) of `batch` as a TFRecord-framed serialized
    Example (what TFRecordWriter writes).

    The framing goes into the same layout as the Example, so the records are compacted
    once; only the data CRCs are filled in afterwards, one C call per record (measured: about
    0.3 us per 780-byte sample record, an eighth of this function's time).
    """
    slots, lengths = example_slots(batch, features, rows_per_record)
    header = [_le_bytes(lengths, "<u8"), _le_bytes(masked(crc32c_of_uint64(lengths)), "<u4")]
    framed = compact(header + slots + [Slot(bytes(4))], _records(batch, rows_per_record))
    ends = np.cumsum(lengths + 16)
    starts = ends - 4 - lengths
    blob = framed.tobytes()  # google_crc32c reads bytes only
    crcs = [google_crc32c.value(blob[s:e]) for s, e in zip(starts.tolist(), (ends - 4).tolist())]
    trailers = masked(np.array(crcs, dtype=np.uint64)).view(np.uint8).reshape(len(crcs), 4)
    framed[(ends - 4)[:, None] + np.arange(4)] = trailers
    return Ragged(framed, lengths + 16)
