"""Model parameters: what each model reads, its defaults, the check of every parameter, and how an
old record reads today.

Every model declares the parameters it reads beyond the shared ones, with their defaults, as
``PARAMS`` in its module, next to its graph function (``models/<name>.py``); the registry
(``models/registry.py``) joins them to ``SHARED``, whose defaults are written once, here. A model
may list a shared parameter in its ``PARAMS`` too, to give it another default. Those two dicts are
the only defaults (conf/train.yaml holds only overrides).

    model_defaults("deepfm")                          # {"embedding_dim": 16, ..., "jit_compile": False}
    resolve_params("deepfm", {"embedding_dim": 32})   # the defaults with the overrides, checked
    recorded_params(record, "wide_deep")              # a saved model's or a run's record, as today's params

``resolve_params`` refuses a parameter the model does not read (``ParamError``, naming the model
and what it takes) and checks every value with the one check of its parameter (``CHECKS``).

Each optimizer has its own rate: ``learning_rate`` is Adam's (every model, wide_deep and dfn when
``deep_optimizer`` is adam), ``adagrad_learning_rate`` Adagrad's (wide_deep and dfn when
``deep_optimizer`` is adagrad), ``ftrl_learning_rate`` FTRL's (their wide part).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

# Read by every model: the input layer (embedding_dim, l2, seed), the MLP (hidden_units, activation,
# dropout, l2, seed), Adam (learning_rate) and compile (jit_compile).
SHARED: dict[str, Any] = {
    "embedding_dim": 16,
    "hidden_units": [256, 128, 64],
    "activation": "relu",
    "dropout": 0.0,
    "l2": 0.0,
    "learning_rate": 3e-3,  # Adam's (chosen by measurement: docs/model_defaults.md)
    "seed": None,  # None: unseeded initializers (jobs.train fills in its top-level seed)
    "jit_compile": False,
}


class ParamError(ValueError):
    """A parameter the model does not read, or a value its check refuses; one line per problem,
    each starting with ``params.<name>``."""


# ---------------------------------------------------------------- checks, one per parameter
# Each takes the value (never None for a parameter not in NULLABLE) and returns it normalized,
# or returns an error message ("must be ...").


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Bad(str):
    """A check's refusal: the message after ``params.<name> ``."""


def _positive_int(value):
    return value if _is_int(value) and value > 0 else _Bad("must be a positive int")


def _positive_ints(allow_empty: bool) -> Callable:
    def check(value):
        if isinstance(value, (list, tuple)) and (value or allow_empty) and all(_is_int(u) and u > 0 for u in value):
            return [int(u) for u in value]
        return _Bad("must be a list of positive ints" + (" (may be empty)" if allow_empty else ", not empty"))

    return check


def _number(low: float, high: float | None = None) -> Callable:
    def check(value):
        if _is_number(value) and value >= low and (high is None or value < high):
            return value
        return _Bad(f"must be a number >= {low}" if high is None else f"must be in [{low}, {high})")

    return check


def _one_of(*choices) -> Callable:
    def check(value):
        return value if value in choices else _Bad(f"must be one of {', '.join(map(repr, choices))}")

    return check


def _bool(value):
    return value if isinstance(value, bool) else _Bad("must be true or false")


def _name(value):
    return value if isinstance(value, str) and value else _Bad("must be a name (a string)")


def _crossed(value):
    if isinstance(value, (list, tuple)) and all(
        isinstance(pair, (list, tuple)) and len(pair) >= 2 and all(isinstance(n, str) for n in pair) for pair in value
    ):
        return [[str(n) for n in pair] for pair in value]
    return _Bad("must be a list of feature-name pairs")


def _seed(value):
    return value if _is_int(value) else _Bad("must be null or an int")


CHECKS: dict[str, Callable] = {
    # shared
    "embedding_dim": _positive_int,
    "hidden_units": _positive_ints(allow_empty=False),
    "activation": _name,  # a Keras activation name
    "dropout": _number(0.0, 1.0),
    "l2": _number(0.0),
    "learning_rate": _number(0.0),
    "seed": _seed,
    "jit_compile": _bool,
    # the two-optimizer models (wide_deep, dfn)
    "deep_optimizer": _one_of("adagrad", "adam"),
    "adagrad_learning_rate": _number(0.0),
    "ftrl_learning_rate": _number(0.0),
    "ftrl_l1": _number(0.0),
    "ftrl_l2": _number(0.0),
    "crossed_features": _crossed,
    "hash_buckets": _positive_int,
    # one model or two each
    "residual": _bool,
    "cross_layers": _positive_int,
    "projection_dim": _positive_int,
    "attention_units": _positive_ints(allow_empty=True),
    "attention_normalization": _one_of("softmax", "none"),
    "position_embedding": _bool,
    "target_interest_product": _bool,
    "num_heads": _positive_int,
    "feedback_pooling": _one_of("target", "mean"),
    "ff_units": _positive_int,
}
# Parameters for which null is a value (projection_dim: full rank, ff_units: 4 * embedding_dim, seed:
# unseeded) rather than "the default": a record's null stays null whatever the default becomes.
NULLABLE = frozenset({"projection_dim", "ff_units", "seed"})


def check_declaration(model_name: str, params: dict) -> None:
    """A model's PARAMS name only checked parameters, with defaults that pass their checks."""
    unchecked = sorted(set(params) - set(CHECKS))
    if unchecked:
        raise ValueError(f"{model_name} declares parameters without a check in models/params.py: {unchecked}")
    _checked(params)


# ---------------------------------------------------------------- resolving


def model_defaults(model_name: str) -> dict:
    """The parameters ``model_name`` reads, with their defaults (SHARED joined to the model's PARAMS)."""
    from models.registry import model_entry  # the registry imports the model modules, which import this one

    return copy.deepcopy(model_entry(model_name).defaults)


def _checked(params: dict) -> dict:
    out, problems = {}, []
    for key, value in params.items():
        if value is None and key in NULLABLE:
            out[key] = None
            continue
        result = CHECKS[key](value)
        if isinstance(result, _Bad):
            problems.append(f"params.{key} {result}, got {value!r}")
        out[key] = result
    if problems:
        raise ParamError("\n".join(problems))
    return out


def _not_read(model_name: str, key: str, takes) -> str:
    from models.registry import MODELS

    readers = [name for name, entry in MODELS.items() if key in entry.defaults]
    why = f"{model_name} does not read it ({', '.join(readers)} {'does' if len(readers) == 1 else 'do'})"
    if not readers:
        why = "no model reads it"
    return f"params.{key}: {why}; {model_name} takes: {', '.join(sorted(takes))}"


def resolve_params(model_name: str, params: dict | None = None) -> dict:
    """``model_name``'s defaults with ``params`` over them (None keeps the default, except for the
    NULLABLE parameters, where it is the value), every value checked.

    Raises ParamError for a parameter the model does not read (it would be ignored) and for values
    of the wrong type or range, one line per problem.
    """
    out = model_defaults(model_name)
    if params:
        if not isinstance(params, dict):
            raise ParamError(f"params must be a mapping, got {type(params).__name__}")
        foreign = sorted(set(params) - set(out))
        if foreign:
            raise ParamError("\n".join(_not_read(model_name, key, out) for key in foreign))
        out.update({k: copy.deepcopy(v) for k, v in params.items() if v is not None or k in NULLABLE})
    return _checked(out)


def unused_params(params: dict) -> set[str]:
    """Params a model declares but does not use with these values: the rate of the deep optimizer that
    ``deep_optimizer`` did not choose (wide_deep, dfn)."""
    return {"adagrad": {"learning_rate"}, "adam": {"adagrad_learning_rate"}}.get(params.get("deep_optimizer"), set())


# ---------------------------------------------------------------- records made by older code

# What a model saved (or a run recorded) before a param existed was built with: such a record lacks the
# key, and today's default would build another graph. `recorded_params` fills these in instead, for the
# model that reads the param (the others' graphs do not depend on it).
LEGACY_PARAMS: dict[str, dict[str, Any]] = {
    "din": {"target_interest_product": False},
    "dfn": {"feedback_pooling": "mean"},
}
# The rates `learning_rate: null` meant before each optimizer had its own rate parameter.
LEGACY_ADAM_RATE, LEGACY_ADAGRAD_RATE = 1e-3, 0.05


def _one_rate_per_optimizer(record: dict, reads: dict) -> dict:
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


def recorded_params(params: dict | None, model_name: str) -> dict:
    """Params read back from a saved model or a run's record (``.keras`` config, checkpoints/state.json)
    as today's params of ``model_name``, naming the graph and optimizers really built:

    * a param added since (LEGACY_PARAMS) gets the value the model was built with, not its default;
    * an old record's ``learning_rate`` becomes the rate of the optimizer it was (``_one_rate_per_optimizer``);
    * the keys ``model_name`` does not read (old records hold every model's) are dropped.
    """
    reads = model_defaults(model_name)
    record = {**LEGACY_PARAMS.get(model_name, {}), **(params or {})}
    record = _one_rate_per_optimizer(record, reads)
    return {k: v for k, v in record.items() if k in reads}
