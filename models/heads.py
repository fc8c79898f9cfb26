"""The output heads every model shares: a one-unit logit and the click probability."""

from __future__ import annotations

import keras

# Offsets the logit's initializer seed from the params seed, which the hidden layers use.
LOGIT_SEED_OFFSET = 7919


def logit_head(x, seed: int | None, name: str = "logit"):
    """``w . x + b`` as a ``[batch, 1]`` Dense layer named ``name``."""
    init = "glorot_uniform" if seed is None else keras.initializers.GlorotUniform(seed=int(seed) + LOGIT_SEED_OFFSET)
    return keras.layers.Dense(1, kernel_initializer=init, name=name)(x)


def probability(logit):
    """``sigmoid(logit)`` in float32, the layer named ``"prediction"``."""
    return keras.layers.Activation("sigmoid", dtype="float32", name="prediction")(logit)
