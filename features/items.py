"""Item features: genres (multi-valued), primary genre, release year, configured numerics and
dense vectors.

Items missing from RAW/items are not rejects: their genres are ["unknown"] and
their other attributes null (a null vector is written as zeros, the train mean, by normalization).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features import declared
from features.declared import Declared
from features.history import pad_array
from features.vocab import PADDING_INDEX, index_tokens

UNKNOWN_GENRE = "unknown"


def item_features(
    max_genres: int, numeric_columns: list[str], vector_columns: dict[str, int] | None = None
) -> list[Declared]:
    """The model inputs `genre_features` and `join_item_attributes` add (vector columns: name -> length)."""
    return [
        declared.categorical("item_primary_genre", "genre"),
        declared.multi_categorical("item_genres", "genre", max_genres),
        declared.numeric("release_year"),
        *[declared.numeric(column) for column in numeric_columns],
        *[declared.vector(column, length) for column, length in (vector_columns or {}).items()],
    ]


def join_item_attributes(
    df: DataFrame, items: DataFrame, numeric_columns: list[str], vector_columns: list[str] = ()
) -> DataFrame:
    """Add genres (array<string>), release_year, the numeric and the vector item columns by item_id."""
    attributes = items.select(
        "item_id", F.col("genres").alias("_genres"), "release_year", *numeric_columns, *vector_columns
    )
    joined = df.join(attributes, on="item_id", how="left")
    known = F.col("_genres").isNotNull()
    genres = F.when(known, F.col("_genres")).otherwise(F.array(F.lit(UNKNOWN_GENRE)))
    return joined.withColumn("genres", genres).drop("_genres")


def genre_features(df: DataFrame, genre_index: dict[str, int], max_genres: int, buckets: int = 1) -> DataFrame:
    """Add genre_idxs (all genres, indexed; an unseen genre to its OOV bucket among `buckets`), item_genres
    [max_genres] and item_primary_genre."""
    indexed = df.withColumn("genre_idxs", index_tokens(F.col("genres"), genre_index, buckets))
    return indexed.withColumn("item_genres", pad_array(F.col("genre_idxs"), max_genres)).withColumn(
        "item_primary_genre",
        F.coalesce(F.try_element_at(F.col("genre_idxs"), F.lit(1)), F.lit(PADDING_INDEX)).cast("long"),
    )
