"""notebooks/inspect_run.ipynb, executed by papermill on the outputs of a real, tiny flow: a synthetic world,
build_samples, two training runs. Any cell's error fails the test. The same outputs also check what the
notebook reads that jobs.train decodes from the samples: the predictions' position, the items' genres."""

import json
from pathlib import Path

import pandas as pd
import pytest

from jobs.train import main as train
from pipelines.config import load_config
from pipelines.samples.build_samples import build_samples
from sources.synthetic import generate
from tests.test_warm_start import FAST

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "inspect_run.ipynb"
WORLD = {"users": 60, "items": 40, "days": 8, "impressions": 3_000, "seed": 5}
MODELS = ("emb_mlp", "deepfm")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flow(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("notebook")
    raw, samples = root / "raw", root / "samples"
    generate(str(raw), **WORLD)
    build_samples(spark, str(raw), str(samples), load_config("build_samples", None, ["spark.output_partitions=1"]))
    runs = []
    for model in MODELS:
        run = root / "runs" / model
        args = ["--samples", str(samples), "--model", model, "--output", str(run), "--epochs", "1", *FAST]
        assert train(args) == 0
        runs.append(run)
    return raw, samples, runs


def test_the_notebook_runs_on_fresh_outputs(flow, tmp_path):
    import papermill

    _, samples, runs = flow
    executed = tmp_path / "executed.ipynb"
    # papermill raises PapermillExecutionError, naming the cell, when any cell fails
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(executed),
        parameters={"samples": str(samples), "runs": [str(r) for r in runs], "neighbours": 5},
        kernel_name="python3",
        cwd=str(ROOT / "notebooks"),
        progress_bar=False,
    )
    cells = json.loads(executed.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not any(o.get("output_type") == "error" for o in c.get("outputs", [])) for c in code)
    text = "\n".join(
        "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
        for c in code
        for o in c.get("outputs", [])
    )
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", []))
    # the comparison, 2 x training curves, ROC, 2 x reliability
    assert images == 1 + len(MODELS) + 1 + len(MODELS)
    assert "emb_mlp" in text and "deepfm" in text and "0 (new)" in text and "rows read" in text
    chosen = [line for line in text.splitlines() if line.startswith("item ")]
    assert len(chosen) == 1 and ": genres " in chosen[0] and "(not in train)" not in chosen[0], chosen
    # the committed notebook carries no outputs
    committed = json.loads(NOTEBOOK.read_text())
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in committed["cells"] if "outputs" in c)
    assert committed["cells"][1]["metadata"]["tags"] == ["parameters"]


def test_predictions_carry_the_impressions_position(flow):
    raw, _, runs = flow
    predictions = pd.read_parquet(runs[0] / "predictions" / "test.parquet")
    impressions = pd.read_parquet(raw / "impressions", columns=["user_id", "item_id", "ts", "position"])
    impressions["ts"] = impressions["ts"].astype("int64")
    joined = predictions.merge(impressions, on=["user_id", "item_id", "ts"], suffixes=("", "_raw"), validate="1:1")
    assert len(joined) == len(predictions) > 0
    assert joined["position"].notna().all()
    assert (joined["position"].astype("int64") == joined["position_raw"].astype("int64")).all()


def test_item_embeddings_carry_the_items_genres(flow):
    raw, samples, runs = flow
    items = pd.read_parquet(runs[0] / "embeddings" / "item_id.parquet")
    catalog = pd.read_parquet(raw / "items", columns=["item_id", "genres"])
    genres = dict(zip(catalog["item_id"], catalog["genres"].str.split("|")))
    vocab = pd.read_parquet(samples / "vocab" / "item_id")
    assert set(items.loc[items["index"] >= 2, "token"]) == set(vocab["token"])
    for token, listed in zip(items["token"], items["genres"]):
        if token in ("<PAD>", "<OOV>"):
            assert listed is None
            continue
        assert list(listed) == genres[token][:4], token  # items.max_genres: 4, in the catalog's order
