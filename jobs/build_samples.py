"""Build training samples from raw impression and click logs.

    python -m jobs.build_samples --input RAW --output SAMPLES [--conf FILE] [--set key=value ...]
    spark-submit jobs/build_samples.py --input RAW --output SAMPLES ...

Writes SAMPLES/{train,valid,test}/part-*.tfrecord.gz (.tfrecord with tfrecord.compression=none),
feature_spec.json, report.json, vocab/, rejects/ and _SUCCESS, atomically.
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
    return parser.parse_args(argv)


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
    from pipelines.publish import OutputRefused, check_output, write_failure
    from pipelines.samples.build_samples import INPUT_ERRORS, SAMPLES_MARKERS, build_samples
    from pipelines.samples.spark import get_spark

    try:
        check_output(args.output, [args.input], SAMPLES_MARKERS)  # refuse before Spark starts; checked again
        # The YAML's settings fill in only what spark-submit (--master, --conf, spark-defaults.conf) left unset.
        spark = get_spark(
            config["spark"]["app_name"], {"spark.sql.shuffle.partitions": str(config["spark"]["shuffle_partitions"])}
        )
        report = build_samples(spark, args.input, args.output, config)
    except (OutputRefused, *INPUT_ERRORS) as exc:  # e.g. SAMPLES overlaps RAW; an empty split
        logging.getLogger("jobs.build_samples").error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a full disk while writing: the staging is already removed
        unwritable = write_failure(exc, args.output)
        if unwritable is None:
            raise
        print(f"error: {unwritable}", file=sys.stderr)
        return 2
    samples = report["samples"]
    print(
        json.dumps(
            {
                "output": report["output"],
                "samples": {k: v["rows"] for k, v in samples.items()},
                "label_rate": {
                    k: (round(v["label_rate"], 4) if v["label_rate"] is not None else None) for k, v in samples.items()
                },
                "rejected": report["rejected_total"],
                "orphan_clicks": report["clicks"]["orphan"],
                "spark": report["spark"],
                "seconds": report["total_seconds"],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    from pipelines.publish import run_job

    run_job(main)  # sys.exit(main()), except that a process that used s3:// ends with os._exit
