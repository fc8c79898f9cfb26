"""YAML configs with `--set key=value` overrides.

A job's defaults live in `conf/<job>.yaml`; `--conf FILE` is merged over them,
then every `--set a.b.c=value` (value parsed as YAML, so `3`, `0.5`, `true`,
`null`, `[a, b]` work). Unknown keys are an error, so a typo never goes unnoticed; a mapping
left empty in the defaults (`params: {}`) is open: its keys are checked by the code that reads it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class ConfigError(ValueError):
    pass


def _merge(base: dict, override: dict, path: str = "", open_paths: frozenset = frozenset()) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        where = f"{path}{key}"
        if key not in out and path[:-1] not in open_paths:
            raise ConfigError(f"unknown config key '{where}' (known: {', '.join(sorted(out))})")
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = _merge(out[key], value, where + ".", open_paths)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict:
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got '{text}'")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({_first_line(exc)})") from exc
    node: dict[str, Any] = {}
    cursor = node
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[parts[-1]] = value
    return node


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _read_yaml(path) -> dict:
    try:
        with open(path) as fh:
            content = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {_first_line(exc)}") from exc
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {type(content).__name__}")
    return content


def load_config(default_name: str, conf_file: str | None = None, overrides: list[str] | None = None) -> dict:
    """Defaults from conf/<default_name>.yaml, then `conf_file`, then `--set` overrides."""
    config = _read_yaml(CONF_DIR / f"{default_name}.yaml")
    open_paths = frozenset(_empty_mappings(config))
    if conf_file:
        config = _merge(config, _read_yaml(conf_file), open_paths=open_paths)
    for text in overrides or []:
        config = _merge(config, parse_override(text), open_paths=open_paths)
    return config


def _empty_mappings(config: dict, path: str = ""):
    for key, value in config.items():
        if isinstance(value, dict):
            if not value:
                yield f"{path}{key}"
            yield from _empty_mappings(value, f"{path}{key}.")
