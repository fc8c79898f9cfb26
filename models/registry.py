"""The one model registry: name -> graph function and model class.

    MODELS["deepfm"].graph(spec, params) -> (inputs, outputs)
    build_model("deepfm", spec, params)   -> an uncompiled CTRModel

Adding a model: a module with ``graph(spec, params)`` (and a CTRModel subclass when it
trains differently, as wide_deep does), then one line here. ``MODEL_NAMES`` and the
jobs' ``--model`` choices follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from models import dcn, dcn_v2, deepfm, dfn, din, emb_mlp, wide_deep
from models.ctr_model import CTRModel


@dataclass(frozen=True)
class RegisteredModel:
    graph: Callable  # (spec, resolved params) -> (inputs dict, probability output)
    model_class: type = CTRModel


MODELS: dict[str, RegisteredModel] = {
    "emb_mlp": RegisteredModel(emb_mlp.graph),
    "wide_deep": RegisteredModel(wide_deep.graph, wide_deep.WideDeepModel),
    "deepfm": RegisteredModel(deepfm.graph),
    "dcn": RegisteredModel(dcn.graph),
    "dcn_v2": RegisteredModel(dcn_v2.graph),
    "din": RegisteredModel(din.graph),
    "dfn": RegisteredModel(dfn.graph, dfn.DFNModel),
}
MODEL_NAMES = tuple(MODELS)


def model_entry(name: str) -> RegisteredModel:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    return MODELS[name]


def build_model(name: str, spec: dict, params: dict | None = None) -> CTRModel:
    """The model ``name`` (one of MODEL_NAMES) for ``spec``; not compiled."""
    return model_entry(name).model_class(spec, params, model_name=name)
