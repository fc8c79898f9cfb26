"""--init-from RUN0: a new run whose epoch 1 starts from a finished run's weights and optimizer state.

    refuse_into_existing_run(run_dir, init_dir)               # before anything else looks at RUN
    source = init_source(init_dir, checkpoints, spec_hash, samples_dir, samples)   # reads RUN0 only
    record = load_init_weights(model, source)                 # after build_optimizers, before RUN is written

Which weights: those RUN0's outputs (model/, predictions/, its final metrics) were made from, the
ones `Checkpoints.restore_best` loaded at its end: checkpoints/best.weights.h5 when it kept a best
epoch, else the file of its last epoch. A weights file holds the optimizer state of the epoch it was
saved at (Adam's moments and iteration count), so the weights and the optimizer state go together.

RUN0 may have been trained on an ancestor of the samples' spec (build_samples --fit-only --extend, any
number of steps back): its weights and optimizer state then move into the larger tables, every existing row
as it was and each appended row from the OOV bucket its token used to map to (pipelines/training/growth.py).

Refused, each before RUN is touched: a RUN0 that is not a finished run of this job, or whose files a warm
start reads (checkpoints/state.json, run.json, the weights file) are unreadable or malformed, each named
(InitFromRefused, exit 2), RUN0 trained on samples of a spec hash that is neither the samples' nor one of
their spec's ancestors (SpecHashMismatch, exit 3),
another model or other params (RunMismatch, exit 3), and a RUN that already holds a run, which is resumed
by rerunning without --init-from (InitFromRefused). The weights file is read whole into the model by
load_init_weights, which jobs.train calls before it writes RUN.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
from dataclasses import dataclass

import feature_spec
from pipelines import storage
from pipelines.training.dataset import SpecHashMismatch, recorded_spec_hashes
from pipelines.training.run_state import (
    BEST_WEIGHTS,
    RUN_MARKER,
    RUN_MARKERS,
    STATE_FILE,
    Checkpoints,
    load_weights,
    read_run_marker,
)

WARM_START_REMEDY = (
    "a warm start loads its weights into the same model: train with the model and params it was trained "
    "with (its run.json `model` and `params`), or without --init-from"
)


class InitFromRefused(ValueError):
    """--init-from names no finished run of this job, or RUN already holds a run."""


@dataclass
class InitSource:
    run: str  # absolute path of RUN0
    run_id: str | None
    weights: str  # relative to RUN0
    epoch: int | None
    spec_hash: str
    final_valid: dict  # RUN0's final valid metrics, for the log
    # When RUN0 was trained on an ancestor of the samples' spec: its spec, the model and params to rebuild
    # RUN0's model with, the samples' spec and vocabulary folder (the tokens of the appended rows).
    grown_from: dict | None = None
    model_name: str | None = None
    params: dict | None = None
    spec: dict | None = None
    vocab_dir: str | None = None

    def record(self) -> dict:
        record = {
            "run": self.run,
            "run_id": self.run_id,
            "weights": self.weights,
            "epoch": self.epoch,
            "spec_hash": self.spec_hash,
        }
        if self.grown_from is not None:
            record["trained_on_spec_hash"] = self.grown_from["spec_hash"]
            record["spec_lineage"] = (self.spec or {}).get("lineage")
        return record


def refuse_into_existing_run(run_dir: str, init_dir: str) -> None:
    held = [name for name in RUN_MARKERS if storage.exists(os.path.join(run_dir, name))]
    if held:
        raise InitFromRefused(
            f"{run_dir} already holds a run ({held[0]}): --init-from {init_dir} starts a new run, and rerunning "
            f"into an existing run resumes it; to resume it, rerun without --init-from (a warm-started run "
            f"remembers where it started); to warm-start, train into a new --output"
        )


def pending_init_from(run_dir: str) -> str | None:
    """The --init-from a RUN was started with, while it has no checkpoint yet (it died in epoch 1):
    rerunning it then starts from those weights again, as resuming a run at epoch 1 does."""
    if storage.exists(os.path.join(run_dir, "checkpoints", STATE_FILE)):
        return None
    return read_run_marker(run_dir).get("init_from")


def _read_json(path: str) -> dict | None:
    if not storage.exists(path):
        return None
    try:
        value = json.loads(storage.read_text(path))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _state_problem(state: dict) -> str | None:
    """What in RUN0's checkpoints/state.json a warm start cannot read (None: nothing)."""
    weights = state.get("weights")
    if not isinstance(weights, str) or posixpath.basename(weights) != weights or weights in ("", ".", ".."):
        return f"its weights file is {weights!r}, not a file name in checkpoints/"
    if not _is_int(state.get("epoch")):
        return f"its epoch is {state.get('epoch')!r}, not an integer"
    early = state.get("early_stopping")
    if early is not None and (
        not isinstance(early, dict) or not (early.get("best_epoch") is None or _is_int(early.get("best_epoch")))
    ):
        return f"its early_stopping is {early!r}, not {{best_epoch: an integer or null, ...}}"
    if not isinstance(state.get("params"), dict):
        return f"its params are {state.get('params')!r}, not an object"
    return None


def _final_valid(summary: dict) -> dict:
    """RUN0's final valid metrics, for the log: the numbers of run.json's metrics.valid (others left out)."""
    valid = summary.get("metrics")
    valid = valid.get("valid") if isinstance(valid, dict) else None
    if not isinstance(valid, dict):
        return {}
    return {
        name: value
        for name, value in valid.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def _ancestor_spec(init_dir: str, recorded: str, samples) -> dict | None:
    """RUN0's own spec (model/assets.extra/), when `recorded` is an ancestor of the samples' spec; else None."""
    if not feature_spec.descends_from(samples.spec, recorded):
        return None
    path = os.path.join(init_dir, "model", "assets.extra", feature_spec.SPEC_FILE)
    try:
        spec = feature_spec.validate_spec(json.loads(storage.read_text(path)))
    except (OSError, ValueError) as exc:
        raise InitFromRefused(
            f"--init-from {init_dir}: its spec {path}, which a warm start across a vocabulary growth reads, cannot "
            f"be read: {exc}"
        ) from None
    if spec["spec_hash"] != recorded:
        raise InitFromRefused(f"--init-from {init_dir}: {path} has spec hash {spec['spec_hash']}, not {recorded}")
    return spec


def init_source(init_dir: str, checkpoints: Checkpoints, spec_hash: str, samples_dir: str, samples) -> InitSource:
    """The weights file of RUN0 a warm start loads, after checking that RUN0 is a finished run of this
    job, on samples of `spec_hash` or of an ancestor of `samples`' spec, of the model and params of
    `checkpoints` (the new run's)."""
    init_dir = storage.normalize(init_dir)  # an absolute path, or s3://...
    if not storage.isdir(init_dir):
        raise InitFromRefused(f"--init-from {init_dir}: no such directory")
    marker = read_run_marker(init_dir)
    summary = _read_json(os.path.join(init_dir, "run.json"))
    state = _read_json(os.path.join(init_dir, "checkpoints", STATE_FILE))
    if marker.get("job", "train") != "train" or (summary is None and state is None and not marker):
        raise InitFromRefused(f"--init-from {init_dir} is not a run of jobs.train (no {RUN_MARKER} or run.json)")
    if summary is None:
        raise InitFromRefused(
            f"--init-from {init_dir} is not a finished run: it has no readable run.json, which a run writes when "
            f"it ends (rerun it into its own --output to finish it)"
        )
    if state is None:
        raise InitFromRefused(
            f"--init-from {init_dir} has no readable checkpoints/{STATE_FILE} (missing, or not a JSON object): which "
            "weights and optimizer state to load is unknown"
        )
    problem = _state_problem(state)
    if problem:
        raise InitFromRefused(f"--init-from {init_dir}: {os.path.join(init_dir, 'checkpoints', STATE_FILE)}: {problem}")
    if state["epoch"] != summary.get("epochs_completed"):
        raise InitFromRefused(
            f"--init-from {init_dir} is not a finished run: its checkpoints are at epoch {state.get('epoch')} but "
            f"its run.json at epoch {summary.get('epochs_completed')} (a resume of it has not finished)"
        )
    grown_from = None
    for rel, recorded in recorded_spec_hashes(init_dir).items():
        if recorded == spec_hash:
            continue
        grown_from = _ancestor_spec(init_dir, recorded, samples)
        if grown_from is None:
            raise SpecHashMismatch(
                f"--init-from {init_dir} was trained on spec hash {recorded} ({rel}), but samples {samples_dir} "
                f"have spec hash {spec_hash}, which is not that spec nor one grown from it (build_samples "
                f"--fit-only --extend): its weights index other vocabularies and features. Warm-start only from "
                f"a run on samples built with the same spec or one it extends"
            )
    checkpoints.check(state, where=f"--init-from {init_dir}", remedy=WARM_START_REMEDY)
    # As Checkpoints.restore_best chose at the end of RUN0: its best epoch's file, else its last epoch's.
    best_epoch = (state.get("early_stopping") or {}).get("best_epoch")
    best = os.path.join("checkpoints", BEST_WEIGHTS)
    if best_epoch is not None and storage.exists(os.path.join(init_dir, best)):
        weights, epoch = best, int(best_epoch)
    else:
        weights, epoch = os.path.join("checkpoints", state["weights"]), int(state["epoch"])
    if not storage.exists(os.path.join(init_dir, weights)):
        raise InitFromRefused(f"--init-from {init_dir}: its weights file {weights} is missing")
    return InitSource(
        run=init_dir,
        run_id=summary.get("run_id"),
        weights=weights,
        epoch=epoch,
        spec_hash=spec_hash,
        final_valid=_final_valid(summary),
        grown_from=grown_from,
        model_name=checkpoints.model_name,
        params=checkpoints.params,
        spec=samples.spec,
        vocab_dir=samples.vocab_dir,
    )


def load_init_weights(model, source: InitSource) -> dict:
    """Load RUN0's weights and optimizer state into `model` (its optimizers built); the record for run.json.
    InitFromRefused naming the file when it cannot be read into the model (truncated, empty, not HDF5, or
    not this model's weights): jobs.train calls this before it writes RUN, so a bad RUN0 leaves RUN as it was."""
    path = os.path.join(source.run, source.weights)
    grown = None
    try:
        if source.grown_from is None:
            load_weights(model, path)
        else:
            grown = _load_grown(model, source, path)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # h5py: OSError; Keras: ValueError for other shapes
        reason = " ".join(str(exc).split())
        raise InitFromRefused(
            f"--init-from {source.run}: its weights file {path} cannot be read ({type(exc).__name__}: "
            f"{reason[:300]}{' ...' if len(reason) > 300 else ''}); warm-start from a run whose weights are whole"
        ) from None
    optimizer = getattr(model, "optimizer", None)
    iterations = int(optimizer.iterations.numpy()) if optimizer is not None else None
    record = {**source.record(), "optimizer_iterations": iterations}
    if grown is not None:
        record["rows_appended"] = grown
    return record


def _load_grown(model, source: InitSource, path: str) -> dict[str, int]:
    """RUN0's weights read into RUN0's own model (built for its spec), then moved into `model`."""
    from models import build_model, compile_model
    from pipelines.training.growth import GrowthRefused, row_sources, transfer
    from pipelines.training.run_state import build_optimizers

    old = build_model(source.model_name, source.grown_from, source.params)
    compile_model(old)
    build_optimizers(old)
    load_weights(old, path)
    try:
        return transfer(old, model, source.spec, row_sources(source.grown_from, source.spec, source.vocab_dir))
    except GrowthRefused as exc:
        raise InitFromRefused(f"--init-from {source.run}: {exc}") from None
