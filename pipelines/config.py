"""YAML configs with `--set key=value` overrides, validated against each job's schema.

A job's defaults live in `conf/<job>.yaml`; `--conf FILE` is merged over them,
then every `--set a.b.c=value` (value parsed as YAML, so `3`, `0.5`, `true`,
`null`, `[a, b]` work). Unknown keys are an error, so a typo never goes unnoticed; a mapping
left empty in the defaults (`params: {}`) is open: its keys are checked by the code that reads it.

`load_job_config` then validates the merged config (types, ranges, relations: pipelines/config_schema.py)
before any work; a ConfigError holds every violation, one `dotted.key: what is wrong` per line, and
the jobs print each as `config error: ...` and exit with code 2.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class ConfigError(ValueError):
    """A config the job cannot run with; its message is one problem per line."""


def print_config_error(exc: ConfigError, file=None) -> None:
    """Each problem as `config error: <problem>` on stderr (the jobs then exit with code 2)."""
    for line in str(exc).splitlines() or [""]:
        print(f"config error: {line}", file=file or sys.stderr)


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
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a YAML date that is none (2026-13-01)
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
    except (yaml.YAMLError, ValueError) as exc:
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


def load_job_config(job: str, conf_file: str | None = None, overrides: list[str] | None = None):
    """`load_config(job, ...)`, validated: for "build_samples" the normalized plain dict
    (config_schema.validate_build_config), for "train" a config_schema.TrainConfig. ConfigError
    (every violation) when anything is wrong; nothing else is touched."""
    from pipelines import config_schema

    validators = {"build_samples": config_schema.validate_build_config, "train": config_schema.validate_train_config}
    if job not in validators:
        raise ValueError(f"no config schema for job {job!r}; known: {', '.join(validators)}")
    return validators[job](load_config(job, conf_file, overrides))


def _empty_mappings(config: dict, path: str = ""):
    for key, value in config.items():
        if isinstance(value, dict):
            if not value:
                yield f"{path}{key}"
            yield from _empty_mappings(value, f"{path}{key}.")
