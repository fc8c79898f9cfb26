"""Each model's parameters, declared once (Params in models/<name>.py, the shared ones models/params.py
ModelParams): defaults, checks, descriptions, what --help --model NAME shows, and old records read as today's."""

import dataclasses
import json
import re

import pytest
from pydantic import Field, create_model

from models import (
    MODEL_NAMES,
    MODELS,
    ModelParams,
    ParamError,
    model_defaults,
    model_params_described,
    recorded_params,
    resolve_params,
)

# What every model read before each declared its own parameters: one flat dict, as every saved model
# and run recorded it (learning_rate null: 1e-3 for Adam, 0.05 for Adagrad).
FLAT_RECORD = {
    "embedding_dim": 4,
    "hidden_units": [8],
    "activation": "relu",
    "dropout": 0.0,
    "l2": 0.0,
    "learning_rate": None,
    "deep_optimizer": "adagrad",
    "ftrl_learning_rate": 0.05,
    "ftrl_l1": 0.0,
    "ftrl_l2": 0.0,
    "residual": False,
    "cross_layers": 3,
    "projection_dim": None,
    "crossed_features": [],
    "hash_buckets": 100000,
    "attention_units": [64, 16],
    "attention_normalization": "softmax",
    "position_embedding": True,
    "target_interest_product": True,
    "num_heads": 2,
    "feedback_pooling": "target",
    "ff_units": None,
    "seed": 11,
    "jit_compile": False,
}


class _NotAValue:
    def __repr__(self):
        return "<not a value>"


def test_each_model_reads_the_shared_params_and_its_own_declaration():
    assert set(ModelParams.model_fields) == {
        "embedding_dim",
        "hidden_units",
        "activation",
        "dropout",
        "l2",
        "learning_rate",
        "seed",
        "jit_compile",
    }
    for name in MODEL_NAMES:
        declaration = MODELS[name].params
        assert issubclass(declaration, ModelParams), name
        assert list(model_defaults(name)) == list(declaration.model_fields), name
        assert resolve_params(name) == model_defaults(name)


def test_every_param_has_a_check_a_default_and_a_one_line_description():
    """A value of no type is refused by every parameter's own check, one line naming it; a parameter read by
    several models is checked alike by each."""
    refusals: dict[str, set] = {}
    for name in MODEL_NAMES:
        described = model_params_described(name)
        assert [key for key, _, _ in described] == list(model_defaults(name))
        for key, default, description in described:
            assert default == model_defaults(name)[key]
            assert description and "\n" not in description and len(description) < 100, (name, key)
            with pytest.raises(ParamError) as err:
                resolve_params(name, {key: _NotAValue()})
            assert re.fullmatch(rf"params\.{key} must be [^\n]+, got <not a value>", str(err.value)), str(err.value)
            refusals.setdefault(key, set()).add(str(err.value))
    assert all(len(messages) == 1 for messages in refusals.values()), refusals


def test_a_declaration_without_descriptions_or_with_stray_legacy_values_is_refused():
    with pytest.raises(TypeError, match="one-line description: \\['units'\\]"):

        class _NoDescription(ModelParams):
            units: int = 3

    with pytest.raises(TypeError, match="legacy names parameters it does not declare: \\['gone'\\]"):

        class _StrayLegacy(ModelParams):
            legacy = {"gone": 1}


def test_help_lists_a_models_params_from_its_declaration(capsys):
    from jobs.train import parse_args

    for argv in (["--help", "--model", "dfn"], ["--model=dfn", "--help"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
        out = capsys.readouterr().out
        assert "parameters of dfn (--set params.NAME=VALUE), with their defaults:" in out
        for key, default, description in model_params_described("dfn"):
            setting = re.escape(f"{key}={json.dumps(default, separators=(',', ':'))}")
            assert re.search(rf"^  {setting} +{re.escape(description)}$", out, re.M), key
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    out = capsys.readouterr().out
    assert "  dcn: cross_layers=3\n" in out and "--help --model NAME" in out


def test_todays_effective_defaults():
    """The defaults chosen by measurement (docs/model_defaults.md): Adam at 3e-3 for every model; Adam at
    1e-2 for wide_deep's deep part; dfn's deep part by Adam with a smaller MLP and dropout."""
    for name in MODEL_NAMES:
        p = resolve_params(name)
        assert p["embedding_dim"] == 16
    for name in ("emb_mlp", "deepfm", "dcn", "dcn_v2", "din", "dfn"):
        assert resolve_params(name)["learning_rate"] == 3e-3, name
    for name in ("emb_mlp", "wide_deep", "deepfm", "dcn", "dcn_v2", "din"):
        p = resolve_params(name)
        assert (p["hidden_units"], p["dropout"]) == ([256, 128, 64], 0.0), name
    wide_deep, dfn = resolve_params("wide_deep"), resolve_params("dfn")
    assert (wide_deep["deep_optimizer"], wide_deep["learning_rate"]) == ("adam", 1e-2)
    assert (dfn["deep_optimizer"], dfn["hidden_units"], dfn["dropout"]) == ("adam", [64, 32], 0.2)
    for p in (wide_deep, dfn):  # FTRL for the wide part; Adagrad stays an option at its own rate
        assert (p["adagrad_learning_rate"], p["ftrl_learning_rate"]) == (0.05, 0.05)
        assert p["crossed_features"] == [] and p["hash_buckets"] == 100000
    assert dfn["num_heads"] == 2 and dfn["feedback_pooling"] == "target"


def test_resuming_compares_only_the_rate_of_the_optimizer_used(tmp_path):
    from pipelines.training.run_state import Checkpoints, RunMismatch

    adagrad = resolve_params("wide_deep", {"deep_optimizer": "adagrad", "learning_rate": 1e-3})
    state = {"model": "wide_deep", "params": adagrad}
    # Adam's rate is not used by an Adagrad run: another value of it resumes the run
    Checkpoints(str(tmp_path), 1, "wide_deep", {**adagrad, "learning_rate": 0.5}, "h").check(state)
    with pytest.raises(RunMismatch, match=r"adagrad_learning_rate 0.05 \(now 0.1\)"):
        Checkpoints(str(tmp_path), 1, "wide_deep", {**adagrad, "adagrad_learning_rate": 0.1}, "h").check(state)
    # another optimizer: every rate counts
    with pytest.raises(RunMismatch, match=r'deep_optimizer "adagrad" \(now "adam"\).*learning_rate 0.001 \(now 0.01\)'):
        Checkpoints(str(tmp_path), 1, "wide_deep", resolve_params("wide_deep"), "h").check(state)


def test_a_param_the_model_does_not_read_is_refused_naming_what_it_takes():
    with pytest.raises(ParamError) as err:
        resolve_params("deepfm", {"num_heads": 4})
    message = str(err.value)
    assert message.startswith("params.num_heads: deepfm does not read it (dfn does); deepfm takes: ")
    assert message.endswith("activation, dropout, embedding_dim, hidden_units, jit_compile, l2, learning_rate, seed")
    with pytest.raises(ParamError, match=r"params.adagrad_learning_rate: dcn does not read it \(wide_deep, dfn do\)"):
        resolve_params("dcn", {"adagrad_learning_rate": 0.1})
    with pytest.raises(ParamError, match="params.embeding_dim: no model reads it; emb_mlp takes: "):
        resolve_params("emb_mlp", {"embeding_dim": 8})


@pytest.mark.parametrize(
    "name, key, value",
    [
        ("emb_mlp", "embedding_dim", 0),
        ("emb_mlp", "hidden_units", []),
        ("emb_mlp", "hidden_units", 8),
        ("emb_mlp", "dropout", 1.0),
        ("emb_mlp", "l2", -1),
        ("emb_mlp", "learning_rate", "fast"),
        ("emb_mlp", "seed", 1.5),
        ("emb_mlp", "residual", "yes"),
        ("wide_deep", "deep_optimizer", "sgd"),
        ("wide_deep", "adagrad_learning_rate", -0.1),
        ("wide_deep", "crossed_features", [["user_idx"]]),
        ("dfn", "hash_buckets", 0),
        ("dcn_v2", "projection_dim", 0),
        ("din", "attention_units", 16),
        ("din", "attention_normalization", "max"),
        ("dfn", "num_heads", 0),
        ("dfn", "feedback_pooling", "max"),
        ("dfn", "ff_units", -1),
    ],
)
def test_values_are_checked_once_per_param(name, key, value):
    with pytest.raises(ParamError, match=f"^params.{key} must be .*got {re.escape(repr(value))}"):
        resolve_params(name, {key: value})


def test_null_keeps_the_default_except_where_null_is_a_value():
    assert resolve_params("dcn", {"learning_rate": None, "cross_layers": None})["learning_rate"] == 3e-3
    assert resolve_params("dcn_v2", {"projection_dim": None})["projection_dim"] is None  # full rank
    assert resolve_params("dfn", {"ff_units": None, "seed": None})["ff_units"] is None


def test_an_old_flat_record_reads_as_the_params_its_model_read():
    for name in MODEL_NAMES:
        p = resolve_params(name, recorded_params(FLAT_RECORD, name))
        assert set(p) == set(model_defaults(name))
        assert p["learning_rate"] == 1e-3  # Adam: null was 1e-3
    # learning_rate was the deep optimizer's rate: Adagrad's here
    for name in ("wide_deep", "dfn"):
        record = {**FLAT_RECORD, "learning_rate": 0.02}
        p = resolve_params(name, recorded_params(record, name))
        assert (p["deep_optimizer"], p["adagrad_learning_rate"], p["learning_rate"]) == ("adagrad", 0.02, 1e-3)
        p = resolve_params(name, recorded_params(FLAT_RECORD, name))  # null: Adagrad's 0.05
        assert (p["adagrad_learning_rate"], p["learning_rate"]) == (0.05, 1e-3)
        record = {**FLAT_RECORD, "deep_optimizer": "adam", "learning_rate": 0.004}
        p = resolve_params(name, recorded_params(record, name))
        assert (p["deep_optimizer"], p["learning_rate"], p["adagrad_learning_rate"]) == ("adam", 0.004, 0.05)
    assert recorded_params({**FLAT_RECORD, "learning_rate": 0.004}, "deepfm")["learning_rate"] == 0.004


def test_old_rates_are_written_out_not_left_to_todays_defaults(monkeypatch):
    """Changing a default later must not change what an old record built."""
    for name in ("wide_deep", "dfn", "deepfm"):
        entry = MODELS[name]
        later = {
            key: (float, Field(0.5, description="a later default"))
            for key in ("learning_rate", "adagrad_learning_rate")
            if key in entry.params.model_fields
        }
        declaration = create_model("Later", __base__=entry.params, **later)
        monkeypatch.setitem(MODELS, name, dataclasses.replace(entry, params=declaration))
        assert resolve_params(name)["learning_rate"] == 0.5
        p = resolve_params(name, recorded_params(FLAT_RECORD, name))
        assert p["learning_rate"] == 1e-3 and p.get("adagrad_learning_rate", 0.05) == 0.05


def test_todays_records_read_as_they_are():
    for name in MODEL_NAMES:
        p = resolve_params(name, {"embedding_dim": 4, "seed": 3})
        assert recorded_params(p, name) == p
    p = resolve_params("wide_deep", {"learning_rate": 0.01, "adagrad_learning_rate": 0.2})
    assert recorded_params(p, "wide_deep") == p


def test_params_added_later_keep_their_legacy_values():
    assert recorded_params({"embedding_dim": 4}, "din")["target_interest_product"] is False
    assert recorded_params({"embedding_dim": 4}, "dfn")["feedback_pooling"] == "mean"
    assert recorded_params({"embedding_dim": 4}, "deepfm") == {"embedding_dim": 4}
