"""Daily builds: fit once (--fit-only), apply the spec day by day (--spec --date), rebuild a day.

The reference for every day build is one build of the whole log with the same spec: a sample must not
depend on whether its day was built alone, which proves that a day's window reads all the history it needs.
"""

import os
import subprocess
import sys
from datetime import date, datetime, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import feature_spec
from pipelines.config import ConfigError
from pipelines.publish import OutputRefused
from pipelines.samples import build_samples as job
from pipelines.samples import days as daily
from pipelines.samples import fitting
from pipelines.samples.fitting import SpecNotApplicable
from pipelines.samples.windows import Window, day_start
from sources.synthetic import generate
from tests.daily_world import (
    DAY,
    ROOT,
    D,
    assert_same_samples,
    day_config,
    day_samples,
    file_digests,
    partition_by_date,
    spec_copy,
)
from tests.samples_io import read_all

# ---------------------------------------------------------------- fast: the window and the flags


def test_window_of_a_day_reaches_back_a_lookback_and_forward_an_attribution_window():
    w = Window(date(2026, 1, 21), date(2026, 1, 21), "UTC", lookback=7 * DAY, attribution=30 * 60)
    t = int(datetime(2026, 1, 21, tzinfo=timezone.utc).timestamp())
    assert (w.start, w.end) == (t, t + DAY)
    assert w.read_range("impressions") == (t - 7 * DAY, t + DAY)
    assert w.read_range("clicks") == (t - 7 * DAY, t + DAY + 1800)
    assert w.partitions() == (date(2026, 1, 13), date(2026, 1, 23))
    assert w.describe({"impressions": True, "clicks": False})["raw_partitions"] == {
        "impressions": "2026-01-13..2026-01-23",
        "clicks": "none: filtered by time",
    }


def test_a_day_in_a_time_zone_starts_at_its_midnight_and_may_last_23_hours():
    paris = Window(date(2026, 3, 29), date(2026, 3, 29), "Europe/Paris", lookback=DAY, attribution=60)
    assert paris.start == int(datetime(2026, 3, 28, 23, tzinfo=timezone.utc).timestamp())
    assert paris.end - paris.start == 23 * 3600  # summer time starts that night
    assert day_start(date(2026, 1, 21), "UTC") == 1768953600


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--date", "2026-01-02"], "needs --spec"),
        (["--date", "2026-01-02", "--spec", "S", "--start", "2026-01-01", "--end", "2026-01-03"], "exclude"),
        (["--start", "2026-01-03", "--end", "2026-01-01", "--spec", "S"], "before --start"),
        (["--start", "2026-01-03", "--spec", "S"], "come together"),
        (["--fit-only", "--spec", "S"], "takes no --spec"),
        (["--date", "2026-02-30", "--spec", "S"], "--date"),
        (["--overwrite"], "applies to day builds"),
    ],
)
def test_daily_flags_that_do_not_go_together_exit_2(argv, message, capsys):
    from jobs.build_samples import parse_args

    with pytest.raises(SystemExit) as exc:
        parse_args(["--input", "RAW", "--output", "OUT", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_dated_samples_must_hold_only_day_folders(tmp_path):
    (tmp_path / "date=2026-01-01").mkdir()
    (tmp_path / ".date=2026-01-02.staging-1234").mkdir()
    assert daily.check_dated_samples(str(tmp_path)) == str(tmp_path)
    (tmp_path / "train").mkdir()
    with pytest.raises(OutputRefused, match="train"):
        daily.check_dated_samples(str(tmp_path))


# ---------------------------------------------------------------- four days, built day by day and at once


@pytest.mark.slow
def test_every_day_sample_equals_the_one_build_of_the_whole_log(four_days):
    whole = read_all(four_days["whole"]).drop(columns=["split"])
    days = pd.concat([day_samples(four_days["samples"], day) for day in D], ignore_index=True)
    assert len(whole) == 4000  # every impression of the log: none lost, none twice
    assert_same_samples(days, whole)
    # Every day shares the spec's hash, which the whole build has too.
    spec_hash = feature_spec.spec_hash(feature_spec.load_spec(four_days["spec"]))
    for day in D:
        assert feature_spec.spec_hash(feature_spec.load_spec(feature_spec.day_folder(four_days["samples"], day))) == (
            spec_hash
        )
    assert feature_spec.spec_hash(feature_spec.load_spec(four_days["whole"])) == spec_hash


@pytest.mark.slow
def test_the_fit_uses_its_days_only_and_a_day_counts_its_oov_tokens(four_days):
    raw = pq.read_table(os.path.join(four_days["flat"], "impressions")).to_pandas()
    fit_days = raw[raw.ts < day_start(D[2], "UTC")]
    spec = feature_spec.load_spec(four_days["spec"])
    # The user vocabulary holds the users of the fit window, nobody else.
    users = pq.read_table(os.path.join(four_days["spec"], "vocab", "user_id")).to_pandas()
    assert set(users.token) == set(fit_days.user_id)
    assert feature_spec.get_vocabulary(spec, "user_id")["num_tokens"] == fit_days.user_id.nunique()
    assert four_days["fit_report"]["rows_owned"]["impressions"] == len(fit_days)
    assert spec["splits"] == {}
    # Day 4: its impressions whose user or item the fit never saw are counted as OOV.
    day4 = raw[(raw.ts >= day_start(D[3], "UTC")) & (raw.ts < day_start(D[3], "UTC") + DAY)]
    report = four_days["days"][3]["report"]
    items = set(pq.read_table(os.path.join(four_days["spec"], "vocab", "item_id")).to_pandas().token)
    assert report["oov"]["user_id"] == {
        "tokens": len(day4),
        "oov": int((~day4.user_id.isin(set(users.token))).sum()),
        "oov_rate": pytest.approx((~day4.user_id.isin(set(users.token))).mean(), abs=1e-6),
    }
    assert report["oov"]["item_id"]["oov"] == int((~day4.item_id.isin(items)).sum())
    assert report["rows_owned"]["impressions"] == len(day4) == report["samples"]["samples"]["rows"]
    assert report["window"]["raw_partitions"]["impressions"] == "2025-12-04..2026-01-06"  # 30-day lookback


@pytest.mark.slow
def test_a_day_is_skipped_when_complete_and_replaced_alone_with_overwrite(four_days, spark, monkeypatch):
    samples, others = four_days["samples"], [D[0], D[2], D[3]]
    before = {day: file_digests(feature_spec.day_folder(samples, day)) for day in D}
    day2 = day_samples(samples, D[1])

    skipped = daily.build_days(spark, four_days["raw"], samples, four_days["config"], four_days["spec"], [D[1]])
    assert skipped[0]["skipped"] is True
    assert file_digests(feature_spec.day_folder(samples, D[1])) == before[D[1]]

    checks = []  # the spec's vocabularies are read and checked by Spark once per run, not again per day
    check = fitting.check_vocabularies
    monkeypatch.setattr(fitting, "check_vocabularies", lambda *args: checks.append(args[2]) or check(*args))
    rebuilt = daily.build_days(
        spark, four_days["raw"], samples, four_days["config"], four_days["spec"], [D[1]], overwrite=True
    )
    assert rebuilt[0]["skipped"] is False and len(checks) == 1
    for day in others:
        assert file_digests(feature_spec.day_folder(samples, day)) == before[day], day
    assert_same_samples(day_samples(samples, D[1]), day2)
    assert sorted(os.listdir(samples)) == [f"date={day.isoformat()}" for day in D]  # no staging left behind

    # A spec with another hash (a refit) does not silently mix into complete days.
    refit = spec_copy(
        four_days["spec"], four_days["root"] / "refit", lambda spec: spec["smoothed_ctr"].update(prior=0.5)
    )
    with pytest.raises(OutputRefused, match="days of another spec"):  # the other days are the old spec's
        daily.build_days(spark, four_days["raw"], samples, four_days["config"], refit, [D[1]])
    with pytest.raises(OutputRefused, match="--overwrite"):  # and so is the day itself
        daily.build_days(spark, four_days["raw"], samples, four_days["config"], refit, [D[1]], mixed_specs=True)
    assert file_digests(feature_spec.day_folder(samples, D[1])) != {}


@pytest.mark.slow
def test_two_dates_built_at_once_by_two_processes(four_days):
    out = str(four_days["root"] / "concurrent")
    command = [sys.executable, "-m", "jobs.build_samples", "--input", four_days["raw"], "--output", out]
    command += ["--spec", four_days["spec"], "--set", "spark.shuffle_partitions=2"]
    env = {**os.environ, "PYTHONPATH": ROOT}
    procs = [
        subprocess.Popen(
            [*command, "--date", day.isoformat()], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for day in (D[1], D[2])
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-3000:]
    assert sorted(os.listdir(out)) == ["date=2026-01-02", "date=2026-01-03"]
    for day in (D[1], D[2]):
        assert_same_samples(day_samples(out, day), day_samples(four_days["samples"], day))


@pytest.mark.slow
@pytest.mark.parametrize(
    "setting, named",
    [
        ("history.max_len=5", "hist_click_items"),
        ("items.numeric_columns=[duration_min]", "duration_min is made by the config, not in the spec"),
        ("items.vector_columns={item_vec: 4}", "item_vec is made by the config"),
        ("bucketize.features=[item_ctr]", "item_impressions_bucket is in the spec, not made by the config"),
    ],
)
def test_a_config_that_makes_other_features_than_the_spec_is_refused_before_any_work(
    setting, named, four_days, spark, tmp_path
):
    config = day_config(setting)
    with pytest.raises(ConfigError, match=named):
        daily.build_days(spark, four_days["raw"], str(tmp_path / "s"), config, four_days["spec"], [D[2]])
    assert not (tmp_path / "s").exists() or not os.listdir(tmp_path / "s")


@pytest.mark.slow
def test_a_spec_without_its_ctr_prior_is_refused(four_days, spark, tmp_path):
    old = spec_copy(four_days["spec"], tmp_path / "old_spec", lambda spec: spec.pop("smoothed_ctr"))
    with pytest.raises(SpecNotApplicable, match="--fit-only"):
        daily.build_days(spark, four_days["raw"], str(tmp_path / "s"), four_days["config"], old, [D[2]])


# ---------------------------------------------------------------- 28 days: a day reads its window only


def _trap(raw: str, dataset: str, day: str) -> None:
    """A file in the partition of `day` whose `ts` is text: any scan of it fails the job."""
    folder = os.path.join(raw, dataset, f"date={day}")
    os.makedirs(folder, exist_ok=True)
    columns = {"user_id": ["u1"], "item_id": ["i1"], "ts": ["not a number"], "impression_id": ["x"]}
    pq.write_table(pa.table(columns), os.path.join(folder, "zz-trap.parquet"))


@pytest.mark.slow
def test_a_day_build_reads_the_events_of_its_window_not_the_log(tmp_path, spark):
    flat, raw = str(tmp_path / "flat"), str(tmp_path / "raw")
    generate(flat, users=40, items=30, days=28, impressions=5600, seed=11)
    partition_by_date(flat, raw)
    for dataset in ("impressions", "clicks"):
        _trap(raw, dataset, "2026-01-28")
    with pytest.raises(Exception, match="(?i)parquet|convert|ts"):
        spark.read.parquet(os.path.join(raw, "impressions")).select("ts").collect()  # the trap is live
    config = day_config("history.lookback_days=7", "item_stats.recent_days=7")
    spec_dir = str(tmp_path / "spec")
    job.build_samples(
        spark,
        raw,
        spec_dir,
        config,
        job.Plan(window=daily.fit_window(config, "2026-01-20", "2026-01-21"), fit_only=True),
    )
    day = date(2026, 1, 22)
    (built,) = daily.build_days(spark, raw, str(tmp_path / "samples"), config, spec_dir, [day])
    report = built["report"]

    start = day_start(day, "UTC")
    imps = pq.read_table(os.path.join(flat, "impressions")).to_pandas()
    clicks = pq.read_table(os.path.join(flat, "clicks")).to_pandas()
    in_window = {
        "impressions": int(((imps.ts >= start - 7 * DAY) & (imps.ts < start + DAY)).sum()),
        "clicks": int(((clicks.ts >= start - 7 * DAY) & (clicks.ts < start + DAY + 1800)).sum()),
    }
    assert {k: report["rows_read"][k] for k in in_window} == in_window
    assert in_window["impressions"] < len(imps) / 3 and in_window["clicks"] < len(clicks) / 3
    assert report["window"]["raw_partitions"] == {
        "impressions": "2026-01-14..2026-01-24",
        "clicks": "2026-01-14..2026-01-24",
    }
    on_day = int(((imps.ts >= start) & (imps.ts < start + DAY)).sum())
    assert report["rows_owned"]["impressions"] == report["samples"]["samples"]["rows"] == on_day

    # Unpartitioned RAW gives the same day through a time filter (it reads every file, then keeps the window).
    (filtered,) = daily.build_days(spark, flat, str(tmp_path / "from_flat"), config, spec_dir, [day])
    assert filtered["report"]["rows_read"] == report["rows_read"]
    assert filtered["report"]["window"]["raw_partitions"]["impressions"] == "none: filtered by time"
    assert_same_samples(day_samples(str(tmp_path / "from_flat"), day), day_samples(str(tmp_path / "samples"), day))


@pytest.mark.slow
def test_a_model_trains_on_the_built_days_and_the_next_night_warm_starts_from_it(four_days, tmp_path):
    """The daily schedule end to end: runs over days of the real builds; the next night's run, warm-started,
    scores the day they share exactly as the run it started from."""
    from tests.test_train_dates import _dates, _run, _summary

    samples = four_days["samples"]
    first, second = tmp_path / "night1", tmp_path / "night2"
    assert _run(samples, first, *_dates(D[0].isoformat(), D[1].isoformat(), D[2].isoformat())) == 0
    assert _run(samples, second, "--init-from", str(first), *_dates(*[d.isoformat() for d in D[1:]])) == 0
    one, two = _summary(first), _summary(second)
    sizes = {day: four_days["days"][i]["report"]["samples"]["samples"]["rows"] for i, day in enumerate(D)}
    assert one["train_examples"] == sizes[D[0]] and one["num_examples"] == {"valid": sizes[D[1]], "test": sizes[D[2]]}
    assert one["spec_hash"] == two["spec_hash"] == feature_spec.spec_hash(feature_spec.load_spec(four_days["spec"]))
    for name, value in one["metrics"]["test"].items():  # both score D3: before its first step, night 2 is night 1
        assert two["initial_valid"][name] == pytest.approx(value, abs=1e-6), name
