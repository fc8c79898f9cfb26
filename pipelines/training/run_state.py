"""What a run keeps in RUN/ between epochs, and the Keras callbacks that keep it.

    RUN/_RUN.json                     marks RUN as a run of this job (mark_run)
    RUN/checkpoints/state.json        epoch, weights file, spec hash, model, params, early stopping, history
                                      (+ init_from, initial_valid: a warm-started run, warm_start.py)
    RUN/checkpoints/epoch-NNNN.weights.h5, best.weights.h5

`Checkpoints` reads and writes that folder; `Progress` is what a checkpoint carries and what the
callbacks (`EpochLog`, `EarlyStoppingWithState`, `Checkpoint`) update, each given the objects it
changes in its constructor. Every file is replaced in one rename (storage.replace_file). RUN may be a
`scheme://` path (s3://): every file access goes through pipelines/storage.py, and the weights files, which
HDF5 writes and reads only locally, pass through a local temporary copy. A new RUN whose writing fails for
lack of space is emptied again (`undone_on_write_failure`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import keras
import numpy as np

from models import recorded_params, resolve_params, unused_params
from pipelines import publish, storage

log = logging.getLogger("pipelines.training.train")

STATE_FILE = "state.json"
RUN_MARKER = "_RUN.json"
# Any of these shows that RUN holds an earlier run of this job (the last two: runs older than RUN_MARKER).
RUN_MARKERS = [RUN_MARKER, "run.json", f"checkpoints/{STATE_FILE}"]
BEST_WEIGHTS = "best.weights.h5"
EPOCH_WEIGHTS = re.compile(r"epoch-\d{4}\.weights\.h5")
RESUME_REMEDY = "train into a new --output or pass --set resume=false to start over"


class RunMismatch(ValueError):
    """RUN/checkpoints belong to another model or other parameters."""


class SimulatedCrash(RuntimeError):
    """Raised by debug.crash_after_epoch after the checkpoint of that epoch is written."""


# ---------------------------------------------------------------- files


def jsonable(value):
    """`value` with numpy scalars as Python numbers and non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(path: str, payload: dict) -> None:
    def write(tmp):
        with open(tmp, "w") as fh:
            json.dump(jsonable(payload), fh, indent=2, sort_keys=False, allow_nan=False)

    storage.replace_file(path, write)


def _weights_bytes(model) -> int:
    """The size of the model's and its optimizers' variables, what a weights file holds."""
    variables = list(model.weights)
    for name in ("optimizer", "wide_optimizer"):
        optimizer = getattr(model, name, None)
        if optimizer is not None:
            variables += list(optimizer.variables)
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def save_weights(model, path: str) -> None:
    # HDF5 running out of space inside a file leaves a handle that crashes the process at exit (a
    # segfault, not our error message): the space is checked first, with room for HDF5's overhead.
    storage.ensure_space(os.path.dirname(path), int(_weights_bytes(model) * 1.1) + (1 << 20))
    storage.replace_file(path, model.save_weights)


def load_weights(model, path: str) -> None:
    with storage.read_locally(path) as local:
        model.load_weights(local)


def build_optimizers(model) -> None:
    """Create optimizer variables now, so that load_weights restores them too."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)


def mark_run(run_dir: str, run_id: str, init_from: str | None = None) -> None:
    """Write RUN/_RUN.json once, when the run starts (a resumed run keeps its marker). A warm-started
    run records the run it starts from: a rerun before its first checkpoint starts from it again."""
    storage.makedirs(run_dir)
    path = os.path.join(run_dir, RUN_MARKER)
    if not storage.exists(path):
        marker = {"job": "train", "run_id": run_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_json(path, {**marker, **({"init_from": init_from} if init_from else {})})


@contextmanager
def undone_on_write_failure(run_dir: str):
    """A new RUN (absent or empty before) whose writing fails for lack of space, quota or a writable
    disk is emptied again: everything in it is this run's. A resumed RUN keeps what it had."""
    existed = storage.isdir(run_dir)
    if existed and storage.listdir(run_dir):
        yield
        return
    try:
        yield
    except Exception as exc:
        if publish.write_failure(exc, run_dir) is not None:
            for name in storage.listdir(run_dir) if existed else []:  # the user's empty folder stays
                storage.remove(os.path.join(run_dir, name))
            if not existed:
                with suppress(Exception):  # as much as can be removed
                    storage.remove(run_dir)
        raise


def read_run_marker(run_dir: str) -> dict:
    """RUN/_RUN.json ({} when absent or unreadable)."""
    path = os.path.join(run_dir, RUN_MARKER)
    if not storage.exists(path):
        return {}
    try:
        marker = json.loads(storage.read_text(path))
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- state


@dataclass
class EarlyStopping:
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    stopped: bool = False


@dataclass
class Progress:
    """Epochs done, their history and the early-stopping state: what a checkpoint carries."""

    epoch: int = 0
    history: list = field(default_factory=list)
    early: EarlyStopping = field(default_factory=EarlyStopping)
    # A warm-started run (--init-from): where its weights came from and its valid metrics before any step.
    init_from: dict | None = None
    initial_valid: dict | None = None

    @classmethod
    def from_state(cls, state: dict) -> "Progress":
        return cls(
            epoch=int(state["epoch"]),
            history=list(state.get("history") or []),
            early=EarlyStopping(**{**asdict(EarlyStopping()), **(state.get("early_stopping") or {})}),
            init_from=state.get("init_from"),
            initial_valid=state.get("initial_valid"),
        )


class Checkpoints:
    """RUN/checkpoints of one model, params and samples."""

    def __init__(self, directory: str, keep: int, model_name: str, params: dict, spec_hash: str):
        self.directory, self.keep = directory, max(1, int(keep))
        self.model_name, self.params, self.spec_hash = model_name, jsonable(params), spec_hash

    @property
    def best_path(self) -> str:
        return os.path.join(self.directory, BEST_WEIGHTS)

    def load_state(self) -> dict | None:
        path = os.path.join(self.directory, STATE_FILE)
        if not storage.exists(path):
            return None
        return json.loads(storage.read_text(path))

    def previous(self, resume: bool) -> dict | None:
        """The state to resume from (None: start at epoch 1); refuses another model's or other params'."""
        state = self.load_state()
        if state is not None and not resume:
            log.info("resume=false: removing the checkpoints of the previous run in %s", self.directory)
            storage.remove(self.directory)
            state = None
        if state is not None:
            self.check(state)
        storage.makedirs(self.directory)
        return state

    def check(self, state: dict, where: str | None = None, remedy: str = RESUME_REMEDY) -> None:
        """Refuse a state.json of another model or other params (RunMismatch naming the params that differ);
        `where` names the run in the message (default: this folder), `remedy` says what to do instead."""
        where = where or self.directory
        if state.get("model") != self.model_name:
            raise RunMismatch(
                f"{where} holds checkpoints of model '{state.get('model')}', not '{self.model_name}'; {remedy}"
            )
        # Resolved on both sides: a default written out and one left out are the same parameter; an old
        # record (every model's params, learning_rate for Adagrad too) reads as today's (recorded_params).
        saved = jsonable(resolve_params(self.model_name, recorded_params(state.get("params"), self.model_name)))
        now = jsonable(resolve_params(self.model_name, self.params))
        # The rate of an optimizer neither run uses cannot make them differ (an Adagrad run's Adam rate).
        for key in unused_params(saved) & unused_params(now):
            saved.pop(key), now.pop(key)
        if saved != now:
            differ = ", ".join(
                f"{k} {json.dumps(saved.get(k))} (now {json.dumps(now.get(k))})"
                for k in sorted(saved)
                if saved.get(k) != now.get(k)
            )
            raise RunMismatch(
                f"{where} was trained with params {json.dumps(saved, sort_keys=True)}, "
                f"now {json.dumps(now, sort_keys=True)}; they differ in: {differ}; {remedy}"
            )

    def restore(self, model, state: dict | None) -> Progress:
        """Load the state's weights (with optimizer state) into `model`; the Progress to continue from."""
        if state is None:
            return Progress()
        load_weights(model, os.path.join(self.directory, state["weights"]))
        return Progress.from_state(state)

    def save_epoch(self, model, progress: Progress) -> None:
        """Weights (with optimizer state), then state.json pointing at them; older epochs beyond `keep` go."""
        name = f"epoch-{progress.epoch:04d}.weights.h5"
        save_weights(model, os.path.join(self.directory, name))
        write_json(
            os.path.join(self.directory, STATE_FILE),
            {
                "epoch": progress.epoch,
                "weights": name,
                "spec_hash": self.spec_hash,
                "model": self.model_name,
                "params": self.params,
                "early_stopping": asdict(progress.early),
                "history": progress.history,
                "saved_at": _now(),
                # only in warm-started runs: a resumed one still records where it started
                **(
                    {"init_from": progress.init_from, "initial_valid": progress.initial_valid}
                    if progress.init_from
                    else {}
                ),
            },
        )
        for old in sorted(f for f in storage.listdir(self.directory) if EPOCH_WEIGHTS.fullmatch(f))[: -self.keep]:
            storage.remove(os.path.join(self.directory, old))

    def restore_best(self, model, progress: Progress, monitor: str) -> int | None:
        """Load the best epoch's weights when there are any; the epoch whose weights the model now has."""
        if progress.early.best_epoch is not None and storage.exists(self.best_path):
            load_weights(model, self.best_path)
            log.info(
                "restored the weights of the best epoch %d (%s %.4f)",
                progress.early.best_epoch,
                monitor,
                progress.early.best,
            )
            return progress.early.best_epoch
        return int(progress.history[-1]["epoch"]) if progress.history else None


# ---------------------------------------------------------------- callbacks


PROGRESS_SECONDS = 60.0  # EpochLog: a progress line at most this often inside an epoch (without a progress bar)


def duration(seconds: float) -> str:
    """12s, 3m05s, 2h04m: a duration as a person reads it in a log."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class EpochLog(keras.callbacks.Callback):
    """Times each epoch, counts its train batches, appends its entry to `progress.history`, logs one line
    per epoch with its examples/s and the ETA of the epochs left.

    Inside an epoch of `steps_per_epoch` steps (None: unknown): with `progress_bar`, a Keras progress bar
    (the distributed loop at verbose=1; Keras fit draws its own); otherwise, with `log_every` seconds, a
    log line at most that often: steps done, examples/s, the time to the end of the epoch's training."""

    def __init__(
        self,
        progress: Progress,
        epochs: int,
        batch_size: int,
        max_examples: int | None,
        steps_per_epoch: int | None = None,
        log_every: float | None = None,
        progress_bar: bool = False,
    ):
        super().__init__()
        self.progress, self.epochs, self.batch_size, self.max_examples = progress, epochs, batch_size, max_examples
        self.steps_per_epoch, self.log_every, self.progress_bar = steps_per_epoch, log_every, progress_bar
        self.epoch_seconds: list[float] = []  # the epochs timed by this process, for the ETA

    def on_epoch_begin(self, epoch, logs=None):
        self.start = self.logged = time.perf_counter()
        self.train_end = None
        self.steps = 0
        self.epoch = epoch + 1
        self.iterations_at_start = self._iterations()
        self.bar = keras.utils.Progbar(self.steps_per_epoch, unit_name="step") if self.progress_bar else None

    def _iterations(self) -> int | None:
        """The optimizer's step count when Keras fit runs several batches per call: it then reports the
        last call of an epoch as full even when the data ran out inside it, so the batch index overcounts."""
        model = getattr(self, "_model", None)
        if model is None or int(getattr(model, "steps_per_execution", 1) or 1) <= 1 or model.optimizer is None:
            return None
        return int(model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        self.steps = batch + 1
        if self.bar is not None:
            self.bar.update(self.steps)
            return
        if self.log_every is None:
            return
        now = time.perf_counter()
        if now - self.logged >= self.log_every:
            self.logged = now
            self._log_within_epoch(now - self.start)

    def _log_within_epoch(self, seconds: float) -> None:
        rate = self.steps * self.batch_size / seconds if seconds > 0 else 0.0
        total = self.steps_per_epoch
        if total:
            left = duration(seconds / self.steps * (total - self.steps)) if self.steps else "?"
            log.info(
                "epoch %d/%d: step %d/%d (%.0f%%), %.0f examples/s, %s in, about %s to the epoch's validation",
                self.epoch,
                self.epochs,
                self.steps,
                total,
                100.0 * self.steps / total,
                rate,
                duration(seconds),
                left,
            )
        else:
            log.info(
                "epoch %d/%d: step %d, %.0f examples/s, %s in",
                self.epoch,
                self.epochs,
                self.steps,
                rate,
                duration(seconds),
            )

    def on_test_begin(self, logs=None):
        if self.train_end is None:
            self.train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        train_seconds = (self.train_end or now) - self.start
        if self.iterations_at_start is not None:
            self.steps = self._iterations() - self.iterations_at_start
        examples = self.steps * self.batch_size
        if self.max_examples:  # the last batch of a pass may be short
            examples = min(examples, self.max_examples)
        entry = {
            "epoch": epoch + 1,
            "seconds": now - self.start,
            "train_seconds": train_seconds,
            "steps": self.steps,
            "examples": examples,
            "examples_per_second": examples / train_seconds if train_seconds > 0 else None,
        }
        entry.update({k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float, np.floating))})
        self.progress.history.append(entry)
        self.epoch_seconds.append(entry["seconds"])
        left = self.epochs - (epoch + 1)
        if left > 0:
            each = sum(self.epoch_seconds) / len(self.epoch_seconds)
            eta = f"ETA {duration(each * left)} for the {left} epoch(s) left (early stopping may end sooner)"
        else:
            eta = "the last epoch"
        log.info(
            "epoch %d/%d: train loss %.4f auc %.4f | valid loss %.4f auc %.4f | %.1fs, %.0f examples/s | %s",
            epoch + 1,
            self.epochs,
            entry.get("loss", float("nan")),
            entry.get("auc", float("nan")),
            entry.get("val_loss", float("nan")),
            entry.get("val_auc", float("nan")),
            entry["seconds"],
            entry["examples_per_second"] or 0.0,
            eta,
        )


class EarlyStoppingWithState(keras.callbacks.Callback):
    """Early stopping on a Keras log value (mode max or min) whose state lives in `progress.early`,
    so it survives a restart. An improving epoch's weights go to `checkpoints.best_path`."""

    def __init__(
        self, progress: Progress, checkpoints: Checkpoints, monitor: str, mode: str, patience: int, min_delta: float
    ):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"early_stopping.mode must be 'max' or 'min', got {mode!r}")
        self.progress, self.checkpoints = progress, checkpoints
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, int(patience), float(min_delta)

    def on_epoch_end(self, epoch, logs=None):
        es = self.progress.early
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(
                f"early stopping monitors '{self.monitor}', which Keras did not log (logged: {sorted(logs or {})})"
            )
        value = float(value)
        if self.mode == "max":
            improved = es.best is None or value > es.best + self.min_delta
        else:
            improved = es.best is None or value < es.best - self.min_delta
        if improved:
            es.best, es.best_epoch, es.wait = value, epoch + 1, 0
            save_weights(self.model, self.checkpoints.best_path)
            return
        es.wait += 1
        if es.wait >= self.patience:
            es.stopped = True
            self.model.stop_training = True
            log.info(
                "early stopping after epoch %d: %s has not improved on %.4f (epoch %d) for %d epochs",
                epoch + 1,
                self.monitor,
                es.best,
                es.best_epoch,
                es.wait,
            )


class Checkpoint(keras.callbacks.Callback):
    """After every epoch: `checkpoints.save_epoch`; with `crash_after_epoch` N, raise SimulatedCrash after epoch N's."""

    def __init__(self, progress: Progress, checkpoints: Checkpoints, crash_after_epoch: int | None = None):
        super().__init__()
        self.progress, self.checkpoints, self.crash_after_epoch = progress, checkpoints, crash_after_epoch

    def on_epoch_end(self, epoch, logs=None):
        self.progress.epoch = epoch + 1
        self.checkpoints.save_epoch(self.model, self.progress)
        if self.crash_after_epoch is not None and epoch + 1 == int(self.crash_after_epoch):
            raise SimulatedCrash(
                f"debug.crash_after_epoch={epoch + 1}: stopping after the checkpoint of epoch {epoch + 1}"
            )
