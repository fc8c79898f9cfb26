"""The spec as TensorFlow sees it: `tf.io.parse_example` feature maps and the serving signature.

These are the only places that turn spec entries into TensorFlow parsing specs.
"""

from __future__ import annotations

from typing import Any

from feature_spec.access import model_inputs
from feature_spec.dtypes import NULL_VALUES, tf_dtype


def _parsed_entries(spec: dict, include_metadata: bool):
    return [entry for entry in spec["features"] if entry["role"] != "metadata" or include_metadata]


def parse_block_features(spec: dict, include_metadata: bool = True) -> dict[str, Any]:
    """The `tf.io.parse_example` feature map of block records (`rows_per_record` > 1): every
    feature of a block holds its rows' values one after another, so each parses as one flat
    list per record (reshape the flat values to `[-1] + shape`)."""
    import tensorflow as tf

    return {
        entry["name"]: tf.io.RaggedFeature(tf_dtype(entry["dtype"]), row_splits_dtype=tf.int64)
        for entry in _parsed_entries(spec, include_metadata)
    }


def parse_features(spec: dict, include_metadata: bool = True) -> dict[str, Any]:
    """The `tf.io.parse_example` feature map for the spec (one sample per record)."""
    import tensorflow as tf

    out = {}
    for entry in _parsed_entries(spec, include_metadata):
        kwargs = {}
        if entry["role"] == "metadata":
            default = entry.get("default")
            if default is None:
                default = NULL_VALUES[entry["dtype"]]
            if entry["shape"]:
                default = [default] * int(entry["shape"][0])
            kwargs["default_value"] = default
        out[entry["name"]] = tf.io.FixedLenFeature(entry["shape"], tf_dtype(entry["dtype"]), **kwargs)
    return out


def input_signature(spec: dict) -> dict[str, Any]:
    """{name: tf.TensorSpec([None] + shape)} of the model inputs: what a served model takes."""
    import tensorflow as tf

    return {
        e["name"]: tf.TensorSpec([None, *[int(n) for n in e["shape"]]], tf_dtype(e["dtype"]), name=e["name"])
        for e in model_inputs(spec)
    }
