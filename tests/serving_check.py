"""Test helper: score SAMPLES/raw_values/test/ through each run's `serving_raw` in a fresh process with plain
TensorFlow (tests/fixtures/score_raw_values.py, run with `python -I`: none of our code is importable), and
compare with the scores each run wrote to predictions/test.parquet."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd

SCORER = os.path.join(os.path.dirname(__file__), "fixtures", "score_raw_values.py")
KEY = ["user_id", "item_id", "ts", "position"]


def served_scores(samples: str, runs: dict[str, str], out: str, batch_size: int) -> pd.DataFrame:
    """The scorer's output: KEY and one column of `serving_raw` scores per run name, in the order of the
    first run's predictions (all runs of one SAMPLES write their test predictions in the same order)."""
    first = next(iter(runs.values()))
    models = [f"{name}={os.path.join(run, 'model')}" for name, run in runs.items()]
    subprocess.run(
        [
            sys.executable,
            "-I",
            SCORER,
            out,
            os.path.join(samples, "raw_values", "test"),
            os.path.join(first, "predictions", "test.parquet"),
            str(batch_size),
            *models,
        ],
        check=True,
        cwd=os.path.dirname(out),
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", ""), "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=1200,
    )
    return pd.read_parquet(out)


def differences(served: pd.DataFrame, runs: dict[str, str]) -> dict[str, float]:
    """run name -> the largest |serving_raw score - predictions/test.parquet score| over the test rows."""
    out = {}
    for name, run in runs.items():
        predictions = pd.read_parquet(os.path.join(run, "predictions", "test.parquet"))
        assert predictions[KEY].equals(served[KEY]), f"{name}: its test predictions are in another order"
        out[name] = float(np.max(np.abs(predictions["score"].to_numpy() - served[name].to_numpy()), initial=0.0))
    return out


def request(out: str, name: str) -> dict:
    """The scorer's REST body of one row for run `name`: {"row", "body", "score"}."""
    with open(f"{out}.{name}.request.json") as fh:
        return json.load(fh)
