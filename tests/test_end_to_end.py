"""The whole flow on synthetic data: generate -> build_samples -> train every model.

The synthetic impressions carry their true click probability `p_click`, so the AUC that
`p_click` reaches on the test rows is the best any model can do. Every model must reach
MIN_RATIO_EVERY of it and the best model MIN_RATIO_BEST (figures recorded in the README).
The world is small in users and items but rich in impressions per user, so that the
interactions the click model hides (user x item factors, genre affinity, recent clicks)
are learnable in a CI-sized run.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from jobs.train import main as train_main
from models import MODEL_NAMES
from pipelines.build_samples import build_samples
from pipelines.config import load_config
from pipelines.metrics import auc
from sources.synthetic import generate

WORLD = {"users": 100, "items": 100, "days": 28, "impressions": 300_000, "seed": 3}
# The click model's recent-click term is an average of the last few clicked items with weights
# 0.3, 0.21, 0.15, ...: a 5-long history is what a mean-pooled sequence can match best.
BUILD_SETS = ["spark.output_partitions=2", "history.max_len=5"]
EPOCHS = 10
MIN_RATIO_EVERY, MIN_RATIO_BEST = 0.93, 0.97
TRAIN_SETS = ["--set", "verbose=0", "--set", "outputs.embeddings=false", "--set", "batch_size=1024",
              "--set", "params.learning_rate=0.003", "--set", "params.hidden_units=[64,32]",
              "--set", "params.dropout=0.2", "--set", "params.deep_optimizer=adam"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def samples(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    generate(str(base / "raw"), **WORLD)
    out = str(base / "samples")
    build_samples(spark, str(base / "raw"), out, load_config("build_samples", None, BUILD_SETS))
    return out


@pytest.fixture(scope="module")
def test_aucs(samples, tmp_path_factory):
    """model -> (model's test AUC, true p_click AUC on the same rows)."""
    out = {}
    for name in MODEL_NAMES:
        run = tmp_path_factory.mktemp(f"run_{name}")
        assert train_main(["--samples", samples, "--model", name, "--output", str(run),
                           "--epochs", str(EPOCHS), *TRAIN_SETS]) == 0
        with open(run / "run.json") as fh:
            summary = json.load(fh)
        predictions = pd.read_parquet(run / "predictions" / "test.parquet")
        oracle = auc(predictions["label"].to_numpy(), predictions["p_click"].to_numpy())
        # The run's own test AUC is the one of the predictions it wrote.
        assert summary["metrics"]["test"]["auc"] == pytest.approx(
            auc(predictions["label"].to_numpy(), predictions["score"].to_numpy()), abs=1e-9)
        out[name] = (summary["metrics"]["test"]["auc"], oracle)
    print({name: {"auc": round(a, 4), "oracle": round(o, 4), "ratio": round(a / o, 3)}
           for name, (a, o) in out.items()})
    return out


def test_every_model_reaches_most_of_the_true_probability_auc(test_aucs):
    ratios = {name: a / o for name, (a, o) in test_aucs.items()}
    assert all(r >= MIN_RATIO_EVERY for r in ratios.values()), ratios


def test_best_model_nearly_matches_the_true_probability_auc(test_aucs):
    ratios = {name: a / o for name, (a, o) in test_aucs.items()}
    assert max(ratios.values()) >= MIN_RATIO_BEST, ratios
