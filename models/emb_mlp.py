"""Embedding + MLP (Deep Crossing style): concat(fields, numerics) -> MLP -> logit."""

from __future__ import annotations

from pydantic import Field

from models.heads import logit_head, probability
from models.inputs import build_inputs
from models.layers.mlp import MLP
from models.params import Flag, ModelParams


class Params(ModelParams):
    """The shared parameters and the MLP's residual units."""

    residual: Flag = Field(False, description="residual units in the MLP")


def graph(spec: dict, p: dict):
    """(inputs, outputs) for resolved params ``p``."""
    bundle = build_inputs(spec, p)
    deep = MLP(
        p["hidden_units"],
        activation=p["activation"],
        dropout=p["dropout"],
        l2=p["l2"],
        residual=p["residual"],
        seed=p["seed"],
        name="dnn",
    )(bundle.flat)
    logit = logit_head(deep, p["seed"])
    return bundle.inputs, probability(logit)
