"""How far a day's samples have moved from the fit of the spec they were built with (report.json's `drift`).

A build that fits writes the train split's profile to `fit_profile.json` beside its spec:
- per scalar numeric feature, its histogram over `drift.histogram_bins` quantile bins of the train values,
  before log1p and the z-score (bin 0: no value; bin k: 1 + #{edges <= x}, as normalize.bucket_index);
- per categorical feature (one index, or a list of indices such as the item's genres, padding left out),
  the shares of its `drift.top_values` most frequent train values, the rest lumped as `other`;
- the train rows and label rate.

A `--spec` build measures the same on its own samples, inside the aggregation that counts its OOV tokens
(no pass of its own), plus one narrow count of distinct ids, and reports against the profile:
- per id vocabulary, the share of samples whose id the fit never saw, and the share of the distinct ids;
- per numeric feature, the Jensen-Shannon distance of the two histograms (base 2: 0 the same, 1 disjoint);
- per categorical feature, the L-infinity distance of the shares, TFDV's measure, over the fit's top values
  and `other` (a new value that takes a large share shows as a rise of `other`);
- the label rate against the fit's.
Each is compared with its threshold (`drift.max_*` in the config). The report lists what exceeds one and
recommends `--extend` when only new ids do, a refit when a distribution moved.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
from collections.abc import Sequence

import numpy as np
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

import feature_spec
from features import normalize, vocab
from features.declared import Declared
from pipelines import storage

log = logging.getLogger("build_samples")

PROFILE_FILE = "fit_profile.json"
ID_VOCABULARIES = ("user_id", "item_id")  # the vocabularies whose new tokens --extend appends
_SEP = "\u0001"  # in aggregate names: no feature name holds it


# ---------------------------------------------------------------- distances (plain Python)


def js_distance(p: Sequence[float], q: Sequence[float]) -> float | None:
    """The Jensen-Shannon distance of two histograms over the same bins (counts or shares): the square root of
    the JS divergence in base 2, so 0 for the same shares and 1 for disjoint ones. None when one is empty."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if p.shape != q.shape:
        raise ValueError(f"histograms of {p.size} and {q.size} bins")
    if p.sum() <= 0 or q.sum() <= 0:
        return None
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a):
        held = a > 0
        return float(np.sum(a[held] * np.log2(a[held] / m[held])))

    return math.sqrt(max((kl(p) + kl(q)) / 2, 0.0))


def linf_distance(p: Sequence[float], q: Sequence[float]) -> float:
    """The largest difference between two lists of shares of the same values."""
    if len(p) != len(q):
        raise ValueError(f"{len(p)} and {len(q)} shares")
    return max((abs(a - b) for a, b in zip(p, q)), default=0.0)


def with_other(shares: Sequence[float]) -> list[float]:
    """The shares of the top values, then the share of every other value."""
    return [*shares, max(0.0, 1.0 - sum(shares))]


# ---------------------------------------------------------------- what is measured, on any samples


def profiled_features(declared: list[Declared]) -> tuple[list[str], dict[str, bool]]:
    """(the scalar numeric features, the categorical features -> whether each is a list of indices)."""
    numeric = [d.name for d in declared if d.kind == "numeric" and not d.is_vector]
    categorical = {
        d.name: d.kind == "multi_categorical" for d in declared if d.kind in ("categorical", "multi_categorical")
    }
    return numeric, categorical


def _value_count(name: str, is_list: bool, value: int) -> Column:
    if is_list:
        return F.sum(F.size(F.filter(F.col(name), lambda x: x == F.lit(value))))
    return F.count_if(F.col(name) == F.lit(value))


def _total(name: str, is_list: bool) -> Column:
    if is_list:  # padding (index 0) is no value
        return F.sum(F.size(F.filter(F.col(name), lambda x: x > F.lit(vocab.PADDING_INDEX))))
    return F.count(F.lit(1))


def aggregates(profile: dict) -> list[Column]:
    """Aggregate columns that measure, over any samples (before the transform, with item_ctr), what the
    profile recorded: each numeric feature's rows per bin, each categorical feature's rows (or list entries)
    per top value and in all, the rows and the positives."""
    columns = [F.count(F.lit(1)).alias(f"rows{_SEP}"), F.sum(F.col("label").cast("long")).alias(f"positives{_SEP}")]
    for name, entry in profile["numeric"].items():
        index = normalize.bucket_index(name, entry["edges"])
        columns += [F.count_if(index == F.lit(k)).alias(f"n{_SEP}{name}{_SEP}{k}") for k in range(len(entry["counts"]))]
    for name, entry in profile["categorical"].items():
        is_list = entry["list"]
        columns.append(_total(name, is_list).alias(f"t{_SEP}{name}"))
        columns += [
            _value_count(name, is_list, value).alias(f"c{_SEP}{name}{_SEP}{i}")
            for i, value in enumerate(entry["values"])
        ]
    return columns


def measured(row, profile: dict) -> dict:
    """What `aggregates` measured, read from the row of the aggregation that held them."""
    numeric = {
        name: [int(row[f"n{_SEP}{name}{_SEP}{k}"] or 0) for k in range(len(entry["counts"]))]
        for name, entry in profile["numeric"].items()
    }
    categorical = {}
    for name, entry in profile["categorical"].items():
        total = int(row[f"t{_SEP}{name}"] or 0)
        counts = [int(row[f"c{_SEP}{name}{_SEP}{i}"] or 0) for i in range(len(entry["values"]))]
        categorical[name] = {"total": total, "shares": [c / total for c in counts] if total else [0.0] * len(counts)}
    return {
        "rows": int(row[f"rows{_SEP}"]),
        "positives": int(row[f"positives{_SEP}"] or 0),
        "numeric": numeric,
        "categorical": categorical,
    }


# ---------------------------------------------------------------- the fit's profile


def _top_values(train: DataFrame, categorical: dict[str, bool], top: int) -> dict[str, list[int]]:
    """Per categorical feature, its `top` most frequent train values (ties: the smaller index first)."""
    if not categorical:
        return {}
    parts = []
    for name, is_list in categorical.items():
        if is_list:
            values = F.explode(F.filter(F.col(name), lambda x: x > F.lit(vocab.PADDING_INDEX)).cast("array<long>"))
        else:
            values = F.col(name).cast("long")
        parts.append(train.select(F.lit(name).alias("feature"), values.alias("value")))
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    rank = F.row_number().over(Window.partitionBy("feature").orderBy(F.desc("count"), F.asc("value")))
    rows = (
        union.groupBy("feature", "value")
        .agg(F.count(F.lit(1)).alias("count"))
        .withColumn("rank", rank)
        .where(F.col("rank") <= top)
        .collect()
    )
    values: dict[str, list[tuple[int, int]]] = {name: [] for name in categorical}
    for row in rows:
        values[row["feature"]].append((int(row["rank"]), int(row["value"])))
    return {name: [value for _, value in sorted(ranked)] for name, ranked in values.items()}


def fit_profile(train: DataFrame, declared: list[Declared], bins: int, top: int, counted=None) -> dict:
    """The profile of the train rows (before the transform, item_ctr included): the numeric features'
    quantile edges (exact, as the bucket boundaries are fitted; `counted`: their normalize.value_counts when
    the caller has them), the categorical features' top values, then one aggregation that measures both."""
    numeric, categorical = profiled_features(declared)
    edges = normalize.fit_bucket_boundaries(train, numeric, bins, counted=counted) if numeric else {}
    profile = {
        "numeric": {name: {"edges": edges[name], "counts": [0] * (len(edges[name]) + 2)} for name in numeric},
        "categorical": {
            name: {"list": is_list, "values": values}
            for (name, is_list), values in zip(categorical.items(), _top_values(train, categorical, top).values())
        },
    }
    fitted = measured(train.agg(*aggregates(profile)).collect()[0], profile)
    for name, counts in fitted["numeric"].items():
        profile["numeric"][name]["counts"] = counts
    for name, entry in fitted["categorical"].items():
        profile["categorical"][name].update(total=entry["total"], shares=entry["shares"])
    profile["rows"], profile["positives"] = fitted["rows"], fitted["positives"]
    profile["label_rate"] = fitted["positives"] / fitted["rows"] if fitted["rows"] else None
    return profile


def write_profile(folder: str, profile: dict, spec: dict) -> None:
    recorded = {"spec_hash": feature_spec.spec_hash(spec), **profile}
    storage.write_text(posixpath.join(folder, PROFILE_FILE), json.dumps(recorded, indent=1))


def load_profile(spec_dir: str, spec: dict) -> tuple[dict | None, str | None]:
    """(the profile written with `spec` in `spec_dir`, None) or (None, why there is none)."""
    path = posixpath.join(storage.normalize(spec_dir), PROFILE_FILE)
    if not storage.exists(path):
        return None, f"{path} is missing (a spec fitted before drift reports): refit to get one"
    profile = json.loads(storage.read_text(path))
    if profile.get("spec_hash") != feature_spec.spec_hash(spec):
        return None, f"{path} was written with spec hash {profile.get('spec_hash')}, not this spec's"
    return profile, None


# ---------------------------------------------------------------- a day against the profile


def distinct_oov_ids(samples: DataFrame, oov_buckets: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Per id vocabulary of the samples: (its distinct ids, those the fit never saw), in one aggregation."""
    parts = {}
    for name in ID_VOCABULARIES:
        column, index = vocab.ID_INDICES[name]
        if index not in samples.columns:
            continue
        first = vocab.first_token_index(int(oov_buckets.get(name, 1)))
        unseen = F.when((F.col(index) >= vocab.OOV_INDEX) & (F.col(index) < first), F.col(column))
        parts[name] = (F.count_distinct(F.col(column)), F.count_distinct(unseen))
    if not parts:
        return {}
    row = samples.agg(
        *[c.alias(f"{name}{_SEP}{i}") for name, pair in parts.items() for i, c in enumerate(pair)]
    ).collect()[0]
    return {name: (int(row[f"{name}{_SEP}0"]), int(row[f"{name}{_SEP}1"])) for name in parts}


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def report_drift(profile: dict, day: dict, oov: dict, distinct: dict, thresholds: dict) -> dict:
    """report.json's `drift`: the day (`measured`), its OOV counts (report.oov_counts) and distinct ids
    (distinct_oov_ids) against the profile, each measure beside its threshold; `exceeded` lists the measures
    above theirs, and `recommendation` says what to do about them."""
    exceeded = []

    def check(kind: str, feature: str, value, threshold_key: str):
        if value is not None and value > thresholds[threshold_key]:
            exceeded.append(
                {"measure": kind, "feature": feature, "value": value, "threshold": thresholds[threshold_key]}
            )

    ids = {}
    for name, (ids_seen, ids_new) in distinct.items():
        counts = oov.get(name, {})
        ids[name] = {
            "sample_share": counts.get("oov_rate"),
            "distinct_ids": ids_seen,
            "new_ids": ids_new,
            "id_share": _share(ids_new, ids_seen),
        }
        check("oov_sample_share", name, ids[name]["sample_share"], "max_oov_share")
    numeric = {}
    for name, entry in profile["numeric"].items():
        distance = js_distance(entry["counts"], day["numeric"][name])
        numeric[name] = {
            "js_distance": None if distance is None else round(distance, 6),
            "counts": day["numeric"][name],
        }
        check("js_distance", name, numeric[name]["js_distance"], "max_js_distance")
    categorical = {}
    for name, entry in profile["categorical"].items():
        ours, theirs = with_other(day["categorical"][name]["shares"]), with_other(entry["shares"])
        gaps = [abs(a - b) for a, b in zip(ours, theirs)]
        widest = int(np.argmax(gaps)) if gaps else None
        categorical[name] = {
            "linf_distance": round(max(gaps), 6) if day["categorical"][name]["total"] else None,
            "widest": None
            if widest is None
            else ("other" if widest == len(entry["values"]) else entry["values"][widest]),
        }
        check("linf_distance", name, categorical[name]["linf_distance"], "max_linf_distance")
    rate = day["positives"] / day["rows"] if day["rows"] else None
    fit_rate = profile.get("label_rate")
    change = rate / fit_rate - 1 if rate is not None and fit_rate else None
    label = {"rate": rate, "fit_rate": fit_rate, "relative_change": None if change is None else round(change, 6)}
    check("label_rate_change", "label", None if change is None else abs(change), "max_label_rate_change")
    return {
        "ids": ids,
        "numeric": numeric,
        "categorical": categorical,
        "label": label,
        "thresholds": dict(thresholds),
        "exceeded": exceeded,
        "recommendation": recommendation(exceeded),
    }


def recommendation(exceeded: list[dict]) -> str | None:
    """What to do about the measures above their thresholds: nothing, grow the vocabularies, or refit."""
    if not exceeded:
        return None
    moved = sorted({e["feature"] for e in exceeded if e["measure"] != "oov_sample_share"})
    if moved:
        return (
            f"refit: the distributions of {', '.join(moved)} moved since the fit; fit a new spec on recent days "
            "(--fit-only; the model starts again), or --fit-only --extend SPEC --refit-statistics to keep the "
            "model's rows (its numeric inputs change meaning)"
        )
    new = sorted(e["feature"] for e in exceeded)
    return (
        f"extend: {', '.join(new)} ids unseen by the fit take more than their threshold of the samples; grow the "
        "vocabularies with --fit-only --extend SPEC over the days since the fit, and warm-start the model from "
        "last night's run (--init-from)"
    )


def log_drift(drift: dict, where: str) -> None:
    """One warning per measure above its threshold, then the recommendation."""
    for e in drift["exceeded"]:
        log.warning(
            "drift in %s: %s of %s is %.4g (threshold %g)",
            where,
            e["measure"],
            e["feature"],
            e["value"],
            e["threshold"],
        )
    if drift["recommendation"]:
        log.warning("drift in %s: %s", where, drift["recommendation"])
