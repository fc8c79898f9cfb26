"""What Spark's own file system reaches: RAW, SAMPLES, and the scratch folder where it writes its parts
(rejects/, vocab/) when it cannot write SAMPLES itself (s3:// without the hadoop-aws jars)."""

from __future__ import annotations

import posixpath

from pyspark.sql import SparkSession

from pipelines import publish, storage
from pipelines.config_schema import BuildConfig
from pipelines.publish import OutputRefused
from pipelines.samples.raw_input import InputError


def hadoop_has_file_system(spark: SparkSession, path: str) -> bool:
    """True when Spark's Hadoop can write `path`: local, or a scheme it has a FileSystem class for."""
    if storage.is_local(path):
        return True
    scheme = path.split("://", 1)[0]
    context = spark.sparkContext
    try:
        context._jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(scheme, context._jsc.hadoopConfiguration())
    except Exception:  # py4j: UnsupportedFileSystemException "No FileSystem for scheme"
        return False
    return True


def check_spark_reads(spark: SparkSession, raw_dir: str) -> None:
    """InputError, before any work, when Spark cannot read RAW (e.g. s3:// without the hadoop-aws jars)."""
    raw = storage.normalize(raw_dir)
    if not hadoop_has_file_system(spark, raw):
        raise InputError(
            f"Spark cannot read the input {raw}: its Hadoop file system has no {raw.split('://', 1)[0]}:// "
            "(s3 needs the hadoop-aws jars, which the pyspark wheel lacks); copy RAW to a local or hdfs:// path"
        )


def spark_parts_folder(spark: SparkSession, raw_dir: str, output: str, config: BuildConfig) -> str | None:
    """Where Spark writes rejects/ and vocab/: None for the staging of SAMPLES itself, when Spark's own
    file system reaches SAMPLES; otherwise output.spark_scratch, from which they are copied into SAMPLES.

    OutputRefused, before anything is written, when Spark cannot write SAMPLES and no scratch is set."""
    final = storage.normalize(output)
    if hadoop_has_file_system(spark, final):
        return None
    scheme = final.split("://", 1)[0]
    scratch = config.output.spark_scratch
    if not scratch:
        raise OutputRefused(
            f"Spark cannot write the rejects/ and vocab/ of {final}: its Hadoop file system has no {scheme}:// "
            "(s3 needs the hadoop-aws jars, which the pyspark wheel lacks); set output.spark_scratch to a local "
            "or hdfs:// folder, where Spark writes them and from which the job copies them into SAMPLES, "
            "or write SAMPLES to a local or hdfs:// path"
        )
    scratch = storage.normalize(scratch)
    how = storage.relation(scratch, raw_dir)
    if how in ("is", "lies inside"):
        raise OutputRefused(
            f"output.spark_scratch {scratch} {how} the input {storage.normalize(raw_dir)}; choose another folder"
        )
    if not hadoop_has_file_system(spark, scratch):
        raise OutputRefused(f"output.spark_scratch {scratch}: Spark's Hadoop has no file system for it")
    publish.check_writable(posixpath.join(scratch, ".staging"))
    return scratch


def scratch_staging(folder: str, final: str, started: float) -> publish.Staging:
    """This run's own marked folder under output.spark_scratch (whatever else is there stays)."""
    prefix = f".{posixpath.basename(final)}.spark-staging-"
    storage.makedirs(folder)
    publish.remove_stale_stagings(folder, prefix, started)
    return publish.Staging(folder, prefix, started)
