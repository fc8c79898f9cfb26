"""jobs.compare: the final metrics of several runs in one table (Parquet, PNG, printed), and its refusals."""

import json

import pandas as pd
import pytest

from jobs.compare import MARKER, PICTURE, TABLE, main, run_names
from tests.test_plots import png_size

COLUMNS = [
    "run",
    "path",
    "model",
    "run_id",
    "best_epoch",
    "split",
    "rows",
    "auc",
    "gauc",
    "pr_auc",
    "logloss",
    "calibration",
    "spec_hash",
]


def fake_run(path, spec_hash="a" * 64, auc=0.75, model="emb_mlp"):
    """A folder with only the run.json fields jobs.compare reads."""
    path.mkdir(parents=True)
    metrics = {"auc": auc, "logloss": 0.5, "gauc": None, "pr_auc": 0.4, "calibration": 1.02}
    summary = {
        "run_id": path.name,
        "model": model,
        "spec_hash": spec_hash,
        "best_epoch": 2,
        "num_examples": {"valid": 100, "test": 120},
        "metrics": {"valid": {**metrics, "auc": auc - 0.01}, "test": metrics},
    }
    (path / "run.json").write_text(json.dumps(summary))
    return path


def test_two_runs_side_by_side(tmp_path, capsys):
    a, b = fake_run(tmp_path / "a", auc=0.75), fake_run(tmp_path / "b", auc=0.8, model="deepfm")
    out = tmp_path / "cmp"
    assert main([str(a), str(b), "--output", str(out)]) == 0
    table = pd.read_parquet(out / TABLE)
    assert list(table.columns) == COLUMNS
    assert table["run"].tolist() == ["a", "b"] and table["model"].tolist() == ["emb_mlp", "deepfm"]
    assert table["auc"].tolist() == [0.75, 0.8] and table["rows"].tolist() == [120, 120]
    assert table["gauc"].isna().all()  # undefined in run.json (null): NaN, shown as "-"
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, PICTURE, TABLE])
    assert png_size(out / PICTURE)[0] > 400
    captured = capsys.readouterr()
    assert "final test metrics" in captured.out and "0.8000" in captured.out and "deepfm" in captured.out
    assert captured.err.strip().splitlines()[-1] == f"outputs: {out} ({TABLE}, {PICTURE})"
    # --split valid; a rerun replaces the earlier comparison
    assert main([str(a), str(b), "--output", str(out), "--split", "valid"]) == 0
    assert pd.read_parquet(out / TABLE)["auc"].round(4).tolist() == [0.74, 0.79]


def test_runs_are_named_by_the_shortest_tails_that_differ():
    assert run_names(["/d/runs/a", "/d/runs/b"]) == ["a", "b"]
    assert run_names(["/d/runs/a", "/d/runs_v2/a", "/d/runs/b"]) == ["runs/a", "runs_v2/a", "runs/b"]
    assert run_names(["/x/runs/a", "/y/runs/a"]) == ["x/runs/a", "y/runs/a"]
    assert run_names(["s3://b/runs/a", "/b/runs/a"]) == ["s3://b/runs/a", "/b/runs/a"]


def test_refusals_touch_nothing(tmp_path, capsys):
    a, b = fake_run(tmp_path / "a"), fake_run(tmp_path / "b", spec_hash="b" * 64)
    out = tmp_path / "cmp"
    assert main([str(a), str(b), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the runs were trained on samples of different spec hashes")
    assert f"{a}: {'a' * 64}" in err and f"{b}: {'b' * 64}" in err and "--allow-different-samples" in err
    assert not out.exists()

    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    assert main([str(a), str(not_a_run), "--output", str(out)]) == 2
    assert "has no run.json: not a finished run" in capsys.readouterr().err
    assert main([str(a), str(a), "--output", str(out)]) == 2
    assert "given more than once" in capsys.readouterr().err

    # an output holding something else, or inside a run, is never written
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    c = fake_run(tmp_path / "c")
    for target in (foreign, a / "cmp"):
        assert main([str(a), str(c), "--output", str(target)]) == 2
        assert capsys.readouterr().err.startswith("error: output ")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert not (a / "cmp").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c", "empty", "foreign"]


@pytest.mark.slow
def test_real_runs_and_different_samples(tmp_path, capsys):
    from jobs.train import main as train
    from tests.test_warm_start import FAST
    from tests.tf_samples import write_samples

    samples, other = tmp_path / "samples", tmp_path / "samples_v2"
    sizes = {"train": 320, "valid": 120, "test": 120}
    spec, _ = write_samples(samples, sizes=sizes, seed=3)
    spec2, _ = write_samples(other, sizes=sizes, seed=3, extra_feature=True)
    runs = {
        "emb_mlp": (samples, tmp_path / "runs" / "emb_mlp"),
        "deepfm": (samples, tmp_path / "runs" / "deepfm"),
        "emb_mlp_v2": (other, tmp_path / "runs_v2" / "emb_mlp"),
    }
    for name, (data, run) in runs.items():
        model = name.split("_v2")[0]
        assert train(["--samples", str(data), "--model", model, "--output", str(run), "--epochs", "1", *FAST]) == 0
    capsys.readouterr()
    same = [str(runs["emb_mlp"][1]), str(runs["deepfm"][1])]
    out = tmp_path / "cmp"
    assert main([*same, "--output", str(out)]) == 0
    table = pd.read_parquet(out / TABLE)
    for row in table.itertuples():
        summary = json.loads((tmp_path / "runs" / row.model / "run.json").read_text())
        assert row.spec_hash == spec["spec_hash"] and row.rows == 120 and row.best_epoch == 1
        for metric in ("auc", "gauc", "pr_auc", "logloss", "calibration"):
            assert getattr(row, metric) == summary["metrics"]["test"][metric], metric
    assert table["run"].tolist() == ["emb_mlp", "deepfm"]

    mixed = [*same, str(runs["emb_mlp_v2"][1])]
    assert main([*mixed, "--output", str(tmp_path / "mixed")]) == 2
    assert spec2["spec_hash"] in capsys.readouterr().err and not (tmp_path / "mixed").exists()
    assert main([*mixed, "--output", str(tmp_path / "mixed"), "--allow-different-samples"]) == 0
    table = pd.read_parquet(tmp_path / "mixed" / TABLE)
    # folder names repeat (runs/emb_mlp, runs_v2/emb_mlp): the runs are named by their last two components
    assert table["run"].tolist() == ["runs/emb_mlp", "runs/deepfm", "runs_v2/emb_mlp"]
    assert table["spec_hash"].tolist() == [spec["spec_hash"]] * 2 + [spec2["spec_hash"]]
    assert "different spec hashes" in capsys.readouterr().out
