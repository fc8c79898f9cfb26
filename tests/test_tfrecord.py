"""The project's Example encoder against TensorFlow's own tf.train.Example."""
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.tfrecord import ExampleEncoder

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOAT32 = st.floats(width=32, allow_nan=False)
TEXT = st.text(max_size=12)
FEATURES = [("i_scalar", "int64"), ("i_list", "int64"), ("f_scalar", "float32"), ("f_list", "float32"),
            ("s_scalar", "string"), ("s_list", "string"), ("maybe_null", "float32")]


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


rows = st.fixed_dictionaries({
    "i_scalar": INT64,
    "i_list": st.lists(INT64, max_size=6),
    "f_scalar": FLOAT32,
    "f_list": st.lists(FLOAT32, max_size=6),
    "s_scalar": TEXT,
    "s_list": st.lists(TEXT, max_size=4),
    "maybe_null": st.one_of(st.none(), FLOAT32),
})


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
    parsed = tf.io.parse_example(tf.constant([data]), {
        "seq": tf.io.FixedLenFeature([3], tf.int64), "x": tf.io.FixedLenFeature([], tf.float32),
        "id": tf.io.FixedLenFeature([], tf.string)})
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
        rows.append({
            "i_scalar": draw(INT64),
            "i_list": draw(st.lists(INT64, min_size=width, max_size=width)),
            "f_scalar": draw(FLOAT32),
            "f_list": draw(st.lists(FLOAT32, min_size=width, max_size=width)),
            "s_scalar": draw(TEXT),
            "s_list": None,
            "maybe_null": draw(st.one_of(st.none(), FLOAT32)),
            "maybe_null_int": draw(st.one_of(st.none(), INT64)),
            "maybe_null_text": draw(st.one_of(st.none(), TEXT)),
        })
    return rows


BATCH_FEATURES = [("i_scalar", "int64"), ("i_list", "int64"), ("f_scalar", "float32"), ("f_list", "float32"),
                  ("s_scalar", "string"), ("maybe_null", "float32"), ("maybe_null_int", "int64"),
                  ("maybe_null_text", "string")]


@settings(max_examples=150, deadline=None)
@given(batches())
def test_batch_encoder_writes_the_same_bytes_as_the_row_encoder_and_tf(rows):
    import pyarrow as pa

    from pipelines.example_batch import encode_batch, iter_records

    table = pa.table({
        "i_scalar": pa.array([r["i_scalar"] for r in rows], pa.int64()),
        "i_list": pa.array([r["i_list"] for r in rows], pa.list_(pa.int64())),
        "f_scalar": pa.array([r["f_scalar"] for r in rows], pa.float32()),
        "f_list": pa.array([r["f_list"] for r in rows], pa.list_(pa.float32())),
        "s_scalar": pa.array([r["s_scalar"] for r in rows], pa.string()),
        "maybe_null": pa.array([r["maybe_null"] for r in rows], pa.float64()),
        "maybe_null_int": pa.array([r["maybe_null_int"] for r in rows], pa.int64()),
        "maybe_null_text": pa.array([r["maybe_null_text"] for r in rows], pa.string()),
    })
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
