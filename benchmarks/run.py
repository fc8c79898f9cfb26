"""Run every benchmark at the chosen scales and write BENCHMARKS.md, results.json and PNG plots.

    pip install -e '.[bench]'     # deepctr, tf_keras and matplotlib: benchmark-only
    python -m benchmarks.run --scales 1000000,10000000 --workdir /tmp/ctr-bench --out BENCHMARKS.md

Each measurement runs in its own process (so peak memory is per job, and the peer
library can run with its own Keras), one after the other on the same machine;
every figure is reported beside a baseline measured in the same run:

1. encoding: our TFRecord writer vs a naive per-row `tf.train.Example` writer vs Spark's Parquet write;
2. build_samples vs a bare Spark job (read impressions, join items, write Parquet), at each scale;
3. input pipeline: read+parse rate vs each model's train step rate;
4. training vs the `deepctr` package on the MovieLens samples (DeepFM, DCN, Wide & Deep), each side
   `--peer-repeats` times in turn, compared by its median run.

`--only encoding,build,input,peer` runs a subset (the report then holds only those sections).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time

from benchmarks.measure import read_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("encoding", "build", "input", "peer")
PEER_MODELS = ("deepfm", "dcn", "wide_deep")


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def run_module(module: str, *args: str, env: dict | None = None, parse: bool = True):
    command = [sys.executable, "-m", module, *args]
    log("$ " + shlex.join(["python", "-m", module, *args]))
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-5000:] + result.stderr[-5000:])
        raise SystemExit(f"{module} failed with exit code {result.returncode}")
    return read_result(result.stdout) if parse else result.stdout


def world_size(impressions: int) -> list[str]:
    """Users and items grow with the impressions (about 100 impressions per user, 200 per item)."""
    return [
        "--impressions",
        str(impressions),
        "--users",
        str(max(2000, impressions // 100)),
        "--items",
        str(max(1000, impressions // 200)),
        "--days",
        "28",
    ]


def raw_for(scale: int, workdir: str) -> str:
    """The synthetic raw data of one scale, generated once per workdir."""
    raw = os.path.join(workdir, f"raw_{scale}")
    if not os.path.exists(os.path.join(raw, "impressions")):
        run_module("jobs.generate_synthetic", "--output", raw, "--seed", "42", *world_size(scale), parse=False)
    return raw


def bench_build(scale: int, workdir: str, results: dict) -> None:
    raw = raw_for(scale, workdir)
    # Shuffle partitions and driver memory: the job's own defaults (auto from the impressions, a share of the machine).
    sets = ["--set", f"spark.output_partitions={max(4, scale // 1_000_000)}"]
    out = os.path.join(workdir, f"scale_{scale}")
    entry = {
        "bare": run_module("benchmarks.build", "--raw", raw, "--workdir", out, "--job", "bare", *sets),
        "one_shuffle": run_module("benchmarks.build", "--raw", raw, "--workdir", out, "--job", "one_shuffle", *sets),
        "build_samples": run_module(
            "benchmarks.build", "--raw", raw, "--workdir", out, "--job", "build_samples", "--keep", *sets
        ),
    }
    entry["ratio"] = entry["build_samples"]["seconds"] / entry["bare"]["seconds"]
    entry["ratio_one_shuffle"] = entry["build_samples"]["seconds"] / entry["one_shuffle"]["seconds"]
    results.setdefault("build", {})[str(scale)] = entry


def samples_for(raw: str, out: str) -> str:
    if not os.path.exists(os.path.join(out, "_SUCCESS")):
        run_module("jobs.build_samples", "--input", raw, "--output", out, parse=False)
    return out


# The params only some models read (jobs.train refuses a param the model does not read).
MODEL_SETS = {
    "wide_deep": ["params.deep_optimizer=adam"],
    "dfn": ["params.deep_optimizer=adam"],
    "dcn": ["params.cross_layers=3"],
    "dcn_v2": ["params.cross_layers=3"],
}


def our_training(samples: str, model: str, run_dir: str, epochs: int) -> dict:
    args = [
        "--samples",
        samples,
        "--model",
        model,
        "--output",
        run_dir,
        "--epochs",
        str(epochs),
        "--set",
        "resume=false",
        "--set",
        "verbose=0",
        "--set",
        "batch_size=1024",
        "--set",
        "params.embedding_dim=16",
        "--set",
        "params.hidden_units=[256,128,64]",
        "--set",
        "params.learning_rate=0.001",
        *[a for s in MODEL_SETS.get(model, []) for a in ("--set", s)],
        "--set",
        f"early_stopping.patience={epochs}",
        "--set",
        "outputs.embeddings=false",
    ]
    run_module("jobs.train", *args, parse=False)
    with open(os.path.join(run_dir, "run.json")) as fh:
        summary = json.load(fh)
    return {
        "examples_per_second": summary["train_examples_per_second"],
        "test_auc": summary["metrics"]["test"]["auc"],
        "best_epoch": summary["best_epoch"],
    }


def bench_peer(movielens: str, workdir: str, epochs: int, repeats: int, results: dict) -> None:
    """Ours and deepctr on each model, `repeats` times in turn (ours, theirs, ours, ...): a run of a few
    seconds on a shared machine varies by a third from one minute to the next, so the table gives each
    side's median rate and every run's figures go into results.json."""
    raw = os.path.join(workdir, "movielens_raw")
    if not os.path.exists(os.path.join(raw, "impressions")):
        run_module("jobs.import_movielens", "--source", movielens, "--output", raw, parse=False)
    samples = samples_for(raw, os.path.join(workdir, "movielens_samples"))
    peer = {}
    for model in PEER_MODELS:
        ours_runs, their_runs = [], []
        for repeat in range(repeats):
            run_dir = os.path.join(workdir, "runs", f"movielens_{model}_{repeat}")
            ours_runs.append(our_training(samples, model, run_dir, epochs))
            their_runs.append(
                run_module(
                    "benchmarks.peer_deepctr",
                    "--samples",
                    samples,
                    "--model",
                    model,
                    "--embedding-dim",
                    "16",
                    "--hidden-units",
                    "256,128,64",
                    "--batch-size",
                    "1024",
                    "--epochs",
                    str(epochs),
                    "--cross-layers",
                    "3",
                    "--learning-rate",
                    "0.001",
                )
            )
        ours, theirs = _median_run(ours_runs), _median_run(their_runs)
        peer[model] = {
            "ours": ours,
            "deepctr": theirs,
            "speed_ratio": ours["examples_per_second"] / theirs["examples_per_second"],
            "auc_difference": ours["test_auc"] - theirs["test_auc"],
            "runs": {"ours": ours_runs, "deepctr": their_runs},
        }
    results["peer"] = {"epochs": epochs, "repeats": repeats, "samples": samples, "models": peer}


def _median_run(runs: list[dict]) -> dict:
    """The run with the median examples/s (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r["examples_per_second"])
    return ordered[(len(ordered) - 1) // 2]


def _range(entry: dict, side: str) -> str:
    rates = [r["examples_per_second"] for r in entry.get("runs", {}).get(side, [entry[side]])]
    return f"{_fmt(min(rates))}-{_fmt(max(rates))}"


def _fmt(x, digits=0):
    return "n/a" if x is None else f"{x:,.{digits}f}"


def report(results: dict, command: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"One run of `{command}` on {results['machine']} ({results['started']}), Spark in local mode with "
        f"spark.driver.memory {results.get('driver_memory') or 'the default (a quarter of the machine)'}.",
        "Every figure sits beside a baseline measured in the same run; the machine is shared, so compare "
        "the ratios, not the absolute rates, with other runs.",
        "",
    ]
    if "encoding" in results:
        lines += [
            "## 1. TFRecord encoding",
            "",
            "Read the same sample-shaped Parquet and write it out again (Spark, same partitions).",
            "",
            "| scale | writer | rows | rows/s | vs naive | time vs Parquet write |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for scale, e in results["encoding"].items():
            r, s = e["rows_per_second"], e
            for name, label in (
                ("parquet", "Spark Parquet write (baseline)"),
                ("ours", "ours (vectorized, default compression)"),
                ("naive", "naive per-row tf.train.Example"),
            ):
                rows = s["naive_rows"] if name == "naive" else s["rows"]
                lines.append(
                    f"| {int(scale):,} | {label} | {rows:,} | {_fmt(r[name])} | {r[name] / r['naive']:.1f}x "
                    f"| {r['parquet'] / r[name]:.2f}x |"
                )
        lines += [
            "",
            "Targets (issue 8): ours at least 10x the naive encoder, and at most 1.5x the time of the Parquet write.",
            "",
        ]
    if "build" in results:
        lines += [
            "## 2. build_samples end to end",
            "",
            "| impressions | bare Spark job (s) | one-shuffle job (s) | build_samples (s) | ratio to bare "
            "| ratio to one shuffle | driver Python peak RSS (MiB) | JVM peak heap used (MiB) | JVM peak RSS (MiB) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        scales = sorted(results["build"], key=int)
        for scale in scales:
            e = results["build"][scale]
            b = e["build_samples"]
            one = e.get("one_shuffle", {}).get("seconds")  # absent from runs before issue 30
            lines.append(
                f"| {int(scale):,} | {e['bare']['seconds']:.1f} | {_fmt(one, 1)} | {b['seconds']:.1f} | "
                f"{e['ratio']:.2f}x | {_fmt(e.get('ratio_one_shuffle'), 2)}x | "
                f"{_fmt(b['driver_python_peak_rss_mib'])} | {_fmt(b['jvm_peak_heap_used_mib'])} | "
                f"{_fmt(b['jvm_peak_rss_mib'])} |"
            )
        if len(scales) >= 2:
            lo, hi = results["build"][scales[0]], results["build"][scales[-1]]
            factor = int(scales[-1]) / int(scales[0])
            lines += [
                "",
                f"From {int(scales[0]):,} to {int(scales[-1]):,} impressions ({factor:.0f}x): build_samples "
                f"time grows {hi['build_samples']['seconds'] / lo['build_samples']['seconds']:.1f}x, "
                f"the bare job {hi['bare']['seconds'] / lo['bare']['seconds']:.1f}x.",
            ]
        last = results["build"][scales[-1]]["build_samples"].get("step_seconds") or {}
        lines += [
            "",
            f"Step seconds at {int(scales[-1]):,}: " + ", ".join(f"{k} {v:.0f}" for k, v in last.items()),
            "",
            "Targets (issue 30): at most 5x the bare job at 1M impressions and 4x at 10M; at most 9x the "
            "time from 1M to 10M; at most 2.5x the one-shuffle job at 10M; flat driver memory.",
            "",
        ]
    if "input" in results:
        e = results["input"]
        lines += [
            "## 3. Input pipeline against the train step",
            "",
            f"Samples: {e['samples']}; batch size {e['batch_size']}.",
            "",
            f"read+parse alone: **{_fmt(e['read_parse_examples_per_second'])} examples/s**",
            "",
            "| model | train step examples/s (input in memory) | read+parse / step |",
            "|---|---:|---:|",
        ]
        for name, rate in e["train_step_examples_per_second"].items():
            lines.append(f"| {name} | {_fmt(rate)} | {e['input_over_step'][name]:.2f}x |")
        lines += ["", "Target: read+parse at least 3x the step rate of every model on CPU.", ""]
    if "peer" in results:
        p = results["peer"]
        lines += [
            "## 4. Training against deepctr",
            "",
            f"MovieLens samples ({p['samples']}), {p['epochs']} epochs, embedding 16, hidden [256, 128, 64], "
            "batch 1024, Adam 1e-3. Ours streams TFRecord through tf.data (Keras 3); deepctr "
            "trains on in-memory NumPy arrays (tf_keras). "
            f"Each side ran {p.get('repeats', 1)} times per model, in turn; the table shows the run with the "
            "median examples/s of each side, and the range of all runs.",
            "",
            "| model | ours examples/s | deepctr examples/s | speed ratio | ours range | deepctr range "
            "| ours test AUC | deepctr test AUC | AUC difference |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, e in p["models"].items():
            lines.append(
                f"| {name} | {_fmt(e['ours']['examples_per_second'])} | "
                f"{_fmt(e['deepctr']['examples_per_second'])} | {e['speed_ratio']:.2f}x | "
                f"{_range(e, 'ours')} | {_range(e, 'deepctr')} | "
                f"{e['ours']['test_auc']:.4f} | {e['deepctr']['test_auc']:.4f} | {e['auc_difference']:+.4f} |"
            )
        lines += [
            "",
            "Targets (issue 20): the speed ratio (of the median runs) at least 1.1x, and test AUC no lower than "
            "deepctr's - 0.002.",
            "",
        ]
    return "\n".join(lines) + "\n"


def plots(results: dict, folder: str) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[bench]'): no plots")
        return []
    os.makedirs(folder, exist_ok=True)
    written = []
    if "encoding" in results:
        scale, e = max(results["encoding"].items(), key=lambda kv: int(kv[0]))
        fig, ax = plt.subplots(figsize=(6, 3))
        names = ["naive", "ours", "parquet"]
        ax.barh(names, [e["rows_per_second"][n] for n in names])
        ax.set_xlabel("rows / s")
        ax.set_title(f"Encoding {int(scale):,} sample rows")
        written.append(os.path.join(folder, "encoding.png"))
        fig.tight_layout()
        fig.savefig(written[-1], dpi=100)
    if "build" in results:
        scales = sorted(results["build"], key=int)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for job in ("bare", "build_samples"):
            ax.plot(
                [int(s) for s in scales], [results["build"][s][job]["seconds"] for s in scales], marker="o", label=job
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("impressions")
        ax.set_ylabel("seconds")
        ax.legend()
        written.append(os.path.join(folder, "build_samples.png"))
        fig.tight_layout()
        fig.savefig(written[-1], dpi=100)
    if "input" in results:
        e = results["input"]
        fig, ax = plt.subplots(figsize=(6, 3))
        names = list(e["train_step_examples_per_second"]) + ["read+parse"]
        ax.barh(names, list(e["train_step_examples_per_second"].values()) + [e["read_parse_examples_per_second"]])
        ax.set_xlabel("examples / s")
        written.append(os.path.join(folder, "input_pipeline.png"))
        fig.tight_layout()
        fig.savefig(written[-1], dpi=100)
    plt.close("all")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="1000000,10000000", help="synthetic impressions, comma-separated")
    parser.add_argument("--workdir", default="/tmp/ctr-bench")
    parser.add_argument("--out", default="BENCHMARKS.md")
    parser.add_argument("--plots", default="benchmarks/plots", help="folder for the PNG plots")
    parser.add_argument("--results", default="benchmarks/results.json", help="every figure, as JSON")
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: rewrite --out and the plots from the figures in --results",
    )
    parser.add_argument("--movielens", default=os.path.join(os.path.dirname(ROOT), "shared", "data", "movielens-small"))
    parser.add_argument("--peer-epochs", type=int, default=3)
    parser.add_argument("--peer-repeats", type=int, default=3, help="runs of each side per model, in turn")
    parser.add_argument("--encoding-rows", type=int, default=None, help="default: the largest scale")
    parser.add_argument(
        "--driver-memory",
        default=None,
        help="spark.driver.memory of every Spark job (default: the jobs' own, a quarter of the machine in local mode)",
    )
    args = parser.parse_args(argv)
    if args.report_only:
        with open(args.results) as fh:
            results = json.load(fh)
        return write_report(results, results["command"], args)
    if args.driver_memory:
        os.environ["CTR_DRIVER_MEMORY"] = args.driver_memory  # read by pipelines.samples.spark.get_spark
    only = set(args.only.split(","))
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    scales = sorted(int(s) for s in args.scales.split(","))
    os.makedirs(args.workdir, exist_ok=True)
    command = "python -m benchmarks.run " + shlex.join(sys.argv[1:] if argv is None else argv)
    results = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "driver_memory": args.driver_memory,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": command,
    }
    if "build" in only:
        for scale in scales:
            bench_build(scale, args.workdir, results)
    if "encoding" in only:
        rows = args.encoding_rows or scales[-1]
        results["encoding"] = {
            str(rows): run_module(
                "benchmarks.encoding", "--rows", str(rows), "--workdir", os.path.join(args.workdir, "encoding")
            )
        }
    if "input" in only:
        kept = os.path.join(args.workdir, f"scale_{scales[0]}", "build_samples")  # written by the build benchmark
        samples = (
            kept
            if os.path.exists(os.path.join(kept, "_SUCCESS"))
            else samples_for(raw_for(scales[0], args.workdir), os.path.join(args.workdir, f"samples_{scales[0]}"))
        )
        results["input"] = {**run_module("benchmarks.input_pipeline", "--samples", samples), "samples": samples}
    if "peer" in only:
        if not os.path.exists(os.path.join(args.movielens, "ratings.csv")):
            log(f"MovieLens not found at {args.movielens}: skipping the deepctr comparison")
        else:
            bench_peer(args.movielens, args.workdir, args.peer_epochs, args.peer_repeats, results)
    with open(args.results, "w") as fh:
        json.dump(results, fh, indent=2)
    return write_report(results, command, args)


def write_report(results: dict, command: str, args) -> int:
    text = report(results, command)
    pngs = plots(results, args.plots)
    if pngs:
        rel = [os.path.relpath(p, os.path.dirname(os.path.abspath(args.out))) for p in pngs]
        text += "\n## Plots\n\n" + "\n".join(f"![{os.path.basename(p)}]({p})" for p in rel) + "\n"
    with open(args.out, "w") as fh:
        fh.write(text)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
