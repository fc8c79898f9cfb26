"""Reading feature_spec.json from a SAMPLES directory (local or any tf.io.gfile path)."""

from __future__ import annotations

import json
import logging
import posixpath

from feature_spec.format import SPEC_FILE
from feature_spec.validate import validate_spec


def spec_path(samples_dir: str) -> str:
    return posixpath.join(str(samples_dir), SPEC_FILE)


def is_remote(path) -> bool:
    """A `scheme://` path other than file://, read through tf.io.gfile."""
    return "://" in str(path) and not str(path).startswith("file:")


def gfile(path=None):
    """tf.io.gfile; for a remote `path` with tensorflow-io's file systems (s3://, hdfs://) registered."""
    import tensorflow as tf

    if path is None or is_remote(path):
        try:
            import tensorflow_io  # noqa: F401 - registers its file systems with tf.io.gfile
        except ImportError:  # it is in requirements.txt; without it only TensorFlow's own schemes work
            logging.getLogger(__name__).warning(
                "tensorflow-io is not installed: s3:// and hdfs:// paths cannot be read or written"
            )
    return tf.io.gfile


def load_spec(samples_dir: str) -> dict:
    """Load and validate SAMPLES/feature_spec.json."""
    path = spec_path(samples_dir)
    try:
        with gfile(path).GFile(path, "r") as fh:  # gfile reads hdfs:// and s3:// too
            text = fh.read()
    except ImportError:
        with open(path) as fh:
            text = fh.read()
    return validate_spec(json.loads(text))
