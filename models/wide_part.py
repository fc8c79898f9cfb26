"""The wide part that wide_deep and dfn share: its parameters, and the FTRL-trained linear layer.

    wide = b + sum_f sum_j w_f[x_fj] (+ u . z, dfn's numerics) + sum_c w_c[hash(cross_c) mod H]

``WidePart`` is mixed into those models' parameters (``class Params(WidePart, ModelParams)``):
the wide part's FTRL, the hashed crosses, and the deep part's choice of optimizer. The layer
is named ``WIDE_LAYER``; ``WideDeepModel`` (models/wide_deep.py) trains it by FTRL and the rest
of the model by ``deep_optimizer``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from feature_spec import checked_model_inputs
from models.inputs import InputBundle
from models.layers.linear import SparseLinear
from models.params import FeaturePairs, NonNegative, PositiveInt, one_of

WIDE_LAYER = "wide"


class WidePart(BaseModel):
    """The parameters of a wide part trained by FTRL beside a deep part."""

    deep_optimizer: one_of("adagrad", "adam") = Field(
        "adam", description="the deep part's optimizer: adagrad (adagrad_learning_rate) or adam (learning_rate)"
    )
    adagrad_learning_rate: NonNegative = Field(0.05, description="Adagrad's rate, when deep_optimizer is adagrad")
    ftrl_learning_rate: NonNegative = Field(0.05, description="the wide part's FTRL rate")
    ftrl_l1: NonNegative = Field(0.0, description="the wide part's FTRL L1 strength")
    ftrl_l2: NonNegative = Field(0.0, description="the wide part's FTRL L2 strength")
    crossed_features: FeaturePairs = Field(
        [], description="[[feature_a, feature_b], ...] of categorical inputs: hashed crosses in the wide part"
    )
    hash_buckets: PositiveInt = Field(100000, description="hash buckets of each crossed feature")


def checked_crosses(spec: dict, crossed) -> list[list[str]]:
    """``crossed`` (params.crossed_features) as lists of names, each a categorical model input of ``spec``
    (ValueError naming the first that is not, or a pair that repeats a feature)."""
    entries = {e["name"]: e for e in checked_model_inputs(spec)}
    out = []
    for pair in crossed:
        for name in pair:
            if name not in entries:
                raise ValueError(f"crossed feature '{name}' is not a model input of the spec")
            if entries[name]["kind"] != "categorical":
                raise ValueError(f"crossed feature '{name}' must be categorical (scalar), got {entries[name]['kind']}")
        if len(set(pair)) != len(pair):
            raise ValueError(f"crossed features {pair} repeat a feature")
        out.append(list(pair))
    return out


def wide_logit(spec: dict, b: InputBundle, p: dict, numerics: bool = False):
    """The wide part's logit ``[batch, 1]`` (layer ``WIDE_LAYER``) over every sparse field of ``b`` and
    the crosses of ``p["crossed_features"]``, and the numeric inputs too when ``numerics``."""
    crosses = checked_crosses(spec, p["crossed_features"])
    cross_names = sorted({n for c in crosses for n in c})
    numeric = {"numeric": b.numeric_names, "numeric_widths": b.numeric_widths} if numerics else {}
    linear = SparseLinear(
        fields=b.sparse_fields, crosses=crosses, hash_buckets=p["hash_buckets"], **numeric, name=WIDE_LAYER
    )
    read = cross_names + (b.numeric_names if numerics else [])
    return linear({**b.sparse, **{n: b.inputs[n] for n in read}})
