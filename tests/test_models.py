"""Every registered CTR model on a small hand-made spec: fit, predict, save/load, SavedModel export,
embedding tables, and the wide & deep two-optimizer split. The spec has scalar numerics and a
vector numeric (`item_vec`, shape [3]), which every model takes through its numeric path."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from feature_spec import compute_spec_hash, input_signature, numeric_fields, parse_features, validate_spec  # noqa: E402
from models import MODEL_NAMES, build_model, compile_model, embedding_tables, logit_model, model_defaults  # noqa: E402

DIM = 4
N_ROWS = 256
VEC_DIM = 3  # the width of the vector numeric item_vec
PARAMS = {
    "embedding_dim": DIM,
    "hidden_units": [16, 8],
    "cross_layers": 2,
    "learning_rate": 0.02,  # Adam's
    "adagrad_learning_rate": 0.02,  # wide_deep's and dfn's deep optimizer
    "seed": 7,
    "crossed_features": [["user_idx", "item_idx"], ["user_idx", "item_primary_genre"]],
    "hash_buckets": 97,
}


def params_for(name: str, **extra) -> dict:
    """PARAMS restricted to the parameters model ``name`` reads (it refuses others), then ``extra``."""
    reads = model_defaults(name)
    return {**{k: v for k, v in PARAMS.items() if k in reads}, **extra}


def _cat(name, vocab, table, vocabulary=True, **extra):
    entry = {
        "name": name,
        "role": "model_input",
        "kind": "categorical",
        "dtype": "int64",
        "shape": [],
        "vocab_size": vocab,
        "embedding_table": table,
    }
    if vocabulary:
        entry["vocabulary"] = table
    entry.update(extra)
    return entry


def _multi(name, kind, n, vocab, table):
    return {
        "name": name,
        "role": "model_input",
        "kind": kind,
        "dtype": "int64",
        "shape": [n],
        "vocab_size": vocab,
        "vocabulary": table,
        "embedding_table": table,
    }


def _num(name, width=None):
    if width is None:
        return {
            "name": name,
            "role": "model_input",
            "kind": "numeric",
            "dtype": "float32",
            "shape": [],
            "normalization": {"log1p": False, "mean": 0.0, "std": 1.0},
        }
    return {
        "name": name,
        "role": "model_input",
        "kind": "numeric",
        "dtype": "float32",
        "shape": [width],
        "normalization": {"log1p": False, "mean": [0.0] * width, "std": [1.0] * width},
    }


def make_spec():
    features = [
        _cat("user_idx", 20, "user_id"),
        _cat("item_idx", 30, "item_id"),
        _cat("position_idx", 6, "position"),
        _multi("hist_click_items", "sequence", 5, 30, "item_id"),
        _multi("hist_skip_items", "sequence", 4, 30, "item_id"),
        _multi("user_top_genres", "multi_categorical", 3, 8, "genre"),
        _multi("item_genres", "multi_categorical", 3, 8, "genre"),
        _cat("item_primary_genre", 8, "genre"),
        _num("hist_click_len"),
        _num("item_vec", VEC_DIM),
        _num("item_ctr"),
        _cat(
            "item_ctr_bucket",
            5,
            "item_ctr_bucket",
            vocabulary=False,
            bucketization={"source": "item_ctr", "boundaries": [-1.0, 0.0, 1.0]},
        ),
        {"name": "label", "role": "label", "kind": "label", "dtype": "int64", "shape": []},
        {"name": "user_id", "role": "metadata", "kind": "metadata", "dtype": "string", "shape": [], "default": None},
        {"name": "ts", "role": "metadata", "kind": "metadata", "dtype": "int64", "shape": [], "default": None},
    ]
    vocab = lambda size: {"size": size, "num_tokens": size - 2, "padding_index": 0, "oov_index": 1, "min_count": 1}  # noqa: E731
    spec = {
        "format_version": 1,
        "compression": "GZIP",
        "label": "label",
        "splits": {"train": {"pattern": "train/part-*.tfrecord.gz", "num_examples": N_ROWS, "label_rate": 0.5}},
        "features": features,
        "vocabularies": {
            "user_id": {**vocab(20), "path": "vocab/user_id"},
            "item_id": {**vocab(30), "path": "vocab/item_id"},
            "position": {**vocab(6), "path": "vocab/position"},
            "genre": {**vocab(8), "path": "vocab/genre"},
        },
    }
    spec["spec_hash"] = compute_spec_hash(spec)
    return validate_spec(spec)


SPEC = make_spec()
TABLE_SIZES = {"user_id": 20, "item_id": 30, "position": 6, "genre": 8, "item_ctr_bucket": 5}


VEC_WEIGHTS = np.array([1.0, -1.0, 0.5], dtype="float32")


def make_data(n=N_ROWS, seed=0):
    """Random features; the click depends on the item (even items click), on item_ctr, on
    whether the item is in the click history and a little on item_vec, so every model has
    something to learn."""
    rng = np.random.default_rng(seed)
    item = rng.integers(1, 30, n)
    hist = rng.integers(0, 30, (n, 5))
    hist[rng.random((n, 5)) < 0.3] = 0
    hist[np.arange(n) % 7 == 0] = 0  # some empty histories
    ctr = rng.normal(size=n).astype("float32")
    vec = rng.normal(size=(n, VEC_DIM)).astype("float32")
    x = {
        "user_idx": rng.integers(0, 20, n),
        "item_idx": item,
        "position_idx": rng.integers(1, 6, n),
        "hist_click_items": hist,
        "hist_skip_items": rng.integers(0, 30, (n, 4)),
        "user_top_genres": rng.integers(0, 8, (n, 3)),
        "item_genres": rng.integers(0, 8, (n, 3)),
        "item_primary_genre": rng.integers(1, 8, n),
        "hist_click_len": rng.normal(size=n).astype("float32"),
        "item_ctr": ctr,
        "item_ctr_bucket": np.digitize(ctr, [-1.0, 0.0, 1.0], right=False) + 1,
        "item_vec": vec,
    }
    x = {k: (v.astype("int64") if v.dtype.kind == "i" else v) for k, v in x.items()}
    score = (
        2.5 * (item % 2 == 0) - 1.25 + 1.0 * ctr + 1.0 * (hist == item[:, None]).any(axis=1) + 0.5 * (vec @ VEC_WEIGHTS)
    )
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-2.0 * score))).astype("int64")
    return x, y


X, Y = make_data()


def dataset(batch=64):
    return tf.data.Dataset.from_tensor_slices((X, Y)).batch(batch)


@pytest.fixture(scope="module", params=MODEL_NAMES)
def trained(request):
    keras.utils.clear_session()
    model = build_model(request.param, SPEC, params_for(request.param))
    compile_model(model)
    history = model.fit(dataset(), validation_data=dataset(), epochs=3, verbose=0)
    return request.param, model, history


@pytest.mark.slow
def test_fit_predict_evaluate(trained):
    name, model, history = trained
    assert model.name == name
    pred = model.predict(X, batch_size=128, verbose=0)
    assert pred.shape == (N_ROWS, 1) and pred.dtype == np.float32
    assert np.all(np.isfinite(pred)) and np.all((pred > 0) & (pred < 1))
    assert {"loss", "auc", "val_loss", "val_auc"} <= set(history.history)
    assert np.isfinite(history.history["val_loss"][-1])
    assert history.history["val_auc"][-1] > 0.7, history.history  # the signal is learnable
    logit = logit_model(model)(X).numpy()
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-logit)), pred, atol=1e-5)


@pytest.mark.slow
def test_parsed_examples_are_valid_inputs(trained):
    """What tf.io.parse_example yields for the spec goes straight into the model."""
    _, model, _ = trained
    serialized = []
    for i in range(3):
        feature = {}
        for key, value in X.items():
            vals = np.atleast_1d(value[i]).tolist()
            if value.dtype.kind == "i":
                feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=vals))
            else:
                feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=vals))
        feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(Y[i])]))
        serialized.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    parsed = tf.io.parse_example(serialized, parse_features(SPEC, include_metadata=False))
    parsed.pop("label")
    np.testing.assert_allclose(model(parsed).numpy(), model({k: v[:3] for k, v in X.items()}).numpy(), atol=1e-6)


@pytest.mark.slow
def test_extra_keys_ignored_missing_keys_rejected(trained):
    _, model, _ = trained
    x = {k: v[:8] for k, v in X.items()}
    # "label" sorts between the features: Keras alone would shift the inputs by one
    with_extra = {**x, "label": Y[:8], "aaa_metadata": np.zeros(8, dtype="int64")}
    np.testing.assert_array_equal(model(with_extra).numpy(), model(x).numpy())
    with pytest.raises(ValueError, match="item_ctr"):
        model({k: v for k, v in x.items() if k != "item_ctr"})


N_FIELDS = 9  # the spec's categorical, sequence and multi_categorical inputs
NUMERIC_WIDTH = 2 + VEC_DIM  # hist_click_len, item_ctr and item_vec's three dimensions


@pytest.mark.slow
def test_the_vector_numeric_reaches_every_model(trained):
    """item_vec is part of the numeric block, in spec order, and moves the prediction."""
    name, model, _ = trained
    assert numeric_fields(SPEC) == [("hist_click_len", 1), ("item_vec", VEC_DIM), ("item_ctr", 1)]
    numeric = model.get_layer("numeric_features")
    assert numeric.widths == [1, VEC_DIM, 1] and tuple(numeric.output.shape) == (None, NUMERIC_WIDTH)
    x = {k: v[:32] for k, v in X.items()}
    block = keras.Model(model.inputs, numeric.output)(x).numpy()
    np.testing.assert_array_equal(block, np.column_stack([x["hist_click_len"], x["item_vec"], x["item_ctr"]]))
    for k in range(VEC_DIM):  # each dimension on its own changes the output
        moved = dict(x, item_vec=x["item_vec"] + 2.0 * np.eye(VEC_DIM, dtype="float32")[k])
        assert not np.allclose(model(moved).numpy(), model(x).numpy(), atol=1e-6), (name, k)
    if name in ("deepfm", "dfn"):  # the first-order / wide part: one weight per numeric column
        linear = model.get_layer("fm_first_order" if name == "deepfm" else "wide")
        assert linear.numeric_widths == [1, VEC_DIM, 1]
        assert tuple(linear.numeric_weight.shape) == (NUMERIC_WIDTH, 1)


@pytest.mark.parametrize("name, layer", [("dcn", "cross"), ("dcn_v2", "cross_v2")])
def test_cross_networks_cross_the_vector_dimensions(name, layer):
    """x0 = concat(fields, numerics): n_fields * embedding_dim + total numeric width columns."""
    model = build_model(name, SPEC, params_for(name))
    cross = model.get_layer(layer)
    width = N_FIELDS * DIM + NUMERIC_WIDTH
    assert tuple(cross.input.shape) == (None, width)
    assert tuple(cross.biases[0].shape) == (width,)
    kernel = cross.kernels[0]
    assert tuple(kernel.shape) == ((width,) if name == "dcn" else (width, width))
    # x0's last NUMERIC_WIDTH columns are the numerics in spec order, the vector's among them
    x = {k: v[:4] for k, v in X.items()}
    x0 = keras.Model(model.inputs, cross.input)(x).numpy()
    np.testing.assert_array_equal(
        x0[:, -NUMERIC_WIDTH:], np.column_stack([x["hist_click_len"], x["item_vec"], x["item_ctr"]])
    )


@pytest.mark.slow
def test_save_load_keras(trained, tmp_path):
    name, model, _ = trained
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model) and loaded.name == name and loaded.model_name == name
    assert loaded.ctr_params == model.ctr_params
    assert set(model.get_config()["params"]) == set(model_defaults(name))  # the params it reads, no others
    np.testing.assert_allclose(loaded(X).numpy(), model(X).numpy(), atol=1e-6)
    # still compiled, with the same optimizer state (wide_deep: both optimizers)
    assert loaded.compiled and type(loaded.optimizer) is type(model.optimizer)
    optimizers = [(model.optimizer, loaded.optimizer)]
    if name in ("wide_deep", "dfn"):  # the models trained by wide_deep's two-optimizer step
        assert isinstance(loaded.wide_optimizer, keras.optimizers.Ftrl)
        optimizers.append((model.wide_optimizer, loaded.wide_optimizer))
    for original, restored in optimizers:
        assert len(original.variables) == len(restored.variables)
        for a, b in zip(original.variables, restored.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.slow
def test_saved_model_export(trained, tmp_path):
    name, model, _ = trained
    path = str(tmp_path / f"{name}_export")
    model.export(path, verbose=0)
    reloaded = tf.saved_model.load(path)
    out = reloaded.serve({k: tf.constant(v) for k, v in X.items()})
    np.testing.assert_allclose(out.numpy(), model(X).numpy(), atol=1e-6)
    sig = reloaded.signatures["serving_default"]
    assert sig.structured_input_signature[1]["item_vec"].shape.as_list() == [None, VEC_DIM]
    assert sig.structured_input_signature[1]["item_ctr"].shape.as_list() == [None]
    assert input_signature(SPEC)["item_vec"].shape.as_list() == [None, VEC_DIM]
    sig_out = sig(**{k: tf.constant(v) for k, v in X.items()})
    np.testing.assert_allclose(next(iter(sig_out.values())).numpy(), out.numpy(), atol=1e-6)


@pytest.mark.slow
def test_embedding_tables(trained):
    _, model, _ = trained
    tables = embedding_tables(model)
    assert {k: tuple(v.shape) for k, v in tables.items()} == {k: (n, DIM) for k, n in TABLE_SIZES.items()}
    # exactly one variable per table among the model's weights
    item_like = [w for w in model.weights if tuple(w.shape) == (30, DIM)]
    assert len(item_like) == 1


def test_sequences_share_the_item_table():
    model = build_model("emb_mlp", SPEC, params_for("emb_mlp"))
    table = embedding_tables(model)["item_id"]
    values = np.arange(30 * DIM, dtype="float32").reshape(30, DIM)
    table.assign(values)
    layer = model.get_layer("feature_embedding")
    names = [f["name"] for f in layer.fields]
    x = {k: v[:1].copy() for k, v in X.items()}
    x["item_idx"][:] = 3
    x["hist_click_items"][:] = [3, 0, 0, 0, 0]
    x["hist_skip_items"][:] = [3, 5, 0, 0]
    fields = layer({n: tf.constant(x[n]) for n in names}).numpy()[0]
    np.testing.assert_array_equal(fields[names.index("item_idx")], values[3])
    np.testing.assert_array_equal(fields[names.index("hist_click_items")], values[3])
    np.testing.assert_array_equal(fields[names.index("hist_skip_items")], (values[3] + values[5]) / 2)
    genre = embedding_tables(model)["genre"]
    assert sum(1 for w in model.weights if w is genre or w.path == genre.path) == 1


def _snapshot(variables):
    return [v.numpy().copy() for v in variables]


def _changed(before, variables):
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


def test_wide_deep_optimizers_are_split():
    keras.utils.clear_session()
    model = build_model("wide_deep", SPEC, params_for("wide_deep"))
    wide, deep = model.wide_variables, model.deep_variables
    ids = lambda vs: {id(v) for v in vs}  # noqa: E731
    assert ids(wide) and ids(deep) and not ids(wide) & ids(deep)
    assert ids(wide) | ids(deep) == ids(model.trainable_variables)
    assert ids(wide) == ids(model.get_layer("wide").trainable_variables)
    assert ids(embedding_tables(model).values()) <= ids(deep)

    # deep optimizer with learning rate 0: only the wide (FTRL) part moves
    compile_model(model, {"deep_optimizer": "adagrad", "adagrad_learning_rate": 0.0})
    model.run_eagerly = True  # the graph-mode train_step runs in the fit fixture; eager keeps this test fast
    assert isinstance(model.wide_optimizer, keras.optimizers.Ftrl)
    assert isinstance(model.optimizer, keras.optimizers.Adagrad)
    assert ids(model.wide_optimizer._trainable_variables) == ids(wide)
    assert ids(model.optimizer._trainable_variables) == ids(deep)
    batch = next(iter(dataset()))
    before_w, before_d = _snapshot(wide), _snapshot(deep)
    model.train_on_batch(*batch)
    assert int(model.wide_optimizer.iterations.numpy()) == 1 and int(model.optimizer.iterations.numpy()) == 1
    assert not any(_changed(before_d, deep))
    assert all(_changed(before_w, wide))  # every wide table has a looked-up row, plus the bias

    # and the other way round: a frozen wide optimizer, a live deep one
    model.compile(
        optimizer=keras.optimizers.Adagrad(0.05),
        wide_optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(name="auc")],
        run_eagerly=True,
    )
    before_w, before_d = _snapshot(wide), _snapshot(deep)
    model.train_on_batch(*batch)
    assert not any(_changed(before_w, wide))
    item_pos = [i for i, v in enumerate(deep) if v is embedding_tables(model)["item_id"]]
    assert len(item_pos) == 1 and _changed(before_d, deep)[item_pos[0]]


def test_bad_names_and_params():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("lr", SPEC)
    with pytest.raises(ValueError, match="embedding_dim"):
        build_model("emb_mlp", SPEC, {"embedding_dim": 0})
    with pytest.raises(ValueError, match="crossed feature 'nope'"):
        build_model("wide_deep", SPEC, {"crossed_features": [["user_idx", "nope"]]})
    with pytest.raises(ValueError, match="must be categorical"):
        build_model("wide_deep", SPEC, {"crossed_features": [["user_idx", "item_genres"]]})


@pytest.mark.parametrize("extra", [{"residual": True}, {"projection_dim": 3}])
def test_variants_build_and_run(extra):
    name = "emb_mlp" if "residual" in extra else "dcn_v2"
    model = build_model(name, SPEC, params_for(name, **extra))
    out = model({k: tf.constant(v[:8]) for k, v in X.items()})
    assert tuple(out.shape) == (8, 1)
    if name == "dcn_v2":
        assert any(
            tuple(w.shape) == (3, model.get_layer("cross_v2").weights[1].shape[-1])
            for w in model.get_layer("cross_v2").weights
        )
