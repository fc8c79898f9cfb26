"""jobs.train over days of a date-partitioned SAMPLES: --set data.train_dates=FIRST..LAST, data.valid_dates,
data.test_dates (pipelines/training/selection.py).

The day folders are cut from an ordinary SAMPLES (tests/tf_samples.py) in the layout of feature_spec/dates.py,
as a daily build writes them: the shards under date=D/samples/, a feature_spec.json of the same spec (same
hash) whose one split is DAY_SPLIT, vocab/ and _SUCCESS.

    2026-01-01  train part 0     2026-01-04  test           2026-01-06..08  another spec hash
    2026-01-02  train parts 1-2  2026-01-05  valid again    2026-01-09      incomplete (no _SUCCESS)
    2026-01-03  valid                                       2026-01-10      only a hidden staging folder

The last test puts days on s3:// (the emulator fixture of tests/test_s3.py).
"""

import io
import json
import shutil
from datetime import date

import pandas as pd
import pytest
import tensorflow as tf

import feature_spec
from feature_spec import load_spec
from jobs.train import main
from pipelines.config import load_config
from pipelines.config_schema import validate_train_config
from pipelines.training.dataset import SamplesRefused, make_dataset, open_samples, record_parser
from tests.test_s3 import _ok, s3  # noqa: F401 - s3: the emulator fixture
from tests.test_warm_start import FAST as WARM_START_FAST
from tests.tf_samples import write_samples

MODEL = "emb_mlp"
FAST = [*WARM_START_FAST, "--set", "input.deterministic=true"]  # same shards, same order: same results
SIZES = {"train": 480, "valid": 160, "test": 160}
# train on the ordinary SAMPLES's train shards, validate on its valid, test on its test
AS_ORDINARY = ("2026-01-01..2026-01-02", "2026-01-03", "2026-01-04")


def _dates(train, valid, test) -> list:
    return [
        "--set",
        f"data.train_dates={train}",
        "--set",
        f"data.valid_dates={valid}",
        "--set",
        f"data.test_dates={test}",
    ]


def _run(samples, output, *extra):
    return main(["--samples", str(samples), "--model", MODEL, "--output", str(output), "--epochs", "1", *FAST, *extra])


def _summary(run) -> dict:
    return json.loads((run / "run.json").read_text())


def _labels(spec: dict, files: list) -> list:
    parse = record_parser(spec, with_metadata=False)
    batches = tf.data.TFRecordDataset([str(f) for f in files], compression_type="GZIP").batch(1024)
    return [int(v) for batch in batches for v in parse(batch)[feature_spec.label_name(spec)].numpy()]


def write_day(root, day: str, source, spec: dict, shards: list, complete: bool = True, folder: str | None = None):
    """SAMPLES/date=DAY/ holding `shards` (files of the SAMPLES `source`, which gives its vocab/ too)."""
    path = root / (folder or f"date={day}")
    (path / "samples").mkdir(parents=True)
    for k, shard in enumerate(shards):
        shutil.copy(shard, path / "samples" / f"part-{k:05d}.tfrecord.gz")
    shutil.copytree(source / "vocab", path / "vocab")
    labels = _labels(spec, shards)
    split = feature_spec.split(
        pattern="samples/part-*.tfrecord.gz", num_examples=len(labels), label_rate=sum(labels) / len(labels)
    )
    (path / feature_spec.SPEC_FILE).write_text(feature_spec.to_json(feature_spec.with_splits(spec, {"samples": split})))
    (path / "report.json").write_text("{}")
    if complete:
        (path / feature_spec.DAY_COMPLETE).write_text("")
    return path


@pytest.fixture(scope="module")
def ordinary(tmp_path_factory):
    path = tmp_path_factory.mktemp("dates") / "samples"
    spec, rows = write_samples(path, sizes=SIZES, seed=1, shards=3)
    return path, spec, rows


@pytest.fixture(scope="module")
def daily(ordinary, tmp_path_factory):
    source, spec, _ = ordinary
    base = tmp_path_factory.mktemp("dates")
    other = base / "other"
    other_spec, _ = write_samples(other, sizes={"train": 40, "valid": 20, "test": 20}, seed=2, extra_feature=True)
    assert other_spec["spec_hash"] != spec["spec_hash"]
    root = base / "daily"
    parts = {split: sorted((source / split).glob("part-*.tfrecord.gz")) for split in SIZES}
    assert len(parts["train"]) == 3  # 160 rows each: days of 160 and 320 rows, of different label rates
    write_day(root, "2026-01-01", source, spec, parts["train"][:1])
    write_day(root, "2026-01-02", source, spec, parts["train"][1:])
    write_day(root, "2026-01-03", source, spec, parts["valid"])
    write_day(root, "2026-01-04", source, spec, parts["test"])
    write_day(root, "2026-01-05", source, spec, parts["valid"])
    for day, split in (("2026-01-06", "train"), ("2026-01-07", "valid"), ("2026-01-08", "test")):
        write_day(root, day, other, other_spec, sorted((other / split).glob("part-*.tfrecord.gz")))
    write_day(root, "2026-01-09", source, spec, parts["test"], complete=False)  # its build still runs
    # a complete build of 2026-01-10 in its staging folder, not yet swapped into place
    write_day(root, "2026-01-10", source, spec, parts["test"], folder=".date=2026-01-10.staging-1234")
    return root, spec, other_spec


@pytest.fixture(scope="module")
def ordinary_run(ordinary, tmp_path_factory):
    source, _, _ = ordinary
    run = tmp_path_factory.mktemp("dates") / "ordinary_run"
    assert _run(source, run) == 0
    return run, _summary(run)


@pytest.fixture(scope="module")
def dated_run(daily, tmp_path_factory):
    root, _, _ = daily
    run = tmp_path_factory.mktemp("dates") / "dated_run"
    assert _run(root, run, *_dates(*AS_ORDINARY)) == 0
    return run, _summary(run)


# ---------------------------------------------------------------- training over days


@pytest.mark.slow
def test_days_train_exactly_as_the_same_shards_of_an_ordinary_samples(ordinary, ordinary_run, dated_run):
    _, spec, rows = ordinary
    run0, plain = ordinary_run
    run, dated = dated_run
    assert dated["spec_hash"] == plain["spec_hash"] == spec["spec_hash"]
    assert dated["num_examples"] == plain["num_examples"] == {"valid": SIZES["valid"], "test": SIZES["test"]}
    assert dated["train_examples"] == plain["train_examples"] == SIZES["train"]
    # the same shards in the same order, seeded and deterministic: the same training to the last bit
    assert [h["loss"] for h in dated["history"]] == [h["loss"] for h in plain["history"]]
    assert dated["metrics"] == plain["metrics"]
    for name in ("predictions", "embeddings"):
        pd.testing.assert_frame_equal(pd.read_parquet(run / name), pd.read_parquet(run0 / name))
    tokens = pd.read_parquet(run / "embeddings" / "item_id.parquet").set_index("index").token
    assert tokens[0] == "<PAD>" and tokens[1] == "<OOV>" and tokens[2] == "i0"  # the vocabulary of a day
    assert (run / "model" / "assets.extra" / "spec_hash").read_text().strip() == spec["spec_hash"]

    train_rate = float(rows["train"]["label"].mean())
    assert plain["data"]["layout"] == "splits"
    assert plain["data"]["splits"]["train"] == {"num_examples": SIZES["train"], "label_rate": train_rate}
    assert dated["data"]["layout"] == "dates" and dated["data"]["vocabularies_from"] == "2026-01-02"
    train = dated["data"]["splits"]["train"]
    assert train["dates"] == "2026-01-01..2026-01-02" and train["days"] == ["2026-01-01", "2026-01-02"]
    assert train["num_examples"] == SIZES["train"]
    assert train["label_rate"] == pytest.approx(train_rate, abs=1e-12)  # the days' rates weighted by their sizes
    assert dated["data"]["splits"]["test"]["days"] == ["2026-01-04"]
    assert dated["config"]["data"] == {
        "train_dates": "2026-01-01..2026-01-02",
        "valid_dates": "2026-01-03",
        "test_dates": "2026-01-04",
    }


@pytest.mark.slow
def test_a_warm_start_from_a_dated_run_goes_on_with_the_next_days(daily, dated_run, tmp_path):
    root, spec, _ = daily
    run0, summary0 = dated_run
    run = tmp_path / "next"
    # yesterday's run tested on 2026-01-04; today's trains on 2026-01-03 and validates on 2026-01-04
    assert _run(root, run, "--init-from", str(run0), *_dates("2026-01-03", "2026-01-04", "2026-01-05")) == 0
    summary = _summary(run)
    assert summary["init_from"]["run"] == str(run0) and summary["init_from"]["spec_hash"] == spec["spec_hash"]
    # before any step the model scores 2026-01-04 exactly as the earlier run's final model did
    assert set(summary["initial_valid"]) == set(summary0["metrics"]["test"])
    for name, value in summary0["metrics"]["test"].items():
        assert summary["initial_valid"][name] == pytest.approx(value, abs=1e-6), name
    assert summary["epochs_completed"] == 1 and summary["data"]["vocabularies_from"] == "2026-01-03"
    assert {split: s["days"] for split, s in summary["data"]["splits"].items()} == {
        "train": ["2026-01-03"],
        "valid": ["2026-01-04"],
        "test": ["2026-01-05"],
    }


@pytest.mark.slow
def test_a_resume_on_days_of_another_spec_hash_is_refused(daily, dated_run, capsys):
    root, spec, other_spec = daily
    run, _ = dated_run
    before = (run / "run.json").read_bytes()
    assert _run(root, run, *_dates("2026-01-06", "2026-01-07", "2026-01-08")) == 3
    err = capsys.readouterr().err
    assert f"have spec hash {other_spec['spec_hash']}" in err and f"trained on spec hash {spec['spec_hash']}" in err
    assert "train 2026-01-06, valid 2026-01-07, test 2026-01-08" in err
    assert (run / "run.json").read_bytes() == before


# ---------------------------------------------------------------- refusals before RUN is touched


def test_missing_and_incomplete_days_are_refused_naming_each(daily, tmp_path, capsys):
    root, _, _ = daily
    run = tmp_path / "run"
    assert _run(root, run, *_dates("2026-01-01..2026-01-02", "2026-01-03", "2026-01-09..2026-01-11")) == 2
    err = capsys.readouterr().err
    assert f"3 selected day(s) of {root} cannot be read" in err
    assert "2026-01-09 (test) is incomplete: date=2026-01-09/ has no _SUCCESS" in err
    assert "2026-01-10 (test) is missing" in err  # its staging folder is no day
    assert "2026-01-11 (test) is missing" in err
    assert "`python -m jobs.build_samples --date D --spec SPEC ...` (D = 2026-01-09, 2026-01-10, 2026-01-11)" in err
    assert "2026-01-01" not in err and not run.exists()


def test_days_of_two_spec_hashes_are_refused_naming_both(daily, tmp_path, capsys):
    root, spec, other_spec = daily
    run = tmp_path / "run"
    assert _run(root, run, *_dates("2026-01-04..2026-01-06", "2026-01-07", "2026-01-08")) == 3
    err = capsys.readouterr().err
    assert f"2026-01-04, 2026-01-05 have spec hash {spec['spec_hash']}" in err
    assert f"2026-01-06, 2026-01-07, 2026-01-08 have spec hash {other_spec['spec_hash']}" in err
    assert not run.exists()


def test_the_layout_and_the_dates_must_agree(ordinary, daily, tmp_path, capsys):
    source, _, _ = ordinary
    root, _, _ = daily
    assert _run(root, tmp_path / "run") == 2  # days, but no dates
    err = capsys.readouterr().err
    assert f"{root} is date-partitioned (9 date=YYYY-MM-DD folders, date=2026-01-01 to date=2026-01-09)" in err
    assert "--set data.train_dates=FIRST..LAST" in err
    assert _run(source, tmp_path / "run", *_dates(*AS_ORDINARY)) == 2  # dates, but an ordinary build
    assert f"({source} is an ordinary build, with feature_spec.json at its top" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- a spec that cannot be read, a folder of no day


def _spec_text(spec: dict, **changes) -> str:
    return feature_spec.to_json({**spec, **changes})


def _break_spec(path, how: str) -> None:
    """Make path/feature_spec.json (a valid spec) into one that is not."""
    target = path / feature_spec.SPEC_FILE
    text, spec = target.read_text(), json.loads(target.read_text())
    one_split = next(iter(spec["splits"]))
    broken = {
        "not JSON": b"feature spec",
        "truncated": text[: len(text) // 2].encode(),
        "empty": b"",
        "a JSON list": b"[1, 2]",
        "JSON null": b"null",
        "bytes that are not UTF-8": b"\xff\xfe{\x80",
        "without its features": json.dumps({k: v for k, v in spec.items() if k != "features"}).encode(),
        "with a stale hash": json.dumps({**spec, "compression": ""}).encode(),  # hashed, not rehashed
        "without its splits": json.dumps({**spec, "splits": {}}).encode(),
        "with a size that is no number": json.dumps(
            {**spec, "splits": {**spec["splits"], one_split: {**spec["splits"][one_split], "num_examples": "many"}}}
        ).encode(),
        "with a label rate that is no number": json.dumps(
            {**spec, "splits": {**spec["splits"], one_split: {**spec["splits"][one_split], "label_rate": [0.1]}}}
        ).encode(),
    }
    if how == "missing":
        target.unlink()
    else:
        target.write_bytes(broken[how])


BROKEN = [
    "not JSON",
    "truncated",
    "empty",
    "a JSON list",
    "JSON null",
    "bytes that are not UTF-8",
    "without its features",
    "with a stale hash",
    "without its splits",
    "with a size that is no number",
    "with a label rate that is no number",
]


def _three_days(ordinary, root) -> None:
    source, spec, _ = ordinary
    parts = {split: sorted((source / split).glob("part-*.tfrecord.gz")) for split in SIZES}
    for day, split in (("2026-01-01", "train"), ("2026-01-02", "valid"), ("2026-01-03", "test")):
        write_day(root, day, source, spec, parts[split])


@pytest.mark.parametrize("how", [*BROKEN, "missing"])
def test_a_selected_day_whose_spec_cannot_be_read_is_refused_naming_it(how, ordinary, tmp_path, capsys):
    """A complete day (_SUCCESS) whose feature_spec.json is broken, or gone: exit 3, naming its path."""
    root, run = tmp_path / "daily", tmp_path / "run"
    _three_days(ordinary, root)
    _break_spec(root / "date=2026-01-02", how)
    assert _run(root, run, *_dates("2026-01-01", "2026-01-02", "2026-01-03")) == 3
    err = capsys.readouterr().err
    assert (
        f"1 selected day(s) of {root} have no valid feature_spec.json: {root}/date=2026-01-02/feature_spec.json" in err
    )
    assert "--overwrite ...` (D = 2026-01-02)" in err and "Traceback" not in err
    assert not run.exists()


def test_every_selected_day_whose_spec_cannot_be_read_is_named(ordinary, tmp_path, capsys):
    root, run = tmp_path / "daily", tmp_path / "run"
    _three_days(ordinary, root)
    _break_spec(root / "date=2026-01-01", "missing")
    _break_spec(root / "date=2026-01-03", "truncated")
    assert _run(root, run, *_dates("2026-01-01", "2026-01-02", "2026-01-03")) == 3
    err = capsys.readouterr().err
    assert f"2 selected day(s) of {root} have no valid feature_spec.json" in err
    assert f"{root}/date=2026-01-01/feature_spec.json is missing (the day has _SUCCESS)" in err
    assert f"{root}/date=2026-01-03/feature_spec.json is not valid JSON" in err
    assert "(D = 2026-01-01, 2026-01-03)" in err and not run.exists()


@pytest.mark.parametrize("how", BROKEN)
def test_an_ordinary_samples_whose_spec_cannot_be_read_is_refused_naming_it(how, ordinary, tmp_path, capsys):
    """The same broken files at the top of an ordinary SAMPLES: exit 3 too, before RUN is touched."""
    source, _, _ = ordinary
    samples, run = tmp_path / "samples", tmp_path / "run"
    shutil.copytree(source, samples)
    _break_spec(samples, how)
    assert _run(samples, run) == 3
    err = capsys.readouterr().err
    assert f"error: {samples}/feature_spec.json" in err and "Traceback" not in err
    assert not run.exists()


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_an_ordinary_samples_without_a_split_is_refused_before_run_is_written(split, ordinary, tmp_path, capsys):
    source, spec, _ = ordinary
    samples, run = tmp_path / "samples", tmp_path / "run"
    shutil.copytree(source, samples)
    splits = {name: entry for name, entry in spec["splits"].items() if name != split}
    (samples / feature_spec.SPEC_FILE).write_text(_spec_text(spec, splits=splits))
    assert _run(samples, run) == 3
    assert f"error: {samples}/feature_spec.json has no split '{split}'" in capsys.readouterr().err
    assert not run.exists()


def test_samples_without_a_spec_or_days_are_refused(ordinary, tmp_path, capsys):
    source, _, _ = ordinary
    samples, run = tmp_path / "samples", tmp_path / "run"
    shutil.copytree(source, samples)
    (samples / feature_spec.SPEC_FILE).unlink()
    assert _run(samples, run) == 2
    err = capsys.readouterr().err
    assert f"error: {samples} has no feature_spec.json and no date=YYYY-MM-DD day folders: it is no SAMPLES" in err
    assert _run(tmp_path / "absent", run) == 2
    assert f"error: {tmp_path / 'absent'} is no directory" in capsys.readouterr().err
    assert not run.exists()


NO_DAYS = ["date=garbage", "date=2026-13-45", "date=2026-02-30", "date=٢٠٢٦-٠١-٠١", "date=２０２６-０１-０１"]


@pytest.mark.parametrize("name", NO_DAYS)
def test_a_folder_named_for_no_calendar_day_is_no_day(name, ordinary, tmp_path, capsys):
    """date=2026-02-30, or a date in other digits than 0-9, is no day, as date=garbage is not: SAMPLES holding
    only it is refused as no SAMPLES; beside days, the days are counted without it; selected days read as usual."""
    source, spec, _ = ordinary
    root, run = tmp_path / "daily", tmp_path / "run"
    write_day(root, "", source, spec, sorted((source / "test").glob("part-*.tfrecord.gz")), folder=name)
    assert _run(root, run) == 2
    err = capsys.readouterr().err
    assert f"error: {root} has no feature_spec.json and no date=YYYY-MM-DD day folders ({name}: no " in err
    _three_days(ordinary, root)
    assert _run(root, run) == 2
    err = capsys.readouterr().err
    assert f"{root} is date-partitioned (3 date=YYYY-MM-DD folders, date=2026-01-01 to date=2026-01-03)" in err
    assert not run.exists()
    samples = open_samples(str(root), dates={"train": "2026-01-01", "valid": "2026-01-02", "test": "2026-01-03"})
    assert [f.split("/")[-3] for f in samples.files("test")] == ["date=2026-01-03"] * 3


# ---------------------------------------------------------------- what a run reads


def test_the_days_are_the_union_of_their_shards_split_by_split(ordinary, daily):
    source, spec, rows = ordinary
    root, _, _ = daily
    samples = open_samples(
        str(root), dates={"train": "2026-01-01..2026-01-02", "valid": "2026-01-03", "test": "2026-01-04"}
    )
    assert samples.spec_hash == spec["spec_hash"] and samples.spec["splits"] == {}
    assert samples.vocab_dir == str(root / "date=2026-01-02")
    assert [f.split("/")[-3:] for f in samples.files("train")] == [
        ["date=2026-01-01", "samples", "part-00000.tfrecord.gz"],
        ["date=2026-01-02", "samples", "part-00000.tfrecord.gz"],
        ["date=2026-01-02", "samples", "part-00001.tfrecord.gz"],
    ]
    day_rates = [feature_spec.split_label_rate(load_spec(root / f"date=2026-01-0{d}"), "samples") for d in (1, 2)]
    assert day_rates[0] != day_rates[1]  # so that an unweighted mean of them would be wrong
    for split, size in SIZES.items():
        assert samples.num_examples(split) == size
        assert samples.label_rate(split) == pytest.approx(float(rows[split]["label"].mean()), abs=1e-12)
    # two workers each read a share of the days' files (distribute.strategy=multi_worker): all rows, once
    shares = [
        [
            int(t)
            for _, _, meta in make_dataset(samples, "train", 100, with_metadata=True, shard=(2, i))
            for t in meta["ts"]
        ]
        for i in range(2)
    ]
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(rows["train"]["ts"])


def test_a_split_missing_its_shards_is_named(daily, tmp_path):
    root, _, _ = daily
    copy = tmp_path / "daily"
    shutil.copytree(root / "date=2026-01-03", copy / "date=2026-01-03")
    for day in ("2026-01-01", "2026-01-02"):
        shutil.copytree(root / "date=2026-01-03", copy / f"date={day}")
    for shard in (copy / "date=2026-01-03" / "samples").iterdir():
        shard.unlink()
    samples = open_samples(str(copy), dates={"train": "2026-01-01", "valid": "2026-01-02", "test": "2026-01-03"})
    with pytest.raises(FileNotFoundError, match=r"date=2026-01-03/samples/part-\*\.tfrecord\.gz \(split 'test'\)"):
        samples.files("test")


def test_an_ordinary_samples_reads_as_before(ordinary):
    source, spec, _ = ordinary
    samples = open_samples(str(source))
    assert samples.spec == spec and samples.vocab_dir == str(source) and not samples.dated
    assert [f.split("/")[-2:] for f in samples.files("valid")] == [
        ["valid", f"part-0000{k}.tfrecord.gz"] for k in range(3)
    ]
    with pytest.raises(SamplesRefused, match="3 selected day"):
        open_samples(str(source), dates={"train": "2026-01-01", "valid": "2026-01-02", "test": "2026-01-03"})


# ---------------------------------------------------------------- the config keys


def _config_errors(tmp_path, capsys, *sets) -> list[str]:
    run = tmp_path / "run"
    args = [x for s in sets for x in ("--set", s)]
    assert main(["--samples", str(tmp_path / "absent"), "--output", str(run), *args]) == 2
    assert not run.exists()
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("config error: ")]


def test_the_dates_are_given_all_three_or_none(tmp_path, capsys):
    errors = _config_errors(tmp_path, capsys, "data.train_dates=2026-01-01..2026-01-20")
    assert errors == [
        "config error: data.valid_dates: must be given with data.train_dates: a date-partitioned SAMPLES needs "
        "the train, valid and test days (data.train_dates, data.valid_dates, data.test_dates), an ordinary one "
        "none of them, got None"
    ]
    errors = _config_errors(tmp_path, capsys, "data.valid_dates=2026-01-21", "data.test_dates=2026-01-22")
    assert errors[0].startswith(
        "config error: data.train_dates: must be given with data.valid_dates and data.test_dates"
    )


@pytest.mark.parametrize(
    "train,valid,test,problem",
    [
        (
            "2026-01-01..2026-01-20",
            "2026-01-15..2026-01-21",
            "2026-01-22",
            "data.valid_dates: overlaps data.train_dates (2026-01-01..2026-01-20) on 2026-01-15..2026-01-20: the train, "
            "valid and test days must not overlap (a model is not validated or tested on days it trained on), "
            "got '2026-01-15..2026-01-21'",
        ),
        (
            "2026-01-01..2026-01-20",
            "2026-01-21",
            "2026-01-21..2026-01-23",
            "data.test_dates: overlaps data.valid_dates (2026-01-21) on 2026-01-21",
        ),
        (
            "2026-01-10..2026-01-20",
            "2026-01-01..2026-01-05",
            "2026-01-22",
            "data.valid_dates: must come after data.train_dates (2026-01-10..2026-01-20): train days first, then "
            "valid, then test, got '2026-01-01..2026-01-05'",
        ),
        ("2026-01-01", "2026-01-03", "2026-01-02", "data.test_dates: must come after data.valid_dates (2026-01-03)"),
        ("2026-01-1", "2026-01-03", "2026-01-04", "data.train_dates: must be a day YYYY-MM-DD or a range FIRST..LAST"),
        ("2026-01-05..2026-01-01", "2026-01-06", "2026-01-07", "'2026-01-05..2026-01-01' ends before it starts"),
        ("[2026-01-01]", "2026-01-06", "2026-01-07", "data.train_dates: must be a day YYYY-MM-DD or a range"),
        (
            "2026-02-27..2026-02-30",
            "2026-03-01",
            "2026-03-02",
            "data.train_dates: must be a day YYYY-MM-DD or a range FIRST..LAST (both days included): '2026-02-30' is no "
            "calendar day: day is out of range for month",
        ),
        (
            "2026-01-01",
            "٢٠٢٦-٠١-٠٢",
            "2026-01-03",
            "data.valid_dates: must be a day YYYY-MM-DD or a range FIRST..LAST (both days included): '٢٠٢٦-٠١-٠٢' is not "
            "a date written YYYY-MM-DD (digits 0-9)",
        ),
    ],
)
def test_ranges_that_overlap_are_misordered_or_malformed_are_refused(train, valid, test, problem, tmp_path, capsys):
    errors = _config_errors(
        tmp_path, capsys, f"data.train_dates={train}", f"data.valid_dates={valid}", f"data.test_dates={test}"
    )
    assert len(errors) == 1 and problem in errors[0], errors


def test_the_dates_are_written_back_as_ranges_or_days():
    defaults = load_config("train")
    assert validate_train_config(defaults).data.dates() is None  # the default: an ordinary SAMPLES
    # an unquoted YAML date (--set data.valid_dates=2026-01-21) is a datetime.date
    data = {
        "train_dates": " 2026-01-01 .. 2026-01-20 ",
        "valid_dates": date(2026, 1, 21),
        "test_dates": "2026-01-22..2026-01-22",
    }
    config = validate_train_config({**defaults, "data": data})
    assert config.data.dates() == {
        "train": "2026-01-01..2026-01-20",
        "valid": "2026-01-21",
        "test": "2026-01-22..2026-01-22",
    }


# ---------------------------------------------------------------- on an object store


@pytest.mark.slow
def test_days_on_s3_train_and_are_refused_as_local_ones(ordinary, s3, tmp_path):  # noqa: F811 - the fixture
    """SAMPLES on s3:// (the emulator of tests/test_s3.py): days selected, vocabularies and shards read through
    tf.io.gfile, an incomplete day and a staging folder seen as such."""
    source, spec, _ = ordinary
    root = tmp_path / "daily"
    parts = {split: sorted((source / split).glob("part-*.tfrecord.gz")) for split in SIZES}
    write_day(root, "2026-01-01", source, spec, parts["train"])
    write_day(root, "2026-01-02", source, spec, parts["valid"])
    write_day(root, "2026-01-03", source, spec, parts["test"])
    write_day(root, "2026-01-04", source, spec, parts["test"], complete=False)
    write_day(root, "2026-01-05", source, spec, parts["test"], folder=".date=2026-01-05.staging-1234")
    s3.upload(root, "daily")
    train = ["-m", "jobs.train", "--samples", "s3://bucket/daily", "--model", MODEL, "--epochs", "1", *FAST]

    refused = s3.run(
        *train, "--output", "s3://bucket/runs/late", *_dates("2026-01-01", "2026-01-02", "2026-01-03..2026-01-05")
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "2026-01-04 (test) is incomplete" in refused.stderr and "2026-01-05 (test) is missing" in refused.stderr
    assert not s3.keys("runs/late")

    _ok(s3.run(*train, "--output", "s3://bucket/runs/days", *_dates("2026-01-01", "2026-01-02", "2026-01-03")))
    summary = json.loads(s3.read("runs/days/run.json"))
    assert summary["spec_hash"] == spec["spec_hash"] and summary["train_examples"] == SIZES["train"]
    assert summary["data"]["splits"]["test"] == {
        "dates": "2026-01-03",
        "days": ["2026-01-03"],
        "num_examples": SIZES["test"],
        "label_rate": pytest.approx(spec["splits"]["test"]["label_rate"], abs=1e-12),
    }
    assert summary["num_examples"] == {"valid": SIZES["valid"], "test": SIZES["test"]}
    tokens = pd.read_parquet(io.BytesIO(s3.read("runs/days/embeddings/item_id.parquet"))).sort_values("index").token
    assert tokens.tolist() == ["<PAD>", "<OOV>"] + [f"i{k}" for k in range(10)]
