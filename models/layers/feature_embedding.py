"""Embedding of every sparse field, tables shared by name."""

from __future__ import annotations

import keras
import tensorflow as tf

from feature_spec import MULTI_KINDS, check_embedded_fields
from models.layers.masked_pooling import MaskedMeanPooling


@keras.saving.register_keras_serializable(package="ctr")
class FeatureEmbedding(keras.layers.Layer):
    """Embeds every sparse field; tables are shared by ``embedding_table`` name.

    Input: the features dict ``{name: int tensor}`` (extra keys ignored).
    Output: ``[batch, n_fields, embedding_dim]``, fields in the order given::

        categorical        e_f = E_t[x_f]
        sequence / multi   e_f = sum_j m_j E_t[x_fj] / max(sum_j m_j, 1),  m_j = [x_fj != 0]

    ``fields``: ``{"name", "kind", "vocab_size"[, "embedding_table"]}`` each (``spec.embedded_fields``).
    ``tables`` maps table name -> ``keras.layers.Embedding`` (``[vocab_size, d]``); table ``k``
    (in order of first use) starts uniform in [-0.05, 0.05] with seed ``seed + k``.
    """

    def __init__(self, fields, embedding_dim: int = 16, l2: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.fields = check_embedded_fields(fields, "FeatureEmbedding")
        if not self.fields:
            raise ValueError("FeatureEmbedding needs at least one field")
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim <= 0:
            raise ValueError(f"FeatureEmbedding: embedding_dim must be a positive int, got {embedding_dim!r}")
        if float(l2) < 0:
            raise ValueError(f"FeatureEmbedding: l2 must be >= 0, got {l2!r}")
        self.embedding_dim = embedding_dim
        self.l2 = float(l2)
        self.seed = seed
        sizes: dict[str, int] = {}
        for f in self.fields:
            table = f["embedding_table"]
            if table in sizes and sizes[table] != f["vocab_size"]:
                raise ValueError(
                    f"features sharing embedding table '{table}' disagree on vocab_size ({sizes[table]} vs {f['vocab_size']})"
                )
            sizes[table] = f["vocab_size"]
        self.table_sizes = sizes
        reg = keras.regularizers.L2(self.l2) if self.l2 > 0 else None
        self.tables = {}
        for k, (table, size) in enumerate(sizes.items()):
            init = keras.initializers.RandomUniform(-0.05, 0.05, seed=None if seed is None else int(seed) + k)
            self.tables[table] = keras.layers.Embedding(
                size, embedding_dim, embeddings_initializer=init, embeddings_regularizer=reg, name=f"{table}_embedding"
            )
        self.pooling = MaskedMeanPooling(padding_index=0, name="masked_mean")

    def build(self, input_shape=None):
        for layer in self.tables.values():
            if not layer.built:
                layer.build((None,))
        self.built = True

    def call(self, features):
        out = []
        for f in self.fields:
            ids = features[f["name"]]
            emb = self.tables[f["embedding_table"]](ids)
            if f["kind"] in MULTI_KINDS:
                emb = self.pooling([emb, ids])
            out.append(emb)
        return tf.stack(out, axis=1)

    def compute_output_shape(self, input_shape):
        return (None, len(self.fields), self.embedding_dim)

    def embedding_tables(self) -> dict[str, tf.Variable]:
        return {table: layer.embeddings for table, layer in self.tables.items()}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "fields": [dict(f) for f in self.fields],
                "embedding_dim": self.embedding_dim,
                "l2": self.l2,
                "seed": self.seed,
            }
        )
        return config
