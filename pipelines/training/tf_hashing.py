"""XXH64 of strings as TensorFlow ops, so an exported graph finds a token's OOV bucket as Spark did.

The same algorithm as feature_spec/hashing.py (the plain-Python reference, checked against Spark), vectorized over
a batch of strings of any lengths: each string's UTF-8 bytes become a zero-padded row, and every step of the
algorithm (32-byte stripes, then 8-byte words, a 4-byte word, single bytes) runs on all rows at once, masked
where a row has no such step. Arithmetic is on uint64, which wraps as the algorithm requires.
"""

from __future__ import annotations

import tensorflow as tf

from feature_spec.hashing import SPARK_SEED

_P1 = 0x9E3779B185EBCA87
_P2 = 0xC2B2AE3D27D4EB4F
_P3 = 0x165667B19E3779F9
_P4 = 0x85EBCA77C2B2AE63
_P5 = 0x27D4EB2F165667C5
_MASK = (1 << 64) - 1


def _u(value: int) -> tf.Tensor:
    return tf.constant(value & _MASK, tf.uint64)


def _rotl(x: tf.Tensor, r: int) -> tf.Tensor:
    return tf.bitwise.bitwise_or(tf.bitwise.left_shift(x, _u(r)), tf.bitwise.right_shift(x, _u(64 - r)))


def _round(acc: tf.Tensor, lane: tf.Tensor) -> tf.Tensor:
    return _rotl(acc + lane * _u(_P2), 31) * _u(_P1)


def _merge(acc: tf.Tensor, lane: tf.Tensor) -> tf.Tensor:
    return tf.bitwise.bitwise_xor(acc, _round(tf.zeros_like(lane), lane)) * _u(_P1) + _u(_P4)


def _word(data: tf.Tensor, start: tf.Tensor, size: int) -> tf.Tensor:
    """The little-endian `size`-byte word of each row of `data` ([n, width] uint64 bytes) at `start` ([n])."""
    positions = start[:, None] + tf.range(size, dtype=start.dtype)[None, :]
    width = tf.shape(data, out_type=start.dtype)[1]
    taken = tf.gather(data, tf.minimum(positions, width - 1), batch_dims=1)  # past the end: masked by the caller
    shifts = tf.constant([8 * k for k in range(size)], tf.uint64)
    return tf.reduce_sum(tf.bitwise.left_shift(taken, shifts), axis=1)  # the bytes do not overlap: sum == or


def xxhash64(strings: tf.Tensor, seed: int = SPARK_SEED) -> tf.Tensor:
    """Signed int64 XXH64 of each string of the 1-D `strings` (its UTF-8 bytes), as Spark's `xxhash64` returns."""
    strings = tf.convert_to_tensor(strings, tf.string)
    n = tf.strings.length(strings, unit="BYTE")
    nbytes = tf.cast(n, tf.int64)
    chars = tf.strings.bytes_split(strings)  # ragged [rows, bytes] of 1-byte strings
    flat_bytes = tf.reshape(tf.io.decode_raw(tf.reshape(chars.flat_values, [-1, 1]), tf.uint8), [-1])
    data = tf.RaggedTensor.from_row_splits(tf.cast(flat_bytes, tf.uint64), chars.row_splits).to_tensor(0)
    data = tf.pad(data, [[0, 0], [0, 1]])  # at least one column, for an empty batch or only empty strings
    rows = tf.shape(strings)[0]
    full = lambda value: tf.fill([rows], _u(value))  # noqa: E731

    # 32-byte stripes, for strings of 32 bytes or more.
    stripes = tf.where(nbytes >= 32, nbytes // 32, 0)
    v = [full(seed + _P1 + _P2), full(seed + _P2), full(seed), full(seed - _P1)]

    def stripe(j, v1, v2, v3, v4):
        active = j < stripes
        start = tf.fill([rows], j * 32)
        lanes = [_word(data, start + 8 * k, 8) for k in range(4)]
        updated = [_round(acc, lane) for acc, lane in zip((v1, v2, v3, v4), lanes)]
        return (j + 1, *[tf.where(active, new, old) for new, old in zip(updated, (v1, v2, v3, v4))])

    most = tf.reduce_max(tf.concat([stripes, [0]], 0))  # the loop runs for the longest string's stripes
    _, *v = tf.while_loop(
        lambda j, *_: j < most,
        stripe,
        [tf.constant(0, tf.int64), *v],
    )
    long = _rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)
    for acc in v:
        long = _merge(long, acc)
    h = tf.where(nbytes >= 32, long, full(seed + _P5)) + tf.cast(nbytes, tf.uint64)
    i = stripes * 32

    # The rest: up to three 8-byte words, one 4-byte word, up to three single bytes.
    for _ in range(3):
        active = i + 8 <= nbytes
        mixed = _rotl(tf.bitwise.bitwise_xor(h, _round(full(0), _word(data, i, 8))), 27) * _u(_P1) + _u(_P4)
        h, i = tf.where(active, mixed, h), tf.where(active, i + 8, i)
    active = i + 4 <= nbytes
    mixed = _rotl(tf.bitwise.bitwise_xor(h, _word(data, i, 4) * _u(_P1)), 23) * _u(_P2) + _u(_P3)
    h, i = tf.where(active, mixed, h), tf.where(active, i + 4, i)
    for _ in range(3):
        active = i < nbytes
        mixed = _rotl(tf.bitwise.bitwise_xor(h, _word(data, i, 1) * _u(_P5)), 11) * _u(_P1)
        h, i = tf.where(active, mixed, h), tf.where(active, i + 1, i)

    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, _u(33))) * _u(_P2)
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, _u(29))) * _u(_P3)
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, _u(32)))
    return tf.bitcast(h, tf.int64)


def oov_bucket(strings: tf.Tensor, buckets: int, first: int = 1, seed: int = SPARK_SEED) -> tf.Tensor:
    """int64 index of each string's OOV bucket among `buckets` rows from `first` (Spark's pmod of the hash)."""
    if int(buckets) < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    if int(buckets) == 1:
        return tf.fill(tf.shape(strings, out_type=tf.int64), tf.constant(int(first), tf.int64))
    return int(first) + tf.math.floormod(xxhash64(strings, seed), tf.constant(int(buckets), tf.int64))
