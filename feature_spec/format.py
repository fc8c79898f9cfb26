"""The constants of the `feature_spec.json` format (docs/feature_spec.md) and its hash."""

from __future__ import annotations

import hashlib
import json

FORMAT_VERSION = 1
SPEC_FILE = "feature_spec.json"
LABEL_NAME = "label"
ROLES = ("model_input", "label", "metadata")
EMBEDDED_KINDS = ("categorical", "sequence", "multi_categorical")
MULTI_KINDS = ("sequence", "multi_categorical")  # lists of indices, pooled over their non-padding slots
NUMERIC_KIND = "numeric"
INPUT_KINDS = EMBEDDED_KINDS + (NUMERIC_KIND,)
KIND_OF_ROLE = {"label": "label", "metadata": "metadata"}  # model inputs: one of INPUT_KINDS
PADDING_INDEX = 0
OOV_INDEX = 1
HASHED_KEYS = (
    "features",
    "vocabularies",
    "compression",
    "rows_per_record",
    "smoothed_ctr",
    "sample_settings",
    "lineage",
)
# Keys added after the first samples were written are hashed only when they differ from
# their default, so that a spec without them keeps the hash it always had.
HASH_DEFAULTS = {"rows_per_record": 1, "smoothed_ctr": None, "sample_settings": None, "lineage": None}


class SpecError(ValueError):
    """A feature spec (or one of its entries) that breaks the format."""


def compute_spec_hash(spec: dict) -> str:
    """sha256 of the canonical JSON of the parts that define the samples' meaning."""
    payload = {
        key: spec.get(key)
        for key in HASHED_KEYS
        if key not in HASH_DEFAULTS or spec.get(key, HASH_DEFAULTS[key]) != HASH_DEFAULTS[key]
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def to_json(spec: dict) -> str:
    """The text of feature_spec.json: keys in the order they were built."""
    return json.dumps(spec, indent=2, sort_keys=False)
