"""Real-log robustness: out-of-range timestamps, slate impression ids, spark-submit
settings, standard CSV, a partitioning-independent spec hash, empty inputs and splits,
file-order item dedup, bad configs."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from features import labels, validate
from pipelines.config import load_config
from pipelines.samples.build_samples import EmptySplitError, build_samples
from pipelines.samples.raw_input import InputError, read_raw, type_csv_columns
from tests.samples_io import read_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = 1767225600  # 2026-01-01
DAY = 86400
WINDOW = 1800


def _write_parquet(table: pd.DataFrame, folder, schema: pa.Schema | None = None) -> None:
    os.makedirs(folder, exist_ok=True)
    pq.write_table(
        pa.Table.from_pandas(table, schema=schema, preserve_index=False), os.path.join(folder, "part-0.parquet")
    )


def _write_raw(raw_dir, impressions: pd.DataFrame, clicks: pd.DataFrame, items: pd.DataFrame) -> str:
    for name, table in (("impressions", impressions), ("clicks", clicks), ("items", items)):
        _write_parquet(table, os.path.join(raw_dir, name))
    return str(raw_dir)


def _reasons(df) -> list:
    return [r["reject_reason"] for r in df.orderBy("n").select("n", "reject_reason").collect()]


# ---------------------------------------------------------------- timestamps beyond a long
BAD_TS_DOUBLES = [float(T0), float("inf"), float("-inf"), float("nan"), 9.3e18, 1.2345678901234567e19, -9.3e18]
BAD_TS_TEXT = [
    str(T0),
    "Infinity",
    "-Infinity",
    "NaN",
    "9300000000000000000",
    "12345678901234567890",
    "-9300000000000000000",
]
EXPECTED_TS_REASONS = [
    None,
    "ts_out_of_range",
    "ts_out_of_range",
    "unparsable_ts",
    "ts_out_of_range",
    "ts_out_of_range",
    "ts_out_of_range",
]


def _events(ts_values, ts_type: pa.DataType) -> tuple[pd.DataFrame, pa.Schema]:
    n = len(ts_values)
    table = pd.DataFrame({"n": range(n), "user_id": [f"u{i}" for i in range(n)], "item_id": ["a"] * n, "ts": ts_values})
    schema = pa.schema([("n", pa.int64()), ("user_id", pa.string()), ("item_id", pa.string()), ("ts", ts_type)])
    return table, schema


@pytest.mark.parametrize(
    "fmt,ts_type,values",
    [
        ("parquet", pa.float64(), BAD_TS_DOUBLES),
        ("parquet", pa.string(), BAD_TS_TEXT),
        ("csv", pa.string(), BAD_TS_TEXT),
    ],
)
def test_a_timestamp_beyond_a_long_is_a_counted_reject_not_a_failed_job(spark, tmp_path, fmt, ts_type, values):
    table, schema = _events(values, ts_type)
    folder = tmp_path / "raw" / "impressions"
    if fmt == "csv":
        os.makedirs(folder)
        table.to_csv(folder / "part-0.csv", index=False)
    else:
        os.makedirs(folder)
        # pyarrow straight from lists: from pandas, a NaN would become a null.
        columns = {f.name: pa.array(table[f.name].tolist(), f.type) for f in schema}
        pq.write_table(pa.Table.from_pydict(columns, schema=schema), folder / "part-0.parquet")
    raw = read_raw(spark, str(tmp_path / "raw"), "impressions", fmt)
    checked = validate.validate_events(raw, "impressions", "1990-01-01", "2100-01-01")
    assert _reasons(checked) == EXPECTED_TS_REASONS
    assert [r["ts"] for r in validate.valid_rows(checked).collect()] == [T0]
    # Each reject keeps its raw ts, so nothing is lost.
    rejects = validate.rejects_of(checked, "impressions").orderBy("ts_raw").collect()
    assert len(rejects) == len(values) - 1 and all(r["ts_raw"] for r in rejects)


# ---------------------------------------------------------------- slates and id matching
IMP_SCHEMA = "user_id string, item_id string, ts long, impression_id string"
CLICK_SCHEMA = "user_id string, item_id string, ts long, impression_id string"


def _labelled(spark, impressions: list, clicks: list):
    """Validate both logs, attribute the clicks; (labels by (user, item, id), rejects, orphan count)."""
    imps = validate.validate_events(
        spark.createDataFrame(impressions, IMP_SCHEMA), "impressions", "1990-01-01", "2100-01-01"
    )
    clks = validate.validate_events(spark.createDataFrame(clicks, CLICK_SCHEMA), "clicks", "1990-01-01", "2100-01-01")
    rejects = [
        (r["source"], r["reason"])
        for r in validate.rejects_of(imps, "impressions").unionByName(validate.rejects_of(clks, "clicks")).collect()
    ]
    keyed = labels.with_impression_key(validate.valid_rows(imps))
    attributed = labels.attribute_clicks(validate.valid_rows(clks), keyed, WINDOW)
    labelled = labels.label_impressions(keyed, attributed)
    got = {(r["user_id"], r["item_id"], r["impression_id"]): r["label"] for r in labelled.collect()}
    orphans = attributed.where(F.col("credited_key").isNull()).count()
    return got, rejects, orphans


def test_a_slate_of_ten_items_under_one_id_keeps_every_row_and_labels_the_two_clicked(spark):
    slate = [("u1", f"i{k}", T0, "req-1") for k in range(10)]
    clicks = [("u1", "i3", T0 + 60, "req-1"), ("u1", "i7", T0 + 90, "req-1")]
    got, rejects, orphans = _labelled(spark, slate, clicks)
    assert rejects == []
    assert got == {("u1", f"i{k}", "req-1"): int(k in (3, 7)) for k in range(10)}
    assert orphans == 0


def test_an_id_reused_by_another_user_names_another_impression(spark):
    impressions = [("u1", "a", T0, "r9"), ("u2", "a", T0 + 5, "r9"), ("u2", "b", T0 + 5, "r9")]
    clicks = [("u2", "a", T0 + 60, "r9")]
    got, rejects, orphans = _labelled(spark, impressions, clicks)
    assert rejects == []
    assert got == {("u1", "a", "r9"): 0, ("u2", "a", "r9"): 1, ("u2", "b", "r9"): 0}
    assert orphans == 0


def test_a_click_whose_id_names_another_users_or_items_impression_is_an_orphan(spark):
    impressions = [("u1", "x", T0, "r5"), ("u2", "y", T0, "r6")]
    # u2 clicks x under u1's request id; u2 clicks z (not in its slate) under its own id.
    clicks = [("u2", "x", T0 + 30, "r5"), ("u2", "z", T0 + 30, "r6")]
    got, rejects, orphans = _labelled(spark, impressions, clicks)
    assert got == {("u1", "x", "r5"): 0, ("u2", "y", "r6"): 0}
    assert orphans == 2


def test_a_repeated_slate_row_is_still_a_duplicate(spark):
    impressions = [("u1", "a", T0, "r1"), ("u1", "a", T0, "r1"), ("u1", "b", T0, "r1")]
    got, rejects, _ = _labelled(spark, impressions, [])
    assert rejects == [("impressions", "duplicate_impression")]
    assert got == {("u1", "a", "r1"): 0, ("u1", "b", "r1"): 0}


# ---------------------------------------------------------------- CSV
def test_csv_with_quoted_newlines_commas_and_quotes_is_read_whole_and_typed(spark, tmp_path):
    folder = tmp_path / "raw" / "impressions"
    os.makedirs(folder)
    (folder / "part-0.csv").write_text(
        "user_id,item_id,ts,note,p_click,slot\n"
        f'u1,a,{T0},"first line\nsecond line",0.25,1\n'
        f'u2,b,{T0 + 1},"a comma, and ""quotes""",0.5,2\n'
        f"u3,c,{T0 + 2},plain,,3\n"
    )
    raw = read_raw(spark, str(tmp_path / "raw"), "impressions", "csv")
    typed = type_csv_columns(raw, ["p_click", "slot", "note"])
    rows = typed.orderBy("user_id").collect()
    assert [r["note"] for r in rows] == ["first line\nsecond line", 'a comma, and "quotes"', "plain"]
    assert isinstance(typed.schema["p_click"].dataType, T.DoubleType)
    assert isinstance(typed.schema["slot"].dataType, T.LongType)
    assert isinstance(typed.schema["note"].dataType, T.StringType)
    assert [r["p_click"] for r in rows] == [0.25, 0.5, None]


# ---------------------------------------------------------------- empty inputs
def test_an_empty_clicks_folder_means_no_clicks_and_empty_impressions_is_named(spark, tmp_path):
    raw = tmp_path / "raw"
    for name in ("impressions", "clicks"):
        os.makedirs(raw / name)
        (raw / name / "_SUCCESS").write_text("")
    clicks = read_raw(spark, str(raw), "clicks", "parquet")
    assert clicks.count() == 0 and {"user_id", "item_id", "ts", "impression_id"} <= set(clicks.columns)
    with pytest.raises(InputError, match="impressions: no parquet data files"):
        read_raw(spark, str(raw), "impressions", "parquet")
    with pytest.raises(InputError, match="items: .* does not exist"):
        read_raw(spark, str(raw), "items", "parquet")


def test_items_repeated_keep_the_first_row_in_file_order(spark, tmp_path):
    folder = tmp_path / "items"
    _write_parquet(pd.DataFrame({"item_id": ["a", "a", "b"], "genres": ["Zany|Yarn", "Action", "Drama"]}), folder)
    checked = validate.normalize_items(spark.read.parquet(str(folder)), [])
    kept = {r["item_id"]: r["genres"] for r in validate.valid_rows(checked).collect()}
    assert kept == {"a": ["Zany", "Yarn"], "b": ["Drama"]}
    assert [r["reason"] for r in validate.rejects_of(checked, "items").collect()] == ["duplicate_item"]


# ---------------------------------------------------------------- whole builds on a small world
def _small_world(seed: int = 11, users: int = 60, items: int = 40, days: int = 6, per_day: int = 500):
    """Impressions with ids and positions, clicks on some of them, items with genres."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    imps = pd.DataFrame(
        {
            "user_id": [f"u{k}" for k in rng.integers(0, users, n)],
            "item_id": [f"i{k}" for k in rng.integers(0, items, n)],
            "ts": np.sort(T0 + rng.integers(0, days * DAY, n)),
            "impression_id": [f"imp-{k}" for k in range(n)],
            "position": rng.integers(0, 5, n).astype("int32"),
            "p_click": rng.uniform(0.01, 0.4, n),
        }
    )
    clicked = imps[rng.uniform(size=n) < imps["p_click"]]
    clicks = pd.DataFrame(
        {
            "user_id": clicked["user_id"],
            "item_id": clicked["item_id"],
            "ts": clicked["ts"] + rng.integers(0, 600, len(clicked)),
            "impression_id": clicked["impression_id"],
        }
    )
    genres = ["Action", "Comedy", "Drama", "Horror"]
    catalog = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(items)],
            "genres": ["|".join(rng.choice(genres, 2, replace=False)) for _ in range(items)],
            "release_year": rng.integers(1980, 2025, items).astype("int32"),
        }
    )
    return imps, clicks, catalog


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory):
    return _write_raw(tmp_path_factory.mktemp("small_raw"), *_small_world())


def _small_config(*sets: str) -> dict:
    return load_config(
        "build_samples",
        None,
        [
            "split.valid_start=2026-01-05",
            "split.test_start=2026-01-06",
            "history.lookback_days=3",
            "item_stats.recent_days=2",
            "spark.output_partitions=2",
            *sets,
        ],
    )


@pytest.mark.slow
def test_spec_hash_and_samples_do_not_depend_on_shuffle_partitions(spark, small_raw, tmp_path):
    built = {}
    before = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        for partitions in (1, 8):
            spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
            out = str(tmp_path / f"samples-{partitions}")
            report = build_samples(spark, small_raw, out, _small_config())
            with open(os.path.join(out, "feature_spec.json")) as fh:
                spec = json.load(fh)
            samples = read_all(out).drop(columns=["split"]).sort_values(["user_id", "item_id", "ts"])
            built[partitions] = (report["spec_hash"], spec, samples.reset_index(drop=True))
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)
    (hash_1, spec_1, rows_1), (hash_8, spec_8, rows_8) = built[1], built[8]
    assert spec_1 == spec_8
    assert hash_1 == hash_8
    pd.testing.assert_frame_equal(rows_1, rows_8)


@pytest.mark.slow
def test_an_empty_split_fails_the_build_naming_the_split_and_boundaries(spark, small_raw, tmp_path):
    config = _small_config("split.valid_start=2026-01-05", "split.test_start=2026-03-01")
    with pytest.raises(EmptySplitError, match=r"the test split is empty: .*2026-03-01T00:00:00Z"):
        build_samples(spark, small_raw, str(tmp_path / "samples"), config)
    assert not os.path.exists(tmp_path / "samples")


@pytest.mark.slow
def test_spark_submit_master_and_conf_win_over_the_yaml(small_raw, tmp_path):
    bin_dir = os.path.dirname(sys.executable)
    submit = os.path.join(bin_dir, "spark-submit")
    if not os.path.exists(submit):
        submit = shutil.which("spark-submit")
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    out = tmp_path / "samples"
    result = subprocess.run(
        [
            submit,
            "--master",
            "local[1]",
            "--conf",
            "spark.sql.shuffle.partitions=3",
            os.path.join(ROOT, "jobs", "build_samples.py"),
            "--input",
            small_raw,
            "--output",
            str(out),
            "--set",
            "split.valid_start=2026-01-05",
            "--set",
            "split.test_start=2026-01-06",
            "--set",
            "spark.shuffle_partitions=17",
        ],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "report.json") as fh:
        settings = json.load(fh)["spark"]
    assert settings["master"] == "local[1]"
    assert settings["shuffle_partitions"] == 3


# ---------------------------------------------------------------- config errors
def test_bad_yaml_is_a_config_error_with_exit_code_2(tmp_path, capsys):
    from jobs import build_samples as job

    bad = tmp_path / "bad.yaml"
    bad.write_text("history: [unclosed\n")
    base = ["--input", str(tmp_path / "raw"), "--output", str(tmp_path / "out")]
    assert job.main(base + ["--conf", str(bad)]) == 2
    assert "config error" in capsys.readouterr().err
    assert job.main(base + ["--set", "history.max_len=[1, 2"]) == 2
    assert "config error" in capsys.readouterr().err
    assert job.main(base + ["--conf", str(tmp_path / "missing.yaml")]) == 2
    assert "config error" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")
