"""Are two builds' samples the same? Spec hash, and each split's parsed records as a multiset.

    python -m benchmarks.same_samples SAMPLES_A SAMPLES_B

A speed or memory change to build_samples must not change a single sample. Shards and row order
may differ (partitioning, shuffles), so each parsed row is reduced to a 64-bit hash of all its
feature values and the sorted hashes are compared. Rows stream through `tf.data`; memory is
8 bytes per row. Exit status 0 when both agree, 1 otherwise.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np


def _row_words(parsed: dict, names: list[str]) -> np.ndarray:
    """[rows, words] uint64: every feature's values of each row, as raw 64-bit words."""
    columns = []
    for name in names:
        values = parsed[name].numpy()
        if values.dtype == object:  # strings: hash each value
            flat = np.array([hash(v) & 0xFFFFFFFFFFFFFFFF for v in values.reshape(-1)], dtype=np.uint64)
            values = flat.reshape(values.shape)
        rows = values.reshape(len(values), -1)
        columns.append(rows.astype(np.float64).view(np.uint64) if rows.dtype.kind == "f" else rows.astype(np.uint64))
    return np.concatenate(columns, axis=1)


def row_hashes(samples_dir: str, split: str) -> np.ndarray:
    """Sorted 64-bit hashes of the split's rows."""
    import tensorflow as tf

    from feature_spec import all_features, load_spec
    from pipelines.training.dataset import record_parser

    spec = load_spec(samples_dir)
    names = sorted(entry["name"] for entry in all_features(spec))
    files = sorted(glob.glob(os.path.join(samples_dir, split, "part-*")))
    compression = "GZIP" if files and files[0].endswith(".gz") else ""
    dataset = tf.data.TFRecordDataset(files, compression_type=compression).batch(256).map(record_parser(spec))
    rng = np.random.default_rng(12345)
    coefficients = None
    out = []
    for parsed in dataset:
        words = _row_words(parsed, names)
        if coefficients is None:
            coefficients = rng.integers(1, 2**63, size=words.shape[1], dtype=np.uint64) | np.uint64(1)
        with np.errstate(over="ignore"):
            mixed = (words ^ (words >> np.uint64(29))) * coefficients
            out.append(np.bitwise_xor.reduce(mixed * np.uint64(0x9E3779B97F4A7C15), axis=1) + mixed.sum(axis=1))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.uint64)


def compare(a: str, b: str) -> list[str]:
    """What differs between the samples at `a` and at `b` (empty: the same)."""
    from feature_spec import load_spec, spec_hash

    spec_a, spec_b = load_spec(a), load_spec(b)
    problems = []
    if spec_hash(spec_a) != spec_hash(spec_b):
        problems.append(f"spec hash {spec_hash(spec_a)} != {spec_hash(spec_b)}")
    for split in sorted(spec_a.get("splits", {})):
        ha, hb = row_hashes(a, split), row_hashes(b, split)
        if len(ha) != len(hb):
            problems.append(f"{split}: {len(ha)} rows != {len(hb)} rows")
        elif not np.array_equal(ha, hb):
            problems.append(f"{split}: {int((ha != hb).sum())} of {len(ha)} sorted row hashes differ")
        else:
            print(f"{split}: {len(ha):,} rows, the same multiset")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    args = parser.parse_args(argv)
    problems = compare(args.a, args.b)
    for line in problems:
        print(line)
    print("same samples" if not problems else "DIFFERENT samples")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
