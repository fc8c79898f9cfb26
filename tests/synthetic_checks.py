"""Test helpers: how much signal the synthetic raw data holds (reads RAW whole: small data only).

`oracle_vs_popularity(raw_dir)` is the generator's difficulty check: the AUC that the true
`p_click` reaches (the ceiling for any model) against a popularity baseline, on the last 30 %
of the time range. Not to be confused with the `calibration` metric of `pipelines.training.metrics`
(mean score / mean label).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipelines.training.metrics import auc


def realized_labels(impressions: pd.DataFrame, clicks: pd.DataFrame, max_delay_s: int = 120 * 60) -> np.ndarray:
    """1 for impressions that got a click: by impression_id, else (null id) the latest impression of
    the same user and item at most `max_delay_s` before the click."""
    with_id = clicks["impression_id"].notna()
    clicked_ids = set(clicks.loc[with_id, "impression_id"])
    anonymous = clicks.loc[~with_id, ["user_id", "item_id", "ts"]].sort_values("ts")
    imps = impressions[["user_id", "item_id", "ts", "impression_id"]].sort_values("ts")
    matched = pd.merge_asof(
        anonymous,
        imps,
        on="ts",
        by=["user_id", "item_id"],
        direction="backward",
        tolerance=max_delay_s,
        allow_exact_matches=True,
    )
    clicked_ids.update(matched["impression_id"].dropna())
    return impressions["impression_id"].isin(clicked_ids).to_numpy()


def oracle_vs_popularity(raw_dir: str, train_fraction: float = 0.7) -> dict:
    """Oracle (`p_click`) AUC vs popularity AUC on the impressions after the first `train_fraction`
    of the impressions' time range; an item's popularity score is its clicks before that cut."""
    imps = pq.read_table(
        f"{raw_dir}/impressions", columns=["user_id", "item_id", "ts", "impression_id", "p_click"]
    ).to_pandas()
    clicks = pq.read_table(f"{raw_dir}/clicks", columns=["user_id", "item_id", "ts", "impression_id"]).to_pandas()
    labels = realized_labels(imps, clicks)
    t_min, t_max = int(imps["ts"].min()), int(imps["ts"].max())
    cut = t_min + train_fraction * (t_max - t_min)
    popularity = clicks.loc[clicks["ts"] < cut].groupby("item_id").size()
    test = (imps["ts"] >= cut).to_numpy()
    pop_score = imps.loc[test, "item_id"].map(popularity).fillna(0).to_numpy()
    return {
        "impressions": len(imps),
        "test_impressions": int(test.sum()),
        "click_rate": float(labels.mean()),
        "mean_p_click": float(imps["p_click"].mean()),
        "oracle_auc": auc(labels[test], imps.loc[test, "p_click"].to_numpy()),
        "popularity_auc": auc(labels[test], pop_score),
    }
