"""DIN (Zhou et al., KDD 2018, "Deep Interest Network"): target attention over the behaviour sequences.

    q      = E[target]                                   the target item's embedding
    k_si   = E[s_i] (+ P[i] with params.position_embedding)   each history s sharing q's table
    pool_s = TargetAttention(q, k_s, ids_s)              one per history (clicks, skips)
    x      = concat(other field embeddings, pool_s for every s, q * pool_s for every s, numerics)
    logit  = w . MLP(x) + b

The histories are the ``sequence`` model inputs whose embedding table is that of one
categorical input, the target (``item_idx`` and ``hist_click_items`` / ``hist_skip_items``
share ``item_id``). They are replaced by their attention pools (not also mean-pooled);
the position (recency) embedding ``P`` is one table shared by every history.

``q * pool_s`` (element-wise; params.target_interest_product, default true, layers
``interest_<s>``) hands the MLP the target-interest match directly: its sum is the dot
product ``q . pool_s = sum_i a_i q . k_si``, the affinity of the target to the attended
history, which an MLP over ``concat(q, pool_s)`` has to approximate from sums of ReLUs.
Alibaba's DIEN release feeds its MLP ``item_eb * item_his_eb_sum`` the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from pydantic import Field

from feature_spec import checked_model_inputs, embedding_table
from models.heads import logit_head, probability
from models.inputs import InputBundle, build_inputs
from models.layers.mlp import MLP
from models.layers.position_embedding import PositionEmbedding
from models.layers.target_attention import TargetAttention
from models.params import Flag, ModelParams, one_of, positive_ints

# Offsets of the sequence layers' seeds from params.seed (the MLP and tables use seed + small k).
SEQUENCE_SEED_OFFSET = 1000


@dataclass(frozen=True)
class Behaviour:
    """The target field and the histories sharing its embedding table, from the spec."""

    target: str  # categorical feature name
    table: str  # their shared embedding table
    sequences: tuple[str, ...]  # sequence feature names, spec order
    lengths: tuple[int, ...]


def behaviour(spec: dict, model_name: str) -> Behaviour:
    """The one categorical input whose embedding table some ``sequence`` inputs share, and those
    sequences (ValueError when there is none, or when it is ambiguous)."""
    entries = checked_model_inputs(spec)
    seq_tables = {embedding_table(e) for e in entries if e["kind"] == "sequence"}
    targets = [e for e in entries if e["kind"] == "categorical" and embedding_table(e) in seq_tables]
    if len(targets) != 1:
        found = ", ".join(f"{e['name']} ({embedding_table(e)})" for e in targets) or "none"
        raise ValueError(
            f"{model_name} needs exactly one categorical target whose embedding table a sequence feature shares "
            f"(the item and its click / skip histories); found {found}"
        )
    table = embedding_table(targets[0])
    seqs = [e for e in entries if e["kind"] == "sequence" and embedding_table(e) == table]
    return Behaviour(targets[0]["name"], table, tuple(e["name"] for e in seqs), tuple(int(e["shape"][0]) for e in seqs))


def sequence_seed(p: dict, offset: int):
    return None if p["seed"] is None else int(p["seed"]) + SEQUENCE_SEED_OFFSET + offset


def history_embeddings(b: InputBundle, beh: Behaviour, position: PositionEmbedding | None) -> dict:
    """history name -> its per-position embeddings ``[batch, L, d]`` from the shared table
    (plus the recency embedding when ``position`` is given)."""
    table = b.embedding.tables[beh.table]
    out = {}
    for name in beh.sequences:
        ids = b.inputs[name]
        values = table(ids)
        out[name] = values if position is None else position([values, ids])
    return out


def other_fields(b: InputBundle, beh: Behaviour) -> list:
    """The field embeddings ``[batch, d]`` of every field but the histories, spec order."""
    return [f for f, n in zip(b.field_list, b.field_names) if n not in beh.sequences]


class Params(ModelParams):
    """The shared parameters and the target attention's."""

    legacy = {"target_interest_product": False}  # saved before target_interest_product existed: no products

    attention_units: positive_ints(allow_empty=True) = Field(
        [64, 16], description="hidden units of the scorer MLP ([]: a linear scorer)"
    )
    attention_normalization: one_of("softmax", "none") = Field(
        "softmax", description='"softmax" over the valid positions, or "none" (raw DIN scores)'
    )
    position_embedding: Flag = Field(True, description="add the shared recency embedding to the histories")
    target_interest_product: Flag = Field(
        True, description="also feed the MLP q * pool_s, the target times each attention pool"
    )


def graph(spec: dict, p: dict):
    """(inputs, outputs) for resolved params ``p``."""
    b = build_inputs(spec, p)
    beh = behaviour(spec, "din")
    query = b.field_list[b.field_names.index(beh.target)]
    position = None
    if p["position_embedding"]:
        position = PositionEmbedding(max(beh.lengths), seed=sequence_seed(p, 0), name="position_embedding")
    keys = history_embeddings(b, beh, position)
    pools = [
        TargetAttention(
            p["attention_units"],
            activation=p["activation"],
            normalization=p["attention_normalization"],
            seed=sequence_seed(p, 10 * (k + 1)),
            name=f"attention_{name}",
        )([query, keys[name], b.inputs[name]])
        for k, name in enumerate(beh.sequences)
    ]
    products = []
    if p["target_interest_product"]:
        products = [
            keras.layers.Multiply(name=f"interest_{name}")([query, pool]) for name, pool in zip(beh.sequences, pools)
        ]
    parts = other_fields(b, beh) + pools + products + ([b.numeric] if b.numeric is not None else [])
    x = keras.layers.Concatenate(name="din_inputs")(parts)
    deep = MLP(
        p["hidden_units"], activation=p["activation"], dropout=p["dropout"], l2=p["l2"], seed=p["seed"], name="dnn"
    )(x)
    return b.inputs, probability(logit_head(deep, p["seed"]))
