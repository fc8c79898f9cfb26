"""Deep & Cross Network (Wang et al. 2017).

x0    = concat(field embeddings, numerics)   a vector numeric [d] gives d columns, so its dimensions are crossed
cross : x_{l+1} = x0 * (x_l . w_l) + b_l + x_l,  l = 0..cross_layers-1
deep  : MLP(x0)
logit = w . concat(x_L, deep) + b
"""

from __future__ import annotations

import keras
from pydantic import Field

from models.heads import logit_head, probability
from models.inputs import build_inputs
from models.layers.cross import CrossNetwork
from models.layers.mlp import MLP
from models.params import ModelParams, PositiveInt


class Params(ModelParams):
    """The shared parameters and the cross network's depth."""

    cross_layers: PositiveInt = Field(3, description="cross layers")


def graph(spec: dict, p: dict):
    """(inputs, outputs) for resolved params ``p``."""
    b = build_inputs(spec, p)
    cross = CrossNetwork(p["cross_layers"], l2=p["l2"], seed=p["seed"], name="cross")(b.flat)
    deep = MLP(
        p["hidden_units"], activation=p["activation"], dropout=p["dropout"], l2=p["l2"], seed=p["seed"], name="dnn"
    )(b.flat)
    stacked = keras.layers.Concatenate(name="cross_deep")([cross, deep])
    return b.inputs, probability(logit_head(stacked, p["seed"]))
