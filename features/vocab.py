"""Vocabularies: fitted on the train split, applied to every split.

Index layout: 0 = padding / missing, then K out-of-vocabulary buckets (1..K), then the tokens from K + 1 in
order of decreasing train count (ties by token). With K = 1 (the default) this is NVTabular's Categorify
layout: 1 = OOV, tokens from 2. With K > 1 an unseen token goes to bucket 1 + (xxhash64(token) mod K), a
stable hash (feature_spec/hashing.py computes it without Spark), so unseen tokens do not all share one row.
The buckets sit before the tokens, so a vocabulary that grows appends rows and moves no existing index.

A vocabulary is a DataFrame `index, token, count`; it is written out by Spark and applied with a join, so
it never has to fit in driver memory.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from features import declared
from features.declared import Declared

PADDING_INDEX = 0
OOV_INDEX = 1
FIRST_TOKEN_INDEX = 2  # with one OOV bucket


def first_token_index(buckets: int = 1) -> int:
    return OOV_INDEX + int(buckets)


def oov_index(token: Column, buckets: int = 1) -> Column:
    """The OOV bucket of string `token`: OOV_INDEX + pmod(xxhash64(token), buckets); OOV_INDEX when one."""
    if int(buckets) == 1:
        return F.lit(OOV_INDEX).cast("long")
    return (F.lit(OOV_INDEX) + F.pmod(F.xxhash64(token.cast("string")), F.lit(int(buckets)))).cast("long")


# Vocabulary name -> the id column it indexes and the model input it becomes.
ID_INDICES = {
    "user_id": ("user_id", "user_idx"),
    "item_id": ("item_id", "item_idx"),
    "position": ("position", "position_idx"),
}


def vocabulary_names(df: DataFrame) -> list[str]:
    """The vocabularies fitted on `df`: the id columns it has, and the genres."""
    return [name for name, (column, _) in ID_INDICES.items() if column in df.columns] + ["genre"]


def vocabulary_tokens(df: DataFrame) -> DataFrame:
    """Rows `name, token` of every vocabulary of `vocabulary_names(df)`."""
    columns = {name: F.col(ID_INDICES[name][0]).cast("string") for name in vocabulary_names(df) if name in ID_INDICES}
    columns["genre"] = F.explode("genres")
    parts = [df.select(F.lit(name).alias("name"), column.alias("token")) for name, column in columns.items()]
    tokens = parts[0]
    for part in parts[1:]:
        tokens = tokens.unionByName(part)
    return tokens


def id_features(vocabulary_names) -> list[Declared]:
    """The model inputs `index_ids` adds, for the vocabularies fitted."""
    return [declared.categorical(index, name) for name, (_, index) in ID_INDICES.items() if name in vocabulary_names]


def index_ids(
    df: DataFrame, vocabularies: dict[str, DataFrame], oov_buckets: dict[str, int] | None = None
) -> DataFrame:
    """Add user_idx, item_idx (and position_idx) through the fitted vocabularies (`oov_buckets`: name -> K,
    1 when absent)."""
    for name, (column, index) in ID_INDICES.items():
        if name in vocabularies:
            df = apply_vocabulary(df, column, vocabularies[name], index, (oov_buckets or {}).get(name, 1))
    return df


def fit_vocabulary(tokens: DataFrame, min_count: int = 1, buckets: int = 1) -> DataFrame:
    """Vocabulary of the single string column `token` (null and empty tokens are ignored)."""
    fitted, _ = fit_vocabularies(tokens.select(F.lit("_").alias("name"), "token"), min_count, {"_": buckets})
    return fitted.drop("name")


def fit_vocabularies(
    tokens: DataFrame,
    min_count: int = 1,
    oov_buckets: dict[str, int] | None = None,
    start_at: dict[str, int] | None = None,
) -> tuple[DataFrame, dict[str, int]]:
    """Several vocabularies at once from rows `name, token`: one count, one sort for all of them.

    Returns (`name, index, token, count`, {name: number of tokens}). Null and empty tokens are ignored.
    A vocabulary's tokens start after its OOV buckets (`oov_buckets`: name -> K, 1 when absent), or at
    `start_at[name]` (the tokens a vocabulary that grows appends after its existing rows).
    """
    counts = (
        tokens.where(F.col("token").isNotNull() & (F.col("token") != ""))
        .groupBy("name", "token")
        .agg(F.count(F.lit(1)).alias("count"))
        .where(F.col("count") >= min_count)
    )
    # A global sort range-partitions the tokens; each partition is then numbered locally and
    # shifted by the sizes of that vocabulary's rows in the partitions before it (a few numbers
    # on the driver), so the index follows the order without pulling a vocabulary into one partition.
    order = [F.col("count").desc(), F.col("token").asc()]
    ranked = counts.orderBy(F.col("name"), *order).withColumn("_part", F.spark_partition_id())
    ranked = ranked.withColumn("_local", F.row_number().over(Window.partitionBy("_part", "name").orderBy(*order)))
    # Materialized once, so the partition sizes and the numbering below come from the same partitioning.
    ranked = ranked.localCheckpoint(eager=True)
    sizes = ranked.groupBy("_part", "name").agg(F.count(F.lit(1)).alias("n")).collect()
    offsets, totals = {}, {}
    for row in sorted(sizes, key=lambda r: r["_part"]):
        offsets[(row["name"], row["_part"])] = totals.get(row["name"], 0)
        totals[row["name"]] = totals.get(row["name"], 0) + row["n"]
    key = F.concat_ws("\u0001", F.col("name"), F.col("_part").cast("string"))
    if offsets:
        offset = F.element_at(
            F.create_map(*[x for (name, part), o in offsets.items() for x in (F.lit(f"{name}\u0001{part}"), F.lit(o))]),
            key,
        )
    else:
        offset = F.lit(0)
    starts = {name: first_token_index(k) for name, k in (oov_buckets or {}).items() if int(k) != 1}
    starts.update(start_at or {})
    first = F.lit(FIRST_TOKEN_INDEX)
    for name, start in sorted(starts.items()):
        first = F.when(F.col("name") == name, F.lit(int(start))).otherwise(first)
    fitted = ranked.select(
        F.col("name"),
        (offset + F.col("_local") - 1 + first).cast("long").alias("index"),
        F.col("token").cast("string").alias("token"),
        F.col("count").cast("long").alias("count"),
    )
    return fitted, totals


def apply_vocabulary(df: DataFrame, column: str, vocab: DataFrame, out_column: str, buckets: int = 1) -> DataFrame:
    """Add `out_column`: the index of `column`'s token, its OOV bucket when unseen, padding when null."""
    lookup = vocab.select(F.col("token").alias("_token"), F.col("index").alias("_index"))
    joined = df.join(lookup, on=F.col(column).cast("string") == F.col("_token"), how="left")
    index = (
        F.when(F.col(column).isNull(), F.lit(PADDING_INDEX))
        .otherwise(F.coalesce(F.col("_index"), oov_index(F.col(column), buckets)))
        .cast("long")
    )
    return joined.withColumn(out_column, index).drop("_token", "_index")


def small_vocabulary_map(vocab: DataFrame, max_size: int = 100_000) -> dict[str, int]:
    """The token -> index dict of a small vocabulary (genres, positions) for array lookups."""
    size = vocab.count()
    if size > max_size:
        raise ValueError(f"vocabulary of {size} tokens is too large to apply as a map (max {max_size})")
    return {row["token"]: int(row["index"]) for row in vocab.collect()}


def index_tokens(tokens: Column, mapping: dict[str, int], buckets: int = 1) -> Column:
    """Map an array of string tokens through a small vocabulary; unseen -> its OOV bucket."""
    if mapping:
        lookup = F.create_map(*[x for token, index in mapping.items() for x in (F.lit(token), F.lit(index))])
    else:
        lookup = F.create_map().cast("map<string,int>")
    return F.transform(tokens, lambda t: F.coalesce(F.element_at(lookup, t), oov_index(t, buckets)).cast("long"))
