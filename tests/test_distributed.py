"""Training past one process (pipelines/training/distributed.py): TF_CONFIG, the workers' file shares,
and real multi_worker and parameter_server clusters of local processes on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest

from jobs.train import main
from pipelines.training import metrics as offline_metrics
from pipelines.training.dataset import shard_files
from pipelines.training.distributed import Task, check_cluster, parse_tf_config
from pipelines.training.epochs import steps_per_epoch
from tests.tf_samples import write_samples

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = [
    "--epochs",
    "2",
    "--set",
    "batch_size=128",
    "--set",
    "eval_batch_size=512",
    "--set",
    "shuffle_buffer=1000",
    "--set",
    "params.hidden_units=[16]",
    "--set",
    "params.embedding_dim=8",
    "--set",
    "verbose=0",
    "--set",
    "outputs.embeddings=false",
    "--set",
    "early_stopping.patience=5",
]
# Two workers see the same rows as one process, in another order and in two halves of each batch,
# which moves the test AUC as another seed does. Over seeds 0-3 single-process runs on these samples
# spread by 0.0053 (wide_deep), 0.0074 (deepfm), 0.0064 (emb_mlp); 0.02 allows for that
# with room, and is far below what a step that lost half the data or the signal would cost (AUC ~0.88
# here, 0.5 without the signal).
AUC_TOLERANCE = 0.02


# ---------------------------------------------------------------- TF_CONFIG and shares, in process


def _tf_config(cluster: dict, task_type: str, index: int) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def test_the_chief_is_the_chief_task_else_worker_0(monkeypatch):
    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", _tf_config(workers, "worker", 0))
    assert Task.from_environment().is_chief
    monkeypatch.setenv("TF_CONFIG", _tf_config(workers, "worker", 1))
    assert not Task.from_environment().is_chief
    with_chief = {"chief": ["127.0.0.1:0"], **workers}
    monkeypatch.setenv("TF_CONFIG", _tf_config(with_chief, "worker", 0))
    assert not Task.from_environment().is_chief
    monkeypatch.setenv("TF_CONFIG", _tf_config(with_chief, "chief", 0))
    assert Task.from_environment().is_chief
    monkeypatch.delenv("TF_CONFIG")
    task = Task.from_environment()
    assert task.is_chief and task.describe() == "single process"


def test_a_parameter_server_cluster_needs_chief_workers_and_ps():
    with pytest.raises(ValueError, match="missing: ps"):
        check_cluster("parameter_server", Task("chief", 0, {"chief": ["a:1"], "worker": ["a:2"]}))
    with pytest.raises(ValueError, match="not 'ps'"):
        check_cluster("multi_worker", Task("ps", 0, {"worker": ["a:1"], "ps": ["a:2"]}))
    check_cluster("parameter_server", Task("chief", 0, {"chief": ["a:1"], "worker": ["a:2"], "ps": ["a:3"]}))


def test_a_bad_tf_config_is_a_config_error_before_run_is_touched(tmp_path, monkeypatch, capsys):
    samples = tmp_path / "samples"
    write_samples(samples, sizes={"train": 40, "valid": 20, "test": 20})
    monkeypatch.setenv("TF_CONFIG", _tf_config({"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}, "chief", 0))
    run = tmp_path / "run"
    code = main(["--samples", str(samples), "--output", str(run), "--set", "distribute.strategy=parameter_server"])
    assert code == 2
    err = capsys.readouterr().err
    assert "distribute.strategy" in err and "missing: ps" in err
    assert "distribute.strategy: distribute.strategy" not in err  # named once
    assert not run.exists()


WORKERS = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
# TF_CONFIG texts TensorFlow cannot run on, each a ValueError, JSONDecodeError or TypeError traceback (or a
# silent single process) before they were checked; (strategy, TF_CONFIG, what the message says).
MALFORMED_TF_CONFIGS = {
    "empty": ("multi_worker", "", "is set but empty"),
    "blank": ("multi_worker", "  \n", "is set but empty"),
    "not_json": ("multi_worker", "worker:0", "is not JSON"),
    "truncated": ("multi_worker", '{"cluster": {"worker": ["127.0.0.1:1"]', "is not JSON"),
    "long_garbage": ("multi_worker", "x" * 100_000, "is not JSON"),
    "nested_past_the_stack": ("multi_worker", "[" * 100_000, "is not"),
    "a_list": ("multi_worker", json.dumps([WORKERS]), "must be a JSON object"),
    "a_string": ("multi_worker", json.dumps("worker"), "must be a JSON object"),
    "null": ("multi_worker", "null", "must be a JSON object"),
    "unknown_key": ("multi_worker", json.dumps({"clusters": WORKERS}), "unknown keys ['clusters']"),
    "no_task": ("multi_worker", json.dumps({"cluster": WORKERS}), 'has a "cluster" but no "task"'),
    "no_cluster": ("multi_worker", json.dumps({"task": {"type": "worker", "index": 0}}), 'has a "task" but no'),
    "cluster_a_list": ("multi_worker", _tf_config(["127.0.0.1:1"], "worker", 0), "cluster must be an object"),
    "workers_a_string": ("multi_worker", _tf_config({"worker": "127.0.0.1:1,127.0.0.1:2"}, "worker", 0), "list"),
    "no_workers": ("multi_worker", _tf_config({"worker": []}, "worker", 0), "cluster.worker must be a list"),
    "address_a_number": ("multi_worker", _tf_config({"worker": ["127.0.0.1:1", 2]}, "worker", 0), "worker[1]"),
    "unknown_job": ("multi_worker", _tf_config({"workers": ["127.0.0.1:1"]}, "worker", 0), "task type 'workers'"),
    "two_chiefs": ("multi_worker", _tf_config({"chief": ["a:1", "a:2"], **WORKERS}, "chief", 0), "one address"),
    "task_a_string": ("multi_worker", json.dumps({"cluster": WORKERS, "task": "worker"}), "task must be an object"),
    "unknown_task_type": ("multi_worker", _tf_config(WORKERS, "master", 0), "task.type must be one of"),
    "no_task_type": ("multi_worker", json.dumps({"cluster": WORKERS, "task": {"index": 0}}), "task.type must be"),
    "type_not_in_cluster": ("multi_worker", _tf_config(WORKERS, "chief", 0), "has no chief tasks"),
    "index_out_of_range": ("multi_worker", _tf_config(WORKERS, "worker", 2), "task.index must be in 0..1"),
    "index_negative": ("multi_worker", _tf_config(WORKERS, "worker", -1), "task.index must be in 0..1"),
    "index_a_string": ("multi_worker", _tf_config(WORKERS, "worker", "1"), "task.index must be an integer"),
    "index_a_bool": ("multi_worker", _tf_config(WORKERS, "worker", True), "task.index must be an integer"),
    "ps_not_json": ("parameter_server", "{cluster: chief}", "is not JSON"),
    "ps_a_string": (
        "parameter_server",
        _tf_config({"chief": ["a:1"], "worker": ["a:2"], "ps": "a:3"}, "chief", 0),
        "cluster.ps must be a list",
    ),
    "ps_index_out_of_range": (
        "parameter_server",
        _tf_config({"chief": ["a:1"], "worker": ["a:2"], "ps": ["a:3"]}, "ps", 1),
        "task.index must be in 0..0",
    ),
    "ps_evaluator": (
        "parameter_server",
        _tf_config({"chief": ["a:1"], "worker": ["a:2"], "ps": ["a:3"], "evaluator": ["a:4"]}, "evaluator", 0),
        "not 'evaluator'",
    ),
}


@pytest.mark.parametrize("case", MALFORMED_TF_CONFIGS)
def test_a_malformed_tf_config_is_a_one_line_config_error(case, tmp_path, monkeypatch, capsys):
    strategy, tf_config, what = MALFORMED_TF_CONFIGS[case]
    monkeypatch.setenv("TF_CONFIG", tf_config)
    run = tmp_path / "run"
    # No samples: the check comes before SAMPLES is read, RUN touched or a cluster set up.
    code = main(
        ["--samples", str(tmp_path / "samples"), "--output", str(run), "--set", f"distribute.strategy={strategy}"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if " INFO " not in line]
    assert line.startswith("config error: ") and "TF_CONFIG" in line and what in line, line
    assert len(line) < 400  # the TF_CONFIG is quoted in at most ~200 characters
    assert not run.exists()


def test_a_well_formed_tf_config_is_read():
    cluster = {"chief": ["a:0"], "worker": ["a:1", "a:2"], "ps": ["a:3"]}
    assert parse_tf_config(_tf_config(cluster, "worker", 1)) == Task("worker", 1, cluster)
    assert parse_tf_config(json.dumps({"cluster": cluster, "task": {"type": "ps"}})) == Task("ps", 0, cluster)
    assert parse_tf_config(
        json.dumps({"cluster": WORKERS, "task": {"type": "worker", "index": 0}, "rpc_layer": "grpc"})
    )
    assert parse_tf_config("{}") == Task()  # as TensorFlow reads it: no cluster


def test_worker_shares_cover_the_files_once():
    files = [f"train/part-{i:05d}.tfrecord.gz" for i in range(5)]
    shares = [shard_files(files[::-1], "train", 2, i) for i in range(2)]
    assert shares == [files[0::2], files[1::2]]
    assert sorted(shares[0] + shares[1]) == files
    with pytest.raises(ValueError, match=r"2 file\(s\) for 3 workers.*spark.output_partitions=3"):
        shard_files(files[:2], "train", 3, 0)


def test_an_epoch_is_one_pass_at_the_global_batch():
    class Config:
        batch_size, max_steps_per_epoch = 128, None

    assert steps_per_epoch(Config, 1000) == 8  # ceil(1000 / 128)
    Config.max_steps_per_epoch = 3
    assert steps_per_epoch(Config, 1000) == 3


# ---------------------------------------------------------------- real clusters of local processes


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Processes:
    """Local task processes, each stopped by its pid at the end (also when the test fails)."""

    def __init__(self, log_dir):
        self.log_dir, self.procs = log_dir, {}

    def start(self, name: str, args: list, tf_config: str) -> subprocess.Popen:
        env = {**os.environ, "TF_CONFIG": tf_config, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
        log = open(self.log_dir / f"{name}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "jobs.train", *args], cwd=REPO, env=env, stdout=log, stderr=log)
        self.procs[name] = proc
        return proc

    def wait(self, name: str, timeout: float = 600) -> int:
        try:
            return self.procs[name].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{name} did not finish in {timeout} s; log: {self.log(name)[-3000:]}")

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture
def processes(tmp_path):
    procs = Processes(tmp_path)
    yield procs
    procs.stop()
    assert all(p.poll() is not None for p in procs.procs.values())


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    path = tmp_path_factory.mktemp("distributed") / "samples"
    write_samples(path, sizes={"train": 4000, "valid": 1000, "test": 1000}, seed=5, shards=2)
    return str(path)


def _weights(path) -> dict:
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _test_auc_from_predictions(run) -> float:
    p = pd.read_parquet(os.path.join(run, "predictions", "test.parquet"))
    return offline_metrics.auc(p["label"].to_numpy(), p["score"].to_numpy())


def _single_process_auc(samples, tmp_path, model: str) -> float:
    run = tmp_path / "single"
    assert main(["--samples", samples, "--model", model, "--output", str(run), *COMMON]) == 0
    with open(run / "run.json") as fh:
        return json.load(fh)["metrics"]["test"]["auc"]


@pytest.mark.slow
def test_multi_worker_two_workers_agree_and_only_the_chief_writes(samples, tmp_path, processes):
    model = "wide_deep"  # two optimizers in one step: FTRL for the wide part, Adam for the rest
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    runs = [tmp_path / "run", tmp_path / "run-of-worker-1"]
    weights = tmp_path / "weights"
    for i in range(2):
        args = ["--samples", samples, "--model", model, "--output", str(runs[i]), *COMMON]
        args += ["--set", "distribute.strategy=multi_worker", "--set", f"debug.weights_dir={weights}"]
        processes.start(f"worker{i}", args, _tf_config(cluster, "worker", i))
    for i in range(2):
        assert processes.wait(f"worker{i}") == 0, processes.log(f"worker{i}")[-3000:]

    # the same weights on both workers after the last step
    w0, w1 = (_weights(weights / f"worker-worker-{i}.weights.h5") for i in range(2))
    assert sorted(w0) == sorted(w1) and len(w0) > 4
    for name in w0:
        np.testing.assert_array_equal(w0[name], w1[name], err_msg=name)

    # the chief wrote the run; worker 1 wrote nothing under its --output
    assert not runs[1].exists()
    assert {"run.json", "metrics.parquet", "predictions", "model", "checkpoints", "tensorboard"} <= set(
        os.listdir(runs[0])
    )
    with open(runs[0] / "run.json") as fh:
        summary = json.load(fh)
    assert summary["distribute"]["strategy"] == "multi_worker"
    assert summary["distribute"]["cluster"] == {"worker": 2}
    assert summary["epochs_completed"] == 2
    # an epoch is one pass over train at the global batch, shared by the two workers
    assert [h["steps"] for h in summary["history"]] == [32, 32]  # ceil(4000 / 128)
    assert abs(summary["metrics"]["test"]["auc"] - _test_auc_from_predictions(runs[0])) < 1e-9

    single = _single_process_auc(samples, tmp_path, model)
    assert abs(summary["metrics"]["test"]["auc"] - single) <= AUC_TOLERANCE, (summary["metrics"]["test"], single)


@pytest.mark.slow
def test_multi_worker_resumes_after_a_crash_on_every_worker(samples, tmp_path, processes):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    run = tmp_path / "run"

    def launch(tag: str, *extra) -> list[int]:
        for i in range(2):
            args = ["--samples", samples, "--model", "emb_mlp", "--output", str(run), *COMMON, *extra]
            args += ["--set", "distribute.strategy=multi_worker"]
            processes.start(f"{tag}{i}", args, _tf_config(cluster, "worker", i))
        return [processes.wait(f"{tag}{i}") for i in range(2)]

    assert launch("crash", "--set", "debug.crash_after_epoch=1") == [4, 4]
    with open(run / "checkpoints" / "state.json") as fh:
        assert json.load(fh)["epoch"] == 1
    assert not (run / "run.json").exists()
    assert launch("resume") == [0, 0], processes.log("resume0")[-3000:]
    with open(run / "run.json") as fh:
        summary = json.load(fh)
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_completed"] == 2
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    assert "checkpoint of epoch 1" in processes.log("resume1")  # the other worker resumed too


@pytest.mark.slow
def test_parameter_server_keeps_the_embedding_tables_on_the_ps(samples, tmp_path, processes):
    model = "deepfm"
    chief, worker, ps = _free_ports(3)
    cluster = {"chief": [f"127.0.0.1:{chief}"], "worker": [f"127.0.0.1:{worker}"], "ps": [f"127.0.0.1:{ps}"]}
    run = tmp_path / "run"
    args = ["--samples", samples, "--model", model, "--output", str(run), *COMMON]
    args += ["--set", "distribute.strategy=parameter_server"]
    # the worker and the ps only serve: the same command, their own TF_CONFIG, stopped by pid at the end
    serving = [processes.start(t, args, _tf_config(cluster, t, 0)) for t in ("worker", "ps")]
    processes.start("chief", args, _tf_config(cluster, "chief", 0))
    assert processes.wait("chief") == 0, processes.log("chief")[-3000:]
    assert all(p.poll() is None for p in serving)  # they served until now

    with open(run / "run.json") as fh:
        summary = json.load(fh)
    devices = summary["distribute"]["embedding_devices"]
    assert set(devices) >= {"user_id", "item_id"}
    assert all(d.startswith("/job:ps/replica:0/task:0/") for d in devices.values()), devices
    assert summary["distribute"]["cluster"] == {"chief": 1, "ps": 1, "worker": 1}
    assert summary["epochs_completed"] == 2
    assert abs(summary["metrics"]["test"]["auc"] - _test_auc_from_predictions(run)) < 1e-9

    single = _single_process_auc(samples, tmp_path, model)
    assert abs(summary["metrics"]["test"]["auc"] - single) <= AUC_TOLERANCE, (summary["metrics"]["test"], single)
