"""Layers against values worked out by hand (see the comments), config round trips, bad arguments."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from models.layers import (  # noqa: E402
    MLP,
    CrossNetwork,
    CrossNetworkV2,
    FeatureEmbedding,
    FieldSlice,
    FMInteraction,
    MaskedMeanPooling,
    NumericFeatures,
    SparseLinear,
)

X0 = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 2.0]], dtype="float32")


def roundtrip(layer):
    """Serialize through the registered name, rebuild from config."""
    blob = keras.saving.serialize_keras_object(layer)
    assert blob["registered_name"].startswith("ctr>")
    clone = keras.saving.deserialize_keras_object(blob)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()
    return clone


# ---------------------------------------------------------------- FM

FM_V = np.array(
    [
        [[1.0, 2.0], [3.0, 0.0], [-1.0, 1.0]],
        [[0.5, 0.0], [2.0, 1.0], [1.0, -2.0]],
    ],
    dtype="float32",
)


def test_fm_second_order_by_hand():
    # example 1: <v1,v2> = 3, <v1,v3> = -1 + 2 = 1, <v2,v3> = -3          -> 1
    # example 2: <v1,v2> = 1, <v1,v3> = 0.5,       <v2,v3> = 2 - 2 = 0    -> 1.5
    out = FMInteraction()(FM_V).numpy()
    np.testing.assert_allclose(out, [[1.0], [1.5]], rtol=1e-6)
    # the same by brute force over the pairs
    brute = [[sum(FM_V[b, i] @ FM_V[b, j] for i in range(3) for j in range(i + 1, 3))] for b in range(2)]
    np.testing.assert_allclose(out, brute, rtol=1e-6)


def test_fm_per_dimension_and_list_input():
    # dim 0 of example 1: 1*3 + 1*(-1) + 3*(-1) = -1; dim 1: 0 + 2*1 + 0 = 2
    # dim 0 of example 2: 0.5*2 + 0.5*1 + 2*1 = 3.5; dim 1: 0 + 0 + 1*(-2) = -2
    out = FMInteraction(reduce_sum=False)(FM_V).numpy()
    np.testing.assert_allclose(out, [[-1.0, 2.0], [3.5, -2.0]], rtol=1e-6)
    as_list = FMInteraction()([FM_V[:, i, :] for i in range(3)]).numpy()
    np.testing.assert_allclose(as_list, [[1.0], [1.5]], rtol=1e-6)


def test_fm_config_and_bad_args():
    clone = roundtrip(FMInteraction(reduce_sum=False, name="fm"))
    assert clone.reduce_sum is False
    with pytest.raises(ValueError, match="reduce_sum"):
        FMInteraction(reduce_sum="yes")
    with pytest.raises(ValueError, match="n_fields"):
        FMInteraction()(np.zeros((2, 3), dtype="float32"))


# ---------------------------------------------------------------- cross (DCN v1)


def test_cross_v1_by_hand():
    layer = CrossNetwork(num_layers=2)
    layer.build((None, 3))
    w0, b0 = np.array([1.0, 0.0, -1.0]), np.array([0.5, 0.5, 0.5])
    w1, b1 = np.array([0.0, 1.0, 0.0]), np.zeros(3)
    layer.set_weights([w0, b0, w1, b1])
    # layer 1: x.w0 = 1 - 3 = -2 and 0 - 2 = -2, so x1 = -2 x0 + b0 + x0 = 0.5 - x0
    #   x1 = [[-0.5, -1.5, -2.5], [0.5, 1.5, -1.5]]
    # layer 2: x1.w1 = -1.5 and 1.5, so x2 = x0 * (x1.w1) + x1
    #   ex 1: [-1.5, -3, -4.5] + [-0.5, -1.5, -2.5] = [-2, -4.5, -7]
    #   ex 2: [0, -1.5, 3] + [0.5, 1.5, -1.5]        = [0.5, 0, 1.5]
    out = layer(X0).numpy()
    np.testing.assert_allclose(out, [[-2.0, -4.5, -7.0], [0.5, 0.0, 1.5]], rtol=1e-6)


def test_cross_v1_config_and_bad_args():
    layer = CrossNetwork(num_layers=2, l2=0.01, seed=3)
    layer.build((None, 3))
    clone = roundtrip(layer)
    assert clone.built  # the serialized build_config rebuilt it
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(X0).numpy(), layer(X0).numpy())
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_layers"):
            CrossNetwork(num_layers=bad)
    with pytest.raises(ValueError, match="l2"):
        CrossNetwork(l2=-1.0)
    with pytest.raises(ValueError, match=r"\[batch, D\]"):
        CrossNetwork()(np.zeros((2, 3, 4), dtype="float32"))


# ---------------------------------------------------------------- cross v2 (DCN-v2)


def test_cross_v2_full_rank_by_hand():
    layer = CrossNetworkV2(num_layers=1)
    layer.build((None, 3))
    w = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 0.0]])  # W, acting on column vectors
    b = np.array([0.0, 1.0, 0.0])
    layer.set_weights([w.T, b])  # the kernel is W transposed (row-vector convention)
    # ex 1: x = [1,2,3]:  W x = [1, 4, 3], + b = [1, 5, 3], x0 * . = [1, 10, 9], + x = [2, 12, 12]
    # ex 2: x = [0,-1,2]: W x = [0, -2, -1], + b = [0, -1, -1], x0 * . = [0, 1, -2], + x = [0, 0, 0]
    np.testing.assert_allclose(layer(X0).numpy(), [[2.0, 12.0, 12.0], [0.0, 0.0, 0.0]], rtol=1e-6)


def test_cross_v2_low_rank_by_hand():
    layer = CrossNetworkV2(num_layers=1, projection_dim=1)
    layer.build((None, 3))
    u = np.array([[1.0], [0.0], [1.0]])  # W = U V^T = [[1,1,0],[0,0,0],[1,1,0]]
    v = np.array([[1.0], [1.0], [0.0]])
    layer.set_weights([v, u.T, np.zeros(3)])  # down = V [3,1], up = U^T [1,3], bias
    # ex 1: V^T x = 3  -> W x = [3, 0, 3],   x0 * . = [3, 0, 9],  + x = [4, 2, 12]
    # ex 2: V^T x = -1 -> W x = [-1, 0, -1], x0 * . = [0, 0, -2], + x = [0, -1, 0]
    np.testing.assert_allclose(layer(X0).numpy(), [[4.0, 2.0, 12.0], [0.0, -1.0, 0.0]], rtol=1e-6)
    assert [tuple(wt.shape) for wt in layer.weights] == [(3, 1), (1, 3), (3,)]


def test_cross_v2_two_layers_match_numpy():
    rng = np.random.default_rng(0)
    layer = CrossNetworkV2(num_layers=2)
    layer.build((None, 3))
    weights = [rng.normal(size=(3, 3)), rng.normal(size=3), rng.normal(size=(3, 3)), rng.normal(size=3)]
    layer.set_weights(weights)
    x = X0.astype("float64")
    for k in range(2):  # x_{l+1} = x0 * (W_l x_l + b_l) + x_l, element by element
        W, bias = weights[2 * k].T, weights[2 * k + 1]
        x = np.array(
            [
                [X0[r, i] * (sum(W[i, j] * x[r, j] for j in range(3)) + bias[i]) + x[r, i] for i in range(3)]
                for r in range(2)
            ]
        )
    np.testing.assert_allclose(layer(X0).numpy(), x, rtol=1e-5)


def test_cross_v2_config_and_bad_args():
    layer = CrossNetworkV2(num_layers=2, projection_dim=2, seed=1)
    layer.build((None, 3))
    clone = roundtrip(layer)
    assert clone.projection_dim == 2
    assert clone.built  # the serialized build_config rebuilt it
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(X0).numpy(), layer(X0).numpy())
    for bad in (0, -2, 1.5, "4"):
        with pytest.raises(ValueError, match="projection_dim"):
            CrossNetworkV2(projection_dim=bad)
    with pytest.raises(ValueError, match="num_layers"):
        CrossNetworkV2(num_layers=0)


# ---------------------------------------------------------------- masked mean pooling


def test_masked_mean_pooling_by_hand():
    values = np.array(
        [
            [[1.0, 2.0], [100.0, 100.0], [3.0, -4.0]],
            [[7.0, 7.0], [8.0, 8.0], [9.0, 9.0]],
            [[2.0, 2.0], [4.0, 6.0], [5.0, 5.0]],
        ],
        dtype="float32",
    )
    ids = np.array([[3, 0, 5], [0, 0, 0], [0, 4, 0]], dtype="int64")
    # row 1: mean of [1,2] and [3,-4] = [2, -1]; row 2: all padding -> 0; row 3: only [4, 6]
    out = MaskedMeanPooling()([values, ids]).numpy()
    np.testing.assert_allclose(out, [[2.0, -1.0], [0.0, 0.0], [4.0, 6.0]], rtol=1e-6)


def test_masked_mean_pooling_config_and_bad_args():
    clone = roundtrip(MaskedMeanPooling(padding_index=0, name="pool"))
    assert clone.padding_index == 0
    with pytest.raises(ValueError, match="padding_index"):
        MaskedMeanPooling(padding_index=0.5)
    with pytest.raises(ValueError, match="values"):
        MaskedMeanPooling()(np.zeros((2, 3, 4), dtype="float32"))


# ---------------------------------------------------------------- sparse linear


def test_sparse_linear_by_hand():
    layer = SparseLinear(
        fields=[
            {"name": "item", "kind": "categorical", "vocab_size": 4},
            {"name": "hist", "kind": "sequence", "vocab_size": 4},
        ],
        numeric=["ctr"],
    )
    layer.build()
    w_item = np.array([[9.0], [0.1], [0.2], [0.3]])  # row 0 (padding) must never count
    w_hist = np.array([[9.0], [1.0], [2.0], [3.0]])
    layer.set_weights([np.concatenate([w_item, w_hist]), np.array([[2.0]]), np.array([0.5])])
    feats = {
        "item": np.array([2, 0], dtype="int64"),
        "hist": np.array([[1, 3, 0], [0, 0, 0]], dtype="int64"),
        "ctr": np.array([1.0, -1.0], dtype="float32"),
    }
    # ex 1: 0.2 + (1 + 3) + 2 * 1 + 0.5 = 6.7;  ex 2: 0 + 0 + 2 * (-1) + 0.5 = -1.5
    np.testing.assert_allclose(layer(feats).numpy(), [[6.7], [-1.5]], rtol=1e-6)
    assert [tuple(w.shape) for w in layer.weights] == [(8, 1), (1, 1), (1,)]


def test_sparse_linear_cross_hashing():
    layer = SparseLinear(crosses=[["a", "b"], ["b", "a"]], hash_buckets=7, use_bias=False)
    layer.build()
    # cross 1 owns rows 0..6 (weight = bucket id), cross 2 rows 7..13 (weight 0)
    layer.set_weights([np.concatenate([np.arange(7), np.zeros(7)]).astype("float32")[:, None]])
    feats = {"a": np.array([3, 3, 0, 2], dtype="int64"), "b": np.array([5, 5, 5, 9], dtype="int64")}
    ids, mask = layer.cross_ids(feats, ["a", "b"])
    ids = ids.numpy()
    assert ids[0] == ids[1] and 0 <= ids.min() and ids.max() < 7
    out = layer(feats).numpy()[:, 0]
    np.testing.assert_allclose(out, [ids[0], ids[1], 0.0, ids[3]])  # a missing component contributes 0


def test_sparse_linear_vector_numeric_by_hand():
    layer = SparseLinear(numeric=["ctr", "vec"], numeric_widths=[1, 3])
    layer.build()
    assert [tuple(w.shape) for w in layer.weights] == [(4, 1), (1,)]
    # u_ctr = 2, u_vec = (1, -1, 0.5), b = 0.25
    layer.set_weights([np.array([[2.0], [1.0], [-1.0], [0.5]]), np.array([0.25])])
    feats = {
        "ctr": np.array([1.0, -1.0], dtype="float32"),
        "vec": np.array([[1.0, 2.0, 4.0], [0.0, -3.0, 2.0]], dtype="float32"),
        "other": np.zeros(2, dtype="int64"),
    }
    # ex 1: 2*1 + (1 - 2 + 2) + 0.25 = 3.25;  ex 2: 2*(-1) + (0 + 3 + 1) + 0.25 = 2.25
    np.testing.assert_allclose(layer(feats).numpy(), [[3.25], [2.25]], rtol=1e-6)
    with pytest.raises(ValueError, match=r"'vec' has width 3: expected \[batch, 3\]"):
        layer({**feats, "vec": feats["vec"][:, :2]})
    with pytest.raises(ValueError, match="numeric_widths"):
        SparseLinear(numeric=["ctr", "vec"], numeric_widths=[1])
    with pytest.raises(ValueError, match="numeric_widths"):
        SparseLinear(numeric=["vec"], numeric_widths=[0])


def test_sparse_linear_old_config_without_widths_loads_and_behaves_as_before():
    """A config saved before vectors: numeric is a list of scalar names, no numeric_widths."""
    old = {"name": "wide", "numeric": ["a", "b"], "fields": [], "crosses": [], "hash_buckets": 10, "use_bias": False}
    layer = SparseLinear.from_config(old)
    assert layer.numeric_widths == [1, 1] and layer.get_config()["numeric_widths"] == [1, 1]
    layer.build()
    assert [tuple(w.shape) for w in layer.weights] == [(2, 1)]
    layer.set_weights([np.array([[3.0], [-1.0]])])
    feats = {"a": np.array([1.0, 2.0], dtype="float32"), "b": np.array([4.0, 0.5], dtype="float32")}
    np.testing.assert_allclose(layer(feats).numpy(), [[-1.0], [5.5]], rtol=1e-6)  # 3a - b
    clone = roundtrip(SparseLinear(numeric=["a", "v"], numeric_widths=[1, 2]))
    assert clone.numeric == ["a", "v"] and clone.numeric_widths == [1, 2]


def test_sparse_linear_config_and_bad_args():
    layer = SparseLinear(
        fields=[{"name": "item", "kind": "categorical", "vocab_size": 4}],
        crosses=[["a", "b"]],
        hash_buckets=11,
        numeric=["x"],
    )
    clone = roundtrip(layer)
    assert clone.crosses == [["a", "b"]] and clone.hash_buckets == 11
    with pytest.raises(ValueError, match="at least one"):
        SparseLinear()
    with pytest.raises(ValueError, match="kind"):
        SparseLinear(fields=[{"name": "x", "kind": "numeric", "vocab_size": 4}])
    with pytest.raises(ValueError, match="hash_buckets"):
        SparseLinear(crosses=[["a", "b"]], hash_buckets=0)
    with pytest.raises(ValueError, match="cross"):
        SparseLinear(crosses=[["a"]])


# ---------------------------------------------------------------- MLP


def test_mlp_shapes_config_and_bad_args():
    plain = MLP([4, 2], seed=0)
    assert tuple(plain(X0).shape) == (2, 2)
    residual = MLP([4, 3], residual=True, seed=0)
    assert tuple(residual(X0).shape) == (2, 4)  # residual units keep the projected width
    clone = roundtrip(residual)
    assert clone.built  # the serialized build_config rebuilt it
    clone.set_weights(residual.get_weights())
    np.testing.assert_array_equal(clone(X0).numpy(), residual(X0).numpy())
    for bad in ([], [0], 5, [2.5]):
        with pytest.raises(ValueError, match="hidden_units"):
            MLP(bad)
    with pytest.raises(ValueError, match="dropout"):
        MLP([2], dropout=1.0)


def test_mlp_residual_unit_by_hand():
    layer = MLP([2], residual=True, activation="relu")
    layer.build((None, 2))
    eye = np.eye(2)
    # projection = identity, inner = identity, outer = 2 * identity, all biases 0:
    # y = relu(x + 2 relu(x))
    layer.set_weights([eye, np.zeros(2), eye, np.zeros(2), 2 * eye, np.zeros(2)])
    x = np.array([[1.0, -1.0], [-2.0, 3.0]], dtype="float32")
    np.testing.assert_allclose(layer(x).numpy(), [[3.0, 0.0], [0.0, 9.0]], rtol=1e-6)


# ---------------------------------------------------------------- feature embedding, numerics, field slice


def test_feature_embedding_by_hand():
    fields = [
        {"name": "item", "kind": "categorical", "vocab_size": 4, "embedding_table": "item_id"},
        {"name": "hist", "kind": "sequence", "vocab_size": 4, "embedding_table": "item_id"},
        {"name": "genres", "kind": "multi_categorical", "vocab_size": 3},
    ]
    layer = FeatureEmbedding(fields, embedding_dim=2)
    layer.build()
    assert layer.table_sizes == {"item_id": 4, "genres": 3}  # the two item features share one table
    items = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype="float32")
    genres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype="float32")
    layer.tables["item_id"].embeddings.assign(items)
    layer.tables["genres"].embeddings.assign(genres)
    feats = {
        "item": np.array([3, 1], dtype="int64"),
        "hist": np.array([[1, 2, 0], [0, 0, 0]], dtype="int64"),
        "genres": np.array([[1, 2], [2, 0]], dtype="int64"),
        "other": np.zeros(2, dtype="int64"),
    }
    out = layer(feats).numpy()
    # row 1: item 3 -> [5, 6]; hist mean of rows 1, 2 -> [2, 3]; genres mean of 1, 2 -> [5, 5]
    # row 2: item 1 -> [1, 2]; empty hist -> [0, 0]; genres only 2 -> [0, 10]
    np.testing.assert_allclose(out, [[[5, 6], [2, 3], [5, 5]], [[1, 2], [0, 0], [0, 10]]], rtol=1e-6)


def test_feature_embedding_config_and_bad_args():
    fields = [{"name": "item", "kind": "categorical", "vocab_size": 4}]
    clone = roundtrip(FeatureEmbedding(fields, embedding_dim=3, l2=0.1, seed=5))
    assert clone.fields == [dict(fields[0], embedding_table="item")] and clone.seed == 5 and clone.l2 == 0.1
    with pytest.raises(ValueError, match="at least one field"):
        FeatureEmbedding([])
    with pytest.raises(ValueError, match="embedding_dim"):
        FeatureEmbedding(fields, embedding_dim=0)
    with pytest.raises(ValueError, match="kind 'numeric'"):
        FeatureEmbedding([{"name": "x", "kind": "numeric", "vocab_size": 4}])
    with pytest.raises(ValueError, match="disagree on vocab_size"):
        FeatureEmbedding(
            [
                {"name": "a", "kind": "categorical", "vocab_size": 4, "embedding_table": "t"},
                {"name": "b", "kind": "categorical", "vocab_size": 5, "embedding_table": "t"},
            ]
        )


def test_numeric_features_scalars_and_vectors_by_hand():
    layer = NumericFeatures(["a", "v", "b", "w"], widths=[1, 3, 1, 1])
    feats = {
        "a": np.array([0.5, -1.0], dtype="float32"),
        "v": np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype="float32"),
        "b": np.array([7, 8], dtype="int64"),  # cast to float32
        "w": np.array([[9.0], [10.0]], dtype="float32"),  # a vector of width 1
        "extra": np.zeros((2, 5), dtype="float32"),
    }
    np.testing.assert_array_equal(
        layer(feats).numpy(), [[0.5, 1.0, 2.0, 3.0, 7.0, 9.0], [-1.0, 4.0, 5.0, 6.0, 8.0, 10.0]]
    )
    assert layer.compute_output_shape(None) == (None, 6)
    sym = layer({n: keras.Input(shape=s, name=n) for n, s in (("a", ()), ("v", (3,)), ("b", ()), ("w", (1,)))})
    assert tuple(sym.shape) == (None, 6)
    with pytest.raises(ValueError, match=r"'v' has width 3: expected \[batch, 3\], got \(2, 2\)"):
        layer({**feats, "v": feats["v"][:, :2]})
    with pytest.raises(ValueError, match=r"'v' has width 3: expected \[batch, 3\], got \(2,\)"):
        layer({**feats, "v": feats["a"]})
    with pytest.raises(ValueError, match=r"'a' has width 1: expected \[batch\] or \[batch, 1\]"):
        layer({**feats, "a": feats["v"]})


def test_numeric_features_config_round_trip_and_old_config():
    clone = roundtrip(NumericFeatures(["a", "v"], widths=[1, 3], name="numeric_features"))
    assert clone.names == ["a", "v"] and clone.widths == [1, 3]
    # saved before vectors existed: names only, every feature a scalar
    old = NumericFeatures.from_config(
        {"name": "numeric_features", "trainable": True, "dtype": "float32", "names": ["a", "b"]}
    )
    assert old.widths == [1, 1] and old.get_config()["widths"] == [1, 1]
    feats = {"a": np.array([0.5, -1.0], dtype="float32"), "b": np.array([1.0, 2.0], dtype="float32")}
    np.testing.assert_array_equal(old(feats).numpy(), [[0.5, 1.0], [-1.0, 2.0]])


@pytest.mark.parametrize(
    "names, widths",
    [
        (["a", "v"], [1]),
        (["a", "v"], [1, 3, 1]),
        (["a", "v"], [1, 0]),
        (["a", "v"], [1, -2]),
        (["a", "v"], [1, 2.0]),
        (["a", "v"], [1, True]),
        (["a", "v"], 3),
        (["a", "v"], "13"),
    ],
)
def test_numeric_features_bad_widths(names, widths):
    with pytest.raises(ValueError, match="NumericFeatures: widths must be a list of 2 ints >= 1"):
        NumericFeatures(names, widths=widths)


def test_numeric_features_and_field_slice_by_hand():
    feats = {"b": np.array([1, 2], dtype="int64"), "a": np.array([0.5, -1.0], dtype="float32")}
    np.testing.assert_array_equal(NumericFeatures(["a", "b"])(feats).numpy(), [[0.5, 1.0], [-1.0, 2.0]])
    stacked = np.arange(12, dtype="float32").reshape(2, 3, 2)
    np.testing.assert_array_equal(FieldSlice(1)(stacked).numpy(), [[2.0, 3.0], [8.0, 9.0]])
    assert roundtrip(NumericFeatures(["a", "b"])).names == ["a", "b"]
    assert roundtrip(FieldSlice(2)).index == 2
    for bad in ("a", [], [1], ["a", "a"], None):
        with pytest.raises(ValueError, match="names"):
            NumericFeatures(bad)
    for bad in (-1, 1.0, True):
        with pytest.raises(ValueError, match="index"):
            FieldSlice(bad)
