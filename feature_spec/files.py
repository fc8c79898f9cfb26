"""Reading feature_spec.json from a SAMPLES directory (local or any tf.io.gfile path)."""

from __future__ import annotations

import json
import posixpath

from feature_spec.format import SPEC_FILE, SpecError
from feature_spec.validate import validate_spec

# The contract reads spec files and vocabularies through the jobs' storage module, which registers
# tensorflow-io's file systems (s3://, hdfs://); feature_spec.access imports both names from here.
from pipelines.storage import gfile, is_remote  # noqa: F401 - is_remote is used by feature_spec.access


def spec_path(samples_dir: str) -> str:
    return posixpath.join(str(samples_dir), SPEC_FILE)


def load_spec(samples_dir: str) -> dict:
    """Load and validate SAMPLES/feature_spec.json.

    FileNotFoundError when there is no such file (whatever the file system says); SpecError, naming the
    path, when the file is not a valid spec (not JSON, not an object, or against the format)."""
    path = spec_path(samples_dir)
    try:
        text = _read_text(path)
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path} is not UTF-8 text: {exc}") from None
    try:
        content = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise SpecError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(content, dict):
        raise SpecError(f"{path} holds a JSON {type(content).__name__}, not a feature spec object")
    try:
        return validate_spec(content)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
    except (KeyError, TypeError, AttributeError) as exc:  # an entry of the wrong shape
        raise SpecError(f"{path} is not a valid feature spec ({type(exc).__name__}: {exc})") from None


def _read_text(path: str) -> str:
    """The file's text; FileNotFoundError when it is absent on any file system (tf.io.gfile's NotFoundError)."""
    try:
        gf = gfile(path)
    except ImportError:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    import tensorflow as tf

    try:
        with gf.GFile(path, "r") as fh:  # gfile reads hdfs:// and s3:// too
            return fh.read()
    except (tf.errors.NotFoundError, tf.errors.FailedPreconditionError):  # absent; a folder; below a file
        raise FileNotFoundError(f"{path} is not a file") from None
