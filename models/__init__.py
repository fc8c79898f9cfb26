"""Deep CTR models built from the feature spec.

    from models import MODEL_NAMES, build_model, compile_model, embedding_tables
    model = build_model("deepfm", spec, {"embedding_dim": 16})
    compile_model(model)                     # optimizers from the params the model was built with
    resolve_params("deepfm", {"embedding_dim": 16})   # the params deepfm reads, defaults filled in, checked
    model.fit(dataset_of_(features_dict, label), ...)

Every model takes the dict of the spec's ``model_input`` features and returns
the click probability ``[batch, 1]`` (float32, sigmoid of the layer named
``"logit"``; ``logit_model(model)`` gives the logit path).

    registry.py    MODELS: name -> graph function, parameters' declaration, model class; MODEL_NAMES; build_model;
                   resolve_params, recorded_params, model_defaults by model name
    ctr_model.py   CTRModel: the Keras model every model is (config, input selection, optimizers)
    params.py      ModelParams (the shared parameters), the checked types, resolve, recorded, described
    <name>.py      one model each (MODELS names them): graph(spec, params) and Params, the parameters it
                   reads (pydantic: type, default, description)
    wide_part.py   the wide part of wide_deep and dfn: WidePart (its parameters), its layer
    inputs.py      the shared input layer: keras.Input per feature, embeddings, numerics
    heads.py       logit_head, probability
    optimizers.py  FusedAdam, FusedFtrl
    layers/        one Keras layer per module
"""

from __future__ import annotations

import keras
import tensorflow as tf

# The registry imports every model module, which registers all "ctr>" classes, so
# keras.models.load_model works in a process that only did `import models`.
from models import layers  # noqa: F401
from models.ctr_model import CTRModel
from models.layers.feature_embedding import FeatureEmbedding
from models.params import ModelParams, ParamError, unused_params
from models.registry import (
    MODEL_NAMES,
    MODELS,
    build_model,
    model_defaults,
    model_params_described,
    recorded_params,
    resolve_params,
)
from models.wide_deep import WideDeepModel

__all__ = [
    "MODELS",
    "MODEL_NAMES",
    "CTRModel",
    "WideDeepModel",
    "ModelParams",
    "ParamError",
    "build_model",
    "compile_model",
    "embedding_tables",
    "logit_model",
    "model_defaults",
    "model_params_described",
    "recorded_params",
    "resolve_params",
    "unused_params",
]


def compile_model(model: CTRModel, params: dict | None = None, steps_per_execution: int = 1) -> None:
    """Compile with binary cross-entropy, AUC (``name="auc"``) and the model's own optimizers
    (``model.default_optimizers``): Adam(learning_rate, default 3e-3), except wide_deep's and dfn's
    FTRL + deep pair. ``params`` (of the model's) are merged over the params it was built with.
    ``steps_per_execution``: Keras's, the batches ``fit`` runs per call into TensorFlow."""
    p = resolve_params(model.model_name, {**model.ctr_params, **(params or {})})
    model.compile(
        **model.default_optimizers(p),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(name="auc")],
        jit_compile=bool(p["jit_compile"]),
        steps_per_execution=int(steps_per_execution),
    )


def _feature_embedding(model: keras.Model) -> FeatureEmbedding:
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, FeatureEmbedding):
            return layer
    raise ValueError(f"model {model.name!r} has no FeatureEmbedding layer")


def embedding_tables(model: keras.Model) -> dict[str, tf.Variable]:
    """Table name (the spec's ``embedding_table``) -> ``[vocab_size, dim]`` variable."""
    return _feature_embedding(model).embedding_tables()


def logit_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s weights that outputs the logit ``[batch, 1]``."""
    return keras.Model(model.inputs, model.get_layer("logit").output, name=f"{model.name}_logit")
