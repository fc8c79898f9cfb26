"""Multi-layer perceptron, optionally made of Deep-Crossing residual units."""

from __future__ import annotations

import keras


def _kernel_init(seed, offset):
    if seed is None:
        return "glorot_uniform"
    return keras.initializers.GlorotUniform(seed=int(seed) + offset)


@keras.saving.register_keras_serializable(package="ctr")
class MLP(keras.layers.Layer):
    """Stack of fully connected layers.

    Plain (``residual=False``), for each width ``h_k`` in ``hidden_units``::

        x <- dropout(activation(W_k x + b_k))

    Residual (``residual=True``, Deep Crossing, Shan et al. 2016): the input is
    first projected to ``w = hidden_units[0]`` by a linear map, then one
    residual unit per width ``h_k`` (``h_k`` is the unit's inner width, its
    output keeps width ``w``)::

        x <- P x + c
        x <- dropout(activation(x + V_k activation(U_k x + a_k) + e_k))

    ``l2`` is a kernel regularizer on every dense kernel.
    """

    def __init__(
        self,
        hidden_units,
        activation: str = "relu",
        dropout: float = 0.0,
        l2: float = 0.0,
        residual: bool = False,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(hidden_units, int) or not hidden_units:
            raise ValueError(f"MLP: hidden_units must be a non-empty list of positive ints, got {hidden_units!r}")
        hidden_units = list(hidden_units)
        if any(isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in hidden_units):
            raise ValueError(f"MLP: hidden_units must be a non-empty list of positive ints, got {hidden_units!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"MLP: dropout must be in [0, 1), got {dropout!r}")
        if float(l2) < 0.0:
            raise ValueError(f"MLP: l2 must be >= 0, got {l2!r}")
        self.hidden_units = hidden_units
        self.activation = activation
        self.dropout = float(dropout)
        self.l2 = float(l2)
        self.residual = bool(residual)
        self.seed = seed
        self._act = keras.activations.get(activation)
        reg = keras.regularizers.L2(self.l2) if self.l2 > 0 else None

        def dense(units, offset, act=None, name=None):
            return keras.layers.Dense(
                units, activation=act, kernel_initializer=_kernel_init(seed, offset), kernel_regularizer=reg, name=name
            )

        self.denses = []
        self.inner = []
        self.outer = []
        self.projection = None
        if self.residual:
            width = hidden_units[0]
            self.projection = dense(width, 0, name="projection")
            for k, h in enumerate(hidden_units):
                self.inner.append(dense(h, 2 * k + 1, act=activation, name=f"res{k}_inner"))
                self.outer.append(dense(width, 2 * k + 2, name=f"res{k}_outer"))
        else:
            for k, h in enumerate(hidden_units):
                self.denses.append(dense(h, k, act=activation, name=f"dense{k}"))
        self.dropouts = (
            [
                keras.layers.Dropout(self.dropout, seed=None if seed is None else int(seed) + 1000 + k)
                for k in range(len(hidden_units))
            ]
            if self.dropout > 0
            else []
        )

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.residual:
            self.projection.build(shape)
            shape = shape[:-1] + (self.hidden_units[0],)
            for inner, outer in zip(self.inner, self.outer):
                inner.build(shape)
                outer.build(shape[:-1] + (inner.units,))
        else:
            for layer in self.denses:
                layer.build(shape)
                shape = shape[:-1] + (layer.units,)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        if self.residual:
            x = self.projection(x)
            for k, (inner, outer) in enumerate(zip(self.inner, self.outer)):
                x = self._act(x + outer(inner(x)))
                if self.dropouts:
                    x = self.dropouts[k](x, training=training)
        else:
            for k, layer in enumerate(self.denses):
                x = layer(x)
                if self.dropouts:
                    x = self.dropouts[k](x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        width = self.hidden_units[0] if self.residual else self.hidden_units[-1]
        return tuple(input_shape[:-1]) + (width,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_units": list(self.hidden_units),
                "activation": self.activation,
                "dropout": self.dropout,
                "l2": self.l2,
                "residual": self.residual,
                "seed": self.seed,
            }
        )
        return config
