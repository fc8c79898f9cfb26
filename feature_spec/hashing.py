"""The hash that maps an out-of-vocabulary token to its OOV bucket, in plain Python.

The build computes it in Spark (`xxhash64` over the token's UTF-8 bytes, with Spark's fixed seed 42). This
module computes the same number without Spark, so that a serving system, a test or a notebook can find the
bucket of any token from the spec alone:

    bucket = oov_index + (xxhash64(token.encode("utf-8"), seed) mod K)      (K = the vocabulary's buckets)

`mod` is the non-negative remainder of the signed 64-bit hash (Spark's `pmod`). The algorithm is XXH64 as
its author specifies it (github.com/Cyan4973/xxHash, doc/xxhash_spec.md); tests check it against Spark's.
"""

from __future__ import annotations

import struct

HASH_FUNCTION = "xxhash64"
SPARK_SEED = 42  # Spark's xxhash64() always hashes with this seed

_MASK = (1 << 64) - 1
_P1 = 0x9E3779B185EBCA87
_P2 = 0xC2B2AE3D27D4EB4F
_P3 = 0x165667B19E3779F9
_P4 = 0x85EBCA77C2B2AE63
_P5 = 0x27D4EB2F165667C5


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _MASK


def _round(acc: int, lane: int) -> int:
    acc = (acc + lane * _P2) & _MASK
    return (_rotl(acc, 31) * _P1) & _MASK


def _merge(acc: int, lane: int) -> int:
    acc ^= _round(0, lane)
    return (acc * _P1 + _P4) & _MASK


def xxhash64(data: bytes, seed: int = SPARK_SEED) -> int:
    """XXH64 of `data` as a signed 64-bit integer (the value Spark's `xxhash64` returns)."""
    seed &= _MASK
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + _P1 + _P2) & _MASK, (seed + _P2) & _MASK, seed, (seed - _P1) & _MASK]
        while i + 32 <= n:
            lanes = struct.unpack_from("<4Q", data, i)
            v = [_round(acc, lane) for acc, lane in zip(v, lanes)]
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _MASK
        for acc in v:
            h = _merge(h, acc)
    else:
        h = (seed + _P5) & _MASK
    h = (h + n) & _MASK
    while i + 8 <= n:
        h ^= _round(0, struct.unpack_from("<Q", data, i)[0])
        h = (_rotl(h, 27) * _P1 + _P4) & _MASK
        i += 8
    if i + 4 <= n:
        h ^= (struct.unpack_from("<I", data, i)[0] * _P1) & _MASK
        h = (_rotl(h, 23) * _P2 + _P3) & _MASK
        i += 4
    while i < n:
        h ^= (data[i] * _P5) & _MASK
        h = (_rotl(h, 11) * _P1) & _MASK
        i += 1
    h ^= h >> 33
    h = (h * _P2) & _MASK
    h ^= h >> 29
    h = (h * _P3) & _MASK
    h ^= h >> 32
    return h - (1 << 64) if h >= 1 << 63 else h


def oov_bucket(token: str, buckets: int, first: int = 1, seed: int = SPARK_SEED) -> int:
    """The index of unseen `token` among `buckets` OOV rows that start at index `first`."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    return first + xxhash64(token.encode("utf-8"), seed) % buckets
