"""DIN target attention (Zhou et al., KDD 2018, "Deep Interest Network")."""

from __future__ import annotations

import keras
import tensorflow as tf

NORMALIZATIONS = ("none", "softmax")


def check_units(cls_name: str, arg: str, units, allow_empty: bool):
    """A list of positive ints (``allow_empty``: possibly empty)."""
    if isinstance(units, (int, str)) or units is None:
        raise ValueError(f"{cls_name}: {arg} must be a list of positive ints, got {units!r}")
    units = list(units)
    if (not units and not allow_empty) or any(isinstance(u, bool) or not isinstance(u, int) or u <= 0 for u in units):
        raise ValueError(f"{cls_name}: {arg} must be a list of positive ints, got {units!r}")
    return units


def check_int(cls_name: str, arg: str, value, minimum: int):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{cls_name}: {arg} must be an int >= {minimum}, got {value!r}")
    return value


def check_seed(cls_name: str, seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"{cls_name}: seed must be None or an int, got {seed!r}")
    return seed


def get_initializer(cls_name: str, initializer):
    """A keras initializer from a name, a config dict or an initializer object."""
    try:
        return keras.initializers.get(initializer)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{cls_name}: unknown initializer {initializer!r} ({err})") from None


def get_activation(cls_name: str, activation):
    """(the activation function, what get_config stores for it) from a name or a callable."""
    try:
        function = keras.activations.get(activation)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{cls_name}: unknown activation {activation!r} ({err})") from None
    return function, activation if isinstance(activation, str) else keras.activations.serialize(function)


def seeded(initializer, seed, offset: int):
    """``initializer`` re-seeded with ``seed + offset`` when ``seed`` is set (distinct but
    reproducible values per weight); initializers without a seed are returned as they are."""
    if seed is None or not hasattr(initializer, "seed"):
        return initializer
    config = initializer.get_config()
    config["seed"] = int(seed) + offset
    return type(initializer).from_config(config)


def valid_mask(ids_or_mask, padding_index: int, cls_name: str):
    """``True`` where a position holds an item: a boolean mask is used as is, integer ids
    are compared with ``padding_index``."""
    x = tf.convert_to_tensor(ids_or_mask)
    if x.dtype == tf.bool:
        return x
    if not x.dtype.is_integer:
        raise ValueError(f"{cls_name}: the mask input must be integer ids or a boolean mask, got dtype {x.dtype.name}")
    return tf.not_equal(x, tf.cast(padding_index, x.dtype))


def masked_softmax(scores, mask, axis: int = -1):
    """Softmax of ``scores`` over the positions where ``mask`` is True; exactly 0 elsewhere
    and on a slice with no True position (never NaN, also in the gradient)."""
    zeros = tf.zeros_like(scores)
    scores = tf.where(mask, scores, zeros)
    peak = tf.stop_gradient(
        tf.reduce_max(tf.where(mask, scores, tf.fill(tf.shape(scores), scores.dtype.min)), axis=axis, keepdims=True)
    )
    exp = tf.where(mask, tf.exp(tf.where(mask, scores - peak, zeros)), zeros)
    # >= 1 as soon as one position is valid (the peak contributes exp(0) = 1), 0 otherwise
    return exp / tf.maximum(tf.reduce_sum(exp, axis=axis, keepdims=True), tf.ones((), scores.dtype))


@keras.saving.register_keras_serializable(package="ctr")
class TargetAttention(keras.layers.Layer):
    """DIN attention pooling of a behaviour sequence with respect to a target item.

    Inputs ``[query, keys, ids]``: target embedding ``q`` ``[batch, d]``, history
    embeddings ``k`` ``[batch, L, d]`` and the history ids ``[batch, L]`` (``padding_index``
    marks padding) or a boolean mask (True = valid).  With ``m_i = 1`` for a valid
    position::

        z_i  = [q, k_i, q - k_i, q * k_i]                       (4d)
        h_i  = act(... act(z_i W_1 + b_1) ... W_n + b_n)        (hidden_units = [h_1 .. h_n])
        s_i  = h_i w + c                                        (one linear unit)
        a_i  = m_i * s_i                                        normalization="none" (DIN)
        a_i  = m_i exp(s_i) / sum_j m_j exp(s_j)                normalization="softmax"
        out  = sum_i a_i k_i                                    [batch, d]

    Padded keys are replaced by 0 before scoring, so whatever sits at a padded position
    (even the padding row of the embedding table) never reaches the output; a row with no
    valid position gives exactly 0 (also with softmax).

    Weights, in order: ``kernel_0 [4d, h_1], bias_0 [h_1], ..., score_kernel [h_n, 1],
    score_bias [1]``.  Kernels use ``kernel_initializer`` re-seeded with ``seed + k`` when
    ``seed`` is set; biases start at 0.
    """

    default_normalization = "none"

    def __init__(
        self,
        hidden_units=(64, 16),
        activation="relu",
        normalization: str | None = None,
        padding_index: int = 0,
        kernel_initializer="glorot_uniform",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.hidden_units = check_units(name, "hidden_units", hidden_units, allow_empty=True)
        normalization = self.default_normalization if normalization is None else normalization
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"{name}: normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        self.normalization = normalization
        self._act, self.activation = get_activation(name, activation)
        self.padding_index = check_int(name, "padding_index", padding_index, minimum=0)
        self.kernel_initializer = get_initializer(name, kernel_initializer)
        self.seed = check_seed(name, seed)

    def _check_shapes(self, input_shape):
        name = type(self).__name__
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) != 3
            or not all(isinstance(s, (list, tuple)) for s in input_shape)
        ):
            raise ValueError(f"{name} expects inputs [query [batch, d], keys [batch, L, d], ids or mask [batch, L]]")
        q_shape, k_shape, m_shape = (tuple(s) for s in input_shape)
        if len(q_shape) != 2 or len(k_shape) != 3 or len(m_shape) != 2 or k_shape[-1] is None or q_shape[-1] is None:
            raise ValueError(
                f"{name} expects query [batch, d], keys [batch, L, d] with known d and ids/mask [batch, L]; "
                f"got {q_shape}, {k_shape}, {m_shape}"
            )
        if None not in (k_shape[1], m_shape[1]) and k_shape[1] != m_shape[1]:
            raise ValueError(f"{name}: keys have length {k_shape[1]} but ids/mask have length {m_shape[1]}")
        return int(q_shape[-1]), int(k_shape[-1])

    def _build_scorer(self, dim: int, offset: int):
        self.kernels, self.biases = [], []
        width = 4 * dim
        for k, units in enumerate(self.hidden_units):
            init = seeded(self.kernel_initializer, self.seed, offset + k)
            self.kernels.append(self.add_weight(name=f"kernel_{k}", shape=(width, units), initializer=init))
            self.biases.append(self.add_weight(name=f"bias_{k}", shape=(units,), initializer="zeros"))
            width = units
        init = seeded(self.kernel_initializer, self.seed, offset + len(self.hidden_units))
        self.score_kernel = self.add_weight(name="score_kernel", shape=(width, 1), initializer=init)
        self.score_bias = self.add_weight(name="score_bias", shape=(1,), initializer="zeros")

    def build(self, input_shape):
        q_dim, k_dim = self._check_shapes(input_shape)
        if q_dim != k_dim:
            raise ValueError(f"{type(self).__name__}: query and keys need the same size d, got {q_dim} and {k_dim}")
        self._build_scorer(k_dim, offset=0)
        self.built = True

    def _query(self, query):
        return query

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 3:
            raise ValueError(
                f"{type(self).__name__} expects inputs [query [batch, d], keys [batch, L, d], ids or mask [batch, L]]"
            )
        query, keys, ids = inputs
        keys = tf.convert_to_tensor(keys, dtype=self.compute_dtype)
        query = self._query(tf.convert_to_tensor(query, dtype=self.compute_dtype))
        mask = valid_mask(ids, self.padding_index, type(self).__name__)  # [batch, L]
        keys = tf.where(mask[..., None], keys, tf.zeros_like(keys))
        # The first scorer layer reads z_i = [q, k_i, q - k_i, q * k_i] through W = [W_q; W_k; W_d; W_p]
        # (d rows each): z_i W = q (W_q + W_d) + [k_i, q * k_i] [W_k - W_d; W_p], the same sum with
        # the query's part computed once per row instead of once per position.
        w_q, w_k, w_d, w_p = tf.split(self.kernels[0] if self.kernels else self.score_kernel, 4, axis=0)
        per_row = tf.matmul(query, w_q + w_d)[:, None, :]  # [batch, 1, units]
        per_position = tf.concat([keys, query[:, None, :] * keys], axis=-1)  # [batch, L, 2d]
        x = tf.einsum("bli,io->blo", per_position, tf.concat([w_k - w_d, w_p], axis=0)) + per_row
        if self.kernels:
            x = self._act(x + self.biases[0])
            for kernel, bias in zip(self.kernels[1:], self.biases[1:]):
                x = self._act(tf.einsum("bli,io->blo", x, kernel) + bias)
            x = tf.einsum("bli,io->blo", x, self.score_kernel)
        scores = x[..., 0] + self.score_bias  # [batch, L]
        if self.normalization == "softmax":
            weights = masked_softmax(scores, mask)
        else:
            weights = tf.where(mask, scores, tf.zeros_like(scores))
        return tf.einsum("bl,bld->bd", weights, keys)

    def compute_output_shape(self, input_shape):
        return (input_shape[1][0], input_shape[1][-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_units": list(self.hidden_units),
                "activation": self.activation,
                "normalization": self.normalization,
                "padding_index": self.padding_index,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "seed": self.seed,
            }
        )
        return config
