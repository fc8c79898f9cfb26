"""The fused optimizers make the same updates as Keras 3's own (models/optimizers.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.optimizers import FusedAdam, FusedFtrl

ROWS, DIM = 6, 3


def _gradients(steps: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per step: a dense gradient for a [ROWS, DIM] table, and a sparse one (rows 1, 4 and 4 again)."""
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(ROWS, DIM)).astype("float32"), rng.normal(size=(3, DIM)).astype("float32"))
        for _ in range(steps)
    ]


def _run(optimizer, gradients, graph: bool, summed: bool = False) -> list[np.ndarray]:
    """The tables and the optimizer's slots after the steps. `summed`: the sparse gradient's rows 4 added
    up into one slice first, the same gradient without a repeated row."""
    init = np.arange(ROWS * DIM, dtype="float32").reshape(ROWS, DIM) / 10.0 - 0.5
    dense, sparse = keras.Variable(init, name="dense"), keras.Variable(init, name="sparse")
    optimizer.build([dense, sparse])

    def step(g_dense, g_rows):
        if summed:
            g_rows, rows = tf.stack([g_rows[0], g_rows[1] + g_rows[2]]), tf.constant([1, 4])
        else:
            rows = tf.constant([1, 4, 4])
        slices = tf.IndexedSlices(g_rows, rows, dense_shape=tf.constant([ROWS, DIM]))
        optimizer.apply([tf.convert_to_tensor(g_dense), slices], [dense, sparse])

    if graph:
        step = tf.function(step)
    for g_dense, g_rows in gradients:
        step(g_dense, g_rows)
    return [dense.numpy(), sparse.numpy(), *[v.numpy() for v in optimizer.variables[1:]]]


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize(
    "fused, reference, settings",
    [
        (FusedAdam, keras.optimizers.Adam, {"learning_rate": 0.01}),
        (FusedAdam, keras.optimizers.Adam, {"learning_rate": 0.05, "beta_1": 0.8, "beta_2": 0.95, "epsilon": 1e-3}),
        (
            FusedFtrl,
            keras.optimizers.Ftrl,
            {"learning_rate": 0.1, "l1_regularization_strength": 0.01, "l2_regularization_strength": 0.1},
        ),
        (
            FusedFtrl,
            keras.optimizers.Ftrl,
            {
                "learning_rate": 0.2,
                "learning_rate_power": -0.7,
                "l1_regularization_strength": 0.5,
                "l2_shrinkage_regularization_strength": 0.05,
                "beta": 0.3,
            },
        ),
    ],
    ids=["adam", "adam-settings", "ftrl", "ftrl-power-shrinkage-beta"],
)
def test_fused_updates_equal_keras_updates(fused, reference, settings, graph):
    """A sparse gradient's repeated row is one row of the true gradient, the sum of its slices. Keras 3
    squares each slice before adding them up (its second moment of an embedding row seen twice in a
    batch is g1^2 + g2^2, not (g1 + g2)^2); the fused kernels, like tf_keras, use the true gradient. So
    the reference is Keras's update of the same gradient with the repeated row summed."""
    gradients = _gradients(steps=5, seed=3)
    ours, theirs = _run(fused(**settings), gradients, graph), _run(reference(**settings), gradients, graph, summed=True)
    assert len(ours) == len(theirs)
    for got, want in zip(ours, theirs):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    # FTRL with l1 zeroes weights; Adam moves every one: the comparison above is not between unchanged tables
    assert not np.allclose(ours[0], np.arange(ROWS * DIM).reshape(ROWS, DIM) / 10.0 - 0.5)


def test_fused_optimizers_round_trip_through_their_config():
    for optimizer in (FusedAdam(0.02, beta_1=0.7), FusedFtrl(0.3, l1_regularization_strength=0.2)):
        restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        assert type(restored) is type(optimizer)
        assert restored.get_config() == optimizer.get_config()
