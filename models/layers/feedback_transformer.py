"""DFN internal feedback interaction (Xie et al., IJCAI 2020, "Deep Feedback Network")."""

from __future__ import annotations

import keras
import tensorflow as tf

from models.layers.target_attention import (
    check_int,
    check_seed,
    get_activation,
    get_initializer,
    masked_softmax,
    seeded,
    valid_mask,
)

POOLINGS = ("mean", "target")


@keras.saving.register_keras_serializable(package="ctr")
class FeedbackTransformer(keras.layers.Layer):
    """One pre-LN transformer block over ``[target, behaviour sequence]``, pooled to one vector.

    Inputs ``[target, sequence, ids]``: target embedding ``t`` ``[batch, d]``, behaviour
    embeddings ``e`` ``[batch, L, d]`` and the behaviour ids ``[batch, L]`` (``padding_index``
    marks padding) or a boolean mask (True = valid).  With ``H = num_heads``,
    ``k = key_dim`` and ``m_0 = 1`` (the target token is always valid)::

        X      = [t, e_1, ..., e_L]                             [batch, L+1, d], padded e_i := 0
        N      = LN_1(X)
        Q_h    = N Wq_h + bq_h,  K_h = N Wk_h + bk_h,  V_h = N Wv_h + bv_h      (per head, [L+1, k])
        A_h    = softmax_j over {j : m_j = 1} of  Q_h K_hᵀ / sqrt(k)            (key padding mask)
        MHA(N) = concat_h(A_h V_h) Wo + bo
        Y      = X + dropout(MHA(N))
        Z      = Y + dropout(act(LN_2(Y) F_1 + f_1) F_2 + f_2)  (act = ``activation``, width ``ff_units``)
        out    = sum_i m_i Z_i / sum_i m_i        [batch, d]   pooling="mean" (DFN paper, the default)
        out    = Z_0                              [batch, d]   pooling="target"
        LN(x)  = gamma * (x - mean(x)) / sqrt(var(x) + epsilon) + beta   (over the d features)

    The layer norms sit on the inputs of the attention and of the feed-forward part (pre-LN,
    Xiong et al. 2020), not on the residual stream, and ``Wo`` and ``F_2`` start at 0: the
    block starts as the identity (``out = t`` with ``pooling="target"``) and its output stays
    on the scale of the embeddings it adds to. That matters where the output meets raw
    embeddings, as in DFN's FM: a post-LN output has norm about ``sqrt(d)`` whatever its
    input, against about 0.1 for a freshly initialized embedding, and DFN started with FM
    logits of about +-13.

    ``pooling="mean"`` averages token 0 (the target, whose attention row reads the behaviours
    against it) with the ``n`` valid behaviour tokens, so the target's read weighs
    ``1 / (n + 1)`` of the output. ``pooling="target"`` returns token 0 alone, like a [CLS]
    token. Only token 0's row of the block is then computed (its keys and values still come
    from every token): the same ``Z_0`` for about ``1 / (L + 1)`` of the attention and
    feed-forward work.

    Padded tokens are never attended to and are left out of the pool, so the output does
    not depend on what sits at a padded position; an empty history gives the block on the
    target token alone (finite, not zero).  Defaults: ``key_dim = max(1, d // num_heads)``,
    ``ff_units = 4 d``; dropout (on the attention and feed-forward outputs) only when training.

    Weights, in order (``output_kernel`` and ``ff_kernel_2`` start at 0, the other kernels
    with ``kernel_initializer``): ``query_kernel [d, H*k], query_bias [H*k], key_kernel, key_bias,
    value_kernel, value_bias, output_kernel [H*k, d], output_bias [d], ln1_gamma [d],
    ln1_beta [d], ff_kernel_1 [d, ff_units], ff_bias_1, ff_kernel_2 [ff_units, d], ff_bias_2,
    ln2_gamma, ln2_beta``.  Head ``h`` owns columns ``h*k .. (h+1)*k - 1`` of the
    query/key/value kernels and the same rows of the output kernel.
    """

    def __init__(
        self,
        num_heads: int = 2,
        key_dim: int | None = None,
        ff_units: int | None = None,
        dropout: float = 0.0,
        activation="relu",
        epsilon: float = 1e-6,
        pooling: str = "mean",
        padding_index: int = 0,
        kernel_initializer="glorot_uniform",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        name = "FeedbackTransformer"
        self.num_heads = check_int(name, "num_heads", num_heads, minimum=1)
        self.key_dim = None if key_dim is None else check_int(name, "key_dim", key_dim, minimum=1)
        self.ff_units = None if ff_units is None else check_int(name, "ff_units", ff_units, minimum=1)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"{name}: dropout must be a number in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not float(epsilon) > 0.0:
            raise ValueError(f"{name}: epsilon must be a number > 0, got {epsilon!r}")
        self.epsilon = float(epsilon)
        if pooling not in POOLINGS:
            raise ValueError(f"{name}: pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self._act, self.activation = get_activation(name, activation)
        self.padding_index = check_int(name, "padding_index", padding_index, minimum=0)
        self.kernel_initializer = get_initializer(name, kernel_initializer)
        self.seed = check_seed(name, seed)
        self.dropouts = []
        if self.dropout > 0:
            self.dropouts = [
                keras.layers.Dropout(self.dropout, seed=None if seed is None else int(seed) + 1000 + k)
                for k in range(2)
            ]

    def build(self, input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) != 3
            or not all(isinstance(s, (list, tuple)) for s in input_shape)
        ):
            raise ValueError(
                "FeedbackTransformer expects inputs [target [batch, d], sequence [batch, L, d], ids or mask [batch, L]]"
            )
        t_shape, e_shape, m_shape = (tuple(s) for s in input_shape)
        if len(t_shape) != 2 or len(e_shape) != 3 or len(m_shape) != 2 or e_shape[-1] is None:
            raise ValueError(
                "FeedbackTransformer expects target [batch, d], sequence [batch, L, d] with known d and ids/mask [batch, L]; "
                f"got {t_shape}, {e_shape}, {m_shape}"
            )
        dim = int(e_shape[-1])
        if t_shape[-1] != dim:
            raise ValueError(
                f"FeedbackTransformer: target and sequence need the same size d, got {t_shape[-1]} and {dim}"
            )
        if None not in (e_shape[1], m_shape[1]) and e_shape[1] != m_shape[1]:
            raise ValueError(
                f"FeedbackTransformer: sequence has length {e_shape[1]} but ids/mask have length {m_shape[1]}"
            )
        self._dim = dim
        self._head = self.key_dim if self.key_dim is not None else max(1, dim // self.num_heads)
        self._ff = self.ff_units if self.ff_units is not None else 4 * dim
        inner = self.num_heads * self._head

        def kernel(name, shape, offset):
            return self.add_weight(
                name=name, shape=shape, initializer=seeded(self.kernel_initializer, self.seed, offset)
            )

        def vector(name, size, init="zeros"):
            return self.add_weight(name=name, shape=(size,), initializer=init)

        self.query_kernel, self.query_bias = kernel("query_kernel", (dim, inner), 0), vector("query_bias", inner)
        self.key_kernel, self.key_bias = kernel("key_kernel", (dim, inner), 1), vector("key_bias", inner)
        self.value_kernel, self.value_bias = kernel("value_kernel", (dim, inner), 2), vector("value_bias", inner)
        # the residual branches end at zero-initialized kernels: the block starts as the identity
        self.output_kernel = self.add_weight(name="output_kernel", shape=(inner, dim), initializer="zeros")
        self.output_bias = vector("output_bias", dim)
        self.ln1_gamma, self.ln1_beta = vector("ln1_gamma", dim, "ones"), vector("ln1_beta", dim)
        self.ff_kernel_1, self.ff_bias_1 = kernel("ff_kernel_1", (dim, self._ff), 4), vector("ff_bias_1", self._ff)
        self.ff_kernel_2 = self.add_weight(name="ff_kernel_2", shape=(self._ff, dim), initializer="zeros")
        self.ff_bias_2 = vector("ff_bias_2", dim)
        self.ln2_gamma, self.ln2_beta = vector("ln2_gamma", dim, "ones"), vector("ln2_beta", dim)
        self.built = True

    def _layer_norm(self, x, gamma, beta):
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return gamma * (x - mean) * tf.math.rsqrt(var + self.epsilon) + beta

    def _heads(self, x, kernel, bias):
        # [batch, T, d] -> [batch, H, T, k]
        y = tf.einsum("btd,di->bti", x, kernel) + bias
        y = tf.reshape(y, tf.concat([tf.shape(y)[:2], [self.num_heads, self._head]], axis=0))
        return tf.transpose(y, [0, 2, 1, 3])

    def call(self, inputs, training=None):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 3:
            raise ValueError(
                "FeedbackTransformer expects inputs [target [batch, d], sequence [batch, L, d], ids or mask [batch, L]]"
            )
        target, seq, ids = inputs
        target = tf.convert_to_tensor(target, dtype=self.compute_dtype)
        seq = tf.convert_to_tensor(seq, dtype=self.compute_dtype)
        mask = valid_mask(ids, self.padding_index, "FeedbackTransformer")
        mask = tf.concat([tf.ones_like(mask[:, :1]), mask], axis=1)  # [batch, T], T = L + 1
        x = tf.concat([target[:, None, :], seq], axis=1)
        x = tf.where(mask[..., None], x, tf.zeros_like(x))
        normed = self._layer_norm(x, self.ln1_gamma, self.ln1_beta)  # padded tokens: beta, never attended to
        # the tokens whose block output is needed: all of them for the mean, the target alone otherwise
        rows, rows_normed = (x, normed) if self.pooling == "mean" else (x[:, :1], normed[:, :1])

        q = self._heads(rows_normed, self.query_kernel, self.query_bias)
        k = self._heads(normed, self.key_kernel, self.key_bias)
        v = self._heads(normed, self.value_kernel, self.value_bias)
        logits = tf.einsum("bhqk,bhsk->bhqs", q, k) / tf.sqrt(tf.cast(self._head, x.dtype))
        attn = masked_softmax(logits, mask[:, None, None, :])  # keys only: padded queries are dropped by the pool
        ctx = tf.einsum("bhqs,bhsk->bhqk", attn, v)
        ctx = tf.reshape(
            tf.transpose(ctx, [0, 2, 1, 3]), tf.concat([tf.shape(rows)[:2], [self.num_heads * self._head]], axis=0)
        )
        mha = tf.einsum("bti,id->btd", ctx, self.output_kernel) + self.output_bias
        if self.dropouts:
            mha = self.dropouts[0](mha, training=training)
        y = rows + mha

        ff = self._layer_norm(y, self.ln2_gamma, self.ln2_beta)
        ff = self._act(tf.einsum("btd,df->btf", ff, self.ff_kernel_1) + self.ff_bias_1)
        ff = tf.einsum("btf,fd->btd", ff, self.ff_kernel_2) + self.ff_bias_2
        if self.dropouts:
            ff = self.dropouts[1](ff, training=training)
        z = y + ff
        if self.pooling == "target":
            return z[:, 0]

        weights = tf.cast(mask, z.dtype)[..., None]
        z = tf.where(mask[..., None], z, tf.zeros_like(z))
        return tf.reduce_sum(z, axis=1) / tf.reduce_sum(weights, axis=1)  # count >= 1: the target

    def compute_output_shape(self, input_shape):
        return (input_shape[1][0], input_shape[1][-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "ff_units": self.ff_units,
                "dropout": self.dropout,
                "activation": self.activation,
                "epsilon": self.epsilon,
                "pooling": self.pooling,
                "padding_index": self.padding_index,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "seed": self.seed,
            }
        )
        return config
