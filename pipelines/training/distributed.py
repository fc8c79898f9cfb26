"""Training past one process with tf.distribute: the strategy from the config and TF_CONFIG, what the
chief does and the other workers do not (`Role`), and the training loop of the multi-worker strategies.

    distribute.strategy   none | mirrored | multi_worker | parameter_server

- ``none``: Keras ``fit`` in this process (pipelines/training/train.py).
- ``mirrored``: Keras ``fit`` under ``MirroredStrategy`` over this machine's devices.
- ``multi_worker``: ``MultiWorkerMirroredStrategy``. Every worker of TF_CONFIG runs the same job; each
  holds a full copy of every variable and the gradients are all-reduced at every step.
- ``parameter_server``: ``ParameterServerStrategy``. The chief of TF_CONFIG runs the job and schedules
  steps on the workers (``ClusterCoordinator``); the variables live on the ps tasks. A worker or ps
  task started with the same command only serves (``serve_if_not_coordinator``) until it is stopped.

Keras 3 ``fit`` does not work under the last two (docs/distributed_training.md says why), so
``DistributedLoop`` trains there: ``strategy.run`` of the model's own step (``CTRModel.gradient_step``, the
one ``fit`` takes too), per-worker input, the validation AUC computed on the chief and its early-stopping
decision sent to every worker.

Of the processes of one run, the chief checks RUN before anything touches it, marks it, settles its
checkpoints and writes the run's outputs; the other workers read RUN/checkpoints only, once the chief has
settled them, and leave the outputs to the chief.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from models import embedding_tables
from pipelines import publish, storage
from pipelines.config_schema import TrainConfig
from pipelines.errors import ConfigError, shown
from pipelines.training.dataset import Samples, open_samples
from pipelines.training.epochs import Epochs, steps_per_epoch, train_dataset
from pipelines.training.run_outputs import STAGING_PREFIX
from pipelines.training.run_state import (
    RUN_MARKERS,
    Checkpoints,
    SimulatedCrash,
    mark_run,
    undone_on_write_failure,
)
from pipelines.training.warm_start import InitSource, init_source, pending_init_from, refuse_into_existing_run

log = logging.getLogger("pipelines.training.train")

STRATEGIES = ("none", "mirrored", "multi_worker", "parameter_server")
LOOP_STRATEGIES = ("multi_worker", "parameter_server")  # trained by DistributedLoop, not Keras fit
TASK_TYPES = ("chief", "worker", "ps", "evaluator")  # the task types TensorFlow's TF_CONFIG knows
TF_CONFIG_KEYS = ("cluster", "task", "rpc_layer", "session_master", "environment")  # what TensorFlow reads of it


@dataclass(frozen=True)
class Task:
    """This process's place in TF_CONFIG (no TF_CONFIG: a cluster of one, its chief)."""

    type: str | None = None
    index: int = 0
    cluster: dict = field(default_factory=dict)

    @classmethod
    def from_environment(cls) -> "Task":
        """This process's task from TF_CONFIG (unset: a single process), checked by parse_tf_config."""
        raw = os.environ.get("TF_CONFIG")
        return cls() if raw is None else parse_tf_config(raw)

    @property
    def is_chief(self) -> bool:
        """The task that writes RUN: 'chief', else worker 0 when the cluster names no chief."""
        if self.type is None or self.type == "chief":
            return True
        return self.type == "worker" and self.index == 0 and "chief" not in self.cluster

    def describe(self) -> str:
        return "single process" if self.type is None else f"{self.type} {self.index}"


def parse_tf_config(raw: str) -> Task:
    """This process's Task from the text of TF_CONFIG, or a one-line ConfigError naming TF_CONFIG and what is
    wrong with it. TensorFlow reads TF_CONFIG again when it sets up the cluster and fails there with a
    traceback (or hangs on a missing task), so everything it reads is checked here first."""
    if not raw.strip():
        raise ConfigError(
            'TF_CONFIG is set but empty: unset it to train in one process, or give {"cluster": ..., "task": ...}'
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"TF_CONFIG is not JSON ({exc.msg}, line {exc.lineno} column {exc.colno}), got {shown(raw)}"
        ) from None
    except RecursionError:  # [[[[... nested past Python's stack
        raise ConfigError(f"TF_CONFIG is not a JSON object, got {shown(raw)}") from None
    if not isinstance(config, dict):
        raise ConfigError(
            f'TF_CONFIG must be a JSON object {{"cluster": ..., "task": ...}}, got a JSON {_json_type(config)}'
        )
    unknown = sorted(set(config) - set(TF_CONFIG_KEYS))
    if unknown:  # {"clusters": ...} would otherwise train in one process, silently
        raise ConfigError(f"TF_CONFIG has unknown keys {shown(unknown)} (known: {', '.join(TF_CONFIG_KEYS)})")
    cluster, task = config.get("cluster"), config.get("task")
    if cluster is None and task is None:  # {}: no cluster, as TensorFlow reads it
        return Task()
    if cluster is None or task is None:
        given, missing = ("cluster", "task") if task is None else ("task", "cluster")
        raise ConfigError(f'TF_CONFIG has a "{given}" but no "{missing}": every process needs both')
    if not isinstance(cluster, dict) or not cluster:
        raise ConfigError(
            f'TF_CONFIG\'s cluster must be an object {{"worker": ["host:port", ...], ...}}, got {shown(cluster)}'
        )
    for name, addresses in cluster.items():
        if name not in TASK_TYPES:
            raise ConfigError(
                f"TF_CONFIG's cluster has an unknown task type {shown(name)} (known: {', '.join(TASK_TYPES)})"
            )
        if not isinstance(addresses, list) or not addresses:
            raise ConfigError(
                f'TF_CONFIG\'s cluster.{name} must be a list of addresses ["host:port", ...], got {shown(addresses)}'
            )
        for i, address in enumerate(addresses):
            if not isinstance(address, str) or not address.strip():
                raise ConfigError(f"TF_CONFIG's cluster.{name}[{i}] must be an address host:port, got {shown(address)}")
    if len(cluster.get("chief", [])) > 1:
        raise ConfigError(f"TF_CONFIG's cluster.chief must hold one address, got {len(cluster['chief'])}")
    if not isinstance(task, dict):
        raise ConfigError(f'TF_CONFIG\'s task must be an object {{"type": ..., "index": ...}}, got {shown(task)}')
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in TASK_TYPES:
        raise ConfigError(f"TF_CONFIG's task.type must be one of {', '.join(TASK_TYPES)}, got {shown(kind)}")
    if kind not in cluster:
        raise ConfigError(
            f"TF_CONFIG's task.type is {kind!r}, but its cluster has no {kind} tasks (it has {', '.join(cluster)})"
        )
    if isinstance(index, bool) or not isinstance(index, int):
        raise ConfigError(f"TF_CONFIG's task.index must be an integer, got {shown(index)}")
    if not 0 <= index < len(cluster[kind]):
        raise ConfigError(
            f"TF_CONFIG's task.index must be in 0..{len(cluster[kind]) - 1} "
            f"(cluster.{kind} has {len(cluster[kind])} address{'es' if len(cluster[kind]) != 1 else ''}), got {index}"
        )
    return Task(kind, index, dict(cluster))


def _json_type(value) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


def check_cluster(kind: str, task: Task) -> None:
    """Refuse a TF_CONFIG the strategy cannot run on, before any work."""
    if kind == "multi_worker" and task.type not in (None, "chief", "worker"):
        raise ConfigError(
            f"distribute.strategy=multi_worker runs on chief and worker tasks, not {task.type!r} (TF_CONFIG's task.type)"
        )
    if kind == "parameter_server":
        if task.type not in (None, "chief", "worker", "ps"):
            raise ConfigError(
                f"distribute.strategy=parameter_server runs on chief, worker and ps tasks, not {task.type!r} (TF_CONFIG's task.type)"
            )
        missing = [t for t in ("chief", "worker", "ps") if not task.cluster.get(t)]
        if missing:
            raise ConfigError(
                "distribute.strategy=parameter_server needs TF_CONFIG with a chief, workers and ps tasks; "
                f"missing: {', '.join(missing)}"
            )


def make_strategy(kind: str, task: Task):
    """The tf.distribute strategy for ``distribute.strategy`` (None for 'none')."""
    if kind not in STRATEGIES:
        raise ValueError(f"distribute.strategy must be one of {STRATEGIES}, got {kind!r}")
    check_cluster(kind, task)
    if kind == "none":
        return None
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    # Whole variables, placed round-robin over the ps tasks. A variable_partitioner (one table over
    # several ps) is not usable with Keras 3: keras.Variable's gradient needs the tf.Variable's
    # `handle`, which a ShardedVariable lacks (docs/cluster.md).
    return tf.distribute.ParameterServerStrategy(tf.distribute.cluster_resolver.TFConfigClusterResolver())


def serve_if_not_coordinator(kind: str, task: Task) -> None:
    """Under parameter_server, a worker or ps task serves the chief's steps and variables and never
    returns: its launcher (Kubernetes, a cluster manager, a test) stops it when the chief is done."""
    if kind != "parameter_server" or task.type not in ("worker", "ps"):
        return
    check_cluster(kind, task)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    log.info("parameter_server: %s serving until stopped", task.describe())
    server = tf.distribute.Server(
        resolver.cluster_spec(), job_name=task.type, task_index=task.index, protocol="grpc", start=True
    )
    server.join()


def cluster_record(kind: str, task: Task, tables: dict) -> dict:
    """run.json's ``distribute``: the strategy, the cluster's tasks and the device of each embedding table
    (under parameter_server, a ps task's)."""
    return {
        "strategy": kind,
        "task": task.describe(),
        "cluster": {name: len(addresses) for name, addresses in sorted(task.cluster.items())},
        "embedding_devices": {name: getattr(getattr(v, "value", v), "device", "") for name, v in tables.items()},
    }


def train_stream(samples: Samples, config: TrainConfig, kind: str):
    """``dataset_fn(input_context)`` of DistributedLoop: a worker's repeated train stream at its
    replicas' share of the global batch; under multi_worker, its share of the files."""

    def dataset_fn(context: tf.distribute.InputContext):
        shard = (context.num_input_pipelines, context.input_pipeline_id) if kind == "multi_worker" else None
        batch_size = context.get_per_replica_batch_size(config.batch_size)
        return train_dataset(samples, config, batch_size, repeat=True, shard=shard)

    return dataset_fn


class Broadcast:
    """Values decided on the chief, sent to every worker: an all-reduce (sum) to which only the first
    replica of the chief contributes; it also waits for every worker, as a barrier."""

    def __init__(self, strategy):
        self.strategy = strategy

    def __call__(self, values) -> np.ndarray:
        values = tf.constant(np.asarray(values, dtype=np.float64))

        def contribute():
            context = tf.distribute.get_replica_context()
            mine = tf.where(context.replica_id_in_sync_group == 0, values, tf.zeros_like(values))
            return context.all_reduce(tf.distribute.ReduceOp.SUM, mine)

        result = self.strategy.run(tf.function(contribute))
        return self.strategy.experimental_local_results(result)[0].numpy()


def validation_logs(model, valid_ds, max_steps: int | None) -> dict:
    """``val_loss`` and ``val_auc`` as Keras ``fit`` logs them (mean binary cross-entropy, AUC with
    200 thresholds), computed on this process."""
    auc, loss = keras.metrics.AUC(name="auc"), keras.metrics.Mean()
    bce = keras.losses.BinaryCrossentropy()
    predict = tf.function(lambda x: model(x, training=False))
    for i, (features, label) in enumerate(valid_ds):
        if max_steps is not None and i >= max_steps:
            break
        p = predict(features)
        auc.update_state(label, p)
        loss.update_state(bce(label, p), sample_weight=tf.shape(label)[0])
    return {"val_loss": float(loss.result()), "val_auc": float(auc.result())}


class DistributedLoop:
    """Epochs of ``steps`` global steps under a multi-worker or parameter-server strategy.

    ``dataset_fn(input_context)`` gives a worker its repeated, batched train stream (its share of the
    files under multi_worker); `fit` runs the epochs with their callbacks on the chief only."""

    def __init__(self, model, strategy, kind: str, task: Task, dataset_fn):
        self.model, self.strategy, self.kind, self.task = model, strategy, kind, task
        if kind == "parameter_server":
            self.coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
            per_worker = self.coordinator.create_per_worker_dataset(
                lambda: strategy.distribute_datasets_from_function(dataset_fn)
            )
            self.iterator = iter(per_worker)
        else:
            self.coordinator = None
            self.iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
        self.broadcast = Broadcast(strategy) if kind == "multi_worker" else None
        self._step = tf.function(self._global_step)

    def _global_step(self, iterator):
        def replica_step(batch):
            features, label = batch
            loss, _ = self.model.gradient_step(features, label)
            return loss

        per_replica = self.strategy.run(replica_step, args=(next(iterator),))
        # Keras divides each replica's loss by the replicas in sync: their sum is the batch's mean.
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def train_epoch(self, steps: int, on_step=None) -> float:
        """One epoch of ``steps`` global steps; the mean train loss. ``on_step(i)`` is called after step i
        (0-based) under multi_worker, where steps run one after the other here; under parameter_server the
        steps are scheduled on the workers and only their end is known (the caller reports it)."""
        if self.coordinator is None:
            losses = []
            for i in range(steps):
                losses.append(self._step(self.iterator))
                if on_step is not None:
                    on_step(i)
            return float(np.mean([float(v) for v in losses]))
        scheduled = [self.coordinator.schedule(self._step, args=(self.iterator,)) for _ in range(steps)]
        self.coordinator.join()
        return float(np.mean([float(v.fetch()) for v in scheduled]))

    def decide(self, stop: bool) -> bool:
        """The chief's decision to stop, known to every worker (multi_worker); the chief's own otherwise."""
        if self.broadcast is None:
            return stop
        return bool(self.broadcast([1.0 if (self.task.is_chief and stop) else 0.0])[0] > 0.5)

    def barrier(self) -> None:
        if self.broadcast is not None:
            self.broadcast([0.0])

    def fit(self, epochs: Epochs) -> list:
        """What Keras fit does, here: epochs of global steps, then on the chief the validation, the epoch
        log, early stopping and the checkpoint; the chief's decision to stop reaches every worker. Returns
        the history entries of the epochs trained now."""
        config, progress = epochs.config, epochs.progress
        if epochs.none_left():
            return []
        steps = steps_per_epoch(config, epochs.samples.num_examples("train"))
        callbacks, valid_ds = [], None
        if self.task.is_chief:
            valid_ds = epochs.valid_dataset()
            # a simulated crash is raised below, on every worker
            callbacks = epochs.callbacks(crash=False, progress_bar=config.verbose == 1)
        for callback in callbacks:
            callback.set_model(self.model)
        self.model.stop_training = False
        under = f" under {self.kind} ({self.task.describe()})"
        with epochs.training(f"{steps} steps of global batch {config.batch_size}", under):
            for callback in callbacks:
                callback.on_train_begin()
            for epoch in range(progress.epoch + 1, config.epochs + 1):
                stop = self._epoch(epoch, steps, callbacks, valid_ds, config.max_validation_steps)
                progress.epoch, progress.early.stopped = epoch, stop
                if config.debug.crash_after_epoch is not None and epoch == config.debug.crash_after_epoch:
                    raise SimulatedCrash(
                        f"debug.crash_after_epoch={epoch}: stopping after the checkpoint of epoch {epoch}"
                    )
                if stop:
                    break
        for callback in callbacks:
            callback.on_train_end()
        return epochs.trained()

    def _epoch(self, epoch: int, steps: int, callbacks: list, valid_ds, max_validation_steps: int | None) -> bool:
        """Epoch `epoch` (1-based): its steps, then on the chief the callbacks' epoch end; whether to stop."""
        for callback in callbacks:
            callback.on_epoch_begin(epoch - 1)
        # the chief's EpochLog (the first callback) follows the steps: its progress bar or lines
        loss = self.train_epoch(steps, on_step=callbacks[0].on_train_batch_end if callbacks else None)
        stop = False
        if self.task.is_chief:
            for callback in callbacks:
                callback.on_train_batch_end(steps - 1)
                callback.on_test_begin()
            valid = validation_logs(self.model, valid_ds, max_validation_steps)
            for callback in callbacks:
                callback.on_test_end({name.removeprefix("val_"): value for name, value in valid.items()})
            for callback in callbacks:
                callback.on_epoch_end(epoch - 1, {"loss": loss, **valid})
            stop = bool(self.model.stop_training)
        return self.decide(stop)


@dataclass
class Role:
    """This process's part in one run: RUN, the config, and this process's task and strategy."""

    kind: str  # distribute.strategy
    task: Task
    run_dir: str  # an absolute path, or s3://...
    config: TrainConfig
    started: float  # time.time() when the run started
    strategy: object = None  # once `start` made it (None: strategy none)
    loop: DistributedLoop | None = None  # under multi_worker and parameter_server, once `settle` made it

    @classmethod
    def join(cls, run_dir: str, config: TrainConfig) -> "Role":
        """This process's task (from TF_CONFIG under a strategy), refused with a ConfigError naming
        distribute.strategy and TF_CONFIG when the strategy cannot run on it. A parameter_server worker or ps
        task does not return: it serves the chief until it is stopped."""
        kind = config.distribute.strategy
        task = Task.from_environment() if kind != "none" else Task()
        check_cluster(kind, task)
        serve_if_not_coordinator(kind, task)
        return cls(kind, task, storage.normalize(run_dir), config, time.time())

    @property
    def is_chief(self) -> bool:
        return self.task.is_chief

    @property
    def run_id(self) -> str:
        return self.config.run_id or os.path.basename(self.run_dir.rstrip("/"))

    def open_samples(self, samples_dir: str) -> Samples:
        """The samples to train on, with the refusals that come before RUN is touched: on the chief, a RUN
        that overlaps an input or holds no run of this job (publish.check_output, OutputRefused) or a run that
        --init-from would start over (InitFromRefused); then the selected days, and on the chief samples that
        RUN was not trained on (SpecHashMismatch)."""
        init_dir = self.config.init_from
        if self.is_chief:  # the other workers only read RUN/checkpoints
            inputs = [samples_dir, *([init_dir] if init_dir else [])]
            publish.check_output(self.run_dir, inputs=inputs, markers=RUN_MARKERS)
            if init_dir:
                refuse_into_existing_run(self.run_dir, init_dir)
        return open_samples(samples_dir, self.run_dir if self.is_chief else None, self.config.data.dates())

    def warm_start(self, checkpoints: Checkpoints, samples: Samples) -> InitSource | None:
        """The run whose weights epoch 1 starts from, checked (init_source): --init-from, else, on the chief,
        the one a warm-started RUN was started with when it died before its first checkpoint."""
        init_dir = self.config.init_from
        if self.is_chief and not init_dir and self.config.resume:
            init_dir = pending_init_from(self.run_dir)
        return init_source(init_dir, checkpoints, samples.spec_hash, samples.describe(), samples) if init_dir else None

    def start(self) -> None:
        """Make the strategy; under multi_worker the workers connect to each other here."""
        self.strategy = make_strategy(self.kind, self.task)

    def scope(self):
        """The strategy's scope, where the model is built (none without a strategy)."""
        return self.strategy.scope() if self.strategy is not None else nullcontext()

    def writing(self):
        """Around everything that writes RUN: on the chief, a new RUN is emptied again when a full disk
        stops the run (undone_on_write_failure)."""
        return undone_on_write_failure(self.run_dir) if self.is_chief else nullcontext()

    def settle(
        self, model, checkpoints: Checkpoints, samples: Samples, init: InitSource | None
    ) -> tuple[dict | None, InitSource | None]:
        """The checkpoint state to resume from (None: epoch 1) and the warm start's source. The chief marks
        RUN as this run's, removes the stagings of killed runs and settles RUN/checkpoints (refused when of
        another model or params, removed with resume=false); under multi_worker and parameter_server the
        loop is made, and the other workers wait for the chief before they read the checkpoints and a
        warm start their RUN is waiting for."""
        resume = self.config.resume
        state = None
        if self.is_chief:
            mark_run(self.run_dir, self.run_id, init.run if init else None)
            publish.remove_stale_stagings(self.run_dir, STAGING_PREFIX, self.started)  # left by killed runs
            state = checkpoints.previous(resume=resume)
        if self.kind in LOOP_STRATEGIES:
            stream = train_stream(samples, self.config, self.kind)
            self.loop = DistributedLoop(model, self.strategy, self.kind, self.task, stream)
            self.loop.barrier()  # the chief has settled RUN/checkpoints
        if not self.is_chief:
            state = checkpoints.load_state()
            pending = pending_init_from(self.run_dir) if state is None and init is None and resume else None
            if pending:
                init = init_source(pending, checkpoints, samples.spec_hash, samples.describe(), samples)
        return state, init

    def record(self, model) -> dict | None:
        """run.json's ``distribute`` (cluster_record) under a strategy; None without one."""
        if self.strategy is None:
            return None
        return cluster_record(self.kind, self.task, embedding_tables(model))

    def save_weights(self, model, directory: str) -> None:
        """This process's weights as worker-TYPE-INDEX.weights.h5 in `directory` (debug.weights_dir)."""
        os.makedirs(directory, exist_ok=True)
        model.save_weights(os.path.join(directory, f"worker-{self.task.type or 'single'}-{self.task.index}.weights.h5"))

    def handed_back(self, epoch: int) -> dict:
        """What a worker other than the chief returns once trained: the chief writes the run outputs."""
        log.info("%s done after epoch %d; the chief writes the run outputs", self.task.describe(), epoch)
        return {"task": self.task.describe(), "epochs": epoch, "run_dir": self.run_dir}
