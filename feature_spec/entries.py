"""Constructors of the spec's parts: one per kind of feature entry, plus vocabularies, splits
and the whole spec. Each returns the plain dict written to feature_spec.json, keys in the order
of the file (docs/feature_spec.md), and checks the entry it builds.

    spec.categorical("user_idx", vocabulary="user_id", vocab_size=1002)
    spec.bucketized("item_ctr_bucket", source="item_ctr", boundaries=[0.01, 0.05])
    spec.new_spec(features, vocabularies, compression="GZIP", rows_per_record=64)
"""

from __future__ import annotations

from feature_spec.format import FORMAT_VERSION, LABEL_NAME, OOV_INDEX, PADDING_INDEX, compute_spec_hash
from feature_spec.hashing import HASH_FUNCTION, SPARK_SEED
from feature_spec.validate import check_entry


def _entry(name: str, role: str, kind: str, dtype: str, shape: list, **extra) -> dict:
    return check_entry({"name": name, "role": role, "kind": kind, "dtype": dtype, "shape": shape, **extra})


def categorical(
    name: str, *, vocab_size: int, vocabulary: str | None = None, embedding_table: str | None = None
) -> dict:
    """int64 scalar index; the embedding table defaults to the vocabulary's name, else the feature's."""
    extra = {"vocabulary": vocabulary} if vocabulary is not None else {}
    return _entry(
        name,
        "model_input",
        "categorical",
        "int64",
        [],
        **extra,
        embedding_table=embedding_table or vocabulary or name,
        vocab_size=int(vocab_size),
    )


def bucketized(name: str, *, source: str, boundaries: list) -> dict:
    """Categorical bucket index of the numeric `source`: 0 = null, 1 + bisect_right(boundaries, raw)."""
    return _entry(
        name,
        "model_input",
        "categorical",
        "int64",
        [],
        embedding_table=name,
        vocab_size=len(boundaries) + 2,
        bucketization={"source": source, "boundaries": list(boundaries)},
    )


def _indices(kind: str, name: str, length: int, vocabulary: str, vocab_size: int, embedding_table: str | None) -> dict:
    return _entry(
        name,
        "model_input",
        kind,
        "int64",
        [int(length)],
        vocabulary=vocabulary,
        embedding_table=embedding_table or vocabulary,
        vocab_size=int(vocab_size),
    )


def sequence(name: str, *, length: int, vocabulary: str, vocab_size: int, embedding_table: str | None = None) -> dict:
    """int64 [length], most recent first, padded with 0 on the right."""
    return _indices("sequence", name, length, vocabulary, vocab_size, embedding_table)


def multi_categorical(
    name: str, *, length: int, vocabulary: str, vocab_size: int, embedding_table: str | None = None
) -> dict:
    """int64 [length], a set of indices padded with 0."""
    return _indices("multi_categorical", name, length, vocabulary, vocab_size, embedding_table)


def numeric(name: str, *, normalization: dict, length: int | None = None) -> dict:
    """float32, already normalized: (log1p?(raw) - mean) / std.

    ``length`` None: a scalar (shape []), ``mean`` and ``std`` numbers. ``length`` d: a vector
    (shape [d], e.g. an embedding), ``mean`` and ``std`` lists of d numbers, one per dimension
    (tuples and numpy arrays are written as lists).
    """
    if length is None:
        return _entry(name, "model_input", "numeric", "float32", [], normalization=normalization)
    if isinstance(normalization, dict):
        normalization = {
            key: _as_list(value) if key in ("mean", "std") else value for key, value in normalization.items()
        }
    return _entry(name, "model_input", "numeric", "float32", [_length(length)], normalization=normalization)


def _as_list(value):
    if hasattr(value, "tolist") and not isinstance(value, (int, float)):
        return value.tolist()  # numpy array (or scalar: then not a list, and validation says so)
    return list(value) if isinstance(value, tuple) else value


def _length(length):
    """An int length as is (validation then checks it is positive); anything else as given, so the message shows it."""
    return int(length) if hasattr(length, "__index__") and not isinstance(length, bool) else length


def label(name: str = LABEL_NAME) -> dict:
    return _entry(name, "label", "label", "int64", [])


def metadata(name: str, dtype: str, default=None) -> dict:
    """Never a model input; a missing value parses to `default` (null: NaN / "" / -1)."""
    return _entry(name, "metadata", "metadata", dtype, [], default=default)


def vocabulary(*, size: int, num_tokens: int, min_count: int, path: str, oov_buckets: int = 1) -> dict:
    """An entry of `vocabularies`: index 0 = padding, then the out-of-vocabulary buckets from `oov_index`, then
    the tokens. With one bucket (1 = OOV, tokens from 2) the entry has no `oov_buckets` key, so specs written
    before buckets keep their hash; with K > 1 it records K and the hash that picks a token's bucket."""
    entry = {
        "size": int(size),
        "num_tokens": int(num_tokens),
        "padding_index": PADDING_INDEX,
        "oov_index": OOV_INDEX,
        "min_count": int(min_count),
        "path": path,
    }
    if int(oov_buckets) != 1:
        entry["oov_buckets"] = {"count": int(oov_buckets), "hash": HASH_FUNCTION, "seed": SPARK_SEED}
    return entry


def split(*, pattern: str, num_examples: int, label_rate: float | None) -> dict:
    """An entry of `splits`; the pattern is relative to the spec's folder."""
    return {"pattern": pattern, "num_examples": int(num_examples), "label_rate": label_rate}


def smoothed_ctr(*, prior: float, smoothing: float) -> dict:
    """The spec's `smoothed_ctr`: CTR = (clicks + smoothing * prior) / (impressions + smoothing), prior = the
    train label rate."""
    return {"prior": float(prior), "smoothing": float(smoothing)}


def extended_lineage(parent: dict) -> dict:
    """The `lineage` of a spec that extends `parent` (build_samples --fit-only --extend): the parent's hash, its
    ancestors' (nearest first), and each vocabulary's rows in the parent, which keep their indices."""
    ancestors = [parent["spec_hash"], *((parent.get("lineage") or {}).get("ancestors") or [])]
    sizes = {name: int(entry["size"]) for name, entry in sorted((parent.get("vocabularies") or {}).items())}
    return {"parent": parent["spec_hash"], "ancestors": ancestors, "extends": sizes}


def with_splits(spec: dict, splits: dict) -> dict:
    """The spec with its `splits` (name -> split entry), once the shards are written; not hashed."""
    return {**spec, "splits": dict(splits)}


def new_spec(
    features: list[dict],
    vocabularies: dict,
    *,
    compression: str,
    rows_per_record: int = 1,
    smoothed_ctr: dict | None = None,
    sample_settings: dict | None = None,
    label_name: str = LABEL_NAME,
    lineage: dict | None = None,
) -> dict:
    """The spec with its hash (splits are added once the shards are written; they are not hashed).

    `smoothed_ctr` ({"prior", "smoothing"}, see `smoothed_ctr`) records what the smoothed CTR features were
    made with, so that a later build can apply the same spec (`build_samples --spec`). `sample_settings`
    ({dotted build setting: value}) records the build settings that decide labels and feature values and leave
    no other trace in the spec (the attribution window, the lookbacks...): they are hashed, so samples made
    under other settings never share a hash."""
    spec = {
        "format_version": FORMAT_VERSION,
        "compression": compression,
        "label": label_name,
        "features": list(features),
        "vocabularies": dict(vocabularies),
    }
    if int(rows_per_record) != 1:  # absent means one Example per record, so earlier specs keep their hash
        spec["rows_per_record"] = int(rows_per_record)
    if smoothed_ctr is not None:  # absent in specs written before daily builds: they keep their hash
        spec["smoothed_ctr"] = dict(smoothed_ctr)
    if sample_settings is not None:  # absent in specs written before they were recorded: they keep their hash
        spec["sample_settings"] = dict(sorted(sample_settings.items()))
    if lineage is not None:  # only a spec that extends another (`extended_lineage`)
        spec["lineage"] = dict(lineage)
    spec["spec_hash"] = compute_spec_hash(spec)
    return spec
