"""s3:// for real, against a local S3 emulator: `moto_server` on 127.0.0.1 (a test-only dependency).

- jobs.train reads SAMPLES from s3://, writes its RUN there, and resumes from the checkpoints it left there;
- jobs.build_samples writes SAMPLES to s3:// (Spark's own parts through output.spark_scratch), equal to a
  local build, and refuses s3:// SAMPLES without a scratch before any work;
- publishing on an object store moves only its own keys, the empty `_SUCCESS` included;
- a job that used s3:// exits with its real code, not tensorflow-io's abort at exit (tensorflow/io#2039;
  pipelines/job_runner.py, whose exit codes tests/test_job_runner.py checks).

tensorflow-io aborts a process at its exit once it has used s3://, so everything that touches s3:// through
TensorFlow runs in a subprocess; this process reads and writes the bucket with boto3, an independent client.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest

from feature_spec import load_spec, num_examples
from pipelines.config import load_config
from pipelines.samples.build_samples import build_samples
from pipelines.training import metrics as offline_metrics
from tests.samples_io import read_all
from tests.test_plots import png_size
from tests.tf_samples import write_samples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "bucket"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
ABORT = "pure virtual method called"  # what tensorflow-io's S3 client prints when it aborts the exit


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3:
    """The emulator: its endpoint, the environment a job needs to reach it, and a boto3 client."""

    def __init__(self, endpoint: str):
        import boto3

        self.endpoint = endpoint
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_REGION"],
        )
        # tensorflow-io reads S3_ENDPOINT (with the scheme); the SDK must not look for an instance profile.
        self.env = {**os.environ, **CREDENTIALS, "S3_ENDPOINT": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}
        self.env["TF_CPP_MIN_LOG_LEVEL"] = "2"

    def keys(self, prefix: str = "") -> dict[str, int]:
        """{key: size} of every object under `prefix`."""
        found = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            found.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        return found

    def upload(self, folder, prefix: str) -> None:
        for parent, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(parent, name)
                self.client.upload_file(path, BUCKET, f"{prefix}/{os.path.relpath(path, folder)}")

    def download(self, prefix: str, folder) -> list[str]:
        """Every object under `prefix/` into `folder`; their paths relative to the prefix, sorted."""
        relative = []
        for key in self.keys(prefix + "/"):
            rel = key[len(prefix) + 1 :]
            os.makedirs(os.path.dirname(os.path.join(folder, rel)), exist_ok=True)
            self.client.download_file(BUCKET, key, os.path.join(folder, rel))
            relative.append(rel)
        return sorted(relative)

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=BUCKET, Key=key, Body=body)

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def start(self, *args: str) -> subprocess.Popen:
        """`python *args` in the project folder, with the emulator's environment, running."""
        return subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def run(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return finish(self.start(*args), timeout)


def finish(process: subprocess.Popen, timeout: int = 600) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto_server of our own on a free 127.0.0.1 port with an empty bucket; stopped by its pid at the end."""
    server = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    assert server, "moto_server is not installed: pip install -r requirements-dev.txt -c constraints.txt"
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        process = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        store = S3(endpoint)
        store.client.create_bucket(Bucket=BUCKET)
        yield store
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit code {result.returncode}\n{result.stderr[-3000:]}"
    assert ABORT not in result.stderr


# ---------------------------------------------------------------- publishing on an object store


PUBLISH = """
import posixpath
from pipelines import publish, storage
from pipelines.job_runner import run_job

def main(argv):
    final = argv[0]
    for run in argv[1:]:
        with publish.StagedOutput(final, markers=["_SUCCESS"]) as stage:
            storage.write_text(posixpath.join(stage.path, "data.txt"), f"run {run}")
            storage.write_text(posixpath.join(stage.path, "part", f"only-in-run-{run}"), "x")
            storage.write_text(posixpath.join(stage.path, "_SUCCESS"), "")
    return 0

run_job(main)
"""


def _stale_staging(name: str, *files: str) -> dict[str, bytes]:
    """The keys of a staging left two days ago by a killed run of `pub/out`."""
    started = time.time() - 2 * 86400
    marker = {"output": "s3://bucket/pub/out", "pid": 1, "host": "gone", "started": started, "started_at": "-"}
    return {f"pub/.out.staging-{name}/_STAGING.json": json.dumps(marker).encode()} | {
        f"pub/.out.staging-{name}/{file}": b"old" for file in files
    }


@pytest.mark.slow
def test_publishing_on_s3_replaces_the_output_and_touches_no_other_key(s3):
    # Keys that share the output's prefix: tensorflow-io's own rename of `pub/out` would take them along.
    neighbours = {"pub/out2/keep": b"a", "pub/out.bak": b"b", "pub/outer/_SUCCESS": b""}
    for key, body in neighbours.items():
        s3.put(key, body)
    _ok(s3.run("-c", PUBLISH, "s3://bucket/pub/out", "1"))
    kept = _stale_staging("kept", "out.previous/data.txt")
    for key, body in {**kept, **_stale_staging("gone", "out/data.txt")}.items():
        s3.put(key, body)
    _ok(s3.run("-c", PUBLISH, "s3://bucket/pub/out", "2"))
    assert s3.keys("pub/") == {
        **{key: len(body) for key, body in {**neighbours, **kept}.items()},
        "pub/out/_SUCCESS": 0,
        "pub/out/data.txt": 5,
        "pub/out/part/only-in-run-2": 1,
    }
    assert s3.read("pub/out/data.txt") == b"run 2"
    # Before run 2, killed runs' stagings: one still holding an earlier output stays (on an object store
    # it may be the only whole copy of it), the other is deleted.
    assert all(s3.read(key) == body for key, body in neighbours.items())


# ---------------------------------------------------------------- train


FAST = [
    "--model",
    "emb_mlp",
    "--set",
    "batch_size=64",
    "--set",
    "eval_batch_size=128",
    "--set",
    "shuffle_buffer=256",
    "--set",
    "params.hidden_units=[16]",
    "--set",
    "params.embedding_dim=8",
    "--set",
    "verbose=0",
]
RUN_NAMES = {"_RUN.json", "checkpoints", "embeddings", "metrics.parquet", "model", "plots", "predictions", "run.json"}


@pytest.mark.slow
def test_train_reads_s3_samples_writes_its_run_there_and_resumes_from_it(s3, tmp_path):
    spec, rows = write_samples(tmp_path / "samples", sizes={"train": 480, "valid": 160, "test": 160}, seed=1)
    s3.upload(tmp_path / "samples", "samples")
    samples, run = "s3://bucket/samples", "s3://bucket/runs/emb_mlp"

    _ok(s3.run("-m", "jobs.train", "--samples", samples, "--output", run, "--epochs", "2", *FAST))
    local = tmp_path / "run"
    files = s3.download("runs/emb_mlp", local)
    assert {f.split("/")[0] for f in files} == RUN_NAMES | {"tensorboard"}  # no staging left behind
    summary = json.loads((local / "run.json").read_text())
    assert (summary["samples"], summary["output"], summary["spec_hash"]) == (samples, run, spec["spec_hash"])
    assert summary["epochs_completed"] == 2
    assert summary["outputs"]["predictions"] == f"{run}/predictions"

    # The predictions read back: every test sample once, with its own label, and the AUC of run.json.
    predictions = pd.read_parquet(local / "predictions" / "test.parquet")
    assert len(predictions) == num_examples(spec, "test") == summary["num_examples"]["test"] == 160
    written = rows["test"].set_index("ts")
    joined = predictions.set_index("ts").join(written[["label", "user_id"]], rsuffix="_written")
    assert joined.index.is_unique and set(joined.index) == set(written.index)
    assert (joined["label"] == joined["label_written"]).all() and (joined["user_id"] == joined["user_id_written"]).all()
    recomputed = offline_metrics.evaluate(
        predictions["label"].to_numpy(), predictions["score"].to_numpy(), users=predictions["user_id"].to_numpy()
    )
    assert recomputed["auc"] == pytest.approx(summary["metrics"]["test"]["auc"], abs=1e-12)
    assert recomputed["logloss"] == pytest.approx(summary["metrics"]["test"]["logloss"], abs=1e-9)
    metrics = pd.read_parquet(local / "metrics.parquet")
    test_auc = metrics[(metrics.split == "test") & (metrics.metric == "auc")]["value"]
    assert test_auc.tolist() == [pytest.approx(summary["metrics"]["test"]["auc"], abs=1e-12)]
    # The embeddings' tokens come from the vocabularies, read from s3:// too.
    items = pd.read_parquet(local / "embeddings" / "item_id.parquet").sort_values("index")
    assert items["token"].tolist() == ["<PAD>", "<OOV>"] + [f"i{k}" for k in range(10)]
    assert (local / "model" / "assets.extra" / "spec_hash").read_text().strip() == spec["spec_hash"]
    # the item table's genres were read from the train samples on s3:// too
    assert items["genres"].iloc[0] is None and all(len(g) > 0 for g in items["genres"].iloc[2:])
    # the plots, published with the other outputs through local temporary files, are whole PNG files
    plots = sorted((local / "plots").iterdir())
    assert [p.name for p in plots] == ["reliability.png", "roc.png", "training_curves.png"]
    assert all(png_size(p)[0] >= 500 for p in plots)
    state = json.loads((local / "checkpoints" / "state.json").read_text())
    assert state["epoch"] == 2

    # Rerun with one more epoch: it resumes from the checkpoint on s3:// and replaces the outputs.
    _ok(s3.run("-m", "jobs.train", "--samples", samples, "--output", run, "--epochs", "3", *FAST))
    keys = s3.keys("runs/")
    assert not [k for k in keys if ".staging-" in k or ".previous" in k or "/.tmp-" in k]
    resumed = json.loads(s3.read("runs/emb_mlp/run.json"))
    assert (resumed["resumed_from_epoch"], resumed["epochs_completed"]) == (2, 3)
    assert [e["epoch"] for e in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][:2] == summary["history"]
    weights = sorted(k.rsplit("/", 1)[1] for k in keys if k.startswith("runs/emb_mlp/checkpoints/epoch-"))
    assert weights == ["epoch-0002.weights.h5", "epoch-0003.weights.h5"]  # checkpoints.keep = 2


# ---------------------------------------------------------------- build_samples


BUILD_SETS = ["spark.shuffle_partitions=1", "spark.output_partitions=1", "history.lookback_days=5"]
BUILD_SETS += ["item_stats.recent_days=3", "split.valid_start=2026-01-08", "split.test_start=2026-01-10"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("s3_raw") / "raw"
    generate = ["-m", "jobs.generate_synthetic", "--output", str(out), "--users", "60", "--items", "40"]
    generate += ["--days", "12", "--impressions", "1500", "--seed", "5"]
    subprocess.run([sys.executable, *generate], cwd=ROOT, check=True, capture_output=True)
    return str(out)


def _sorted_records(samples_dir) -> pd.DataFrame:
    records = read_all(str(samples_dir)).map(lambda v: tuple(v) if isinstance(v, (list, np.ndarray)) else v)
    scalars = [c for c in records.columns if not isinstance(records[c].iloc[0], tuple)]
    return records.sort_values(scalars).reset_index(drop=True)


def _vocab_and_rejects(samples_dir) -> dict[str, pd.DataFrame]:
    parts = {"rejects": pd.read_parquet(os.path.join(samples_dir, "rejects"))}
    for name in sorted(os.listdir(os.path.join(samples_dir, "vocab"))):
        table = pd.read_parquet(os.path.join(samples_dir, "vocab", name))
        parts[f"vocab/{name}"] = table.sort_values("index").reset_index(drop=True)
    return parts


@pytest.mark.slow
def test_build_samples_writes_s3_samples_equal_to_a_local_build(s3, spark, raw, tmp_path):
    scratch = tmp_path / "scratch"
    sets = [x for s in [*BUILD_SETS, f"output.spark_scratch={scratch}"] for x in ("--set", s)]
    job = s3.start("-m", "jobs.build_samples", "--input", raw, "--output", "s3://bucket/built", *sets)
    try:  # the local build meanwhile: two small Spark jobs mostly wait on their own stages
        local = str(tmp_path / "local")
        build_samples(spark, raw, local, load_config("build_samples", None, BUILD_SETS))
    finally:
        result = finish(job)
    _ok(result)

    copy = tmp_path / "copy"
    files = s3.download("built", copy)
    assert {f.split("/")[0] for f in files} == set(os.listdir(local))  # shards, spec, report, vocab, rejects
    assert "_SUCCESS" in files and "rejects/_SUCCESS" in files
    assert load_spec(str(copy)) == load_spec(local)  # the spec hash too
    pd.testing.assert_frame_equal(_sorted_records(copy), _sorted_records(local))
    ours, theirs = _vocab_and_rejects(str(copy)), _vocab_and_rejects(local)
    assert list(ours) == list(theirs)
    for name in ours:
        pd.testing.assert_frame_equal(ours[name], theirs[name], obj=name)
    report = json.loads((copy / "report.json").read_text())
    with open(os.path.join(local, "report.json")) as fh:
        expected = json.load(fh)
    assert report["output"] == "s3://bucket/built"
    for key in ("rows_read", "rejected", "samples", "vocabulary_sizes", "spec_hash", "clicks"):
        assert report[key] == expected[key], key
    assert os.listdir(scratch) == []  # the run's scratch staging is gone, the folder stays
    assert not [k for k in s3.keys() if ".built.staging-" in k]


@pytest.mark.slow
def test_build_samples_refuses_s3_samples_without_a_scratch_before_any_work(s3, raw, tmp_path):
    before = s3.keys()
    result = s3.run(
        "-m", "jobs.build_samples", "--input", raw, "--output", "s3://bucket/refused", "--set", BUILD_SETS[0]
    )
    assert result.returncode == 2, result.stderr[-3000:]  # its own code, although it used s3:// (not 134)
    assert ABORT not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: Spark cannot write the rejects/ and vocab/ of s3://bucket/refused: ")
    assert "output.spark_scratch" in error and "hadoop-aws" in error
    assert "step validate" not in result.stderr  # no step started
    assert s3.keys() == before


def test_a_scratch_on_s3_is_a_config_error_before_spark_starts(tmp_path, capsys):
    from jobs import build_samples as job

    args = ["--input", str(tmp_path / "raw"), "--output", str(tmp_path / "samples")]
    assert job.main([*args, "--set", "output.spark_scratch=s3://bucket/scratch"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "config error: output.spark_scratch: must be a local or hdfs:// folder (Spark writes rejects/ and vocab/ "
        "there through its own file system, and the job copies them into SAMPLES), got 's3://bucket/scratch'"
    ]
    assert not (tmp_path / "samples").exists()


def test_build_samples_refuses_raw_on_s3_before_any_work(spark, tmp_path):
    from pipelines.samples.raw_input import InputError

    out = tmp_path / "samples"
    with pytest.raises(InputError, match=r"^Spark cannot read the input s3://bucket/raw: .* hadoop-aws jars"):
        build_samples(spark, "s3://bucket/raw", str(out), load_config("build_samples", None, BUILD_SETS))
    assert os.listdir(tmp_path) == []
