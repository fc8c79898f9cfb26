"""The pinned stack really works together."""

import sys


def test_tensorflow_io_file_system_plugins_are_loaded():
    import tensorflow as tf
    import tensorflow_io  # noqa: F401 - registers the plugins

    schemes = set(tf.io.gfile.get_registered_schemes())
    assert {"hdfs", "s3"} <= schemes, f"tensorflow-io plugins did not load: {sorted(schemes)}"


def test_pinned_versions():
    import numpy
    import pandas
    import pyarrow
    import pyspark
    import tensorflow as tf

    assert sys.version_info[:2] == (3, 11)
    assert pyspark.__version__ == "4.3.0"
    assert tf.__version__ == "2.17.1"
    assert numpy.__version__.startswith("1.")
    assert int(pyarrow.__version__.split(".")[0]) < 21
    assert pandas.__version__.startswith("2.")


def test_spark_runs_on_java_17_or_newer(spark):
    version = spark.sparkContext._jvm.java.lang.System.getProperty("java.specification.version")
    assert int(version.split(".")[-1] if version.startswith("1.") else version) >= 17
