"""The spec's transform as TensorFlow ops: raw request values in, the model's inputs out.

`RawTransform` is built from `feature_spec.json` and its `vocab/` only, and it is saved inside RUN/model as the
`serving_raw` signature, so a serving system needs no Spark and none of our code to score as training did.
For each model input it does what the build did in Spark:

- an id (`user_id`, `item_id`: strings; `position`: int64) is looked up in its vocabulary (a `tf.lookup` table
  over a text file that travels as a SavedModel asset): a known token gets its index, an unseen one its OOV
  bucket (OOV_INDEX + pmod(xxhash64(token), K), pipelines/training/tf_hashing.py), "" the padding index;
- a list (`genres`, `user_top_genres`, `hist_click_items`, `hist_skip_items`: strings, shape [batch, any length],
  "" as padding) is indexed the same way, cut to the spec's length and padded with 0; `item_primary_genre` is
  the first of `genres`;
- a number (float64) becomes `(f(x) - mean) / std` with `f = log1p(max(x, 0))` where the spec says log1p, in
  float64 like Spark, then float32; NaN and ±inf (a missing value) become 0;
- a dense vector (float32 [batch, d]) is normalized per dimension; a missing vector is all NaN;
- a bucketized input takes its source number: 0 for NaN, else 1 + the number of boundaries <= x.

The raw inputs keep the names of the build's columns: the spec's feature names, except `user_id`, `item_id`,
`position` (for `*_idx`) and `genres` (for `item_genres` and `item_primary_genre`).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from feature_spec import (
    OOV_INDEX,
    PADDING_INDEX,
    first_token_index,
    get_vocabulary,
    model_inputs,
    oov_bucket_count,
    vocabulary_tokens,
)
from feature_spec.hashing import SPARK_SEED
from pipelines.training.tf_hashing import oov_bucket

GENRES = "genres"
# Model input -> the raw column it is made from, where the names differ.
RAW_NAMES = {"user_idx": "user_id", "item_idx": "item_id", "position_idx": "position"}
GENRE_INPUTS = {"item_genres": GENRES, "item_primary_genre": GENRES}
INTEGER_IDS = {"position"}


class UnservableSpec(ValueError):
    """The spec has something `serving_raw` cannot reproduce (named in the message)."""


def raw_name(entry: dict) -> str:
    """The raw column a model input is made from."""
    if entry.get("bucketization"):
        return entry["bucketization"]["source"]
    return RAW_NAMES.get(entry["name"]) or GENRE_INPUTS.get(entry["name"]) or entry["name"]


def raw_signature(spec: dict) -> dict[str, tf.TensorSpec]:
    """{raw name: TensorSpec} of what `serving_raw` takes, in the order of the spec's model inputs."""
    out: dict[str, tf.TensorSpec] = {}
    for entry in model_inputs(spec):
        name, kind = raw_name(entry), entry["kind"]
        if entry.get("bucketization") or (kind == "numeric" and not entry["shape"]):
            shape, dtype = [None], tf.float64
        elif kind == "numeric":
            shape, dtype = [None, int(entry["shape"][0])], tf.float32
        elif kind == "categorical" and name != GENRES:
            shape, dtype = [None], tf.int64 if name in INTEGER_IDS else tf.string
        elif kind in ("categorical", "sequence", "multi_categorical"):
            shape, dtype = [None, None], tf.string
        else:
            raise UnservableSpec(f"model input '{entry['name']}' of kind {kind!r} has no raw form")
        if name in out and (out[name].shape.as_list(), out[name].dtype) != (shape, dtype):
            raise UnservableSpec(f"raw input '{name}' would be both {out[name]} and {dtype.name}{shape}")
        out[name] = tf.TensorSpec(shape, dtype, name=name)
    return out


def write_vocabulary_file(tokens: list, first: int, path: str) -> None:
    """Tokens of indices first, first + 1, ... one per line (a table's line number + first is the index)."""
    listed = tokens[first:]
    if any(token is None for token in listed):
        raise UnservableSpec(f"{path}: the vocabulary's indices are not contiguous from {first}")
    bad = [token for token in listed if "\n" in token or "\r" in token or token == ""]
    if bad:
        raise UnservableSpec(f"{path}: token {bad[0]!r} cannot be a line of a vocabulary file")
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.writelines(token + "\n" for token in listed)


class RawTransform(tf.Module):
    """raw values -> model inputs, as the build's transform made them (module docstring)."""

    def __init__(self, spec: dict, samples_dir: str, asset_dir: str):
        """`samples_dir`: where the spec's vocabulary paths lead (SAMPLES); `asset_dir`: a local folder for the
        vocabulary files, which saving the module copies into the SavedModel's assets/."""
        super().__init__(name="raw_transform")
        self._entries = model_inputs(spec)
        self._signature = raw_signature(spec)
        self._tables, self._layout = {}, {}
        os.makedirs(asset_dir, exist_ok=True)
        for entry in self._entries:
            name = entry.get("vocabulary")
            if not name or name in self._tables or entry.get("bucketization"):
                continue
            vocab = get_vocabulary(spec, name)
            if vocab is None:
                raise UnservableSpec(f"model input '{entry['name']}' names vocabulary '{name}', not in the spec")
            buckets = oov_bucket_count(vocab)
            first = first_token_index(vocab)
            tokens = vocabulary_tokens(samples_dir, spec, name, int(vocab["size"]))
            path = os.path.join(asset_dir, f"vocab_{name}.txt")
            write_vocabulary_file(tokens, first, path)
            initializer = tf.lookup.TextFileInitializer(
                path,
                tf.string,
                tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER,
            )
            self._tables[name] = tf.lookup.StaticHashTable(initializer, default_value=-1)
            seed = int((vocab.get("oov_buckets") or {}).get("seed", SPARK_SEED))
            self._layout[name] = (first, buckets, int(vocab.get("oov_index", OOV_INDEX)), seed)

    @property
    def signature(self) -> dict[str, tf.TensorSpec]:
        return dict(self._signature)

    def _index(self, tokens: tf.Tensor, vocabulary: str) -> tf.Tensor:
        """int64 indices of string `tokens` (any shape): the vocabulary's, an OOV bucket, 0 for ""."""
        first, buckets, oov, seed = self._layout[vocabulary]
        flat = tf.reshape(tokens, [-1])
        line = self._tables[vocabulary].lookup(flat)
        index = tf.where(line >= 0, line + first, oov_bucket(flat, buckets, oov, seed))
        index = tf.where(flat == "", tf.constant(PADDING_INDEX, tf.int64), index)
        return tf.reshape(index, tf.shape(tokens))

    def _fixed_length(self, tokens: tf.Tensor, length: int) -> tf.Tensor:
        """The first `length` tokens of each row, padded with "" on the right."""
        head = tokens[:, :length]
        padded = tf.pad(head, [[0, 0], [0, length - tf.shape(head)[1]]], constant_values="")
        # The static shape the samples' inputs have: the model's graph is then the one serving_default runs.
        return tf.ensure_shape(padded, [None, length])

    def _numeric(self, value: tf.Tensor, normalization: dict | None) -> tf.Tensor:
        value = tf.cast(value, tf.float64)
        missing = ~tf.math.is_finite(value)
        if normalization:
            if normalization.get("log1p"):
                value = tf.math.log1p(tf.maximum(value, 0.0))
            mean = tf.constant(np.asarray(normalization["mean"], np.float64))
            std = tf.constant(np.asarray(normalization["std"], np.float64))
            value = (value - mean) / std
        return tf.cast(tf.where(missing, tf.zeros_like(value), value), tf.float32)

    @staticmethod
    def _bucket(value: tf.Tensor, boundaries: list[float]) -> tf.Tensor:
        value = tf.cast(value, tf.float64)
        bounds = tf.constant(np.asarray(boundaries, np.float64).reshape(1, -1))
        below = tf.reduce_sum(tf.cast(bounds <= value[:, None], tf.int64), axis=1)
        return tf.where(tf.math.is_nan(value), tf.constant(0, tf.int64), below + 1)

    def __call__(self, raw: dict) -> dict:
        """{model input: tensor} from {raw name: tensor} (see `signature`)."""
        out = {}
        for entry in self._entries:
            name, kind, value = entry["name"], entry["kind"], raw[raw_name(entry)]
            if entry.get("bucketization"):
                out[name] = self._bucket(value, entry["bucketization"]["boundaries"])
            elif kind == "numeric":
                out[name] = self._numeric(value, entry.get("normalization"))
            elif kind == "categorical" and raw_name(entry) == GENRES:
                out[name] = self._index(self._fixed_length(value, 1), entry["vocabulary"])[:, 0]
            elif kind == "categorical":
                tokens = tf.strings.as_string(value) if value.dtype != tf.string else value
                out[name] = self._index(tokens, entry["vocabulary"])
            else:
                out[name] = self._index(self._fixed_length(value, int(entry["shape"][0])), entry["vocabulary"])
        return out


def serving_raw_function(model, transform: RawTransform):
    """tf.function(raw values dict) -> {"score": [batch, 1]}, the model applied to `transform`'s inputs."""

    @tf.function(input_signature=[transform.signature])
    def serve_raw(raw):
        return {"score": model(transform(raw), training=False)}

    return serve_raw
