"""Import MovieLens (ml-latest-small layout) as raw impressions, clicks and items.

    python -m jobs.import_movielens --source DIR --output RAW [--click-threshold 3.5]
    spark-submit jobs/import_movielens.py --source DIR --output RAW ...

Reads DIR/ratings.csv, DIR/movies.csv and DIR/tags.csv (optional) with Spark and
writes RAW in the raw-data contract: a rating is an impression at its timestamp, and
a click when it is at least the threshold (`sources/movielens.py` has the details).
RAW is written atomically, with RAW/_source.json and RAW/_SUCCESS marking it as an
output of this job. An existing RAW is replaced only when it holds both (or is
empty); otherwise, or when RAW overlaps --source, the job refuses (exit code 2).
RAW and --source without a scheme are on Spark's default file system.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

if not __package__:  # run as a script (spark-submit jobs/import_movielens.py)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.job_runner import print_outputs  # noqa: E402
from pipelines.publish import OutputRefused  # noqa: E402
from pipelines.samples.spark import get_spark  # noqa: E402
from sources.movielens import import_movielens  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="MovieLens directory with ratings.csv, movies.csv, tags.csv")
    parser.add_argument("--output", required=True, help="raw data directory to (re)create")
    parser.add_argument(
        "--click-threshold", type=float, default=3.5, help="a rating at or above this is a click (default 3.5)"
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    args = parse_args(argv)
    spark = get_spark("ctr-import-movielens")
    try:
        summary = import_movielens(spark, args.source, args.output, args.click_threshold)
    except OutputRefused as exc:  # RAW overlaps the source, or holds something else than an earlier import
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    print_outputs(summary["output"], "impressions/, clicks/, items/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
