"""RUN/model's `serving_raw` scores the raw values of every test sample exactly as training scored the samples,
for all seven models, on a world with item vectors, churn (users and items the fit never saw), hashed OOV
buckets, and empty histories; checked in a fresh process with plain TensorFlow (tests/serving_check.py).

The demo world's seven runs get the same check in tests/test_end_to_end.py."""

from __future__ import annotations

import json
import os
import re

import pandas as pd
import pytest

from feature_spec import load_spec, model_inputs, vocabulary_tokens
from jobs.train import main as train_main
from models import MODEL_NAMES
from pipelines.config import load_config
from pipelines.samples.build_samples import build_samples
from sources.click_model import Churn
from sources.synthetic import generate
from tests import serving_check

pytestmark = pytest.mark.slow

WORLD = {"users": 80, "items": 60, "days": 12, "impressions": 24_000, "seed": 11, "item_vector_dim": 3}
CHURN = Churn(new_items_per_day=6, new_users_per_day=8, item_lifetime_days=8.0)
BUILD_SETS = [
    "spark.output_partitions=2",
    "output.raw_values=true",
    "vocab.min_count=3",  # rare ids of the train split are out of vocabulary too
    "vocab.oov_buckets={user_id: 5, item_id: 17}",  # hashed buckets: the TensorFlow hash must be Spark's
    "items.vector_columns=[item_vec]",
]
EVAL_BATCH = 128
TRAIN_SETS = [
    "--epochs",
    "1",
    "--set",
    "verbose=0",
    "--set",
    "outputs.embeddings=false",
    "--set",
    "batch_size=256",
    "--set",
    f"eval_batch_size={EVAL_BATCH}",
]


@pytest.fixture(scope="module")
def samples(spark, tmp_path_factory):
    raw = str(tmp_path_factory.mktemp("serving") / "raw")
    generate(raw, **WORLD, churn=CHURN)
    out = str(tmp_path_factory.mktemp("serving") / "samples")
    build_samples(spark, raw, out, load_config("build_samples", None, BUILD_SETS))
    return out


@pytest.fixture(scope="module")
def runs(samples, tmp_path_factory):
    out = {}
    for name in MODEL_NAMES:
        run = str(tmp_path_factory.mktemp("serving") / name)
        assert train_main(["--samples", samples, "--model", name, "--output", run, *TRAIN_SETS]) == 0
        out[name] = run
    return out


@pytest.fixture(scope="module")
def served(samples, runs, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("served") / "served.parquet")
    return out, serving_check.served_scores(samples, runs, out, EVAL_BATCH)


def test_the_raw_values_hold_what_the_check_must_cover(samples):
    spec = load_spec(samples)
    raw = pd.read_parquet(os.path.join(samples, "raw_values", "test"))
    known = {
        name: set(vocabulary_tokens(samples, spec, name, spec["vocabularies"][name]["size"]))
        for name in ("user_id", "item_id")
    }
    clicked = raw["hist_click_items"].map(list)
    assert len(raw) == spec["splits"]["test"]["num_examples"]
    assert (~raw["user_id"].isin(known["user_id"])).sum() > 0  # unseen users, through their hashed buckets
    assert (~raw["item_id"].isin(known["item_id"])).sum() > 0
    assert clicked.map(lambda ids: any(i not in known["item_id"] for i in ids)).sum() > 0
    assert (clicked.map(len) == 0).sum() > 0 and (raw["hist_skip_items"].map(len) == 0).sum() > 0
    assert raw["user_item_vec"].isna().sum() > 0  # users without a clicked item vector
    assert (clicked.map(len) == raw["hist_click_len"]).all()
    inputs = {e["name"] for e in model_inputs(spec)}
    assert {"item_vec", "user_item_vec", "item_ctr_bucket", "position_idx"} <= inputs


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_serving_raw_scores_the_raw_values_as_training_scored_the_samples(served, runs, name):
    # The same rows in the same batches as the run scored them: the same float32 computation, bit for bit.
    assert serving_check.differences(served[1], {name: runs[name]}) == {name: 0.0}
    with open(os.path.join(runs[name], "run.json")) as fh:
        assert json.load(fh)["model_signatures"] == ["serving_default", "serving_raw"]


def test_a_rest_request_body_of_one_impression_scores_as_its_prediction(served, runs):
    out, scores = served
    name = "deepfm"
    request = serving_check.request(out, name)
    instance = request["body"]["instances"][0]
    assert request["body"]["signature_name"] == "serving_raw"
    row = scores.iloc[request["row"]]
    assert (instance["user_id"], instance["item_id"]) == (row["user_id"], row["item_id"])
    # One row alone is another batch shape than the run's batches of 128: equal up to float32 rounding.
    assert request["score"] == pytest.approx(row[name], abs=1e-6)


def _docs_request() -> dict:
    path = os.path.join(os.path.dirname(__file__), "..", "docs", "serving.md")
    with open(path) as fh:
        text = fh.read()
    return json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))


def test_the_request_body_in_docs_serving_is_a_test_row_of_this_world(samples, served):
    out, _ = served
    documented = _docs_request()["instances"][0]
    written = serving_check.request(out, "deepfm")["body"]["instances"][0]
    assert set(documented) == set(written)  # every input of the signature, no other
    raw = pd.read_parquet(os.path.join(samples, "raw_values", "test"))
    row = raw[(raw["user_id"] == documented["user_id"]) & (raw["item_id"] == documented["item_id"])]
    matches = [
        r
        for r in row.to_dict("records")
        if all(
            (list(r[k]) if hasattr(r[k], "__len__") and not isinstance(r[k], str) else r[k]) == v
            for k, v in documented.items()
        )
    ]
    assert len(matches) == 1, "docs/serving.md's body is no longer a test row: paste the one this test writes"
