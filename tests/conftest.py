import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MOVIELENS_DIR = ROOT.parent / "shared" / "data" / "movielens-small"


@pytest.fixture(scope="session")
def spark():
    """One real local SparkSession for the whole test session."""
    from pipelines.samples.spark import get_spark

    session = get_spark(
        "ctr-tests",
        {
            "spark.master": "local[2]",
            "spark.sql.shuffle.partitions": "4",
            "spark.default.parallelism": "4",
            "spark.sql.adaptive.coalescePartitions.enabled": "true",
        },
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def movielens_dir():
    if not (MOVIELENS_DIR / "ratings.csv").exists():
        pytest.skip(f"MovieLens data not found at {MOVIELENS_DIR} (only on developer machines and CI)")
    return MOVIELENS_DIR


@pytest.fixture(scope="session")
def four_days(tmp_path_factory, spark):
    """The daily-build world of tests/daily_world.py, built once for every module that uses it."""
    from tests.daily_world import build_four_days

    return build_four_days(spark, tmp_path_factory.mktemp("daily"))
