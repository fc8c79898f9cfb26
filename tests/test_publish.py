"""pipelines/publish.py and the four jobs that use it: no job destroys what it did not write,
readers always find a complete output, and abandoned stagings are cleaned up. Real files only.
The paths and file systems underneath (pipelines/storage.py): tests/test_storage.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipelines import publish, storage
from pipelines.publish import OutputRefused, StagedOutput, check_output

ROOT = Path(__file__).resolve().parent.parent
TINY_WORLD = dict(users=40, items=30, days=6, impressions=1200, seed=1)


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def staging_leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".staging-" in p.name or p.name.startswith(".staging"))


def publish_once(final: Path, name: str = "part-0") -> None:
    with StagedOutput(final, markers=["_SUCCESS"]) as stage:
        Path(stage.path, name).write_text(name)
        Path(stage.path, "_SUCCESS").write_text("")


# A run of a job that has created its staging and then waits: killed, it is what a crash leaves behind.
RUN_IN_PROGRESS = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from pipelines.publish import StagedOutput, Staging
where, kind = sys.argv[2], sys.argv[3]
staging = StagedOutput(where, markers=["_SUCCESS"]).staging if kind == "output" else Staging(where, ".staging-")
open(staging.path + "/half-written", "w").write("half")
print(staging.path, flush=True)
time.sleep(600)
"""


@contextmanager
def run_in_progress(where: Path, kind: str = "output"):
    """(process, staging path) of a run writing `where`; kind 'output' (whole output) or 'run' (inside RUN)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_IN_PROGRESS, str(ROOT), str(where), kind], stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc, Path(proc.stdout.readline().strip())
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def killed_run(where: Path, kind: str = "output") -> Path:
    with run_in_progress(where, kind) as (proc, staging):
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert staging.is_dir() and Path(f"{staging}.lock").exists()
    return staging


# ---------------------------------------------------------------- the rules, on paths


def test_check_output_resolves_symlinks_and_accepts_empty_or_earlier_outputs(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (tmp_path / "link").symlink_to(raw)
    with pytest.raises(OutputRefused, match=f"lies inside the input {raw}"):
        check_output(tmp_path / "link" / "samples", inputs=[raw])
    with pytest.raises(OutputRefused, match="file system root"):
        check_output("/")
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty", markers=["_SUCCESS"]) == str(tmp_path / "empty")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "_SUCCESS").write_text("")
    with pytest.raises(OutputRefused, match=r"has no _SUCCESS\+spec.json"):
        check_output(earlier, markers=[("_SUCCESS", "spec.json")])  # a tuple needs all of its files
    (earlier / "spec.json").write_text("{}")
    check_output(earlier, markers=[("_SUCCESS", "spec.json")])
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputRefused, match="not a directory"):
        check_output(tmp_path / "a-file")


# ---------------------------------------------------------------- publishing

POLLER = r"""
import os, sys
final, stop = sys.argv[1], sys.argv[2]
marker = os.path.join(final, "_SUCCESS")
polls = misses = 0
print("polling", flush=True)
while not os.path.exists(stop):
    for _ in range(100):
        polls += 1
        if not (os.path.exists(final) and os.path.exists(marker)):
            misses += 1
print(polls, misses)
"""


@pytest.mark.slow
@pytest.mark.skipif(publish._RENAMEAT2 is None, reason="renameat2 needs Linux with glibc >= 2.28")
def test_a_reader_never_finds_the_output_missing_while_it_is_replaced(tmp_path):
    """Another process polls `final` and `final/_SUCCESS` while 150 reruns replace it. (With the
    two-rename fallback forced, the same poller counted about 1,800 misses in 300 publishes.)"""
    final, stop = tmp_path / "out", tmp_path / "stop"
    publish_once(final)
    poller = subprocess.Popen([sys.executable, "-c", POLLER, str(final), str(stop)], stdout=subprocess.PIPE, text=True)
    assert poller.stdout.readline().strip() == "polling"
    for i in range(150):
        publish_once(final, f"part-{i}")
    stop.write_text("")
    polls, misses = map(int, poller.communicate(timeout=60)[0].split())
    assert polls > 1000 and misses == 0
    assert sorted(os.listdir(final)) == ["_SUCCESS", "part-149"]  # the old outputs are gone
    assert sorted(os.listdir(tmp_path)) == ["out", "stop"]  # no staging, no lock file


def test_a_failed_run_leaves_the_earlier_output_and_removes_only_its_staging(tmp_path):
    final = tmp_path / "out"
    publish_once(final)
    before = files_of(final)
    with pytest.raises(RuntimeError, match="boom"):
        with StagedOutput(final, markers=["_SUCCESS"]) as stage:
            Path(stage.path, "_SUCCESS").write_text("")
            raise RuntimeError("boom")
    assert files_of(final) == before and os.listdir(tmp_path) == ["out"]


def test_object_store_path_uses_gfile_renames_and_age_for_stale_stagings(tmp_path, monkeypatch):
    """The scheme:// code path (tf.io.gfile; no locks, no exchange) run on local files."""
    monkeypatch.setattr(storage, "file_system", lambda path: storage._GFileFs())
    final = tmp_path / "out"
    publish_once(final, "old")
    old_run = killed_run(final)  # a staging of a run that started just now: too young to be stale
    ancient = tmp_path / ".out.staging-ancient"
    ancient.mkdir()
    (ancient / publish.STAGING_MARKER).write_text(json.dumps({"started": 1.0}))
    publish_once(final, "new")
    assert sorted(os.listdir(final)) == ["_SUCCESS", "new"]
    assert old_run.exists() and not ancient.exists()
    (final / "_SUCCESS").unlink()
    with pytest.raises(OutputRefused):
        publish_once(final)


def test_a_run_killed_between_the_two_renames_gets_its_old_output_restored(tmp_path, monkeypatch):
    """Fallback swap: old output renamed into the staging, the process killed before the new one moved in."""
    monkeypatch.setattr(storage, "file_system", lambda path: storage._GFileFs())
    monkeypatch.setattr(publish, "STALE_AFTER_SECONDS", 0)
    final = tmp_path / "out"
    publish_once(final, "old")
    before = files_of(final)
    stage = StagedOutput(final, markers=["_SUCCESS"])
    Path(stage.path, "_SUCCESS").write_text("")
    os.rename(final, f"{stage.path}.previous")  # the first of the two renames, then the kill
    assert not final.exists()
    publish.remove_stale_stagings(str(tmp_path), ".out.staging-", started=float("inf"))
    assert files_of(final) == before
    assert staging_leftovers(tmp_path) == []


# ---------------------------------------------------------------- stale stagings


def test_stale_staging_of_a_killed_run_is_removed_foreign_and_live_ones_are_kept(tmp_path):
    final = tmp_path / "out"
    publish_once(final)
    killed = killed_run(final)
    foreign = tmp_path / ".out.staging-by-hand"  # the same name pattern, but not our marker
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    other_output = killed_run(tmp_path / "other")  # stale, but another output's: not this run's business
    with run_in_progress(final) as (_, live):
        publish_once(final, "part-1")
        assert not killed.exists() and not Path(f"{killed}.lock").exists()
        assert live.is_dir() and (live / "half-written").exists()
        assert (foreign / "notes.txt").read_text() == "mine"
        assert other_output.is_dir()
    assert sorted(os.listdir(final)) == ["_SUCCESS", "part-1"]


def test_a_staging_locked_by_another_descriptor_is_kept(tmp_path):
    import fcntl

    final = tmp_path / "out"
    killed = killed_run(final)
    fd = os.open(f"{killed}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        publish_once(final)
        assert killed.is_dir()
    finally:
        os.close(fd)
    publish_once(final)
    assert not killed.exists()


# ---------------------------------------------------------------- build_samples


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    from jobs.generate_synthetic import generate

    path = tmp_path_factory.mktemp("publish") / "raw"
    generate(str(path), **TINY_WORLD)
    return path


def build_main(raw_dir, output, *sets):
    from jobs.build_samples import main

    args = ["--input", str(raw_dir), "--output", str(output), "--set", "spark.output_partitions=1"]
    for item in sets:
        args += ["--set", item]
    return main(args)


def test_build_samples_refuses_an_output_with_unrelated_files(spark, raw, tmp_path, capsys):
    out = tmp_path / "samples"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    assert build_main(raw, out) == 2
    err = capsys.readouterr().err
    assert f"error: output {out} is not empty" in err and "_SUCCESS+feature_spec.json" in err
    assert files_of(out) == {"thesis.tex": b"do not delete"}
    assert staging_leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["same", "inside"])
def test_build_samples_refuses_an_output_overlapping_the_input(spark, raw, capsys, where):
    before = files_of(raw)
    out = raw if where == "same" else raw / "samples"
    assert build_main(raw, out) == 2
    err = capsys.readouterr().err
    assert str(out) in err and f"the input {raw}" in err
    assert files_of(raw) == before
    assert staging_leftovers(raw.parent) == []


@pytest.mark.slow
def test_build_samples_rerun_replaces_an_earlier_output(spark, raw, tmp_path):
    out = tmp_path / "samples"
    (out / "train").mkdir(parents=True)  # an earlier output: its markers, its report, a shard of its own
    for name in ("_SUCCESS", "feature_spec.json", "report.json", "train/part-00099.tfrecord.gz"):
        (out / name).write_text("earlier run")
    assert build_main(raw, out) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["output"] == str(out) and report["samples"]["train"]["rows"] > 0
    assert not (out / "train" / "part-00099.tfrecord.gz").exists()
    for split, entry in report["samples"].items():
        assert len(list((out / split).glob("part-*.tfrecord.gz"))) == entry["shards"], split
    assert staging_leftovers(tmp_path) == []


# ---------------------------------------------------------------- train

TRAIN_FAST = [
    "--model",
    "emb_mlp",
    "--epochs",
    "1",
    "--set",
    "batch_size=64",
    "--set",
    "params.hidden_units=[8]",
    "--set",
    "params.embedding_dim=4",
    "--set",
    "verbose=0",
    "--set",
    "outputs.embeddings=false",
]


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    from tests.tf_samples import write_samples

    path = tmp_path_factory.mktemp("publish") / "samples"
    write_samples(path, sizes={"train": 128, "valid": 64, "test": 64})
    return path


def train_main(samples_dir, run):
    from jobs.train import main

    return main(["--samples", str(samples_dir), "--output", str(run), *TRAIN_FAST])


def test_train_refuses_a_run_inside_the_samples(samples, capsys):
    before = files_of(samples)
    assert train_main(samples, samples / "run") == 2
    assert f"lies inside the input {samples}" in capsys.readouterr().err
    assert files_of(samples) == before


def test_train_refuses_a_run_folder_with_unrelated_files(samples, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert train_main(samples, run) == 2
    assert "_RUN.json or run.json or checkpoints/state.json" in capsys.readouterr().err
    assert files_of(run) == {"notes.txt": b"mine"}


@pytest.mark.slow
def test_train_marks_its_run_and_removes_stale_stagings_in_it(samples, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "_RUN.json").write_text("{}")  # a run of this job, whose outputs step was killed
    killed = killed_run(run, kind="run")
    foreign = run / ".staging-by-hand"
    foreign.mkdir()
    assert train_main(samples, run) == 0
    assert not killed.exists() and foreign.exists()
    assert sorted(p for p in os.listdir(run) if p.startswith((".staging", "_RUN"))) == [".staging-by-hand", "_RUN.json"]
    fresh = tmp_path / "fresh"
    assert train_main(samples, fresh) == 0
    assert json.loads((fresh / "_RUN.json").read_text())["run_id"] == "fresh"


# ---------------------------------------------------------------- generate_synthetic and import_movielens


def test_generate_synthetic_refuses_an_output_with_unrelated_files(tmp_path, capsys):
    from jobs.generate_synthetic import main

    out = tmp_path / "raw"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["--output", str(out), "--users", "20", "--items", "20", "--days", "1", "--impressions", "100"]) == 2
    assert "_generator.json" in capsys.readouterr().err
    assert files_of(out) == {"notes.txt": b"mine"} and staging_leftovers(tmp_path) == []


@pytest.mark.parametrize("where", ["unrelated", "inside"])
def test_import_movielens_refuses_unrelated_files_and_its_source(spark, tmp_path, capsys, where):
    from jobs.import_movielens import main

    source = tmp_path / "ml"
    source.mkdir()
    (source / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,4.0,1000000000\n")
    (source / "movies.csv").write_text("movieId,title,genres\n10,Toy Story (1995),Animation\n")
    out = tmp_path / "raw" if where == "unrelated" else source / "raw"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = files_of(tmp_path)
    assert main(["--source", str(source), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert ("_SUCCESS+_source.json" in err) if where == "unrelated" else (f"the input {source}" in err)
    assert files_of(tmp_path) == before and staging_leftovers(tmp_path) == []
