"""RUN/plots/ (pipelines/training/plots.py): the numbers behind the pictures on hand-made tables, and the
PNG files a real tiny run writes."""

import json
import struct

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.training import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature and that IHDR comes first."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR"), f"{path}: first chunk {kind!r}"
    width, height = struct.unpack(">II", data[16:24])
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82", f"{path} is cut short (no IEND chunk)"
    return width, height


def test_reliability_deciles_of_a_hand_made_table():
    # 20 rows, two per decile. Scores are given out of order (and labels with them) to check the sort;
    # the lowest decile holds 0.01 and 0.02, ..., the highest 0.91 and 0.95.
    scores = [0.95, 0.01, 0.02, 0.11, 0.12, 0.21, 0.22, 0.31, 0.32, 0.41]
    scores += [0.42, 0.51, 0.52, 0.61, 0.62, 0.71, 0.72, 0.81, 0.82, 0.91]
    labels = [1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1]
    table = plots.reliability_table(labels, scores)
    assert list(table.columns) == ["decile", "rows", "mean_score", "click_rate", "min_score", "max_score"]
    assert table["decile"].tolist() == list(range(1, 11))
    assert table["rows"].tolist() == [2] * 10
    expected_mean = [0.015, 0.115, 0.215, 0.315, 0.415, 0.515, 0.615, 0.715, 0.815, 0.93]
    np.testing.assert_allclose(table["mean_score"], expected_mean, rtol=0, atol=1e-12)
    # decile: its two rows' labels -> 1: (0.01 0, 0.02 0), 2: (0.11 0, 0.12 1), 3: (0.21 0, 0.22 0),
    # 4: (0.31 1, 0.32 0), 5: (0.41 0, 0.42 1), 6: (0.51 1, 0.52 0), 7: (0.61 1, 0.62 1),
    # 8: (0.71 1, 0.72 0), 9: (0.81 1, 0.82 1), 10: (0.91 1, 0.95 1)
    assert table["click_rate"].tolist() == [0.0, 0.5, 0.0, 0.5, 0.5, 0.5, 1.0, 0.5, 1.0, 1.0]
    assert table["min_score"].tolist() == [0.01, 0.11, 0.21, 0.31, 0.41, 0.51, 0.61, 0.71, 0.81, 0.91]
    assert table["max_score"].tolist() == [0.02, 0.12, 0.22, 0.32, 0.42, 0.52, 0.62, 0.72, 0.82, 0.95]


def test_reliability_deciles_of_unequal_sizes_and_ties():
    # 7 rows into 3 groups by rank: floor(3 r / 7) = 0 0 0 1 1 2 2; the three tied 0.5 straddle groups 2 and 3
    scores = [0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.9]
    labels = [0, 0, 1, 1, 0, 1, 1]
    table = plots.reliability_table(labels, scores, bins=3)
    assert table["rows"].tolist() == [3, 2, 2]
    np.testing.assert_allclose(table["mean_score"], [0.2, 0.5, 0.7], atol=1e-12)
    np.testing.assert_allclose(table["click_rate"], [1 / 3, 0.5, 1.0], atol=1e-12)
    assert plots.reliability_table([], []).empty


def test_roc_points_of_a_hand_made_table():
    # thresholds 0.9 (one positive), 0.6 (one positive, one negative tied), 0.3 (one negative), 0.1 (one positive)
    labels = [1, 1, 0, 0, 1]
    scores = [0.9, 0.6, 0.6, 0.3, 0.1]
    fpr, tpr = plots.roc_points(labels, scores)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1.0])
    # the area under these points (trapezoids: a tie counts one half) is the exact AUC
    from pipelines.training.metrics import auc

    assert np.trapz(tpr, fpr) == pytest.approx(auc(labels, scores))
    thinned = plots.roc_points(np.arange(10_000) % 2, np.arange(10_000) / 10_000, max_points=50)
    assert len(thinned[0]) <= 50 and thinned[0][0] == 0 and thinned[0][-1] == 1


def test_labels_and_scores_are_read_column_wise_and_bounded(tmp_path):
    n = 50_000
    rng = np.random.default_rng(0)
    path = tmp_path / "test.parquet"
    table = pa.table(
        {
            "split": pa.array(["test"] * n),
            "user_id": pa.array([f"u{k % 97}" for k in range(n)]),
            "label": pa.array(rng.integers(0, 2, n), pa.int64()),
            "score": pa.array(rng.random(n).astype(np.float32)),
        }
    )
    pq.write_table(table, path, row_group_size=4096)
    labels, scores, total = plots.read_labels_scores(str(path))
    assert total == n and labels.tolist() == table["label"].to_pylist()
    np.testing.assert_array_equal(scores, table["score"].to_numpy().astype(np.float64))
    labels, scores, total = plots.read_labels_scores(str(path), max_rows=5_000)
    assert total == n and 4_000 < labels.size < 6_000 and labels.size == scores.size


def test_the_figures_of_hand_made_outputs_are_pngs(tmp_path):
    rng = np.random.default_rng(1)
    scores = rng.random(2_000)
    labels = (rng.random(2_000) < scores).astype(int)
    rows = [("train", e, "loss", 0.7 - 0.1 * e) for e in (1, 2, 3)] + [
        ("valid", e, "loss", 0.65 - 0.05 * e) for e in (1, 2, 3)
    ]
    rows += [("train", e, "keras_auc", 0.6 + 0.1 * e) for e in (1, 2, 3)] + [("valid", 2, "auc", 0.8)]
    metrics = pd.DataFrame(rows, columns=["split", "epoch", "metric", "value"])
    written = plots.write_run_plots(
        str(tmp_path / "plots"), metrics, {"valid": (labels, scores), "test": (labels, scores)}
    )
    assert written == [plots.TRAINING_CURVES, plots.ROC, plots.RELIABILITY]
    assert png_size(tmp_path / "plots" / plots.TRAINING_CURVES) == (1000, 380)
    assert png_size(tmp_path / "plots" / plots.ROC) == (520, 500)
    assert png_size(tmp_path / "plots" / plots.RELIABILITY) == (1000, 420)
    # a run without predictions to score (empty splits) still gets its training curves
    assert plots.write_run_plots(str(tmp_path / "empty"), metrics, {"test": (np.zeros(0), np.zeros(0))}) == [
        plots.TRAINING_CURVES
    ]


@pytest.mark.slow
def test_every_run_writes_its_plots(tmp_path, capsys):
    from jobs.train import main
    from tests.test_warm_start import FAST
    from tests.tf_samples import write_samples

    samples, run = tmp_path / "samples", tmp_path / "run"
    write_samples(samples, sizes={"train": 320, "valid": 120, "test": 120}, seed=3)
    args = ["--samples", str(samples), "--model", "emb_mlp", "--output", str(run), "--epochs", "2", *FAST]
    assert main(args) == 0
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"outputs: {run} (metrics.parquet, predictions/, embeddings/, model/, plots/, run.json")
    summary = json.loads((run / "run.json").read_text())
    assert summary["outputs"]["plots"] == str(run / "plots")
    assert "plots" in summary["timings"]
    names = sorted(p.name for p in (run / "plots").iterdir())
    assert names == sorted([plots.TRAINING_CURVES, plots.ROC, plots.RELIABILITY])
    for name, size in ((plots.TRAINING_CURVES, (1000, 380)), (plots.ROC, (520, 500)), (plots.RELIABILITY, (1000, 420))):
        path = run / "plots" / name
        assert png_size(path) == size
        assert path.stat().st_size > 10_000, f"{name}: {path.stat().st_size} bytes, too small to hold the curves"
    # the reliability numbers of the run agree with its predictions
    test = pd.read_parquet(run / "predictions" / "test.parquet")
    table = plots.reliability_table(test["label"], test["score"])
    assert table["rows"].sum() == len(test) == summary["num_examples"]["test"]
    assert (table["rows"] >= len(test) // 10).all()
