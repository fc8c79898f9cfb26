"""Compare the final metrics of finished training runs side by side.

    python -m jobs.compare RUN [RUN ...] --output DIR [--split test] [--allow-different-samples]

Reads each RUN/run.json (the final metrics of the best epoch's weights, exact, from its predictions), prints
one table, a row per run, and writes it to DIR:

    DIR/comparison.parquet   run, path, model, run_id, best_epoch, split, rows, auc, gauc, pr_auc, logloss,
                             calibration, spec_hash (one row per RUN, in the order given)
    DIR/comparison.png       the same table as a picture, the best run of each metric in bold
                             (a run is named by its folder, or by more of its path where folders repeat)
    DIR/_COMPARE.json        the runs compared and when: marks DIR as this job's output

Runs trained on samples of different spec hashes are refused (exit code 2): their test rows or features
differ, so their metrics need not be comparable. --allow-different-samples compares them anyway (the
table's spec_hash column shows which is which). DIR is written atomically (staging, then a swap:
pipelines/publish.py) and is refused when it is, contains or lies inside a RUN, or holds anything but an
earlier comparison. No TensorFlow is loaded for local paths.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import sys
from datetime import datetime, timezone

if not __package__:  # run as a script: python jobs/compare.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MARKER = "_COMPARE.json"
TABLE, PICTURE = "comparison.parquet", "comparison.png"
METRICS = ("auc", "gauc", "pr_auc", "logloss", "calibration")
SPLITS = ("test", "valid")


class CompareRefused(ValueError):
    """The runs cannot be compared (not finished runs, different samples): exit code 2."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="finished run directories (each with run.json)")
    parser.add_argument("--output", required=True, help="where comparison.parquet and comparison.png go")
    parser.add_argument("--split", choices=SPLITS, default="test", help="whose final metrics (default: test)")
    parser.add_argument(
        "--allow-different-samples",
        action="store_true",
        help="compare runs trained on samples of different spec hashes (refused by default)",
    )
    return parser.parse_args(argv)


def read_run(path: str) -> dict:
    """RUN/run.json, or CompareRefused naming what is missing."""
    from pipelines import storage

    run_json = posixpath.join(path, "run.json")
    if not storage.isdir(path):
        raise CompareRefused(f"{path} is not a directory")
    if not storage.exists(run_json):
        raise CompareRefused(f"{path} has no run.json: not a finished run of jobs.train (rerun it to finish it)")
    try:
        return json.loads(storage.read_text(run_json))
    except ValueError as exc:
        raise CompareRefused(f"{run_json} is not valid JSON: {exc}") from None


def run_names(paths: list[str]) -> list[str]:
    """Each run's folder name, or where folder names repeat, the shortest tails of the paths that differ
    (runs/deepfm and runs_v2/deepfm; the whole paths at worst)."""
    parts = [p.rstrip("/").split("/") for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return list(paths)


def comparison_table(paths: list[str], split: str = "test", allow_different_samples: bool = False):
    """The table of the runs' final `split` metrics (a pandas DataFrame, one row per run in the given order)."""
    import pandas as pd

    if len(set(paths)) != len(paths):
        twice = sorted({p for p in paths if paths.count(p) > 1})
        raise CompareRefused(f"{', '.join(twice)} given more than once")
    runs = [read_run(p) for p in paths]
    hashes = {p: r.get("spec_hash") for p, r in zip(paths, runs)}
    if len(set(hashes.values())) > 1 and not allow_different_samples:
        listed = "; ".join(f"{p}: {h}" for p, h in hashes.items())
        raise CompareRefused(
            f"the runs were trained on samples of different spec hashes ({listed}): their {split} rows or "
            "features differ, so their metrics need not be comparable; pass --allow-different-samples to "
            "compare them anyway"
        )
    rows = []
    for path, name, run in zip(paths, run_names(paths), runs):
        metrics = (run.get("metrics") or {}).get(split)
        if metrics is None:
            raise CompareRefused(f"{path}/run.json has no final {split} metrics")
        rows.append(
            {
                "run": name,
                "path": path,
                "model": run.get("model"),
                "run_id": run.get("run_id"),
                "best_epoch": run.get("best_epoch"),
                "split": split,
                "rows": (run.get("num_examples") or {}).get(split),
                **{m: metrics.get(m) for m in METRICS},
                "spec_hash": run.get("spec_hash"),
            }
        )
    table = pd.DataFrame(rows)
    for column in ("best_epoch", "rows"):
        table[column] = table[column].astype("Int64")
    for metric in METRICS:
        table[metric] = table[metric].astype("float64")  # None (an undefined metric) -> NaN
    return table


def write_comparison(table, output: str, inputs: list[str]) -> str:
    """DIR/comparison.parquet, comparison.png and _COMPARE.json, published together; returns DIR."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines import publish, storage
    from pipelines.training import plots

    with publish.StagedOutput(output, inputs=inputs, markers=[MARKER]) as out:
        with storage.written_locally(posixpath.join(out.path, TABLE)) as local:
            pq.write_table(pa.Table.from_pandas(table, preserve_index=False).replace_schema_metadata(None), local)
        shown = table.drop(columns=["path", "run_id", "split"]).assign(spec_hash=table["spec_hash"].str[:12])
        split = table["split"].iloc[0]
        plots.save_png(plots.comparison_figure(shown, f"final {split} metrics"), posixpath.join(out.path, PICTURE))
        storage.write_text(
            posixpath.join(out.path, MARKER),
            json.dumps(
                {
                    "job": "compare",
                    "runs": list(table["path"]),
                    "split": split,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                },
                indent=2,
            ),
        )
    return out.final


def main(argv=None) -> int:
    args = parse_args(argv)
    import pandas as pd

    from pipelines import publish, storage
    from pipelines.job_runner import print_outputs

    paths = [storage.normalize(p) for p in args.runs]
    try:
        table = comparison_table(paths, args.split, args.allow_different_samples)
        output = write_comparison(table, args.output, paths)
    except (CompareRefused, publish.OutputRefused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a full disk while writing DIR: the staging is already removed
        unwritable = publish.write_failure(exc, args.output)
        if unwritable is None:
            raise
        print(f"error: {unwritable}", file=sys.stderr)
        return 2
    shown = table.drop(columns=["path", "run_id", "split"]).assign(spec_hash=table["spec_hash"].str[:12])
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.float_format", "{:.4f}".format):
        print(f"final {args.split} metrics")
        print(shown.to_string(index=False))
    if table["spec_hash"].nunique() > 1:
        print("note: the runs were trained on samples of different spec hashes (--allow-different-samples)")
    print_outputs(output, f"{TABLE}, {PICTURE}")
    return 0


if __name__ == "__main__":
    from pipelines.job_runner import run_job

    run_job(main)  # sys.exit(main()), except that a process that used s3:// ends with os._exit
