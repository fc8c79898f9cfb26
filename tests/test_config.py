"""The typed job configs (pipelines/config_schema.py): every key of conf/*.yaml has a type and, where it has
one, a range; relations between keys are checked; a bad value stops the job with exit code 2 and one
`config error: <dotted.key>: ...` line per violation, before Spark starts and before SAMPLES or RUN is touched.

No Spark and no training here: a test that wrongly got past the config would fail on the missing input."""

import json
import re
from datetime import date, datetime

import pytest
import yaml

from jobs import build_samples as build_job
from jobs import train as train_job
from pipelines.config import CONF_DIR, ConfigError, load_config
from pipelines.config_schema import BuildConfig, TrainConfig, validate_build_config, validate_train_config

SCHEMAS = {"build_samples": BuildConfig, "train": TrainConfig}
LINE = re.compile(r"config error: [\w.]+: .+")


def _yaml_leaves(node: dict, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _yaml_leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _schema_numbers(model) -> dict[str, dict]:
    """dotted key -> the JSON schema of every leaf the schema types as a number (integer or float)."""
    schema = model.model_json_schema()
    defs, out = schema.get("$defs", {}), {}

    def walk(node, prefix):
        for name, prop in node.get("properties", {}).items():
            if "$ref" in prop:
                walk(defs[prop["$ref"].rsplit("/", 1)[-1]], f"{prefix}{name}.")
                continue
            numbers = [o for o in prop.get("anyOf", [prop]) if o.get("type") in ("integer", "number")]
            if numbers:
                out[f"{prefix}{name}"] = numbers[0]

    walk(schema, "")
    return out


def _numeric_settings(job: str) -> dict[str, dict]:
    """Every number setting of the job: a YAML default that is a number, or a key the schema types as one."""
    with open(CONF_DIR / f"{job}.yaml") as fh:
        defaults = dict(_yaml_leaves(yaml.safe_load(fh)))
    typed = _schema_numbers(SCHEMAS[job])
    from_yaml = {k for k, v in defaults.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert from_yaml <= set(typed), f"number defaults the schema does not type as numbers: {from_yaml - set(typed)}"
    assert set(typed) <= set(defaults), "every schema key is a key of the YAML"
    return typed


def _has_lower_bound_above(schema: dict, value: float) -> bool:
    lower = [schema[k] for k in ("minimum", "exclusiveMinimum", "ge", "gt") if k in schema]
    return any(bound >= value for bound in lower)


NUMERIC = [(job, key, schema) for job in SCHEMAS for key, schema in sorted(_numeric_settings(job).items())]
RANGED = [(job, key) for job, key, schema in NUMERIC if _has_lower_bound_above(schema, -5)]


def _run(job: str, tmp_path, *sets: str, extra=()) -> tuple[int, object]:
    """The job's main() with --set overrides; (exit code, the output path it was given)."""
    args = [x for s in sets for x in ("--set", s)] + list(extra)
    if job == "build_samples":
        out = tmp_path / "samples"
        return build_job.main(["--input", str(tmp_path / "raw"), "--output", str(out), *args]), out
    out = tmp_path / "run"
    return train_job.main(["--samples", str(tmp_path / "samples"), "--output", str(out), *args]), out


def _errors(capsys) -> list[str]:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("config error: ")]
    assert lines and all(LINE.fullmatch(line) for line in lines), lines
    return lines


# ---------------------------------------------------------------- every number setting, through the jobs


def test_the_settings_are_found():
    keys = {(job, key) for job, key, _ in NUMERIC}
    assert {("build_samples", "labels.attribution_window_minutes"), ("train", "epochs")} <= keys
    assert ("train", "max_steps_per_epoch") in keys  # null default, typed as a number by the schema
    assert ("build_samples", "history.lookback_days") in RANGED and ("train", "batch_size") in RANGED
    # The seeds may be any integer of their range; every other number has a lower bound.
    assert {key for job, key, _ in NUMERIC} - {key for _, key in RANGED} == {"tfrecord.shuffle_seed"}


@pytest.mark.parametrize(("job", "key"), [(job, key) for job, key, _ in NUMERIC], ids=lambda v: str(v))
def test_a_number_setting_given_text_is_refused_before_any_work(job, key, tmp_path, capsys):
    code, out = _run(job, tmp_path, f"{key}=abc")
    assert code == 2
    lines = _errors(capsys)
    assert any(line.startswith(f"config error: {key}: ") and "'abc'" in line for line in lines), lines
    assert not out.exists()


@pytest.mark.parametrize(("job", "key"), RANGED, ids=lambda v: str(v))
def test_a_number_setting_out_of_its_range_is_refused_before_any_work(job, key, tmp_path, capsys):
    code, out = _run(job, tmp_path, f"{key}=-5")
    assert code == 2
    lines = _errors(capsys)
    assert any(line.startswith(f"config error: {key}: ") and "-5" in line for line in lines), lines
    assert not out.exists()


# ---------------------------------------------------------------- exact cases, build_samples


def test_a_negative_attribution_window_is_refused(tmp_path, capsys):
    code, out = _run("build_samples", tmp_path, "labels.attribution_window_minutes=-30")
    assert code == 2 and not out.exists()
    assert _errors(capsys) == ["config error: labels.attribution_window_minutes: must be > 0, got -30"]


def test_recent_days_beyond_the_lookback_are_refused(tmp_path, capsys):
    code, out = _run("build_samples", tmp_path, "item_stats.recent_days=40")
    assert code == 2 and not out.exists()
    assert _errors(capsys) == ["config error: item_stats.recent_days: must be <= history.lookback_days (30), got 40"]
    config = load_config("build_samples", None, ["item_stats.recent_days=40", "history.lookback_days=40"])
    assert validate_build_config(config)["item_stats"]["recent_days"] == 40


@pytest.mark.parametrize(
    ("valid_start", "test_start"),
    [("2026-01-22", "2026-01-22"), ("2026-01-23", "2026-01-22"), ("'2026-01-22T06:00:00Z'", "2026-01-22")],
)
def test_a_valid_start_not_before_the_test_start_is_refused(valid_start, test_start, tmp_path, capsys):
    code, out = _run("build_samples", tmp_path, f"split.valid_start={valid_start}", f"split.test_start={test_start}")
    assert code == 2 and not out.exists()
    (line,) = _errors(capsys)
    assert line.startswith("config error: split.valid_start: must be before split.test_start")


@pytest.mark.parametrize("given", ["valid_start", "test_start"])
def test_one_split_date_without_the_other_is_refused(given, tmp_path, capsys):
    # features/split.py cuts by both dates or by the fractions: it cannot use one date alone.
    code, out = _run("build_samples", tmp_path, f"split.{given}=2026-01-22")
    assert code == 2 and not out.exists()
    (line,) = _errors(capsys)
    other = {"valid_start": "test_start", "test_start": "valid_start"}[given]
    assert line.startswith(f"config error: split.{other}: must be given with split.{given}")


@pytest.mark.parametrize(("valid", "test"), [(0.5, 0.5), (0.6, 0.5), (0.9, 0.2)])
def test_split_fractions_summing_to_one_or_more_are_refused(valid, test, tmp_path, capsys):
    code, out = _run("build_samples", tmp_path, f"split.valid_fraction={valid}", f"split.test_fraction={test}")
    assert code == 2 and not out.exists()
    (line,) = _errors(capsys)
    assert line.startswith("config error: split.valid_fraction: ") and "< 1" in line


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("validation.max_reject_fraction=1.5", "validation.max_reject_fraction: must be <= 1, got 1.5"),
        ("validation.ts_min=2200-01-01", "validation.ts_min: must be before validation.ts_max ('2100-01-01')"),
        ("validation.ts_max='2026-13-01'", "validation.ts_max: must be a date or time"),
        ("validation.ts_max=soon", "validation.ts_max: must be a date or time"),
        ("tfrecord.compression=zip", "tfrecord.compression: must be one of 'none', 'gzip' or 'gzip_fast', got 'zip'"),
        ("tfrecord.rows_per_record=0", "tfrecord.rows_per_record: must be >= 1, got 0"),
        ("input.format=json", "input.format: must be one of 'parquet' or 'csv', got 'json'"),
        ("bucketize.num_buckets=1", "bucketize.num_buckets: must be >= 2, got 1"),
        ("history.max_len=2.5", "history.max_len: must be an integer, got 2.5"),
        ("vocab.min_count=true", "vocab.min_count: must be an integer, got True"),
        ("item_stats.smoothing=.nan", "item_stats.smoothing: must be a finite number, got nan"),
        ("items.vector_columns=3", "items.vector_columns: must be a list of names or a mapping name: length"),
        ("items.vector_columns={v: 0}", "items.vector_columns: the length of 'v' must be a positive integer"),
        ("passthrough=[a, a]", "passthrough: names must be distinct"),
    ],
)
def test_build_settings_of_the_wrong_type_or_range_are_refused(setting, problem, tmp_path, capsys):
    code, out = _run("build_samples", tmp_path, setting)
    assert code == 2 and not out.exists()
    (line,) = _errors(capsys)
    assert line.startswith(f"config error: {problem}"), line


# Every name here reached zoneinfo as a path under the zone database: a folder of it (America, America/Argentina,
# Etc) was an IsADirectoryError traceback, not a config error.
@pytest.mark.parametrize(
    "zone",
    ["America", "America/Argentina", "Etc", "America/", "../etc", "/etc/localtime", "Not/AZone", "zone.tab", "''"],
)
def test_a_time_zone_that_names_no_zone_is_a_config_error(zone, tmp_path, capsys):
    code, out = _run("build_samples", tmp_path, f"dates.time_zone={zone}")
    assert code == 2 and not out.exists()
    (line,) = _errors(capsys)
    assert line.startswith("config error: dates.time_zone: must "), line


@pytest.mark.parametrize("value", [5, None, ["Europe/Paris"], {"name": "Europe/Paris"}, "Europe/Paris\x00", "Europe/"])
def test_a_time_zone_that_is_no_zone_name_is_a_config_error(value):
    config = load_config("build_samples")
    config["dates"]["time_zone"] = value
    with pytest.raises(ConfigError, match=r"^dates.time_zone: must "):
        validate_build_config(config)
    for zone in ("UTC", "utc", "Europe/Paris", "America/Argentina/Buenos_Aires"):  # still taken
        config["dates"]["time_zone"] = zone
        assert validate_build_config(config)["dates"]["time_zone"] == zone


def test_vector_columns_are_checked_as_build_samples_reads_them():
    def check(*sets):
        return validate_build_config(load_config("build_samples", None, list(sets)))["items"]["vector_columns"]

    assert check("items.vector_columns=[v]") == ["v"]
    assert check("items.vector_columns={v: 8, w: null}") == {"v": 8, "w": None}
    for sets, match in [
        (["items.vector_columns={v: 0}"], "the length of 'v' must be a positive integer"),
        (["items.vector_columns={v: true}"], "the length of 'v' must be a positive integer"),
        (["items.vector_columns=[v]", "items.numeric_columns=[v]"], r"\['v'\] must not be among items.numeric_columns"),
        (["items.vector_columns=['']"], "'' is not a column name"),
        (["items.vector_columns=[v, v]"], "names must be distinct"),
    ]:
        with pytest.raises(ConfigError, match=match):
            check(*sets)


def test_every_violation_is_reported_one_per_line(tmp_path, capsys):
    sets = ["labels.attribution_window_minutes=abc", "history.max_len=0", "tfrecord.compression=zip"]
    code, _ = _run("build_samples", tmp_path, *sets)
    assert code == 2
    assert [line.split(":")[1].strip() for line in _errors(capsys)] == [
        "labels.attribution_window_minutes",
        "history.max_len",
        "tfrecord.compression",
    ]


def test_a_relation_between_sections_is_reported_with_the_other_problems(tmp_path, capsys):
    code, _ = _run("build_samples", tmp_path, "vocab.min_count=abc", "item_stats.recent_days=40")
    assert code == 2
    assert _errors(capsys) == [
        "config error: vocab.min_count: must be an integer, got 'abc'",
        "config error: item_stats.recent_days: must be <= history.lookback_days (30), got 40",
    ]


def test_unknown_keys_are_still_refused(tmp_path, capsys):
    code, out = _run("build_samples", tmp_path, "history.max_lenn=3")
    assert code == 2 and not out.exists()
    assert "unknown config key 'history.max_lenn'" in capsys.readouterr().err
    code, out = _run("train", tmp_path, "early_stopping.patiense=3")
    assert code == 2 and not out.exists()
    assert "unknown config key 'early_stopping.patiense'" in capsys.readouterr().err
    # A mapping handed to the validators directly is checked too.
    config = load_config("build_samples")
    config["history"]["max_lenn"] = 3
    with pytest.raises(ConfigError, match=r"^history.max_lenn: unknown config key$"):
        validate_build_config(config)
    config = load_config("train")
    config["epoch"] = 3
    with pytest.raises(ConfigError, match=r"^epoch: unknown config key$"):
        validate_train_config(config)
    del config["epoch"], config["epochs"]
    with pytest.raises(ConfigError, match=r"^epochs: missing"):
        validate_train_config(config)


def test_the_model_name_is_checked_against_the_names_the_training_side_passes():
    # The schema imports no model (the build side never loads TensorFlow): the registry's names come in.
    config = load_config("train", None, ["model=nope"])
    assert validate_train_config(config).model == "nope"
    with pytest.raises(ConfigError, match=r"^model: must be one of deepfm, dcn, got 'nope'$"):
        validate_train_config(config, ["deepfm", "dcn"])
    validated = validate_train_config(config)  # a TrainConfig made without the names is checked too
    with pytest.raises(ConfigError, match=r"^model: must be one of deepfm, got 'nope'$"):
        validate_train_config(validated, ["deepfm"])
    assert validate_train_config(load_config("train", None, ["model=dcn"]), ["deepfm", "dcn"]).model == "dcn"


# ---------------------------------------------------------------- exact cases, train


def test_a_negative_batch_size_is_refused_before_run_is_touched(tmp_path, capsys):
    code, out = _run("train", tmp_path, "batch_size=-5")
    assert code == 2 and not out.exists()
    assert _errors(capsys) == ["config error: batch_size: must be >= 1, got -5"]
    out.mkdir()  # an empty RUN stays empty
    code, _ = _run("train", tmp_path, "batch_size=-5")
    assert code == 2 and list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("epochs=abc", "epochs: must be an integer, got 'abc'"),
        ("epochs=2.5", "epochs: must be an integer, got 2.5"),
        ("epochs=true", "epochs: must be an integer, got True"),
        ("params=3", "params: must be a mapping of model parameters (models/params.py), got 3"),
        ("params.embeding_dim=4", "params.embeding_dim: no model reads it; "),
        ("params.num_heads=4", "params.num_heads: deepfm does not read it (dfn does); deepfm takes: activation, "),
        ("model=nope", "model: must be one of emb_mlp, "),
        ("verbose=3", "verbose: must be <= 2, got 3"),
        ("verbose=true", "verbose: must be an integer, got True"),
        ("resume=1", "resume: must be true or false, got 1"),
        ("early_stopping.mode=up", "early_stopping.mode: must be one of 'max' or 'min', got 'up'"),
        ("early_stopping.mode=min", "early_stopping.mode: must be 'max' for early_stopping.monitor 'val_auc'"),
        ("early_stopping.monitor=val_acc", "early_stopping.monitor: must be one of 'val_auc', 'val_loss', 'auc' or"),
        ("run_id=''", "run_id: must not be empty, got ''"),
        ("debug.crash_after_epoch=0", "debug.crash_after_epoch: must be >= 1, got 0"),
    ],
)
def test_train_settings_of_the_wrong_type_or_range_are_refused(setting, problem, tmp_path, capsys):
    code, out = _run("train", tmp_path, setting)
    assert code == 2 and not out.exists()
    (line,) = _errors(capsys)
    assert line.startswith(f"config error: {problem}"), line


def test_the_epochs_and_model_flags_win_and_are_validated(tmp_path, capsys):
    code, out = _run("train", tmp_path, "epochs=3", extra=["--epochs", "0"])
    assert code == 2 and not out.exists()
    assert _errors(capsys) == ["config error: epochs: must be >= 1, got 0"]
    flags = train_job.parse_args(["--samples", "s", "--output", "o", "--model", "dcn", "--epochs", "4"])
    flags.overrides = ["model=din", "epochs=7"]
    config = train_job.load_train_config(flags)
    assert isinstance(config, TrainConfig) and (config.model, config.epochs) == ("dcn", 4)


def test_train_refuses_a_bad_mapping_before_run_is_touched(tmp_path):
    from pipelines.training.train import train

    run = tmp_path / "run"
    for change in ({"batch_size": -5}, {"params": {"embedding_dim": 0}}, {"early_stopping": {"patience": 2}}):
        config = {**load_config("train"), **change}
        with pytest.raises(ConfigError):
            train(str(tmp_path / "samples"), str(run), config)
        assert not run.exists()


# ---------------------------------------------------------------- the defaults, and what validation keeps


@pytest.mark.parametrize("job", SCHEMAS)
def test_the_defaults_validate_and_round_trip_unchanged(job):
    raw = load_config(job)
    validated = validate_build_config(raw) if job == "build_samples" else validate_train_config(raw).model_dump()
    assert validated == raw
    assert json.dumps(validated) == json.dumps(raw)  # the same types too: 30 stays 30, not 30.0


def test_a_validated_train_config_reads_as_attributes_and_dumps_as_the_yaml():
    config = validate_train_config(load_config("train", None, ["early_stopping.patience=5", "params.dropout=0.1"]))
    assert config.early_stopping.patience == 5 and config.params == {"dropout": 0.1}
    assert validate_train_config(config) is config
    assert list(config.model_dump()) == list(load_config("train"))


def test_dates_are_normalized_to_iso_strings():
    config = validate_build_config(
        load_config(
            "build_samples",
            None,
            ["split.valid_start=2026-01-22", "split.test_start=2026-01-23 06:00:00", "validation.ts_min=1995-01-01"],
        )
    )
    assert config["split"]["valid_start"] == "2026-01-22" and config["split"]["test_start"] == "2026-01-23T06:00:00"
    assert config["validation"]["ts_min"] == "1995-01-01"
    raw = load_config("build_samples")
    raw["split"].update(valid_start=date(2026, 1, 22), test_start=datetime(2026, 1, 23))
    assert validate_build_config(raw)["split"] == {
        **raw["split"],
        "valid_start": "2026-01-22",
        "test_start": "2026-01-23T00:00:00",
    }
    raw["split"].update(valid_start=1769040000, test_start="1769126400")  # epoch seconds, as split.py reads them
    assert validate_build_config(raw)["split"]["valid_start"] == 1769040000


def test_a_number_setting_takes_an_int_and_keeps_it():
    config = validate_build_config(load_config("build_samples", None, ["labels.attribution_window_minutes=45"]))
    assert config["labels"]["attribution_window_minutes"] == 45
    assert type(config["labels"]["attribution_window_minutes"]) is int
    config = validate_build_config(load_config("build_samples", None, ["item_stats.recent_days=2.5"]))
    assert config["item_stats"]["recent_days"] == 2.5
