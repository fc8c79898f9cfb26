"""What a spec promises a daily build: no sample changes under an unchanged spec hash, no
impression lost between RAW's date partitions, vocabularies that match their spec, and a clear error (exit 2)
for every bad input of a day build, before anything is written.

The slow tests share `four_days` (tests/daily_world.py, built once per session).
"""

import glob
import os
import shutil
import subprocess
import sys
from datetime import date

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import feature_spec
from pipelines import publish
from pipelines.config import ConfigError, load_config
from pipelines.config_schema import validate_build_config
from pipelines.publish import OutputRefused
from pipelines.samples import build_samples as job
from pipelines.samples import days as daily
from pipelines.samples import settings
from pipelines.samples.fitting import SpecNotApplicable
from pipelines.samples.raw_input import InputError, read_raw
from pipelines.samples.spark import CODE_ARCHIVE, CODE_ARCHIVE_PREFIX, process_temp_folder
from pipelines.samples.windows import MISPLACED, day_start, not_days
from tests.daily_world import DAY, D, assert_same_samples, day_config, day_samples, spec_copy

# A valid value other than the default, for every build setting (split.valid_start and test_start go together).
OTHER_VALUE = {
    "labels.attribution_window_minutes": "1",
    "history.lookback_days": "10",
    "history.genre_history_len": "5",
    "item_stats.recent_days": "1",
    "validation.ts_min": "2000-01-01",
    "validation.ts_max": "2090-01-01",
    "dates.time_zone": "Europe/Paris",
    "history.max_len": "5",
    "history.top_genres": "2",
    "items.max_genres": "2",
    "items.numeric_columns": "[duration_min]",
    "items.vector_columns": "{item_vec: 4}",
    "bucketize.features": "[item_ctr]",
    "passthrough": "[]",
    "tfrecord.compression": "none",
    "tfrecord.rows_per_record": "1",
    "vocab.min_count": "3",
    "vocab.oov_buckets": "{item_id: 8}",
    "normalize.log1p": "[]",
    "bucketize.num_buckets": "4",
    "item_stats.smoothing": "5.0",
    "split.valid_fraction": "0.2",
    "split.test_fraction": "0.2",
    "split.valid_start": "2026-01-03",
    "split.test_start": "2026-01-04",
    "input.format": "csv",
    "output.spark_scratch": "SCRATCH",
    "output.raw_values": "true",
    "spark.app_name": "another-name",
    "spark.shuffle_partitions": "3",
    "spark.impressions_per_partition": "1000",
    "spark.output_partitions": "3",
    "tfrecord.shuffle_seed": "7",
    "validation.max_reject_fraction": "0.5",
    "drift.histogram_bins": "4",
    "drift.top_values": "3",
    "drift.max_oov_share": "0.5",
    "drift.max_js_distance": "0.5",
    "drift.max_linf_distance": "0.5",
    "drift.max_label_rate_change": "1.0",
}
TOGETHER = {"split.valid_start": "split.test_start", "split.test_start": "split.valid_start"}


def _leaves(node: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def _sets(name: str, tmp_path=None) -> list[str]:
    names = [name] + ([TOGETHER[name]] if name in TOGETHER else [])
    return [f"{n}={OTHER_VALUE[n].replace('SCRATCH', str(tmp_path or '/tmp'))}" for n in names]


# ---------------------------------------------------------------- fast: every setting has its class


def test_every_build_setting_is_in_exactly_one_class_and_has_another_value_to_try():
    classes = [settings.RECORDED, settings.DESCRIBED, settings.FITTED, settings.NO_SAMPLE_CHANGE]
    classified = [name for names in classes for name in names]
    assert len(classified) == len(set(classified)), "a setting in two classes"
    assert sorted(classified) == sorted(_leaves(load_config("build_samples", None, []))), (
        "a build setting is missing from pipelines/samples/settings.py, or is no longer a setting"
    )
    assert sorted(OTHER_VALUE) == sorted(classified)
    defaults = validate_build_config(load_config("build_samples", None, []))
    for name in classified:  # each other value is valid, and other than the default
        other = validate_build_config(load_config("build_samples", None, _sets(name)))
        assert settings._value(other, name) != settings._value(defaults, name), name


@pytest.mark.parametrize("name", settings.RECORDED)
def test_a_recorded_setting_changes_the_spec_hash(name):
    def spec_hash(config):
        spec = feature_spec.new_spec(
            [feature_spec.label()], {}, compression="GZIP", sample_settings=settings.recorded(config)
        )
        return feature_spec.spec_hash(spec)

    base = validate_build_config(load_config("build_samples", None, []))
    other = validate_build_config(load_config("build_samples", None, _sets(name)))
    assert spec_hash(other) != spec_hash(base)
    # 30 and 30.0 are one setting: a hash does not change with how a number is written.
    assert (
        settings.recorded(validate_build_config(load_config("build_samples", None, ["history.lookback_days=30.0"])))[
            "history.lookback_days"
        ]
        == settings.recorded(base)["history.lookback_days"]
    )


def test_a_spec_without_sample_settings_keeps_its_hash():
    spec = feature_spec.new_spec([feature_spec.label()], {}, compression="GZIP")
    assert "sample_settings" not in spec
    assert feature_spec.validate_spec(spec)["spec_hash"] == feature_spec.compute_spec_hash(spec)


# ---------------------------------------------------------------- fast: vocabularies against their spec


def _vocab_spec(size: int = 5) -> dict:
    entry = feature_spec.vocabulary(size=size, num_tokens=size - 2, min_count=1, path="vocab/user_id")
    return {"vocabularies": {"user_id": entry}}


def _write_vocab(folder, rows: list[tuple], name: str = "part-0.parquet") -> None:
    os.makedirs(folder, exist_ok=True)
    table = pa.table({"index": [r[0] for r in rows], "token": [r[1] for r in rows], "count": [r[2] for r in rows]})
    pq.write_table(table, os.path.join(folder, name))


GOOD_ROWS = [(2, "u1", 9), (3, "u2", 5), (4, "u3", 1)]


@pytest.mark.parametrize(
    "rows, problem",
    [
        (GOOD_ROWS + [(5, "u4", 1)], "4 rows, the spec says 3 tokens"),
        (GOOD_ROWS + [(3, "u2", 5)], "tokens repeated"),
        ([(2, "u1", 9), (3, "u2", 5), (3, "u3", 1)], "indices repeated"),
        ([(2, "u1", 9), (3, "u2", 5), (4, "u1", 1)], "tokens repeated"),
        ([(2, "u1", 9), (3, "u2", 5), (6, "u3", 1)], "indices 2..6, not 2..4"),
        ([(1, "u1", 9), (3, "u2", 5), (4, "u3", 1)], "indices 1..4, not 2..4"),
        ([(2, "u1", 9), (3, None, 5), (4, "u3", 1)], "1 rows with no token"),
    ],
)
def test_a_vocabulary_that_does_not_match_its_spec_is_named(tmp_path, rows, problem):
    _write_vocab(tmp_path / "vocab" / "user_id", rows)
    with pytest.raises(feature_spec.VocabularyError, match="vocabulary user_id") as exc:
        feature_spec.check_vocabularies(str(tmp_path), _vocab_spec())
    assert problem in str(exc.value)


def test_a_vocabulary_that_matches_its_spec_passes_and_an_unreadable_one_is_named(tmp_path):
    _write_vocab(tmp_path / "vocab" / "user_id", GOOD_ROWS)
    feature_spec.check_vocabularies(str(tmp_path), _vocab_spec())
    (tmp_path / "vocab" / "user_id" / "part-0.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(feature_spec.VocabularyError, match="vocabulary user_id .* cannot be read"):
        feature_spec.check_vocabularies(str(tmp_path), _vocab_spec())
    shutil.rmtree(tmp_path / "vocab")
    with pytest.raises(feature_spec.VocabularyError, match="vocabulary user_id .* cannot be read"):
        feature_spec.check_vocabularies(str(tmp_path), _vocab_spec())


# ---------------------------------------------------------------- fast: partitions, outputs, temp folders


def test_partition_folders_that_do_not_name_a_day():
    names = [
        "date=2026-01-08",
        "date=garbage",
        "date=2026-13-45",
        "date=2026-02-30",
        "date=\u0662\u0660\u0662\u0666-01-01",
    ]
    names += ["date=20260108", "date=2026-1-8"]
    assert not_days(names) == names[1:]


def test_a_staged_output_that_is_not_published_leaves_no_folder_it_created(tmp_path):
    (tmp_path / "kept").mkdir()
    stage = publish.StagedOutput(str(tmp_path / "new" / "deeper" / "out"))
    assert (tmp_path / "new" / "deeper").is_dir()
    stage.close()
    assert not (tmp_path / "new").exists()
    # A folder that was there before stays, and so does one that someone else wrote into meanwhile.
    stage = publish.StagedOutput(str(tmp_path / "kept" / "a" / "out"))
    (tmp_path / "kept" / "a" / "theirs.txt").write_text("x")
    stage.close()
    assert sorted(os.listdir(tmp_path / "kept" / "a")) == ["theirs.txt"]
    # A published output keeps its folders.
    with publish.StagedOutput(str(tmp_path / "b" / "out")) as stage:
        with open(os.path.join(stage.path, "_SUCCESS"), "w"):
            pass
    assert os.listdir(tmp_path / "b" / "out") == ["_SUCCESS"]


def test_a_killed_jobs_code_archive_is_removed_by_the_next_run(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / f"{CODE_ARCHIVE_PREFIX}{gone.pid}-abc"
    stale.mkdir()
    (stale / CODE_ARCHIVE).write_bytes(b"zip")
    alive = tmp_path / f"{CODE_ARCHIVE_PREFIX}{os.getpid()}-def"
    alive.mkdir()
    (alive / CODE_ARCHIVE).write_bytes(b"zip")
    not_ours = tmp_path / f"{CODE_ARCHIVE_PREFIX}{gone.pid}-ghi"
    not_ours.mkdir()
    (not_ours / "notes.txt").write_text("someone else's")
    made = process_temp_folder(CODE_ARCHIVE_PREFIX, {CODE_ARCHIVE})
    assert not stale.exists()
    assert alive.exists() and not_ours.exists() and os.path.isdir(made)


def test_csv_raw_at_a_path_with_glob_characters_is_read(spark, tmp_path):
    raw = tmp_path / "raw [v2] *?{a,b}"
    for day, ts in (("2026-01-01", 1767225600), ("2026-01-02", 1767312000)):
        folder = raw / "impressions" / f"date={day}"
        folder.mkdir(parents=True)
        (folder / "part-0.csv").write_text(f'user_id,item_id,ts\nu1,"i1, the ""first""",{ts}\nu2,i2,{ts + 1}\n')
    rows = read_raw(spark, str(raw), "impressions", "csv").orderBy("ts").collect()
    assert [(r.user_id, r.item_id, int(r.ts), str(r.date)) for r in rows] == [
        ("u1", 'i1, the "first"', 1767225600, "2026-01-01"),
        ("u2", "i2", 1767225601, "2026-01-01"),
        ("u1", 'i1, the "first"', 1767312000, "2026-01-02"),
        ("u2", "i2", 1767312001, "2026-01-02"),
    ]


# ---------------------------------------------------------------- slow: settings against a spec


@pytest.mark.slow
@pytest.mark.parametrize("name", settings.RECORDED + settings.DESCRIBED)
def test_a_day_build_under_a_setting_the_spec_records_otherwise_is_refused_and_writes_nothing(
    name, four_days, spark, tmp_path
):
    out = tmp_path / "new" / "samples"
    config = day_config(*_sets(name))
    named = name.split(".")[-1] if name in settings.RECORDED else "spec"
    with pytest.raises(ConfigError, match=named):
        daily.build_days(spark, four_days["raw"], str(out), config, four_days["spec"], [D[2]])
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_the_issues_day_build_with_another_attribution_window_exits_2(four_days, tmp_path, capsys):
    from jobs.build_samples import main as build_main

    argv = ["--input", four_days["raw"], "--output", str(tmp_path / "s"), "--spec", four_days["spec"]]
    argv += ["--date", D[2].isoformat(), "--set", "labels.attribution_window_minutes=1"]
    assert build_main(argv) == 2
    err = capsys.readouterr().err
    assert "labels.attribution_window_minutes: spec 30.0, config 1.0" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_fitted_and_run_settings_change_no_sample_of_a_day_built_with_a_spec(four_days, spark, tmp_path):
    """Every FITTED and NO_SAMPLE_CHANGE setting changed at once: the same samples under the same hash
    (input.format: test_csv_from_pandas_builds_the_same_samples_as_parquet, tests/test_bad_values.py)."""
    names = [n for n in settings.FITTED + settings.NO_SAMPLE_CHANGE if n != "input.format"]
    sets = sorted({s for name in names for s in _sets(name, tmp_path / "scratch")})
    out = str(tmp_path / "samples")
    (built,) = daily.build_days(spark, four_days["raw"], out, day_config(*sets), four_days["spec"], [D[2]])
    assert built["report"]["spec_hash"] == feature_spec.spec_hash(feature_spec.load_spec(four_days["spec"]))
    assert_same_samples(day_samples(out, D[2]), day_samples(four_days["samples"], D[2]))


@pytest.mark.slow
def test_each_fitted_setting_changes_the_hash_of_a_fit(four_days, spark, tmp_path):
    def fit_hash(*sets) -> str:
        out = str(tmp_path / f"fit{len(os.listdir(tmp_path))}")
        report = job.build_samples(spark, four_days["flat"], out, day_config(*sets), job.Plan(fit_only=True))
        return report["spec_hash"]

    base = fit_hash()
    for name in settings.FITTED:
        if name == "split.test_start":  # changed together with split.valid_start
            continue
        assert fit_hash(*_sets(name)) != base, name


@pytest.mark.slow
def test_a_spec_that_does_not_record_its_sample_settings_is_refused(four_days, spark, tmp_path):
    old = spec_copy(four_days["spec"], tmp_path / "old_spec", lambda spec: spec.pop("sample_settings"))
    with pytest.raises(SpecNotApplicable, match="sample settings.*--fit-only"):
        daily.build_days(spark, four_days["raw"], str(tmp_path / "s"), four_days["config"], old, [D[2]])
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------- slow: rows stored under another day


def _move_rows(raw: str, dataset: str, source: date, target: date, count: int) -> pd.DataFrame:
    """Move `count` rows of RAW's partition `source` into the partition `target`; return them."""
    src, dst = (os.path.join(raw, dataset, f"date={day.isoformat()}") for day in (source, target))
    table = pq.read_table(src, partitioning=None).to_pandas()
    moved, kept = table.iloc[:count], table.iloc[count:]
    shutil.rmtree(src)
    os.makedirs(src)
    pq.write_table(pa.Table.from_pandas(kept, preserve_index=False), os.path.join(src, "part-0.parquet"))
    os.makedirs(dst, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(moved, preserve_index=False), os.path.join(dst, f"moved-{source}.parquet"))
    return moved


def _owned_impressions(four_days, day: date) -> int:
    flat = pq.read_table(os.path.join(four_days["flat"], "impressions")).to_pandas()
    start = day_start(day, "UTC")
    return int(((flat.ts >= start) & (flat.ts < start + DAY)).sum())


@pytest.mark.slow
def test_impressions_stored_under_a_far_day_are_rejected_by_that_days_build_and_by_no_other(four_days, spark, tmp_path):
    raw = str(tmp_path / "raw")
    shutil.copytree(four_days["raw"], raw)
    far = _move_rows(raw, "impressions", D[0], D[3], 25)  # three days away: outside the margin
    near = _move_rows(raw, "impressions", D[0], D[1], 5)  # the next day: inside it
    samples = str(tmp_path / "samples")
    first, last = daily.build_days(spark, raw, samples, four_days["config"], four_days["spec"], [D[0], D[3]])

    # The far rows are the rejects of the build of the partition they sit in, counted as its own rows.
    assert last["report"]["rejected"]["impressions"] == {MISPLACED: 25}
    assert last["report"]["rows_owned"]["impressions"] == _owned_impressions(four_days, D[3]) + 25
    rejects = pd.read_parquet(os.path.join(samples, f"date={D[3]}", "rejects"))
    assert sorted(rejects[rejects.reason == MISPLACED].ts_raw.astype(int)) == sorted(far.ts)
    # The build of their own day neither makes them samples nor counts them; the near rows stay its samples.
    assert first["report"]["rejected"]["impressions"] == {}
    assert first["report"]["rows_owned"]["impressions"] == _owned_impressions(four_days, D[0]) - 25
    day0 = day_samples(samples, D[0])
    assert len(day0) == _owned_impressions(four_days, D[0]) - 25

    def keys(df):  # user, item and time identify an impression here (a slate shares user and time)
        return set(zip(df.user_id, df.item_id, df.ts.astype(int)))

    assert not keys(far) & keys(day0)
    assert keys(near) <= keys(day0)
    # A build of the whole log sees the same rejects.
    whole = job.build_samples(spark, raw, str(tmp_path / "whole"), four_days["config"], job.Plan(four_days["spec"]))
    assert whole["rejected"]["impressions"] == {MISPLACED: 25}
    # Past the reject threshold, the day that owns them fails.
    with pytest.raises(job.RejectFractionError, match=MISPLACED):
        daily.build_days(
            spark,
            raw,
            str(tmp_path / "strict"),
            day_config("validation.max_reject_fraction=0.001"),
            four_days["spec"],
            [D[3]],
        )


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["date=garbage", "date=2026-13-45", "date=20260103"])
def test_a_raw_partition_that_names_no_day_is_refused(four_days, spark, tmp_path, folder):
    raw = str(tmp_path / "raw")
    shutil.copytree(four_days["raw"], raw)
    parts = glob.glob(os.path.join(raw, "impressions", f"date={D[2]}", "*.parquet"))
    os.makedirs(os.path.join(raw, "impressions", folder))
    shutil.copy(parts[0], os.path.join(raw, "impressions", folder, "part-0.parquet"))
    with pytest.raises(InputError, match=folder):
        daily.build_days(spark, raw, str(tmp_path / "s"), four_days["config"], four_days["spec"], [D[2]])
    with pytest.raises(InputError, match=folder):
        job.build_samples(spark, raw, str(tmp_path / "w"), four_days["config"], job.Plan(four_days["spec"]))
    assert not (tmp_path / "s").exists() and not (tmp_path / "w").exists()


# ---------------------------------------------------------------- slow: a --spec and its vocabularies


def _tamper(spec_dir: str, how: str) -> None:
    folder = os.path.join(spec_dir, "vocab", "user_id")
    parts = sorted(glob.glob(os.path.join(folder, "part-*.parquet")))
    table = pq.read_table(parts[0])
    if how == "extra row":  # index = size: one past the table
        size = feature_spec.get_vocabulary(feature_spec.load_spec(spec_dir), "user_id")["size"]
        row = pa.table({"index": [size], "token": ["intruder"], "count": [1]}).cast(table.schema)
        pq.write_table(row, os.path.join(folder, "part-99999-extra.parquet"))
    elif how == "duplicated row":
        pq.write_table(table.slice(0, 1), os.path.join(folder, "part-99999-copy.parquet"))
    elif how == "deleted part file":
        for part in parts:
            os.remove(part)
    elif how == "deleted folder":
        shutil.rmtree(folder)
    elif how == "stale checksum":  # the same rows written again, beside the checksum of the old file
        pq.write_table(table, parts[0], compression="gzip")
        assert os.path.exists(os.path.join(folder, f".{os.path.basename(parts[0])}.crc"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "how", ["extra row", "duplicated row", "deleted part file", "deleted folder", "stale checksum"]
)
def test_a_tampered_vocabulary_is_one_error_naming_it_and_the_build_exits_2(four_days, tmp_path, capsys, how):
    from jobs.build_samples import main as build_main

    spec_dir = str(tmp_path / "spec")
    shutil.copytree(four_days["spec"], spec_dir)
    _tamper(spec_dir, how)
    out = tmp_path / "samples"
    argv = ["--input", four_days["raw"], "--output", str(out), "--spec", spec_dir, "--date", D[2].isoformat()]
    assert build_main(argv) == 2
    err = capsys.readouterr().err
    assert "vocabulary user_id" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["missing", "empty folder", "raw folder", "a file"])
def test_a_spec_folder_without_a_spec_exits_2_with_one_line(four_days, tmp_path, capsys, kind):
    from jobs.build_samples import main as build_main

    spec = {
        "missing": str(tmp_path / "nowhere"),
        "empty folder": str(tmp_path),
        "raw folder": four_days["raw"],
        "a file": os.path.join(four_days["spec"], feature_spec.SPEC_FILE),
    }[kind]
    argv = ["--input", four_days["raw"], "--output", str(tmp_path / "s"), "--spec", spec, "--date", D[2].isoformat()]
    assert build_main(argv) == 2
    err = capsys.readouterr().err
    assert f"--spec {spec} has no feature_spec.json" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------- slow: SAMPLES and its days


def _samples_with(four_days, tmp_path, days) -> str:
    samples = tmp_path / "samples"
    samples.mkdir()
    for day in days:
        shutil.copytree(feature_spec.day_folder(four_days["samples"], day), feature_spec.day_folder(samples, day))
    return str(samples)


@pytest.mark.slow
@pytest.mark.parametrize("broken", ["{not json", "[1, 2]", '{"format_version": 1}', ""])
def test_a_complete_day_with_a_broken_spec_is_refused_naming_it(four_days, spark, tmp_path, broken):
    samples = _samples_with(four_days, tmp_path, [D[1]])
    path = os.path.join(feature_spec.day_folder(samples, D[1]), feature_spec.SPEC_FILE)
    with open(path, "w") as fh:
        fh.write(broken)
    for days in ([D[1]], [D[2]]):  # built again, or another day built beside it
        with pytest.raises(OutputRefused, match=f"{path}|date={D[1]}"):
            daily.build_days(spark, four_days["raw"], samples, four_days["config"], four_days["spec"], days)
    assert sorted(os.listdir(samples)) == [f"date={D[1]}"]


@pytest.mark.slow
def test_a_day_of_another_spec_is_refused_unless_mixed_specs_are_asked_for(four_days, spark, tmp_path):
    samples = _samples_with(four_days, tmp_path, [D[0]])
    refit = spec_copy(four_days["spec"], tmp_path / "refit", lambda spec: spec["smoothed_ctr"].update(prior=0.5))
    with pytest.raises(OutputRefused, match="another spec.*--allow-mixed-specs"):
        daily.build_days(spark, four_days["raw"], samples, four_days["config"], refit, [D[1]])
    assert sorted(os.listdir(samples)) == [f"date={D[0]}"]
    (built,) = daily.build_days(spark, four_days["raw"], samples, four_days["config"], refit, [D[1]], mixed_specs=True)
    assert built["report"]["spec_hash"] == feature_spec.spec_hash(feature_spec.load_spec(refit))
    assert sorted(os.listdir(samples)) == [f"date={D[0]}", f"date={D[1]}"]


@pytest.mark.slow
def test_a_failed_day_build_into_a_new_samples_leaves_nothing(four_days, spark, tmp_path):
    out = tmp_path / "new" / "samples"
    with pytest.raises(job.EmptySplitError):  # a day with no impression: the build fails after its staging
        daily.build_days(spark, four_days["raw"], str(out), four_days["config"], four_days["spec"], [date(2026, 2, 1)])
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- training reads vocabularies that match


@pytest.mark.parametrize("how", ["extra row", "duplicated row", "deleted folder"])
def test_training_refuses_samples_whose_vocabulary_does_not_match_the_spec(tmp_path, capsys, how):
    from jobs.train import main as train_main
    from tests.tf_samples import write_samples

    samples = tmp_path / "samples"
    spec, _ = write_samples(samples, sizes={"train": 32, "valid": 16, "test": 16})
    folder = samples / "vocab" / "user_id"
    table = pq.read_table(folder)
    if how == "extra row":
        size = feature_spec.get_vocabulary(spec, "user_id")["size"]
        row = pa.table({"index": [size], "token": ["intruder"], "count": [1]}).cast(table.schema)
        pq.write_table(row, folder / "part-extra.parquet")
    elif how == "duplicated row":
        pq.write_table(table.slice(0, 1), folder / "part-copy.parquet")
    else:
        shutil.rmtree(folder)
    run = tmp_path / "run"
    assert train_main(["--samples", str(samples), "--output", str(run), "--epochs", "1"]) == 3
    err = capsys.readouterr().err
    assert "vocabulary user_id" in err and "Traceback" not in err
    assert not run.exists()
