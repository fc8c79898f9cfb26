"""Embedding + MLP (Deep Crossing style): concat(fields, numerics) -> MLP -> logit."""

from __future__ import annotations

from models.heads import logit_head, probability
from models.inputs import build_inputs
from models.layers.mlp import MLP

# The parameters this model reads beyond models.params.SHARED, with their defaults (the only place they are
# written; a shared one listed here takes this default for this model).
PARAMS = {
    "residual": False,  # residual units in the MLP
}


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
