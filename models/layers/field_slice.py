"""One field of the stacked field embeddings."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="ctr")
class FieldSlice(keras.layers.Layer):
    """The field ``index`` of a stacked ``[batch, n_fields, d]`` tensor::

    out = inputs[:, index, :]                       out: [batch, d]
    """

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"FieldSlice: index must be an int >= 0, got {index!r}")
        self.index = index

    def call(self, inputs):
        return inputs[:, self.index, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"index": self.index})
        return config
