"""Saved models and checkpointed runs made before each model declared its own parameters still load and
resume, with the graph and optimizers they were built with (models.params.recorded_params).

The fixtures (tests/fixtures/legacy/, made by tests/fixtures/make_legacy_fixtures.py with the flat
DEFAULT_PARAMS of commit f002a4e) record all 24 params of that time whatever the model, and
`learning_rate` as the deep optimizer's rate: wide_deep's Adagrad at 0.02, dfn's Adagrad at 0.05
(learning_rate null), deepfm's Adam at 0.005.
"""

import gzip
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from jobs.train import main  # noqa: E402
from models import model_defaults  # noqa: E402
from pipelines.training import train as train_module  # noqa: E402
from tests.tf_samples import write_samples  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "legacy"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
MODELS = tuple(MANIFEST["models"])
# The fixture runs' flags as they read today: wide_deep's `params.learning_rate=0.02` was its Adagrad's rate,
# and the defaults they ran with that have changed since (docs/model_defaults.md) are given: Adagrad for the
# deep part of both, no dropout for dfn.
TODAYS_SETS = {
    "wide_deep": [
        "params.deep_optimizer=adagrad",
        "params.adagrad_learning_rate=0.02",
        "params.crossed_features=[[user_idx,item_idx]]",
        "params.hash_buckets=97",
    ],
    "dfn": ["params.deep_optimizer=adagrad", "params.dropout=0.0"],
    "deepfm": ["params.learning_rate=0.005"],
}
EPOCHS = MANIFEST["epochs"]


def _unpacked(src: Path, dst: Path) -> Path:
    """A copy of fixture folder `src` at `dst`, its NAME.gz files unzipped to NAME."""
    shutil.copytree(src, dst)
    for packed in dst.rglob("*.gz"):
        with gzip.open(packed, "rb") as fh:
            packed.with_suffix("").write_bytes(fh.read())
        packed.unlink()
    return dst


def _train_args(samples: str, name: str, run: Path, sets: list) -> list:
    args = ["--samples", samples, "--model", name, "--output", str(run), "--epochs", str(EPOCHS)]
    return args + [a for s in [*MANIFEST["common_sets"], *sets] for a in ("--set", s)]


def _check_optimizers(model, name: str, optimizers: dict | None = None) -> None:
    """`model`'s optimizers (or `optimizers`) are those the fixture's model trained with: of its class, or the
    fused kind of it (models/optimizers.py, the same updates)."""
    expected = MANIFEST["models"][name]["optimizers"]
    if optimizers is None:
        optimizers = {"optimizer": model.optimizer}
        if "wide_optimizer" in expected:
            optimizers["wide_optimizer"] = model.wide_optimizer
    assert set(optimizers) == set(expected)
    for key, opt in optimizers.items():
        assert isinstance(opt, getattr(keras.optimizers, expected[key]["class"])), (name, key, type(opt))
        assert math.isclose(float(opt.learning_rate.numpy()), expected[key]["learning_rate"], rel_tol=1e-6)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    path = tmp_path_factory.mktemp("legacy") / "samples"
    spec, _ = write_samples(path, **MANIFEST["samples_args"])
    assert spec["spec_hash"] == MANIFEST["spec_hash"]  # the samples the fixture runs were trained on
    return str(path)


def test_the_fixtures_hold_flat_records_of_every_model_param():
    for name in MODELS:
        params = MANIFEST["models"][name]["params"]
        assert len(params) == 24 and "num_heads" in params and "adagrad_learning_rate" not in params
    assert MANIFEST["models"]["wide_deep"]["params"]["learning_rate"] == 0.02
    assert MANIFEST["models"]["dfn"]["params"]["learning_rate"] is None


@pytest.mark.parametrize("name", MODELS)
def test_a_legacy_saved_model_loads_and_predicts_as_it_did(name, tmp_path):
    folder = _unpacked(FIXTURES / name, tmp_path / name)
    keras.utils.clear_session()
    model = keras.models.load_model(folder / "model.keras")
    assert model.model_name == name
    assert set(model.ctr_params) == set(model_defaults(name))  # its own params only
    assert set(model.get_config()["params"]) == set(model_defaults(name))
    _check_optimizers(model, name)  # restored from the compile config saved with the model
    _check_optimizers(model, name, model.default_optimizers(model.ctr_params))  # and its params name them
    expected = json.loads((folder / "expected.json").read_text())
    x = {
        k: np.asarray(v, dtype="int64" if np.asarray(v).dtype.kind == "i" else "float32")
        for k, v in expected["inputs"].items()
    }
    np.testing.assert_allclose(model(x).numpy()[:, 0], expected["predictions"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_a_legacy_run_resumes_to_the_end_with_its_optimizers(name, samples, tmp_path, monkeypatch):
    run = _unpacked(FIXTURES / name / "run", tmp_path / "run")
    built = []
    build_optimizers = train_module.build_optimizers

    def keep(model):  # the model train() builds and restores the checkpoint into
        built.append(model)
        build_optimizers(model)

    monkeypatch.setattr(train_module, "build_optimizers", keep)
    assert main(_train_args(samples, name, run, TODAYS_SETS[name])) == 0
    (model,) = built
    _check_optimizers(model, name)
    # the optimizer state of epoch 1 was restored, then epoch 2 trained: two epochs of steps
    steps = sum(e["steps"] for e in json.loads((run / "run.json").read_text())["history"])
    assert int(model.optimizer.iterations.numpy()) == steps
    if name in ("wide_deep", "dfn"):
        assert int(model.wide_optimizer.iterations.numpy()) == steps

    summary = json.loads((run / "run.json").read_text())
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_completed"] == EPOCHS
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == EPOCHS
    for params in (summary["params"], state["params"], model.get_config()["params"]):
        assert set(params) == set(model_defaults(name))  # its own params only, from now on


def test_a_legacy_run_resumed_with_the_old_meaning_of_learning_rate_is_refused(samples, tmp_path, capsys):
    """wide_deep's old `--set params.learning_rate=0.02` was its Adagrad's rate; today it is Adam's, and
    Adagrad would run at 0.05: the checkpoint's params differ and the run says where."""
    run = _unpacked(FIXTURES / "wide_deep" / "run", tmp_path / "run")
    old_sets = [s for s in MANIFEST["models"]["wide_deep"]["sets"] if not s.startswith("debug.")]
    assert "params.learning_rate=0.02" in old_sets
    assert main(_train_args(samples, "wide_deep", run, old_sets)) == 3
    err = capsys.readouterr().err
    assert "adagrad_learning_rate 0.02 (now 0.05)" in err and "learning_rate 0.001 (now 0.02)" in err
    assert json.loads((run / "checkpoints" / "state.json").read_text())["epoch"] == 1  # untouched
