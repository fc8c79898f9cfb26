"""Linear (logistic-regression) logit over sparse, crossed and numeric features."""

from __future__ import annotations

import keras
import tensorflow as tf

from feature_spec import check_embedded_fields
from models.layers.numeric_features import check_numeric_widths, numeric_columns


@keras.saving.register_keras_serializable(package="ctr")
class SparseLinear(keras.layers.Layer):
    """Wide / first-order part: one scalar weight per index of every field.

    Input: the features dict (extra keys ignored).  Output ``[batch, 1]``::

        y = b
          + sum_f sum_j [x_fj != 0] w_f[x_fj]                      sparse fields
          + sum_c [all x_c != 0] w_c[hash(x_c1, x_c2, ...) mod H]  crossed fields
          + sum_n u_n . z_n                                        numeric fields

    A scalar categorical field has one index ``j``; sequence and
    multi_categorical fields sum over their non-padding indices (a
    bag-of-indices linear model).  Index 0 (padding / missing) contributes 0.
    Crosses hash the joined decimal indices with ``tf.strings.to_hash_bucket_fast``
    (stable FarmHash fingerprint) into ``hash_buckets`` rows; a cross with a
    missing component contributes 0.  A numeric feature ``z_n`` is a scalar or a
    vector of width ``d_n`` with a weight vector ``u_n`` of that width (so
    ``u_n . z_n`` is a product for a scalar, a dot product for a vector).  All
    weights start at 0.

    ``fields``: list of ``{"name", "kind", "vocab_size"}``; ``crosses``: list of
    lists of categorical field names (each at least 2); ``numeric``: list of
    numeric feature names; ``numeric_widths``: their widths (``spec.numeric_fields``;
    None, as in configs saved before vectors, means every numeric is a scalar).

    Weights, in order: ``field_weights`` (the fields' rows stacked in field
    order, ``[sum vocab_size, 1]``), ``cross_weights`` (``[n_crosses *
    hash_buckets, 1]``), ``numeric_weights`` (the ``u_n`` stacked in numeric
    order, ``[sum d_n, 1]``), ``bias`` (``[1]``), each present only when used.
    """

    def __init__(
        self,
        fields=(),
        crosses=(),
        hash_buckets: int = 100000,
        numeric=(),
        use_bias: bool = True,
        l2: float = 0.0,
        numeric_widths=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        fields = [dict(f) for f in (fields or [])]
        crosses = [list(c) for c in (crosses or [])]
        numeric = [] if numeric is None else numeric
        if not fields and not crosses and not numeric:
            raise ValueError("SparseLinear needs at least one of fields, crosses or numeric")
        checked = check_embedded_fields(fields, "SparseLinear")
        for c in crosses:
            if len(c) < 2 or not all(isinstance(n, str) for n in c) or len(set(c)) != len(c):
                raise ValueError(f"SparseLinear: a cross must list at least 2 distinct feature names, got {c!r}")
        if isinstance(hash_buckets, bool) or not isinstance(hash_buckets, int) or hash_buckets <= 0:
            raise ValueError(f"SparseLinear: hash_buckets must be a positive int, got {hash_buckets!r}")
        numeric, numeric_widths = check_numeric_widths(
            numeric, numeric_widths, "SparseLinear", names_arg="numeric", widths_arg="numeric_widths"
        )
        if isinstance(l2, bool) or not isinstance(l2, (int, float)) or l2 < 0:
            raise ValueError(f"SparseLinear: l2 must be a number >= 0, got {l2!r}")
        self.fields = [{"name": f["name"], "kind": f["kind"], "vocab_size": f["vocab_size"]} for f in checked]
        self.crosses = crosses
        self.hash_buckets = hash_buckets
        self.numeric = numeric
        self.numeric_widths = numeric_widths
        self.use_bias = bool(use_bias)
        self.l2 = float(l2)
        self.supports_jit = False  # string hashing of crosses

    def build(self, input_shape=None):
        reg = keras.regularizers.L2(self.l2) if self.l2 > 0 else None
        # One variable for all fields (field f owns rows offsets[f] .. offsets[f] + vocab_f - 1)
        # and one for all crosses: few variables keep the traced update step small.
        self.offsets = []
        total = 0
        for f in self.fields:
            self.offsets.append(total)
            total += f["vocab_size"]
        self.field_weights = (
            self.add_weight(name="field_weights", shape=(total, 1), initializer="zeros", regularizer=reg)
            if self.fields
            else None
        )
        self.cross_weights = (
            self.add_weight(
                name="cross_weights",
                shape=(len(self.crosses) * self.hash_buckets, 1),
                initializer="zeros",
                regularizer=reg,
            )
            if self.crosses
            else None
        )
        self.numeric_weight = (
            self.add_weight(
                name="numeric_weights", shape=(sum(self.numeric_widths), 1), initializer="zeros", regularizer=reg
            )
            if self.numeric
            else None
        )
        self.bias = self.add_weight(name="bias", shape=(1,), initializer="zeros") if self.use_bias else None
        self.built = True

    def cross_ids(self, features, cross):
        """(bucket ids in [0, hash_buckets), 0/1 mask) of one cross, both ``[batch]``."""
        parts = [tf.cast(features[n], tf.int64) for n in cross]
        key = tf.strings.join([tf.strings.as_string(p) for p in parts], separator="_x_")
        ids = tf.strings.to_hash_bucket_fast(key, self.hash_buckets)
        mask = tf.ones_like(parts[0], dtype=tf.bool)
        for p in parts:
            mask = tf.logical_and(mask, tf.not_equal(p, 0))
        return ids, mask

    @staticmethod
    def _masked_sum(weights, ids, mask):
        vals = tf.gather(weights, ids)[..., 0] * tf.cast(mask, weights.dtype)  # [batch, k]
        return tf.reduce_sum(vals, axis=1, keepdims=True)

    def call(self, features):
        terms = []
        if self.fields:
            ids, masks = [], []
            for f, offset in zip(self.fields, self.offsets):
                x = tf.cast(features[f["name"]], tf.int64)
                if x.shape.rank == 1:
                    x = x[:, None]
                ids.append(x + offset)
                masks.append(tf.not_equal(x, 0))
            terms.append(self._masked_sum(self.field_weights, tf.concat(ids, axis=1), tf.concat(masks, axis=1)))
        if self.crosses:
            ids, masks = [], []
            for k, c in enumerate(self.crosses):
                cid, cmask = self.cross_ids(features, c)
                ids.append(cid[:, None] + k * self.hash_buckets)
                masks.append(cmask[:, None])
            terms.append(self._masked_sum(self.cross_weights, tf.concat(ids, axis=1), tf.concat(masks, axis=1)))
        if self.numeric:
            z = numeric_columns(features, self.numeric, self.numeric_widths, "SparseLinear")  # [batch, sum d_n]
            terms.append(tf.matmul(z, self.numeric_weight))
        out = tf.add_n(terms) if len(terms) > 1 else terms[0]
        if self.use_bias:
            out = out + self.bias
        return out

    def compute_output_shape(self, input_shape):
        return (None, 1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "fields": [dict(f) for f in self.fields],
                "crosses": [list(c) for c in self.crosses],
                "hash_buckets": self.hash_buckets,
                "numeric": list(self.numeric),
                "numeric_widths": list(self.numeric_widths),
                "use_bias": self.use_bias,
                "l2": self.l2,
            }
        )
        return config
