"""DCN-v2 (Wang et al. 2021), parallel structure.

x0    = concat(field embeddings, numerics)   a vector numeric [d] gives d columns, so its dimensions are crossed
cross : x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l, W_l full rank or U_l V_lᵀ (projection_dim)
deep  : MLP(x0)
logit = w . concat(x_L, deep) + b
"""

from __future__ import annotations

import keras
from pydantic import Field

from models.heads import logit_head, probability
from models.inputs import build_inputs
from models.layers.cross_v2 import CrossNetworkV2
from models.layers.mlp import MLP
from models.params import ModelParams, PositiveInt


class Params(ModelParams):
    """The shared parameters and the cross network's depth and rank."""

    cross_layers: PositiveInt = Field(3, description="cross layers")
    projection_dim: PositiveInt | None = Field(
        None, description="null: full rank W_l; k: low rank U_l V_l^T with inner dimension k"
    )


def graph(spec: dict, p: dict):
    """(inputs, outputs) for resolved params ``p``."""
    b = build_inputs(spec, p)
    cross = CrossNetworkV2(
        p["cross_layers"], projection_dim=p["projection_dim"], l2=p["l2"], seed=p["seed"], name="cross_v2"
    )(b.flat)
    deep = MLP(
        p["hidden_units"], activation=p["activation"], dropout=p["dropout"], l2=p["l2"], seed=p["seed"], name="dnn"
    )(b.flat)
    stacked = keras.layers.Concatenate(name="cross_deep")([cross, deep])
    return b.inputs, probability(logit_head(stacked, p["seed"]))
