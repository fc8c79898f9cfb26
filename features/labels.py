"""Labels from impressions and clicks.

An impression is positive when its user clicks its item within the attribution
window, at or after the impression time. An impression id names a request that
may show several items (a slate, one row per item), so a click that carries an
`impression_id` credits only the impression with the same id, user and item; an
id that names another user's or another item's impression is never followed. A
click without an id credits the latest impression of the same user and item at
or before it. Each click credits at most one impression; a click that credits
none is an orphan (still a user-history event).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from features.validate import impression_identity


def with_impression_key(impressions: DataFrame) -> DataFrame:
    """`impression_key`: the identity validation deduplicates impressions by, so it is unique."""
    return impressions.withColumn("impression_key", impression_identity(impressions))


def attribute_clicks(
    clicks: DataFrame, impressions: DataFrame, window_seconds: int, match_without_id: bool = True
) -> DataFrame:
    """Clicks with `credited_key`: the impression_key of the impression they credit, null for orphans.

    `impressions` must carry `impression_key` (see `with_impression_key`). `match_without_id=False`
    says no click lacks an id, which skips the as-of match (a shuffle of every impression).
    """
    imp = impressions.select("impression_key", "impression_id", "user_id", "item_id", F.col("ts").alias("imp_ts"))

    # Clicks that carry an id: the same id, user and item only, and only inside the window.
    with_id = clicks.where(F.col("impression_id").isNotNull())
    same_impression = [F.col(f"c.{c}") == F.col(f"i.{c}") for c in ("impression_id", "user_id", "item_id")]
    by_id = with_id.alias("c").join(
        imp.where(F.col("impression_id").isNotNull()).alias("i"),
        on=same_impression[0] & same_impression[1] & same_impression[2],
        how="left",
    )
    in_window = (F.col("c.ts") >= F.col("i.imp_ts")) & (F.col("c.ts") - F.col("i.imp_ts") <= window_seconds)
    by_id = by_id.select(
        *[F.col(f"c.{c}") for c in clicks.columns],
        F.when(in_window, F.col("i.impression_key")).alias("credited_key"),
    )

    without_id = clicks.where(F.col("impression_id").isNull())
    if not match_without_id:  # any such click stays, as an orphan: nothing is lost
        return by_id.unionByName(without_id.withColumn("credited_key", F.lit(None).cast("string")))

    # Clicks without an id: as-of match on (user, item). Impressions sort before clicks
    # at the same second, so a click at the impression's own second still credits it.
    events = without_id.select(
        *clicks.columns,
        F.lit(1).alias("_kind"),
        F.lit(None).cast("string").alias("_key"),
        F.lit(None).cast("long").alias("_imp_ts"),
    )
    events = events.unionByName(
        impressions.select(
            "user_id",
            "item_id",
            "ts",
            F.lit(0).alias("_kind"),
            F.col("impression_key").alias("_key"),
            F.col("ts").alias("_imp_ts"),
        ),
        allowMissingColumns=True,
    )
    order = (
        Window.partitionBy("user_id", "item_id")
        .orderBy("ts", "_kind", "_key")
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    events = events.withColumn("_last_key", F.last("_key", ignorenulls=True).over(order)).withColumn(
        "_last_ts", F.last("_imp_ts", ignorenulls=True).over(order)
    )
    by_asof = events.where(F.col("_kind") == 1).select(
        *clicks.columns,
        F.when(F.col("ts") - F.col("_last_ts") <= window_seconds, F.col("_last_key")).alias("credited_key"),
    )
    return by_id.unionByName(by_asof)


def label_impressions(impressions: DataFrame, attributed_clicks: DataFrame) -> DataFrame:
    """Impressions with `label` (1 when at least one click credits them, else 0)."""
    credited = (
        attributed_clicks.where(F.col("credited_key").isNotNull())
        .select(F.col("credited_key").alias("impression_key"))
        .distinct()
        .withColumn("_credited", F.lit(1))
    )
    return (
        impressions.join(credited, on="impression_key", how="left")
        .withColumn("label", F.coalesce(F.col("_credited"), F.lit(0)).cast("long"))
        .drop("_credited")
    )
