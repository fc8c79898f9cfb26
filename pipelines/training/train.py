"""Train one CTR model on a SAMPLES directory and write everything under RUN/.

    summary = train(samples_dir, run_dir, config)   # config: a TrainConfig (pipelines/config_schema.py),
                                                    # or a mapping with the keys of conf/train.yaml

The samples are SAMPLES's train/valid/test splits, or with config.data's dates those days of a
date-partitioned SAMPLES (pipelines/training/selection.py); either way a `Samples` that the rest reads.

Training: binary cross-entropy, Keras fit with a fixed seed, early stopping on the
valid AUC (patience from config) with the best epoch's weights restored, a
checkpoint after every epoch (weights incl. optimizer state, epoch number,
early-stopping state, history) under RUN/checkpoints. Rerunning into the same RUN
resumes from the last checkpoint at the next epoch (also to train more epochs). With
config.init_from (--init-from RUN0) a new run starts from RUN0's weights and optimizer state
(pipelines/training/warm_start.py).

RUN belongs to this job: it is refused (pipelines/publish.py, OutputRefused) when it overlaps
SAMPLES, or when it is not empty and shows no earlier run (RUN/_RUN.json, written at the start,
or the run.json / checkpoints/state.json of runs made before that marker existed).

    pipelines/training/distributed.py   what the chief does and the other workers do not (Role), and
                                        the loop of the multi-worker strategies
    pipelines/training/epochs.py        what Keras fit and that loop share: callbacks, input, log, history
    pipelines/training/run_state.py     RUN/_RUN.json, RUN/checkpoints/ and the callbacks that write them
    pipelines/training/run_outputs.py   metrics.parquet, predictions/, embeddings/, model/, run.json
    pipelines/training/plots.py         plots/: training curves, ROC, reliability diagram (PNG)
    RUN/tensorboard/           Keras TensorBoard logs
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Mapping

import keras

from models import MODEL_NAMES, ParamError, build_model, compile_model, resolve_params
from pipelines.config_schema import TrainConfig, validate_train_config
from pipelines.errors import ConfigError
from pipelines.timings import Timings
from pipelines.training.dataset import Samples
from pipelines.training.distributed import LOOP_STRATEGIES, Role
from pipelines.training.epochs import Epochs, train_dataset
from pipelines.training.run_outputs import FinishedRun, predict_split, serving_function, write_run_outputs
from pipelines.training.run_state import (
    Checkpoints,
    Progress,
    RunMismatch,
    SimulatedCrash,
    build_optimizers,
    jsonable,
)
from pipelines.training.warm_start import InitFromRefused, InitSource, load_init_weights

__all__ = ["InitFromRefused", "RunMismatch", "SimulatedCrash", "model_params", "train"]

log = logging.getLogger(__name__)


def model_params(config: TrainConfig) -> dict:
    """config.params (overrides of the model's defaults, models/params.py), the seed defaulting to config.seed."""
    params = copy.deepcopy(config.params)
    if params.get("seed") is None:
        params["seed"] = config.seed
    return params


def train(samples_dir: str, run_dir: str, config: TrainConfig | Mapping) -> dict:
    """Train config.model for config.epochs on samples_dir; write RUN/ outputs; return run.json's content.

    `config` is validated first (a mapping becomes a TrainConfig), the model params too: a ConfigError
    leaves RUN untouched."""
    clock = Timings()
    config = validate_train_config(config, MODEL_NAMES)
    params = _resolved_params(config)
    role = Role.join(run_dir, config)  # a parameter_server worker or ps task serves here until stopped
    # RUN, the selected days, the samples and RUN0 are checked before RUN is touched
    samples = role.open_samples(samples_dir)
    checkpoints = Checkpoints(
        os.path.join(role.run_dir, "checkpoints"), config.checkpoints.keep, config.model, params, samples.spec_hash
    )
    init = role.warm_start(checkpoints, samples)
    role.start()
    with role.writing():
        model = _compiled_model(role, config, samples.spec, params)
        # RUN0's weights are read into the model before RUN is written: a RUN0 whose weights file cannot be
        # read is refused with RUN as it was, so the same command with a good RUN0 runs. (A RUN with an
        # --init-from holds no checkpoint: refuse_into_existing_run, pending_init_from.)
        init_record = load_init_weights(model, init) if init is not None else None
        state, init = role.settle(model, checkpoints, samples, init)
        progress = checkpoints.restore(model, state)
        resumed_from = progress.epoch
        if state is None and init is not None:  # a warm start: epoch 1 starts from RUN0's weights
            progress.init_from = init_record or load_init_weights(model, init)
            if role.is_chief:
                progress.initial_valid = _initial_valid(model, role, samples, params, config, init)
        if state is not None:
            _log_resume(role.run_dir, progress, config.early_stopping.monitor)
        clock.since_start("setup")
        epochs = Epochs(samples, config, progress, checkpoints, role.run_dir)
        with clock.step("train"):
            new_epochs = role.loop.fit(epochs) if role.loop is not None else fit(model, epochs)
        if config.debug.weights_dir:
            role.save_weights(model, config.debug.weights_dir)
        if not role.is_chief:
            return role.handed_back(progress.epoch)
        best_epoch = checkpoints.restore_best(model, progress, config.early_stopping.monitor)
        finished = FinishedRun(
            run_id=role.run_id,
            run_dir=role.run_dir,
            started=role.started,
            config=config,
            params=params,
            samples=samples,
            progress=progress,
            new_epochs=new_epochs,
            resumed_from=resumed_from,
            best_epoch=best_epoch,
            distribute=role.record(model),
        )
        summary = write_run_outputs(_single_process(model, role, samples.spec, params), finished, clock)
        log.info("test %s", " ".join(f"{k} {v:.4f}" for k, v in summary["metrics"]["test"].items()))
        return jsonable(summary)


def _resolved_params(config: TrainConfig) -> dict:
    """The model's params, config.params over its defaults; a ConfigError naming each bad params.<key>."""
    try:
        return resolve_params(config.model, model_params(config))
    except ParamError as exc:  # each line names its params.<key>
        raise ConfigError(str(exc)) from None


def _compiled_model(role: Role, config: TrainConfig, spec: dict, params: dict):
    """config.model built under the role's strategy from the seed, compiled, its optimizers built (so that
    loading weights restores their state too)."""
    with role.scope():
        keras.utils.set_random_seed(config.seed)
        model = build_model(config.model, spec, params)
        compile_model(model, steps_per_execution=_steps_per_execution(config, role.kind))
        build_optimizers(model)
    return model


def _log_resume(run_dir: str, progress: Progress, monitor: str) -> None:
    log.info(
        "resuming %s from the checkpoint of epoch %d (best %s %.4f at epoch %s)",
        run_dir,
        progress.epoch,
        monitor,
        progress.early.best if progress.early.best is not None else float("nan"),
        progress.early.best_epoch,
    )


def _initial_valid(model, role: Role, samples: Samples, params: dict, config: TrainConfig, init: InitSource) -> dict:
    """The valid metrics of a warm-started model before any step, by the code of the final evaluation:
    the starting point of the run, equal to RUN0's final valid metrics on the same samples."""
    serve = serving_function(_single_process(model, role, samples.spec, params), samples.spec)
    metrics = predict_split(serve, samples, "valid", config.eval_batch_size, None)["metrics"]
    log.info(
        "warm start from %s (%s, epoch %s): valid before any step %s; its final valid auc %s",
        init.run,
        init.weights,
        init.epoch,
        " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if v is not None),
        f"{init.final_valid['auc']:.4f}" if init.final_valid.get("auc") is not None else "-",
    )
    return metrics


def _steps_per_execution(config: TrainConfig, kind: str) -> int:
    """Batches per call into TensorFlow in Keras fit: 1 in the distributed loops, which step one batch at a
    time; with max_steps_per_epoch, a divisor of it, since Keras would run a whole call past the epoch's end."""
    if kind in LOOP_STRATEGIES:
        return 1
    if config.max_steps_per_epoch:
        return math.gcd(config.steps_per_execution, config.max_steps_per_epoch)
    return config.steps_per_execution


def _single_process(model, role: Role, spec: dict, params: dict):
    """The model the run outputs are made from: under a strategy, rebuilt outside it with the trained weights."""
    if role.strategy is None:
        return model
    copy = build_model(model.model_name, spec, params)
    copy.set_weights([w.numpy() if hasattr(w, "numpy") else w for w in model.get_weights()])
    return copy


def fit(model, epochs: Epochs) -> list:
    """Keras fit of the epochs left, unless the run already ended; the history entries of the epochs trained now."""
    config = epochs.config
    if epochs.none_left():
        return []
    steps = config.max_steps_per_epoch
    train_ds = train_dataset(epochs.samples, config, config.batch_size, repeat=bool(steps))
    valid_ds = epochs.valid_dataset()
    callbacks = epochs.callbacks()
    with epochs.training(f"batch size {config.batch_size}"):
        model.fit(
            train_ds,
            validation_data=valid_ds,
            epochs=config.epochs,
            initial_epoch=epochs.progress.epoch,
            steps_per_epoch=steps,
            validation_steps=config.max_validation_steps,
            callbacks=callbacks,
            verbose=config.verbose,
            shuffle=False,
        )
    return epochs.trained()
