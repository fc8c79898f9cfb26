"""A warm start across a vocabulary growth: RUN0's weights and optimizer state, moved into a model whose
tables have more rows, because its spec extends RUN0's (build_samples --fit-only --extend, any number of
steps: feature_spec.descends_from).

    sources = row_sources(old_spec, new_spec, vocab_dir)      # vocabulary -> (old rows, new row -> old row)
    transfer(old_model, new_model, new_spec, sources)         # both built, compiled, optimizers built

Every row of the old vocabularies keeps its index (that is what --extend guarantees), so it keeps its
weights. A row appended since starts as a copy of the OOV bucket its token mapped to under the old spec,
weights and optimizer slots together (Adam's moments, Adagrad's accumulator, FTRL's z and n): the new row
then goes on exactly as its bucket would have. Zero slots would not: with Adam's bias correction spent at
a high step count, a zero second moment makes the row's first update about three times a normal one, and
FTRL's accumulator starts at its initial value, not at zero. So a model scores every sample before its
first step as RUN0 scored it, a new token through its old bucket (except where the wide part crosses an
appended token, which hashes its new index into another cross row, and after --extend --refit-statistics,
which renormalizes the numeric inputs).

Which variables are indexed by vocabulary rows is read from the layers that own them: the embedding tables
of `FeatureEmbedding` (one per vocabulary) and `SparseLinear`'s field weights (one block per field, in field
order). Any other variable must have the same shape in both models, or the transfer is refused.
"""

from __future__ import annotations

import numpy as np

import feature_spec
from models.layers.feature_embedding import FeatureEmbedding
from models.layers.linear import SparseLinear


class GrowthRefused(ValueError):
    """RUN0's weights cannot be moved into the new model (a vocabulary shrank, an unknown variable grew)."""


def row_sources(old_spec: dict, new_spec: dict, vocab_dir: str) -> dict[str, tuple[int, np.ndarray]]:
    """For each vocabulary that grew: (its rows in the old spec, for each row of the new table the old row it
    starts from: itself for an old row, the old OOV bucket of its token for an appended one)."""
    old_vocabularies = old_spec.get("vocabularies") or {}
    sources = {}
    for name, entry in sorted((new_spec.get("vocabularies") or {}).items()):
        old = old_vocabularies.get(name)
        if old is None:
            raise GrowthRefused(f"vocabulary {name} is not in the spec the earlier run was trained on")
        old_size, new_size = int(old["size"]), int(entry["size"])
        if new_size < old_size:
            raise GrowthRefused(f"vocabulary {name} has {new_size} rows, fewer than the earlier run's {old_size}")
        if feature_spec.oov_bucket_count(entry) != feature_spec.oov_bucket_count(old):
            raise GrowthRefused(f"vocabulary {name} has other OOV buckets than the earlier run's")
        if new_size == old_size:
            continue
        tokens = feature_spec.vocabulary_tokens(vocab_dir, new_spec, name, new_size)
        source = np.arange(new_size)
        for row in range(old_size, new_size):
            if tokens[row] is None:
                raise GrowthRefused(f"vocabulary {name} of {vocab_dir} has no token at index {row}")
            source[row] = feature_spec.oov_index_of(old, tokens[row])
        sources[name] = (old_size, source)
    return sources


def _vocabularies_of(spec: dict) -> tuple[dict, dict]:
    """(embedding table -> the vocabulary it indexes, feature -> its vocabulary); None for a bucketized one."""
    inputs = feature_spec.model_inputs(spec)
    tables = {feature_spec.embedding_table(e): e.get("vocabulary") for e in inputs if "vocab_size" in e}
    return tables, {e["name"]: e.get("vocabulary") for e in inputs}


def _row_index(model, spec: dict, sources: dict) -> dict[int, np.ndarray]:
    """id(variable) -> the old row each of its rows starts from, for every variable of `model` (the new one)
    whose rows are vocabulary rows of a vocabulary that grew."""
    tables, features = _vocabularies_of(spec)
    rows = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, FeatureEmbedding):
            for table, embedding in layer.tables.items():
                grown = sources.get(tables.get(table))
                if grown is not None:
                    rows[id(embedding.embeddings)] = grown[1]
        elif isinstance(layer, SparseLinear) and layer.field_weights is not None:
            blocks, old_offset = [], 0
            for field in layer.fields:
                grown = sources.get(features.get(field["name"]))
                old_size, source = grown if grown is not None else (field["vocab_size"], np.arange(field["vocab_size"]))
                blocks.append(old_offset + source)
                old_offset += old_size
            if any(features.get(f["name"]) in sources for f in layer.fields):
                rows[id(layer.field_weights)] = np.concatenate(blocks)
    return rows


def _copy(source, target, rows: np.ndarray | None, what: str) -> None:
    value = np.asarray(source.numpy())
    if rows is not None:
        value = value[rows]
    if tuple(value.shape) != tuple(target.shape):
        raise GrowthRefused(
            f"{what}: the earlier run's {tuple(source.shape)} does not fit the new model's {tuple(target.shape)}"
        )
    target.assign(value)


def _slot_lists(optimizer) -> list[list]:
    """The optimizer's per-variable slot lists (Adam's moments, Adagrad's and FTRL's accumulators, FTRL's
    linears): each list attribute holding one variable per variable the optimizer updates."""
    updated = len(optimizer._trainable_variables)
    return [
        value
        for key, value in sorted(vars(optimizer).items())
        if key not in ("_variables", "_trainable_variables")
        and isinstance(value, list)
        and len(value) == updated
        and updated
        and all(hasattr(v, "assign") for v in value)
    ]


def transfer(old_model, new_model, new_spec: dict, sources: dict) -> dict[str, int]:
    """Move `old_model`'s weights and optimizer state into `new_model` (the same model and params, built for
    `new_spec`, optimizers built); return {vocabulary: rows appended} for run.json."""
    rows = _row_index(new_model, new_spec, sources)
    for old, new in zip(old_model.weights, new_model.weights, strict=True):
        _copy(old, new, rows.get(id(new)), new.path)
    groups = zip(old_model.optimizer_groups(), new_model.optimizer_groups(), strict=True)
    for (old_opt, old_vars), (new_opt, new_vars) in groups:
        new_opt.iterations.assign(old_opt.iterations)
        old_slots, new_slots = _slot_lists(old_opt), _slot_lists(new_opt)
        if len(old_slots) != len(new_slots):
            raise GrowthRefused(f"the optimizers differ: {type(old_opt).__name__}, {type(new_opt).__name__}")
        for old, new in zip(old_vars, new_vars, strict=True):
            i, j = old_opt._get_variable_index(old), new_opt._get_variable_index(new)
            for old_list, new_list in zip(old_slots, new_slots):
                _copy(old_list[i], new_list[j], rows.get(id(new)), f"{new_list[j].path} (optimizer slot)")
    return {name: int(len(source) - old_size) for name, (old_size, source) in sources.items()}
