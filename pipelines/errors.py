"""The error a config the job cannot run with raises, and how its messages word problems and quote values.

A module of its own, importing nothing of the project: the config loader (pipelines/config.py), the
schema (pipelines/config_schema.py) and both wings raise ConfigError without importing each other.
"""

from __future__ import annotations

import reprlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

SHOWN_CHARS = 200  # the most of a value a message quotes


class ConfigError(ValueError):
    """A config the job cannot run with; its message is one problem per line."""


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 4, SHOWN_CHARS, SHOWN_CHARS, SHOWN_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 20


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """`value`'s repr for a message, at most `limit` characters (cut with '...'). reprlib stops early in
    long strings and deep or long containers, so a huge value is never rendered in full, not even once."""
    text = _REPR.repr(value) if not isinstance(value, str) else repr(value[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cut(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` (a key, a path) of at most `limit` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- pydantic errors, worded for a config

_TYPE_MESSAGES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping of config keys",
    "model_attributes_type": "must be a mapping of config keys",
}
# pydantic error type -> (comparison, the ctx key of its bound)
_BOUNDS = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}
_NO_VALUE = ("missing", "extra_forbidden", "config_relation")


def _what(error: dict) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _BOUNDS:
        comparison, bound = _BOUNDS[kind]
        return f"must be {comparison} {ctx.get(bound)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "missing":
        return "missing (every key of the job's conf/*.yaml must be given)"
    if kind == "extra_forbidden":
        return "unknown config key"
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind]
    return error["msg"].removeprefix("Value error, ")


def config_problems(exc: ValidationError) -> list[str]:
    """One `dotted.key: what is wrong, got value` line per violation of a pydantic validation."""
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        ctx = error.get("ctx") or {}
        if error["type"] == "config_relation":
            key = str(ctx["key"])
            # A key naming its section already (item_stats.recent_days: a relation across sections) is absolute.
            loc = (loc if "." not in key else []) + [key]
        key = cut(".".join(loc) or "config")
        what = _what(error)
        if error["type"] not in _NO_VALUE:
            what += f", got {shown(error['input'])}"
        lines.append(f"{key}: {what}")
    return lines
