"""Reading feature_spec.json from a SAMPLES directory (local or any tf.io.gfile path)."""

from __future__ import annotations

import json
import posixpath

from feature_spec.format import SPEC_FILE
from feature_spec.validate import validate_spec


def spec_path(samples_dir: str) -> str:
    return posixpath.join(str(samples_dir), SPEC_FILE)


def load_spec(samples_dir: str) -> dict:
    """Load and validate SAMPLES/feature_spec.json."""
    path = spec_path(samples_dir)
    try:
        import tensorflow as tf  # noqa: F401 - gfile reads hdfs:// and s3:// too

        with tf.io.gfile.GFile(path, "r") as fh:
            text = fh.read()
    except ImportError:
        with open(path) as fh:
            text = fh.read()
    return validate_spec(json.loads(text))
