"""The scalar numeric features side by side."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="ctr")
class NumericFeatures(keras.layers.Layer):
    """Stacks the named scalar numeric features::

        out[:, i] = float32(features[names[i]])        out: [batch, len(names)]

    Input: the features dict (extra keys ignored).
    """

    def __init__(self, names, **kwargs):
        super().__init__(**kwargs)
        if isinstance(names, str) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"NumericFeatures: names must be a non-empty list of feature names, got {names!r}")
        self.names = list(names)

    def call(self, features):
        return tf.stack([tf.cast(features[n], tf.float32) for n in self.names], axis=-1)

    def compute_output_shape(self, input_shape):
        return (None, len(self.names))

    def get_config(self):
        config = super().get_config()
        config.update({"names": list(self.names)})
        return config
