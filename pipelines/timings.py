"""The seconds a job's steps take, for its record (run.json's `timings`, report.json's `step_seconds`).

    clock = Timings()
    with clock.step("train"):
        ...
    clock.since_start("total")
    clock.seconds              # {"train": 41.2, "total": 47.9}

Both wings use it, so it imports neither Spark nor TensorFlow. Given a logger, a step logs its start and,
at its end, its seconds with the counts the step put in the dict that `step` yields. A subclass wraps
every step in a context of its own (`around`): the sample job's names the step's Spark jobs and turns
running out of memory into an error naming the setting to raise (pipelines/samples/runtime.py).
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext


class Timings:
    """Seconds per named step, and since the job started; `digits` rounds the seconds kept (None: not)."""

    def __init__(self, log: logging.Logger | None = None, digits: int | None = None):
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.log, self.digits = log, digits

    @contextmanager
    def step(self, name: str):
        """Time the block as step `name`; it may put counts in the dict yielded, for the log line. A block
        that raises records no seconds."""
        if self.log is not None:
            self.log.info("step %s ...", name)
        start = time.perf_counter()
        rows: dict[str, int] = {}
        with self.around(name):
            yield rows
        self._keep(name, time.perf_counter() - start)
        if self.log is not None:
            counted = "".join(f", {what} {count:,}" for what, count in rows.items())
            self.log.info("step %s done in %.1fs%s", name, self.seconds[name], counted)

    def around(self, name: str) -> AbstractContextManager:
        """The context every step runs in: none here, a subclass's own."""
        return nullcontext()

    def since_start(self, name: str) -> None:
        """Record the seconds since this Timings was made as `name`."""
        self._keep(name, time.perf_counter() - self.start)

    def _keep(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(seconds, self.digits) if self.digits is not None else seconds
