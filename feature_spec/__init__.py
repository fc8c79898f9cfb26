"""feature_spec: the only package that knows the `feature_spec.json` format (docs/feature_spec.md).

The contract between the Spark side (which writes the spec) and the TensorFlow side (which
reads it). Pure Python at import time: TensorFlow and pyarrow are imported only by the
functions that need them.

    format.py    constants (format version, roles, kinds, hashed keys), SpecError, the hash
    dtypes.py    the one dtype map: spec dtype -> TensorFlow dtype, Arrow type, null value
    entries.py   constructors (the writing side): categorical, bucketized, sequence,
                 multi_categorical, numeric, label, metadata; vocabulary, split; new_spec (adds the hash)
    validate.py  per-kind rules of an entry, the whole-spec check
    hashing.py   the OOV bucket of an unseen token (xxhash64, as Spark computes it) in plain Python
    access.py    accessors (the reading side): entries by role / kind, numeric names and widths
                 (numeric_fields), splits and their patterns, vocabularies (get_vocabulary) and
                 their tokens, compression, rows_per_record
    parsing.py   tf.io.parse_example feature maps, the serving input signature
    files.py     load_spec(samples_dir)
    dates.py     the layout of a date-partitioned SAMPLES (SAMPLES/date=YYYY-MM-DD/), date ranges

Import names from here (`from feature_spec import load_spec`, or `import feature_spec`): callers hold
the spec itself, a dict, in a variable named `spec`.
"""

from feature_spec.access import (
    all_features,
    check_vocabularies,
    checked_model_inputs,
    compression_type,
    descends_from,
    embedded_fields,
    embedding_table,
    feature,
    features_by_role,
    get_vocabulary,
    is_bucketized_table,
    label_name,
    metadata_entries,
    model_inputs,
    num_examples,
    numeric_fields,
    numeric_names,
    numeric_width,
    oov_index_of,
    rows_per_record,
    sample_settings,
    smoothed_ctr_prior,
    spec_hash,
    split_label_rate,
    split_names,
    split_pattern,
    vocabulary_path,
    vocabulary_tokens,
)
from feature_spec.dates import (
    DATE_PREFIX,
    DAY_COMPLETE,
    DAY_SPLIT,
    day_folder,
    folder_date,
    parse_date,
    parse_date_range,
    range_text,
)
from feature_spec.dtypes import DTYPES, NULL_VALUES, arrow_type, null_value, tf_dtype
from feature_spec.entries import (
    bucketized,
    categorical,
    extended_lineage,
    label,
    metadata,
    multi_categorical,
    new_spec,
    numeric,
    sequence,
    smoothed_ctr,
    split,
    vocabulary,
    with_splits,
)
from feature_spec.files import load_spec, spec_path
from feature_spec.format import (
    EMBEDDED_KINDS,
    FORMAT_VERSION,
    HASH_DEFAULTS,
    HASHED_KEYS,
    INPUT_KINDS,
    LABEL_NAME,
    MULTI_KINDS,
    NUMERIC_KIND,
    OOV_INDEX,
    PADDING_INDEX,
    ROLES,
    SPEC_FILE,
    SpecError,
    compute_spec_hash,
    to_json,
)
from feature_spec.hashing import oov_bucket, xxhash64
from feature_spec.parsing import input_signature, parse_block_features, parse_features
from feature_spec.validate import (
    VOCABULARY_COUNTS,
    VocabularyError,
    check_embedded_fields,
    check_entry,
    check_vocabulary_rows,
    first_token_index,
    oov_bucket_count,
    validate_spec,
)

__all__ = [
    "DATE_PREFIX",
    "DAY_COMPLETE",
    "DAY_SPLIT",
    "day_folder",
    "folder_date",
    "parse_date",
    "parse_date_range",
    "range_text",
    "all_features",
    "split_label_rate",
    "with_splits",
    "DTYPES",
    "EMBEDDED_KINDS",
    "FORMAT_VERSION",
    "HASHED_KEYS",
    "HASH_DEFAULTS",
    "INPUT_KINDS",
    "LABEL_NAME",
    "MULTI_KINDS",
    "NULL_VALUES",
    "NUMERIC_KIND",
    "OOV_INDEX",
    "PADDING_INDEX",
    "ROLES",
    "SPEC_FILE",
    "SpecError",
    "arrow_type",
    "bucketized",
    "categorical",
    "check_embedded_fields",
    "check_entry",
    "check_vocabularies",
    "check_vocabulary_rows",
    "VOCABULARY_COUNTS",
    "VocabularyError",
    "checked_model_inputs",
    "compression_type",
    "compute_spec_hash",
    "embedded_fields",
    "embedding_table",
    "feature",
    "features_by_role",
    "get_vocabulary",
    "input_signature",
    "is_bucketized_table",
    "label",
    "label_name",
    "load_spec",
    "metadata",
    "metadata_entries",
    "model_inputs",
    "multi_categorical",
    "new_spec",
    "null_value",
    "num_examples",
    "numeric",
    "numeric_fields",
    "numeric_names",
    "numeric_width",
    "parse_block_features",
    "parse_features",
    "rows_per_record",
    "sequence",
    "sample_settings",
    "spec_hash",
    "spec_path",
    "smoothed_ctr",
    "smoothed_ctr_prior",
    "split",
    "split_names",
    "split_pattern",
    "tf_dtype",
    "to_json",
    "validate_spec",
    "descends_from",
    "extended_lineage",
    "first_token_index",
    "oov_bucket",
    "oov_bucket_count",
    "oov_index_of",
    "xxhash64",
    "vocabulary",
    "vocabulary_path",
    "vocabulary_tokens",
]
