"""Pictures of a run, drawn from its outputs: numpy, pandas, pyarrow and matplotlib, no TensorFlow.

    RUN/plots/training_curves.png   loss and Keras' AUC per epoch, train and valid (metrics.parquet rows);
                                    the best epoch, whose weights the outputs come from, marked
    RUN/plots/roc.png               ROC curves of valid and test, the exact AUC in the legend
    RUN/plots/reliability.png       the reliability diagram of test: mean predicted against observed click
                                    rate per score decile, with the diagonal of a calibrated model

`jobs.train` writes them (`write_run_plots`) from the labels and scores it already holds for the final
metrics, through the same staging as the other RUN outputs (so also on s3:// and from the chief of a
distributed run); `jobs.compare` draws `comparison_figure`; `notebooks/inspect_run.ipynb` reads predictions
with `read_predictions` (only the columns it needs, and at most `max_rows` rows).

Every figure is a `matplotlib.figure.Figure` drawn by the Agg canvas, never through pyplot: nothing here
changes the backend or the global state of a notebook that imports it.

Score deciles (`reliability_table`): the rows sorted by score (ties in their order in the file), the row of
rank r (0-based) of n falls in decile floor(10 r / n). Every decile then holds n/10 rows (one more or less),
and tied scores may straddle two deciles; quantile edges would keep ties together but leave deciles empty
when many scores tie.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.training import metrics as offline_metrics

PLOTS = "plots"
TRAINING_CURVES, ROC, RELIABILITY = "training_curves.png", "roc.png", "reliability.png"
DPI = 100
MAX_ROWS = 5_000_000  # read_labels_scores: above this many rows, a seeded uniform sample of about this many
CURVE_METRICS = (("loss", "loss (binary cross-entropy)"), ("keras_auc", "AUC (Keras, streaming)"))
COMPARED_METRICS = ("auc", "gauc", "pr_auc", "logloss", "calibration")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure, path: str) -> None:
    """Write `figure` as a PNG at `path` (local or scheme://, through a local temporary file)."""
    with storage.written_locally(path) as local:
        figure.savefig(local, format="png", dpi=DPI)


# ---------------------------------------------------------------- numbers


def read_predictions(path: str, columns: list[str], max_rows: int = MAX_ROWS, seed: int = 0):
    """(DataFrame of `columns`, rows in the file) of a predictions Parquet file, read column by column.

    A file of more than `max_rows` rows gives a uniform sample of about `max_rows` of them (each row kept
    with probability max_rows / rows, seeded), read batch by batch, so memory stays bounded by the sample."""
    import pyarrow as pa

    with storage.read_locally(path) as local:
        reader = pq.ParquetFile(local)
        total = reader.metadata.num_rows
        if total <= max_rows:
            return reader.read(columns=columns).to_pandas(), total
        keep, rng = max_rows / total, np.random.default_rng(seed)
        parts = []
        for batch in reader.iter_batches(batch_size=1 << 20, columns=columns):
            parts.append(batch.filter(pa.array(rng.random(batch.num_rows) < keep)))
        return pa.Table.from_batches(parts, schema=parts[0].schema if parts else None).to_pandas(), total


def read_labels_scores(path: str, max_rows: int = MAX_ROWS, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """(labels int64, scores float64, rows in the file) of a predictions Parquet file (read_predictions)."""
    frame, total = read_predictions(path, ["label", "score"], max_rows, seed)
    return frame["label"].to_numpy(np.int64), frame["score"].to_numpy(np.float64), total


def roc_points(labels, scores, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) from (0, 0) to (1, 1), one point per distinct score
    (thresholds in decreasing order), thinned to about `max_points` points for drawing."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_pos = y.sum()
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    order = np.argsort(-s, kind="mergesort")
    last = np.r_[np.flatnonzero(np.diff(s[order])), y.size - 1]  # the last row of each threshold
    tps = np.cumsum(y[order])[last]
    fps = (last + 1) - tps
    fpr, tpr = np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos]
    if fpr.size > max_points:
        keep = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(np.int64))
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


def reliability_table(labels, scores, bins: int = 10) -> pd.DataFrame:
    """One row per score decile (`bins` groups of equal size by rank, module docstring): decile (1 = lowest
    scores), rows, mean_score (predicted click rate), click_rate (observed), min_score, max_score."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = s.size
    columns = ["decile", "rows", "mean_score", "click_rate", "min_score", "max_score"]
    if n == 0:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in ("decile", "rows") else "float64") for c in columns})
    order = np.argsort(s, kind="mergesort")
    decile = np.empty(n, dtype=np.int64)
    decile[order] = np.arange(n, dtype=np.int64) * bins // n
    frame = pd.DataFrame({"decile": decile + 1, "y": y, "s": s})
    table = (
        frame.groupby("decile")
        .agg(
            rows=("y", "size"),
            mean_score=("s", "mean"),
            click_rate=("y", "mean"),
            min_score=("s", "min"),
            max_score=("s", "max"),
        )
        .reset_index()
    )
    return table[columns].astype({"decile": "int64", "rows": "int64"})


# ---------------------------------------------------------------- figures


def training_curves_figure(metrics: pd.DataFrame, title: str = ""):
    """Loss and Keras AUC per epoch, train and valid, from metrics.parquet's rows; the best epoch (the
    epoch of the final rows) dashed."""
    figure = _figure(10, 3.8)
    axes = figure.subplots(1, len(CURVE_METRICS))
    per_epoch = metrics[metrics["split"].isin(["train", "valid"]) & (metrics["epoch"] >= 1)]
    final = metrics[metrics["split"].isin(["valid", "test"]) & metrics["metric"].isin(COMPARED_METRICS)]
    best = int(final["epoch"].iloc[0]) if len(final) and final["epoch"].iloc[0] >= 1 else None
    for ax, (metric, label) in zip(axes, CURVE_METRICS):
        for split, style in (("train", "o-"), ("valid", "s-")):
            rows = per_epoch[(per_epoch["split"] == split) & (per_epoch["metric"] == metric)].sort_values("epoch")
            if len(rows):
                ax.plot(rows["epoch"], rows["value"], style, label=split)
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best}")
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        figure.suptitle(title)
    return figure


def roc_figure(scored: dict, title: str = ""):
    """ROC curves of {name: (labels, scores)}, the exact AUC (pipelines/training/metrics.py) in the legend."""
    figure = _figure(5.2, 5)
    ax = figure.subplots()
    for name, (labels, scores) in scored.items():
        fpr, tpr = roc_points(labels, scores)
        ax.plot(fpr, tpr, label=f"{name}: AUC {offline_metrics.auc(labels, scores):.4f} ({len(labels):,} rows)")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title(title or "ROC")
    return figure


def reliability_figure(table: pd.DataFrame, title: str = ""):
    """The reliability diagram of a `reliability_table`: observed against mean predicted click rate per
    decile (on a calibrated model the points lie on the diagonal), and the deciles' observed rates."""
    figure = _figure(10, 4.2)
    diagram, bars = figure.subplots(1, 2)
    top = float(max(table["mean_score"].max(), table["click_rate"].max(), 1e-3)) * 1.05 if len(table) else 1.0
    diagram.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1, label="calibrated")
    diagram.plot(table["mean_score"], table["click_rate"], "o-", label="score deciles")
    diagram.set_xlim(0, top)
    diagram.set_ylim(0, top)
    diagram.set_xlabel("mean predicted click rate")
    diagram.set_ylabel("observed click rate")
    diagram.grid(alpha=0.3)
    diagram.legend(loc="upper left")
    diagram.set_title("predicted against observed")
    width = 0.4
    bars.bar(table["decile"] - width / 2, table["mean_score"], width, label="predicted")
    bars.bar(table["decile"] + width / 2, table["click_rate"], width, label="observed")
    bars.set_xticks(table["decile"])
    bars.set_xlabel("score decile (1 = lowest scores)")
    bars.set_ylabel("click rate")
    bars.grid(alpha=0.3, axis="y")
    bars.legend(loc="upper left")
    bars.set_title(f"per decile ({int(table['rows'].sum()) if len(table) else 0:,} rows)")
    if title:
        figure.suptitle(title)
    return figure


def best_rows(table: pd.DataFrame) -> dict[str, int]:
    """{metric: position of the best run}: the highest auc, gauc and pr_auc, the lowest logloss, the
    calibration closest to 1 (metrics without a finite value left out)."""
    best = {}
    for metric in COMPARED_METRICS:
        if metric not in table.columns:
            continue
        values = table[metric].astype(float).to_numpy()
        if not np.isfinite(values).any():
            continue
        key = {"logloss": values, "calibration": np.abs(values - 1.0)}.get(metric, -values)
        best[metric] = int(np.nanargmin(np.where(np.isfinite(values), key, np.nan)))
    return best


def _cell(value) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and not np.isfinite(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, (float, np.floating)) else str(value)


def comparison_figure(table: pd.DataFrame, title: str = ""):
    """`table` (one row per run) drawn as a table, numbers to 4 decimals, the best run of each metric of
    COMPARED_METRICS in bold (`best_rows`)."""
    columns = list(table.columns)
    cells = [[_cell(value) for value in row] for row in table.itertuples(index=False)]
    widths = [max(len(str(c)), *(len(r[k]) for r in cells)) if cells else len(str(c)) for k, c in enumerate(columns)]
    figure = _figure(
        max(4.0, 0.095 * sum(w + 3 for w in widths)), 0.5 + 0.32 * (len(cells) + 1) + (0.35 if title else 0)
    )
    ax = figure.subplots()
    ax.axis("off")
    drawn = ax.table(cellText=cells or [["" for _ in columns]], colLabels=columns, loc="center", cellLoc="right")
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(10)
    total = sum(widths)
    for (row, col), cell in drawn.get_celld().items():
        cell.set_width(widths[col] / total)
        if row == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#e8e8e8")
    for metric, position in best_rows(table).items():
        drawn[position + 1, columns.index(metric)].set_text_props(weight="bold")
    if title:
        ax.set_title(title)
    return figure


def write_run_plots(folder: str, metrics: pd.DataFrame, scored: dict, title: str = "") -> list[str]:
    """RUN/plots/: the training curves, the ROC of each split of `scored` ({split: (labels, scores)}) and
    the reliability diagram of test (valid when there is no test); returns the file names written."""
    storage.makedirs(folder)
    written = []

    def save(figure, name):
        save_png(figure, os.path.join(folder, name))
        written.append(name)

    save(training_curves_figure(metrics, f"{title}: training curves" if title else ""), TRAINING_CURVES)
    nonempty = {split: pair for split, pair in scored.items() if len(pair[0])}
    if nonempty:
        save(roc_figure(nonempty, f"{title}: ROC" if title else ""), ROC)
        split = "test" if "test" in nonempty else next(iter(nonempty))
        labels, scores = nonempty[split]
        save(
            reliability_figure(reliability_table(labels, scores), f"{title}: reliability, {split} split".lstrip(": ")),
            RELIABILITY,
        )
    return written
