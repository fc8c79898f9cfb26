"""The one dtype map of the spec: spec dtype -> TensorFlow dtype, Arrow type and null value.

TensorFlow and pyarrow are imported only when a conversion is asked for, so the Spark
side can build specs without them.
"""

from __future__ import annotations

# spec dtype: (tf.dtypes name, pyarrow type alias)
DTYPES = {"int64": ("int64", "int64"), "float32": ("float32", "float32"), "string": ("string", "string")}
# What a missing metadata value parses to when its entry's default is null (JSON has no NaN).
NULL_VALUES = {"float32": float("nan"), "string": "", "int64": -1}


def _check(dtype: str) -> str:
    if dtype not in DTYPES:
        from feature_spec.format import SpecError

        raise SpecError(f"unknown spec dtype {dtype!r}, expected one of {', '.join(DTYPES)}")
    return dtype


def tf_dtype(dtype: str):
    """The `tf.DType` that `tf.io.parse_example` yields for a spec dtype."""
    import tensorflow as tf

    return tf.as_dtype(DTYPES[_check(dtype)][0])


def arrow_type(dtype: str):
    """The `pyarrow.DataType` of a column holding a spec dtype's values."""
    import pyarrow as pa

    return pa.type_for_alias(DTYPES[_check(dtype)][1])


def null_value(dtype: str):
    return NULL_VALUES[_check(dtype)]
