"""Shared input layer, built from the feature spec only (docs/feature_spec.md).

* ``spec_inputs(spec)``: one ``keras.Input`` per ``model_input`` feature, with the
  spec's dtype and shape (what ``tf.io.parse_example`` yields, batched).
* ``FeatureEmbedding``: one embedding table per ``embedding_table`` name (features
  naming the same table share it; row 0 is padding).  Categorical features are
  looked up, sequence / multi_categorical features are looked up and
  mean-pooled over their non-padding indices.  Output: the stacked field
  embeddings ``[batch, n_fields, d]`` in spec order.
* ``NumericFeatures``: the numeric features stacked ``[batch, n_numeric]``.
* ``build_inputs(spec, params)``: wires them up and returns an ``InputBundle``
  with the Keras inputs, the stacked fields, the per-field list, the numerics,
  the flat concatenation (fields + numerics) and the sparse index inputs
  for the linear / wide parts.

Parameter defaults shared by every model live here too (``resolve_params``).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf

from models.layers.masked_pooling import MaskedMeanPooling
from pipelines.feature_spec import EMBEDDED_KINDS, model_inputs

NUMERIC_KIND = "numeric"
MULTI_KINDS = ("sequence", "multi_categorical")

DEFAULT_PARAMS: dict[str, Any] = {
    "embedding_dim": 16,
    "hidden_units": [256, 128, 64],
    "activation": "relu",
    "dropout": 0.0,
    "l2": 0.0,
    "learning_rate": None,  # None: 1e-3 for Adam, 0.05 for Adagrad
    "deep_optimizer": "adagrad",  # wide_deep only: "adagrad" | "adam"
    "ftrl_learning_rate": 0.05,  # wide_deep only
    "ftrl_l1": 0.0,  # wide_deep only
    "ftrl_l2": 0.0,  # wide_deep only
    "residual": False,  # emb_mlp only
    "cross_layers": 3,  # dcn, dcn_v2
    "projection_dim": None,  # dcn_v2: None = full rank
    "crossed_features": [],  # wide_deep: list of [feature_a, feature_b] (categorical)
    "hash_buckets": 100000,  # wide_deep crossed features
    "seed": None,
    "jit_compile": False,
}


def resolve_params(params: dict | None) -> dict:
    """Defaults merged with ``params``; unknown keys are kept but unused.

    Raises ValueError on values of the wrong type / range.
    """
    out = copy.deepcopy(DEFAULT_PARAMS)
    if params:
        if not isinstance(params, dict):
            raise ValueError(f"params must be a dict, got {type(params).__name__}")
        out.update(copy.deepcopy(dict(params)))
    dim = out["embedding_dim"]
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise ValueError(f"params.embedding_dim must be a positive int, got {dim!r}")
    units = out["hidden_units"]
    if isinstance(units, (int, str)) or not units or any(isinstance(u, bool) or not isinstance(u, int) or u <= 0 for u in units):
        raise ValueError(f"params.hidden_units must be a non-empty list of positive ints, got {units!r}")
    out["hidden_units"] = [int(u) for u in units]
    if not 0.0 <= float(out["dropout"]) < 1.0:
        raise ValueError(f"params.dropout must be in [0, 1), got {out['dropout']!r}")
    if float(out["l2"]) < 0:
        raise ValueError(f"params.l2 must be >= 0, got {out['l2']!r}")
    if out["deep_optimizer"] not in ("adam", "adagrad"):
        raise ValueError(f"params.deep_optimizer must be 'adam' or 'adagrad', got {out['deep_optimizer']!r}")
    layers = out["cross_layers"]
    if isinstance(layers, bool) or not isinstance(layers, int) or layers <= 0:
        raise ValueError(f"params.cross_layers must be a positive int, got {layers!r}")
    proj = out["projection_dim"]
    if proj is not None and (isinstance(proj, bool) or not isinstance(proj, int) or proj <= 0):
        raise ValueError(f"params.projection_dim must be None or a positive int, got {proj!r}")
    buckets = out["hash_buckets"]
    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets <= 0:
        raise ValueError(f"params.hash_buckets must be a positive int, got {buckets!r}")
    crossed = out["crossed_features"] or []
    if any(not isinstance(pair, (list, tuple)) or len(pair) < 2 for pair in crossed):
        raise ValueError(f"params.crossed_features must be a list of feature-name pairs, got {crossed!r}")
    out["crossed_features"] = [[str(n) for n in pair] for pair in crossed]
    seed = out["seed"]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"params.seed must be None or an int, got {seed!r}")
    return out


def input_entries(spec: dict) -> list[dict]:
    """The spec's model-input entries, checked for what the models need."""
    entries = model_inputs(spec)
    if not entries:
        raise ValueError("the feature spec has no model_input features")
    for entry in entries:
        kind = entry["kind"]
        if kind in EMBEDDED_KINDS:
            if int(entry.get("vocab_size", 0)) < 2:
                raise ValueError(f"feature '{entry['name']}' ({kind}) has no vocab_size >= 2")
            if entry["dtype"] != "int64":
                raise ValueError(f"feature '{entry['name']}' ({kind}) must be int64, got {entry['dtype']}")
            if kind == "categorical" and list(entry["shape"]) != []:
                raise ValueError(f"categorical feature '{entry['name']}' must have shape [], got {entry['shape']}")
            if kind in MULTI_KINDS and len(entry["shape"]) != 1:
                raise ValueError(f"{kind} feature '{entry['name']}' must have shape [n], got {entry['shape']}")
        elif kind == NUMERIC_KIND:
            if list(entry["shape"]) != []:
                raise ValueError(f"numeric feature '{entry['name']}' must have shape [], got {entry['shape']}")
        else:
            raise ValueError(f"model_input feature '{entry['name']}' has unsupported kind {kind!r}")
    return entries


def embedded_entries(spec: dict) -> list[dict]:
    """Minimal descriptions of the embedded (sparse) model inputs, in spec order."""
    return [
        {
            "name": e["name"],
            "kind": e["kind"],
            "vocab_size": int(e["vocab_size"]),
            "embedding_table": e.get("embedding_table") or e.get("vocabulary") or e["name"],
        }
        for e in input_entries(spec)
        if e["kind"] in EMBEDDED_KINDS
    ]


def numeric_names(spec: dict) -> list[str]:
    return [e["name"] for e in input_entries(spec) if e["kind"] == NUMERIC_KIND]


def spec_inputs(spec: dict) -> dict[str, keras.KerasTensor]:
    """One ``keras.Input`` per model input, named after the feature."""
    return {
        e["name"]: keras.Input(shape=tuple(int(n) for n in e["shape"]), dtype=e["dtype"], name=e["name"])
        for e in input_entries(spec)
    }


def _check_fields(fields) -> list[dict]:
    if not isinstance(fields, (list, tuple)):
        raise ValueError(f"fields must be a list of feature descriptions, got {type(fields).__name__}")
    out = []
    for f in fields:
        if not isinstance(f, dict) or "name" not in f or "kind" not in f or "vocab_size" not in f:
            raise ValueError(f"each field needs 'name', 'kind' and 'vocab_size', got {f!r}")
        if f["kind"] not in EMBEDDED_KINDS:
            raise ValueError(f"field '{f['name']}' has kind {f['kind']!r}, expected one of {EMBEDDED_KINDS}")
        vocab = f["vocab_size"]
        if isinstance(vocab, bool) or int(vocab) != vocab or int(vocab) < 2:
            raise ValueError(f"field '{f['name']}' needs an integer vocab_size >= 2, got {vocab!r}")
        out.append(
            {
                "name": str(f["name"]),
                "kind": f["kind"],
                "vocab_size": int(vocab),
                "embedding_table": str(f.get("embedding_table") or f["name"]),
            }
        )
    return out


@keras.saving.register_keras_serializable(package="ctr")
class FeatureEmbedding(keras.layers.Layer):
    """Embeds every sparse field; tables are shared by ``embedding_table`` name.

    Input: the features dict ``{name: int tensor}`` (extra keys ignored).
    Output: ``[batch, n_fields, embedding_dim]``, fields in the order given::

        categorical        e_f = E_t[x_f]
        sequence / multi   e_f = sum_j m_j E_t[x_fj] / max(sum_j m_j, 1),  m_j = [x_fj != 0]

    ``tables`` maps table name -> ``keras.layers.Embedding`` (``[vocab_size, d]``).
    """

    def __init__(self, fields, embedding_dim: int = 16, l2: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.fields = _check_fields(fields)
        if not self.fields:
            raise ValueError("FeatureEmbedding needs at least one field")
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim <= 0:
            raise ValueError(f"FeatureEmbedding: embedding_dim must be a positive int, got {embedding_dim!r}")
        if float(l2) < 0:
            raise ValueError(f"FeatureEmbedding: l2 must be >= 0, got {l2!r}")
        self.embedding_dim = embedding_dim
        self.l2 = float(l2)
        self.seed = seed
        sizes: dict[str, int] = {}
        for f in self.fields:
            table = f["embedding_table"]
            if table in sizes and sizes[table] != f["vocab_size"]:
                raise ValueError(
                    f"features sharing embedding table '{table}' disagree on vocab_size ({sizes[table]} vs {f['vocab_size']})"
                )
            sizes[table] = f["vocab_size"]
        self.table_sizes = sizes
        reg = keras.regularizers.L2(self.l2) if self.l2 > 0 else None
        self.tables = {}
        for k, (table, size) in enumerate(sizes.items()):
            init = keras.initializers.RandomUniform(-0.05, 0.05, seed=None if seed is None else int(seed) + k)
            self.tables[table] = keras.layers.Embedding(
                size, embedding_dim, embeddings_initializer=init, embeddings_regularizer=reg, name=f"{table}_embedding"
            )
        self.pooling = MaskedMeanPooling(padding_index=0, name="masked_mean")

    def build(self, input_shape=None):
        for layer in self.tables.values():
            if not layer.built:
                layer.build((None,))
        self.built = True

    def call(self, features):
        out = []
        for f in self.fields:
            ids = features[f["name"]]
            emb = self.tables[f["embedding_table"]](ids)
            if f["kind"] in MULTI_KINDS:
                emb = self.pooling([emb, ids])
            out.append(emb)
        return tf.stack(out, axis=1)

    def compute_output_shape(self, input_shape):
        return (None, len(self.fields), self.embedding_dim)

    def embedding_tables(self) -> dict[str, tf.Variable]:
        return {table: layer.embeddings for table, layer in self.tables.items()}

    def get_config(self):
        config = super().get_config()
        config.update({"fields": [dict(f) for f in self.fields], "embedding_dim": self.embedding_dim, "l2": self.l2, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package="ctr")
class NumericFeatures(keras.layers.Layer):
    """Stacks the named scalar numeric features: ``[batch, n]`` float32."""

    def __init__(self, names, **kwargs):
        super().__init__(**kwargs)
        if isinstance(names, str) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"NumericFeatures: names must be a non-empty list of feature names, got {names!r}")
        self.names = list(names)

    def call(self, features):
        return tf.stack([tf.cast(features[n], tf.float32) for n in self.names], axis=-1)

    def compute_output_shape(self, input_shape):
        return (None, len(self.names))

    def get_config(self):
        config = super().get_config()
        config.update({"names": list(self.names)})
        return config


@dataclass
class InputBundle:
    """What ``build_inputs`` wires up (Keras symbolic tensors)."""

    inputs: dict[str, Any]  # feature name -> keras.Input (the model's inputs)
    fields: Any  # [batch, n_fields, d] stacked field embeddings
    field_list: list  # one [batch, d] per field, spec order
    field_names: list[str]
    numeric: Any  # [batch, n_numeric] or None when the spec has no numerics
    numeric_names: list[str]
    flat: Any  # [batch, n_fields * d + n_numeric]
    sparse: dict[str, Any]  # sparse field name -> its index input (for linear / wide parts)
    sparse_fields: list[dict] = field(default_factory=list)  # name, kind, vocab_size, embedding_table
    embedding: FeatureEmbedding | None = None


@keras.saving.register_keras_serializable(package="ctr")
class FieldSlice(keras.layers.Layer):
    """``inputs[:, index, :]`` of a stacked ``[batch, n_fields, d]`` tensor."""

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"FieldSlice: index must be an int >= 0, got {index!r}")
        self.index = index

    def call(self, inputs):
        return inputs[:, self.index, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"index": self.index})
        return config


def build_inputs(spec: dict, params: dict) -> InputBundle:
    """Keras inputs and the shared embedding / numeric layers for ``spec``."""
    inputs = spec_inputs(spec)
    sparse_fields = embedded_entries(spec)
    numerics = numeric_names(spec)
    if not sparse_fields:
        raise ValueError("the feature spec has no categorical / sequence / multi_categorical model inputs")
    embedding = FeatureEmbedding(
        sparse_fields, embedding_dim=params["embedding_dim"], l2=params["l2"], seed=params["seed"], name="feature_embedding"
    )
    sparse = {f["name"]: inputs[f["name"]] for f in sparse_fields}
    fields = embedding(sparse)
    field_list = [FieldSlice(i, name=f"field_{f['name']}")(fields) for i, f in enumerate(sparse_fields)]
    flat = keras.layers.Flatten(name="flat_fields")(fields)
    numeric = None
    if numerics:
        numeric = NumericFeatures(numerics, name="numeric_features")({n: inputs[n] for n in numerics})
        flat = keras.layers.Concatenate(name="flat_inputs")([flat, numeric])
    return InputBundle(
        inputs=inputs,
        fields=fields,
        field_list=field_list,
        field_names=[f["name"] for f in sparse_fields],
        numeric=numeric,
        numeric_names=numerics,
        flat=flat,
        sparse=sparse,
        sparse_fields=sparse_fields,
        embedding=embedding,
    )


@keras.saving.register_keras_serializable(package="ctr")
class CTRModel(keras.Model):
    """Functional model rebuilt from ``(kind, spec, params)``.

    ``kind`` names the module ``models.<kind>`` whose ``graph(spec, params)``
    returns ``(inputs, outputs)``; the config holds only the spec's
    model-input entries and the params, so ``keras.models.load_model``
    rebuilds the same graph and loads the weights into it.

    Called with a dict, the model keeps the keys it has inputs for and ignores
    the others: Keras matches a dict to a functional model's inputs by sorted
    position, so an extra key (a label, a metadata column) would otherwise
    shift the features silently.  A missing feature raises ValueError.
    """

    def __init__(self, spec: dict, params: dict | None = None, kind: str = "emb_mlp", name: str | None = None, **kwargs):
        import importlib

        spec = {"features": [dict(e) for e in input_entries(spec)]}
        resolved = resolve_params(params)
        try:
            module = importlib.import_module(f"models.{kind}")
        except ModuleNotFoundError as exc:
            raise ValueError(f"unknown model kind {kind!r}") from exc
        inputs, outputs = module.graph(spec, resolved)
        super().__init__(inputs=inputs, outputs=outputs, name=name or kind, **kwargs)
        self._kind = kind
        self._spec_json = json.dumps(spec, sort_keys=True)
        # resolved params: a later change of a default cannot change a saved model's graph
        self._params_json = json.dumps(resolved, sort_keys=True)
        self._feature_names = tuple(inputs)

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def ctr_params(self) -> dict:
        """The params the model was built with, defaults filled in."""
        return json.loads(self._params_json)

    def select_inputs(self, features: dict) -> dict:
        missing = [n for n in self._feature_names if n not in features]
        if missing:
            raise ValueError(f"model {self.name!r} is missing input features {missing}")
        return {n: features[n] for n in self._feature_names}

    def __call__(self, *args, **kwargs):
        if args and isinstance(args[0], dict):
            args = (self.select_inputs(args[0]),) + tuple(args[1:])
        elif isinstance(kwargs.get("inputs"), dict):
            kwargs["inputs"] = self.select_inputs(kwargs["inputs"])
        return super().__call__(*args, **kwargs)

    def get_config(self):
        return {"spec": json.loads(self._spec_json), "params": json.loads(self._params_json), "kind": self._kind, "name": self.name}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)
