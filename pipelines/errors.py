"""The error a config the job cannot run with raises, and how its messages quote values.

A module of its own, importing nothing of the project: the config loader (pipelines/config.py), the
schema (pipelines/config_schema.py) and both wings raise ConfigError without importing each other.
"""

from __future__ import annotations

import reprlib
from typing import Any

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
