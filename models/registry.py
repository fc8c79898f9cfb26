"""The one model registry: name -> graph function and model class.

    MODELS["deepfm"].graph(spec, params) -> (inputs, outputs)
    build_model("deepfm", spec, params)   -> an uncompiled CTRModel

    MODELS["deepfm"].defaults              -> the parameters deepfm reads, with their defaults

Adding a model: a module with ``graph(spec, params)`` and ``PARAMS`` (the parameters it reads
beyond models.params.SHARED, with their defaults; a check for each new one in models.params.CHECKS),
and a CTRModel subclass when it trains differently, as wide_deep does; then one line here.
``MODEL_NAMES`` and the jobs' ``--model`` choices follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from models import dcn, dcn_v2, deepfm, dfn, din, emb_mlp, wide_deep
from models.ctr_model import CTRModel
from models.params import SHARED, check_declaration


@dataclass(frozen=True)
class RegisteredModel:
    graph: Callable  # (spec, resolved params) -> (inputs dict, probability output)
    params: dict[str, Any]  # the parameters the graph and optimizers read beyond SHARED, with their defaults
    model_class: type = CTRModel
    defaults: dict[str, Any] = field(init=False)  # SHARED joined to params: everything the model reads

    def __post_init__(self):
        object.__setattr__(self, "defaults", {**SHARED, **self.params})


MODELS: dict[str, RegisteredModel] = {
    "emb_mlp": RegisteredModel(emb_mlp.graph, emb_mlp.PARAMS),
    "wide_deep": RegisteredModel(wide_deep.graph, wide_deep.PARAMS, wide_deep.WideDeepModel),
    "deepfm": RegisteredModel(deepfm.graph, deepfm.PARAMS),
    "dcn": RegisteredModel(dcn.graph, dcn.PARAMS),
    "dcn_v2": RegisteredModel(dcn_v2.graph, dcn_v2.PARAMS),
    "din": RegisteredModel(din.graph, din.PARAMS),
    "dfn": RegisteredModel(dfn.graph, dfn.PARAMS, dfn.DFNModel),
}
MODEL_NAMES = tuple(MODELS)
for _name, _entry in MODELS.items():
    check_declaration(_name, _entry.defaults)


def model_entry(name: str) -> RegisteredModel:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    return MODELS[name]


def build_model(name: str, spec: dict, params: dict | None = None) -> CTRModel:
    """The model ``name`` (one of MODEL_NAMES) for ``spec``; not compiled."""
    return model_entry(name).model_class(spec, params, model_name=name)
