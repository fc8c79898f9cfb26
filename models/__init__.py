"""Deep CTR models built from the feature spec.

    from models import MODEL_NAMES, build_model, compile_model, embedding_tables
    model = build_model("deepfm", spec, {"embedding_dim": 16})
    compile_model(model, {"learning_rate": 1e-3})
    model.fit(dataset_of_(features_dict, label), ...)

Every model takes the dict of the spec's ``model_input`` features and returns
the click probability ``[batch, 1]`` (float32, sigmoid of the layer named
``"logit"``; ``logit_model(model)`` gives the logit path).
"""
from __future__ import annotations

import keras
import tensorflow as tf

# Importing every module registers all "ctr>" classes, so keras.models.load_model
# works in a process that only did `import models`.
from models import dcn, dcn_v2, deepfm, emb_mlp, wide_deep
from models.inputs import DEFAULT_PARAMS, CTRModel, FeatureEmbedding, resolve_params
from models.layers import CrossNetwork, CrossNetworkV2, FMInteraction, MaskedMeanPooling, MLP, SparseLinear  # noqa: F401
from models.wide_deep import WideDeepModel

MODEL_NAMES = ("emb_mlp", "wide_deep", "deepfm", "dcn", "dcn_v2")

__all__ = [
    "MODEL_NAMES",
    "CTRModel",
    "WideDeepModel",
    "DEFAULT_PARAMS",
    "build_model",
    "compile_model",
    "embedding_tables",
    "logit_model",
]


def build_model(name: str, spec: dict, params: dict | None = None) -> keras.Model:
    """Build the model ``name`` (one of MODEL_NAMES) for ``spec``; not compiled."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    builders = {"emb_mlp": emb_mlp, "wide_deep": wide_deep, "deepfm": deepfm, "dcn": dcn, "dcn_v2": dcn_v2}
    return builders[name].build(spec, params)


def compile_model(model: keras.Model, params: dict | None = None) -> None:
    """Compile with binary cross-entropy and AUC (``name="auc"``).

    Optimizers: Adam(learning_rate, default 1e-3) for emb_mlp / deepfm / dcn /
    dcn_v2; wide_deep gets FTRL (ftrl_learning_rate, ftrl_l1, ftrl_l2) for the
    wide part and ``deep_optimizer`` ("adagrad", default lr 0.05, or "adam",
    default lr 1e-3) for the deep part.  ``params`` are merged over the params
    the model was built with (``model.ctr_params``).
    """
    merged = dict(model.ctr_params) if isinstance(model, CTRModel) else {}
    merged.update(params or {})
    p = resolve_params(merged)
    kind = "wide_deep" if isinstance(model, WideDeepModel) else getattr(model, "kind", "emb_mlp")

    def lr(default):
        return default if p["learning_rate"] is None else float(p["learning_rate"])

    common = {
        "loss": keras.losses.BinaryCrossentropy(),
        "metrics": [keras.metrics.AUC(name="auc")],
        "jit_compile": bool(p["jit_compile"]),
    }
    if kind == "wide_deep":
        if p["deep_optimizer"] == "adam":
            deep = keras.optimizers.Adam(learning_rate=lr(1e-3))
        else:
            deep = keras.optimizers.Adagrad(learning_rate=lr(0.05))
        wide = keras.optimizers.Ftrl(
            learning_rate=p["ftrl_learning_rate"],
            l1_regularization_strength=p["ftrl_l1"],
            l2_regularization_strength=p["ftrl_l2"],
        )
        model.compile(optimizer=deep, wide_optimizer=wide, **common)
    else:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr(1e-3)), **common)


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
