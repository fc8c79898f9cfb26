"""Bounded memory: partitions sized by the data, the local driver's heap, and a clear message when memory
still runs out, and builds that free what they held. Two builds here run in their own JVM with a 512 MB heap."""

import gc
import json
import os
import subprocess
import sys

import pytest
from py4j.java_gateway import JavaObject

from pipelines.config import ConfigError, load_config, load_job_config
from pipelines.samples import build_samples as job
from pipelines.samples import runtime
from pipelines.samples import spark as spark_setup
from sources.synthetic import generate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = runtime.SHUFFLE_PARTITIONS


# ---------------------------------------------------------------- partitions sized by the data
@pytest.mark.parametrize(
    "impressions, per_partition, parallelism, expected",
    [(0, 250_000, 2, 2), (250_000, 250_000, 2, 2), (750_001, 250_000, 2, 4), (10_000_000, 250_000, 2, 40)],
)
def test_auto_partitions_hold_at_most_the_target_and_one_per_core_at_least(
    impressions, per_partition, parallelism, expected
):
    assert runtime.shuffle_partitions_for(impressions, per_partition, parallelism) == expected


@pytest.fixture
def unset_partitions(spark):
    """The shared session as a fresh job's: spark.sql.shuffle.partitions unset (restored afterwards)."""
    before = spark.conf.get(KEY)
    spark.conf.unset(KEY)
    yield spark
    spark.conf.set(KEY, before)


def _config(*sets):
    return load_job_config("build_samples", None, list(sets))


def test_auto_partitions_follow_the_impressions_read_and_the_session_gets_its_setting_back(unset_partitions):
    spark = unset_partitions
    config = _config("spark.impressions_per_partition=1000")
    with runtime.sized_partitions(spark, config, lambda: 10_500) as choice:
        assert spark.conf.get(KEY) == "11"
    assert choice == {
        "shuffle_partitions": 11,
        "chosen_by": "auto",
        "impressions": 10_500,
        "impressions_per_partition": 1000,
        "default_parallelism": spark.sparkContext.defaultParallelism,
    }
    assert KEY not in spark.conf.getAll


def test_a_number_in_the_config_fixes_the_partitions_without_counting(unset_partitions):
    spark = unset_partitions

    def not_counted():
        raise AssertionError("the impressions were counted")

    with runtime.sized_partitions(spark, _config("spark.shuffle_partitions=7"), not_counted) as choice:
        assert spark.conf.get(KEY) == "7"
    assert choice["shuffle_partitions"] == 7 and choice["chosen_by"] == "spark.shuffle_partitions of the config"
    assert KEY not in spark.conf.getAll


def test_the_sessions_own_setting_wins_over_the_config(spark):
    # The test session sets 4, as spark-submit --conf spark.sql.shuffle.partitions=4 would.
    with runtime.sized_partitions(spark, _config("spark.shuffle_partitions=7"), lambda: 10**9) as choice:
        assert spark.conf.get(KEY) == "4"
    assert choice["shuffle_partitions"] == 4
    assert spark.conf.get(KEY) == "4"


@pytest.mark.parametrize("value", ["many", "0", "-3", "2.5"])
def test_shuffle_partitions_take_auto_or_a_positive_number(value):
    with pytest.raises(ConfigError, match="shuffle_partitions"):
        _config(f"spark.shuffle_partitions={value}")


# ---------------------------------------------------------------- the local driver's memory
def test_the_local_driver_gets_a_quarter_of_the_machine_and_at_least_1g():
    total = spark_setup.machine_memory_bytes()
    assert total and total >= 1 << 30
    expected = max(1024, int(total * spark_setup.LOCAL_MEMORY_SHARE) >> 20)
    assert spark_setup.default_driver_memory("local[*]") == f"{expected}m"
    assert spark_setup.default_driver_memory("local[2]") == f"{expected}m"
    assert spark_setup.default_driver_memory("spark://127.0.0.1:7077") == spark_setup.OTHER_MASTER_MEMORY


def test_the_machine_memory_is_the_containers_limit_when_that_is_lower():
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        if os.path.exists(path):
            text = open(path).read().strip()
            limit = int(text) if text.isdigit() else None
            break
    assert spark_setup.machine_memory_bytes() == (min(physical, limit) if limit else physical)


def test_the_session_draws_no_console_progress_bars(spark):
    # PySpark starts its JVM as a shell, for which spark-submit turns the bars on unless told otherwise.
    assert spark.sparkContext.getConf().get("spark.ui.showConsoleProgress") == "false"


# ---------------------------------------------------------------- whole builds on a 512 MB heap
SMALL_HEAP = "512m"


@pytest.fixture(scope="module")
def raw_400k(tmp_path_factory):
    """400,000 synthetic impressions: on a 512 MB heap in one shuffle partition, a build with frames
    persisted in memory and 10,000-row cache batches fails with java.lang.OutOfMemoryError."""
    raw = str(tmp_path_factory.mktemp("memory") / "raw")
    subprocess.run(
        [sys.executable, "-m", "jobs.generate_synthetic", "--output", raw, "--impressions", "400000", "--seed", "3"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return raw


def _build(raw, out, *sets, submit_args=None):
    env = {**os.environ, "CTR_DRIVER_MEMORY": SMALL_HEAP}
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    if submit_args:
        env["PYSPARK_SUBMIT_ARGS"] = submit_args
    command = [sys.executable, "-m", "jobs.build_samples", "--input", raw, "--output", out]
    for item in sets:
        command += ["--set", item]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_a_512m_heap_builds_400k_impressions_in_one_partition(raw_400k, tmp_path):
    out = str(tmp_path / "samples")
    result = _build(raw_400k, out, "spark.shuffle_partitions=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OutOfMemoryError" not in result.stderr
    assert "[Stage " not in result.stderr  # no console progress bars in the job's log
    with open(os.path.join(out, "report.json")) as fh:
        report = json.load(fh)
    assert report["spark"]["driver_memory"] == SMALL_HEAP
    assert report["partitions"] == {"shuffle_partitions": 1, "chosen_by": "spark.shuffle_partitions of the config"}
    assert report["spark"]["shuffle_partitions"] == 1
    # Nothing lost: every impression read is a sample or a counted reject.
    assert report["rows_read"]["impressions"] == 400_000
    samples = sum(split["rows"] for split in report["samples"].values())
    assert samples + report["rejected_total"]["impressions"] == 400_000


@pytest.mark.slow
def test_running_out_of_memory_names_the_step_and_the_setting_and_publishes_nothing(raw_400k, tmp_path):
    # Cache batches of a million rows cannot fit a 512 MB heap: a real OutOfMemoryError in a real build.
    out = tmp_path / "samples"
    submit_args = "--conf spark.sql.inMemoryColumnarStorage.batchSize=1000000 pyspark-shell"
    result = _build(raw_400k, str(out), "spark.shuffle_partitions=1", submit_args=submit_args)
    assert result.returncode == 3, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: step ") and "ran out of memory" in lines[-1]
    assert f"spark.driver.memory (now {SMALL_HEAP}" in lines[-1] and "CTR_DRIVER_MEMORY" in lines[-1]
    # No traceback of the job itself (the Python workers that the dying JVM drops may print their own).
    ours = [line for line in lines if 'jobs/build_samples.py", line' in line or line.startswith("py4j.protocol.")]
    assert not ours, "\n".join(lines[-60:])
    assert not out.exists()
    assert [name for name in os.listdir(tmp_path) if name.startswith(".samples")] == []


# ---------------------------------------------------------------- many builds in one process
def _py4j_handles() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, JavaObject))


@pytest.mark.slow
def test_a_build_leaves_no_py4j_handles_behind(spark, tmp_path):
    """Each handle keeps a Dataset and its plans in the driver's heap; they sit in reference cycles that only
    the cycle collector frees (docs/memory.md). With collections off, a build that did not collect them
    itself would leave thousands."""
    generate(str(tmp_path / "raw"), 40, 30, 3, 3000, 5)
    config = load_config("build_samples", None, ["spark.shuffle_partitions=2", "spark.output_partitions=2"])
    gc.collect()
    before = _py4j_handles()
    gc.disable()
    try:
        report = job.build_samples(spark, str(tmp_path / "raw"), str(tmp_path / "samples"), config)
        left = _py4j_handles() - before
    finally:
        gc.enable()
    assert report["rows_read"]["impressions"] == 3000
    assert left < 20, f"{left} py4j handles left behind by one build"


# ---------------------------------------------------------------- the check that a change kept every sample
def test_same_samples_sees_past_shards_and_row_order_but_not_past_one_changed_row(tmp_path):
    from benchmarks.same_samples import compare
    from tests.tf_samples import write_samples

    sizes = {"train": 60, "valid": 20, "test": 20}
    write_samples(tmp_path / "a", sizes=sizes, seed=3, shards=2)
    write_samples(tmp_path / "b", sizes=sizes, seed=3, shards=3)  # the same rows, cut into other shards
    write_samples(tmp_path / "c", sizes=sizes, seed=4, shards=2)  # other rows
    write_samples(tmp_path / "d", sizes={**sizes, "valid": 19}, seed=3, shards=2)  # a row fewer in valid
    assert compare(str(tmp_path / "a"), str(tmp_path / "b")) == []
    other = compare(str(tmp_path / "a"), str(tmp_path / "c"))
    assert [line.split(":")[0] for line in other] == sorted(sizes) and all("row hashes differ" in x for x in other)
    assert "valid: 20 rows != 19 rows" in compare(str(tmp_path / "a"), str(tmp_path / "d"))
