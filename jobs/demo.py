"""The whole flow on the embedded synthetic data: generate, build samples, train, report.

    python -m jobs.demo [--workdir data] [--model deepfm] [--epochs N] [--impressions N] [--force]

Runs the same commands a user would run, one process each, and prints them:

    python -m jobs.generate_synthetic --output WORKDIR/raw ...
    python -m jobs.build_samples --input WORKDIR/raw --output WORKDIR/samples
    python -m jobs.train --samples WORKDIR/samples --model MODEL --output WORKDIR/runs/MODEL

Steps whose output already exists (RAW with data, SAMPLES with _SUCCESS) are skipped
unless --force. At the end it prints the test metrics and, because the synthetic
impressions carry their true click probability, the AUC that `p_click` itself
reaches on the same test rows: the best any model can do.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

if not __package__:  # run as a script: python jobs/demo.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="data", help="where raw/, samples/ and runs/ go (default: data)")
    # The names are jobs.train's choices (models.registry); importing it here would load TensorFlow.
    parser.add_argument(
        "--model",
        default=None,
        help="a model name, as `python -m jobs.train --help` lists them (default: conf/train.yaml `model`)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: conf/train.yaml)")
    parser.add_argument(
        "--impressions", type=int, default=None, help="synthetic impressions (default: the generator's default)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--force", action="store_true", help="regenerate and rebuild even when outputs exist")
    return parser.parse_args(argv)


def _run(step: str, args: list[str]) -> float:
    command = [sys.executable, "-m", *args]
    print(f"\n=== {step}: {shlex.join(['python', '-m', *args])}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"{step} failed with exit code {result.returncode}; see its log above")
    return time.perf_counter() - start


def oracle_auc(run_dir: str) -> float | None:
    """AUC of the true click probability on the run's test predictions (None without p_click)."""
    import pandas as pd

    from pipelines.training.metrics import auc

    path = os.path.join(run_dir, "predictions", "test.parquet")
    if not os.path.exists(path):
        return None
    frame = pd.read_parquet(path)
    if "p_click" not in frame.columns or frame["p_click"].isna().any():
        return None
    return auc(frame["label"].to_numpy(), frame["p_click"].to_numpy())


def main(argv=None) -> int:
    args = parse_args(argv)
    from pipelines.config import ConfigError, load_job_config, print_config_error

    try:  # conf/*.yaml validated before the first step, not after minutes of work
        load_job_config("build_samples")
        model = args.model or load_job_config("train").model
    except ConfigError as exc:
        print_config_error(exc)
        return 2
    workdir = os.path.abspath(args.workdir)
    raw, samples = os.path.join(workdir, "raw"), os.path.join(workdir, "samples")
    seconds = {}

    if args.force or not os.path.isdir(os.path.join(raw, "impressions")):
        gen = ["jobs.generate_synthetic", "--output", raw, "--seed", str(args.seed)]
        if args.impressions:
            gen += ["--impressions", str(args.impressions)]
        seconds["generate"] = _run("generate", gen)
    else:
        print(f"\n=== generate: {raw} exists, skipped (--force to regenerate)")

    if args.force or not os.path.exists(os.path.join(samples, "_SUCCESS")):
        seconds["build_samples"] = _run("build_samples", ["jobs.build_samples", "--input", raw, "--output", samples])
    else:
        print(f"\n=== build_samples: {samples} exists, skipped (--force to rebuild)")

    run_dir = os.path.join(workdir, "runs", model)
    train = ["jobs.train", "--samples", samples, "--model", model, "--output", run_dir]
    if args.epochs:
        train += ["--epochs", str(args.epochs)]
    if args.force:
        train += ["--set", "resume=false"]
    seconds["train"] = _run("train", train)

    with open(os.path.join(run_dir, "run.json")) as fh:
        summary = json.load(fh)
    test = summary["metrics"]["test"]
    oracle = oracle_auc(run_dir)
    print(f"\n=== done: {model}, best epoch {summary['best_epoch']}")
    print("test   " + "  ".join(f"{k} {v:.4f}" for k, v in test.items() if v is not None))
    if oracle is not None and test.get("auc") is not None:
        print(
            f"true p_click AUC on the same test rows {oracle:.4f}; the model reaches {test['auc'] / oracle:.3f} of it"
        )
    print("seconds " + "  ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    print(f"written: samples {samples}")
    for name, path in summary["outputs"].items():
        print(f"         {name:<16} {path}")
    print(f"open them with pandas.read_parquet, e.g. pd.read_parquet('{os.path.join(run_dir, 'metrics.parquet')}'),")
    print("or in the notebook notebooks/inspect_run.ipynb: `make notebook` (README, Looking at the outputs)")
    print(f"outputs: {workdir} (raw/, samples/, runs/{model}/; pictures in runs/{model}/plots/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
