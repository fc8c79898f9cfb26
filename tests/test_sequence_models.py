"""din and dfn wiring on the hand-made spec of test_models: which inputs reach the attention and
transformer layers, checked in numpy from the model's own tables and weights; padding rows and the
item table shared by the click and skip histories; dfn's wide + fm + deep sum and its
FTRL / deep optimizer split; spec and param errors. (Fit, save/load and export: test_models.)"""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from feature_spec import compute_spec_hash, validate_spec  # noqa: E402
from models import build_model, compile_model, embedding_tables, model_defaults  # noqa: E402
from tests.test_models import DIM, SPEC, X, Y, params_for  # noqa: E402

CLICK_LEN, SKIP_LEN = 5, 4  # the spec's hist_click_items / hist_skip_items lengths
NUMERICS = ["hist_click_len", "item_vec", "item_ctr"]  # the spec's numerics in order; item_vec is [batch, 3]


def sub_model(model, *layer_names):
    return keras.Model(model.inputs, [model.get_layer(n).output for n in layer_names])


def rows(n=16):
    """The first n rows of X with every categorical index >= 1, so that a padding row (index 0)
    can be reached only through the histories and multi-valued fields."""
    x = {k: v[:n].copy() for k, v in X.items()}
    for name in ("user_idx", "item_idx", "position_idx", "item_primary_genre", "item_ctr_bucket"):
        x[name] = np.maximum(x[name], 1)
    x["hist_click_items"][0] = 0  # one empty click history
    x["hist_skip_items"][1] = 0  # one empty skip history
    return x


def np_masked_softmax(s, valid):
    e = np.where(valid, np.exp(s - np.where(valid, s, -np.inf).max(axis=1, keepdims=True)), 0.0)
    total = e.sum(axis=1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def np_din_pool(q, keys, ids, kernel, bias):
    """softmax-normalized DIN pool with a linear scorer: s_i = [q, k_i, q - k_i, q * k_i] w + c."""
    valid = ids != 0
    keys = np.where(valid[..., None], keys, 0.0)
    qb = np.broadcast_to(q[:, None, :], keys.shape)
    z = np.concatenate([qb, keys, qb - keys, qb * keys], axis=-1)
    scores = (z @ kernel)[..., 0] + bias[0]
    a = np_masked_softmax(scores, valid)
    return np.einsum("bl,bld->bd", a, keys)


LINEAR_DIN = params_for("din", attention_units=[], attention_normalization="softmax", position_embedding=True)


def test_din_attends_with_the_target_item_over_each_history():
    model = build_model("din", SPEC, LINEAR_DIN)
    x = rows()
    table = embedding_tables(model)["item_id"].numpy()
    pos = model.get_layer("position_embedding").embeddings.numpy()
    q = table[x["item_idx"]]
    got = sub_model(model, "attention_hist_click_items", "attention_hist_skip_items")(x)
    for out, name, length in zip(got, ("hist_click_items", "hist_skip_items"), (CLICK_LEN, SKIP_LEN)):
        layer = model.get_layer(f"attention_{name}")
        keys = table[x[name]] + pos[None, :length]
        want = np_din_pool(q, keys, x[name], layer.score_kernel.numpy(), layer.score_bias.numpy())
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[0].numpy()[0], np.zeros(DIM))  # empty click history
    np.testing.assert_array_equal(got[1].numpy()[1], np.zeros(DIM))  # empty skip history


@pytest.mark.parametrize("product", [True, False])
def test_din_replaces_the_histories_by_their_attention_pools(product):
    """The MLP reads the other fields, each pool, then (params.target_interest_product) the target
    embedding times each pool, then the numerics."""
    model = build_model("din", SPEC, {**LINEAR_DIN, "target_interest_product": product})
    x = rows()
    layer = model.get_layer("feature_embedding")
    names = [f["name"] for f in layer.fields]
    fields = layer({n: tf.constant(x[n]) for n in names}).numpy()
    others = [fields[:, i] for i, n in enumerate(names) if n not in ("hist_click_items", "hist_skip_items")]
    q = fields[:, names.index("item_idx")]
    concat, click, skip = (
        t.numpy() for t in sub_model(model, "din_inputs", "attention_hist_click_items", "attention_hist_skip_items")(x)
    )
    numerics = [x[n].reshape(len(x[n]), -1) for n in NUMERICS]  # a scalar is one column, a vector its 3
    products = [q * click, q * skip] if product else []
    want = np.concatenate(others + [click, skip] + products + numerics, axis=1)
    pools = 4 if product else 2
    assert concat.shape == (16, (len(names) - 2) * DIM + pools * DIM + sum(v.shape[1] for v in numerics))
    np.testing.assert_allclose(concat, want, rtol=1e-6, atol=1e-7)
    interest = {"interest_hist_click_items", "interest_hist_skip_items"}
    assert interest & {layer.name for layer in model.layers} == (interest if product else set())


def with_open_transformers(model):
    """dfn's feedback transformers start as the identity on the target (their residual branches end
    at zero kernels): give those kernels values, as training does, so that the histories reach the output."""
    rng = np.random.default_rng(5)
    for layer in model.layers:
        if layer.name.startswith("transformer_"):
            for kernel in (layer.output_kernel, layer.ff_kernel_2):
                kernel.assign(rng.normal(scale=0.5, size=kernel.shape))
    return model


@pytest.mark.parametrize("name", ["din", "dfn"])
def test_padding_rows_never_reach_the_output(name):
    model = with_open_transformers(build_model(name, SPEC, params_for(name)))
    x = rows()
    before = model(x).numpy()
    rng = np.random.default_rng(3)
    for table in embedding_tables(model).values():
        values = table.numpy()
        values[0] = rng.normal(scale=5.0, size=values.shape[1])
        table.assign(values)
    after = model(x).numpy()
    assert np.all(np.isfinite(after))
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)


def test_dfn_reads_skipped_items_in_the_shared_item_table():
    """Changing the item-table row of an item seen only in row 0's skips changes row 0's external
    (click -> skip) attention and nothing in the rows that never show that item."""
    model = with_open_transformers(build_model("dfn", SPEC, params_for("dfn")))
    x = rows()
    item = 29
    for key in ("item_idx", "hist_click_items", "hist_skip_items"):
        x[key] = np.where(x[key] == item, 28, x[key])
    x["hist_skip_items"][0] = [item, 0, 0, 0]
    probe = sub_model(
        model,
        "attention_hist_click_items_hist_skip_items",
        "transformer_hist_skip_items",
        "transformer_hist_click_items",
    )
    before = [t.numpy() for t in probe(x)]
    table = embedding_tables(model)["item_id"]
    values = table.numpy()
    values[item] += 1.0
    table.assign(values)
    after = [t.numpy() for t in probe(x)]
    for b, a in zip(before[:2], after[:2]):  # the skip side of row 0 moved
        assert not np.allclose(b[0], a[0])
    for b, a in zip(before, after):  # no other row moved, nor any click side
        np.testing.assert_allclose(a[1:], b[1:], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(after[2], before[2], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("pooling", ["target", "mean"])
def test_dfn_transformers_pool_as_params_say(pooling):
    params = (
        params_for("dfn") if pooling == "target" else params_for("dfn", feedback_pooling=pooling)
    )  # target: the default
    model = build_model("dfn", SPEC, params)
    for name in ("hist_click_items", "hist_skip_items"):
        assert model.get_layer(f"transformer_{name}").pooling == pooling


def test_dfn_logit_is_wide_plus_fm_plus_deep():
    model = build_model("dfn", SPEC, params_for("dfn"))
    x = rows()
    field_layers = [
        f"field_{n}"
        for n in (
            "user_idx",
            "item_idx",
            "position_idx",
            "user_top_genres",
            "item_genres",
            "item_primary_genre",
            "item_ctr_bucket",
        )
    ]
    feedback = [
        "transformer_hist_click_items",
        "transformer_hist_skip_items",
        "attention_hist_click_items_hist_skip_items",
    ]
    outs = [t.numpy() for t in sub_model(model, "wide", "fm", "deep_logit", "logit", *field_layers, *feedback)(x)]
    wide, fm, deep, logit = outs[:4]
    v = np.stack(outs[4:], axis=1)  # [batch, 10 fields, d]
    pairs = sum(np.sum(v[:, i] * v[:, j], axis=1) for i in range(v.shape[1]) for j in range(i + 1, v.shape[1]))
    np.testing.assert_allclose(fm[:, 0], pairs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logit, wide + fm + deep, rtol=1e-6, atol=1e-6)


def _snapshot(variables):
    return [v.numpy().copy() for v in variables]


def test_dfn_trains_the_wide_part_with_ftrl_and_the_rest_with_the_deep_optimizer():
    keras.utils.clear_session()
    model = build_model("dfn", SPEC, params_for("dfn"))
    wide, deep = model.wide_variables, model.deep_variables
    ids = lambda vs: {id(v) for v in vs}  # noqa: E731
    assert ids(wide) == ids(model.get_layer("wide").trainable_variables)
    assert not ids(wide) & ids(deep) and ids(wide) | ids(deep) == ids(model.trainable_variables)
    for name in (
        "transformer_hist_click_items",
        "transformer_hist_skip_items",
        "attention_hist_click_items_hist_skip_items",
        "position_embedding",
    ):
        assert ids(model.get_layer(name).trainable_variables) <= ids(deep), name
    # deep optimizer (Adagrad) frozen: only FTRL moves weights
    compile_model(model, {"deep_optimizer": "adagrad", "adagrad_learning_rate": 0.0})
    model.run_eagerly = True
    assert isinstance(model.wide_optimizer, keras.optimizers.Ftrl) and isinstance(
        model.optimizer, keras.optimizers.Adagrad
    )
    before_w, before_d = _snapshot(wide), _snapshot(deep)
    model.train_on_batch({k: v[:64] for k, v in X.items()}, Y[:64])
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before_w, wide))
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before_d, deep))


def _spec_with(features):
    spec = {k: v for k, v in SPEC.items() if k != "spec_hash"}
    spec["features"] = features
    spec["spec_hash"] = compute_spec_hash(spec)
    return validate_spec(spec)


def test_a_click_history_alone_is_enough():
    spec = _spec_with([e for e in SPEC["features"] if e["name"] != "hist_skip_items"])
    x = {k: v[:8] for k, v in X.items()}
    for name in ("din", "dfn"):
        model = build_model(name, spec, params_for(name))
        layers = {layer.name for layer in model.layers}
        assert not {"attention_hist_skip_items", "transformer_hist_skip_items"} & layers
        assert tuple(model(x).shape) == (8, 1)


def test_spec_and_param_errors():
    no_history = _spec_with([e for e in SPEC["features"] if e["kind"] != "sequence"])
    for name in ("din", "dfn"):
        with pytest.raises(ValueError, match="exactly one categorical target"):
            build_model(name, no_history, params_for(name))
    two_targets = _spec_with(SPEC["features"] + [dict(SPEC["features"][1], name="item_idx_copy")])
    with pytest.raises(ValueError, match="item_idx .*item_idx_copy"):
        build_model("din", two_targets, params_for("din"))
    with pytest.raises(ValueError, match="embedding_dim >= 3"):
        build_model("dfn", SPEC, params_for("dfn", embedding_dim=2))
    for bad in (
        {"attention_units": 16},
        {"attention_units": [0]},
        {"attention_normalization": "max"},
        {"position_embedding": "yes"},
        {"target_interest_product": 1},
        {"num_heads": 0},
        {"feedback_pooling": "max"},
        {"ff_units": -1},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            name = "din" if next(iter(bad)) in model_defaults("din") else "dfn"  # the model that reads it
            build_model(name, SPEC, params_for(name, **bad))


def test_a_din_saved_before_the_interest_products_loads_as_it_was_built(tmp_path):
    """A din config saved before params.target_interest_product existed lacks the key: it was built
    without the products, and loads so (today's default would build another MLP input)."""
    model = build_model("din", SPEC, params_for("din", target_interest_product=False))
    config = model.get_config()
    del config["params"]["target_interest_product"]
    restored = type(model).from_config(config)
    restored.set_weights(model.get_weights())
    x = rows()
    np.testing.assert_allclose(restored(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-7)
    assert restored.ctr_params["target_interest_product"] is False


def test_a_dfn_saved_before_the_pre_ln_block_is_refused_with_a_message():
    """Its transformer weights fit today's pre-LN block in shape but not in meaning: no silent load."""
    model = build_model("dfn", SPEC, params_for("dfn"))
    config = model.get_config()
    del config["params"]["feedback_pooling"]
    with pytest.raises(ValueError, match="saved before its feedback transformers became pre-LN.*train it again"):
        type(model).from_config(config)
