"""Embedding + MLP (Deep Crossing style): concat(fields, numerics) -> MLP -> logit."""
from __future__ import annotations

import keras

from models.inputs import CTRModel, build_inputs
from models.layers.mlp import MLP


def logit_head(x, seed, name: str = "logit"):
    init = "glorot_uniform" if seed is None else keras.initializers.GlorotUniform(seed=int(seed) + 7919)
    return keras.layers.Dense(1, kernel_initializer=init, name=name)(x)


def probability(logit):
    return keras.layers.Activation("sigmoid", dtype="float32", name="prediction")(logit)


def graph(spec: dict, p: dict):
    """(inputs, outputs) for resolved params ``p``."""
    bundle = build_inputs(spec, p)
    deep = MLP(p["hidden_units"], activation=p["activation"], dropout=p["dropout"], l2=p["l2"], residual=p["residual"], seed=p["seed"], name="dnn")(bundle.flat)
    logit = logit_head(deep, p["seed"])
    return bundle.inputs, probability(logit)


def build(spec: dict, params: dict | None = None) -> keras.Model:
    return CTRModel(spec, params, kind="emb_mlp")
