"""Build training samples from raw impression and click logs.

    python -m jobs.build_samples --input RAW --output SAMPLES [--conf FILE] [--set key=value ...]
    spark-submit jobs/build_samples.py --input RAW --output SAMPLES ...

Writes SAMPLES/{train,valid,test}/part-*.tfrecord.gz (.tfrecord with tfrecord.compression=none),
feature_spec.json, report.json, vocab/, rejects/ and _SUCCESS, atomically.

Daily runs (README, "Daily runs"): fit once, then build each day with that fit.

    python -m jobs.build_samples --input RAW --output SPEC --fit-only --start D1 --end D2
    python -m jobs.build_samples --input RAW --output SAMPLES --spec SPEC --date D        # SAMPLES/date=D/
    python -m jobs.build_samples --input RAW --output SAMPLES --spec SPEC --start D1 --end D2 [--overwrite]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

if not __package__:  # run as a script (spark-submit jobs/build_samples.py)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.config import ConfigError, load_job_config, print_config_error  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="raw data directory with impressions/, clicks/, items/")
    parser.add_argument("--output", required=True, help="samples directory to (re)create")
    parser.add_argument("--conf", help="YAML file merged over conf/build_samples.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set split.valid_start=2026-01-22 (repeatable)",
    )
    days = parser.add_argument_group("daily runs")
    days.add_argument("--date", help="build the samples of this day (YYYY-MM-DD) into OUTPUT/date=YYYY-MM-DD/")
    days.add_argument("--start", help="first day of a range (--end: the last, included): a backfill, or a fit window")
    days.add_argument("--end", help="last day of the range started by --start (included)")
    days.add_argument(
        "--spec",
        help="apply the fit of this folder (feature_spec.json + vocab/, from --fit-only or any build) instead of "
        "fitting: every day's samples share its spec hash",
    )
    days.add_argument(
        "--fit-only",
        action="store_true",
        help="fit vocabularies, normalization and buckets (on the days --start..--end, else on the train split) "
        "and write OUTPUT/feature_spec.json and vocab/ without samples",
    )
    days.add_argument(
        "--extend",
        metavar="SPEC_OLD",
        help="with --fit-only: grow the vocabularies of SPEC_OLD instead of fitting new ones: its tokens keep their "
        "indices, the tokens new since then are appended, its normalization, buckets and CTR prior are kept; a "
        "model trained on SPEC_OLD continues on the new spec (jobs.train --init-from)",
    )
    days.add_argument(
        "--refit-statistics",
        action="store_true",
        help="with --extend: refit the normalization, bucket boundaries and CTR prior on the new window",
    )
    days.add_argument("--overwrite", action="store_true", help="rebuild days that are already complete")
    days.add_argument(
        "--allow-mixed-specs",
        action="store_true",
        help="build days into an OUTPUT that holds days of another spec (refused by default: a training run "
        "reads days of one spec only)",
    )
    args = parser.parse_args(argv)
    problem = _check_day_args(args)
    if problem:
        parser.error(problem)
    return args


def _check_day_args(args) -> str | None:
    """What is wrong with the combination of the daily-run flags (argparse prints it, exit 2)."""
    from feature_spec import parse_date

    for flag in ("date", "start", "end"):
        value = getattr(args, flag)
        if value is not None:
            try:
                parse_date(value)
            except ValueError as exc:
                return f"--{flag}: {exc}"
    if (args.start is None) != (args.end is None):
        return "--start and --end come together"
    if args.date and args.start:
        return "--date and --start/--end exclude each other (one day: --date D)"
    if args.start and parse_date(args.end) < parse_date(args.start):
        return f"--end {args.end} is before --start {args.start}"
    if args.extend and not args.fit_only:
        return "--extend grows a spec into a new one: it needs --fit-only"
    if args.refit_statistics and not args.extend:
        return "--refit-statistics applies to --extend"
    if args.fit_only:
        if args.spec:
            return "--fit-only fits a new spec: it takes no --spec"
        if args.date:
            return "--fit-only fits on a range of days: use --start D --end D"
        if args.overwrite:
            return "--overwrite applies to day builds (--date, --start/--end with --spec)"
        return None
    if (args.date or args.start) and not args.spec:
        return (
            "a build of days needs --spec SPEC, so that every day shares one fit and one spec hash; "
            "fit one first: --fit-only --start D1 --end D2 --output SPEC"
        )
    if args.allow_mixed_specs and not (args.date or args.start):
        return "--allow-mixed-specs applies to day builds (--date, --start/--end with --spec)"
    if args.overwrite and not (args.date or args.start):
        return (
            "--overwrite applies to day builds (--date, --start/--end): a build of the whole log always replaces OUTPUT"
        )
    return None


def main(argv=None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    args = parse_args(argv)
    try:
        # Types, ranges and relations of every key (pipelines/config_schema.py), before Spark starts.
        config = load_job_config("build_samples", args.conf, args.overrides)
    except ConfigError as exc:
        print_config_error(exc)
        return 2
    from pipelines.job_runner import print_outputs
    from pipelines.publish import OutputRefused, check_output, write_failure
    from pipelines.samples import build_samples as job
    from pipelines.samples import days as daily
    from pipelines.samples import runtime
    from pipelines.samples.spark import get_spark

    days = _days(args)
    try:
        if days and not args.fit_only:
            daily.check_dated_samples(args.output)  # refuse before Spark starts
        else:
            check_output(args.output, [args.input], job.SAMPLES_MARKERS)  # refuse before Spark starts; checked again
        # The YAML's settings fill in only what spark-submit (--master, --conf, spark-defaults.conf) left unset.
        spark = get_spark(config.spark.app_name)  # the build sizes its shuffle partitions itself
        if days and not args.fit_only:
            results = daily.build_days(
                spark, args.input, args.output, config, args.spec, days, args.overwrite, args.allow_mixed_specs
            )
            print(json.dumps([_day_summary(result) for result in results], indent=2))
            print_outputs(args.output, ", ".join(f"{os.path.basename(r['output'].rstrip('/'))}/" for r in results))
            return 0
        window = daily.fit_window(config, days[0], days[-1]) if days else None
        plan = job.Plan(
            spec_dir=args.spec,
            window=window,
            fit_only=args.fit_only,
            extend_dir=args.extend,
            refit_statistics=args.refit_statistics,
        )
        report = job.build_samples(spark, args.input, args.output, config, plan)
    except (OutputRefused, *job.INPUT_ERRORS) as exc:  # e.g. SAMPLES overlaps RAW; an empty split
        logging.getLogger("jobs.build_samples").error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except runtime.OutOfMemory as exc:  # a few lines that name the setting to raise, not a Java traceback
        logging.getLogger("jobs.build_samples").error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except Exception as exc:  # a full disk while writing: the staging is already removed
        unwritable = write_failure(exc, args.output)
        if unwritable is None:
            raise
        print(f"error: {unwritable}", file=sys.stderr)
        return 2
    print(json.dumps(_summary(report), indent=2))
    print_outputs(
        report["output"],
        "feature_spec.json, report.json, vocab/" + ("" if args.fit_only else ", train/ valid/ test/, rejects/"),
    )
    return 0


def _days(args) -> list:
    from feature_spec import parse_date_range

    if args.date:
        return parse_date_range(args.date)
    if args.start:
        return parse_date_range(f"{args.start}..{args.end}")
    return []


def _day_summary(result: dict) -> dict:
    if result["skipped"]:
        return {"date": result["date"], "output": result["output"], "skipped": "complete (--overwrite rebuilds it)"}
    return {"date": result["date"], **_summary(result["report"])}


def _drift_summary(drift: dict) -> dict | str:
    """A --spec build's drift in a few lines: what exceeds its threshold, and what to do."""
    if "unavailable" in drift:
        return f"unavailable: {drift['unavailable']}"
    return {
        "exceeded": [f"{e['feature']} {e['measure']} {e['value']:.4g} > {e['threshold']:g}" for e in drift["exceeded"]],
        "recommendation": drift["recommendation"],
    }


def _summary(report: dict) -> dict:
    samples = report["samples"]
    drift = {"drift": _drift_summary(report["drift"])} if "drift" in report else {}
    return {
        "output": report["output"],
        "samples": {k: v["rows"] for k, v in samples.items()},
        "label_rate": {
            k: (round(v["label_rate"], 4) if v["label_rate"] is not None else None) for k, v in samples.items()
        },
        "rejected": report["rejected_total"],
        "orphan_clicks": report["clicks"]["orphan"],
        "oov_rate": {name: counts["oov_rate"] for name, counts in report["oov"].items()},
        **drift,
        "spec_hash": report["spec_hash"],
        "spark": report["spark"],
        "seconds": report["total_seconds"],
    }


if __name__ == "__main__":
    from pipelines.job_runner import run_job

    run_job(main)  # sys.exit(main()), except that a process that used s3:// ends with os._exit
