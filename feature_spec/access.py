"""Reading a (validated) spec: its entries by role and kind, splits, vocabularies, layout.

These are the only functions that know where things live inside feature_spec.json.
"""

from __future__ import annotations

import glob
import posixpath

from feature_spec.files import gfile, is_remote
from feature_spec.format import EMBEDDED_KINDS, NUMERIC_KIND, OOV_INDEX, PADDING_INDEX, SpecError
from feature_spec.hashing import oov_bucket
from feature_spec.validate import (  # noqa: F401 - rows_per_record is an accessor too
    VocabularyError,
    check_entry,
    check_vocabulary_rows,
    oov_bucket_count,
    rows_per_record,
)

# ---------------------------------------------------------------- entries


def all_features(spec: dict) -> list[dict]:
    """Every feature entry, in the spec's order (model inputs, label and metadata)."""
    return list(spec["features"])


def features_by_role(spec: dict, role: str) -> list[dict]:
    return [entry for entry in all_features(spec) if entry["role"] == role]


def model_inputs(spec: dict) -> list[dict]:
    return features_by_role(spec, "model_input")


def metadata_entries(spec: dict) -> list[dict]:
    return features_by_role(spec, "metadata")


def feature(spec: dict, name: str) -> dict:
    for entry in spec["features"]:
        if entry["name"] == name:
            return entry
    raise SpecError(f"no feature named '{name}' in the spec")


def label_name(spec: dict) -> str:
    return spec["label"]


def embedding_table(entry: dict) -> str:
    """The table an embedded feature is looked up in: shared by every feature naming it."""
    return entry.get("embedding_table") or entry.get("vocabulary") or entry["name"]


def checked_model_inputs(spec: dict) -> list[dict]:
    """The model-input entries, each checked against the rules of its kind; the spec may be
    partial (only `features`), as in a saved model's config."""
    entries = model_inputs(spec)
    if not entries:
        raise SpecError("the feature spec has no model_input features")
    return [check_entry(entry) for entry in entries]


def embedded_fields(spec: dict) -> list[dict]:
    """`name`, `kind`, `vocab_size`, `embedding_table` of the embedded model inputs, in spec order."""
    return [
        {
            "name": e["name"],
            "kind": e["kind"],
            "vocab_size": int(e["vocab_size"]),
            "embedding_table": embedding_table(e),
        }
        for e in checked_model_inputs(spec)
        if e["kind"] in EMBEDDED_KINDS
    ]


def numeric_names(spec: dict) -> list[str]:
    return [name for name, _ in numeric_fields(spec)]


def numeric_width(entry: dict) -> int:
    """How many model columns a numeric entry gives: 1 for a scalar (shape []), d for a vector (shape [d])."""
    return int(entry["shape"][0]) if entry["shape"] else 1


def numeric_fields(spec: dict) -> list[tuple[str, int]]:
    """(name, width) of the numeric model inputs, in spec order: width 1 for a scalar, d for a vector [d]."""
    return [(e["name"], numeric_width(e)) for e in checked_model_inputs(spec) if e["kind"] == NUMERIC_KIND]


def is_bucketized_table(spec: dict, table: str) -> bool:
    return any(e.get("embedding_table") == table and e.get("bucketization") for e in spec["features"])


# ---------------------------------------------------------------- splits and layout


def split_names(spec: dict) -> list[str]:
    return list(spec.get("splits") or {})


def split_pattern(samples_dir: str, spec: dict, split: str) -> str:
    """The glob of a split's shards (patterns are relative to the spec's folder, whose name is
    escaped: a folder named `samples [v2]` is no character class)."""
    splits = spec.get("splits") or {}
    if split not in splits:
        raise SpecError(f"split '{split}' is not in the feature spec of {samples_dir} (has: {', '.join(splits)})")
    return posixpath.join(glob.escape(str(samples_dir).rstrip("/")), splits[split]["pattern"])


def split_label_rate(spec: dict, split: str) -> float | None:
    """The label rate of a split's samples; None when the spec does not say (or the split is empty)."""
    value = ((spec.get("splits") or {}).get(split) or {}).get("label_rate")
    return None if value is None else float(value)


def num_examples(spec: dict, split: str) -> int | None:
    """Samples (not records) in a split; None when the spec does not say."""
    value = ((spec.get("splits") or {}).get(split) or {}).get("num_examples")
    return None if value is None else int(value)


def compression_type(spec: dict) -> str:
    """The `compression_type` TFRecordDataset reads the shards with ("GZIP" or "" for none)."""
    return spec.get("compression", "GZIP") or ""


def smoothed_ctr_prior(spec: dict) -> tuple[float, float] | None:
    """(prior, smoothing) the smoothed CTR features were made with; None in a spec written before they were recorded."""
    value = spec.get("smoothed_ctr")
    return None if value is None else (float(value["prior"]), float(value["smoothing"]))


def sample_settings(spec: dict) -> dict | None:
    """{dotted build setting: value} the samples were made with (hashed); None in a spec written before they
    were recorded."""
    value = spec.get("sample_settings")
    return None if value is None else dict(value)


def spec_hash(spec: dict) -> str:
    return spec["spec_hash"]


# ---------------------------------------------------------------- vocabularies


def get_vocabulary(spec: dict, name: str) -> dict | None:
    return (spec.get("vocabularies") or {}).get(name)


def vocabulary_path(samples_dir: str, spec: dict, name: str) -> str:
    vocab = get_vocabulary(spec, name) or {}
    return posixpath.join(str(samples_dir), vocab.get("path") or f"vocab/{name}")


def descends_from(spec: dict, ancestor_hash: str) -> bool:
    """Whether `spec` is the spec of `ancestor_hash` or extends it, any number of --extend steps on: then
    every row of the ancestor's vocabularies keeps its index in `spec`'s."""
    ancestors = (spec.get("lineage") or {}).get("ancestors") or []
    return ancestor_hash == spec.get("spec_hash") or ancestor_hash in ancestors


def oov_index_of(entry: dict, token: str) -> int:
    """The index an unseen `token` gets in vocabulary `entry`: its OOV bucket (the one OOV index when the
    vocabulary has one bucket)."""
    buckets = oov_bucket_count(entry)
    first = int(entry.get("oov_index", OOV_INDEX))
    if buckets == 1:
        return first
    return oov_bucket(token, buckets, first, int(entry["oov_buckets"]["seed"]))


def vocabulary_tokens(samples_dir: str, spec: dict, table: str, size: int) -> list:
    """Token of every row of an embedding table: the vocabulary's tokens with <PAD> and <OOV> (<OOV_k>, k from
    0, with several OOV buckets), or bucket_<i> for a bucketized table (index_<i> for any other table without a
    vocabulary)."""
    tokens: list = [None] * size
    vocab = get_vocabulary(spec, table)
    if vocab is not None:
        data = _read_parquet_folder(vocabulary_path(samples_dir, spec, table), ["index", "token"])
        for index, token in zip(data.column("index").to_pylist(), data.column("token").to_pylist()):
            if 0 <= index < size:
                tokens[index] = token
        tokens[int(vocab.get("padding_index", PADDING_INDEX))] = "<PAD>"
        first, buckets = int(vocab.get("oov_index", OOV_INDEX)), oov_bucket_count(vocab)
        for k in range(buckets):
            if first + k < size:
                tokens[first + k] = "<OOV>" if buckets == 1 else f"<OOV_{k}>"
        return tokens
    prefix = "bucket" if is_bucketized_table(spec, table) else "index"
    return ["<PAD>" if i == 0 else f"{prefix}_{i}" for i in range(size)]


def check_vocabularies(samples_dir: str, spec: dict) -> None:
    """VocabularyError, naming the vocabulary, unless every vocabulary of the spec can be read from
    `samples_dir` and its rows match its entry (check_vocabulary_rows). Reads index and token only."""
    import pyarrow.compute as pc

    for name, entry in sorted((spec.get("vocabularies") or {}).items()):
        path = vocabulary_path(samples_dir, spec, name)
        try:
            data = _read_parquet_folder(path, ["index", "token"])
            index, token = data.column("index"), data.column("token")
            counts = {
                "rows": data.num_rows,
                "null_rows": int(pc.sum(pc.or_(pc.is_null(index), pc.is_null(token))).as_py() or 0),
                "distinct_tokens": int(pc.count_distinct(token).as_py()),
                "distinct_indices": int(pc.count_distinct(index).as_py()),
                "min_index": pc.min(index).as_py(),
                "max_index": pc.max(index).as_py(),
            }
        except Exception as exc:  # missing folder or files, not Parquet, columns missing or of another type
            raise VocabularyError(
                f"vocabulary {name} ({path}) cannot be read: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            ) from None
        check_vocabulary_rows(name, entry, counts, path)


def _read_parquet_folder(path: str, columns: list[str]):
    """The Parquet files of a folder as one table: local folders through pyarrow, `scheme://` ones
    (s3://, hdfs://) file by file through tf.io.gfile."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not is_remote(path):
        return pq.read_table(path, columns=columns)
    fs = gfile(path)
    parts = sorted(fs.glob(posixpath.join(glob.escape(path.rstrip("/")), "*.parquet")))
    if not parts:
        raise FileNotFoundError(f"no Parquet files in {path}")
    tables = []
    for part in parts:
        with fs.GFile(part, "rb") as fh:
            tables.append(pq.read_table(pa.BufferReader(fh.read()), columns=columns))
    return pa.concat_tables(tables)
