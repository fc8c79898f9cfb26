"""Which shards train, validate and test: the splits of an ordinary SAMPLES, or days of a date-partitioned one.

    samples = select_samples("data/samples")          # SAMPLES/feature_spec.json and its train/ valid/ test/
    samples = select_samples("data/daily", {"train": "2026-01-01..2026-01-20", "valid": "2026-01-21",
                                            "test": "2026-01-22..2026-01-23"})      # SAMPLES/date=D/ folders
    samples.spec                  # features, vocabularies, spec hash: what the model is built from
    samples.files("train")        # the split's shards, sorted (every selected day's)
    samples.num_examples("train"), samples.label_rate("train")
    samples.vocab_dir             # the folder the spec's vocabulary paths are relative to

The rest of training reads a `Samples` the same way whatever the layout. A date-partitioned SAMPLES
(feature_spec/dates.py) holds one folder per day, each with its own feature_spec.json of one split
(DAY_SPLIT); a split of the run is the union of its days' shards, its size the sum of theirs and its
label rate their mean weighted by size. The spec is the days' (one spec hash, so the same features and
vocabularies), without their one-day splits; the vocabularies are read from the last train day.

Refused before any shard is read: an ordinary SAMPLES without its feature_spec.json (SamplesRefused);
selected days that are missing or incomplete (no DAY_COMPLETE), every one named (SamplesRefused); a spec
that is not a valid spec, or a complete day's spec that is missing, not valid or without its DAY_SPLIT, each
named by its path (SpecError); days of more than one spec hash, each named with its hash (SpecHashMismatch).
Folders named like days that stand for no calendar day in digits 0-9 (`date=2026-02-30`) are no days, as
`date=garbage` is not (folder_date).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from feature_spec import (
    DATE_PREFIX,
    DAY_COMPLETE,
    DAY_SPLIT,
    SPEC_FILE,
    SpecError,
    check_vocabularies,
    day_folder,
    folder_date,
    load_spec,
    num_examples,
    parse_date_range,
    range_text,
    spec_hash,
    spec_path,
    split_label_rate,
    split_names,
    split_pattern,
    with_splits,
)
from pipelines import storage

RUN_SPLITS = ("train", "valid", "test")  # what a run trains, validates and tests on
BUILD_A_DAY = "python -m jobs.build_samples --date D --spec SPEC ..."
REBUILD_A_DAY = "python -m jobs.build_samples --date D --spec SPEC --overwrite ..."  # a complete day is skipped


class SpecHashMismatch(SpecError):
    """The samples' feature spec differs from the one a run was trained on, or the selected days' specs differ."""


class SamplesRefused(ValueError):
    """The selected samples cannot be read: days missing or incomplete, or a date-partitioned SAMPLES
    given without the days to read."""


@dataclass(frozen=True)
class SplitShards:
    """One split of a run: the globs of its shards, its size and label rate (None when unknown), and for a
    date-partitioned SAMPLES the range it was selected by and its days (ISO dates)."""

    patterns: tuple[str, ...]
    num_examples: int | None
    label_rate: float | None
    dates: str | None = None
    days: tuple[str, ...] = ()

    def record(self) -> dict:
        selected = {"dates": self.dates, "days": list(self.days)} if self.dates is not None else {}
        return {**selected, "num_examples": self.num_examples, "label_rate": self.label_rate}


@dataclass(frozen=True)
class Samples:
    """What a run reads: the spec, and per split its shards (SplitShards)."""

    path: str  # SAMPLES as given
    spec: dict
    splits: dict[str, SplitShards]
    vocab_dir: str  # the folder the spec's vocabulary paths are relative to
    vocab_day: str | None = None  # the day whose vocab/ is read (a date-partitioned SAMPLES)

    @classmethod
    def of(cls, samples_dir: str, spec: dict) -> "Samples":
        """The samples of an ordinary SAMPLES whose spec is `spec`: its splits as the spec lists them."""
        splits = {}
        for name in split_names(spec):
            pattern, size, rate = _split_of(samples_dir, spec, name)
            splits[name] = SplitShards((pattern,), size, rate)
        return cls(str(samples_dir), spec, splits, str(samples_dir))

    @property
    def spec_hash(self) -> str:
        return spec_hash(self.spec)

    @property
    def dated(self) -> bool:
        return self.vocab_day is not None

    def split(self, name: str) -> SplitShards:
        if name not in self.splits:
            raise SpecError(f"split '{name}' is not in the samples {self.describe()} (has: {', '.join(self.splits)})")
        return self.splits[name]

    def files(self, name: str) -> list[str]:
        """The split's shards, sorted (FileNotFoundError when none is found)."""
        import tensorflow as tf

        patterns = self.split(name).patterns
        storage.register_file_system(self.path)  # s3://, hdfs:// samples need tensorflow-io's file systems
        files = sorted({path for pattern in patterns for path in tf.io.gfile.glob(pattern)})
        if not files:
            raise FileNotFoundError(f"no files match {' '.join(patterns)} (split '{name}')")
        return files

    def num_examples(self, name: str) -> int | None:
        return self.split(name).num_examples

    def label_rate(self, name: str) -> float | None:
        return self.split(name).label_rate

    def describe(self) -> str:
        """SAMPLES, with the selected days of a date-partitioned one."""
        if not self.dated:
            return self.path
        return f"{self.path} ({', '.join(f'{name} {split.dates}' for name, split in self.splits.items())})"

    def record(self) -> dict:
        """run.json's `data`: per split its size and label rate (and its dates and days)."""
        out = {"layout": "dates" if self.dated else "splits"}
        if self.dated:
            out["vocabularies_from"] = self.vocab_day
        return {**out, "splits": {name: split.record() for name, split in self.splits.items()}}


def select_samples(samples_dir: str, dates: Mapping[str, str] | None = None) -> Samples:
    """The samples of SAMPLES: its own splits, or with `dates` ({train, valid, test}: FIRST..LAST or D) the
    union of those days' shards, split by split."""
    samples_dir = str(samples_dir)
    if not dates:
        if not storage.exists(posixpath.join(samples_dir, SPEC_FILE)):
            days = _day_folders(samples_dir)
            if days:
                raise SamplesRefused(
                    f"{samples_dir} is date-partitioned ({len(days)} {DATE_PREFIX}YYYY-MM-DD folders, "
                    f"{days[0]} to {days[-1]}) and has no {SPEC_FILE} of its own: choose the days to train, "
                    f"validate and test on with --set data.train_dates=FIRST..LAST --set data.valid_dates=... "
                    f"--set data.test_dates=..."
                )
            raise SamplesRefused(_no_samples(samples_dir))
        spec = load_spec(samples_dir)
        for split in RUN_SPLITS:  # refused now, not after RUN is written
            _split_of(samples_dir, spec, split)
        check_vocabularies(samples_dir, spec)  # VocabularyError (a SpecError) naming the one that does not match
        return Samples.of(samples_dir, spec)
    selected = {split: parse_date_range(dates[split]) for split in RUN_SPLITS}
    _refuse_unbuilt_days(samples_dir, selected)
    specs = _day_specs(samples_dir, selected)
    _refuse_spec_hashes(samples_dir, specs)
    splits = {}
    for split, days in selected.items():
        # (glob, size, label rate) of each day, checked by _day_specs
        shards = [_split_of(day_folder(samples_dir, day), specs[day], DAY_SPLIT) for day in days]
        sizes = [size for _, size, _ in shards]
        rates = [rate for _, _, rate in shards]
        splits[split] = SplitShards(
            tuple(pattern for pattern, _, _ in shards),
            None if None in sizes else sum(sizes),
            _weighted_rate(sizes, rates),
            dates=range_text(days),
            days=tuple(day.isoformat() for day in days),
        )
    vocab_day = selected["train"][-1]  # the days share one spec, so their vocabularies: the newest train day's
    spec = with_splits(specs[vocab_day], {})  # the days' one-day splits are not the run's: see Samples.splits
    check_vocabularies(day_folder(samples_dir, vocab_day), spec)
    return Samples(samples_dir, spec, splits, day_folder(samples_dir, vocab_day), vocab_day.isoformat())


def _split_of(folder: str, spec: dict, split: str) -> tuple[str, int | None, float | None]:
    """The glob, size and label rate of a split as the spec in `folder` gives them; SpecError naming the
    spec's file when the split is absent or its size or label rate is no number."""
    if split not in (spec.get("splits") or {}):
        raise SpecError(f"{spec_path(folder)} has no split '{split}' (has: {', '.join(split_names(spec)) or 'none'})")
    try:
        size, rate = num_examples(spec, split), split_label_rate(spec, split)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SpecError(
            f"{spec_path(folder)}: split '{split}' has a num_examples or label_rate that is no number ({exc})"
        ) from None
    return split_pattern(folder, spec, split), size, rate


def _day_specs(samples_dir: str, selected: dict) -> dict:
    """{day: its spec} of the selected (complete) days; SpecError naming every day whose feature_spec.json
    is missing or broken, or has no readable DAY_SPLIT: a complete day was damaged after its build."""
    specs, broken = {}, {}
    for days in selected.values():
        for day in days:
            folder = day_folder(samples_dir, day)
            try:
                specs[day] = load_spec(folder)
                _split_of(folder, specs[day], DAY_SPLIT)
            except FileNotFoundError:
                broken[day] = f"{spec_path(folder)} is missing (the day has {DAY_COMPLETE})"
            except SpecError as exc:
                broken[day] = str(exc)
    if broken:
        raise SpecError(
            f"{len(broken)} selected day(s) of {samples_dir} have no valid {SPEC_FILE}: {'; '.join(broken.values())}. "
            f"Rebuild each with `{REBUILD_A_DAY}` (D = {', '.join(day.isoformat() for day in broken)}), then rerun"
        )
    return specs


def _no_samples(samples_dir: str) -> str:
    """Why `samples_dir`, which has no feature_spec.json and no day folder, is no SAMPLES."""
    if not storage.isdir(samples_dir):
        return f"{samples_dir} is no directory: no samples to train on"
    # date=2026-02-30, date=garbage: named like day folders, but no day's
    names = (name.rstrip("/") for name in storage.listdir(samples_dir))
    undated = sorted(name for name in names if name.startswith(DATE_PREFIX))
    unlike = (
        f" ({', '.join(undated[:5])}{' ...' if len(undated) > 5 else ''}: no {DATE_PREFIX}YYYY-MM-DD folder of a "
        "calendar day in digits 0-9, so no day)"
        if undated
        else ""
    )
    return (
        f"{samples_dir} has no {SPEC_FILE} and no {DATE_PREFIX}YYYY-MM-DD day folders{unlike}: it is no "
        "SAMPLES written by jobs.build_samples"
    )


def _weighted_rate(sizes: list, rates: list) -> float | None:
    """The label rate of the union of days: their rates weighted by their sizes (None when one is unknown)."""
    counted = [(n, r) for n, r in zip(sizes, rates) if n != 0]
    if not counted or any(n is None or r is None for n, r in counted):
        return None
    return sum(n * r for n, r in counted) / sum(n for n, _ in counted)


def _day_folders(samples_dir: str) -> list[str]:
    """The day folders of SAMPLES, sorted (none when it is no folder); hidden stagings are no day's."""
    if not storage.isdir(samples_dir):
        return []
    return sorted(name for name in storage.listdir(samples_dir) if folder_date(name) is not None)


def _refuse_unbuilt_days(samples_dir: str, selected: dict) -> None:
    problems, unbuilt = [], []
    for split, days in selected.items():
        for day in days:
            folder = day_folder(samples_dir, day)
            name = posixpath.basename(folder)
            if not storage.isdir(folder):
                problems.append(f"{day.isoformat()} ({split}) is missing: no {name}/")
            elif not storage.exists(posixpath.join(folder, DAY_COMPLETE)):
                problems.append(
                    f"{day.isoformat()} ({split}) is incomplete: {name}/ has no {DAY_COMPLETE} (its build is "
                    "still running, or failed)"
                )
            else:
                continue
            unbuilt.append(day.isoformat())
    if not problems:
        return
    ordinary = ""
    if storage.exists(posixpath.join(samples_dir, SPEC_FILE)):
        ordinary = (
            f" ({samples_dir} is an ordinary build, with {SPEC_FILE} at its top: leave data.train_dates, "
            "data.valid_dates and data.test_dates null to train on its own splits)"
        )
    raise SamplesRefused(
        f"{len(problems)} selected day(s) of {samples_dir} cannot be read: {'; '.join(problems)}. Build each "
        f"with `{BUILD_A_DAY}` (D = {', '.join(dict.fromkeys(unbuilt))}), then rerun{ordinary}"
    )


def _refuse_spec_hashes(samples_dir: str, specs: dict) -> None:
    by_hash: dict[str, list] = {}
    for day, spec in specs.items():
        by_hash.setdefault(spec_hash(spec), []).append(day)
    if len(by_hash) <= 1:
        return
    listed = "; ".join(
        f"{', '.join(d.isoformat() for d in days)} {'has' if len(days) == 1 else 'have'} spec hash {value}"
        for value, days in sorted(by_hash.items(), key=lambda item: min(item[1]))
    )
    raise SpecHashMismatch(
        f"the selected days of {samples_dir} have {len(by_hash)} spec hashes: {listed}. A run trains on samples "
        "of one spec: select days built with the same --spec, or rebuild the others with it"
    )
