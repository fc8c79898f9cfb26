"""A nightly chain on a churn world, four ways (issue 32): which keeps a model best as users and items churn.

    python -m benchmarks.nightly_chain --workdir W [--days 28] [--fit-days 7] [--model deepfm] [--buckets 1000]
                                       [--extend-every 7] [--window 7] [--impressions N] [--out W/chain.json]
                                       [--plot W/chain.png] [--plot-only] [--resume]

One churn world (jobs.generate_synthetic's churn flags), partitioned by day. Each option fits on the first
`--fit-days` days, trains a first model on them, then runs one night per later day D: continue last
night's model on day D-2 (--init-from), validate on D-1, test on D. The test AUC of each night is reported
beside the AUC of the true `p_click` on the same rows (the ceiling), and as their ratio.

- (a) `single_oov`: one spec, every unseen id on the one OOV row;
- (b) `buckets`: one spec with `vocab.oov_buckets` K, unseen ids hashed into K rows;
- (c) `extend`: (b), plus every `--extend-every` nights a `--fit-only --extend` with the days since the last
  fit, and the chain continues across the growth (the warm start moves rows and optimizer slots);
- (d) `retrain`: every night a fresh fit on the last `--window` days and a model trained from scratch on them.

Everything runs in this process: one SparkSession for every build, TensorFlow for every run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from datetime import date, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

OPTIONS = ("single_oov", "buckets", "extend", "retrain")
START = date(2026, 1, 1)  # the generator's first day


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", default=None, help="results JSON (default: WORKDIR/chain.json)")
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--fit-days", type=int, default=7)
    parser.add_argument("--impressions", type=int, default=400_000)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--new-items-per-day", type=int, default=15)
    parser.add_argument("--new-users-per-day", type=int, default=10)
    parser.add_argument("--item-lifetime-days", type=float, default=14.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", default="deepfm")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of a model trained from scratch")
    parser.add_argument("--buckets", type=int, default=1000)
    parser.add_argument("--extend-every", type=int, default=7)
    parser.add_argument("--window", type=int, default=7)
    parser.add_argument("--options", default=",".join(OPTIONS))
    parser.add_argument("--set", dest="train_sets", action="append", default=[], help="a jobs.train --set")
    parser.add_argument("--plot", default=None, help="a PNG of the ratio per night (default: WORKDIR/chain.png)")
    parser.add_argument("--plot-only", action="store_true", help="draw --plot from an earlier run's results")
    parser.add_argument(
        "--resume", action="store_true", help="keep the options (and retrain's nights) that --out already holds"
    )
    return parser.parse_args(argv)


def day(k: int) -> date:
    """Day k of the world, from 1."""
    return START + timedelta(days=k - 1)


def partition_by_date(flat: str, raw: str) -> None:
    """RAW with impressions/ and clicks/ partitioned by UTC day (date=YYYY-MM-DD); items as they are. Each data
    set is read whole: a benchmark-sized world fits in memory."""
    for name in ("impressions", "clicks"):
        table = ds.dataset(os.path.join(flat, name)).to_table()
        moment = pc.cast(pc.multiply(table["ts"], 1_000_000), pa.timestamp("us", tz="UTC"))
        table = table.append_column("date", pc.strftime(moment, format="%Y-%m-%d"))
        partitioning = ds.partitioning(table.select(["date"]).schema, flavor="hive")
        ds.write_dataset(table, os.path.join(raw, name), format="parquet", partitioning=partitioning)
    shutil.copytree(os.path.join(flat, "items"), os.path.join(raw, "items"))


class Chain:
    def __init__(self, args, spark, raw: str):
        from pipelines.config import load_config

        self.args, self.spark, self.raw = args, spark, raw
        self.base = ["spark.shuffle_partitions=2", "spark.output_partitions=2"]
        self.load_config = load_config
        self.first_fit = {}  # OOV buckets -> (spec, samples) of the first fit, shared by the options

    def build_config(self, buckets: int = 1):
        return self.load_config("build_samples", None, [*self.base, f"vocab.oov_buckets={buckets}"])

    def fit(self, spec: str, first: int, last: int, buckets: int = 1, extend: str | None = None) -> None:
        from pipelines.samples import build_samples as job
        from pipelines.samples import days as daily

        config = self.build_config(buckets)
        window = daily.fit_window(config, day(first), day(last))
        job.build_samples(self.spark, self.raw, spec, config, job.Plan(window=window, fit_only=True, extend_dir=extend))

    def build(self, samples: str, spec: str, first: int, last: int, buckets: int = 1) -> None:
        from pipelines.samples import days as daily

        days = [day(k) for k in range(first, last + 1)]
        daily.build_days(self.spark, self.raw, samples, self.build_config(buckets), spec, days)

    def train(self, samples: str, run: str, train: tuple[int, int], valid: int, test: int, init: str | None) -> dict:
        import keras

        from jobs.demo import oracle_auc
        from pipelines.training.train import train as train_run

        sets = [
            f"model={self.args.model}",
            f"data.train_dates={day(train[0])}..{day(train[1])}",
            f"data.valid_dates={day(valid)}",
            f"data.test_dates={day(test)}",
            "verbose=0",
            *self.args.train_sets,
        ]
        if init:
            sets += [f"init_from={init}", "epochs=1"]
        elif self.args.epochs:
            sets.append(f"epochs={self.args.epochs}")
        started = time.perf_counter()
        summary = train_run(samples, run, self.load_config("train", None, sets))
        seconds = time.perf_counter() - started
        keras.backend.clear_session()  # eighty runs in one process: each would keep its graph otherwise
        auc, ceiling = summary["metrics"]["test"]["auc"], oracle_auc(run)
        # train_seconds: the whole job (setup, fit, evaluation, export, plots); fit_seconds: Keras fit alone
        return {
            "day": str(day(test)),
            "auc": auc,
            "ceiling": ceiling,
            "ratio": auc / ceiling,
            "train_seconds": seconds,
            "fit_seconds": summary["timings"]["train"],
            "train_examples": summary["train_examples"],
        }


def run_option(chain: Chain, option: str, work: str, save, done: list[dict] | None = None) -> list[dict]:
    """The option's nights, one per test day from --fit-days + 2 on (the same days for every option); `save`
    is called with the nights so far after each. `done`: the nights of `retrain` an earlier run recorded
    (each of its nights stands alone, so a resumed run skips them)."""
    a = chain.args
    first_test = a.fit_days + 1
    nights = list(done or [])
    if option == "retrain":
        recorded = {n["day"] for n in nights}
        for test in range(first_test + 1, a.days + 1):
            if str(day(test)) in recorded:
                continue
            spec, samples, run = (os.path.join(work, f"{part}-{test}") for part in ("spec", "samples", "run"))
            for folder in (spec, samples, run):  # a night an earlier run left half done
                shutil.rmtree(folder, ignore_errors=True)
            start = max(1, test - 1 - a.window)
            chain.fit(spec, start, test - 2)
            chain.build(samples, spec, start, test)
            nights.append(chain.train(samples, run, (start, test - 2), test - 1, test, None))
            save(nights)
        return nights
    buckets = 1 if option == "single_oov" else a.buckets
    spec, samples = os.path.join(work, "spec-0"), os.path.join(work, "samples-0")
    shared = chain.first_fit.get(buckets)  # (b) and (c) start from the same fit and samples
    if shared:
        spec, samples = shared
    else:
        chain.fit(spec, 1, a.fit_days - 1, buckets)
        chain.build(samples, spec, 1, a.days, buckets)
        chain.first_fit[buckets] = (spec, samples)
    previous = os.path.join(work, f"run-{first_test}")  # the first model, tested on the first day after the fit
    chain.train(samples, previous, (1, a.fit_days - 1), a.fit_days, first_test, None)
    fitted_until, generation = a.fit_days - 1, 0
    for test in range(first_test + 1, a.days + 1):
        if option == "extend" and test - 2 - fitted_until >= a.extend_every:
            generation += 1
            grown = os.path.join(work, f"spec-{generation}")
            chain.fit(grown, fitted_until + 1, test - 2, buckets, extend=spec)
            spec, samples, fitted_until = grown, os.path.join(work, f"samples-{generation}"), test - 2
            # the days of this generation's nights: up to the night before the next extend
            chain.build(samples, spec, test - 2, min(a.days, test + a.extend_every - 1), buckets)
        run = os.path.join(work, f"run-{test}")
        night = chain.train(samples, run, (test - 2, test - 2), test - 1, test, previous)
        nights.append({**night, "spec_generation": generation})
        save(nights)
        previous = run
    return nights


LABELS = {
    "single_oov": "(a) one OOV row",
    "buckets": "(b) hashed OOV buckets",
    "extend": "(c) buckets + weekly --extend, warm start",
    "retrain": "(d) nightly fresh fit + retrain from scratch",
}


def plot(results: dict, path: str) -> None:
    """The test AUC over the p_click ceiling of each option, night by night; the nights (c) grew its spec
    are marked."""
    from pipelines.training.plots import _figure, save_png

    figure = _figure(10, 4.5)
    ax = figure.subplots()
    for option, entry in results["options"].items():
        nights = entry["nights"]
        days = [n["day"][5:] for n in nights]
        ax.plot(days, [n["ratio"] for n in nights], marker="o", markersize=3, label=LABELS.get(option, option))
        grown = [
            i
            for i in range(1, len(nights))
            if nights[i].get("spec_generation", 0) > nights[i - 1].get("spec_generation", 0)
        ]
        for i in grown:
            ax.axvline(i, color="grey", linestyle=":", linewidth=1)
    ax.set_ylabel("test AUC / AUC of p_click")
    ax.set_xlabel("test day (dotted: (c) extends its spec)")
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_png(figure, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.plot_only:
        with open(args.out or os.path.join(args.workdir, "chain.json")) as fh:
            plot(json.load(fh), args.plot)
        return 0
    from pipelines.samples.spark import get_spark
    from sources.click_model import Churn
    from sources.synthetic import generate

    os.makedirs(args.workdir, exist_ok=True)
    flat, raw = os.path.join(args.workdir, "flat"), os.path.join(args.workdir, "raw")
    if not os.path.isdir(raw):
        churn = Churn(args.new_items_per_day, args.new_users_per_day, args.item_lifetime_days)
        generate(flat, args.users, args.items, args.days, args.impressions, args.seed, churn=churn)
        partition_by_date(flat, raw)
    chain = Chain(args, get_spark("nightly-chain"), raw)
    out = args.out or os.path.join(args.workdir, "chain.json")
    results = {"args": vars(args), "options": {}}
    if args.resume and os.path.exists(out):
        with open(out) as fh:
            results["options"] = json.load(fh)["options"]

    def record(option: str, nights: list[dict], complete: bool) -> None:
        # after each night: a long run that stops keeps what it measured (--resume goes on from there)
        results["options"][option] = {
            "nights": nights,
            "complete": complete,
            "mean_ratio": sum(n["ratio"] for n in nights) / len(nights),
            "train_seconds": sum(n["train_seconds"] for n in nights),
            "fit_seconds": sum(n.get("fit_seconds", 0.0) for n in nights),
            "train_examples": sum(n.get("train_examples", 0) for n in nights),
        }
        with open(out, "w") as fh:
            json.dump(results, fh, indent=2)

    for option in args.options.split(","):
        earlier = results["options"].get(option, {})
        if earlier.get("complete"):
            continue
        done = earlier.get("nights") if option == "retrain" else None
        work = os.path.join(args.workdir, option)
        if not done:
            shutil.rmtree(work, ignore_errors=True)
        nights = run_option(chain, option, work, lambda n, o=option: record(o, n, False), done)
        record(option, nights, True)
        print(json.dumps({option: nights[-1]}), flush=True)
    plot(results, args.plot or os.path.join(args.workdir, "chain.png"))
    for option, entry in results["options"].items():
        print(
            f"{option:12s} mean ratio {entry['mean_ratio']:.4f}  train job {entry['train_seconds']:.0f} s"
            f"  of which fit {entry.get('fit_seconds', 0):.0f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
