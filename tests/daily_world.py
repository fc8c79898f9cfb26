"""The daily-build world the tests share: a 4-day log partitioned by date, a spec fitted on days 1-2, days
1..4 built with it, and one build of the whole log with it (built once per test session: `four_days`)."""

import glob
import hashlib
import os
import shutil
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import feature_spec
from pipelines.config import load_config
from pipelines.samples import build_samples as job
from pipelines.samples import days as daily
from sources.synthetic import generate
from tests.samples_io import read_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAY = 86400
D = [date(2026, 1, day) for day in range(1, 5)]  # the generator starts at 2026-01-01T00:00Z
KEY = ["user_id", "ts", "item_id", "position_idx"]  # one impression (the samples carry no impression_id)


def day_config(*sets):
    return load_config("build_samples", None, ["spark.shuffle_partitions=2", "spark.output_partitions=2", *sets])


def partition_by_date(src: str, dst: str) -> None:
    """RAW with impressions/ and clicks/ partitioned by UTC day (date=YYYY-MM-DD), items as they are."""
    for dataset in ("impressions", "clicks"):
        table = pq.read_table(os.path.join(src, dataset)).to_pandas()
        table["date"] = pd.to_datetime(table["ts"], unit="s", utc=True).dt.strftime("%Y-%m-%d")
        pq.write_to_dataset(
            pa.Table.from_pandas(table, preserve_index=False),
            os.path.join(dst, dataset),
            partition_cols=["date"],
        )
    os.makedirs(os.path.join(dst, "items"))
    for part in glob.glob(os.path.join(src, "items", "*.parquet")):
        os.link(part, os.path.join(dst, "items", os.path.basename(part)))


def sorted_samples(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(KEY).reset_index(drop=True)


def assert_same_samples(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = sorted_samples(a), sorted_samples(b)
    assert len(a) == len(b)
    assert sorted(a.columns) == sorted(b.columns)
    for column in a.columns:
        left, right = np.stack(a[column].to_numpy()), np.stack(b[column].to_numpy())
        np.testing.assert_array_equal(left, right, err_msg=column)


def day_samples(samples_dir: str, day: date) -> pd.DataFrame:
    return read_split(feature_spec.day_folder(samples_dir, day), feature_spec.DAY_SPLIT)


def file_digests(folder: str) -> dict:
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def spec_copy(spec_dir: str, folder, change) -> str:
    """A copy of a spec folder, its spec changed by `change(spec)` and hashed again."""
    shutil.copytree(spec_dir, folder)
    spec = feature_spec.load_spec(str(folder))
    change(spec)
    spec["spec_hash"] = feature_spec.compute_spec_hash(spec)
    (folder / feature_spec.SPEC_FILE).write_text(feature_spec.to_json(spec))
    return str(folder)


def build_four_days(spark, root) -> dict:
    """A 4-day log partitioned by date; a spec fitted on days 1-2; days 1..4 built with it; one build of
    the whole log with it."""
    flat, raw = str(root / "flat"), str(root / "raw")
    generate(flat, users=60, items=40, days=4, impressions=4000, seed=5)
    partition_by_date(flat, raw)
    config = day_config()
    spec_dir, samples, whole = str(root / "spec"), str(root / "samples"), str(root / "whole")
    fit = job.Plan(window=daily.fit_window(config, D[0], D[1]), fit_only=True)
    fit_report = job.build_samples(spark, raw, spec_dir, config, fit)
    days = daily.build_days(spark, raw, samples, config, spec_dir, D)
    job.build_samples(spark, raw, whole, config, job.Plan(spec_dir=spec_dir))
    return {
        "root": root,
        "flat": flat,
        "raw": raw,
        "config": config,
        "spec": spec_dir,
        "samples": samples,
        "whole": whole,
        "fit_report": fit_report,
        "days": days,
    }
