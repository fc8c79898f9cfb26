"""Values that are unusable become null by rule and are counted; blank ids of any whitespace are rejects."""

import math

import pytest
from pyspark.sql import types as T

from features import validate

WHOLE_TEXT = [
    ("1977", 1977, None),
    ("1977.0", 1977, None),  # pandas writes an int column with missing values as floats
    ("1.977e3", 1977, None),
    (" 1977 ", 1977, None),
    ("\t1977\u00a0", 1977, None),
    ("-12", -12, None),
    ("1977.5", None, "not_an_integer"),
    ("abc", None, "unparsable"),
    ("NaN", None, "unparsable"),
    ("1e12", None, "out_of_range"),
    ("Infinity", None, "out_of_range"),
    ("", None, None),  # no value given: null, nothing to count
    (None, None, None),
]


def _parse(spark, rows, dtype, parse):
    schema = T.StructType([T.StructField("k", T.IntegerType()), T.StructField("v", dtype)])
    df = spark.createDataFrame([(i, value) for i, value in enumerate(rows)], schema)
    value, reason = parse(df, "v")
    out = df.select("k", value.alias("value"), reason.alias("reason")).orderBy("k").collect()
    return [(row["value"], row["reason"]) for row in out]


def test_whole_number_from_text(spark):
    got = _parse(spark, [text for text, _, _ in WHOLE_TEXT], T.StringType(), validate.whole_number)
    assert got == [(value, reason) for _, value, reason in WHOLE_TEXT]


def test_whole_number_from_doubles_and_longs(spark):
    doubles = [1977.0, 1977.5, float("nan"), float("inf"), None]
    assert _parse(spark, doubles, T.DoubleType(), validate.whole_number) == [
        (1977, None),
        (None, "not_an_integer"),  # was truncated to 1977 silently
        (None, "unparsable"),
        (None, "out_of_range"),
        (None, None),
    ]
    longs = [7, 2**40, None]
    assert _parse(spark, longs, T.LongType(), validate.whole_number) == [
        (7, None),
        (None, "out_of_range"),
        (None, None),
    ]


def test_position_range_starts_at_zero(spark):
    parse = lambda df, c: validate.whole_number(df, c, 0, validate.INT32[1])  # noqa: E731
    assert _parse(spark, ["0", "3", "-1", "2.5", str(2**40), "abc"], T.StringType(), parse) == [
        (0, None),
        (3, None),
        (None, "out_of_range"),
        (None, "not_an_integer"),
        (None, "out_of_range"),
        (None, "unparsable"),
    ]


def test_finite_number(spark):
    got = _parse(spark, ["2.5", " 1e3 ", "abc", "nan", "-inf", ""], T.StringType(), validate.finite_number)
    assert got == [
        (2.5, None),
        (1000.0, None),
        (None, "unparsable"),
        (None, "unparsable"),
        (None, "non_finite"),
        (None, None),
    ]
    got = _parse(spark, [1.5, float("inf"), float("nan")], T.DoubleType(), validate.finite_number)
    assert got == [(1.5, None), (None, "non_finite"), (None, "unparsable")]


@pytest.mark.parametrize(
    "blank", ["\t", "\u00a0", "\u3000", "\u2007\n", " \t \u00a0"], ids=["tab", "nbsp", "ideographic", "figure", "mixed"]
)
def test_blank_ids_of_any_whitespace_are_rejects(spark, blank):
    rows = [(blank, "i1", "100"), ("u1", blank, "100")]
    df = spark.createDataFrame(rows, "user_id string, item_id string, ts string")
    out = validate.normalize_events(df, "impressions", "1970-01-01", "2100-01-01").collect()
    assert [row["reject_reason"] for row in out] == ["null_user_id", "null_item_id"]


def test_ids_are_trimmed_of_unicode_whitespace(spark):
    rows = [("u1\t", "\u00a0i1", "100"), ("u1", "i1", "200"), ("\u3000u1 ", "i1\r\n", "300")]
    df = spark.createDataFrame(rows, "user_id string, item_id string, ts string")
    out = validate.normalize_events(df, "impressions", "1970-01-01", "2100-01-01").collect()
    assert {(row["user_id"], row["item_id"]) for row in out} == {("u1", "i1")}
    assert all(row["reject_reason"] is None for row in out)


def test_items_release_year_and_numeric_columns_are_nulled_and_counted(spark):
    rows = [
        ("i1", "A", "1977.0", "12.5"),
        ("i2", "A", "1977.5", "abc"),
        ("i3", "A", "", "inf"),
        ("i4", "A", "x", ""),
        ("\t", "A", "1.5", "1"),  # rejected: its values are not counted
    ]
    df = spark.createDataFrame(rows, "item_id string, genres string, release_year string, duration string")
    items = validate.normalize_items(df, ["duration"])
    counts = items.groupBy("reject_reason").agg(*validate.nulled_counts(items)).collect()
    kept = next(row for row in counts if row["reject_reason"] is None).asDict()
    nonzero = {validate.nulled_count_key(key): value for key, value in kept.items() if key != "reject_reason" and value}
    assert nonzero == {
        ("release_year", "not_an_integer"): 1,
        ("release_year", "unparsable"): 1,
        ("duration", "unparsable"): 1,
        ("duration", "non_finite"): 1,
    }
    values = {row["item_id"]: (row["release_year"], row["duration"]) for row in validate.valid_rows(items).collect()}
    assert values == {"i1": (1977, 12.5), "i2": (None, None), "i3": (None, None), "i4": (None, None)}
    assert not [c for c in validate.valid_rows(items).columns if c.startswith(validate.NULLED_PREFIX)]
    assert math.isclose(values["i1"][1], 12.5)


# ---------------------------------------------------------------- CSV written by pandas builds what Parquet builds
def _generate(out_dir) -> str:
    import subprocess
    import sys

    from tests.conftest import ROOT

    args = ["--users", "80", "--items", "60", "--days", "8", "--impressions", "4000", "--seed", "5"]
    subprocess.run(
        [sys.executable, "-m", "jobs.generate_synthetic", "--output", str(out_dir), *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return str(out_dir)


def _records(samples_dir):
    from tests.samples_io import read_all

    rows = read_all(samples_dir)
    return rows.sort_values(["user_id", "item_id", "ts", "p_click"]).reset_index(drop=True)


@pytest.mark.slow
def test_csv_from_pandas_builds_the_same_samples_as_parquet(spark, tmp_path):
    """pandas writes an int column with missing values as floats (`1977.0`): it must still mean 1977."""
    import os

    import pandas as pd

    from pipelines.config import load_config
    from pipelines.samples.build_samples import build_samples

    parquet_raw = _generate(tmp_path / "raw-parquet")
    csv_raw = tmp_path / "raw-csv"
    float_columns = []
    for name in ("impressions", "clicks", "items"):
        table = pd.read_parquet(os.path.join(parquet_raw, name))
        float_columns += [f"{name}.{c}" for c in table.columns if table[c].dtype.kind == "f"]
        os.makedirs(csv_raw / name)
        table.to_csv(csv_raw / name / "part-0.csv", index=False)
    assert "items.release_year" in float_columns  # the case of the defect: years with nulls are floats
    with open(csv_raw / "items" / "part-0.csv") as fh:
        assert ".0," in fh.read()

    sets = ["items.numeric_columns=[duration_min]", "spark.output_partitions=2"]
    built = {}
    for fmt, raw in (("parquet", parquet_raw), ("csv", str(csv_raw))):
        out = str(tmp_path / f"samples-{fmt}")
        report = build_samples(spark, raw, out, load_config("build_samples", None, [*sets, f"input.format={fmt}"]))
        built[fmt] = (report, _records(out))
    (parquet_report, parquet_rows), (csv_report, csv_rows) = built["parquet"], built["csv"]
    assert csv_report["spec_hash"] == parquet_report["spec_hash"]
    assert csv_report["nulled_values"] == parquet_report["nulled_values"] == {}
    assert csv_report["rejected"] == parquet_report["rejected"]
    pd.testing.assert_frame_equal(csv_rows, parquet_rows)


# ---------------------------------------------------------------- the spec's paths stay inside SAMPLES
def _spec_with(**changes):
    import feature_spec

    base = feature_spec.new_spec(
        [feature_spec.categorical("user_idx", vocabulary="user_id", vocab_size=5), feature_spec.label("label")],
        {"user_id": feature_spec.vocabulary(size=5, num_tokens=3, min_count=1, path="vocab/user_id")},
        compression="GZIP",
    )
    base["splits"] = {
        name: feature_spec.split(pattern=f"{name}/part-*", num_examples=1, label_rate=0.5) for name in ("train",)
    }
    for key, value in changes.items():
        base[key] = value
    base["spec_hash"] = feature_spec.compute_spec_hash(base)  # a forged spec, with its hash recomputed
    return base


@pytest.mark.parametrize(
    "pattern", ["../other/train/part-*", "/etc/*", "train/../../x/*", "s3://bucket/train/*", "file:/x/*", ""]
)
def test_a_split_pattern_outside_samples_is_a_spec_error(pattern):
    import feature_spec

    with pytest.raises(feature_spec.SpecError, match=r"splits\.train\.pattern"):
        feature_spec.validate_spec(
            _spec_with(splits={"train": feature_spec.split(pattern=pattern, num_examples=1, label_rate=0.5)})
        )


@pytest.mark.parametrize("path", ["/etc", "../vocab/user_id", "vocab/../../etc", "hdfs://nn/vocab"])
def test_a_vocabulary_path_outside_samples_is_a_spec_error(path):
    import feature_spec

    vocabularies = {"user_id": feature_spec.vocabulary(size=5, num_tokens=3, min_count=1, path=path)}
    with pytest.raises(feature_spec.SpecError, match=r"vocabularies\.user_id\.path"):
        feature_spec.validate_spec(_spec_with(vocabularies=vocabularies))


def test_paths_inside_samples_are_fine():
    import feature_spec

    assert feature_spec.validate_spec(_spec_with())["splits"]["train"]["pattern"] == "train/part-*"


def test_training_refuses_a_pattern_pointing_at_another_samples_folder(tmp_path, capsys):
    """A spec edited to read another folder's shards: exit 3 naming the entry, no training."""
    import feature_spec
    from jobs.train import main
    from tests.tf_samples import write_samples

    write_samples(tmp_path / "other", sizes={"train": 64, "valid": 32, "test": 32})
    spec, _ = write_samples(tmp_path / "samples", sizes={"train": 64, "valid": 32, "test": 32})
    spec["splits"]["train"]["pattern"] = "../other/train/part-*"
    with open(feature_spec.spec_path(str(tmp_path / "samples")), "w") as fh:
        fh.write(feature_spec.to_json(spec))
    run = tmp_path / "run"
    assert main(["--samples", str(tmp_path / "samples"), "--output", str(run), "--epochs", "1"]) == 3
    assert "splits.train.pattern" in capsys.readouterr().err
    assert not run.exists()


# ---------------------------------------------------------------- any legal path name
ODD_NAME = "odd [v2] *?é ü"


@pytest.mark.slow
def test_every_job_takes_paths_with_glob_characters_spaces_and_non_ascii(spark, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from jobs.train import main as train_main
    from pipelines.config import load_config
    from pipelines.samples.build_samples import build_samples
    from tests.conftest import ROOT
    from tests.samples_io import read_all

    base = tmp_path / ODD_NAME
    raw, samples, run = str(base / "raw [x]"), str(base / "samples [v2]"), str(base / "run [*]")
    gen = ["--users", "40", "--items", "30", "--days", "6", "--impressions", "1500", "--seed", "3"]
    subprocess.run([sys.executable, "-m", "jobs.generate_synthetic", "--output", raw, *gen], cwd=ROOT, check=True)
    report = build_samples(spark, raw, samples, load_config("build_samples", None, ["spark.output_partitions=2"]))
    assert report["rows_read"]["impressions"] == 1500
    assert len(read_all(samples)) == 1500 - sum(report["rejected"]["impressions"].values())
    args = ["--samples", samples, "--output", run, "--model", "emb_mlp", "--epochs", "1", "--set", "verbose=0"]
    assert train_main(args) == 0
    with open(os.path.join(run, "run.json")) as fh:
        summary = json.load(fh)
    assert summary["metrics"]["test"]["auc"] is not None
    assert os.path.exists(os.path.join(run, "predictions", "test.parquet"))


def test_import_movielens_reads_a_folder_with_glob_characters(spark, tmp_path):
    import pyarrow.parquet as pq

    from sources.movielens import import_movielens
    from tests.test_import_movielens import RATINGS, write_tiny

    source, raw = tmp_path / f"ml {ODD_NAME}", tmp_path / f"raw {ODD_NAME}"
    write_tiny(source)
    import_movielens(spark, str(source), str(raw), 3.5)
    assert pq.read_table(raw / "impressions").num_rows == len(RATINGS)


# ---------------------------------------------------------------- errors at the output are ours
def test_an_output_under_a_file_is_our_error_and_nothing_is_written(tmp_path, capsys):
    from jobs.build_samples import main as build_main
    from jobs.train import main as train_main
    from tests.tf_samples import write_samples

    samples = tmp_path / "samples"
    write_samples(samples, sizes={"train": 32, "valid": 16, "test": 16})
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert train_main(["--samples", str(samples), "--output", str(blocker / "run"), "--epochs", "1"]) == 2
    assert f"error: cannot write {blocker / 'run'}: {blocker} is not a directory" in capsys.readouterr().err
    assert build_main(["--input", str(samples), "--output", str(blocker / "deeper" / "samples")]) == 2
    assert f"cannot write {blocker / 'deeper' / 'samples'}: {blocker} is not a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert blocker.read_text() == "not a folder"


def _tmpfs(path, options: str):
    """A real file system mounted at `path` (root ignores permission bits, not a read-only or full disk)."""
    import subprocess

    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    return path


def _umount(path):
    import subprocess

    subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def read_only_dir(tmp_path):
    yield _tmpfs(tmp_path / "ro", "ro,size=1m")
    _umount(tmp_path / "ro")


@pytest.fixture
def small_disk(tmp_path):
    yield _tmpfs(tmp_path / "small", "size=64k")
    _umount(tmp_path / "small")


def test_a_read_only_output_parent_is_our_error(read_only_dir, tmp_path, capsys):
    from jobs.train import main as train_main
    from tests.tf_samples import write_samples

    samples = tmp_path / "samples"
    write_samples(samples, sizes={"train": 32, "valid": 16, "test": 16})
    run = read_only_dir / "run"
    assert train_main(["--samples", str(samples), "--output", str(run), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert f"error: cannot write {run}: {read_only_dir} is not writable (read-only file system)" in err
    assert list(read_only_dir.iterdir()) == []


def test_a_full_disk_while_training_is_our_error_and_the_new_run_is_removed(small_disk, tmp_path):
    """In a process of its own: the exit code must be ours (2), not a crash at exit (HDF5 with a
    half-written file segfaults when the interpreter ends)."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.tf_samples import write_samples

    samples = tmp_path / "samples"
    write_samples(samples, sizes={"train": 64, "valid": 32, "test": 32})
    run = small_disk / "run"
    args = ["--samples", str(samples), "--output", str(run), "--epochs", "1", "--set", "verbose=0"]
    done = subprocess.run([sys.executable, "-m", "jobs.train", *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"error: cannot write {run}: No space left on device" in done.stderr
    assert list(small_disk.iterdir()) == []


@pytest.mark.slow
def test_a_full_disk_while_building_leaves_no_staging(spark, small_disk, tmp_path):
    from pipelines.config import load_config
    from pipelines.publish import write_failure
    from pipelines.samples.build_samples import build_samples
    from tests.test_real_logs import _small_world, _write_raw

    raw = _write_raw(tmp_path / "raw", *_small_world(per_day=300))
    samples = small_disk / "samples"
    config = load_config("build_samples", None, ["split.valid_start=2026-01-05", "split.test_start=2026-01-06"])
    with pytest.raises(Exception) as failed:
        build_samples(spark, raw, str(samples), config)
    assert str(write_failure(failed.value, samples)) == f"cannot write {samples}: No space left on device"
    assert list(small_disk.iterdir()) == []
