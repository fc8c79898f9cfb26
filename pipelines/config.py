"""YAML configs with `--set key=value` overrides, validated against each job's schema.

A job's defaults live in `conf/<job>.yaml`; `--conf FILE` is merged over them,
then every `--set a.b.c=value` (value parsed as YAML, so `3`, `0.5`, `true`,
`null`, `[a, b]` work). Unknown keys are an error, so a typo never goes unnoticed; a mapping
left empty in the defaults (`params: {}`) is open: its keys are checked by the code that reads it.

Every YAML text (the defaults, `--conf`, each `--set` value) is read by one loader that refuses YAML
aliases (before anything is built from them: an alias bomb costs nothing) and a key given twice at any
depth (YAML itself would silently keep the last).

`load_job_config` then validates the merged config (types, ranges, relations: pipelines/config_schema.py)
before any work; a ConfigError holds every violation, one `dotted.key: what is wrong` per line, and
the jobs print each as `config error: ...` and exit with code 2. A value quoted in a message is cut
to SHOWN_CHARS characters.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import SHOWN_CHARS, ConfigError, cut, shown

__all__ = [
    "CONF_DIR",
    "SHOWN_CHARS",
    "ConfigError",
    "cut",
    "load_config",
    "load_job_config",
    "print_config_error",
    "shown",
]

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


_LINE_CHARS = 1000  # the most of one problem printed, whatever built it


def print_config_error(exc: ConfigError, file=None) -> None:
    """Each problem as `config error: <problem>` on stderr (the jobs then exit with code 2)."""
    for line in str(exc).splitlines() or [""]:
        print(f"config error: {cut(line, _LINE_CHARS)}", file=file or sys.stderr)


class _Refused(yaml.YAMLError):
    """What the config loader refuses in a YAML text (its message names the line or the key and its lines)."""


class _ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader without aliases and without keys given twice.

    An alias is refused when the composer meets it, before any value is built from it: nine levels of
    `&b [*a, *a, ...]` are small in memory but 10**9 strings to validate or print (a billion-laughs --conf
    ran for minutes and died of MemoryError while printing its error)."""

    key_prefix = ""  # the dotted key a --set value is given for

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(
                f"line {event.start_mark.line + 1}: YAML alias *{cut(event.anchor, 40)} refused "
                "(config files take no aliases: write the value out)"
            )
        return super().compose_node(parent, index)

    def construct_document(self, node):
        _refuse_duplicate_keys(self, node, self.key_prefix)
        return super().construct_document(node)


def _refuse_duplicate_keys(loader: _ConfigLoader, node: yaml.Node, path: str) -> None:
    """A mapping key given twice anywhere under `node` (a tree: aliases are refused) -> _Refused."""
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(loader, item, f"{path}[{i}]")
    if not isinstance(node, yaml.MappingNode):
        return
    first_line: dict[Any, int] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: {...}` merges a mapping: not a key
            _refuse_duplicate_keys(loader, value_node, path)
            continue
        key = loader.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
        where = f"{path}.{key}" if path else str(key)
        line = key_node.start_mark.line + 1
        try:
            if key in first_line:
                lines = f"lines {first_line[key]} and {line}" if first_line[key] != line else f"both on line {line}"
                raise _Refused(
                    f"key {cut(where)} given twice ({lines}): a key may be given once "
                    "(YAML would silently keep the last)"
                )
            if key is not None:
                first_line[key] = line
        except TypeError:  # an unhashable key: the constructor refuses it
            pass
        _refuse_duplicate_keys(loader, value_node, where)


def _load_yaml(text_or_stream, key_prefix: str = ""):
    loader = _ConfigLoader(text_or_stream)
    loader.key_prefix = key_prefix
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _merge(base: dict, override: dict, path: str = "", open_paths: frozenset = frozenset()) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        where = f"{path}{key}"
        if key not in out and path[:-1] not in open_paths:
            raise ConfigError(f"unknown config key '{cut(where)}' (known: {', '.join(sorted(out))})")
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = _merge(out[key], value, where + ".", open_paths)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict:
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {shown(text)}")
    key, raw = text.split("=", 1)
    try:
        value = _load_yaml(raw, key.strip()) if raw != "" else ""
    except _Refused as exc:
        raise ConfigError(f"--set {shown(text)}: {exc}") from None
    except RecursionError:  # [[[[... nested past Python's stack (the parser recurses)
        raise ConfigError(f"--set {shown(text)}: the value is nested too deep") from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a YAML date that is none (2026-13-01)
        raise ConfigError(f"--set {shown(text)}: the value is not valid YAML ({_first_line(exc)})") from exc
    node: dict[str, Any] = {}
    cursor = node
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[parts[-1]] = value
    return node


def _first_line(exc: Exception) -> str:
    return cut(" ".join(str(exc).split()), _LINE_CHARS // 2)


def _read_yaml(path) -> dict:
    try:
        with open(path) as fh:
            content = _load_yaml(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except _Refused as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: a value is nested too deep") from None
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


def load_job_config(
    job: str, conf_file: str | None = None, overrides: list[str] | None = None, model_names: list[str] | None = None
):
    """`load_config(job, ...)`, validated: for "build_samples" a config_schema.BuildConfig, for "train" a
    config_schema.TrainConfig, whose `model` must be one
    of `model_names` when given (the registry's: this module imports no model). ConfigError (every
    violation) when anything is wrong; nothing else is touched."""
    from pipelines import config_schema

    if job not in ("build_samples", "train"):
        raise ValueError(f"no config schema for job {job!r}; known: build_samples, train")
    config = load_config(job, conf_file, overrides)
    if job == "build_samples":
        return config_schema.build_config(config)
    return config_schema.validate_train_config(config, model_names)


def _empty_mappings(config: dict, path: str = ""):
    for key, value in config.items():
        if isinstance(value, dict):
            if not value:
                yield f"{path}{key}"
            yield from _empty_mappings(value, f"{path}{key}.")
