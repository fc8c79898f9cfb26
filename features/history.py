"""Point-in-time user history and item statistics.

Every feature of an impression at time `t` uses only events strictly before `t`
and no older than `t - lookback`. Two kinds of event feed the user history:

- a click enters history at the click's own time;
- an impression that was not clicked becomes a "skip" only once its attribution
  window has closed, at `impression ts + window`.

Counts over a lookback window use +1 / -1 events: each event adds 1 at its time
and removes 1 at `time + lookback`, so a running sum over one time-ordered pass
gives `#{events in [t - lookback, t)}` without a range join. Impressions (the
"queries") sort before events of the same second, so an event at `t` itself is
never counted for `t`.
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

QUERY, EVENT = 0, 1


def pad_array(values: Column, length: int) -> Column:
    """The first `length` values, padded on the right with 0 to exactly `length`."""
    head = F.slice(values, 1, length)
    return F.concat(head, F.array_repeat(F.lit(0).cast("long"), F.lit(length) - F.size(head)))


def _most_recent_first(entries: Column, field: str, length: int) -> Column:
    """`field` of the last `length` entries of a chronological array, most recent first."""
    return F.transform(F.slice(F.reverse(entries), 1, length), lambda e: e[field])


def top_tokens(tokens: Column, k: int) -> Column:
    """The k most frequent non-padding tokens (ties broken by the smaller index)."""
    distinct = F.array_distinct(F.filter(tokens, lambda t: t > 0))
    counted = F.transform(distinct, lambda t: F.struct(
        F.size(F.filter(tokens, lambda u: u == t)).alias("n"), t.alias("token")))
    ordered = F.array_sort(counted, lambda a, b: F.when(a["n"] > b["n"], -1).when(a["n"] < b["n"], 1)
                           .when(a["token"] < b["token"], -1).when(a["token"] > b["token"], 1).otherwise(0))
    return F.transform(F.slice(ordered, 1, k), lambda e: e["token"])


def user_history(
    impressions: DataFrame,
    clicks: DataFrame,
    window_seconds: int,
    lookback_seconds: int,
    max_len: int,
    top_genres: int,
    genre_history_len: int,
) -> DataFrame:
    """Impressions with their user's point-in-time history.

    `impressions`: user_id, item_idx, ts, label (plus any other columns, kept).
    `clicks`: user_id, item_idx, ts, genre_idxs (indexed genres of the clicked item).
    Adds: hist_click_items [max_len], hist_skip_items [max_len], hist_click_len,
    hist_skip_len, user_top_genres [top_genres], user_impressions, user_clicks.
    """
    keep = max(max_len, genre_history_len)
    by_user = Window.partitionBy("user_id")

    # Each click carries its own and its predecessors' (ts, item, genres): the last `keep` clicks.
    click_order = by_user.orderBy("ts", "item_idx")
    click_events = clicks.select(
        "user_id", "ts",
        F.row_number().over(click_order).alias("_seq"),
        F.collect_list(F.struct(F.col("ts").alias("ts"), F.col("item_idx").alias("item"),
                                F.col("genre_idxs").alias("genres")))
        .over(click_order.rowsBetween(-(keep - 1), 0)).alias("_clicks"),
        F.lit(1).alias("_d_clicks"), F.lit(0).alias("_d_imps"),
    )
    click_expiry = clicks.select("user_id", (F.col("ts") + lookback_seconds).alias("ts"),
                                 F.lit(-1).alias("_d_clicks"), F.lit(0).alias("_d_imps"))

    # Skips: unclicked impressions, known only when the attribution window has closed.
    skips = impressions.where(F.col("label") == 0).select(
        "user_id", F.col("ts").alias("imp_ts"), (F.col("ts") + window_seconds).alias("ts"), "item_idx")
    skip_order = by_user.orderBy("ts", "item_idx", "imp_ts")
    skip_events = skips.select(
        "user_id", "ts",
        F.row_number().over(skip_order).alias("_seq"),
        F.collect_list(F.struct(F.col("imp_ts").alias("ts"), F.col("item_idx").alias("item")))
        .over(skip_order.rowsBetween(-(max_len - 1), 0)).alias("_skips"),
    )
    imp_events = impressions.select("user_id", "ts", F.lit(1).alias("_d_imps"), F.lit(0).alias("_d_clicks"))
    imp_expiry = impressions.select("user_id", (F.col("ts") + lookback_seconds).alias("ts"),
                                    F.lit(-1).alias("_d_imps"), F.lit(0).alias("_d_clicks"))

    queries = impressions.withColumn("_kind", F.lit(QUERY))
    stream = queries
    for events in (click_events, click_expiry, skip_events, imp_events, imp_expiry):
        stream = stream.unionByName(events.withColumn("_kind", F.lit(EVENT)), allowMissingColumns=True)

    running = by_user.orderBy("ts", "_kind", "_seq").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    stream = stream.select(
        "*",
        F.last("_clicks", ignorenulls=True).over(running).alias("_prior_clicks"),
        F.last("_skips", ignorenulls=True).over(running).alias("_prior_skips"),
        F.sum("_d_imps").over(running).alias("_n_imps"),
        F.sum("_d_clicks").over(running).alias("_n_clicks"),
    ).where(F.col("_kind") == QUERY)

    since = F.col("ts") - lookback_seconds
    empty = F.array()
    prior_clicks = F.filter(F.coalesce(F.col("_prior_clicks"), empty), lambda e: e["ts"] >= since)
    prior_skips = F.filter(F.coalesce(F.col("_prior_skips"), empty), lambda e: e["ts"] >= since)
    recent_clicks = F.slice(F.reverse(prior_clicks), 1, genre_history_len)
    click_items = _most_recent_first(prior_clicks, "item", max_len)
    skip_items = _most_recent_first(prior_skips, "item", max_len)
    clicked_genres = F.flatten(F.transform(recent_clicks, lambda e: F.coalesce(e["genres"], F.array())))

    out = stream.select(
        *impressions.columns,
        pad_array(click_items, max_len).alias("hist_click_items"),
        pad_array(skip_items, max_len).alias("hist_skip_items"),
        F.size(click_items).cast("long").alias("hist_click_len"),
        F.size(skip_items).cast("long").alias("hist_skip_len"),
        pad_array(top_tokens(clicked_genres, top_genres), top_genres).alias("user_top_genres"),
        F.coalesce(F.col("_n_imps"), F.lit(0)).cast("long").alias("user_impressions"),
        F.coalesce(F.col("_n_clicks"), F.lit(0)).cast("long").alias("user_clicks"),
    )
    return out


def item_statistics(
    impressions: DataFrame,
    clicks: DataFrame,
    lookback_seconds: int,
    recent_seconds: int,
) -> DataFrame:
    """Impressions with their item's prior impressions and clicks, over the lookback and a recent window.

    `impressions`: item_id, ts (plus any other columns, kept). `clicks`: item_id, ts.
    Adds item_impressions, item_clicks, item_impressions_recent, item_clicks_recent.
    """
    counters = ("_imps", "_clks", "_imps_recent", "_clks_recent")

    def deltas(df: DataFrame, shift: int, values: dict) -> DataFrame:
        cols = [F.lit(values.get(c, 0)).alias(c) for c in counters]
        return df.select("item_id", (F.col("ts") + shift).alias("ts"), *cols)

    events = [
        deltas(impressions, 0, {"_imps": 1, "_imps_recent": 1}),
        deltas(impressions, lookback_seconds, {"_imps": -1}),
        deltas(impressions, recent_seconds, {"_imps_recent": -1}),
        deltas(clicks, 0, {"_clks": 1, "_clks_recent": 1}),
        deltas(clicks, lookback_seconds, {"_clks": -1}),
        deltas(clicks, recent_seconds, {"_clks_recent": -1}),
    ]
    stream = impressions.withColumn("_kind", F.lit(QUERY))
    for df in events:
        stream = stream.unionByName(df.withColumn("_kind", F.lit(EVENT)), allowMissingColumns=True)
    running = Window.partitionBy("item_id").orderBy("ts", "_kind").rowsBetween(
        Window.unboundedPreceding, Window.currentRow)
    names = {"_imps": "item_impressions", "_clks": "item_clicks",
             "_imps_recent": "item_impressions_recent", "_clks_recent": "item_clicks_recent"}
    stream = stream.select(
        "*", *[F.coalesce(F.sum(c).over(running), F.lit(0)).cast("long").alias(names[c]) for c in counters]
    ).where(F.col("_kind") == QUERY)
    return stream.select(*impressions.columns, *names.values())


def smoothed_ctr(clicks: str, impressions: str, prior: float, smoothing: float) -> Column:
    """(clicks + smoothing * prior) / (impressions + smoothing): the prior when nothing was seen."""
    return ((F.col(clicks) + smoothing * prior) / (F.col(impressions) + smoothing)).cast("double")
