"""build_samples end to end on small synthetic data (CSV input with injected bad rows)."""

import glob
import gzip
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from feature_spec import load_spec, model_inputs
from pipelines.config import load_config
from pipelines.config_schema import build_config
from pipelines.samples.build_samples import RejectFractionError, _shard_layout, build_samples
from tests.samples_io import raw_value, read_all, read_files, shard_files

# Whole builds on generated data (a subprocess generates it): `make test`, not `make test-fast`.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = 1767225600  # generator start, 2026-01-01
DAY = 86400
WINDOW = 30 * 60
LOOKBACK_DAYS = 5
VALID_START, TEST_START = "2026-01-08", "2026-01-10"
CUT = T0 + 11 * DAY + DAY // 2  # events at or after this are removed for the point-in-time build

INJECTED_IMPRESSION_REJECTS = {
    "null_user_id": 2,
    "null_item_id": 2,
    "unparsable_ts": 2,
    "ts_out_of_range": 2,
    "duplicate_impression": 2,
}
INJECTED_CLICK_REJECTS = {"unparsable_ts": 2, "duplicate_click": 2}


def _generate(out_dir):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.generate_synthetic",
            "--output",
            str(out_dir),
            "--users",
            "150",
            "--items",
            "120",
            "--days",
            "12",
            "--impressions",
            "5000",
            "--seed",
            "7",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return {name: pd.read_parquet(os.path.join(out_dir, name)) for name in ("impressions", "clicks", "items")}


def _write_csv(tables: dict, out_dir):
    for name, df in tables.items():
        os.makedirs(os.path.join(out_dir, name), exist_ok=True)
        df.to_csv(os.path.join(out_dir, name, "part-0.csv"), index=False)
    return str(out_dir)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Generated raw logs as strings, plus the bad rows injected into them."""
    tables = _generate(tmp_path_factory.mktemp("generated"))
    imps = tables["impressions"].astype({"ts": "string"})
    clicks = tables["clicks"].astype({"ts": "string"})
    items = tables["items"]
    first = imps.iloc[0]
    bad_imps = pd.DataFrame(
        [
            {**first, "user_id": "", "impression_id": "bad-1"},
            {**first, "user_id": None, "impression_id": "bad-2"},
            {**first, "item_id": "   ", "impression_id": "bad-3"},
            {**first, "item_id": None, "impression_id": "bad-4"},
            {**first, "ts": "not-a-time", "impression_id": "bad-5"},
            {**first, "ts": "", "impression_id": "bad-6"},
            {**first, "ts": str(T0 * 1000), "impression_id": "bad-7"},
            {**first, "ts": str(T0 * 1000 + 5), "impression_id": "bad-8"},
            dict(first),  # repeats impression_id of row 0
            {**imps.iloc[1]},
        ]
    )
    bad_clicks = pd.DataFrame(
        [
            {**clicks.iloc[0], "ts": "garbage"},
            {**clicks.iloc[1], "ts": "12:00"},
            dict(clicks.iloc[2]),
            dict(clicks.iloc[3]),
        ]
    )
    dropped_items = set(items["item_id"].iloc[:3])
    raw_tables = {
        "impressions": pd.concat([imps, bad_imps], ignore_index=True),
        "clicks": pd.concat([clicks, bad_clicks], ignore_index=True),
        "items": pd.concat([items[~items["item_id"].isin(dropped_items)], items.iloc[[5]]], ignore_index=True),
    }
    return {"clean": tables, "tables": raw_tables, "dropped_items": dropped_items}


def _config(**overrides):
    sets = [
        f"{k}={v}"
        for k, v in {
            "input.format": "csv",
            "split.valid_start": VALID_START,
            "split.test_start": TEST_START,
            "history.lookback_days": LOOKBACK_DAYS,
            "item_stats.recent_days": 3,  # recent_days <= lookback_days (the config schema's rule)
            "passthrough": "[p_click, impression_id]",
            "spark.output_partitions": 2,
            **overrides,
        }.items()
    ]
    return load_config("build_samples", None, sets)


@pytest.fixture(scope="module")
def built(spark, raw, tmp_path_factory):
    base = tmp_path_factory.mktemp("build")
    raw_dir = _write_csv(raw["tables"], base / "raw")
    out = str(base / "samples")
    rep = build_samples(spark, raw_dir, out, _config())
    return {"dir": out, "report": rep, "samples": read_all(out), "spec": load_spec(out)}


def test_layout_spec_and_report(built):
    out = built["dir"]
    for split in ("train", "valid", "test"):
        assert glob.glob(os.path.join(out, split, "part-*.tfrecord.gz")), split
    for name in ("feature_spec.json", "report.json", "_SUCCESS"):
        assert os.path.exists(os.path.join(out, name)), name
    assert glob.glob(os.path.join(out, "vocab", "item_id", "*.parquet"))
    spec = built["spec"]
    roles = {f["name"]: f["role"] for f in spec["features"]}
    assert roles["label"] == "label"
    for name in ("user_id", "item_id", "ts", "p_click", "impression_id"):
        assert roles[name] == "metadata", name
    assert {
        "hist_click_items",
        "hist_skip_items",
        "user_top_genres",
        "item_genres",
        "item_ctr",
        "item_ctr_bucket",
        "position_idx",
    } <= {f["name"] for f in model_inputs(spec)}
    # Vocabulary files hold exactly size - 2 tokens, indexed from 2.
    item_vocab = pd.read_parquet(os.path.join(out, "vocab", "item_id"))
    assert sorted(item_vocab["index"]) == list(range(2, spec["vocabularies"]["item_id"]["size"]))
    rep = built["report"]
    assert {k: v["rows"] for k, v in rep["samples"].items()} == built["samples"].groupby("split").size().to_dict()
    assert set(rep["step_seconds"]) >= {"validate", "labels", "features", "write_tfrecords"}


def test_shards_are_random_samples_in_an_order_a_rebuild_reproduces(spark, built, raw, tmp_path):
    # Training shuffles blocks of 64 rows, not rows: a shard must not be a run of users or of times.
    for split in ("train", "valid", "test"):
        files = shard_files(built["dir"], split)
        assert len(files) == 2, split  # spark.output_partitions
        shards = [read_files(built["spec"], [path])["user_id"] for path in files]
        for users in shards:
            changes = (users != users.shift()).iloc[1:].mean()
            assert changes > 0.9, (split, changes)  # 150 users in random order: about 0.99
        # Each shard a random sample of rows, not of users: a user with 8 rows is in both but 1 time in 128.
        counts = pd.concat(shards).value_counts()
        frequent = set(counts[counts >= 8].index)
        in_both = frequent & set(shards[0]) & set(shards[1])
        assert len(frequent) >= 20 and len(in_both) >= 0.9 * len(frequent), (split, len(frequent), len(in_both))
    # The same data and config give the same shards, row for row.
    again = str(tmp_path / "again")
    build_samples(spark, _write_csv(raw["tables"], tmp_path / "raw"), again, _config())
    for split in ("train", "valid", "test"):
        first, second = (
            [gzip.decompress(open(path, "rb").read()) for path in shard_files(folder, split)]
            for folder in (built["dir"], again)
        )
        assert sorted(first) == sorted(second), split


def test_the_shards_do_not_depend_on_the_order_rows_reach_the_write(spark):
    # On a cluster, rows arrive from other partitions in another order in every run; a rebuild must
    # still write the same shards, row for row, in a random order.
    df = spark.createDataFrame([(f"key{i}", i % 7) for i in range(300)], "impression_key string, user long")
    layouts = []
    for arranged in (df.repartition(3), df.orderBy(F.desc("impression_key")).coalesce(1), df.repartition(5, "user")):
        shards = _shard_layout(arranged, build_config(_config())).rdd.glom().collect()
        layouts.append([[row["impression_key"] for row in shard] for shard in shards])
    assert layouts[0] == layouts[1] == layouts[2]
    assert len(layouts[0]) == 2 and sorted(sum(layouts[0], [])) == sorted(f"key{i}" for i in range(300))
    for keys in layouts[0]:
        assert keys != sorted(keys) and min(len(keys), 300 - len(keys)) > 100  # random order, random halves


def test_each_step_runs_its_spark_jobs_in_a_group_named_after_it(spark, raw, tmp_path):
    # What a user reads in the Spark UI or the event log to see which step a slow job belongs to.
    context = spark.sparkContext
    context.setJobGroup("caller", "the caller's own jobs")
    try:
        report = build_samples(spark, _write_csv(raw["tables"], tmp_path / "raw"), str(tmp_path / "out"), _config())
        assert context.getLocalProperty("spark.jobGroup.id") == "caller"  # the caller's group comes back
        tracker = context.statusTracker()
        assert len(report["step_seconds"]) == 7
        for step in report["step_seconds"]:
            assert tracker.getJobIdsForGroup(f"build_samples:{step}"), step
        assert not tracker.getJobIdsForGroup("build_samples:no such step")
    finally:
        for key in ("spark.jobGroup.id", "spark.job.description"):
            context.setLocalProperty(key, None)


def test_every_input_row_is_a_sample_or_a_counted_reject(built, raw):
    rep = built["report"]
    tables = raw["tables"]
    assert rep["rows_read"] == {name: len(df) for name, df in tables.items()}
    assert rep["rejected"]["impressions"] == INJECTED_IMPRESSION_REJECTS
    assert rep["rejected"]["clicks"] == INJECTED_CLICK_REJECTS
    assert rep["rejected"]["items"] == {"duplicate_item": 1}
    assert len(built["samples"]) + sum(INJECTED_IMPRESSION_REJECTS.values()) == len(tables["impressions"])
    rejects = pd.read_parquet(os.path.join(built["dir"], "rejects"))
    by_reason = rejects.groupby(["source", "reason"]).size().to_dict()
    expected = {("impressions", r): n for r, n in INJECTED_IMPRESSION_REJECTS.items()}
    expected.update({("clicks", r): n for r, n in INJECTED_CLICK_REJECTS.items()})
    expected[("items", "duplicate_item")] = 1
    assert by_reason == expected
    # The raw row is kept, so nothing is lost.
    assert rejects["row_json"].str.contains("bad-5").sum() == 1
    assert rep["clicks"]["valid"] == rep["clicks"]["attributed"] + rep["clicks"]["orphan"]
    assert rep["clicks"]["orphan"] > 0


def _pandas_labels(imps: pd.DataFrame, clicks: pd.DataFrame) -> pd.Series:
    """Independent attribution: id match inside the window, else the latest same user+item impression."""
    imps = imps.assign(ts=imps["ts"].astype("int64"), key="id:" + imps["impression_id"])
    clicks = clicks.assign(ts=clicks["ts"].astype("int64"))
    with_id = clicks[clicks["impression_id"].notna()].merge(
        imps[["impression_id", "ts"]], on="impression_id", how="inner", suffixes=("", "_imp")
    )
    ok = (with_id["ts"] >= with_id["ts_imp"]) & (with_id["ts"] - with_id["ts_imp"] <= WINDOW)
    credited = set(with_id.loc[ok, "impression_id"])
    without = clicks[clicks["impression_id"].isna()].sort_values("ts")
    right = imps.sort_values(["ts", "key"])[["user_id", "item_id", "ts", "impression_id"]].rename(
        columns={"impression_id": "matched", "ts": "ts_imp"}
    )
    asof = pd.merge_asof(
        without, right, left_on="ts", right_on="ts_imp", by=["user_id", "item_id"], direction="backward"
    )
    ok = asof["matched"].notna() & (asof["ts"] - asof["ts_imp"] <= WINDOW)
    credited |= set(asof.loc[ok, "matched"])
    return imps.set_index("impression_id")["ts"].index.to_series().isin(credited).astype(int)


def test_labels_agree_with_an_independent_pandas_computation(built, raw):
    clean = raw["clean"]
    expected = _pandas_labels(clean["impressions"], clean["clicks"])
    got = built["samples"].set_index("impression_id")["label"]
    assert len(got) == len(expected)
    pd.testing.assert_series_equal(got.sort_index().astype(int), expected.sort_index(), check_names=False)
    assert 0 < got.mean() < 0.5


def test_counts_agree_with_pandas_point_in_time_counts(built, raw):
    """user_clicks and item_impressions, de-normalized, against counts over [ts - lookback, ts)."""
    samples, spec = built["samples"], built["spec"]
    clicks = raw["clean"]["clicks"].assign(ts=lambda d: d["ts"].astype("int64"))
    imps = raw["clean"]["impressions"].assign(ts=lambda d: d["ts"].astype("int64"))
    rows = samples.sample(200, random_state=0)
    lookback = LOOKBACK_DAYS * DAY
    got_clicks = np.rint(raw_value(spec, "user_clicks", rows["user_clicks"]))
    got_imps = np.rint(raw_value(spec, "item_impressions", rows["item_impressions"]))
    for (_, row), n_clicks, n_imps in zip(rows.iterrows(), got_clicks, got_imps):
        c = clicks[(clicks.user_id == row.user_id) & (clicks.ts < row.ts) & (clicks.ts >= row.ts - lookback)]
        i = imps[(imps.item_id == row.item_id) & (imps.ts < row.ts) & (imps.ts >= row.ts - lookback)]
        assert n_clicks == len(c)
        assert n_imps == len(i)


def test_missing_items_get_the_unknown_genre(built, raw):
    spec = built["spec"]
    vocab = pd.read_parquet(os.path.join(built["dir"], "vocab", "genre")).set_index("token")["index"]
    samples = built["samples"]
    missing = samples[samples["item_id"].isin(raw["dropped_items"])]
    if missing.empty:
        pytest.skip("the generator showed none of the dropped items")
    unknown = vocab.get("unknown", 1)  # OOV when "unknown" never appears in train
    assert all(g[0] == unknown for g in missing["item_genres"])
    assert spec["vocabularies"]["genre"]["size"] == len(vocab) + 2


def test_features_before_a_cut_do_not_change_when_later_events_are_removed(spark, built, raw, tmp_path):
    """Point-in-time: drop every event at or after CUT; samples before CUT keep identical features."""

    def before_cut(df):
        ts = pd.to_numeric(df["ts"], errors="coerce")
        return df[ts.isna() | (ts < CUT)]

    tables = dict(raw["tables"])
    tables["impressions"] = before_cut(tables["impressions"])
    tables["clicks"] = before_cut(tables["clicks"])
    raw_dir = _write_csv(tables, tmp_path / "raw_cut")
    out = tmp_path / "samples_cut"
    out.mkdir()
    for name in ("_SUCCESS", "feature_spec.json", "stale-file"):  # an earlier SAMPLES output
        (out / name).write_text("left over from an earlier run")
    build_samples(spark, raw_dir, str(out), _config())
    assert not (out / "stale-file").exists(), "a rerun replaces the output"
    cut_samples = read_all(str(out))
    full = built["samples"]
    full = full[full["ts"] < CUT].set_index("impression_id").sort_index()
    cut_samples = cut_samples.set_index("impression_id").sort_index()
    assert len(full) == len(cut_samples) > 1000
    assert (cut_samples["ts"] >= CUT).sum() == 0
    names = [f["name"] for f in model_inputs(built["spec"])] + ["split"]
    for name in names:
        a, b = full[name], cut_samples[name]
        if isinstance(a.iloc[0], (list, np.ndarray)):
            assert [list(x) for x in a] == [list(x) for x in b], name
        else:
            np.testing.assert_array_equal(a.to_numpy(), b.to_numpy(), err_msg=name)


def test_too_many_rejects_fail_clearly_and_leave_no_output(spark, raw, tmp_path):
    raw_dir = _write_csv(raw["tables"], tmp_path / "raw")
    out = tmp_path / "samples"
    out.mkdir()
    for name in ("_SUCCESS", "feature_spec.json", "previous-output"):  # an earlier SAMPLES output
        (out / name).write_text("kept")
    with pytest.raises(RejectFractionError, match=r"max_reject_fraction.*unparsable_ts"):
        build_samples(spark, raw_dir, str(out), _config(**{"validation.max_reject_fraction": 0.0001}))
    assert sorted(os.listdir(out)) == ["_SUCCESS", "feature_spec.json", "previous-output"], (
        "a failed run leaves the previous output untouched"
    )
    assert not [p for p in os.listdir(tmp_path) if "staging" in p], "no staging directory is left behind"


def test_job_cli_rejects_unknown_config_keys():
    """A typo in --set fails at once and names the key."""
    result = subprocess.run(
        [sys.executable, "-m", "jobs.build_samples", "--input", "x", "--output", "y", "--set", "history.max_lenn=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "unknown config key 'history.max_lenn'" in result.stderr
