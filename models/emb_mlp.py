"""Embedding + MLP (Deep Crossing style): concat(fields, numerics) -> MLP -> logit."""
from __future__ import annotations

import keras

from models.inputs import build_inputs, resolve_params
from models.layers.mlp import MLP


def logit_head(x, seed, name: str = "logit"):
    init = "glorot_uniform" if seed is None else keras.initializers.GlorotUniform(seed=int(seed) + 7919)
    return keras.layers.Dense(1, kernel_initializer=init, name=name)(x)


def probability(logit):
    return keras.layers.Activation("sigmoid", dtype="float32", name="prediction")(logit)


def build(spec: dict, params: dict | None = None) -> keras.Model:
    p = resolve_params(params)
    bundle = build_inputs(spec, p)
    deep = MLP(p["hidden_units"], activation=p["activation"], dropout=p["dropout"], l2=p["l2"], residual=p["residual"], seed=p["seed"], name="dnn")(bundle.flat)
    logit = logit_head(deep, p["seed"])
    return keras.Model(bundle.inputs, probability(logit), name="emb_mlp")
