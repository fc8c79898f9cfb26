"""Model hyper-parameters: the one place their defaults live (conf/train.yaml holds only overrides).

p = resolve_params({"embedding_dim": 32})   # DEFAULT_PARAMS with the overrides, checked
"""

from __future__ import annotations

import copy
from typing import Any

DEFAULT_PARAMS: dict[str, Any] = {
    "embedding_dim": 16,
    "hidden_units": [256, 128, 64],
    "activation": "relu",
    "dropout": 0.0,
    "l2": 0.0,
    "learning_rate": None,  # None: 1e-3 for Adam, 0.05 for Adagrad
    "deep_optimizer": "adagrad",  # wide_deep, dfn: "adagrad" | "adam"
    "ftrl_learning_rate": 0.05,  # wide_deep, dfn
    "ftrl_l1": 0.0,  # wide_deep, dfn
    "ftrl_l2": 0.0,  # wide_deep, dfn
    "residual": False,  # emb_mlp only
    "cross_layers": 3,  # dcn, dcn_v2
    "projection_dim": None,  # dcn_v2: None = full rank
    "crossed_features": [],  # wide_deep, dfn: list of [feature_a, feature_b] (categorical)
    "hash_buckets": 100000,  # wide_deep, dfn crossed features
    "attention_units": [64, 16],  # din, dfn: hidden units of the DIN scorer (TargetAttention / FeedbackAttention)
    "attention_normalization": "softmax",  # din, dfn: "softmax" over the valid positions, or "none" (raw DIN scores)
    "position_embedding": True,  # din: add the shared recency embedding to the histories (dfn always does)
    "target_interest_product": True,  # din: also feed the MLP q * pool_s, the target times each attention pool
    "num_heads": 2,  # dfn: heads of the feedback transformers
    "feedback_pooling": "target",  # dfn: transformer output, "target" (token 0) or "mean" (of all tokens, the paper)
    "ff_units": None,  # dfn: transformer feed-forward width; None = 4 * embedding_dim
    "seed": None,
    "jit_compile": False,
}


# What a model saved (or a run recorded) before a param existed was built with: such a record lacks the
# key, and today's default would build another graph. `recorded_params` fills these in instead, for the
# model that reads the param (the others' graphs do not depend on it).
LEGACY_PARAMS: dict[str, dict[str, Any]] = {
    "din": {"target_interest_product": False},
    "dfn": {"feedback_pooling": "mean"},
}


def recorded_params(params: dict | None, model_name: str) -> dict:
    """Params read back from a saved model or a run's record, with the legacy value of every param
    `model_name` reads that was added since (not its default), so that they name the graph really built."""
    return {**LEGACY_PARAMS.get(model_name, {}), **(params or {})}


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def resolve_params(params: dict | None) -> dict:
    """DEFAULT_PARAMS with ``params`` over them (a None value keeps the default).

    Raises ValueError on an unknown key (a typo would otherwise be ignored) and on
    values of the wrong type or range.
    """
    out = copy.deepcopy(DEFAULT_PARAMS)
    if params:
        if not isinstance(params, dict):
            raise ValueError(f"params must be a dict, got {type(params).__name__}")
        unknown = sorted(set(params) - set(DEFAULT_PARAMS))
        if unknown:
            raise ValueError(f"unknown model params {unknown} (known: {', '.join(sorted(DEFAULT_PARAMS))})")
        out.update({k: copy.deepcopy(v) for k, v in params.items() if v is not None})
    if not _positive_int(out["embedding_dim"]):
        raise ValueError(f"params.embedding_dim must be a positive int, got {out['embedding_dim']!r}")
    units = out["hidden_units"]
    if isinstance(units, (int, str)) or not units or not all(_positive_int(u) for u in units):
        raise ValueError(f"params.hidden_units must be a non-empty list of positive ints, got {units!r}")
    out["hidden_units"] = [int(u) for u in units]
    if not 0.0 <= float(out["dropout"]) < 1.0:
        raise ValueError(f"params.dropout must be in [0, 1), got {out['dropout']!r}")
    if float(out["l2"]) < 0:
        raise ValueError(f"params.l2 must be >= 0, got {out['l2']!r}")
    if out["deep_optimizer"] not in ("adam", "adagrad"):
        raise ValueError(f"params.deep_optimizer must be 'adam' or 'adagrad', got {out['deep_optimizer']!r}")
    if not _positive_int(out["cross_layers"]):
        raise ValueError(f"params.cross_layers must be a positive int, got {out['cross_layers']!r}")
    proj = out["projection_dim"]
    if proj is not None and not _positive_int(proj):
        raise ValueError(f"params.projection_dim must be None or a positive int, got {proj!r}")
    if not _positive_int(out["hash_buckets"]):
        raise ValueError(f"params.hash_buckets must be a positive int, got {out['hash_buckets']!r}")
    crossed = out["crossed_features"] or []
    if any(not isinstance(pair, (list, tuple)) or len(pair) < 2 for pair in crossed):
        raise ValueError(f"params.crossed_features must be a list of feature-name pairs, got {crossed!r}")
    out["crossed_features"] = [[str(n) for n in pair] for pair in crossed]
    att = out["attention_units"]
    if isinstance(att, (int, str)) or att is None or not all(_positive_int(u) for u in att):
        raise ValueError(f"params.attention_units must be a list of positive ints (may be empty), got {att!r}")
    out["attention_units"] = [int(u) for u in att]
    if out["attention_normalization"] not in ("softmax", "none"):
        raise ValueError(
            f"params.attention_normalization must be 'softmax' or 'none', got {out['attention_normalization']!r}"
        )
    if not isinstance(out["position_embedding"], bool):
        raise ValueError(f"params.position_embedding must be true or false, got {out['position_embedding']!r}")
    if not isinstance(out["target_interest_product"], bool):
        raise ValueError(
            f"params.target_interest_product must be true or false, got {out['target_interest_product']!r}"
        )
    if out["feedback_pooling"] not in ("target", "mean"):
        raise ValueError(f"params.feedback_pooling must be 'target' or 'mean', got {out['feedback_pooling']!r}")
    if not _positive_int(out["num_heads"]):
        raise ValueError(f"params.num_heads must be a positive int, got {out['num_heads']!r}")
    if out["ff_units"] is not None and not _positive_int(out["ff_units"]):
        raise ValueError(f"params.ff_units must be None or a positive int, got {out['ff_units']!r}")
    seed = out["seed"]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"params.seed must be None or an int, got {seed!r}")
    return out


def learning_rate(p: dict, default: float) -> float:
    """params.learning_rate, or the optimizer's own default when it is None."""
    return default if p["learning_rate"] is None else float(p["learning_rate"])
