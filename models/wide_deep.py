"""Wide & Deep (Cheng et al. 2016) with one loss and two optimizers.

    wide  = b + sum_f sum_j w_f[x_fj] + sum_c w_c[hash(cross_c) mod H]   (SparseLinear "wide")
    deep  = DNN(concat(field embeddings, numerics)) -> "deep_logit"
    p     = sigmoid(wide + deep)

The wide part and its parameters are models/wide_part.py's (dfn has one too).
As in the paper, the wide part's variables are trained by FTRL and the deep
part's (embeddings, DNN, deep logit) by Adagrad or Adam: ``WideDeepModel``
takes the gradient of the single loss and hands the wide gradients to
``wide_optimizer`` and the rest to ``optimizer`` (``optimizer_groups``).  Both
optimizers are built in ``compile`` on disjoint variable sets; the model names
its own pair for the params (``default_optimizers``).
"""

from __future__ import annotations

import keras
from pydantic import Field

from models.ctr_model import CTRModel
from models.heads import logit_head, probability
from models.inputs import build_inputs
from models.layers.mlp import MLP
from models.optimizers import FusedAdam, FusedFtrl
from models.params import ModelParams, NonNegative
from models.wide_part import WIDE_LAYER, WidePart, wide_logit


class Params(WidePart, ModelParams):
    """The shared parameters, the wide part's, and Adam at 1e-2 for the deep part (measured best on
    both rich worlds, docs/model_defaults.md; the paper's Adagrad stays an option)."""

    learning_rate: NonNegative = Field(
        1e-2, description="Adam's learning rate, the deep part's when deep_optimizer is adam"
    )


def graph(spec: dict, p: dict):
    """(inputs, outputs) for resolved params ``p``."""
    b = build_inputs(spec, p)
    wide = wide_logit(spec, b, p)
    deep = MLP(
        p["hidden_units"], activation=p["activation"], dropout=p["dropout"], l2=p["l2"], seed=p["seed"], name="dnn"
    )(b.flat)
    deep_logit = logit_head(deep, p["seed"], name="deep_logit")
    logit = keras.layers.Add(name="logit")([wide, deep_logit])
    return b.inputs, probability(logit)


@keras.saving.register_keras_serializable(package="ctr")
class WideDeepModel(CTRModel):
    """Wide & Deep model whose training step uses two optimizers.

    ``compile(optimizer=<deep optimizer>, wide_optimizer=<FTRL>, ...)``.
    ``wide_variables`` / ``deep_variables`` partition ``trainable_variables``.
    """

    # The registry name this class builds; a subclass (dfn) names its own graph, whose
    # FTRL-trained part is the layer named WIDE_LAYER.
    registry_name = "wide_deep"

    def __init__(
        self, spec: dict, params: dict | None = None, model_name: str | None = None, name: str | None = None, **kwargs
    ):
        expected = type(self).registry_name
        model_name = expected if model_name is None else model_name
        if model_name != expected:
            raise ValueError(f"{type(self).__name__} builds model {expected!r}, got {model_name!r}")
        super().__init__(spec, params, model_name=expected, name=name, **kwargs)
        self.wide_optimizer = None

    def default_optimizers(self, p: dict) -> dict:
        """The deep part: ``deep_optimizer``, Adagrad (adagrad_learning_rate) or Adam (learning_rate);
        the wide part: FTRL (ftrl_learning_rate, ftrl_l1, ftrl_l2). Adam and FTRL are the fused ones
        (models/optimizers.py), Adagrad is Keras's: its epsilon sits elsewhere than in the fused kernel."""
        if p["deep_optimizer"] == "adam":
            deep = FusedAdam(learning_rate=p["learning_rate"])
        else:
            deep = keras.optimizers.Adagrad(learning_rate=p["adagrad_learning_rate"])
        wide = FusedFtrl(
            learning_rate=p["ftrl_learning_rate"],
            l1_regularization_strength=p["ftrl_l1"],
            l2_regularization_strength=p["ftrl_l2"],
        )
        return {"optimizer": deep, "wide_optimizer": wide}

    # -- variables -------------------------------------------------------
    @property
    def wide_variables(self) -> list:
        return list(self.get_layer(WIDE_LAYER).trainable_variables)

    @property
    def deep_variables(self) -> list:
        wide = {id(v) for v in self.wide_variables}
        return [v for v in self.trainable_variables if id(v) not in wide]

    # -- compile / save --------------------------------------------------
    def compile(self, optimizer="adagrad", wide_optimizer="ftrl", **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        self.wide_optimizer = keras.optimizers.get(wide_optimizer)
        self.wide_optimizer.build(self.wide_variables)
        self.optimizer.build(self.deep_variables)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and self.wide_optimizer is not None:
            config = dict(config)
            config["wide_optimizer"] = keras.saving.serialize_keras_object(self.wide_optimizer)
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)

    # -- training --------------------------------------------------------
    def optimizer_groups(self) -> list[tuple]:
        """The wide part's variables by FTRL, the rest by the deep optimizer (CTRModel.gradient_step)."""
        if self.wide_optimizer is None:
            raise ValueError(f"{type(self).__name__}: call compile() (models.compile_model) before training")
        return [(self.wide_optimizer, self.wide_variables), (self.optimizer, self.deep_variables)]
