"""The drift of a date-partitioned SAMPLES over its days, from each day's report.json (`drift`, written by a
`--spec` build: pipelines/samples/drift.py): a table and a figure, with pandas and matplotlib only (the
notebook's "Drift over days", no Spark).

One row per day and measure: `date`, `measure` (oov_sample_share, id_share, js_distance, linf_distance,
label_rate_change), `feature`, `value`, `threshold` (None for id_share, which has none).
"""

from __future__ import annotations

import json
import posixpath

import pandas as pd

import feature_spec
from pipelines import storage
from pipelines.training.plots import _figure

COLUMNS = ["date", "measure", "feature", "value", "threshold"]
PANELS = (
    ("oov_sample_share", "samples with an id the fit never saw"),
    ("js_distance", "numeric: Jensen-Shannon distance"),
    ("linf_distance", "categorical: L-infinity distance"),
    ("label_rate_change", "label rate: relative change"),
)


def _rows(day: str, drift: dict) -> list[dict]:
    limits = drift["thresholds"]
    rows = []
    for name, ids in drift["ids"].items():
        rows.append(
            dict(measure="oov_sample_share", feature=name, value=ids["sample_share"], threshold=limits["max_oov_share"])
        )
        rows.append(dict(measure="id_share", feature=name, value=ids["id_share"], threshold=None))
    for name, entry in drift["numeric"].items():
        rows.append(
            dict(measure="js_distance", feature=name, value=entry["js_distance"], threshold=limits["max_js_distance"])
        )
    for name, entry in drift["categorical"].items():
        rows.append(
            dict(
                measure="linf_distance",
                feature=name,
                value=entry["linf_distance"],
                threshold=limits["max_linf_distance"],
            )
        )
    change = drift["label"]["relative_change"]
    rows.append(
        dict(
            measure="label_rate_change",
            feature="label",
            value=None if change is None else abs(change),
            threshold=limits["max_label_rate_change"],
        )
    )
    return [{"date": day, **row} for row in rows]


def drift_table(samples_dir: str) -> pd.DataFrame:
    """Every measure of every day folder whose report.json has a drift section, in date order."""
    rows = []
    root = storage.normalize(samples_dir)
    names = sorted(storage.listdir(root)) if storage.isdir(root) else []
    for name in names:
        day = feature_spec.folder_date(name)
        path = posixpath.join(root, name, "report.json")
        if day is None or not storage.exists(path):
            continue
        drift = json.loads(storage.read_text(path)).get("drift") or {}
        if "thresholds" in drift:
            rows += _rows(day.isoformat(), drift)
    return pd.DataFrame(rows, columns=COLUMNS)


def drift_figure(table: pd.DataFrame, title: str = "", features_per_panel: int = 6):
    """One panel per measure: a line per feature over the days (the `features_per_panel` that reach the
    highest values), the threshold dashed."""
    figure = _figure(11, 7)
    axes = figure.subplots(2, 2, sharex=True).ravel()
    dates = sorted(table["date"].unique())
    for ax, (measure, label) in zip(axes, PANELS):
        part = table[(table["measure"] == measure) & table["value"].notna()]
        highest = part.groupby("feature")["value"].max().sort_values(ascending=False).index[:features_per_panel]
        for feature in highest:
            line = part[part["feature"] == feature].set_index("date")["value"].reindex(dates)
            ax.plot(range(len(dates)), line.to_numpy(dtype=float), marker="o", markersize=3, label=feature)
        limits = part["threshold"].dropna().unique()
        if limits.size:
            ax.axhline(float(limits[0]), color="grey", linestyle="--", linewidth=1, label="threshold")
        ax.set_title(label, fontsize=10)
        ax.set_ylim(bottom=0)
        if len(highest):
            ax.legend(fontsize=7)
    step = max(1, len(dates) // 8)
    for ax in axes[2:]:
        ax.set_xticks(
            range(0, len(dates), step), [dates[i] for i in range(0, len(dates), step)], rotation=30, fontsize=8
        )
    if title:
        figure.suptitle(title)
    return figure


def drift_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per day: each measure's largest value (with its feature) and how many measures exceed their
    threshold."""
    rows = []
    for day, part in table.groupby("date", sort=True):
        row = {"date": day}
        for measure, _ in PANELS:
            mine = part[(part["measure"] == measure) & part["value"].notna()]
            top = mine.loc[mine["value"].idxmax()] if len(mine) else None
            row[measure] = None if top is None else float(top["value"])
            row[f"{measure} of"] = None if top is None else top["feature"]
        over = part["threshold"].notna() & (part["value"] > part["threshold"])
        row["exceeded"] = int(over.sum())
        rows.append(row)
    return pd.DataFrame(rows).set_index("date") if rows else pd.DataFrame()
