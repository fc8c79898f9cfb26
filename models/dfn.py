"""DFN (Xie et al., IJCAI 2020, "Deep Feedback Network"): Wide + FM + Deep over the fields and the
user's positive (click) and negative (skip) feedback, read against the target item.

    q       = E[target];  c_i = E[click_i] + P[i];  u_i = E[skip_i] + P[i]   (P shared by both)
    click   = FeedbackTransformer_c(q, c)           internal feedback interaction (target = token 0, its output)
    skip    = FeedbackTransformer_u(q, u)
    ext     = FeedbackAttention(click, u)           external: the click side attends over the skips
    fields  = [other field embeddings..., click, skip, ext]              (each [batch, d])
    wide    = SparseLinear(every sparse field, crossed_features, numerics)   layer "wide", FTRL
    fm      = sum_{i<j} <fields_i, fields_j>
    deep    = w . MLP(concat(fields, numerics)) + b
    p       = sigmoid(wide + fm + deep)                                   one loss

The histories come from the spec as for din (the ``sequence`` inputs sharing the target's
embedding table): the first in spec order is the click history, the second (optional) the
skip history, as build_samples writes them (``hist_click_items``, ``hist_skip_items``).
Training is WideDeepModel's joint step: the wide layer's gradients go to FTRL, the rest to
``deep_optimizer`` (``DFNModel``).

Each transformer's output is its target token (params.feedback_pooling="target", the
default): the paper's mean over the target and the ``n`` valid behaviour tokens
(feedback_pooling="mean") keeps only ``1 / (n + 1)`` of the one token that reads the
history against the target.

The transformers are pre-LN blocks that start as the identity (``FeedbackTransformer``):
their outputs meet the raw field embeddings in the FM, which then does not start from large
logits as it did after a post-LN block. The measurements behind both choices are in
docs/model_quality.md.
"""

from __future__ import annotations

import keras
from pydantic import Field

from models.din import behaviour, history_embeddings, other_fields, sequence_seed
from models.heads import logit_head, probability
from models.inputs import build_inputs
from models.layers.feedback_attention import FeedbackAttention
from models.layers.feedback_transformer import FeedbackTransformer
from models.layers.fm import FMInteraction
from models.layers.mlp import MLP
from models.layers.position_embedding import PositionEmbedding
from models.params import Fraction, ModelParams, PositiveInt, Units, one_of, positive_ints
from models.wide_deep import WideDeepModel
from models.wide_part import WidePart, wide_logit

# Layer norm over d features keeps d - 1 degrees of freedom (d = 2: only a sign).
MIN_EMBEDDING_DIM = 3


class Params(WidePart, ModelParams):
    """The shared parameters, the wide part's (trained as wide_deep's: FTRL for the layer "wide",
    deep_optimizer for the rest), and the feedback layers'. Adam with a smaller, regularized MLP
    measured best on both rich worlds (docs/model_defaults.md)."""

    legacy = {"feedback_pooling": "mean"}  # saved before feedback_pooling existed: the paper's mean

    hidden_units: Units = Field([64, 32], description="the MLP's layer widths")
    dropout: Fraction = Field(0.2, description="dropout rate of the MLP and the transformers")
    attention_units: positive_ints(allow_empty=True) = Field(
        [64, 16], description="hidden units of the FeedbackAttention scorer ([]: linear)"
    )
    attention_normalization: one_of("softmax", "none") = Field(
        "softmax", description='the attention weights: "softmax" over the valid positions, or "none"'
    )
    num_heads: PositiveInt = Field(2, description="heads of the feedback transformers")
    feedback_pooling: one_of("target", "mean") = Field(
        "target", description='transformer output: "target" (token 0) or "mean" (of all tokens, the paper\'s)'
    )
    ff_units: PositiveInt | None = Field(None, description="transformer feed-forward width; null: 4 * embedding_dim")


def graph(spec: dict, p: dict):
    """(inputs, outputs) for resolved params ``p``."""
    if p["embedding_dim"] < MIN_EMBEDDING_DIM:
        raise ValueError(
            f"dfn needs params.embedding_dim >= {MIN_EMBEDDING_DIM} (its transformers layer-normalize "
            f"over the embedding), got {p['embedding_dim']}"
        )
    b = build_inputs(spec, p)
    beh = behaviour(spec, "dfn")
    if len(beh.sequences) > 2:
        raise ValueError(
            f"dfn takes a click and a skip history sharing the table '{beh.table}', got {list(beh.sequences)}"
        )
    query = b.field_list[b.field_names.index(beh.target)]
    position = PositionEmbedding(max(beh.lengths), seed=sequence_seed(p, 0), name="position_embedding")
    seqs = history_embeddings(b, beh, position)

    def transformer(name, k):
        return FeedbackTransformer(
            num_heads=p["num_heads"],
            ff_units=p["ff_units"],
            dropout=p["dropout"],
            activation=p["activation"],
            pooling=p["feedback_pooling"],
            seed=sequence_seed(p, 10 * (k + 1)),
            name=f"transformer_{name}",
        )([query, seqs[name], b.inputs[name]])

    clicks = beh.sequences[0]
    feedback = [transformer(clicks, 0)]
    if len(beh.sequences) == 2:
        skips = beh.sequences[1]
        feedback.append(transformer(skips, 1))
        feedback.append(
            FeedbackAttention(
                p["attention_units"],
                activation=p["activation"],
                normalization=p["attention_normalization"],
                seed=sequence_seed(p, 30),
                name=f"attention_{clicks}_{skips}",
            )([feedback[0], seqs[skips], b.inputs[skips]])
        )
    fields = other_fields(b, beh) + feedback

    wide = wide_logit(spec, b, p, numerics=True)
    fm = FMInteraction(name="fm")(fields)
    flat = keras.layers.Concatenate(name="dfn_inputs")(fields + ([b.numeric] if b.numeric is not None else []))
    deep = MLP(
        p["hidden_units"], activation=p["activation"], dropout=p["dropout"], l2=p["l2"], seed=p["seed"], name="dnn"
    )(flat)
    deep_logit = logit_head(deep, p["seed"], name="deep_logit")
    logit = keras.layers.Add(name="logit")([wide, fm, deep_logit])
    return b.inputs, probability(logit)


@keras.saving.register_keras_serializable(package="ctr")
class DFNModel(WideDeepModel):
    """DFN with wide_deep's joint step: FTRL for the layer "wide", ``deep_optimizer`` for the rest."""

    registry_name = "dfn"

    @classmethod
    def from_config(cls, config, custom_objects=None):
        if "feedback_pooling" not in (config.get("params") or {}):
            raise ValueError(
                "this dfn model was saved before its feedback transformers became pre-LN blocks that start as "
                "the identity (its params have no feedback_pooling): its weights do not fit today's graph; "
                "train it again"
            )
        return super().from_config(config, custom_objects)
