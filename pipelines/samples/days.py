"""Daily builds: each day of a range built into SAMPLES/date=D with one spec, skipped when complete,
refused when SAMPLES holds another spec's days (docs/jobs.md, "Daily builds")."""

from __future__ import annotations

import logging
import posixpath

from pyspark.sql import SparkSession

import feature_spec
from pipelines import storage
from pipelines.config_schema import BuildConfig, build_config
from pipelines.publish import OutputRefused
from pipelines.samples import windows
from pipelines.samples.applied_spec import load_applied_spec
from pipelines.samples.build_samples import Plan, build_samples

log = logging.getLogger("build_samples")


def _window(config: BuildConfig, first_day, last_day) -> windows.Window:
    return windows.Window(
        first_day=feature_spec.parse_date(first_day),
        last_day=feature_spec.parse_date(last_day),
        time_zone=config.dates.time_zone,
        lookback=config.lookback_seconds,
        attribution=config.attribution_window_seconds,
    )


def fit_window(config, first_day, last_day) -> windows.Window:
    """The window of a --fit-only build over the days first_day..last_day (config validated first)."""
    return _window(build_config(config), first_day, last_day)


def check_dated_samples(samples_dir: str) -> str:
    """OutputRefused unless `samples_dir` is absent or holds only day folders (and their stagings)."""
    final = storage.normalize(samples_dir)
    if not storage.exists(final):
        return final
    if not storage.isdir(final):
        raise OutputRefused(f"output {final} exists and is not a directory")
    others = sorted(
        name
        for name in storage.listdir(final)
        if feature_spec.folder_date(name) is None and not name.startswith(f".{feature_spec.DATE_PREFIX}")
    )
    if others:
        raise OutputRefused(
            f"output {final} holds {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}: a date-partitioned "
            f"SAMPLES holds only {feature_spec.DATE_PREFIX}YYYY-MM-DD folders; choose another output"
        )
    return final


def _day_spec_hash(folder: str) -> str:
    """The spec hash of a complete day folder; OutputRefused, naming it, when its spec cannot be read."""
    try:
        return feature_spec.spec_hash(feature_spec.load_spec(folder))
    except (FileNotFoundError, feature_spec.SpecError) as exc:
        raise OutputRefused(
            f"{folder} is marked complete but its {feature_spec.SPEC_FILE} cannot be read ({exc}): "
            "give --overwrite to rebuild the day, or move the folder away"
        ) from None


def _check_no_other_specs(final: str, days: list, spec_hash: str, spec_dir: str) -> None:
    """OutputRefused when SAMPLES holds complete days (other than `days`) of another spec: a training run
    reads the days of one spec only, so a mix is refused unless asked for (`mixed_specs`)."""
    if not storage.exists(final):
        return
    building = {feature_spec.parse_date(day) for day in days}
    others = {}
    for name in sorted(storage.listdir(final)):
        day = feature_spec.folder_date(name)
        folder = posixpath.join(final, name)
        if day is None or day in building or not storage.exists(posixpath.join(folder, feature_spec.DAY_COMPLETE)):
            continue
        built = _day_spec_hash(folder)
        if built != spec_hash:
            others.setdefault(built, []).append(name)
    if others:
        listed = "; ".join(
            f"{', '.join(names[:3])}{' ...' if len(names) > 3 else ''} (spec hash {h[:12]})"
            for h, names in others.items()
        )
        raise OutputRefused(
            f"{final} holds days of another spec than --spec {spec_dir} (spec hash {spec_hash[:12]}): {listed}. "
            "A training run reads days of one spec only: build into another SAMPLES, or give --allow-mixed-specs"
        )


def build_days(
    spark: SparkSession,
    raw_dir: str,
    samples_dir: str,
    config,
    spec_dir: str,
    days: list,
    overwrite=False,
    mixed_specs=False,
) -> list[dict]:
    """Build each of `days` into SAMPLES/date=D with the fit of `spec_dir`, one after the other.

    A day already complete with this spec is skipped, unless `overwrite`; one built with another spec is
    refused unless `overwrite`. Days of another spec elsewhere in SAMPLES refuse the build unless
    `mixed_specs`. Each day is published atomically on its own: a failed day leaves the days before it
    built (a rerun skips them) and its own folder as it was. Returns one entry per day."""
    config = build_config(config)
    final = check_dated_samples(samples_dir)
    applied = load_applied_spec(spark, spec_dir)
    if not mixed_specs:
        _check_no_other_specs(final, days, feature_spec.spec_hash(applied), spec_dir)
    results = []
    for day in days:
        folder = feature_spec.day_folder(final, day)
        if storage.exists(posixpath.join(folder, "_SUCCESS")) and not overwrite:
            built = _day_spec_hash(folder)
            if built != feature_spec.spec_hash(applied):
                raise OutputRefused(
                    f"{folder} was built with spec hash {built}, not {feature_spec.spec_hash(applied)} of --spec "
                    f"{spec_dir}: give --overwrite to rebuild it with this spec"
                )
            log.info("%s is complete (spec hash %s): skipped; --overwrite rebuilds it", folder, built[:12])
            results.append({"date": feature_spec.parse_date(day).isoformat(), "output": folder, "skipped": True})
            continue
        plan = Plan(spec_dir=spec_dir, window=_window(config, day, day))
        log.info("building %s into %s", plan.window.days, folder)
        report = build_samples(spark, raw_dir, folder, config, plan, applied)  # the spec is checked once
        results.append({"date": plan.window.days, "output": folder, "skipped": False, "report": report})
    return results
