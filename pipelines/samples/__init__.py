"""The Spark wing: raw logs -> point-in-time features -> sharded TFRecord with feature_spec.json.

    build_samples.py  the job's composition: read RAW, validate, label, split, fit, transform, write
    raw_input.py      reading RAW/impressions, clicks, items (Parquet or CSV)
    fitting.py        what is fitted on the train split (vocabularies, normalization, buckets)
    spark.py          the SparkSession, and shipping our code to the executors
    example_batch.py  the vectorized tf.train.Example encoder (Arrow batch -> serialized records)
    tfrecord.py       TFRecord framing, compression and the per-partition shard writer

It never imports `pipelines.training` (tests/test_layout.py checks it); the contract with the
TensorFlow wing is `feature_spec`.
"""
