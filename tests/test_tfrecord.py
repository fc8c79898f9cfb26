"""The project's Example encoder against TensorFlow's own tf.train.Example."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.samples.tfrecord import ExampleEncoder

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOAT32 = st.floats(width=32, allow_nan=False)
TEXT = st.text(max_size=12)
FEATURES = [
    ("i_scalar", "int64"),
    ("i_list", "int64"),
    ("f_scalar", "float32"),
    ("f_list", "float32"),
    ("s_scalar", "string"),
    ("s_list", "string"),
    ("maybe_null", "float32"),
]


def naive_example(row: dict) -> bytes:
    """The reference: one tf.train.Example built value by value."""
    feature = {}
    for name, dtype in FEATURES:
        value = row[name]
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if dtype == "int64":
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        elif dtype == "float32":
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        else:
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


rows = st.fixed_dictionaries(
    {
        "i_scalar": INT64,
        "i_list": st.lists(INT64, max_size=6),
        "f_scalar": FLOAT32,
        "f_list": st.lists(FLOAT32, max_size=6),
        "s_scalar": TEXT,
        "s_list": st.lists(TEXT, max_size=4),
        "maybe_null": st.one_of(st.none(), FLOAT32),
    }
)


@settings(max_examples=200, deadline=None)
@given(rows)
def test_encoded_bytes_parse_to_the_same_values_as_tf_train_example(row):
    ours = ExampleEncoder(FEATURES).encode(row)
    reference = naive_example(row)
    ours_parsed = tf.train.Example.FromString(ours)
    assert ours_parsed == tf.train.Example.FromString(reference)
    # And through the parser the trainer uses.
    spec = {
        "i_scalar": tf.io.FixedLenFeature([], tf.int64),
        "i_list": tf.io.VarLenFeature(tf.int64),
        "f_scalar": tf.io.FixedLenFeature([], tf.float32),
        "f_list": tf.io.VarLenFeature(tf.float32),
        "s_scalar": tf.io.FixedLenFeature([], tf.string),
        "s_list": tf.io.VarLenFeature(tf.string),
        "maybe_null": tf.io.FixedLenFeature([], tf.float32, default_value=-1.0),
    }
    a = tf.io.parse_example(tf.constant([ours]), spec)
    b = tf.io.parse_example(tf.constant([reference]), spec)
    for name in spec:
        x, y = a[name], b[name]
        if isinstance(x, tf.SparseTensor):
            x, y = x.values, y.values
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_numpy_arrays_and_fixed_shapes_parse_exactly():
    encoder = ExampleEncoder([("seq", "int64"), ("x", "float32"), ("id", "string")])
    data = encoder.encode({"seq": np.array([3, 0, 0], dtype=np.int64), "x": np.float32(0.25), "id": "u1"})
    parsed = tf.io.parse_example(
        tf.constant([data]),
        {
            "seq": tf.io.FixedLenFeature([3], tf.int64),
            "x": tf.io.FixedLenFeature([], tf.float32),
            "id": tf.io.FixedLenFeature([], tf.string),
        },
    )
    assert parsed["seq"].numpy().tolist() == [[3, 0, 0]]
    assert parsed["x"].numpy().tolist() == [0.25]
    assert parsed["id"].numpy().tolist() == [b"u1"]


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="unsupported dtype"):
        ExampleEncoder([("x", "float64")])


# ---------------------------------------------------------------- batch encoder
@st.composite
def batches(draw):
    """A few rows with fixed-width lists (as the samples have) and nullable scalars."""
    n_rows = draw(st.integers(min_value=1, max_value=8))
    width = draw(st.integers(min_value=0, max_value=5))
    rows = []
    for _ in range(n_rows):
        rows.append(
            {
                "i_scalar": draw(INT64),
                "i_list": draw(st.lists(INT64, min_size=width, max_size=width)),
                "f_scalar": draw(FLOAT32),
                "f_list": draw(st.lists(FLOAT32, min_size=width, max_size=width)),
                "s_scalar": draw(TEXT),
                "s_list": None,
                "maybe_null": draw(st.one_of(st.none(), FLOAT32)),
                "maybe_null_int": draw(st.one_of(st.none(), INT64)),
                "maybe_null_text": draw(st.one_of(st.none(), TEXT)),
            }
        )
    return rows


BATCH_FEATURES = [
    ("i_scalar", "int64"),
    ("i_list", "int64"),
    ("f_scalar", "float32"),
    ("f_list", "float32"),
    ("s_scalar", "string"),
    ("maybe_null", "float32"),
    ("maybe_null_int", "int64"),
    ("maybe_null_text", "string"),
]


def _batch_table(rows):
    import pyarrow as pa

    return pa.table(
        {
            "i_scalar": pa.array([r["i_scalar"] for r in rows], pa.int64()),
            "i_list": pa.array([r["i_list"] for r in rows], pa.list_(pa.int64())),
            "f_scalar": pa.array([r["f_scalar"] for r in rows], pa.float32()),
            "f_list": pa.array([r["f_list"] for r in rows], pa.list_(pa.float32())),
            "s_scalar": pa.array([r["s_scalar"] for r in rows], pa.string()),
            "maybe_null": pa.array([r["maybe_null"] for r in rows], pa.float64()),
            "maybe_null_int": pa.array([r["maybe_null_int"] for r in rows], pa.int64()),
            "maybe_null_text": pa.array([r["maybe_null_text"] for r in rows], pa.string()),
        }
    )


@settings(max_examples=150, deadline=None)
@given(batches())
def test_batch_encoder_writes_the_same_bytes_as_the_row_encoder_and_tf(rows):
    from pipelines.samples.example_batch import encode_batch, iter_records

    table = _batch_table(rows)
    got = list(iter_records(encode_batch(table, BATCH_FEATURES)))
    row_encoder = ExampleEncoder(BATCH_FEATURES)
    assert got == [row_encoder.encode(r) for r in rows]
    for data, row in zip(got, rows):
        parsed = tf.train.Example.FromString(data).features.feature
        assert list(parsed["i_list"].int64_list.value) == row["i_list"]
        assert list(parsed["f_list"].float_list.value) == row["f_list"]
        assert parsed["s_scalar"].bytes_list.value[0].decode() == row["s_scalar"]
        assert ("maybe_null_int" in parsed) == (row["maybe_null_int"] is not None)
        assert ("maybe_null_text" in parsed) == (row["maybe_null_text"] is not None)


def _framed(record: bytes) -> bytes:
    """TFRecord framing, one record at a time: the reference for the vectorized framing."""
    import struct

    import google_crc32c

    def masked_crc(data):
        crc = google_crc32c.value(data)
        return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)

    length = struct.pack("<Q", len(record))
    return length + masked_crc(length) + record + masked_crc(record)


@settings(max_examples=100, deadline=None)
@given(batches())
def test_framed_batch_is_every_row_encoder_record_framed_as_tfrecord(rows):
    from pipelines.samples.example_batch import frame_batch

    framed = frame_batch(_batch_table(rows), BATCH_FEATURES)
    expected = [_framed(ExampleEncoder(BATCH_FEATURES).encode(r)) for r in rows]
    assert framed.lengths.tolist() == [len(e) for e in expected]
    assert framed.data.tobytes() == b"".join(expected)


# ---------------------------------------------------------------- varint widths
BOUNDARIES = [0, 1, 127, 128, 16_383, 16_384, 2**31 - 1, 2**32, 2**63 - 1, -1, -(2**63)]


@pytest.mark.parametrize("values", [[v] for v in BOUNDARIES] + [BOUNDARIES], ids=lambda v: f"{v}")
def test_varints_at_width_boundaries_match_tf_train_example_byte_for_byte(values):
    """Each batch's varint slot is as wide as its widest value: narrow and mixed batches alike."""
    import pyarrow as pa

    from pipelines.samples.example_batch import encode_batch, iter_records

    table = pa.table({"v": pa.array(values, pa.int64()), "seq": pa.array([[v, 0, v] for v in values])})
    features = [("v", "int64"), ("seq", "int64")]
    got = list(iter_records(encode_batch(table, features)))
    assert got == [ExampleEncoder(features).encode({"v": v, "seq": [v, 0, v]}) for v in values]
    for v, data in zip(values, iter_records(encode_batch(table.select(["v"]), features[:1]))):
        # One feature, so TensorFlow's map order cannot differ: the bytes must be identical.
        example = tf.train.Example(
            features=tf.train.Features(feature={"v": tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))})
        )
        assert data == example.SerializeToString()


# ---------------------------------------------------------------- framed shards
SHARD_FEATURES = [("id", "int64"), ("seq", "int64"), ("x", "float32"), ("name", "string"), ("label", "int64")]


def _shard_batches():
    """Two Arrow batches of two splits, with a null string and ids across varint widths."""
    import pyarrow as pa

    def batch(start, n):
        ids = [start + i * 997 for i in range(n)]
        return pa.RecordBatch.from_pydict(
            {
                "id": pa.array(ids, pa.int64()),
                "seq": pa.array([[i % 300, 0, -i] for i in ids], pa.list_(pa.int64())),
                "x": pa.array([i / 7 for i in ids], pa.float32()),
                "name": pa.array([None if i % 5 == 0 else f"n{i}" * (i % 4) for i in ids], pa.string()),
                "label": pa.array([i % 2 for i in ids], pa.int64()),
                "split": pa.array(["train" if i % 3 else "test" for i in ids], pa.string()),
            }
        )

    return [batch(0, 40), batch(10**9, 25)]


def _expected_records(split):
    encoder = ExampleEncoder(SHARD_FEATURES)
    return [encoder.encode(row) for b in _shard_batches() for row in b.to_pylist() if row["split"] == split]


def _write_shards(output_dir, compression):
    from pipelines.samples.tfrecord import write_partition_shards

    out = list(write_partition_shards(iter(_shard_batches()), SHARD_FEATURES, str(output_dir), compression=compression))
    return {row["split"]: row for batch in out for row in batch.to_pylist()}


@pytest.mark.parametrize("compression", ["none", "gzip", "gzip_fast"])
def test_framed_shards_read_back_through_tfrecorddataset_with_its_crc_checks(tmp_path, compression):
    from pipelines.samples.tfrecord import COMPRESSIONS

    options = COMPRESSIONS[compression]
    shards = _write_shards(tmp_path, compression)
    assert set(shards) == {"train", "test"}
    for split, shard in shards.items():
        expected = _expected_records(split)
        assert shard["path"].endswith(f"/{split}/part-00000{options.extension}")
        assert (shard["rows"], shard["positives"]) == (
            len(expected),
            sum(r["label"] for b in _shard_batches() for r in b.to_pylist() if r["split"] == split),
        )
        records = [r.numpy() for r in tf.data.TFRecordDataset(shard["path"], compression_type=options.tf_type)]
        assert records == expected
    assert not list(tmp_path.rglob("*.tmp"))


def test_uncompressed_shards_are_byte_identical_to_tfrecordwriter(tmp_path):
    shard = _write_shards(tmp_path / "ours", "none")["train"]
    reference = str(tmp_path / "reference.tfrecord")
    with tf.io.TFRecordWriter(reference) as writer:
        for record in _expected_records("train"):
            writer.write(record)
    with open(shard["path"], "rb") as ours, open(reference, "rb") as theirs:
        assert ours.read() == theirs.read()


@pytest.mark.parametrize("where", ["length", "length_crc", "data", "data_crc"])
def test_a_flipped_byte_fails_tensorflows_crc_check(tmp_path, where):
    path = _write_shards(tmp_path, "none")["train"]["path"]
    first = _expected_records("train")[0]
    # The second record starts after the first: 8 length + 4 CRC + data + 4 CRC.
    offset = len(first) + 16 + {"length": 1, "length_crc": 9, "data": 12 + 5, "data_crc": 12 + len(first) + 2}[where]
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x10]))
    with pytest.raises(tf.errors.DataLossError):
        for _ in tf.data.TFRecordDataset(path):
            pass


def test_unknown_compression_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown TFRecord compression"):
        _write_shards(tmp_path, "zstd")


def test_spark_writer_honours_the_compression_option(spark, tmp_path):
    import pyarrow as pa

    from pipelines.samples.tfrecord import COMPRESSIONS, write_tfrecords

    rows = pa.Table.from_batches(_shard_batches()).drop_columns(["seq"]).to_pylist()
    df = spark.createDataFrame(rows, "id long, x float, name string, label long, split string").repartition(2)
    features = [f for f in SHARD_FEATURES if f[0] != "seq"]
    with pytest.raises(ValueError, match="unknown TFRecord compression"):
        write_tfrecords(df, features, str(tmp_path / "bad"), compression="lz4")
    shards = write_tfrecords(df, features, str(tmp_path), compression="none").collect()
    assert sum(s["rows"] for s in shards) == len(rows)
    assert all(s["path"].endswith(COMPRESSIONS["none"].extension) for s in shards)
    read = sum(1 for s in shards for _ in tf.data.TFRecordDataset(s["path"]))
    assert read == len(rows)


# ---------------------------------------------------------------- block layout (rows_per_record > 1)
def _block_row(rows, features):
    """The reference block: one row whose every feature is the rows' values one after another,
    a null written as the reader's null value (NaN, "", -1)."""
    from feature_spec import NULL_VALUES

    block = {}
    for name, dtype in features:
        values = [NULL_VALUES[dtype] if row[name] is None else row[name] for row in rows]
        block[name] = [v for value in values for v in (value if isinstance(value, list) else [value])]
    return block


@settings(max_examples=100, deadline=None)
@given(batches(), st.data())
def test_blocks_are_the_row_encoder_record_of_their_rows_concatenated(rows, data):
    from pipelines.samples.example_batch import encode_batch, frame_batch, iter_records

    n = data.draw(st.sampled_from([d for d in range(1, len(rows) + 1) if len(rows) % d == 0]), label="rows_per_record")
    table = _batch_table(rows)
    encoder = ExampleEncoder(BATCH_FEATURES)
    blocks = [rows[k : k + n] for k in range(0, len(rows), n)]
    expected = (
        [encoder.encode(_block_row(block, BATCH_FEATURES)) for block in blocks]
        if n > 1
        else [encoder.encode(row) for row in rows]
    )
    assert list(iter_records(encode_batch(table, BATCH_FEATURES, n))) == expected
    assert frame_batch(table, BATCH_FEATURES, n).data.tobytes() == b"".join(_framed(e) for e in expected)


def test_blocks_need_whole_blocks_of_rows():
    from pipelines.samples.example_batch import encode_batch

    with pytest.raises(ValueError, match="whole records of 4 rows"):
        encode_batch(
            _batch_table(
                [
                    {
                        "i_scalar": 1,
                        "i_list": [],
                        "f_scalar": 0.0,
                        "f_list": [],
                        "s_scalar": "",
                        "s_list": None,
                        "maybe_null": None,
                        "maybe_null_int": None,
                        "maybe_null_text": None,
                    }
                ]
                * 6
            ),
            BATCH_FEATURES,
            4,
        )


def _parsed_blocks(path, tf_type):
    """{feature: flat values of each record} of a shard, and the rows each record holds."""
    import pyarrow as pa

    feature_map = {name: tf.io.RaggedFeature(tf.as_dtype(dtype)) for name, dtype in SHARD_FEATURES}
    records = [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type=tf_type)]
    parsed = tf.io.parse_example(tf.constant(records), feature_map)
    sizes = parsed["id"].row_lengths().numpy().tolist()
    seq = parsed["seq"].flat_values.numpy().reshape(-1, 3).tolist()
    table = {name: parsed[name].flat_values.numpy().tolist() for name in ("id", "x", "label")}
    table["name"] = [v.decode() for v in parsed["name"].flat_values.numpy()]
    return pa.table({**table, "seq": seq}), sizes


@pytest.mark.parametrize("rows_per_record", [4, 7, 64])
def test_block_shards_hold_every_row_once_in_whole_shuffled_blocks(tmp_path, rows_per_record):
    """Blocks never mix splits, carry rows over from one Arrow batch to the next (only a
    shard's last block is shorter), count samples, and hold the rows in a shuffled order."""
    from pipelines.samples.tfrecord import write_partition_shards

    out = list(
        write_partition_shards(
            iter(_shard_batches()), SHARD_FEATURES, str(tmp_path), compression="gzip", rows_per_record=rows_per_record
        )
    )
    shards = {row["split"]: row for batch in out for row in batch.to_pylist()}
    one_per_record = _write_shards(tmp_path / "one", "gzip")
    assert set(shards) == set(one_per_record) == {"train", "test"}
    for split, shard in shards.items():
        expected = [row for batch in _shard_batches() for row in batch.to_pylist() if row["split"] == split]
        reference = one_per_record[split]
        assert (shard["rows"], shard["positives"]) == (reference["rows"], reference["positives"])
        got, sizes = _parsed_blocks(shard["path"], "GZIP")
        whole, tail = divmod(len(expected), rows_per_record)
        assert sizes == [rows_per_record] * whole + ([tail] if tail else [])
        by_id = {row["id"]: row for row in got.to_pylist()}
        assert sorted(by_id) == sorted(row["id"] for row in expected) and len(by_id) == len(expected)
        for row in expected:
            want = dict(row, name="" if row["name"] is None else row["name"], x=float(np.float32(row["x"])))
            assert by_id[row["id"]] == {key: want[key] for key in by_id[row["id"]]}
        assert got.column("id").to_pylist() != [row["id"] for row in expected]  # shuffled before the cut


def test_spark_writer_honours_rows_per_record(spark, tmp_path):
    import pyarrow as pa

    from pipelines.samples.tfrecord import write_tfrecords

    rows = pa.Table.from_batches(_shard_batches()).drop_columns(["seq"]).to_pylist()
    df = spark.createDataFrame(rows, "id long, x float, name string, label long, split string").repartition(2)
    features = [f for f in SHARD_FEATURES if f[0] != "seq"]
    with pytest.raises(ValueError, match="rows_per_record"):
        write_tfrecords(df, features, str(tmp_path / "bad"), rows_per_record=0)
    shards = write_tfrecords(df, features, str(tmp_path), compression="none", rows_per_record=8).collect()
    assert sum(s["rows"] for s in shards) == len(rows)
    assert sum(s["positives"] for s in shards) == sum(r["label"] for r in rows)
    ids = []
    for shard in shards:
        for record in tf.data.TFRecordDataset(shard["path"]).batch(100):
            ids += tf.io.parse_example(record, {"id": tf.io.RaggedFeature(tf.int64)})["id"].flat_values.numpy().tolist()
    assert sorted(ids) == sorted(r["id"] for r in rows)
