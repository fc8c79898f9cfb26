"""Masked mean pooling of a padded bag / sequence of embeddings."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="ctr")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean of the embeddings whose index is not the padding index.

    Inputs: ``[values, ids]`` with ``values`` of shape ``[batch, n, d]`` and
    ``ids`` of shape ``[batch, n]`` (integer indices; ``padding_index`` marks an
    empty slot).  Output ``[batch, d]``::

        m_j   = 1 if ids[:, j] != padding_index else 0
        out   = sum_j m_j * values[:, j, :] / max(sum_j m_j, 1)

    so a row made only of padding gives the zero vector.
    """

    def __init__(self, padding_index: int = 0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(padding_index, bool) or not isinstance(padding_index, int):
            raise ValueError(f"MaskedMeanPooling: padding_index must be an int, got {padding_index!r}")
        self.padding_index = padding_index

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError("MaskedMeanPooling expects inputs [values [batch, n, d], ids [batch, n]]")
        values, ids = inputs
        values = tf.convert_to_tensor(values)
        mask = tf.cast(tf.not_equal(ids, tf.cast(self.padding_index, ids.dtype)), values.dtype)
        total = tf.reduce_sum(values * mask[..., None], axis=-2)
        count = tf.reduce_sum(mask, axis=-1, keepdims=True)
        return total / tf.maximum(count, 1.0)

    def compute_output_shape(self, input_shape):
        values_shape = input_shape[0]
        return tuple(values_shape[:-2]) + (values_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update({"padding_index": self.padding_index})
        return config
