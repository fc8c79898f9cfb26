"""Small measuring helpers shared by the benchmarks: wall time and peak memory of processes."""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from contextlib import contextmanager


def peak_rss_mib(pid: int | str = "self") -> float | None:
    """Peak resident set size (VmHWM) of a process, in MiB; None where /proc does not tell."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    if pid == "self":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return None


def jvm_pid(spark) -> int:
    return int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())


class HeapSampler:
    """Polls the driver JVM's used heap in a thread; `peak_mib` is the largest value seen."""

    def __init__(self, spark, every_s: float = 0.5):
        self._runtime = spark.sparkContext._jvm.java.lang.Runtime.getRuntime()
        self._every = every_s
        self._stop = threading.Event()
        self.peak_mib = 0.0
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.is_set():
            try:
                used = self._runtime.totalMemory() - self._runtime.freeMemory()
                self.peak_mib = max(self.peak_mib, used / 2**20)
            except Exception:  # the gateway may be closing
                return
            self._stop.wait(self._every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@contextmanager
def timed(into: dict, key: str):
    start = time.perf_counter()
    yield
    into[key] = time.perf_counter() - start


def emit(result: dict) -> None:
    """A benchmark subprocess prints its result as the last line of stdout."""
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def read_result(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError("benchmark subprocess printed no RESULT line")
    return json.loads(lines[-1][len("RESULT ") :])
