"""The one model registry: name -> graph function, parameters' declaration and model class.

    MODELS["deepfm"].graph(spec, params) -> (inputs, outputs)
    MODELS["deepfm"].params               -> deepfm.Params, the parameters deepfm reads (pydantic)
    build_model("deepfm", spec, params)   -> an uncompiled CTRModel
    resolve_params("deepfm", {...})       -> deepfm's defaults with the overrides, checked

Adding a model: a module with ``graph(spec, params)`` and ``Params`` (a ``models.params.ModelParams``
subclass declaring the parameters it reads beyond the shared ones, each with its type, default and
description), and a CTRModel subclass when it trains differently, as wide_deep does; then one line
here. ``MODEL_NAMES``, the jobs' ``--model`` choices and ``--help --model NAME`` follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from models import dcn, dcn_v2, deepfm, dfn, din, emb_mlp, wide_deep
from models.ctr_model import CTRModel
from models.params import ModelParams, defaults, described, recorded, registered, resolve


@dataclass(frozen=True)
class RegisteredModel:
    graph: Callable  # (spec, resolved params) -> (inputs dict, probability output)
    params: type[ModelParams]  # the parameters the graph and optimizers read, with their defaults
    model_class: type = CTRModel

    def __post_init__(self):
        self.params()  # the defaults pass their own checks (a ValidationError at import otherwise)


MODELS: dict[str, RegisteredModel] = {
    "emb_mlp": RegisteredModel(emb_mlp.graph, emb_mlp.Params),
    "wide_deep": RegisteredModel(wide_deep.graph, wide_deep.Params, wide_deep.WideDeepModel),
    "deepfm": RegisteredModel(deepfm.graph, deepfm.Params),
    "dcn": RegisteredModel(dcn.graph, dcn.Params),
    "dcn_v2": RegisteredModel(dcn_v2.graph, dcn_v2.Params),
    "din": RegisteredModel(din.graph, din.Params),
    "dfn": RegisteredModel(dfn.graph, dfn.Params, dfn.DFNModel),
}
MODEL_NAMES = tuple(MODELS)
CTRModel.registered_models = MODELS  # where every CTRModel finds its graph and its parameters


def model_entry(name: str) -> RegisteredModel:
    """``MODELS[name]``, or ValueError naming the models."""
    return registered(MODELS, name)


def build_model(name: str, spec: dict, params: dict | None = None) -> CTRModel:
    """The model ``name`` (one of MODEL_NAMES) for ``spec``; not compiled."""
    return model_entry(name).model_class(spec, params, model_name=name)


def model_defaults(name: str) -> dict:
    """The parameters ``name`` reads, with their defaults."""
    return defaults(model_entry(name).params)


def model_params_described(name: str) -> list[tuple]:
    """``(parameter, default, description)`` of each parameter ``name`` reads."""
    return described(model_entry(name).params)


def resolve_params(name: str, params: dict | None = None) -> dict:
    """``name``'s defaults with ``params`` over them, checked (models.params.resolve)."""
    return resolve(MODELS, name, params)


def recorded_params(params: dict | None, name: str) -> dict:
    """A saved model's or a run's record of ``name``'s params as today's (models.params.recorded)."""
    return recorded(model_entry(name).params, params)
