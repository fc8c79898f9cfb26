"""build_samples end to end against a bare Spark job on the same raw data.

    python -m benchmarks.build --raw RAW --workdir DIR --job build_samples|bare|one_shuffle [--set key=value ...]

One job per process, so that each process's peak memory is its own:

- `build_samples`: the project's job with its default config (plus --set overrides);
- `bare`: the least any sample builder must do: read the raw impressions, join the
  items, write Parquet;
- `one_shuffle`: the least a builder of point-in-time user features must do: read the impressions
  and clicks, shuffle every row by user, sort each user's rows by time, hand them to Python as Arrow
  batches and back unchanged (an identity `mapInArrow`, as the per-user pass does), write Parquet. The
  ratio of build_samples to it says how close the job is to the one wide shuffle it cannot avoid.

Prints wall seconds, the driver's peak memory (the Python driver process's peak
RSS, and the JVM's peak used heap: in local mode the JVM also runs the executor
tasks, so its heap is bounded by `spark.driver.memory`, not by the data), and the
JVM process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import shutil
import sys
import time

from benchmarks.measure import HeapSampler, emit, jvm_pid, peak_rss_mib


def bare_job(spark, raw: str, output: str) -> None:
    imps = spark.read.parquet(posixpath.join(raw, "impressions"))
    items = spark.read.parquet(posixpath.join(raw, "items"))
    imps.join(items, on="item_id", how="left").write.mode("overwrite").parquet(output)


def _identity(batches):
    yield from batches


def one_shuffle_job(spark, raw: str, output: str) -> None:
    from pyspark.sql import functions as F

    imps = spark.read.parquet(posixpath.join(raw, "impressions")).withColumn("_click", F.lit(False))
    clicks = spark.read.parquet(posixpath.join(raw, "clicks")).withColumn("_click", F.lit(True))
    stream = imps.unionByName(clicks, allowMissingColumns=True).repartition("user_id")
    stream = stream.sortWithinPartitions("user_id", "ts")
    stream.mapInArrow(_identity, stream.schema).write.mode("overwrite").parquet(output)


JOBS = {"bare": bare_job, "one_shuffle": one_shuffle_job}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--job", choices=["build_samples", *JOBS], required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--keep", action="store_true", help="keep the output (WORKDIR/JOB) for later benchmarks")
    args = parser.parse_args(argv)

    from pipelines.config import load_job_config
    from pipelines.samples.spark import get_spark

    config = load_job_config("build_samples", None, args.overrides)  # validated before Spark starts
    spark = get_spark(f"bench-{args.job}")  # build_samples sizes its shuffle partitions (config: spark.*)
    output = os.path.join(args.workdir, args.job)
    shutil.rmtree(output, ignore_errors=True)
    spark.range(10).count()  # JVM start-up is not part of either job
    result = {"job": args.job}
    with HeapSampler(spark) as heap:
        start = time.perf_counter()
        if args.job in JOBS:
            JOBS[args.job](spark, args.raw, output)
        else:
            from pipelines.samples.build_samples import build_samples

            report = build_samples(spark, args.raw, output, config)
            result["samples"] = sum(v["rows"] for v in report["samples"].values())
            result["step_seconds"] = report["step_seconds"]
        result["seconds"] = time.perf_counter() - start
    result["driver_python_peak_rss_mib"] = peak_rss_mib()
    result["jvm_peak_heap_used_mib"] = heap.peak_mib
    result["jvm_peak_rss_mib"] = peak_rss_mib(jvm_pid(spark))
    emit(result)
    spark.stop()
    if not args.keep:
        shutil.rmtree(output, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
