"""The input layer every model shares, built from the feature spec only (docs/feature_spec.md).

* ``spec_inputs(spec)``: one ``keras.Input`` per ``model_input`` feature, with the
  spec's dtype and shape (what ``tf.io.parse_example`` yields, batched).
* ``build_inputs(spec, params)``: wires the inputs into ``FeatureEmbedding`` (one table
  per ``embedding_table``; the stacked field embeddings ``[batch, n_fields, d]`` in spec
  order), ``FieldSlice`` (one ``[batch, d]`` per field) and ``NumericFeatures``
  (``[batch, total numeric width]``: a scalar numeric is one column, a vector numeric of
  shape ``[w]`` its w columns), and returns an ``InputBundle`` with them, the flat
  concatenation (fields + numerics) and the sparse index inputs for the linear / wide parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras

from feature_spec import checked_model_inputs, embedded_fields, numeric_fields
from models.layers.feature_embedding import FeatureEmbedding
from models.layers.field_slice import FieldSlice
from models.layers.numeric_features import NumericFeatures


def spec_inputs(spec: dict) -> dict[str, keras.KerasTensor]:
    """One ``keras.Input`` per model input, named after the feature."""
    return {
        e["name"]: keras.Input(shape=tuple(int(n) for n in e["shape"]), dtype=e["dtype"], name=e["name"])
        for e in checked_model_inputs(spec)
    }


@dataclass
class InputBundle:
    """What ``build_inputs`` wires up (Keras symbolic tensors)."""

    inputs: dict[str, Any]  # feature name -> keras.Input (the model's inputs)
    fields: Any  # [batch, n_fields, d] stacked field embeddings
    field_list: list  # one [batch, d] per field, spec order
    field_names: list[str]
    numeric: Any  # [batch, sum(numeric_widths)] or None when the spec has no numerics
    numeric_names: list[str]
    flat: Any  # [batch, n_fields * d + sum(numeric_widths)]
    sparse: dict[str, Any]  # sparse field name -> its index input (for linear / wide parts)
    sparse_fields: list[dict] = field(default_factory=list)  # name, kind, vocab_size, embedding_table
    embedding: FeatureEmbedding | None = None
    numeric_widths: list[int] = field(default_factory=list)  # per numeric name: 1 (scalar) or d (vector [d])


def build_inputs(spec: dict, params: dict) -> InputBundle:
    """Keras inputs and the shared embedding / numeric layers for ``spec``."""
    inputs = spec_inputs(spec)
    sparse_fields = embedded_fields(spec)
    numerics = numeric_fields(spec)
    numeric_names, numeric_widths = [n for n, _ in numerics], [w for _, w in numerics]
    if not sparse_fields:
        raise ValueError("the feature spec has no categorical / sequence / multi_categorical model inputs")
    embedding = FeatureEmbedding(
        sparse_fields,
        embedding_dim=params["embedding_dim"],
        l2=params["l2"],
        seed=params["seed"],
        name="feature_embedding",
    )
    sparse = {f["name"]: inputs[f["name"]] for f in sparse_fields}
    fields = embedding(sparse)
    field_list = [FieldSlice(i, name=f"field_{f['name']}")(fields) for i, f in enumerate(sparse_fields)]
    flat = keras.layers.Flatten(name="flat_fields")(fields)
    numeric = None
    if numerics:
        numeric = NumericFeatures(numeric_names, widths=numeric_widths, name="numeric_features")(
            {n: inputs[n] for n in numeric_names}
        )
        flat = keras.layers.Concatenate(name="flat_inputs")([flat, numeric])
    return InputBundle(
        inputs=inputs,
        fields=fields,
        field_list=field_list,
        field_names=[f["name"] for f in sparse_fields],
        numeric=numeric,
        numeric_names=numeric_names,
        flat=flat,
        sparse=sparse,
        sparse_fields=sparse_fields,
        embedding=embedding,
        numeric_widths=numeric_widths,
    )
