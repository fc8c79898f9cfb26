"""Sequence layers (DIN / DFN building blocks): values worked out by hand or step by step in numpy,
padding invariance, empty histories, batch independence, config and .keras round trips, bad arguments."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from models.layers.feedback_attention import FeedbackAttention  # noqa: E402
from models.layers.feedback_transformer import FeedbackTransformer  # noqa: E402
from models.layers.position_embedding import PositionEmbedding  # noqa: E402
from models.layers.target_attention import TargetAttention  # noqa: E402
from tests.test_layers import roundtrip  # noqa: E402

D = 3  # not 2: a layer norm over 2 features keeps only the sign of their difference
# three rows, L = 3, most recent first, padded with 0 on the right; row 2 has no history
IDS = np.array([[3, 1, 0], [0, 0, 0], [2, 4, 5]], dtype="int64")
RNG = np.random.default_rng(7)
TABLE = RNG.normal(size=(6, D)).astype("float32")  # row 0 is padding, row 1 OOV
QUERY = RNG.normal(size=(3, D)).astype("float32")


def lookup(table, ids):
    return tf.gather(tf.constant(table), ids).numpy()


def relu(x):
    return np.maximum(x, 0.0)


def np_softmax_masked(s, m):
    if not m.any():
        return np.zeros_like(s)
    s = np.where(m, s, -np.inf)
    e = np.exp(s - s.max())
    return e / e.sum()


def din_reference(q, keys, ids, weights, hidden, softmax):
    """DIN pooling of one row, position by position: weights = [W_0, b_0, ..., w, c]."""
    out = np.zeros(keys.shape[-1])
    valid = ids != 0
    scores = np.zeros(len(ids))
    for i in range(len(ids)):
        h = np.concatenate([q, keys[i], q - keys[i], q * keys[i]])
        for k in range(hidden):
            h = relu(h @ weights[2 * k] + weights[2 * k + 1])
        scores[i] = (h @ weights[-2] + weights[-1])[0]
    a = np_softmax_masked(scores, valid) if softmax else np.where(valid, scores, 0.0)
    for i in range(len(ids)):
        if valid[i]:
            out += a[i] * keys[i]
    return out


def din_weights(rng, dim, hidden):
    shapes, width = [], 4 * dim
    for h in hidden:
        shapes += [(width, h), (h,)]
        width = h
    shapes += [(width, 1), (1,)]
    return [rng.normal(size=s).astype("float32") for s in shapes]


def dot_scorer(dim):
    """Linear scorer (hidden_units=[]) whose score is sum(q * k) = q . k: it reads the q * k block."""
    w = np.zeros((4 * dim, 1), dtype="float32")
    w[3 * dim :, 0] = 1.0
    return [w, np.zeros(1, dtype="float32")]


# ---------------------------------------------------------------- TargetAttention


def test_target_attention_dot_scores_by_hand():
    layer = TargetAttention(hidden_units=[])
    soft = TargetAttention(hidden_units=[], normalization="softmax")
    q = np.array([[1.0, 2.0]], dtype="float32")
    k = np.array([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]], dtype="float32")
    ids = np.array([[3, 4, 0]])
    for lyr in (layer, soft):
        lyr.build([q.shape, k.shape, ids.shape])
        lyr.set_weights(dot_scorer(2))
    # scores q.k_i = 1, 2 (the padded [5, 5] would score 15): out = 1*[1,0] + 2*[0,1] = [1, 2]
    np.testing.assert_allclose(layer([q, k, ids]).numpy(), [[1.0, 2.0]], rtol=1e-6)
    # softmax over {1, 2}: weights 1/(1+e), e/(1+e)  -> out = [1/(1+e), e/(1+e)]
    e = np.e
    np.testing.assert_allclose(soft([q, k, ids]).numpy(), [[1 / (1 + e), e / (1 + e)]], rtol=1e-6)


@pytest.mark.parametrize("normalization", ["none", "softmax"])
def test_target_attention_mlp_step_by_step(normalization):
    rng = np.random.default_rng(1)
    layer = TargetAttention(hidden_units=[3, 2], activation="relu", normalization=normalization)
    keys = lookup(TABLE, IDS)
    layer.build([QUERY.shape, keys.shape, IDS.shape])
    weights = din_weights(rng, D, [3, 2])
    layer.set_weights(weights)
    assert [tuple(w.shape) for w in layer.weights] == [(4 * D, 3), (3,), (3, 2), (2,), (2, 1), (1,)]
    expected = [din_reference(QUERY[r], keys[r], IDS[r], weights, 2, normalization == "softmax") for r in range(3)]
    np.testing.assert_allclose(layer([QUERY, keys, IDS]).numpy(), expected, rtol=1e-5, atol=1e-6)


def attention_layers():
    return [
        TargetAttention(hidden_units=[4], seed=3),
        TargetAttention(hidden_units=[4], normalization="softmax", seed=3),
        FeedbackAttention(hidden_units=[4], seed=5),
        FeedbackAttention(hidden_units=[4], project_query=True, seed=5),
    ]


def all_layers():
    return attention_layers() + [
        FeedbackTransformer(num_heads=2, key_dim=2, ff_units=3, seed=11),
        FeedbackTransformer(num_heads=2, key_dim=2, ff_units=3, pooling="target", seed=11),
    ]


def call(layer, keys, ids, query=QUERY):
    return layer([query, keys, ids]).numpy()


@pytest.mark.parametrize("layer", all_layers(), ids=lambda l: f"{type(l).__name__}")
def test_padding_invariance(layer):
    base = call(layer, lookup(TABLE, IDS), IDS)
    # another padding row in the table, and arbitrary values written at the padded positions
    table = TABLE.copy()
    table[0] = [1e4, -3e3, 7.0]
    np.testing.assert_array_equal(call(layer, lookup(table, IDS), IDS), base)
    keys = lookup(TABLE, IDS)
    keys[IDS == 0] = np.random.default_rng(2).normal(scale=50.0, size=(int((IDS == 0).sum()), D))
    np.testing.assert_array_equal(call(layer, keys, IDS), base)
    keys[IDS == 0] = np.nan  # not even a NaN at a padded position leaks
    np.testing.assert_array_equal(call(layer, keys, IDS), base)
    # a boolean mask says the same as the ids
    np.testing.assert_array_equal(call(layer, lookup(TABLE, IDS), IDS != 0), base)


@pytest.mark.parametrize(
    "layer", attention_layers(), ids=lambda l: f"{type(l).__name__}-{l.normalization}-{getattr(l, 'project_query', '')}"
)
def test_attention_empty_history_is_exactly_zero(layer):
    empty = np.zeros((2, 3), dtype="int64")
    keys = np.full((2, 3, D), 7.0, dtype="float32")
    out = call(layer, keys, empty, QUERY[:2])
    np.testing.assert_array_equal(out, np.zeros((2, D)))
    # and in a mixed batch the empty row (row 1) is still 0
    mixed = call(layer, lookup(TABLE, IDS), IDS)
    np.testing.assert_array_equal(mixed[1], np.zeros(D))
    assert np.all(np.isfinite(mixed))
    # no NaN in the gradient either (softmax over nothing)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer([QUERY[:2], keys, empty]))
    grads = tape.gradient(loss, layer.trainable_weights)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads if g is not None)


@pytest.mark.parametrize("layer", all_layers(), ids=lambda l: type(l).__name__)
def test_batch_independence(layer):
    keys = lookup(TABLE, IDS)
    batch = call(layer, keys, IDS)
    for r in range(3):
        alone = call(layer, keys[r : r + 1], IDS[r : r + 1], QUERY[r : r + 1])
        np.testing.assert_allclose(alone[0], batch[r], rtol=1e-6, atol=1e-7)
    # other rows changed: row 0 unchanged
    other_ids = IDS.copy()
    other_ids[1:] = [[5, 5, 5], [1, 0, 0]]
    other = call(layer, lookup(TABLE, other_ids), other_ids, np.concatenate([QUERY[:1], -QUERY[1:]]))
    np.testing.assert_allclose(other[0], batch[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("layer", all_layers(), ids=lambda l: type(l).__name__)
def test_config_roundtrip_and_keras_file(layer, tmp_path):
    keys = lookup(TABLE, IDS)
    expected = call(layer, keys, IDS)
    clone = roundtrip(layer)
    assert clone.built  # the serialized build_config rebuilt it
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(call(clone, keys, IDS), expected)

    q_in = keras.Input(shape=(D,), name="target")
    k_in = keras.Input(shape=(None, D), name="history")
    i_in = keras.Input(shape=(None,), dtype="int64", name="history_ids")
    model = keras.Model([q_in, k_in, i_in], layer([q_in, k_in, i_in]))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict([QUERY, keys, IDS], verbose=0), expected, rtol=1e-6, atol=1e-7)


def test_target_attention_bad_args():
    for bad in (5, "64", [0], [2, -1], [1.5], [True]):
        with pytest.raises(ValueError, match="hidden_units"):
            TargetAttention(hidden_units=bad)
    with pytest.raises(ValueError, match="normalization"):
        TargetAttention(normalization="sigmoid")
    with pytest.raises(ValueError, match="activation"):
        TargetAttention(activation="no_such_activation")
    with pytest.raises(ValueError, match="initializer"):
        TargetAttention(kernel_initializer="no_such_initializer")
    with pytest.raises(ValueError, match="seed"):
        TargetAttention(seed=1.5)
    with pytest.raises(ValueError, match="padding_index"):
        TargetAttention(padding_index=-1)
    with pytest.raises(ValueError, match="same size"):
        TargetAttention()([np.zeros((2, 3), "float32"), np.zeros((2, 4, 2), "float32"), np.zeros((2, 4), "int64")])
    with pytest.raises(ValueError, match="expects"):
        TargetAttention()([np.zeros((2, 2), "float32"), np.zeros((2, 4, 2), "float32")])
    with pytest.raises(ValueError, match="length"):
        TargetAttention()([np.zeros((2, 2), "float32"), np.zeros((2, 4, 2), "float32"), np.zeros((2, 3), "int64")])
    with pytest.raises(ValueError, match="dtype"):
        TargetAttention()([np.zeros((2, 2), "float32"), np.zeros((2, 4, 2), "float32"), np.zeros((2, 4), "float32")])


def test_seeded_initializers_are_deterministic():
    a = TargetAttention(hidden_units=[3], seed=4)
    b = TargetAttention(hidden_units=[3], seed=4)
    c = TargetAttention(hidden_units=[3], kernel_initializer=keras.initializers.Constant(0.5))
    for layer in (a, b, c):
        layer.build([(None, D), (None, 3, D), (None, 3)])
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[0][:, :1], a.get_weights()[2])  # kernels differ from one another
    np.testing.assert_array_equal(c.get_weights()[0], np.full((4 * D, 3), 0.5))


# ---------------------------------------------------------------- FeedbackAttention


def test_feedback_attention_projected_query_by_hand():
    layer = FeedbackAttention(hidden_units=[], project_query=True)
    click = np.array([[1.0, 0.0, 2.0]], dtype="float32")  # d_c = 3
    skips = np.array([[[1.0, 1.0], [2.0, 0.0], [9.0, 9.0]]], dtype="float32")
    ids = np.array([[4, 2, 0]])
    layer.build([click.shape, skips.shape, ids.shape])
    proj = np.array([[1.0, 0.0], [5.0, 5.0], [0.0, 0.5]], dtype="float32")  # q = c P + p
    layer.set_weights([proj, np.array([0.0, -1.0], "float32")] + dot_scorer(2))
    assert layer.normalization == "softmax"
    # q = [1, 0] + [0, 1] + [0, -1] = [1, 0]; scores q.u = 1, 2; softmax -> [1/(1+e), e/(1+e)]
    # out = 1/(1+e) [1, 1] + e/(1+e) [2, 0] = [(1 + 2e)/(1+e), 1/(1+e)]
    e = np.e
    np.testing.assert_allclose(layer([click, skips, ids]).numpy(), [[(1 + 2 * e) / (1 + e), 1 / (1 + e)]], rtol=1e-6)


def test_feedback_attention_mlp_step_by_step():
    rng = np.random.default_rng(3)
    layer = FeedbackAttention(hidden_units=[3], project_query=True)
    click = rng.normal(size=(3, 4)).astype("float32")
    skips = lookup(TABLE, IDS)
    layer.build([click.shape, skips.shape, IDS.shape])
    proj, bias = rng.normal(size=(4, D)).astype("float32"), rng.normal(size=D).astype("float32")
    scorer = din_weights(rng, D, [3])
    layer.set_weights([proj, bias] + scorer)
    expected = [din_reference(click[r] @ proj + bias, skips[r], IDS[r], scorer, 1, softmax=True) for r in range(3)]
    np.testing.assert_allclose(layer([click, skips, IDS]).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_feedback_attention_bad_args():
    with pytest.raises(ValueError, match="project_query"):
        FeedbackAttention(project_query="yes")
    with pytest.raises(ValueError, match="project_query=True"):
        FeedbackAttention()([np.zeros((2, 3), "float32"), np.zeros((2, 4, 2), "float32"), np.zeros((2, 4), "int64")])
    with pytest.raises(ValueError, match="normalization"):
        FeedbackAttention(normalization="max")
    assert FeedbackAttention(normalization="none").normalization == "none"


# ---------------------------------------------------------------- FeedbackTransformer


def np_layer_norm(x, gamma, beta, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta


def transformer_reference(t, e, ids, w, heads, key_dim, eps, pooling="mean"):
    """One row, step by step (every token through the pre-LN block); w in the layer's weight order."""
    wq, bq, wk, bk, wv, bv, wo, bo, g1, be1, f1, c1, f2, c2, g2, be2 = w
    x = np.concatenate([t[None], e])  # token 0 is the target
    valid = np.concatenate([[True], ids != 0])
    n = np_layer_norm(x, g1, be1, eps)
    ctx = []
    for h in range(heads):
        cols = slice(h * key_dim, (h + 1) * key_dim)
        q, k, v = n @ wq[:, cols] + bq[cols], n @ wk[:, cols] + bk[cols], n @ wv[:, cols] + bv[cols]
        logits = q @ k.T / np.sqrt(key_dim)
        attn = np.stack([np_softmax_masked(row, valid) for row in logits])
        ctx.append(attn @ v)
    y = x + np.concatenate(ctx, axis=-1) @ wo + bo
    z = y + relu(np_layer_norm(y, g2, be2, eps) @ f1 + c1) @ f2 + c2
    return z[valid].mean(axis=0) if pooling == "mean" else z[0]


def test_feedback_transformer_uniform_attention_by_hand():
    layer = FeedbackTransformer(num_heads=1, key_dim=3, ff_units=2)
    t = np.array([[3.0, 0.0, 0.0]], dtype="float32")
    e = np.array([[[0.0, 3.0, 0.0], [7.0, 7.0, 7.0], [-1.0, 2.0, 5.0]]], dtype="float32")
    ids = np.array([[5, 0, 0]])
    layer.build([t.shape, e.shape, ids.shape])
    z3, z, eye, one = np.zeros((3, 3)), np.zeros(3), np.eye(3), np.ones(3)
    # Q = K = 0: uniform attention over the 2 valid tokens; V and the output map are the identity;
    # the feed-forward part is 0.
    layer.set_weights(
        [z3, z, z3, z, eye, z, eye, z, one, z, np.zeros((3, 2)), np.zeros(2), np.zeros((2, 3)), z, one, z]
    )
    # LN_1 of the valid tokens [3,0,0], [0,3,0]: mean 1, variance 2, so [2,-1,-1] / sqrt(2) and
    # [-1,2,-1] / sqrt(2); their mean [1,1,-2] / (2 sqrt(2)) is added to each token (the residual),
    # and the pool of the two tokens is [1.5, 1.5, 0] + [1, 1, -2] / (2 sqrt(2))
    want = np.array([[1.5, 1.5, 0.0]]) + np.array([[1.0, 1.0, -2.0]]) / (2 * np.sqrt(2.0))
    np.testing.assert_allclose(layer([t, e, ids]).numpy(), want, rtol=1e-5)
    layer.pooling = "target"  # token 0 alone: [3, 0, 0] + the same mean
    np.testing.assert_allclose(layer([t, e, ids]).numpy(), want + [[1.5, -1.5, 0.0]], rtol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "target"])
def test_feedback_transformer_starts_as_the_identity(pooling):
    """Wo and F_2 start at 0: the output is the target (pooling="target") or the mean of the valid
    tokens, on the scale of its inputs, whatever the other weights."""
    layer = FeedbackTransformer(num_heads=2, key_dim=2, ff_units=3, pooling=pooling, seed=11)
    seq = lookup(TABLE, IDS)
    out = call(layer, seq, IDS)
    assert not np.any(layer.output_kernel.numpy()) and not np.any(layer.ff_kernel_2.numpy())
    tokens = np.concatenate([QUERY[:, None], np.where((IDS != 0)[..., None], seq, 0.0)], axis=1)
    counts = 1 + (IDS != 0).sum(axis=1, keepdims=True)
    want = QUERY if pooling == "target" else tokens.sum(axis=1) / counts
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("pooling", ["mean", "target"])
def test_feedback_transformer_two_heads_step_by_step(pooling):
    rng = np.random.default_rng(5)
    layer = FeedbackTransformer(num_heads=2, key_dim=2, ff_units=5, epsilon=1e-3, pooling=pooling)
    seq = lookup(TABLE, IDS)
    layer.build([QUERY.shape, seq.shape, IDS.shape])
    shapes = [tuple(w.shape) for w in layer.weights]
    proj = [(3, 4), (4,)]
    assert shapes == proj * 3 + [(4, 3), (3,), (3,), (3,), (3, 5), (5,), (5, 3), (3,), (3,), (3,)]
    weights = [rng.normal(size=s).astype("float32") for s in shapes]
    layer.set_weights(weights)
    expected = [transformer_reference(QUERY[r], seq[r], IDS[r], weights, 2, 2, 1e-3, pooling) for r in range(3)]
    np.testing.assert_allclose(layer([QUERY, seq, IDS]).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "target"])
def test_feedback_transformer_empty_history(pooling):
    layer = FeedbackTransformer(num_heads=2, key_dim=2, ff_units=3, pooling=pooling, seed=11)
    seq = lookup(TABLE, IDS)
    out = call(layer, seq, IDS)
    assert np.all(np.isfinite(out))
    # the empty row pools the target token alone, whatever the length of the (padded) history
    short = call(layer, np.zeros((1, 1, D), "float32"), np.zeros((1, 1), "int64"), QUERY[1:2])
    np.testing.assert_allclose(out[1], short[0], rtol=1e-6, atol=1e-7)
    # which is the block on the target alone: attention over one token returns its value
    w = [v.numpy() for v in layer.weights]
    expected = transformer_reference(QUERY[1], np.zeros((0, D)), np.zeros(0, "int64"), w, 2, 2, layer.epsilon)
    np.testing.assert_allclose(out[1], expected, rtol=1e-5, atol=1e-6)


def test_feedback_transformer_dropout_only_when_training():
    plain = FeedbackTransformer(num_heads=1, ff_units=4, seed=2)
    dropped = FeedbackTransformer(num_heads=1, ff_units=4, dropout=0.5, seed=2)
    seq = lookup(TABLE, IDS)
    inputs = [QUERY, seq, IDS]
    plain(inputs)
    dropped(inputs)
    rng = np.random.default_rng(4)  # nonzero residual branches (Wo and F_2 start at 0)
    plain.set_weights([rng.normal(size=w.shape).astype("float32") for w in plain.get_weights()])
    dropped.set_weights(plain.get_weights())
    np.testing.assert_array_equal(dropped(inputs, training=False).numpy(), plain(inputs).numpy())
    assert not np.allclose(dropped(inputs, training=True).numpy(), plain(inputs).numpy())


def test_feedback_transformer_bad_args():
    for arg in ("num_heads", "key_dim", "ff_units"):
        for bad in (0, -1, 1.5, True):
            with pytest.raises(ValueError, match=arg):
                FeedbackTransformer(**{arg: bad})
    for bad in (-0.1, 1.0, "0.1"):
        with pytest.raises(ValueError, match="dropout"):
            FeedbackTransformer(dropout=bad)
    with pytest.raises(ValueError, match="epsilon"):
        FeedbackTransformer(epsilon=0.0)
    with pytest.raises(ValueError, match="pooling"):
        FeedbackTransformer(pooling="max")
    with pytest.raises(ValueError, match="same size"):
        FeedbackTransformer()([np.zeros((2, 3), "float32"), np.zeros((2, 4, 2), "float32"), np.zeros((2, 4), "int64")])
    with pytest.raises(ValueError, match="expects"):
        FeedbackTransformer()([np.zeros((2, 4, 2), "float32"), np.zeros((2, 4), "int64")])


# ---------------------------------------------------------------- PositionEmbedding


def test_position_embedding_by_hand():
    layer = PositionEmbedding(max_len=4)
    values = np.array([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], [[5.0, 5.0], [6.0, 6.0], [7.0, 7.0]]], "float32")
    ids = np.array([[4, 9, 0], [0, 0, 0]])
    layer.build([values.shape, ids.shape])
    layer.set_weights([np.array([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0], [70.0, 80.0]], "float32")])
    # row 1: [1+10, 1+20], [2+30, 2+40], padded -> 0; row 2 is all padding -> 0
    expected = [[[11.0, 21.0], [32.0, 42.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]]
    np.testing.assert_array_equal(layer([values, ids]).numpy(), expected)
    # the same instance on a shorter sequence uses the first rows of the table
    np.testing.assert_array_equal(
        layer([values[:, :2], ids[:, :2]]).numpy(), [[[11.0, 21.0], [32.0, 42.0]], [[0.0, 0.0], [0.0, 0.0]]]
    )


def test_position_embedding_padding_empty_and_batch():
    layer = PositionEmbedding(max_len=5, seed=0)
    base = layer([lookup(TABLE, IDS), IDS]).numpy()
    table = TABLE.copy()
    table[0] = [1e4, np.nan, -5.0]
    np.testing.assert_array_equal(layer([lookup(table, IDS), IDS]).numpy(), base)
    np.testing.assert_array_equal(base[IDS == 0], np.zeros((int((IDS == 0).sum()), D)))  # empty row 1 included
    for r in range(3):
        np.testing.assert_array_equal(layer([lookup(TABLE, IDS[r : r + 1]), IDS[r : r + 1]]).numpy()[0], base[r])


def test_position_embedding_shared_by_two_sequences(tmp_path):
    pos = PositionEmbedding(max_len=3, seed=1)
    clicks, skips = keras.Input(shape=(3, D)), keras.Input(shape=(2, D))
    click_ids, skip_ids = keras.Input(shape=(3,), dtype="int64"), keras.Input(shape=(2,), dtype="int64")
    out = keras.layers.Concatenate(axis=1)([pos([clicks, click_ids]), pos([skips, skip_ids])])
    model = keras.Model([clicks, click_ids, skips, skip_ids], out)
    assert len(model.weights) == 1  # one table for both sequences
    s_ids = np.array([[1, 0]] * 3)
    c, s = lookup(TABLE, IDS), lookup(TABLE, s_ids)
    got = model.predict([c, IDS, s, s_ids], verbose=0)
    p = pos.get_weights()[0]
    np.testing.assert_allclose(got[:, :3], np.where((IDS != 0)[..., None], c + p, 0.0), rtol=1e-6)
    np.testing.assert_allclose(got[:, 3], s[:, 0] + p[0], rtol=1e-6)  # skip position 0 gets P[0] too
    np.testing.assert_array_equal(got[:, 4], np.zeros((3, D)))
    path = tmp_path / "pos.keras"
    model.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path).predict([c, IDS, s, s_ids], verbose=0), got)
    clone = roundtrip(pos)
    clone.set_weights(pos.get_weights())
    np.testing.assert_array_equal(clone([c, IDS]).numpy(), pos([c, IDS]).numpy())


def test_position_embedding_bad_args():
    for bad in (0, -3, 2.5, True, None):
        with pytest.raises(ValueError, match="max_len"):
            PositionEmbedding(max_len=bad)
    with pytest.raises(ValueError, match="initializer"):
        PositionEmbedding(max_len=3, embeddings_initializer="nope")
    layer = PositionEmbedding(max_len=2)
    with pytest.raises(ValueError, match="exceeds max_len"):
        layer([np.zeros((1, 3, D), "float32"), np.ones((1, 3), "int64")])
    with pytest.raises(ValueError, match="expects"):
        layer(np.zeros((1, 2, D), "float32"))


def test_position_embedding_dynamic_length():
    layer = PositionEmbedding(max_len=2, seed=3)
    values, ids = keras.Input(shape=(None, D)), keras.Input(shape=(None,), dtype="int64")
    model = keras.Model([values, ids], layer([values, ids]))
    x = lookup(TABLE, IDS)
    p = layer.get_weights()[0]
    got = model.predict([x[:, :2], IDS[:, :2]], verbose=0)
    np.testing.assert_allclose(got, np.where((IDS[:, :2] != 0)[..., None], x[:, :2] + p, 0.0), rtol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_len"):
        model.predict([x, IDS], verbose=0)  # length 3 is only known when the batch arrives
