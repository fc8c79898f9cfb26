"""A real one-machine Spark standalone cluster: `jobs.spark_cluster up` starts a master and
a worker, `spark-submit --master spark://...` runs build_samples on them with the same samples as a local
build, and `down` stops, by pid, only the processes `up` started."""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from feature_spec import load_spec
from pipelines.samples import standalone
from pipelines.samples.spark import executor_python
from tests.samples_io import read_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETS = ["spark.output_partitions=1"]  # one shard per split: the least work


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (held together while chosen, so they differ)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


# The test's JVMs live a minute or less: C2's compiling and the parallel GC's threads cost more CPU than they save.
SHORT_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def _cluster(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run `python -m jobs.spark_cluster ARGS` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "jobs.spark_cluster", *args],
        cwd=ROOT,
        env=dict(os.environ, SPARK_DAEMON_JAVA_OPTS=SHORT_JVM),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _gone(pid: int, timeout: float = 10) -> bool:
    """True once /proc/PID has disappeared (an exited daemon is reaped by init shortly after)."""
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _processes_inside(folder: str) -> list[str]:
    """Processes whose working directory is `folder` or below it (the daemons, the executors)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if cwd == folder or cwd.startswith(folder + os.sep):
                found.append(f"{entry}: {standalone.command_line(int(entry))[:200]}")
    return found


def _fake_daemon(main_class: str, ignore_sigterm: bool = False) -> subprocess.Popen:
    """A Python process whose command line names `main_class`, as a daemon's does; ready when it returns."""
    code = "import signal, sys, time\n"
    if ignore_sigterm:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('ready', flush=True)\ntime.sleep(120)\n"
    process = subprocess.Popen([sys.executable, "-c", code, main_class], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    return process


def _record(workdir, name: str, process: subprocess.Popen, main_class: str, ticks_offset: int = 0):
    daemon = standalone.Daemon(
        name, process.pid, standalone.start_ticks(process.pid) + ticks_offset, main_class, str(workdir / "x.log")
    )
    standalone.write_record(str(workdir), daemon)
    return daemon


def _stop(*processes: subprocess.Popen) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


# ---------------------------------------------------------------- down and up, without a JVM
def test_down_leaves_alone_recorded_pids_that_are_other_processes(tmp_path):
    sleeper = subprocess.Popen(["sleep", "120"])  # the master's pid, but not a Spark master
    later = _fake_daemon(standalone.WORKER_CLASS)  # names the class, but started after the record
    try:
        _record(tmp_path, "master", sleeper, standalone.MASTER_CLASS)
        _record(tmp_path, "worker-1", later, standalone.WORKER_CLASS, ticks_offset=-1)
        result = _cluster("down", "--workdir", str(tmp_path))
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            f"worker-1 (pid {later.pid}) not signalled: pid {later.pid} now belongs to a process started later: "
            f"{standalone.command_line(later.pid)[:200]!r}",
            f"master (pid {sleeper.pid}) not signalled: pid {sleeper.pid} no longer runs "
            f"{standalone.MASTER_CLASS}: 'sleep 120'",
        ]
        assert sleeper.poll() is None and later.poll() is None  # both still running
        assert os.listdir(tmp_path / "pids") == []  # the stale records are forgotten
    finally:
        _stop(sleeper, later)


def test_down_sends_sigterm_then_sigkill_after_the_timeout(tmp_path):
    master = _fake_daemon(standalone.MASTER_CLASS)
    stubborn = _fake_daemon(standalone.WORKER_CLASS, ignore_sigterm=True)
    try:
        _record(tmp_path, "master", master, standalone.MASTER_CLASS)
        _record(tmp_path, "worker-1", stubborn, standalone.WORKER_CLASS)
        started = time.monotonic()
        result = _cluster("down", "--workdir", str(tmp_path), "--timeout", "2")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            f"worker-1 (pid {stubborn.pid}) killed: still running 2 s after SIGTERM",
            f"master (pid {master.pid}) stopped",
        ]
        assert time.monotonic() - started >= 2
        assert stubborn.wait(timeout=10) == -signal.SIGKILL
        assert master.wait(timeout=10) == -signal.SIGTERM
        assert os.listdir(tmp_path / "pids") == []
        assert _cluster("down", "--workdir", str(tmp_path)).stdout == f"no cluster recorded under {tmp_path}\n"
    finally:
        _stop(master, stubborn)


def test_up_refuses_while_its_workdir_records_a_running_cluster(tmp_path):
    master = _fake_daemon(standalone.MASTER_CLASS)
    try:
        _record(tmp_path, "master", master, standalone.MASTER_CLASS)
        port, ui = _free_ports(2)
        result = _cluster("up", "--workdir", str(tmp_path), "--port", str(port), "--webui-port", str(ui))
        assert result.returncode == 2
        assert result.stderr == (
            f"error: {tmp_path} already records a running cluster: master (pid {master.pid}). "
            f"Stop it first: python -m jobs.spark_cluster down --workdir {tmp_path}\n"
        )
        assert master.poll() is None
        assert sorted(os.listdir(tmp_path)) == ["pids"]  # nothing started, no logs
        assert os.listdir(tmp_path / "pids") == ["master.pid"]
    finally:
        _stop(master)


def test_up_refuses_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (ui,) = _free_ports(1)
        result = _cluster("up", "--workdir", str(tmp_path / "c"), "--port", str(port), "--webui-port", str(ui))
    assert result.returncode == 2
    assert result.stderr == f"error: in use on 127.0.0.1: port {port}; choose free ports (--port, --webui-port)\n"
    assert not os.path.exists(tmp_path / "c")


def test_up_forgets_the_records_of_a_cluster_that_no_longer_runs(tmp_path):
    exited = subprocess.Popen(["sleep", "120"])
    _record(tmp_path, "master", exited, standalone.MASTER_CLASS)
    _stop(exited)
    with socket.socket() as taken:  # so that `up` stops right after reading the records, before any JVM
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _cluster("up", "--workdir", str(tmp_path), "--port", str(port), "--webui-port", str(port))
    assert result.returncode == 2
    assert f"forgetting master (pid {exited.pid}): it is no longer running" in result.stderr
    assert os.listdir(tmp_path / "pids") == []


def test_executors_get_an_absolute_python_path():
    assert executor_python(".venv/bin/python") == os.path.join(os.getcwd(), ".venv/bin/python")
    assert executor_python("/opt/venv/bin/python") == "/opt/venv/bin/python"
    assert executor_python("python3") == "python3"  # looked up on the executor's PATH


# ---------------------------------------------------------------- a real master and worker
@pytest.mark.slow
def test_cluster_a_failed_start_names_the_log_and_stops_what_it_started(tmp_path):
    port, ui = _free_ports(2)
    workdir = tmp_path / "c"
    # 0m passes our format check; the worker itself refuses it and exits.
    result = _cluster("up", "--workdir", str(workdir), "--port", str(port), "--webui-port", str(ui), "--memory", "0m")
    assert result.returncode == 1
    worker_log = workdir / "logs" / "worker-1.log"
    assert result.stderr.endswith(f"error: worker-1 exited with code 1 during start-up; see {worker_log}\n")
    assert "Memory" in worker_log.read_text()
    assert os.listdir(workdir / "pids") == []
    assert _processes_inside(str(workdir)) == []  # the master it had started is stopped


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A small synthetic world: 3,000 impressions over 8 days."""
    out = tmp_path_factory.mktemp("cluster-raw") / "raw"
    args = ["--users", "100", "--items", "80", "--days", "8", "--impressions", "3000", "--seed", "5"]
    subprocess.run(
        [sys.executable, "-m", "jobs.generate_synthetic", "--output", str(out), *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return str(out)


@pytest.fixture
def cluster(tmp_path_factory):
    """A master and one 1-core, 1g worker on free ports, started with `up`; always stopped with `down`."""
    workdir = tmp_path_factory.mktemp("cluster")
    port, ui = _free_ports(2)
    args = ["--workers", "1", "--cores", "1", "--memory", "1g", "--port", str(port), "--webui-port", str(ui)]
    try:
        result = _cluster("up", "--workdir", str(workdir), *args)
        assert result.returncode == 0, result.stderr[-3000:]
        with open(workdir / "cluster.json") as fh:
            yield json.load(fh)
    finally:
        _cluster("down", "--workdir", str(workdir))  # says "no cluster recorded" when the test stopped it


def _submit(master_url: str, raw: str, out, cwd) -> subprocess.Popen:
    """Start the documented spark-submit command (docs/cluster.md) from outside the checkout, with settings
    that make it quick on small data; its output goes to OUT.log."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the code must come with the job
    env["PYSPARK_PYTHON"] = sys.executable
    command = [
        os.path.join(os.path.dirname(sys.executable), "spark-submit"),
        *("--master", master_url, "--driver-java-options", SHORT_JVM),
        *("--conf", f"spark.executor.extraJavaOptions={SHORT_JVM}"),
        *("--conf", "spark.sql.shuffle.partitions=2", "--conf", "spark.ui.enabled=false"),
        os.path.join(ROOT, "jobs", "build_samples.py"),
        *("--input", raw, "--output", str(out)),
        *[arg for key in SETS for arg in ("--set", key)],
    ]
    with open(f"{out}.log", "w") as log:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait(*builds: subprocess.Popen, timeout: float = 900) -> list[int]:
    """Their exit codes; any still running after `timeout` seconds is killed."""
    deadline = time.monotonic() + timeout
    try:
        return [build.wait(timeout=max(1, deadline - time.monotonic())) for build in builds]
    finally:
        for build in builds:
            if build.poll() is None:
                build.kill()
                build.wait()


def _completed_apps(ui_url: str, timeout: float = 20) -> list:
    """The master's finished applications (it marks one finished once its driver has disconnected)."""
    deadline = time.monotonic() + timeout
    while True:
        apps = standalone.master_state(ui_url)["completedapps"]
        if apps or time.monotonic() > deadline:
            return [(app["id"], app["state"]) for app in apps]
        time.sleep(0.5)


def _rows(samples_dir) -> pd.DataFrame:
    rows = read_all(str(samples_dir))
    return rows.sort_values(["split", "user_id", "item_id", "ts", "p_click"]).reset_index(drop=True)


@pytest.mark.slow
def test_cluster_build_samples_on_a_standalone_master_equals_a_local_build(cluster, raw, tmp_path):
    # The same command with two masters, side by side: the cluster's one core leaves the other to local[1].
    builds = [
        _submit(master, raw, tmp_path / name, tmp_path)
        for master, name in ((cluster["master_url"], "on-cluster"), ("local[1]", "local"))
    ]
    codes = _wait(*builds)
    assert codes == [0, 0], [(tmp_path / f"{name}.log").read_text()[-3000:] for name in ("on-cluster", "local")]

    # It ran on the cluster: the report's master, the master's finished application, the code on the executor.
    with open(tmp_path / "on-cluster" / "report.json") as fh:
        report = json.load(fh)
    app_id = report["spark"]["app_id"]
    assert report["spark"]["master"] == cluster["master_url"]
    assert _completed_apps(cluster["ui_url"]) == [(app_id, "FINISHED")]
    executor_dirs = glob.glob(os.path.join(cluster["workdir"], "work", "worker-1", app_id, "*"))
    assert len(executor_dirs) == 1
    assert os.path.exists(os.path.join(executor_dirs[0], "ctr_code.zip"))  # shipped by the job itself

    # The same samples as the local-mode build.
    with open(tmp_path / "local" / "report.json") as fh:
        local = json.load(fh)
    assert local["spark"]["master"] == "local[1]"
    assert report["spec_hash"] == local["spec_hash"]
    assert load_spec(str(tmp_path / "on-cluster")) == load_spec(str(tmp_path / "local"))
    on_cluster, in_local = _rows(tmp_path / "on-cluster"), _rows(tmp_path / "local")
    assert len(on_cluster) == 3000
    pd.testing.assert_frame_equal(on_cluster, in_local, check_exact=True)

    # `down` stops the master and the worker by their pids, and nothing of the cluster keeps running.
    pids = {d["name"]: d["pid"] for d in cluster["daemons"]}
    result = _cluster("down", "--workdir", cluster["workdir"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"worker-1 (pid {pids['worker-1']}) stopped",
        f"master (pid {pids['master']}) stopped",
    ]
    assert all(_gone(pid) for pid in pids.values())
    assert os.listdir(os.path.join(cluster["workdir"], "pids")) == []
    assert _processes_inside(cluster["workdir"]) == []
