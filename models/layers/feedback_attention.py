"""DFN external feedback interaction (Xie et al., IJCAI 2020, "Deep Feedback Network")."""

from __future__ import annotations

import keras
import tensorflow as tf

from models.layers.target_attention import TargetAttention, seeded


@keras.saving.register_keras_serializable(package="ctr")
class FeedbackAttention(TargetAttention):
    """The click-side representation attends over the skip (negative feedback) sequence.

    Inputs ``[click, skips, skip_ids]``: the click-side vector ``c`` ``[batch, d_c]`` (e.g.
    the pooled output of the click ``FeedbackTransformer``), the skip embeddings ``u``
    ``[batch, L, d]`` and the skip ids ``[batch, L]`` or a boolean mask (True = valid).
    The scores are DIN's (see ``TargetAttention``) with the click side as the query::

        q    = c                       project_query=False (needs d_c == d)
        q    = c P + p                 project_query=True  (P [d_c, d], p [d])
        s_i  = MLP([q, u_i, q - u_i, q * u_i])
        a_i  = m_i exp(s_i) / sum_j m_j exp(s_j)     normalization="softmax" (default)
        a_i  = m_i s_i                               normalization="none"
        out  = sum_i a_i u_i                         [batch, d]

    Padded skips are replaced by 0 before scoring; an empty skip history gives exactly 0.

    Weights, in order: with ``project_query``, ``query_kernel [d_c, d], query_bias [d]``;
    then the scorer's ``kernel_0 [4d, h_1], bias_0, ..., score_kernel [h_n, 1], score_bias [1]``.
    """

    default_normalization = "softmax"

    def __init__(self, hidden_units=(64, 16), project_query: bool = False, **kwargs):
        super().__init__(hidden_units=hidden_units, **kwargs)
        if not isinstance(project_query, bool):
            raise ValueError(f"FeedbackAttention: project_query must be a bool, got {project_query!r}")
        self.project_query = project_query

    def build(self, input_shape):
        q_dim, k_dim = self._check_shapes(input_shape)
        offset = 0
        if self.project_query:
            init = seeded(self.kernel_initializer, self.seed, 0)
            self.query_kernel = self.add_weight(name="query_kernel", shape=(q_dim, k_dim), initializer=init)
            self.query_bias = self.add_weight(name="query_bias", shape=(k_dim,), initializer="zeros")
            offset = 1
        elif q_dim != k_dim:
            raise ValueError(
                f"FeedbackAttention: the click side has size {q_dim} and the skips {k_dim}; "
                "make them equal or set project_query=True"
            )
        self._build_scorer(k_dim, offset=offset)
        self.built = True

    def _query(self, query):
        if self.project_query:
            return tf.matmul(query, self.query_kernel) + self.query_bias
        return query

    def get_config(self):
        config = super().get_config()
        config.update({"project_query": self.project_query})
        return config
