"""DCN-v2 matrix cross network (Wang et al. 2021, "DCN V2")."""

from __future__ import annotations

import keras
import tensorflow as tf

from models.layers.cross import _check_common, _init


@keras.saving.register_keras_serializable(package="ctr")
class CrossNetworkV2(keras.layers.Layer):
    """``num_layers`` stacked matrix cross layers on ``x0`` of shape ``[batch, D]``::

        x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l

    Full rank (``projection_dim=None``): ``W_l`` is ``[D, D]``; with row vectors
    the layer computes ``x_l @ kernel_l`` where ``kernel_l = W_lᵀ``.
    Low rank (``projection_dim=r``): ``W_l = U_l V_lᵀ`` with ``U_l, V_l`` of
    shape ``[D, r]``, computed as ``(x_l @ down_l) @ up_l`` with
    ``down_l = V_l`` ``[D, r]`` and ``up_l = U_lᵀ`` ``[r, D]``.

    Weights, in order, per layer: full ``kernel_l [D, D], bias_l [D]``;
    low rank ``down_l [D, r], up_l [r, D], bias_l [D]``.
    """

    def __init__(
        self, num_layers: int = 3, projection_dim: int | None = None, l2: float = 0.0, seed: int | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        _check_common("CrossNetworkV2", num_layers, l2)
        if projection_dim is not None and (
            isinstance(projection_dim, bool) or not isinstance(projection_dim, int) or projection_dim <= 0
        ):
            raise ValueError(f"CrossNetworkV2: projection_dim must be None or a positive int, got {projection_dim!r}")
        self.num_layers = num_layers
        self.projection_dim = projection_dim
        self.l2 = float(l2)
        self.seed = seed

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(f"CrossNetworkV2 expects [batch, D] with known D, got shape {tuple(input_shape)}")
        dim = int(input_shape[-1])
        reg = keras.regularizers.L2(self.l2) if self.l2 > 0 else None
        self.kernels, self.downs, self.ups, self.biases = [], [], [], []
        for l in range(self.num_layers):
            if self.projection_dim is None:
                self.kernels.append(
                    self.add_weight(
                        name=f"kernel_{l}", shape=(dim, dim), initializer=_init(self.seed, 2 * l), regularizer=reg
                    )
                )
            else:
                r = self.projection_dim
                self.downs.append(
                    self.add_weight(
                        name=f"down_{l}", shape=(dim, r), initializer=_init(self.seed, 2 * l), regularizer=reg
                    )
                )
                self.ups.append(
                    self.add_weight(
                        name=f"up_{l}", shape=(r, dim), initializer=_init(self.seed, 2 * l + 1), regularizer=reg
                    )
                )
            self.biases.append(self.add_weight(name=f"bias_{l}", shape=(dim,), initializer="zeros"))
        self.built = True

    def call(self, inputs):
        x0 = tf.convert_to_tensor(inputs)
        x = x0
        for l in range(self.num_layers):
            if self.projection_dim is None:
                wx = tf.matmul(x, self.kernels[l])
            else:
                wx = tf.matmul(tf.matmul(x, self.downs[l]), self.ups[l])
            x = x0 * (wx + self.biases[l]) + x
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"num_layers": self.num_layers, "projection_dim": self.projection_dim, "l2": self.l2, "seed": self.seed}
        )
        return config
