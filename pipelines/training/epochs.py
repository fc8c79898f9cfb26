"""What training's epochs share, under Keras fit (train.py's `fit`) and the distributed loop
(distributed.py's `DistributedLoop.fit`) alike:

    epochs = Epochs(samples, config, progress, checkpoints, run_dir)
    if epochs.none_left():                  # the checkpointed run stopped early, or has every epoch
        return []
    train_ds, valid_ds = train_dataset(samples, config, batch_size, repeat=...), epochs.valid_dataset()
    callbacks = epochs.callbacks()          # after every epoch: the log line, early stopping, the checkpoint
    with epochs.training("batch size 64"):  # the log line training starts with; a corrupt shard named
        ...                                 # the epochs from progress.epoch + 1 to config.epochs
    return epochs.trained()                 # the history entries of the epochs trained now
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager

import keras

from pipelines.config_schema import TrainConfig
from pipelines.training.dataset import Samples, make_dataset, naming_corrupt_shards
from pipelines.training.run_state import (
    PROGRESS_SECONDS,
    Checkpoint,
    Checkpoints,
    EarlyStoppingWithState,
    EpochLog,
    Progress,
)

log = logging.getLogger("pipelines.training.train")


def steps_per_epoch(config, num_train: int) -> int:
    """Global steps per epoch: max_steps_per_epoch, else one pass of the train split at batch_size
    (the global batch: each of n replicas takes batch_size / n rows of a step)."""
    return int(config.max_steps_per_epoch or math.ceil(num_train / config.batch_size))


def train_dataset(
    samples: Samples, config: TrainConfig, batch_size: int, repeat: bool, shard: tuple[int, int] | None = None
):
    """The train split, shuffled with the config's seed, in batches of `batch_size`; `shard`: (files shared
    by, this one's share) of the split's files."""
    return make_dataset(
        samples,
        "train",
        batch_size,
        training=True,
        shuffle_buffer=config.shuffle_buffer,
        seed=config.seed,
        repeat=repeat,
        cycle_length=config.input.cycle_length,
        deterministic=config.input.deterministic or None,
        shard=shard,
    )


class Epochs:
    """The epochs a run trains now, from progress.epoch + 1 to config.epochs."""

    def __init__(
        self, samples: Samples, config: TrainConfig, progress: Progress, checkpoints: Checkpoints, run_dir: str
    ):
        self.samples, self.config, self.run_dir = samples, config, run_dir
        self.progress, self.checkpoints = progress, checkpoints
        self.before = len(progress.history)

    def none_left(self) -> bool:
        """Whether the checkpointed run already ended: stopped early, or trained every epoch (logged)."""
        progress, epochs = self.progress, self.config.epochs
        if progress.early.stopped:
            log.info("the checkpointed run already stopped early at epoch %d; skipping training", progress.epoch)
            return True
        if progress.epoch >= epochs:
            log.info("the checkpoint already has %d of %d epochs; skipping training", progress.epoch, epochs)
            return True
        return False

    def valid_dataset(self):
        return make_dataset(
            self.samples, "valid", self.config.eval_batch_size, cycle_length=self.config.input.cycle_length
        )

    def callbacks(self, crash: bool = True, progress_bar: bool = False) -> list:
        """What happens after every epoch. Inside an epoch: `progress_bar` (the loop at verbose=1) or, unless
        Keras fit draws its bar (verbose=1), a log line every PROGRESS_SECONDS. `crash`: whether the
        checkpoint raises debug.crash_after_epoch's SimulatedCrash (the loop raises it itself)."""
        config, progress, checkpoints = self.config, self.progress, self.checkpoints
        es = config.early_stopping
        num_train = self.samples.num_examples("train")
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
                log_dir=os.path.join(self.run_dir, "tensorboard"),
                update_freq="epoch",
                profile_batch=0,
                write_graph=False,
            ),
        ]

    @contextmanager
    def training(self, batches: str, under: str = ""):
        """Log the line training starts with (`under`: the strategy and task; `batches`: how the data comes),
        then run the block, a corrupt shard of train or valid named (CorruptShardError)."""
        config, progress = self.config, self.progress
        log.info(
            "training %s on %s%s: epochs %d..%d, %s, spec hash %s",
            config.model,
            self.samples.describe(),
            under,
            progress.epoch + 1,
            config.epochs,
            batches,
            self.samples.spec_hash[:12],
        )
        with naming_corrupt_shards(self.samples, ("train", "valid")):
            yield

    def trained(self) -> list:
        """The history entries of the epochs trained now."""
        return self.progress.history[self.before :]
