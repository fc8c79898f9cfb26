"""Learned recency (position) embedding for left-aligned, most-recent-first sequences."""

from __future__ import annotations

import keras
import tensorflow as tf

from models.layers.target_attention import check_int, check_seed, get_initializer, seeded, valid_mask


@keras.saving.register_keras_serializable(package="ctr")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of the sequence index to a sequence of embeddings.

    Inputs ``[values, ids]``: ``values`` ``[batch, L, d]`` with ``L <= max_len`` and the
    sequence ids ``[batch, L]`` (``padding_index`` marks padding) or a boolean mask
    (True = valid).  Our sequences are most recent first and left-aligned, so index ``i``
    is the recency rank.  With ``P`` ``[max_len, d]``::

        out[:, i, :] = m_i * (values[:, i, :] + P[i])

    Padded positions come out as exactly 0, so nothing of them (neither the padding row
    of the embedding table nor ``P``) reaches a later layer.  One instance can serve
    sequences of different lengths (the click and the skip histories): it slices ``P[:L]``.

    Weights: ``embeddings [max_len, d]`` (``embeddings_initializer``, re-seeded with
    ``seed`` when set).
    """

    def __init__(
        self,
        max_len: int,
        padding_index: int = 0,
        embeddings_initializer="random_normal",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.max_len = check_int("PositionEmbedding", "max_len", max_len, minimum=1)
        self.padding_index = check_int("PositionEmbedding", "padding_index", padding_index, minimum=0)
        self.embeddings_initializer = get_initializer("PositionEmbedding", embeddings_initializer)
        self.seed = check_seed("PositionEmbedding", seed)

    def _check_shapes(self, input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) != 2
            or not all(isinstance(s, (list, tuple)) for s in input_shape)
        ):
            raise ValueError("PositionEmbedding expects inputs [values [batch, L, d], ids or mask [batch, L]]")
        v_shape, m_shape = (tuple(s) for s in input_shape)
        if len(v_shape) != 3 or len(m_shape) != 2 or v_shape[-1] is None:
            raise ValueError(
                f"PositionEmbedding expects values [batch, L, d] with known d and ids/mask [batch, L]; got {v_shape}, {m_shape}"
            )
        if v_shape[1] is not None and v_shape[1] > self.max_len:
            raise ValueError(f"PositionEmbedding: sequence length {v_shape[1]} exceeds max_len={self.max_len}")
        if None not in (v_shape[1], m_shape[1]) and v_shape[1] != m_shape[1]:
            raise ValueError(
                f"PositionEmbedding: values have length {v_shape[1]} but ids/mask have length {m_shape[1]}"
            )
        return int(v_shape[-1])

    def build(self, input_shape):
        dim = self._check_shapes(input_shape)
        init = seeded(self.embeddings_initializer, self.seed, 0)
        self.embeddings = self.add_weight(name="embeddings", shape=(self.max_len, dim), initializer=init)
        self.built = True

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError("PositionEmbedding expects inputs [values [batch, L, d], ids or mask [batch, L]]")
        values, ids = inputs
        values = tf.convert_to_tensor(values, dtype=self.compute_dtype)
        # a shared instance sees several lengths: check each call, not only the first build
        self._check_shapes([tuple(values.shape), tuple(tf.convert_to_tensor(ids).shape)])
        if values.shape[-1] != self.embeddings.shape[-1]:
            raise ValueError(
                f"PositionEmbedding: built for d={self.embeddings.shape[-1]}, got values of size {values.shape[-1]}"
            )
        length = tf.shape(values)[1]
        too_long = tf.debugging.assert_less_equal(
            length, self.max_len, message="PositionEmbedding: sequence longer than max_len"
        )
        mask = valid_mask(ids, self.padding_index, "PositionEmbedding")
        # In a graph the check and the add would run in either order: the add waits for the check, so a
        # too long sequence always fails with the message above, not with a shape error.
        with tf.control_dependencies([too_long] if too_long is not None else []):
            positions = tf.identity(self.embeddings[:length])
        out = values + tf.cast(positions, values.dtype)[None]
        return tf.where(mask[..., None], out, tf.zeros_like(out))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_len": self.max_len,
                "padding_index": self.padding_index,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
                "seed": self.seed,
            }
        )
        return config
