"""DCN cross network (Wang et al. 2017, "Deep & Cross Network")."""

from __future__ import annotations

import keras
import tensorflow as tf


def _check_common(cls_name, num_layers, l2):
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers <= 0:
        raise ValueError(f"{cls_name}: num_layers must be a positive int, got {num_layers!r}")
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or l2 < 0:
        raise ValueError(f"{cls_name}: l2 must be a number >= 0, got {l2!r}")


def _init(seed, offset):
    if seed is None:
        return "glorot_uniform"
    return keras.initializers.GlorotUniform(seed=int(seed) + offset)


@keras.saving.register_keras_serializable(package="ctr")
class CrossNetwork(keras.layers.Layer):
    """``num_layers`` stacked vector cross layers on ``x0`` of shape ``[batch, D]``::

        x_{l+1} = x0 * (x_l . w_l) + b_l + x_l          w_l, b_l in R^D

    (``x_l . w_l`` is a scalar per example).  Output ``[batch, D]``.
    Weights, in order: ``kernel_0 [D], bias_0 [D], kernel_1, bias_1, ...``.
    """

    def __init__(self, num_layers: int = 3, l2: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        _check_common("CrossNetwork", num_layers, l2)
        self.num_layers = num_layers
        self.l2 = float(l2)
        self.seed = seed

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(f"CrossNetwork expects [batch, D] with known D, got shape {tuple(input_shape)}")
        dim = int(input_shape[-1])
        reg = keras.regularizers.L2(self.l2) if self.l2 > 0 else None
        self.kernels, self.biases = [], []
        for l in range(self.num_layers):
            # glorot on a [D, 1] matrix, stored as a vector
            self.kernels.append(
                self.add_weight(
                    name=f"kernel_{l}", shape=(dim,), initializer=_vec_init(self.seed, l, dim), regularizer=reg
                )
            )
            self.biases.append(self.add_weight(name=f"bias_{l}", shape=(dim,), initializer="zeros"))
        self.built = True

    def call(self, inputs):
        x0 = tf.convert_to_tensor(inputs)
        x = x0
        for w, b in zip(self.kernels, self.biases):
            xw = tf.reduce_sum(x * w, axis=-1, keepdims=True)  # [batch, 1]
            x = x0 * xw + b + x
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"num_layers": self.num_layers, "l2": self.l2, "seed": self.seed})
        return config


def _vec_init(seed, offset, dim):
    limit = (6.0 / (dim + 1)) ** 0.5
    return keras.initializers.RandomUniform(-limit, limit, seed=None if seed is None else int(seed) + offset)
