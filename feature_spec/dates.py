"""The layout of a date-partitioned SAMPLES (docs/feature_spec.md, "Date-partitioned samples").

A daily build (`build_samples --date D --spec SPEC`) writes one folder per day:

    SAMPLES/date=2026-01-21/
        feature_spec.json    the applied spec: the same spec_hash every day; one split, DAY_SPLIT
        samples/part-*.tfrecord.gz
        vocab/  rejects/  report.json  _SUCCESS

Training selects its splits as ranges of these days (`data.train_dates=2026-01-01..2026-01-20`).
"""

from __future__ import annotations

import posixpath
import re
from datetime import date, timedelta

DATE_PREFIX = "date="
DAY_SPLIT = "samples"  # the one split of a day's folder: which days train, validate or test is chosen later
DAY_COMPLETE = "_SUCCESS"  # a day's folder is complete, and may be read, once it holds this file
# ASCII digits only: \d also matches other scripts' digits (Arabic-Indic, fullwidth), no ISO date
_ISO_DAY = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_FOLDER = re.compile(rf"date=({_ISO_DAY})")


def parse_date(text) -> date:
    """A calendar day written YYYY-MM-DD in ASCII digits (ValueError saying what is wrong otherwise)."""
    if isinstance(text, date):
        return text
    value = str(text).strip()
    if not re.fullmatch(_ISO_DAY, value):
        raise ValueError(f"{text!r} is not a date written YYYY-MM-DD (digits 0-9)")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:  # 2026-13-45, 2026-02-30
        raise ValueError(f"{text!r} is no calendar day: {exc}") from None


def parse_date_range(text) -> list[date]:
    """Every day of `FIRST..LAST` (both included), or the one day `D` (ValueError when LAST < FIRST)."""
    value = str(text).strip()
    first, sep, last = value.partition("..")
    start = parse_date(first)
    end = parse_date(last) if sep else start
    if end < start:
        raise ValueError(f"date range {value!r} ends before it starts")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def range_text(days) -> str:
    """The days (consecutive, in order) written as parse_date_range reads them: `FIRST..LAST`, or `D` for one day."""
    days = [parse_date(day) for day in days]
    if not days:
        raise ValueError("no days")
    return days[0].isoformat() if len(days) == 1 else f"{days[0].isoformat()}..{days[-1].isoformat()}"


def day_folder(samples_dir: str, day) -> str:
    """SAMPLES/date=YYYY-MM-DD."""
    return posixpath.join(str(samples_dir).rstrip("/"), f"{DATE_PREFIX}{parse_date(day).isoformat()}")


def folder_date(name: str) -> date | None:
    """The day a folder name `date=YYYY-MM-DD` stands for; None for any other name, `date=2026-02-30` too
    (no calendar day): such a folder is no day's, as `date=garbage` is not."""
    match = _FOLDER.fullmatch(posixpath.basename(str(name).rstrip("/")))
    if match is None:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None
