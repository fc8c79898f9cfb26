"""The TensorFlow wing: SAMPLES (TFRecord + feature_spec.json) -> a trained model and RUN outputs.

    train.py        the job's composition: open SAMPLES, build the model, fit, write RUN
    epochs.py       what Keras fit and the distributed loop share: callbacks, input, the log line, history
    dataset.py      the training input: tf.data streams of parsed TFRecord shards
    run_state.py    RUN/_RUN.json, checkpoints and the callbacks that write them
    run_outputs.py  metrics.parquet, predictions/, embeddings/, the exported model, run.json
    plots.py        plots/: training curves, ROC, reliability diagram (no TensorFlow; jobs.compare and the notebook too)
    warm_start.py   --init-from: a new run started from a finished run's weights and optimizer state
    metrics.py      offline metrics (AUC, logloss, calibration, per-user AUC)
    distributed.py  tf.distribute strategies from TF_CONFIG; what the chief does and the other workers do
                    not (Role); the multi-worker / parameter-server loop

It never imports `pipelines.samples` (tests/test_layout.py checks it); the contract with the
Spark wing is `feature_spec`.
"""
