"""Dense item vectors (`items.vector_columns`): validation, the user's point-in-time mean vector,
per-dimension normalization, on a few hand-written rows with the results worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest
from chispa import assert_df_equality

from features import history, normalize, validate
from features import items as item_features
from pipelines.config import ConfigError


# ---------------------------------------------------------------- validation
def test_item_vectors_are_parsed_and_bad_ones_rejected_with_their_reason(spark):
    rows = [
        ("i1", "Drama", [1.0, 2.0]),
        ("i2", "Drama", [1.0, 2.0, 3.0]),  # another length
        ("i3", "Drama", [float("nan"), 1.0]),
        ("i4", "Drama", [float("inf"), 1.0]),
        ("i5", "Drama", None),  # no vector: kept, as an item without one
        ("i6", "Drama", [1.0, None]),  # a value that is not a number
        ("i7", "Drama", [5.0]),  # the first i7 has a bad vector: the second copy is the one kept
        ("i7", "Comedy", [7.0, 8.0]),
        ("i1", "Comedy", [0.0, 0.0]),  # a repeat of a valid item
    ]
    df = spark.createDataFrame(rows, "item_id string, genres string, item_vec array<double>")
    out = validate.normalize_items(df, [], {"item_vec": 2})
    got = [(r["item_id"], r["reject_reason"], r["item_vec"]) for r in out.collect()]
    assert out.schema["item_vec"].dataType.simpleString() == "array<float>"
    reasons = {(item, reason) for item, reason, _ in got}
    assert reasons == {
        ("i1", None),
        ("i1", "duplicate_item"),
        ("i2", "wrong_vector_length"),
        ("i3", "non_finite_vector"),
        ("i4", "non_finite_vector"),
        ("i5", None),
        ("i6", "unparsable_vector"),
        ("i7", "wrong_vector_length"),
        ("i7", None),
    }
    kept = {item: vec for item, reason, vec in got if reason is None}
    assert kept == {"i1": [1.0, 2.0], "i5": None, "i7": [7.0, 8.0]}
    assert out.count() == len(rows)  # nothing is lost


def test_csv_vectors_are_strings_of_numbers(spark):
    rows = [("i1", "[0.5, -1]"), ("i2", "0.5|-1"), ("i3", " 0.5 -1 "), ("i4", "0.5|x"), ("i5", None)]
    df = spark.createDataFrame([(*row, "Drama") for row in rows], "item_id string, item_vec string, genres string")
    out = validate.normalize_items(df, [], {"item_vec": 2})
    got = {r["item_id"]: (r["reject_reason"], r["item_vec"]) for r in out.collect()}
    assert got == {
        "i1": (None, [0.5, -1.0]),
        "i2": (None, [0.5, -1.0]),
        "i3": (None, [0.5, -1.0]),
        "i4": ("unparsable_vector", [0.5, None]),
        "i5": (None, None),
    }


def test_vector_length_is_the_most_frequent_one_and_must_be_known(spark):
    df = spark.createDataFrame(
        [("i1", [1.0, 2.0], None), ("i2", [1.0, 2.0], None), ("i3", [1.0], [1.0]), ("i4", None, [2.0, 3.0])],
        "item_id string, a array<double>, b array<double>",
    )
    # a: length 2 twice, 1 once; b: 1 and 2 once each, a tie: the smaller.
    assert validate.vector_lengths(df, ["a", "b"]) == {"a": 2, "b": 1}
    empty = spark.createDataFrame([("i1", None)], "item_id string, c array<double>")
    with pytest.raises(validate.SchemaError, match="hold no vector.*items.vector_columns"):
        validate.vector_lengths(empty, ["c"])
    with pytest.raises(validate.SchemaError, match="vector column 'd' named in the config is missing"):
        validate.vector_lengths(empty, ["d"])
    wrong = spark.createDataFrame([("i1", True)], "item_id string, e boolean")
    with pytest.raises(validate.SchemaError, match="column 'e' has type boolean, expected an array of numbers"):
        validate.vector_lengths(wrong, ["e"])


def test_items_join_carries_the_vector_and_missing_items_have_none(spark):
    items = spark.createDataFrame(
        [("i1", ["Drama"], 1999, [1.0, 2.0])], "item_id string, genres array<string>, release_year int, v array<float>"
    )
    imps = spark.createDataFrame([("i1",), ("i9",)], "item_id string")
    out = item_features.join_item_attributes(imps, items, [], ["v"])
    assert {r["item_id"]: r["v"] for r in out.collect()} == {"i1": [1.0, 2.0], "i9": None}
    assert [d.name for d in item_features.item_features(2, [], {"v": 2}) if d.is_vector] == ["v"]


# ---------------------------------------------------------------- the user's mean vector
def test_user_vector_is_the_mean_of_the_last_clicked_items_vectors_strictly_before(spark):
    imps = spark.createDataFrame(
        [("u1", 5, 100, 0), ("u1", 5, 120, 0), ("u1", 5, 200, 0), ("u1", 5, 215, 0), ("u1", 5, 1150, 0)],
        "user_id string, item_idx long, ts long, label long",
    )
    clicks = spark.createDataFrame(
        [
            ("u1", 6, 108, [2], [1.0, 2.0]),
            ("u1", 4, 120, [3], None),  # an item without a vector: in the history, not in the mean
            ("u1", 8, 205, [4], [3.0, 6.0]),
            ("u1", 9, 210, [4], [5.0, 10.0]),
        ],
        "user_id string, item_idx long, ts long, genre_idxs array<long>, v array<float>",
    )
    out = history.user_history(
        imps,
        clicks,
        window_seconds=10,
        lookback_seconds=1000,
        max_len=2,
        top_genres=1,
        genre_history_len=3,
        vector_columns={"v": 2},
    )
    expected = spark.createDataFrame(
        [
            (100, [0, 0], None, 0),  # nothing before
            (120, [6, 0], [1.0, 2.0], 1),  # the click at 120 itself does not count
            (200, [4, 6], [1.0, 2.0], 1),  # item 4 has no vector: the mean of one
            (215, [9, 8], [4.0, 8.0], 2),  # the last max_len = 2 clicks only: 6 is left out
            (1150, [9, 8], [4.0, 8.0], 2),  # lookback 1000: clicks at or after 150
        ],
        "ts long, hist_click_items array<bigint>, user_v array<float>, user_v_len bigint",
    )
    assert_df_equality(
        out.select("ts", "hist_click_items", "user_v", "user_v_len"),
        expected,
        ignore_row_order=True,
        ignore_nullable=True,
    )
    names = [d.name for d in history.user_history_features(2, 1, {"v": 2})]
    assert names[-2:] == ["user_v", "user_v_len"] and out.columns[-2:] == names[-2:]


# ---------------------------------------------------------------- normalization
def test_vectors_are_normalized_per_dimension_on_train(spark):
    train = spark.createDataFrame(
        [([1.0, 10.0],), ([3.0, 10.0],), (None,)], "v array<float>"
    )  # dim 0: mean 2, std 1; dim 1: constant -> std 1
    stats = normalize.fit_normalization(train, ["v"], [], {"v": 2})
    assert stats == {"v": {"log1p": False, "mean": [2.0, 10.0], "std": [1.0, 1.0]}}
    other = spark.createDataFrame([([4.0, 12.0],), (None,)], "v array<float>")
    got = [r["v"] for r in normalize.apply_normalization(other, stats).collect()]
    assert got == [[2.0, 2.0], [0.0, 0.0]]  # a null vector: zeros, the train mean
    with pytest.raises(ValueError, match="log1p names vector feature"):
        normalize.fit_normalization(train, ["v"], ["v"], {"v": 2})


def test_vector_statistics_count_every_row_of_a_repeated_vector(spark):
    # An item's vector repeats on each of its impressions: the rows are counted per distinct vector.
    rows = [([0.0, 1.0],), ([1.0, 2.0],), ([2.0, 6.0],), ([2.0, 6.0],), ([2.0, 6.0],)]
    train = spark.createDataFrame(rows, "v array<float>")
    stats = normalize.fit_normalization(train, ["v"], [], {"v": 2})["v"]
    # dim 0: 0, 1, 2, 2, 2 -> mean 7/5, E[x^2] = 13/5; dim 1: 1, 2, 6, 6, 6 -> mean 21/5, E[x^2] = 113/5
    assert stats["mean"] == pytest.approx([7 / 5, 21 / 5])
    assert stats["std"] == pytest.approx([math.sqrt(13 / 5 - 49 / 25), math.sqrt(113 / 5 - 441 / 25)])


def test_config_errors_name_the_vector_feature(spark):
    from pipelines.config import load_config
    from pipelines.config_schema import build_config, validate_build_config
    from pipelines.samples.model_inputs import vector_columns

    config = load_config("build_samples", None, ["items.vector_columns={v: 0}"])
    with pytest.raises(ConfigError, match="length of 'v' must be a positive integer"):
        validate_build_config(config)
    config = load_config("build_samples", None, ["items.vector_columns=[v]", "items.numeric_columns=[v]"])
    with pytest.raises(ConfigError, match="must not be among items.numeric_columns"):
        validate_build_config(config)
    assert vector_columns(build_config(load_config("build_samples", None, ["items.vector_columns=[v]"]))) == {"v": None}
    assert vector_columns(build_config(load_config("build_samples", None, ["items.vector_columns={v: 8}"]))) == {"v": 8}


# ---------------------------------------------------------------- build_samples with item vectors
@pytest.fixture(scope="module")
def vector_build(spark, tmp_path_factory):
    """Generated data with 4-d item vectors, two items without one and two bad vector rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from feature_spec import load_spec
    from pipelines.config import load_config
    from pipelines.samples.build_samples import build_samples
    from sources.synthetic import generate
    from tests.samples_io import read_all

    base = tmp_path_factory.mktemp("vectors")
    raw = base / "raw"
    generate(str(raw), users=80, items=60, days=8, impressions=6000, seed=5, item_vector_dim=4)
    path = raw / "items" / "part-00000.parquet"
    items = pq.read_table(path).to_pandas()
    items.loc[items.item_id.isin(["i00001", "i00002"]), "item_vec"] = None
    bad = items[items.item_id == "i00003"].assign(item_vec=[[float("inf"), 0.0, 0.0, 0.0]])
    longer = items[items.item_id == "i00004"].assign(item_vec=[[1.0, 2.0, 3.0]], item_id="i_unshown")
    # The inf copy of i00003 comes first in file order: the valid copy after it is the one kept.
    items = pd.concat([bad, items, longer], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(items, preserve_index=False), path)
    out = str(base / "samples")
    config = load_config(
        "build_samples", None, ["items.vector_columns=[item_vec]", "spark.output_partitions=2", "history.max_len=3"]
    )
    report = build_samples(spark, str(raw), out, config)
    return {"report": report, "spec": load_spec(out), "samples": read_all(out), "items": items, "dir": out}


@pytest.mark.slow
def test_build_reports_the_vector_rejects_and_length(vector_build):
    report = vector_build["report"]
    assert report["rejected"]["items"] == {"non_finite_vector": 1, "wrong_vector_length": 1}
    assert report["item_vector_lengths"] == {"item_vec": 4}


@pytest.mark.slow
def test_spec_has_the_item_and_user_vectors_normalized_per_dimension(vector_build):
    from feature_spec import feature

    spec = vector_build["spec"]
    for name in ("item_vec", "user_item_vec"):
        entry = feature(spec, name)
        assert (entry["kind"], entry["dtype"], entry["shape"]) == ("numeric", "float32", [4])
        assert len(entry["normalization"]["mean"]) == 4 and entry["normalization"]["log1p"] is False
    # The user's vector takes the item vector's statistics: it is the mean of normalized item vectors.
    assert feature(spec, "user_item_vec")["normalization"] == feature(spec, "item_vec")["normalization"]
    assert feature(spec, "user_item_vec_len")["shape"] == []
    assert feature(spec, "user_item_vec_len")["normalization"]["log1p"] is True


def _raw_vectors(values, entry):
    norm = entry["normalization"]
    return np.stack(values) * np.asarray(norm["std"]) + np.asarray(norm["mean"])


@pytest.mark.slow
def test_item_vectors_in_the_samples_are_the_raw_ones_normalized_with_train_statistics(vector_build):
    from feature_spec import feature

    samples, spec = vector_build["samples"], vector_build["spec"]
    items = vector_build["items"].drop_duplicates("item_id", keep="last").set_index("item_id")["item_vec"]
    entry = feature(spec, "item_vec")
    has_vector = samples.item_id.map(lambda i: items.get(i) is not None)
    assert (~has_vector).any() and has_vector.mean() > 0.9
    got = _raw_vectors(samples.loc[has_vector, "item_vec"], entry)
    want = np.stack(samples.loc[has_vector, "item_id"].map(items))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Items without a vector: zeros, the train mean.
    assert np.all(np.stack(samples.loc[~has_vector, "item_vec"]) == 0)
    # The statistics are the train rows' mean and population std, per dimension.
    train = np.stack(samples.loc[has_vector & (samples.split == "train"), "item_id"].map(items))
    np.testing.assert_allclose(entry["normalization"]["mean"], train.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(entry["normalization"]["std"], train.std(axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_user_vector_is_the_mean_of_its_click_history_items_vectors(vector_build):
    import pyarrow.parquet as pq

    from feature_spec import feature
    from tests.samples_io import raw_value

    samples, spec = vector_build["samples"], vector_build["spec"]
    vocabulary = pq.read_table(f"{vector_build['dir']}/vocab/item_id").to_pandas().set_index("index")["token"]
    items = vector_build["items"].drop_duplicates("item_id", keep="last").set_index("item_id")["item_vec"]
    lengths = np.rint(raw_value(spec, "user_item_vec_len", samples["user_item_vec_len"])).astype(int)
    user = _raw_vectors(samples["user_item_vec"], feature(spec, "user_item_vec"))
    checked = 0
    for row, clicked_items, length in zip(range(len(samples)), samples["hist_click_items"], lengths):
        clicked = [int(i) for i in clicked_items if i > 0]
        if not clicked or min(clicked) < 2:  # OOV items are ambiguous: their token is unknown
            continue
        vectors = [items.get(vocabulary[i]) for i in clicked]
        vectors = [v for v in vectors if v is not None]
        assert length == len(vectors)
        if vectors:
            np.testing.assert_allclose(user[row], np.mean(vectors, axis=0), rtol=1e-4, atol=1e-4)
            checked += 1
    assert checked > 1000
    no_history = lengths == 0
    assert no_history.any() and np.all(np.stack(samples.loc[no_history, "user_item_vec"]) == 0)


# ---------------------------------------------------------------- what the vectors are worth
# Items behind a small vocabulary: with min_count 30, about 70 % of the catalog is OOV (the popular
# items keep their ids). Measured once: dcn test AUC 0.735 with the vectors, 0.694 without.
OOV_WORLD = {"users": 200, "items": 1500, "days": 14, "impressions": 60_000, "seed": 11, "item_vector_dim": 16}
OOV_MIN_COUNT = 30
MIN_AUC_GAIN = 0.02


@pytest.mark.slow
def test_item_vectors_beat_the_same_model_without_them_when_ids_are_mostly_oov(spark, tmp_path):
    import json

    from jobs.train import main as train_main
    from pipelines.config import load_config
    from pipelines.samples.build_samples import build_samples
    from sources.synthetic import generate

    raw = str(tmp_path / "raw")
    generate(raw, **OOV_WORLD)
    aucs = {}
    for name, sets in (("with", ["items.vector_columns=[item_vec]"]), ("without", [])):
        samples = str(tmp_path / f"samples_{name}")
        config = load_config(
            "build_samples", None, ["spark.output_partitions=2", f"vocab.min_count={OOV_MIN_COUNT}", *sets]
        )
        report = build_samples(spark, raw, samples, config)
        assert report["vocabulary_sizes"]["item_id"] - 2 < 0.4 * OOV_WORLD["items"]
        run = tmp_path / f"run_{name}"
        args = ["--samples", samples, "--model", "dcn", "--output", str(run), "--epochs", "6"]
        sets = ["verbose=0", "outputs.embeddings=false", "params.learning_rate=0.003", "params.hidden_units=[64,32]"]
        assert train_main(args + [x for s in sets for x in ("--set", s)]) == 0
        aucs[name] = json.loads((run / "run.json").read_text())["metrics"]["test"]["auc"]
    assert aucs["with"] >= aucs["without"] + MIN_AUC_GAIN, aucs


def test_a_vector_named_for_log1p_or_buckets_fails_before_any_work(spark, tmp_path):
    from pipelines.config import load_config
    from pipelines.samples.build_samples import build_samples

    (tmp_path / "raw").mkdir()  # nothing is read: the config is refused first
    for sets in (["bucketize.features=[item_vec]"], ["normalize.log1p=[user_item_vec]"]):
        config = load_config("build_samples", None, ["items.vector_columns=[item_vec]", *sets])
        with pytest.raises(ConfigError, match="neither log1p'd nor bucketized"):
            build_samples(spark, str(tmp_path / "raw"), str(tmp_path / "samples"), config)
        assert not (tmp_path / "samples").exists()
