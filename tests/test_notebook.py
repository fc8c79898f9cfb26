"""notebooks/inspect_run.ipynb, executed by papermill on the outputs of a real, tiny flow: a synthetic world,
build_samples, two training runs. Any cell's error fails the test. The same outputs also check what the
notebook reads that jobs.train decodes from the samples: the predictions' position, the items' genres.

The notebook's own papermill command (`-p runs '[...]'`, a string) is run as written, on the command line; a
date-partitioned SAMPLES (a spec fitted on two days, four days built with it) is inspected through runs over
its days, whose train activity the notebook reads from the days or says it does not know."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import feature_spec
from jobs.train import main as train
from pipelines.config import load_config
from pipelines.samples.build_samples import build_samples
from sources.synthetic import generate
from tests.daily_world import D
from tests.samples_io import read_split
from tests.test_train_dates import _dates
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


def _outputs(code_cells) -> str:
    """The printed and displayed text of these executed code cells."""
    return "\n".join(
        "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
        for c in code_cells
        for o in c.get("outputs", [])
    )


def _execute(executed: Path, **parameters) -> list:
    """The code cells of the notebook executed with these parameters (any cell's error raises)."""
    import papermill

    # papermill raises PapermillExecutionError, naming the cell, when any cell fails
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(executed),
        parameters=parameters,
        kernel_name="python3",
        cwd=str(ROOT / "notebooks"),
        progress_bar=False,
    )
    code = [c for c in json.loads(executed.read_text())["cells"] if c["cell_type"] == "code"]
    assert all(not any(o.get("output_type") == "error" for o in c.get("outputs", [])) for c in code)
    return code


def test_the_notebook_runs_on_fresh_outputs(flow, tmp_path):
    _, samples, runs = flow
    code = _execute(tmp_path / "executed.ipynb", samples=str(samples), runs=[str(r) for r in runs], neighbours=5)
    text = _outputs(code)
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


# ---------------------------------------------------------------- the documented command, as written


def _documented_commands() -> list[str]:
    """Every papermill command line the notebook's text, the README and docs/ give for the notebook."""
    texts = ["".join(c["source"]) for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "markdown"]
    texts += [path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]]
    pattern = re.compile(r"`(papermill notebooks/inspect_run\.ipynb [^`]+)`")
    return sorted({command for text in texts for command in pattern.findall(text)})


def test_the_documented_papermill_command_runs_as_written(flow, tmp_path):
    """`papermill notebooks/inspect_run.ipynb out.ipynb -p samples data/samples -p runs '["data/runs/deepfm"]'`,
    from the repository's root, with this flow's folders for data/samples and data/runs/deepfm: `-p` passes
    `runs` as a string holding a JSON list, which names one run (not a run per character)."""
    _, samples, runs = flow
    commands = _documented_commands()
    assert commands, "no papermill command documented for notebooks/inspect_run.ipynb"
    for k, command in enumerate(commands):
        out = tmp_path / f"out{k}.ipynb"
        written = command.replace("out.ipynb", str(out))
        written = written.replace("data/samples", str(samples)).replace("data/runs/deepfm", str(runs[1]))
        argv = shlex.split(written)
        assert argv[0] == "papermill" and str(runs[1]) in written, command
        done = subprocess.run(
            [sys.executable, "-m", "papermill", *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        code = [c for c in json.loads(out.read_text())["cells"] if c["cell_type"] == "code"]
        shown = [line for line in _outputs(code).splitlines() if line.startswith("run: ")]
        assert [line.split("  ")[0] for line in shown] == [f"run: {runs[1]}"], shown


# ---------------------------------------------------------------- a date-partitioned SAMPLES

BUCKETS = {"0 (new)": (0, 0), "1-4": (1, 4), "5-19": (5, 19), "20-99": (20, 99), "100+": (100, None)}


@pytest.fixture(scope="module")
def dated(four_days, tmp_path_factory):
    """The daily world of tests/daily_world.py (a spec fitted on days 1-2, days 1..4 built with it into a
    date-partitioned SAMPLES); a run trained on the fit's days (1-2) and one trained on day 2 only, both
    validated on day 3 and tested on day 4."""
    root = tmp_path_factory.mktemp("notebook_dated")
    samples = four_days["samples"]
    runs = {}
    for name, train_days in (("fit_days", "2026-01-01..2026-01-02"), ("day_two", "2026-01-02")):
        run = root / "runs" / name
        args = ["--samples", samples, "--model", "emb_mlp", "--output", str(run), "--epochs", "1", *FAST]
        assert train([*args, *_dates(train_days, "2026-01-03", "2026-01-04")]) == 0
        runs[name] = run
    train_rows = pd.concat([read_split(feature_spec.day_folder(samples, day), "samples") for day in D[:2]])
    return samples, runs, train_rows


def _activity_rows(text: str) -> dict:
    """{bucket: rows} of the first run in the AUC-by-activity table (its first column)."""
    pattern = re.compile(r"^(" + "|".join(re.escape(bucket) for bucket in BUCKETS) + r")\s+(\d+)\s")
    found = [pattern.match(line) for line in text.splitlines()]
    return {match.group(1): int(match.group(2)) for match in found if match}


def test_the_notebook_reads_train_activity_from_the_days_or_says_it_is_unknown(dated, tmp_path):
    """The days' vocab/ count the impressions of the days the spec was fitted on: a run trained on those very
    days gets its users' and items' train impressions from them; a run trained on other days gets a plain
    "unknown", never a count of 0 for every item."""
    samples, runs, train_rows = dated
    users = train_rows["user_id"].astype(str).value_counts()
    items = train_rows["item_id"].astype(str).value_counts()
    code = _execute(
        tmp_path / "executed.ipynb",
        samples=str(samples),
        runs=[str(runs["fit_days"]), str(runs["day_two"])],
        neighbours=5,
    )
    text = _outputs(code)
    # the nearest items of the first run (trained on the fit's days): each item's impressions in days 1-2
    chosen = [line for line in text.splitlines() if line.startswith("item ")]
    assert len(chosen) == 1, chosen
    item = chosen[0].split(":")[0].removeprefix("item ")
    assert chosen[0].endswith(f", {items[item]:,} train impressions"), (chosen, items[item])
    assert items[item] > 0
    # AUC by activity of the first run: each test row's user counted in days 1-2
    test = pd.read_parquet(runs["fit_days"] / "predictions" / "test.parquet", columns=["user_id"])
    activity = test["user_id"].astype(str).map(users).fillna(0)
    expected = {
        bucket: int(((activity >= low) & (activity <= (high if high is not None else float("inf")))).sum())
        for bucket, (low, high) in BUCKETS.items()
    }
    assert _activity_rows(text) == {bucket: n for bucket, n in expected.items() if n}
    # the drift over the days, from their report.json
    assert "drift over 4 days" in text, text
    # the second run (day 2 only): its train activity is unknown, and said so
    assert "day_two: each user's impressions in the train days 2026-01-02 are unknown" in text, text

    # the second run alone, named by one path (not a list): its nearest items say the counts are unknown
    code = _execute(tmp_path / "alone.ipynb", samples=str(samples), runs=str(runs["day_two"]), neighbours=5)
    text = _outputs(code)
    chosen = [line for line in text.splitlines() if line.startswith("item ")]
    assert len(chosen) == 1 and "train impressions unknown" in chosen[0], chosen
    assert "0 train impressions" not in text and "train_impressions" not in text
