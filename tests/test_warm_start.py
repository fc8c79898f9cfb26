"""jobs.train --init-from RUN0: a new run that starts from a finished run's weights and optimizer state."""

import json
import shutil

import pytest

from jobs.train import main
from models import build_model, compile_model
from pipelines.training.run_state import build_optimizers
from tests.tf_samples import write_samples

MODEL = "emb_mlp"
FAST = [
    "--set",
    "batch_size=64",
    "--set",
    "eval_batch_size=128",
    "--set",
    "shuffle_buffer=256",
    "--set",
    "params.hidden_units=[16]",
    "--set",
    "params.embedding_dim=8",
    "--set",
    "params.learning_rate=0.01",
    "--set",
    "verbose=0",
]
TRAIN_ROWS, BATCH = 480, 64
STEPS_PER_EPOCH = -(-TRAIN_ROWS // BATCH)


def _run(samples, output, *extra, model=MODEL):
    return main(["--samples", str(samples), "--model", model, "--output", str(output), *FAST, *extra])


def _summary(run) -> dict:
    with open(run / "run.json") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    path = tmp_path_factory.mktemp("warm") / "samples"
    spec, _ = write_samples(path, sizes={"train": TRAIN_ROWS, "valid": 160, "test": 160}, seed=1)
    return path, spec


@pytest.fixture(scope="module")
def earlier_run(samples, tmp_path_factory):
    """Yesterday's run, of 2 epochs."""
    path, _ = samples
    run = tmp_path_factory.mktemp("warm") / "day1"
    assert _run(path, run, "--epochs", "2") == 0
    return run, _summary(run)


@pytest.fixture(scope="module")
def warm_run(samples, earlier_run, tmp_path_factory):
    path, _ = samples
    run0, _ = earlier_run
    run = tmp_path_factory.mktemp("warm") / "day2"
    assert _run(path, run, "--epochs", "1", "--init-from", str(run0)) == 0
    return run, _summary(run)


@pytest.mark.slow
def test_a_warm_start_begins_where_the_earlier_run_ended(samples, earlier_run, warm_run):
    path, spec = samples
    run0, summary0 = earlier_run
    run, summary = warm_run
    best = summary0["best_epoch"]
    assert summary["init_from"] == {
        "run": str(run0),
        "run_id": summary0["run_id"],
        "weights": "checkpoints/best.weights.h5",
        "epoch": best,
        "spec_hash": spec["spec_hash"],
        # Adam's step count at the end of RUN0's best epoch: the optimizer state came along
        "optimizer_iterations": best * STEPS_PER_EPOCH,
    }
    # before any step the model scores valid exactly as RUN0's final model did (same weights, same code)
    assert set(summary["initial_valid"]) == set(summary0["metrics"]["valid"])
    for name, value in summary0["metrics"]["valid"].items():
        assert summary["initial_valid"][name] == pytest.approx(value, abs=1e-6), name
    # a new run: its own epoch 1, history and checkpoints
    assert summary["resumed_from_epoch"] == 0 and summary["epochs_completed"] == 1
    assert [h["epoch"] for h in summary["history"]] == [1] and summary["best_epoch"] == 1
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 1 and state["init_from"] == summary["init_from"]
    # the Adam state went on from RUN0's: epoch 1's checkpoint is one epoch of steps further
    model = build_model(MODEL, spec, summary["params"])
    compile_model(model)
    build_optimizers(model)
    model.load_weights(str(run / "checkpoints" / "epoch-0001.weights.h5"))
    assert int(model.optimizer.iterations.numpy()) == (best + 1) * STEPS_PER_EPOCH
    assert json.loads((run / "_RUN.json").read_text())["init_from"] == str(run0)


@pytest.mark.slow
def test_single_runs_record_no_warm_start(earlier_run):
    run0, summary0 = earlier_run
    assert "init_from" not in summary0 and "initial_valid" not in summary0
    assert "init_from" not in json.loads((run0 / "checkpoints" / "state.json").read_text())


@pytest.mark.slow
def test_a_warm_start_from_another_spec_hash_is_refused(earlier_run, tmp_path, capsys):
    run0, summary0 = earlier_run
    other = tmp_path / "samples_v2"
    spec2, _ = write_samples(other, sizes={"train": 40, "valid": 20, "test": 20}, seed=2, extra_feature=True)
    assert spec2["spec_hash"] != summary0["spec_hash"]
    assert _run(other, tmp_path / "day2", "--init-from", str(run0)) == 3
    err = capsys.readouterr().err
    assert f"--init-from {run0} was trained on spec hash {summary0['spec_hash']}" in err
    assert f"have spec hash {spec2['spec_hash']}" in err
    assert not (tmp_path / "day2").exists()


@pytest.mark.slow
def test_a_warm_start_with_another_model_or_other_params_is_refused(samples, earlier_run, tmp_path, capsys):
    path, _ = samples
    run0, _ = earlier_run
    assert _run(path, tmp_path / "day2", "--init-from", str(run0), "--set", "params.embedding_dim=4") == 3
    err = capsys.readouterr().err
    assert f"--init-from {run0} was trained with params" in err and "differ in: embedding_dim 8 (now 4)" in err
    assert _run(path, tmp_path / "day2", "--init-from", str(run0), model="deepfm") == 3
    assert f"--init-from {run0} holds checkpoints of model '{MODEL}', not 'deepfm'" in capsys.readouterr().err
    assert not (tmp_path / "day2").exists()


@pytest.mark.slow
def test_what_is_not_a_finished_run_is_refused(samples, earlier_run, tmp_path, capsys):
    path, _ = samples
    run0, _ = earlier_run
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run0, unfinished)
    (unfinished / "run.json").unlink()  # as a run that crashed before its end leaves it
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("not a run")
    for source, says in (
        (unfinished, "is not a finished run"),
        (stranger, "is not a run of jobs.train"),
        (tmp_path / "absent", "no such directory"),
    ):
        assert _run(path, tmp_path / "day2", "--init-from", str(source)) == 2
        assert says in capsys.readouterr().err
        assert not (tmp_path / "day2").exists()


@pytest.mark.slow
def test_a_warm_start_into_an_existing_run_is_refused(samples, earlier_run, tmp_path, capsys):
    path, _ = samples
    run0, _ = earlier_run
    existing = tmp_path / "existing"
    shutil.copytree(run0, existing)
    before = (existing / "run.json").read_bytes()
    assert _run(path, existing, "--init-from", str(run0)) == 2
    err = capsys.readouterr().err
    assert f"{existing} already holds a run" in err and "rerun without --init-from" in err
    assert (existing / "run.json").read_bytes() == before


@pytest.mark.slow
def test_a_warm_started_run_is_resumed_without_init_from(samples, earlier_run, tmp_path, capsys):
    path, _ = samples
    run0, summary0 = earlier_run
    run = tmp_path / "day2"
    crash = ["--epochs", "2", "--set", "debug.crash_after_epoch=1"]
    assert _run(path, run, *crash, "--init-from", str(run0)) == 4
    assert _run(path, run, "--epochs", "2", "--init-from", str(run0)) == 2  # resuming is not warm-starting
    assert "already holds a run" in capsys.readouterr().err
    # dead before its first checkpoint: the rerun starts from RUN0's weights again, as _RUN.json says
    shutil.rmtree(run / "checkpoints")
    assert _run(path, run, *crash) == 4
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 1 and state["init_from"]["run"] == str(run0)
    assert _run(path, run, "--epochs", "2") == 0
    summary = _summary(run)
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_completed"] == 2
    assert summary["init_from"]["run"] == str(run0)
    assert summary["initial_valid"]["auc"] == pytest.approx(summary0["metrics"]["valid"]["auc"], abs=1e-6)


def _other_model_weights(spec: dict, params: dict, path) -> None:
    """A whole weights file, but of the model with other embedding sizes: not RUN0's model's weights."""
    model = build_model(MODEL, spec, {**params, "embedding_dim": 4})
    compile_model(model)
    build_optimizers(model)
    model.save_weights(str(path))


def _spoil_weights(run0, how: str, spec: dict, params: dict) -> str:
    """Spoil the weights file a warm start from run0 reads; its path relative to run0."""
    best = run0 / "checkpoints" / "best.weights.h5"
    whole = best.read_bytes()
    if how == "truncated":
        best.write_bytes(whole[: len(whole) // 2])
    elif how == "short of its last bytes":
        best.write_bytes(whole[:-64])
    elif how == "empty":
        best.write_bytes(b"")
    elif how == "garbage bytes":
        best.write_bytes(bytes(range(256)) * 64)
    elif how == "another model's weights":
        _other_model_weights(spec, params, best)
    elif how == "no best, its last epoch's truncated":  # without a best file, the last epoch's is read
        best.unlink()
        last = run0 / "checkpoints" / json.loads((run0 / "checkpoints" / "state.json").read_text())["weights"]
        last.write_bytes(last.read_bytes()[:1000])
        return f"checkpoints/{last.name}"
    return "checkpoints/best.weights.h5"


SPOILED = [
    "truncated",
    "short of its last bytes",
    "empty",
    "garbage bytes",
    "another model's weights",
    "no best, its last epoch's truncated",
]


@pytest.mark.slow
@pytest.mark.parametrize("how", SPOILED)
def test_a_run0_whose_weights_cannot_be_read_is_refused_before_run_is_created(
    how, samples, earlier_run, tmp_path, capsys
):
    path, spec = samples
    run0, summary0 = earlier_run
    bad = tmp_path / "bad_run0"
    shutil.copytree(run0, bad)
    weights = _spoil_weights(bad, how, spec, summary0["params"])
    run = tmp_path / "day2"
    assert _run(path, run, "--epochs", "1", "--init-from", str(bad)) == 2
    err = capsys.readouterr().err
    assert f"error: --init-from {bad}: its weights file {bad}/{weights} cannot be read" in err
    assert "Traceback" not in err
    assert not run.exists()  # nothing created: the same command with a good RUN0 runs
    if how == "truncated":
        assert _run(path, run, "--epochs", "1", "--init-from", str(run0)) == 0
        assert _summary(run)["init_from"]["run"] == str(run0)


@pytest.mark.slow
def test_a_run0_whose_weights_cannot_be_read_leaves_an_empty_run_folder_empty(samples, earlier_run, tmp_path, capsys):
    path, spec = samples
    run0, summary0 = earlier_run
    bad = tmp_path / "bad_run0"
    shutil.copytree(run0, bad)
    _spoil_weights(bad, "truncated", spec, summary0["params"])
    run = tmp_path / "day2"
    run.mkdir()
    assert _run(path, run, "--epochs", "1", "--init-from", str(bad)) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert list(run.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "state_change,says",
    [
        ({"weights": 5}, "its weights file is 5, not a file name in checkpoints/"),
        (
            {"weights": "../../elsewhere.weights.h5"},
            "its weights file is '../../elsewhere.weights.h5', not a file name",
        ),
        ({"epoch": "two"}, "its epoch is 'two', not an integer"),
        ({"early_stopping": [1]}, "its early_stopping is [1]"),
        ({"early_stopping": {"best_epoch": "1"}}, "its early_stopping is {'best_epoch': '1'}"),
        ({"params": None}, "its params are None, not an object"),
    ],
)
def test_a_run0_whose_checkpoint_state_is_malformed_is_refused_naming_it(
    state_change, says, samples, earlier_run, tmp_path, capsys
):
    path, _ = samples
    run0, _ = earlier_run
    bad = tmp_path / "bad_run0"
    shutil.copytree(run0, bad)
    state_file = bad / "checkpoints" / "state.json"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), **state_change}))
    run = tmp_path / "day2"
    assert _run(path, run, "--epochs", "1", "--init-from", str(bad)) == 2
    err = capsys.readouterr().err
    assert f"error: --init-from {bad}: {state_file}: {says}" in err
    assert not run.exists()


@pytest.mark.slow
def test_a_run0_whose_final_metrics_are_malformed_still_warm_starts(samples, earlier_run, tmp_path):
    """run.json's metrics are only logged: a value that is no number is left out of the log line."""
    path, _ = samples
    run0, _ = earlier_run
    odd = tmp_path / "odd_run0"
    shutil.copytree(run0, odd)
    summary = json.loads((odd / "run.json").read_text())
    (odd / "run.json").write_text(json.dumps({**summary, "metrics": {"valid": {"auc": "high"}}}))
    assert _run(path, tmp_path / "day2", "--epochs", "1", "--init-from", str(odd)) == 0
