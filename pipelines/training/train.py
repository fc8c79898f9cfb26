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

    pipelines/training/run_state.py     RUN/_RUN.json, RUN/checkpoints/ and the callbacks that write them
    pipelines/training/run_outputs.py   metrics.parquet, predictions/, embeddings/, model/, run.json
    pipelines/training/plots.py         plots/: training curves, ROC, reliability diagram (PNG)
    RUN/tensorboard/           Keras TensorBoard logs
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from collections.abc import Mapping
from contextlib import contextmanager, suppress

import keras
import tensorflow as tf

from models import ParamError, build_model, compile_model, embedding_tables, resolve_params
from pipelines import publish
from pipelines.config import ConfigError
from pipelines.config_schema import TrainConfig, validate_train_config
from pipelines.timings import Timings
from pipelines.training.dataset import Samples, make_dataset, naming_corrupt_shards, open_samples
from pipelines.training.distributed import (
    LOOP_STRATEGIES,
    DistributedLoop,
    Task,
    check_cluster,
    cluster_record,
    make_strategy,
    serve_if_not_coordinator,
    steps_per_epoch,
    validation_logs,
)
from pipelines.training.run_outputs import (
    STAGING_PREFIX,
    FinishedRun,
    predict_split,
    serving_function,
    write_run_outputs,
)
from pipelines.training.run_state import (
    PROGRESS_SECONDS,
    RUN_MARKERS,
    Checkpoint,
    Checkpoints,
    EarlyStoppingWithState,
    EpochLog,
    Progress,
    RunMismatch,
    SimulatedCrash,
    build_optimizers,
    jsonable,
    mark_run,
)
from pipelines.training.warm_start import (
    InitFromRefused,
    init_source,
    load_init_weights,
    pending_init_from,
    refuse_into_existing_run,
)

__all__ = ["InitFromRefused", "RunMismatch", "SimulatedCrash", "model_params", "train"]

log = logging.getLogger(__name__)


def model_params(config: TrainConfig) -> dict:
    """config.params (overrides of the model's defaults, models/params.py), the seed defaulting to config.seed."""
    params = copy.deepcopy(config.params)
    if params.get("seed") is None:
        params["seed"] = config.seed
    return params


@contextmanager
def _undone_on_write_failure(run_dir: str):
    """A new RUN (absent or empty before) whose writing fails for lack of space, quota or a writable
    disk is emptied again: everything in it is this run's. A resumed RUN keeps what it had."""
    existed = publish.isdir(run_dir)
    if existed and publish.listdir(run_dir):
        yield
        return
    try:
        yield
    except Exception as exc:
        if publish.write_failure(exc, run_dir) is not None:
            for name in publish.listdir(run_dir) if existed else []:  # the user's empty folder stays
                publish.remove(os.path.join(run_dir, name))
            if not existed:
                with suppress(Exception):  # as much as can be removed
                    publish.remove(run_dir)
        raise


def train(samples_dir: str, run_dir: str, config: TrainConfig | Mapping) -> dict:
    """Train config.model for config.epochs on samples_dir; write RUN/ outputs; return run.json's content.

    `config` is validated first (a mapping becomes a TrainConfig), the model params too: a ConfigError
    leaves RUN untouched."""
    clock = Timings()
    config = validate_train_config(config)
    try:
        params = resolve_params(config.model, model_params(config))
    except ParamError as exc:  # each line names its params.<key>
        raise ConfigError(str(exc)) from None
    kind = config.distribute.strategy
    task = Task.from_environment() if kind != "none" else Task()
    check_cluster(kind, task)  # a ConfigError naming distribute.strategy and TF_CONFIG
    serve_if_not_coordinator(kind, task)  # a parameter_server worker or ps task serves until stopped
    chief = task.is_chief
    monitor = config.early_stopping.monitor
    run_dir, model_name = publish.normalize(run_dir), config.model  # an absolute path, or s3://...
    run_id = config.run_id or os.path.basename(run_dir.rstrip("/"))
    started = time.time()
    init_dir = config.init_from
    if chief:  # the other workers only read RUN/checkpoints
        publish.check_output(run_dir, inputs=[samples_dir, *([init_dir] if init_dir else [])], markers=RUN_MARKERS)
        if init_dir:
            refuse_into_existing_run(run_dir, init_dir)
    # the selected days checked, and samples this RUN was not trained on refused, before RUN is touched
    samples = open_samples(samples_dir, run_dir if chief else None, config.data.dates())
    spec = samples.spec
    checkpoints = Checkpoints(
        os.path.join(run_dir, "checkpoints"), config.checkpoints.keep, model_name, params, samples.spec_hash
    )
    if chief and not init_dir and config.resume:
        init_dir = pending_init_from(run_dir)  # a warm-started run rerun before its first checkpoint
    init = init_source(init_dir, checkpoints, samples.spec_hash, samples.describe()) if init_dir else None
    strategy = make_strategy(kind, task)
    with _undone_on_write_failure(run_dir) if chief else contextlib.nullcontext():
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            keras.utils.set_random_seed(config.seed)
            model = build_model(model_name, spec, params)
            compile_model(model, steps_per_execution=_steps_per_execution(config, kind))
            build_optimizers(model)
        # RUN0's weights are read into the model before RUN is written: a RUN0 whose weights file cannot be
        # read is refused with RUN as it was, so the same command with a good RUN0 runs. (A RUN with an
        # --init-from holds no checkpoint: refuse_into_existing_run, pending_init_from.)
        init_record = load_init_weights(model, init) if init is not None else None
        if chief:
            mark_run(run_dir, run_id, init.run if init else None)
            publish.remove_stale_stagings(run_dir, STAGING_PREFIX, started)  # left by killed runs
            state = checkpoints.previous(resume=config.resume)
        loop = None
        if kind in LOOP_STRATEGIES:
            loop = DistributedLoop(model, strategy, kind, task, _train_stream(samples, config, kind))
            loop.barrier()  # the chief has settled RUN/checkpoints
        if not chief:
            state = checkpoints.load_state()
            pending = pending_init_from(run_dir) if state is None and init is None and config.resume else None
            if pending:
                init = init_source(pending, checkpoints, samples.spec_hash, samples.describe())
        progress = checkpoints.restore(model, state)
        resumed_from = progress.epoch
        if state is None and init is not None:  # a warm start: epoch 1 starts from RUN0's weights
            progress.init_from = init_record or load_init_weights(model, init)
            if chief:
                progress.initial_valid = _initial_valid(model, strategy, samples, params, config, init)
        if state is not None:
            log.info(
                "resuming %s from the checkpoint of epoch %d (best %s %.4f at epoch %s)",
                run_dir,
                resumed_from,
                monitor,
                progress.early.best if progress.early.best is not None else float("nan"),
                progress.early.best_epoch,
            )
        clock.since_start("setup")
        with clock.step("train"):
            if loop is not None:
                new_epochs = fit_with_loop(loop, model, samples, config, progress, checkpoints, task, run_dir)
            else:
                new_epochs = fit(model, samples, config, progress, checkpoints, run_dir)
        if config.debug.weights_dir:
            _save_worker_weights(model, config.debug.weights_dir, task)
        if not chief:
            log.info("%s done after epoch %d; the chief writes the run outputs", task.describe(), progress.epoch)
            return {"task": task.describe(), "epochs": progress.epoch, "run_dir": run_dir}
        best_epoch = checkpoints.restore_best(model, progress, monitor)
        distribute = None
        if strategy is not None:  # the outputs are written from a single-process copy of the weights
            distribute = cluster_record(kind, task, embedding_tables(model))
            model = _single_process_copy(model, spec, params)

        finished = FinishedRun(
            run_id=run_id,
            run_dir=run_dir,
            started=started,
            config=config,
            params=params,
            samples=samples,
            progress=progress,
            new_epochs=new_epochs,
            resumed_from=resumed_from,
            best_epoch=best_epoch,
            distribute=distribute,
        )
        summary = write_run_outputs(model, finished, clock)
        log.info("test %s", " ".join(f"{k} {v:.4f}" for k, v in summary["metrics"]["test"].items()))
        return jsonable(summary)


def _initial_valid(model, strategy, samples: Samples, params: dict, config: TrainConfig, init) -> dict:
    """The valid metrics of a warm-started model before any step, by the code of the final evaluation:
    the starting point of the run, equal to RUN0's final valid metrics on the same samples."""
    scored = _single_process_copy(model, samples.spec, params) if strategy is not None else model
    serve = serving_function(scored, samples.spec)
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


def _single_process_copy(model, spec: dict, params: dict):
    """The model rebuilt outside any strategy with the trained weights: what the run outputs are made from."""
    copy = build_model(model.model_name, spec, params)
    copy.set_weights([w.numpy() if hasattr(w, "numpy") else w for w in model.get_weights()])
    return copy


def _save_worker_weights(model, directory: str, task: Task) -> None:
    os.makedirs(directory, exist_ok=True)
    model.save_weights(os.path.join(directory, f"worker-{task.type or 'single'}-{task.index}.weights.h5"))


def _nothing_to_train(progress: Progress, epochs: int) -> bool:
    if progress.early.stopped:
        log.info("the checkpointed run already stopped early at epoch %d; skipping training", progress.epoch)
        return True
    if progress.epoch >= epochs:
        log.info("the checkpoint already has %d of %d epochs; skipping training", progress.epoch, epochs)
        return True
    return False


def _train_stream(samples: Samples, config: TrainConfig, kind: str):
    """``dataset_fn(input_context)`` of DistributedLoop: a worker's repeated train stream at its
    replicas' share of the global batch; under multi_worker, its share of the files."""

    def dataset_fn(context: tf.distribute.InputContext):
        shard = (context.num_input_pipelines, context.input_pipeline_id) if kind == "multi_worker" else None
        return make_dataset(
            samples,
            "train",
            context.get_per_replica_batch_size(config.batch_size),
            training=True,
            shuffle_buffer=config.shuffle_buffer,
            seed=config.seed,
            repeat=True,
            cycle_length=config.input.cycle_length,
            deterministic=config.input.deterministic or None,
            shard=shard,
        )

    return dataset_fn


def epoch_callbacks(
    config: TrainConfig,
    progress: Progress,
    checkpoints: Checkpoints,
    run_dir: str,
    num_train: int,
    crash: bool = True,
    progress_bar: bool = False,
) -> list:
    """What happens after every epoch, in Keras fit and in the distributed loop alike. Inside an epoch:
    `progress_bar` (the loop at verbose=1) or, unless Keras fit draws its bar (verbose=1), a log line every
    PROGRESS_SECONDS."""
    es = config.early_stopping
    max_examples = None if config.max_steps_per_epoch else num_train
    return [
        EpochLog(
            progress,
            config.epochs,
            config.batch_size,
            max_examples=max_examples,
            steps_per_epoch=steps_per_epoch(config, num_train),
            log_every=None if config.verbose == 1 else PROGRESS_SECONDS,
            progress_bar=progress_bar,
        ),
        EarlyStoppingWithState(progress, checkpoints, es.monitor, es.mode, es.patience, es.min_delta),
        Checkpoint(progress, checkpoints, config.debug.crash_after_epoch if crash else None),
        keras.callbacks.TensorBoard(
            log_dir=os.path.join(run_dir, "tensorboard"), update_freq="epoch", profile_batch=0, write_graph=False
        ),
    ]


def fit_with_loop(
    loop: DistributedLoop,
    model,
    samples: Samples,
    config: TrainConfig,
    progress: Progress,
    checkpoints: Checkpoints,
    task: Task,
    run_dir: str,
) -> list:
    """What ``fit`` does, under a multi-worker or parameter-server strategy: epochs of global steps,
    then on the chief the validation, the epoch log, early stopping and the checkpoint; the chief's
    decision to stop reaches every worker. Returns the history entries of the epochs trained now."""
    epochs = config.epochs
    if _nothing_to_train(progress, epochs):
        return []
    num_train = samples.num_examples("train")
    steps = steps_per_epoch(config, num_train)
    callbacks, valid_ds = [], None
    if task.is_chief:
        valid_ds = make_dataset(samples, "valid", config.eval_batch_size, cycle_length=config.input.cycle_length)
        # a simulated crash is raised below, on every worker
        callbacks = epoch_callbacks(
            config, progress, checkpoints, run_dir, num_train, crash=False, progress_bar=config.verbose == 1
        )
    for callback in callbacks:
        callback.set_model(model)
    model.stop_training = False
    log.info(
        "training %s on %s under %s (%s): epochs %d..%d, %d steps of global batch %d, spec hash %s",
        config.model,
        samples.describe(),
        config.distribute.strategy,
        task.describe(),
        progress.epoch + 1,
        epochs,
        steps,
        config.batch_size,
        samples.spec_hash[:12],
    )
    before = len(progress.history)
    for callback in callbacks:
        callback.on_train_begin()
    with naming_corrupt_shards(samples, ("train", "valid")):
        for epoch in range(progress.epoch + 1, epochs + 1):
            for callback in callbacks:
                callback.on_epoch_begin(epoch - 1)
            # the chief's EpochLog (the first callback) follows the steps: its progress bar or lines
            loss = loop.train_epoch(steps, on_step=callbacks[0].on_train_batch_end if callbacks else None)
            stop = False
            if task.is_chief:
                for callback in callbacks:
                    callback.on_train_batch_end(steps - 1)
                    callback.on_test_begin()
                valid = validation_logs(model, valid_ds, config.max_validation_steps)
                for callback in callbacks:
                    callback.on_test_end({name.removeprefix("val_"): value for name, value in valid.items()})
                for callback in callbacks:
                    callback.on_epoch_end(epoch - 1, {"loss": loss, **valid})
                stop = bool(model.stop_training)
            stop = loop.decide(stop)
            progress.epoch, progress.early.stopped = epoch, stop
            if config.debug.crash_after_epoch is not None and epoch == config.debug.crash_after_epoch:
                raise SimulatedCrash(f"debug.crash_after_epoch={epoch}: stopping after the checkpoint of epoch {epoch}")
            if stop:
                break
    for callback in callbacks:
        callback.on_train_end()
    return progress.history[before:]


def fit(
    model, samples: Samples, config: TrainConfig, progress: Progress, checkpoints: Checkpoints, run_dir: str
) -> list:
    """Keras fit from epoch progress.epoch + 1 to config.epochs, unless the run already ended;
    returns the history entries of the epochs trained now."""
    epochs, batch_size, seed = config.epochs, config.batch_size, config.seed
    if _nothing_to_train(progress, epochs):
        return []
    steps = config.max_steps_per_epoch
    input_conf = config.input
    train_ds = make_dataset(
        samples,
        "train",
        batch_size,
        training=True,
        shuffle_buffer=config.shuffle_buffer,
        seed=seed,
        repeat=bool(steps),
        cycle_length=input_conf.cycle_length,
        deterministic=input_conf.deterministic or None,
    )
    valid_ds = make_dataset(samples, "valid", config.eval_batch_size, cycle_length=input_conf.cycle_length)
    callbacks = epoch_callbacks(config, progress, checkpoints, run_dir, samples.num_examples("train"))
    log.info(
        "training %s on %s: epochs %d..%d, batch size %d, spec hash %s",
        config.model,
        samples.describe(),
        progress.epoch + 1,
        epochs,
        batch_size,
        samples.spec_hash[:12],
    )
    before = len(progress.history)
    with naming_corrupt_shards(samples, ("train", "valid")):
        model.fit(
            train_ds,
            validation_data=valid_ds,
            epochs=epochs,
            initial_epoch=progress.epoch,
            steps_per_epoch=steps,
            validation_steps=config.max_validation_steps,
            callbacks=callbacks,
            verbose=config.verbose,
            shuffle=False,
        )
    return progress.history[before:]
