"""DeepFM (Guo et al. 2017): FM (first + second order) and a DNN sharing the embeddings.

logit = b + sum_f w_f[x_f] + u . z          first order (SparseLinear: 1-d weights per index, numeric linear;
                                            z: every numeric column, a vector numeric [d] giving d)
      + sum_{i<j} <e_i, e_j>                second order over the field embeddings (FMInteraction)
      + DNN(concat(e_1..e_F, z))            deep part on the same embeddings
"""

from __future__ import annotations

import keras

from models.heads import logit_head, probability
from models.inputs import build_inputs
from models.layers.fm import FMInteraction
from models.layers.linear import SparseLinear
from models.layers.mlp import MLP
from models.params import ModelParams


class Params(ModelParams):
    """DeepFM reads the shared parameters only."""


def graph(spec: dict, p: dict):
    """(inputs, outputs) for resolved params ``p``."""
    b = build_inputs(spec, p)
    first = SparseLinear(
        fields=b.sparse_fields,
        numeric=b.numeric_names,
        numeric_widths=b.numeric_widths,
        l2=p["l2"],
        name="fm_first_order",
    )({**b.sparse, **{n: b.inputs[n] for n in b.numeric_names}})
    second = FMInteraction(name="fm_second_order")(b.fields)
    deep = MLP(
        p["hidden_units"], activation=p["activation"], dropout=p["dropout"], l2=p["l2"], seed=p["seed"], name="dnn"
    )(b.flat)
    dnn_logit = logit_head(deep, p["seed"], name="dnn_logit")
    logit = keras.layers.Add(name="logit")([first, second, dnn_logit])
    return b.inputs, probability(logit)
