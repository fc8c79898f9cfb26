"""Reading and checking `feature_spec.json` (see docs/feature_spec.md).

Pure Python: the Spark side uses it to write the spec, the TensorFlow side to
read it. `parse_features` is the only place that turns the spec into the
`tf.io.parse_example` feature map.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
from typing import Any

FORMAT_VERSION = 1
SPEC_FILE = "feature_spec.json"
ROLES = ("model_input", "label", "metadata")
EMBEDDED_KINDS = ("categorical", "sequence", "multi_categorical")
HASHED_KEYS = ("features", "vocabularies", "compression", "rows_per_record")
# Keys added after the first samples were written are hashed only when they differ from
# their default, so that a spec without them keeps the hash it always had.
HASH_DEFAULTS = {"rows_per_record": 1}
# What a missing metadata value parses to when its entry's default is null (JSON has no NaN).
NULL_VALUES = {"float32": float("nan"), "string": "", "int64": -1}


class SpecError(ValueError):
    pass


def compute_spec_hash(spec: dict) -> str:
    """sha256 of the canonical JSON of the parts that define the samples' meaning."""
    payload = {key: spec.get(key) for key in HASHED_KEYS
               if key not in HASH_DEFAULTS or spec.get(key, HASH_DEFAULTS[key]) != HASH_DEFAULTS[key]}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def validate_spec(spec: dict) -> dict:
    if spec.get("format_version") != FORMAT_VERSION:
        raise SpecError(f"unsupported feature spec format_version {spec.get('format_version')!r}, expected {FORMAT_VERSION}")
    names = set()
    for entry in spec.get("features", []):
        for key in ("name", "role", "kind", "dtype", "shape"):
            if key not in entry:
                raise SpecError(f"feature entry {entry.get('name', entry)!r} lacks '{key}'")
        if entry["name"] in names:
            raise SpecError(f"feature '{entry['name']}' appears twice in the spec")
        names.add(entry["name"])
        if entry["role"] not in ROLES:
            raise SpecError(f"feature '{entry['name']}' has unknown role {entry['role']!r}")
        if entry["kind"] in EMBEDDED_KINDS and int(entry.get("vocab_size", 0)) < 2:
            raise SpecError(f"feature '{entry['name']}' has no vocab_size")
    if spec.get("label") not in names:
        raise SpecError(f"label feature {spec.get('label')!r} is not among the features")
    if rows_per_record(spec) > 1:
        # A block holds every feature of every row: nulls are written as NULL_VALUES, so no other default can apply.
        for entry in spec.get("features", []):
            if entry.get("default") is not None:
                raise SpecError(f"feature '{entry['name']}' has default {entry['default']!r}, but with "
                                "rows_per_record > 1 a null is stored as NaN / \"\" / -1: its default must be null")
    expected = compute_spec_hash(spec)
    if spec.get("spec_hash") != expected:
        raise SpecError(f"feature spec hash mismatch: file says {spec.get('spec_hash')}, content hashes to {expected}")
    return spec


def rows_per_record(spec: dict) -> int:
    """How many samples one TFRecord record holds (docs/feature_spec.md, "Record layout")."""
    value = spec.get("rows_per_record", HASH_DEFAULTS["rows_per_record"])
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"rows_per_record must be a positive integer, got {value!r}")
    return value


def compression_type(spec: dict) -> str:
    """The `compression_type` TFRecordDataset reads the shards with ("GZIP" or "" for none)."""
    return spec.get("compression", "GZIP") or ""


def load_spec(samples_dir: str) -> dict:
    """Load and validate SAMPLES/feature_spec.json (local or any tf.io.gfile path)."""
    path = posixpath.join(str(samples_dir), SPEC_FILE)
    try:
        import tensorflow as tf  # noqa: F401 - gfile reads hdfs:// and s3:// too

        with tf.io.gfile.GFile(path, "r") as fh:
            text = fh.read()
    except ImportError:
        with open(path) as fh:
            text = fh.read()
    return validate_spec(json.loads(text))


def features_by_role(spec: dict, role: str) -> list[dict]:
    return [entry for entry in spec["features"] if entry["role"] == role]


def model_inputs(spec: dict) -> list[dict]:
    return features_by_role(spec, "model_input")


def feature(spec: dict, name: str) -> dict:
    for entry in spec["features"]:
        if entry["name"] == name:
            return entry
    raise SpecError(f"no feature named '{name}' in the spec")


def _parsed_entries(spec: dict, include_metadata: bool):
    import tensorflow as tf

    dtypes = {"int64": tf.int64, "float32": tf.float32, "string": tf.string}
    for entry in spec["features"]:
        if entry["role"] != "metadata" or include_metadata:
            yield entry, dtypes[entry["dtype"]]


def parse_block_features(spec: dict, include_metadata: bool = True) -> dict[str, Any]:
    """The `tf.io.parse_example` feature map of block records (`rows_per_record` > 1): every
    feature of a block holds its rows' values one after another, so each parses as one flat
    list per record (reshape the flat values to `[-1] + shape`)."""
    import tensorflow as tf

    return {entry["name"]: tf.io.RaggedFeature(dtype, row_splits_dtype=tf.int64)
            for entry, dtype in _parsed_entries(spec, include_metadata)}


def parse_features(spec: dict, include_metadata: bool = True) -> dict[str, Any]:
    """The `tf.io.parse_example` feature map for the spec (one sample per record)."""
    import tensorflow as tf

    out = {}
    for entry, dtype in _parsed_entries(spec, include_metadata):
        kwargs = {}
        if entry["role"] == "metadata":
            default = entry.get("default")
            if default is None:
                default = NULL_VALUES[entry["dtype"]]
            if entry["shape"]:
                default = [default] * int(entry["shape"][0])
            kwargs["default_value"] = default
        out[entry["name"]] = tf.io.FixedLenFeature(entry["shape"], dtype, **kwargs)
    return out
