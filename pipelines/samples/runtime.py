"""The Spark runtime of one build: its steps' timings (pipelines/timings.py) with their job groups and
out-of-memory handling, the frames it persists, and the shuffle partitions it sizes from the data."""

from __future__ import annotations

import logging
from contextlib import contextmanager

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from pipelines import timings
from pipelines.config_schema import BuildConfig
from pipelines.samples.spark import memory_settings

log = logging.getLogger("build_samples")


class OutOfMemory(RuntimeError):
    """A step ran out of JVM heap; the message names the step and the setting to raise."""


# How a failed Spark action says that memory ran out: the task's own error, or the context stopped by it.
_OUT_OF_MEMORY_SIGNS = ("java.lang.OutOfMemoryError", "SparkContext was shut down", "stopped SparkContext")


def _ran_out_of_memory(exc: BaseException) -> bool:
    try:
        text = str(exc)  # a Py4JJavaError's text holds the Java exception and its causes
    except Exception:  # the JVM is gone: its text cannot be fetched
        text = repr(exc)
    return any(sign in text for sign in _OUT_OF_MEMORY_SIGNS)


class SparkTimings(timings.Timings):
    """A build's Timings (pipelines/timings.py): every step logged, its seconds rounded to the millisecond,
    its Spark jobs in the job group `build_samples:STEP`, and a step that runs out of memory an OutOfMemory
    naming the step and the setting to raise, instead of Spark's traceback."""

    def __init__(self, spark: SparkSession | None = None):
        super().__init__(log=log, digits=3)
        self.spark = spark
        self.advice: str | None = None  # read while the session is alive: after an OOM the JVM may be gone

    def note_memory_settings(self) -> None:
        """Read the settings to name if memory runs out, once the build has set them."""
        self.advice = memory_settings(self.spark)

    @contextmanager
    def around(self, name: str):
        try:
            with _jobs_named(self.spark, name):
                yield
        except Exception as exc:
            with quiet_py4j():  # reading a Py4JJavaError's text calls the JVM, which may be gone
                out_of_memory = self.spark is not None and _ran_out_of_memory(exc)
            if not out_of_memory:
                raise
            advice = self.advice or "raise spark.driver.memory (local mode) or spark.executor.memory (a cluster)"
            raise OutOfMemory(
                f"step {name} ran out of memory (java.lang.OutOfMemoryError in the Spark log above); "
                f"nothing was published. {advice[0].upper()}{advice[1:]}"
            ) from None


_JOB_PROPERTIES = ("spark.jobGroup.id", "spark.job.description")


@contextmanager
def _jobs_named(spark: SparkSession | None, step: str):
    """The step's Spark jobs in the job group `build_samples:STEP` (the Spark UI and the event log then say
    which step ran each job); the caller's own group and description come back after."""
    if spark is None:
        yield
        return
    context = spark.sparkContext
    before = {key: context.getLocalProperty(key) for key in _JOB_PROPERTIES}
    context.setJobGroup(f"build_samples:{step}", f"build_samples: step {step}")
    try:
        yield
    finally:
        with quiet_py4j():  # the JVM may be gone (out of memory): keep the step's own error
            try:
                for key, value in before.items():
                    context.setLocalProperty(key, value)
            except Exception as exc:
                log.warning("could not restore the Spark job group: %s", str(exc).splitlines()[0][:200])


def _py4j_command_error(record: logging.LogRecord) -> bool:
    # py4j logs each failed call with its traceback on the root logger ("Exception while sending command.").
    return record.name == "root" and str(record.msg).startswith("Exception while sending command")


@contextmanager
def quiet_py4j():
    """Keep py4j's tracebacks out of cleanup code that logs its own failures (the JVM may be gone)."""
    root, py4j = logging.getLogger(), logging.getLogger("py4j")
    level = py4j.level
    py4j.setLevel(logging.CRITICAL)

    def keep(record: logging.LogRecord) -> bool:
        return not _py4j_command_error(record)

    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)
        py4j.setLevel(level)


class Persisted:
    """The frames a run persists, released when it ends.

    On local disk only: a block is written and read back as a stream, so a task's memory does not grow
    with its partition. In memory, a partition is one block unrolled in the heap, whose columnar batches
    compete with the sorts of the same task and fill the heap at 10M impressions (docs/memory.md); the
    disk level is not slower (BENCHMARKS.md)."""

    def __init__(self):
        self.frames: list[DataFrame] = []

    def __call__(self, df: DataFrame) -> DataFrame:
        self.frames.append(df.persist(StorageLevel.DISK_ONLY))
        return df

    def release(self) -> None:
        for df in self.frames:
            try:
                df.unpersist()
            except Exception as exc:  # e.g. the context stopped after running out of memory: keep that error
                log.warning("could not release a persisted frame: %s", str(exc).splitlines()[0][:200])


SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"


def shuffle_partitions_for(impressions: int, per_partition: int, parallelism: int) -> int:
    """Partitions that hold at most `per_partition` of `impressions` each, and at least one per core."""
    return max(int(parallelism), -(-int(impressions) // int(per_partition)))


@contextmanager
def sized_partitions(spark: SparkSession, config: BuildConfig, count_impressions):
    """Set spark.sql.shuffle.partitions for one build, and yield the choice for report.json.

    What the session already has wins (spark-submit --conf, spark-defaults.conf, the test's session);
    then the config's `spark.shuffle_partitions`; with `auto`, one partition per
    `spark.impressions_per_partition` impressions read (a count that Parquet answers from its footers),
    so that a task's rows do not grow with the data. The session's setting is restored at the end."""
    preset = spark.conf.getAll.get(SHUFFLE_PARTITIONS)
    if preset is not None:
        choice = {"shuffle_partitions": int(preset), "chosen_by": f"{SHUFFLE_PARTITIONS} of the Spark session"}
        log.info("shuffle partitions: %d (%s)", choice["shuffle_partitions"], choice["chosen_by"])
        yield choice
        return
    configured = config.spark.shuffle_partitions
    if configured != "auto":
        choice = {"shuffle_partitions": int(configured), "chosen_by": "spark.shuffle_partitions of the config"}
    else:
        impressions, per_partition = int(count_impressions()), config.spark.impressions_per_partition
        parallelism = spark.sparkContext.defaultParallelism
        choice = {
            "shuffle_partitions": shuffle_partitions_for(impressions, per_partition, parallelism),
            "chosen_by": "auto",
            "impressions": impressions,
            "impressions_per_partition": per_partition,
            "default_parallelism": parallelism,
        }
    log.info(
        "shuffle partitions: %d (%s)",
        choice["shuffle_partitions"],
        choice["chosen_by"]
        if configured != "auto"
        else f"auto: {choice['impressions']:,} impressions read, at most {choice['impressions_per_partition']:,} "
        f"per partition, at least {choice['default_parallelism']} (one per core)",
    )
    spark.conf.set(SHUFFLE_PARTITIONS, str(choice["shuffle_partitions"]))
    try:
        yield choice
    finally:
        try:
            spark.conf.unset(SHUFFLE_PARTITIONS)
        except Exception as exc:  # the JVM is gone (it ran out of memory): keep the build's own error
            log.warning("could not restore %s: %s", SHUFFLE_PARTITIONS, str(exc).splitlines()[0][:200])
