"""The numeric features (scalars and fixed-length vectors) side by side."""

from __future__ import annotations

import keras
import tensorflow as tf


def check_numeric_widths(
    names, widths, owner: str, names_arg: str = "names", widths_arg: str = "widths"
) -> tuple[list[str], list[int]]:
    """``names`` (a list of feature names) and their ``widths`` (None: every feature a scalar,
    width 1), checked; ``owner`` and the argument names name the layer and its arguments in the messages."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{owner}: {names_arg} must be a list of feature names, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{owner}: {names_arg} must be distinct feature names, got {names!r}")
    if widths is None:
        return list(names), [1] * len(names)
    if (
        isinstance(widths, (str, int))
        or not isinstance(widths, (list, tuple))
        or len(widths) != len(names)
        or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)
    ):
        raise ValueError(
            f"{owner}: {widths_arg} must be a list of {len(names)} ints >= 1, one per feature of {list(names)}, "
            f"got {widths!r}"
        )
    return list(names), [int(w) for w in widths]


def numeric_columns(features, names: list[str], widths: list[int], owner: str):
    """``[batch, sum(widths)]`` float32: a scalar ``[batch]`` as one column, a vector ``[batch, w]``
    as its w columns, in the order of ``names``."""
    columns = []
    for name, width in zip(names, widths):
        x = tf.cast(features[name], tf.float32)
        if x.shape.rank == 1 and width == 1:
            x = x[:, None]
        elif x.shape.rank != 2 or x.shape[-1] not in (None, width):
            expected = "[batch] or [batch, 1]" if width == 1 else f"[batch, {width}]"
            raise ValueError(f"{owner}: feature '{name}' has width {width}: expected {expected}, got {tuple(x.shape)}")
        columns.append(x)
    return columns[0] if len(columns) == 1 else tf.concat(columns, axis=-1)


@keras.saving.register_keras_serializable(package="ctr")
class NumericFeatures(keras.layers.Layer):
    """Concatenates the named numeric features, scalars and vectors, in the order given::

        out = concat(z_1, ..., z_n)                  out: [batch, sum_i widths[i]]
        z_i = float32(features[names[i]])            [batch, 1] for a scalar (given as [batch]),
                                                     [batch, d_i] for a vector of width d_i

    so a scalar fills one column and a vector its d columns, e.g. names ``[a, v, b]`` with
    widths ``[1, 3, 1]`` give ``[a, v_0, v_1, v_2, b]``.

    ``names``: the numeric feature names (at least one); ``widths``: one int >= 1 per name
    (``spec.numeric_fields``); None, as in configs saved before vectors, means every feature
    is a scalar. Input: the features dict (extra keys ignored). No weights.
    """

    def __init__(self, names, widths=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(names, (list, tuple)) and not names:
            raise ValueError(f"NumericFeatures: names must be a non-empty list of feature names, got {names!r}")
        self.names, self.widths = check_numeric_widths(names, widths, "NumericFeatures")

    def call(self, features):
        return numeric_columns(features, self.names, self.widths, "NumericFeatures")

    def compute_output_shape(self, input_shape):
        return (None, sum(self.widths))

    def get_config(self):
        config = super().get_config()
        config.update({"names": list(self.names), "widths": list(self.widths)})
        return config
