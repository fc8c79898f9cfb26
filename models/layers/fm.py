"""Factorization-machine second-order interaction (Rendle 2010)."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="ctr")
class FMInteraction(keras.layers.Layer):
    """Sum of pairwise dot products of the field embeddings.

    Input: ``[batch, n_fields, d]`` (or a list of ``[batch, d]`` tensors, one
    per field).  With ``v_i`` the embedding of field ``i``::

        y = sum_{i<j} <v_i, v_j>
          = 0.5 * sum_k [ (sum_i v_ik)^2 - sum_i v_ik^2 ]

    Output ``[batch, 1]``; with ``reduce_sum=False`` the per-dimension vector
    ``0.5 * [(sum_i v_i)^2 - sum_i v_i^2]`` of shape ``[batch, d]`` (the NFM
    bi-interaction) instead.  No weights.
    """

    def __init__(self, reduce_sum: bool = True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(reduce_sum, bool):
            raise ValueError(f"FMInteraction: reduce_sum must be a bool, got {reduce_sum!r}")
        self.reduce_sum = reduce_sum

    @staticmethod
    def _stacked(inputs):
        if isinstance(inputs, (list, tuple)):
            return tf.stack(list(inputs), axis=1)
        return tf.convert_to_tensor(inputs)

    def build(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
            ranks = {len(s) for s in input_shape}
            if ranks != {2}:
                raise ValueError(f"FMInteraction: a list input needs [batch, d] tensors, got shapes {input_shape}")
        elif len(input_shape) != 3:
            raise ValueError(f"FMInteraction expects [batch, n_fields, d], got shape {tuple(input_shape)}")
        self.built = True

    def call(self, inputs):
        v = self._stacked(inputs)
        square_of_sum = tf.square(tf.reduce_sum(v, axis=1))
        sum_of_square = tf.reduce_sum(tf.square(v), axis=1)
        out = 0.5 * (square_of_sum - sum_of_square)
        if self.reduce_sum:
            out = tf.reduce_sum(out, axis=-1, keepdims=True)
        return out

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
            batch, dim = input_shape[0][0], input_shape[0][-1]
        else:
            batch, dim = input_shape[0], input_shape[-1]
        return (batch, 1) if self.reduce_sum else (batch, dim)

    def get_config(self):
        config = super().get_config()
        config.update({"reduce_sum": self.reduce_sum})
        return config
