"""How config YAML is read (pipelines/config.py): the defaults in conf/*.yaml, `--conf FILE` and every `--set`
value go through one loader that refuses YAML aliases before expanding them and keys given twice at any depth,
and a config error never quotes a value in full.

No Spark and no training: the jobs stop at their config (exit code 2) before they look at their input."""

import re
import time

import pytest

from jobs import build_samples as build_job
from jobs import train as train_job
from pipelines.config import CONF_DIR, ConfigError, load_config


def _write(tmp_path, text: str, name: str = "conf.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _build(tmp_path, *args: str) -> int:
    return build_job.main(["--input", str(tmp_path / "raw"), "--output", str(tmp_path / "samples"), *args])


def _config_errors(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("config error: ")]


# ---------------------------------------------------------------- aliases


def _alias_bomb(levels: int = 9, width: int = 10) -> str:
    """Billion laughs: each level's list holds `width` aliases of the one before (width**levels strings)."""
    lines = ["passthrough:", "  - &lol0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"  - &lol{i} [" + ", ".join([f"*lol{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path, capsys):
    path = _write(tmp_path, _alias_bomb())
    started = time.perf_counter()
    with pytest.raises(ConfigError) as refused:  # by the loader, before the merge and the schema walk the value
        load_config("build_samples", str(path))
    assert time.perf_counter() - started < 1.0
    # the file and the line of the first alias (passthrough's second item)
    assert re.fullmatch(rf"{re.escape(str(path))}: line 3: YAML alias \*lol0 refused .*", str(refused.value))
    started = time.perf_counter()
    assert _build(tmp_path, "--conf", str(path)) == 2
    assert time.perf_counter() - started < 1.0
    (line,) = _config_errors(capsys)
    assert "YAML alias *lol0 refused" in line and not (tmp_path / "samples").exists()


@pytest.mark.parametrize(
    "text",
    [
        "history:\n  lookback_days: &days 7\nitem_stats:\n  recent_days: *days\n",  # a scalar
        "passthrough: &cols [a, b]\nnormalize:\n  log1p: *cols\n",  # a list
        "history: &h\n  max_len: 5\nitems: {<<: *h}\n",  # a merge key is an alias too
    ],
    ids=["scalar", "list", "merge_key"],
)
def test_an_alias_in_a_config_file_is_refused(text, tmp_path):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: line \d+: YAML alias \*\w+ refused"):
        load_config("build_samples", str(path))


def test_an_alias_in_a_set_value_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^--set 'passthrough=\[&a x, \*a\]': line 1: YAML alias \*a refused"):
        load_config("build_samples", None, ["passthrough=[&a x, *a]"])
    # an anchor that nothing refers to expands nothing: taken
    assert load_config("build_samples", None, ["passthrough=[&a x]"])["passthrough"] == ["x"]


def test_a_value_nested_past_the_parser_is_a_config_error(tmp_path):
    deep = "[" * 2000 + "]" * 2000
    with pytest.raises(ConfigError, match=r"^--set 'passthrough=\[\[\[.*\.\.\.: the value is nested too deep$"):
        load_config("build_samples", None, [f"passthrough={deep}"])
    path = _write(tmp_path, f"passthrough: {deep}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: a value is nested too deep$"):
        load_config("build_samples", str(path))


# ---------------------------------------------------------------- keys given twice


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("history:\n  lookback_days: 7\nhistory:\n  max_len: 5\n", "history", "lines 1 and 3"),
        ("history:\n  lookback_days: 7\n  max_len: 5\n  lookback_days: 2\n", "history.lookback_days", "lines 2 and 4"),
        ("items:\n  vector_columns:\n    v: 8\n    w: 4\n    v: 16\n", "items.vector_columns.v", "lines 3 and 5"),
        ("history: {max_len: 5, max_len: 6}\n", "history.max_len", "both on line 1"),
        ("passthrough:\n  - {a: 1}\n  - {b: 1,\n     b: 2}\n", "passthrough[1].b", "lines 3 and 4"),
        ("epochs: 3\n'epochs': 4\n", "epochs", "lines 1 and 2"),  # quoted or not, the same key
        ('params:\n  dropout: 0.1\n  "dropout": 0.2\n', "params.dropout", "lines 2 and 3"),  # an open mapping too
    ],
    ids=["section", "nested", "vector_columns", "flow_mapping", "in_a_list", "quoted", "open_params"],
)
def test_a_key_given_twice_in_a_config_file_is_refused(text, key, lines, tmp_path):
    path = _write(tmp_path, text)
    job = "train" if text.startswith(("epochs", "params")) else "build_samples"
    with pytest.raises(ConfigError) as refused:
        load_config(job, str(path))
    assert str(refused.value) == (
        f"{path}: key {key} given twice ({lines}): a key may be given once (YAML would silently keep the last)"
    )


def test_a_key_given_twice_stops_the_jobs_with_exit_code_2(tmp_path, capsys):
    path = _write(tmp_path, "history:\n  lookback_days: 7\nhistory:\n  max_len: 5\n")
    assert _build(tmp_path, "--conf", str(path)) == 2
    assert _config_errors(capsys) == [
        f"config error: {path}: key history given twice (lines 1 and 3): a key may be given once "
        "(YAML would silently keep the last)"
    ]
    assert not (tmp_path / "samples").exists()
    path = _write(tmp_path, "early_stopping:\n  patience: 3\n  patience: 4\n", "train.yaml")
    run = tmp_path / "run"
    assert train_job.main(["--samples", str(tmp_path / "samples"), "--output", str(run), "--conf", str(path)]) == 2
    (line,) = _config_errors(capsys)
    assert "key early_stopping.patience given twice (lines 2 and 3)" in line and not run.exists()


def test_a_key_given_twice_in_a_set_value_is_refused():
    with pytest.raises(ConfigError, match=r"^--set 'history=\{max_len: 5, max_len: 6\}': key history.max_len given"):
        load_config("build_samples", None, ["history={max_len: 5, max_len: 6}"])
    with pytest.raises(ConfigError, match=r": key items.vector_columns.v given twice \(both on line 1\)"):
        load_config("build_samples", None, ["items.vector_columns={v: 1, v: 2}"])
    # the same key in two --set flags is an override, as always
    assert load_config("build_samples", None, ["history.max_len=5", "history.max_len=6"])["history"]["max_len"] == 6


@pytest.mark.parametrize("job", ["build_samples", "train"])
def test_the_defaults_pass_the_loader_and_a_repeated_key_in_them_would_not(job, tmp_path):
    # conf/<job>.yaml is read by the same loader (load_config); as a --conf it changes nothing
    defaults = (CONF_DIR / f"{job}.yaml").read_text()
    assert load_config(job, str(_write(tmp_path, defaults))) == load_config(job)
    first_key = next(line.split(":")[0] for line in defaults.splitlines() if re.match(r"\w+:", line))
    repeated = _write(tmp_path, defaults + f"{first_key}: null\n", "repeated.yaml")
    with pytest.raises(
        ConfigError, match=rf"key {first_key} given twice \(lines \d+ and {len(defaults.splitlines()) + 1}\)"
    ):
        load_config(job, str(repeated))


# ---------------------------------------------------------------- values quoted in messages


LONG = "x" * 100_000
# A value is quoted in at most ~200 characters (pipelines.config.SHOWN_CHARS); a line may quote two.
LINE_BOUND = 500


@pytest.mark.parametrize(
    "setting",
    [
        f"history.max_len={LONG}",  # a type error quotes the value
        "history.max_len=[" + ", ".join(map(str, range(20_000))) + "]",
        "history={max_len: [" + ", ".join([f"'{LONG[:1000]}'"] * 50) + "]}",
        f"passthrough=[{LONG[:5000]}, {LONG[:5000]}]",  # names repeated
        f"items.vector_columns={{{LONG[:1000]}: 0}}",  # a length check quotes the name (YAML keys: < 1024)
        f"history.max_len=[{LONG}",  # not YAML: the --set is quoted
        f"{'k' * 10_000}=1",  # an unknown key
        f"history.{'k' * 10_000}=1",
    ],
    ids=lambda s: s[:30],
)
def test_a_long_value_is_cut_in_a_config_error(setting, tmp_path, capsys):
    assert _build(tmp_path, "--set", setting) == 2
    lines = _config_errors(capsys)
    assert lines and all(len(line) < LINE_BOUND for line in lines), [len(line) for line in lines]
    assert any("..." in line for line in lines), lines
