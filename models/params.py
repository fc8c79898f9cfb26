"""Model parameters: the declaration every model's parameters extend, the checked types they are
written with, and the functions that resolve, describe and read back a model's parameters.

Each model declares the parameters it reads once, as a pydantic class ``Params`` in its module
(``models/<name>.py``), next to its graph: a subclass of ``ModelParams``, the parameters every
model reads, whose fields give each parameter its type (its check), its default and a one-line
description. ``wide_deep`` and ``dfn`` also mix in ``WidePart`` (models/wide_part.py). A model
may declare a shared parameter again, to give it another default. The registry
(``models/registry.py``) names each model's declaration; conf/train.yaml holds only overrides.

The functions here take the registry's mapping (model name -> an entry whose ``params`` is the
declaration) or a declaration, and never import the registry:

    defaults(declaration)                   # {"embedding_dim": 16, ..., "jit_compile": False}
    resolve(MODELS, "deepfm", {"embedding_dim": 32})   # the defaults with the overrides, checked
    recorded(declaration, record)           # a saved model's or a run's record, as today's params
    described(declaration)                  # [(name, default, description), ...]

``resolve`` refuses a parameter the model does not read (``ParamError``, naming the model and
what it takes) and checks every value with the type of its field.

Each optimizer has its own rate: ``learning_rate`` is Adam's (every model, wide_deep and dfn when
``deep_optimizer`` is adam), ``adagrad_learning_rate`` Adagrad's (wide_deep and dfn when
``deep_optimizer`` is adagrad), ``ftrl_learning_rate`` FTRL's (their wide part).
"""

from __future__ import annotations

import copy
import types
from typing import Annotated, Any, ClassVar, Literal, Mapping, Optional, Union, get_args, get_origin

from annotated_types import Ge, Gt, Lt, MinLen
from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    WrapValidator,
)
from pydantic_core import PydanticCustomError


class ParamError(ValueError):
    """A parameter the model does not read, or a value its type refuses; one line per problem,
    each starting with ``params.<name>``."""


# ---------------------------------------------------------------- checked types
# Each type refuses a value with one message ("must be ..."), whatever pydantic found wrong with it.


def _refused_as(message: str) -> WrapValidator:
    def check(value, handler):
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("param", message) from None

    return WrapValidator(check)


def _tuple_as_list(value):
    return list(value) if isinstance(value, tuple) else value


def number(low: float, high: float | None = None) -> Any:
    """An int or a finite float (not a bool) in ``[low, high)``, or ``>= low`` without ``high``; kept as given."""
    bounds = (Ge(low),) if high is None else (Ge(low), Lt(high))
    message = f"must be a number >= {low}" if high is None else f"must be in [{low}, {high})"
    return Annotated[
        Union[Annotated[StrictInt, *bounds], Annotated[StrictFloat, *bounds, AllowInfNan(False)]], _refused_as(message)
    ]


def one_of(*choices: str) -> Any:
    """One of ``choices``."""
    return Annotated[Literal[choices], _refused_as(f"must be one of {', '.join(map(repr, choices))}")]


def positive_ints(allow_empty: bool) -> Any:
    """A list (or tuple) of positive ints, as a list."""
    message = "must be a list of positive ints" + (" (may be empty)" if allow_empty else ", not empty")
    return Annotated[
        list[Annotated[StrictInt, Gt(0)]],
        Strict(),
        MinLen(0 if allow_empty else 1),
        BeforeValidator(_tuple_as_list),
        _refused_as(message),
    ]


PositiveInt = Annotated[StrictInt, Gt(0), _refused_as("must be a positive int")]
Flag = Annotated[StrictBool, _refused_as("must be true or false")]
Name = Annotated[StrictStr, MinLen(1), _refused_as("must be a name (a string)")]
Seed = Optional[Annotated[StrictInt, _refused_as("must be null or an int")]]
FeaturePairs = Annotated[
    list[Annotated[list[StrictStr], Strict(), MinLen(2), BeforeValidator(_tuple_as_list)]],
    Strict(),
    BeforeValidator(_tuple_as_list),
    _refused_as("must be a list of feature-name pairs"),
]
NonNegative = number(0.0)
Fraction = number(0.0, 1.0)
Units = positive_ints(allow_empty=False)


# ---------------------------------------------------------------- the shared declaration


class ModelParams(BaseModel):
    """The parameters every model reads: the input layer (embedding_dim, l2, seed), the MLP
    (hidden_units, activation, dropout, l2, seed), Adam (learning_rate) and compile (jit_compile).

    A field whose type admits null (``seed``, ``projection_dim``, ``ff_units``) takes null as a
    value, not as "the default": a record's null stays null whatever the default becomes.
    ``legacy``: the values a record made before a parameter existed was built with (``recorded``).
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)
    legacy: ClassVar[dict[str, Any]] = {}

    embedding_dim: PositiveInt = Field(16, description="width of every embedding table")
    hidden_units: Units = Field([256, 128, 64], description="the MLP's layer widths")
    activation: Name = Field("relu", description="the hidden layers' activation, a Keras activation name")
    dropout: Fraction = Field(0.0, description="dropout rate after each hidden layer")
    l2: NonNegative = Field(0.0, description="L2 penalty of the embeddings and the dense kernels")
    learning_rate: NonNegative = Field(
        3e-3, description="Adam's learning rate (chosen by measurement: docs/model_defaults.md)"
    )
    seed: Seed = Field(None, description="seed of the initializers; null: unseeded (jobs.train fills in its seed)")
    jit_compile: Flag = Field(False, description="compile the train step with XLA")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs):
        super().__pydantic_init_subclass__(**kwargs)
        bare = [n for n, f in cls.model_fields.items() if not f.description or "\n" in f.description]
        if bare:
            raise TypeError(f"{cls.__qualname__}: every parameter needs a one-line description: {bare}")
        stray = sorted(set(cls.legacy) - set(cls.model_fields))
        if stray:
            raise TypeError(f"{cls.__qualname__}.legacy names parameters it does not declare: {stray}")


# ---------------------------------------------------------------- resolving


def registered(models: Mapping[str, Any], model_name: str) -> Any:
    """``models[model_name]`` (``models``: the registry's name -> entry), or ValueError naming the choices."""
    if model_name not in models:
        raise ValueError(f"unknown model {model_name!r}; expected one of {tuple(models)}")
    return models[model_name]


def defaults(declaration: type[ModelParams]) -> dict:
    """The parameters ``declaration`` declares, with their defaults."""
    return declaration().model_dump()


def described(declaration: type[ModelParams]) -> list[tuple[str, Any, str]]:
    """``(name, default, description)`` of each parameter ``declaration`` declares, in declaration order."""
    values = defaults(declaration)
    return [(name, values[name], field.description) for name, field in declaration.model_fields.items()]


def _admits_null(annotation) -> bool:
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


def nullable(declaration: type[ModelParams]) -> frozenset[str]:
    """The parameters for which null is a value (their type admits it), not "the default"."""
    return frozenset(n for n, f in declaration.model_fields.items() if _admits_null(f.annotation))


def _not_read(models: Mapping[str, Any], model_name: str, key, takes) -> str:
    readers = [name for name, entry in models.items() if key in entry.params.model_fields]
    why = f"{model_name} does not read it ({', '.join(readers)} {'does' if len(readers) == 1 else 'do'})"
    if not readers:
        why = "no model reads it"
    return f"params.{key}: {why}; {model_name} takes: {', '.join(sorted(takes))}"


def _checked(declaration: type[ModelParams], given: dict) -> dict:
    try:
        return declaration.model_validate(given).model_dump()
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for error in exc.errors():
            key = error["loc"][0]
            value = given[key] if key in given else error["input"]
            problems.setdefault(key, f"params.{key} {error['msg']}, got {value!r}")
        raise ParamError("\n".join(problems.values())) from None


def resolve(models: Mapping[str, Any], model_name: str, params: dict | None = None) -> dict:
    """``model_name``'s defaults (its declaration in ``models``) with ``params`` over them (None keeps
    the default, except for the nullable parameters, where it is the value), every value checked.

    Raises ParamError for a parameter the model does not read (it would be ignored) and for values
    of the wrong type or range, one line per problem.
    """
    declaration = registered(models, model_name).params
    given = {}
    if params:
        if not isinstance(params, dict):
            raise ParamError(f"params must be a mapping, got {type(params).__name__}")
        takes = declaration.model_fields
        foreign = sorted(set(params) - set(takes))
        if foreign:
            raise ParamError("\n".join(_not_read(models, model_name, key, takes) for key in foreign))
        keeps_null = nullable(declaration)
        given = {k: copy.deepcopy(v) for k, v in params.items() if v is not None or k in keeps_null}
    return _checked(declaration, given)


def unused_params(params: dict) -> set[str]:
    """Params a model declares but does not use with these values: the rate of the deep optimizer that
    ``deep_optimizer`` did not choose (wide_deep, dfn)."""
    return {"adagrad": {"learning_rate"}, "adam": {"adagrad_learning_rate"}}.get(params.get("deep_optimizer"), set())


# ---------------------------------------------------------------- records made by older code

# The rates `learning_rate: null` meant before each optimizer had its own rate parameter.
LEGACY_ADAM_RATE, LEGACY_ADAGRAD_RATE = 1e-3, 0.05


def _one_rate_per_optimizer(record: dict, reads) -> dict:
    """Records made before adagrad_learning_rate existed (every model read one flat dict of 24 params):
    ``learning_rate`` was the rate of the deep optimizer, whichever it was, and null meant that
    optimizer's own default. Today ``learning_rate`` is Adam's and ``adagrad_learning_rate`` Adagrad's;
    the rates are written out, so that a later change of a default cannot change them."""
    if "adagrad_learning_rate" in reads and "adagrad_learning_rate" not in record:
        rate = record.get("learning_rate")
        if record.get("deep_optimizer", "adagrad") == "adagrad":
            record["adagrad_learning_rate"] = LEGACY_ADAGRAD_RATE if rate is None else rate
            record["learning_rate"] = LEGACY_ADAM_RATE  # Adam was not used
        else:
            record["adagrad_learning_rate"] = LEGACY_ADAGRAD_RATE  # Adagrad was not used
            record["learning_rate"] = LEGACY_ADAM_RATE if rate is None else rate
    elif "learning_rate" in record and record["learning_rate"] is None:
        record["learning_rate"] = LEGACY_ADAM_RATE  # Adam: null was 1e-3 (today's records write it out)
    return record


def recorded(declaration: type[ModelParams], params: dict | None) -> dict:
    """Params read back from a saved model or a run's record (``.keras`` config, checkpoints/state.json)
    as today's params of the model ``declaration`` declares, naming the graph and optimizers really built:

    * a param added since (the declaration's ``legacy``) gets the value the model was built with, not its default;
    * an old record's ``learning_rate`` becomes the rate of the optimizer it was (``_one_rate_per_optimizer``);
    * the keys the model does not read (old records hold every model's) are dropped.
    """
    reads = declaration.model_fields
    record = {**declaration.legacy, **(params or {})}
    record = _one_rate_per_optimizer(record, reads)
    return {k: v for k, v in record.items() if k in reads}
