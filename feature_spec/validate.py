"""Checks of the spec: the per-kind rules of one entry, then the whole spec (docs/feature_spec.md).

Every check raises SpecError (a ValueError) naming the feature and what is wrong.
"""

from __future__ import annotations

import math
import re

from feature_spec.dtypes import DTYPES
from feature_spec.format import (
    EMBEDDED_KINDS,
    FORMAT_VERSION,
    HASH_DEFAULTS,
    INPUT_KINDS,
    KIND_OF_ROLE,
    MULTI_KINDS,
    NUMERIC_KIND,
    ROLES,
    SpecError,
    compute_spec_hash,
)
from feature_spec.hashing import HASH_FUNCTION, SPARK_SEED

REQUIRED_KEYS = ("name", "role", "kind", "dtype", "shape")
NORMALIZATION_KEYS = ("log1p", "mean", "std")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_vocab_size(entry: dict) -> None:
    size = entry.get("vocab_size")
    if not _is_int(size) or size < 2:
        raise SpecError(f"feature '{entry['name']}' ({entry['kind']}) has no vocab_size >= 2, got {size!r}")


def _check_embedded(entry: dict) -> None:
    name, kind = entry["name"], entry["kind"]
    _check_vocab_size(entry)
    if entry["dtype"] != "int64":
        raise SpecError(f"feature '{name}' ({kind}) must be int64, got {entry['dtype']}")
    if kind == "categorical" and entry["shape"] != []:
        raise SpecError(f"categorical feature '{name}' must have shape [], got {entry['shape']}")
    if kind in MULTI_KINDS and len(entry["shape"]) != 1:
        raise SpecError(f"{kind} feature '{name}' must have shape [n], got {entry['shape']}")
    buckets = entry.get("bucketization")
    if buckets is not None:
        if not isinstance(buckets, dict) or "source" not in buckets or not isinstance(buckets.get("boundaries"), list):
            raise SpecError(
                f"feature '{name}': bucketization must be {{'source', 'boundaries': [...]}}, got {buckets!r}"
            )
        if entry["vocab_size"] != len(buckets["boundaries"]) + 2:
            raise SpecError(
                f"bucketized feature '{name}' has vocab_size {entry['vocab_size']}, "
                f"expected len(boundaries) + 2 = {len(buckets['boundaries']) + 2}"
            )


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_numeric(entry: dict) -> None:
    """float32 scalar (shape []) or vector (shape [d]); normalization {log1p: bool, mean, std}: numbers
    for a scalar, lists of d numbers for a vector (per dimension), finite, every std > 0."""
    name, shape = entry["name"], entry["shape"]
    if entry["dtype"] != "float32":
        raise SpecError(f"numeric feature '{name}' must be float32, got {entry['dtype']} {shape}")
    norm = entry.get("normalization")
    if not isinstance(norm, dict) or not all(k in norm for k in NORMALIZATION_KEYS):
        raise SpecError(f"numeric feature '{name}' needs normalization {{log1p, mean, std}}, got {norm!r}")
    if not isinstance(norm["log1p"], bool):
        raise SpecError(f"numeric feature '{name}': normalization log1p must be true or false, got {norm['log1p']!r}")
    for key in ("mean", "std"):
        value = norm[key]
        if not shape:
            if not _is_finite_number(value):
                raise SpecError(
                    f"numeric feature '{name}' is a scalar (shape []): normalization {key} must be a finite number, "
                    f"got {value!r}"
                )
            values = [value]
        else:
            width = shape[0]
            if not isinstance(value, list) or len(value) != width:
                raise SpecError(
                    f"numeric feature '{name}' is a vector of shape [{width}]: normalization {key} must be a list "
                    f"of {width} numbers (one per dimension), got {value!r}"
                )
            for i, v in enumerate(value):
                if not _is_finite_number(v):
                    raise SpecError(
                        f"numeric feature '{name}': normalization {key}[{i}] must be a finite number, got {v!r}"
                    )
            values = value
        if key == "std":
            for i, v in enumerate(values):
                if v <= 0:
                    where = f"std[{i}]" if shape else "std"
                    raise SpecError(f"numeric feature '{name}': normalization {where} must be > 0, got {v!r}")


def _check_scalar(entry: dict, dtype: str) -> None:
    if entry["dtype"] != dtype or entry["shape"] != []:
        raise SpecError(
            f"{entry['kind']} feature '{entry['name']}' must be a {dtype} scalar, got {entry['dtype']} {entry['shape']}"
        )


def check_entry(entry: dict) -> dict:
    """The entry itself if it follows the rules of its kind."""
    if not isinstance(entry, dict):
        raise SpecError(f"a feature entry must be a mapping, got {entry!r}")
    for key in REQUIRED_KEYS:
        if key not in entry:
            raise SpecError(f"feature entry {entry.get('name', entry)!r} lacks '{key}'")
    name, role, kind = entry["name"], entry["role"], entry["kind"]
    if role not in ROLES:
        raise SpecError(f"feature '{name}' has unknown role {role!r}")
    allowed = (KIND_OF_ROLE[role],) if role in KIND_OF_ROLE else INPUT_KINDS
    if kind not in allowed:
        raise SpecError(f"{role} feature '{name}' has unsupported kind {kind!r}, expected {' | '.join(allowed)}")
    if entry["dtype"] not in DTYPES:
        raise SpecError(f"feature '{name}' has unknown dtype {entry['dtype']!r}, expected one of {', '.join(DTYPES)}")
    shape = entry["shape"]
    if not isinstance(shape, list) or len(shape) > 1 or not all(_is_int(n) and n > 0 for n in shape):
        raise SpecError(f"feature '{name}' has shape {shape!r}, expected [] or [n] with n > 0")
    if kind in EMBEDDED_KINDS:
        _check_embedded(entry)
    elif kind == NUMERIC_KIND:
        _check_numeric(entry)
    elif kind == "label":
        _check_scalar(entry, "int64")
    return entry


def check_embedded_fields(fields, owner: str) -> list[dict]:
    """The minimal field descriptions a layer takes (`name`, `kind`, `vocab_size`, optional
    `embedding_table`), checked and normalized; `owner` names the layer in the messages."""
    if not isinstance(fields, (list, tuple)):
        raise ValueError(f"{owner}: fields must be a list of feature descriptions, got {type(fields).__name__}")
    out = []
    for f in fields:
        if not isinstance(f, dict) or not {"name", "kind", "vocab_size"} <= set(f):
            raise ValueError(f"{owner}: each field needs 'name', 'kind' and 'vocab_size', got {f!r}")
        if f["kind"] not in EMBEDDED_KINDS:
            raise ValueError(f"{owner}: field '{f['name']}' has kind {f['kind']!r}, expected one of {EMBEDDED_KINDS}")
        vocab = f["vocab_size"]
        if isinstance(vocab, bool) or int(vocab) != vocab or int(vocab) < 2:
            raise ValueError(f"{owner}: field '{f['name']}' needs an integer vocab_size >= 2, got {vocab!r}")
        out.append(
            {
                "name": str(f["name"]),
                "kind": f["kind"],
                "vocab_size": int(vocab),
                "embedding_table": str(f.get("embedding_table") or f["name"]),
            }
        )
    return out


def rows_per_record(spec: dict) -> int:
    """How many samples one TFRecord record holds (docs/feature_spec.md, "Record layout")."""
    value = spec.get("rows_per_record", HASH_DEFAULTS["rows_per_record"])
    if not _is_int(value) or value < 1:
        raise SpecError(f"rows_per_record must be a positive integer, got {value!r}")
    return value


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def check_inside(path, owner: str) -> None:
    """A path the spec gives (a split's pattern, a vocabulary's folder) must stay inside the samples
    folder: relative, without a scheme and without a '..' component."""
    if not isinstance(path, str) or not path:
        raise SpecError(f"{owner} must be a non-empty path relative to the samples folder, got {path!r}")
    parts = path.replace("\\", "/").split("/")
    if path.startswith(("/", "\\")) or _SCHEME.match(path) or ".." in parts:
        raise SpecError(
            f"{owner} {path!r} points outside the samples folder: it must be relative, with no '..' "
            "component and no scheme"
        )


def _check_paths(spec: dict) -> None:
    for name, entry in (spec.get("splits") or {}).items():
        check_inside((entry or {}).get("pattern"), f"splits.{name}.pattern")
    for name, entry in (spec.get("vocabularies") or {}).items():
        if (entry or {}).get("path") is not None:
            check_inside(entry["path"], f"vocabularies.{name}.path")


def _check_smoothed_ctr(value) -> None:
    if value is None:
        return
    numbers = isinstance(value, dict) and all(
        isinstance(value.get(key), (int, float)) and not isinstance(value.get(key), bool) and math.isfinite(value[key])
        for key in ("prior", "smoothing")
    )
    if not numbers or not 0 <= value["prior"] <= 1 or value["smoothing"] < 0:
        raise SpecError(f"smoothed_ctr must be {{'prior': in [0, 1], 'smoothing': >= 0}}, got {value!r}")


def oov_bucket_count(entry: dict) -> int:
    """How many OOV buckets a vocabulary entry has (1 when it records none)."""
    buckets = entry.get("oov_buckets")
    return 1 if buckets is None else int(buckets["count"])


def first_token_index(entry: dict) -> int:
    """The index of a vocabulary's first token: after padding and its OOV buckets."""
    return int(entry.get("oov_index", 1)) + oov_bucket_count(entry)


def _check_oov_buckets(spec: dict) -> None:
    for name, entry in (spec.get("vocabularies") or {}).items():
        buckets = (entry or {}).get("oov_buckets")
        if buckets is None:
            continue
        if (
            not isinstance(buckets, dict)
            or not _is_int(buckets.get("count"))
            or buckets["count"] < 1
            or buckets.get("hash") != HASH_FUNCTION
            or buckets.get("seed") != SPARK_SEED
        ):
            raise SpecError(
                f"vocabularies.{name}.oov_buckets must be {{'count': K >= 1, 'hash': {HASH_FUNCTION!r}, "
                f"'seed': {SPARK_SEED}}}, got {buckets!r}"
            )


def _check_lineage(value) -> None:
    if value is None:
        return
    ok = (
        isinstance(value, dict)
        and isinstance(value.get("parent"), str)
        and isinstance(value.get("ancestors"), list)
        and value["ancestors"][:1] == [value["parent"]]
        and all(isinstance(h, str) for h in value["ancestors"])
        and isinstance(value.get("extends"), dict)
        and all(_is_int(size) and size >= 1 for size in value["extends"].values())
    )
    if not ok:
        raise SpecError(
            "lineage must be {'parent': hash, 'ancestors': [parent, ...], 'extends': {vocabulary: rows}}, got "
            f"{value!r}"
        )


def _check_sample_settings(value) -> None:
    if value is None:
        return
    scalar = (str, int, float, bool, type(None))
    if not isinstance(value, dict) or not all(
        isinstance(key, str) and isinstance(setting, scalar) for key, setting in value.items()
    ):
        raise SpecError(f"sample_settings must map setting names to single values, got {value!r}")


def validate_spec(spec: dict) -> dict:
    """The spec itself if it is a whole, valid spec whose hash matches its content."""
    if spec.get("format_version") != FORMAT_VERSION:
        raise SpecError(
            f"unsupported feature spec format_version {spec.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    names = set()
    for entry in spec.get("features", []):
        check_entry(entry)
        if entry["name"] in names:
            raise SpecError(f"feature '{entry['name']}' appears twice in the spec")
        names.add(entry["name"])
    if spec.get("label") not in names:
        raise SpecError(f"label feature {spec.get('label')!r} is not among the features")
    if rows_per_record(spec) > 1:
        # A block holds every feature of every row: nulls are written as NULL_VALUES, so no other default can apply.
        for entry in spec.get("features", []):
            if entry.get("default") is not None:
                raise SpecError(
                    f"feature '{entry['name']}' has default {entry['default']!r}, but with "
                    'rows_per_record > 1 a null is stored as NaN / "" / -1: its default must be null'
                )
    _check_paths(spec)
    _check_oov_buckets(spec)
    _check_lineage(spec.get("lineage"))
    _check_smoothed_ctr(spec.get("smoothed_ctr"))
    _check_sample_settings(spec.get("sample_settings"))
    expected = compute_spec_hash(spec)
    if spec.get("spec_hash") != expected:
        raise SpecError(f"feature spec hash mismatch: file says {spec.get('spec_hash')}, content hashes to {expected}")
    return spec


# ---------------------------------------------------------------- vocabulary contents


class VocabularyError(SpecError):
    """A vocabulary under vocab/ that cannot be read, or whose rows do not match its spec entry."""


# What check_vocabulary_rows reads of a vocabulary's rows, computed by whoever reads them (Spark or Arrow).
VOCABULARY_COUNTS = ("rows", "null_rows", "distinct_tokens", "distinct_indices", "min_index", "max_index")


def check_vocabulary_rows(name: str, entry: dict, counts: dict, where: str) -> None:
    """VocabularyError naming the vocabulary unless its rows are exactly what `entry` says: `num_tokens` rows,
    no null, no token twice, and indices that are a permutation of FIRST..size-1 (before FIRST: padding and
    the OOV buckets)."""
    first = first_token_index(entry)
    size, expected = int(entry["size"]), int(entry["num_tokens"])
    rows = int(counts["rows"])
    problems = []
    if rows != expected:
        problems.append(f"{rows} rows, the spec says {expected} tokens")
    if size != expected + first:
        problems.append(f"size {size} in the spec is not its {expected} tokens + {first}")
    if counts["null_rows"]:
        problems.append(f"{counts['null_rows']} rows with no token or no index")
    if int(counts["distinct_tokens"]) != rows:
        problems.append(f"{rows - int(counts['distinct_tokens'])} tokens repeated")
    if int(counts["distinct_indices"]) != rows:
        problems.append(f"{rows - int(counts['distinct_indices'])} indices repeated")
    if rows and (counts["min_index"] != first or counts["max_index"] != size - 1):
        problems.append(f"indices {counts['min_index']}..{counts['max_index']}, not {first}..{size - 1}")
    if problems:
        raise VocabularyError(
            f"vocabulary {name} ({where}) does not match the spec: {'; '.join(problems)}. "
            "A vocabulary is written by the build with its spec: do not edit it; rebuild or refit the spec"
        )
