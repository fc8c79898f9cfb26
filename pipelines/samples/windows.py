"""Which raw events a build of some days reads, and which of them it owns.

A build of the days D1..D2 (`build_samples --date`, `--start/--end`, or a `--fit-only` window) makes
samples of the impressions of those days only, `[start, end)` (midnight to midnight in
`dates.time_zone`). Their features and labels need events outside it:

- history and item statistics look back `history.lookback_days`: events from `start - lookback`;
- a label needs the clicks up to `attribution_window_minutes` after its impression: clicks until
  `end + window`; and a skip before `start` needs the clicks of its own window, which end before `start`.

So impressions are read over `[start - lookback, end)` and clicks over `[start - lookback, end + window)`.
Nothing else can reach a sample of D1..D2 (features/history.py: every feature of an impression at `t`
uses events in `[t - lookback, t)`; labels, features/labels.py, the clicks in `[t, t + window]`).

RAW partitioned by day (`RAW/impressions/date=YYYY-MM-DD/`, the same for clicks) is pruned to the
partitions that can hold those events, with a day's margin on each side in case RAW's partitions are
cut in another time zone; the time filter then keeps exactly the window. Unpartitioned RAW is read
whole and filtered.

The build owns the events of its own days: their rejects go into its `rejects/` and its counts. The
events before and after are read as history only; the build of their own day quarantines them. A row
with no valid time belongs to the day of its partition; in unpartitioned RAW it belongs to no day
(a build of the whole log quarantines it).

A row stored in a partition whose day (UTC, with the day's margin on each side) does not hold its time
could be missed by the build of its own day, which need not read that partition. Such a row is
*misplaced*: every build sees the same thing, a reject with reason `misplaced_partition`, owned (counted
and quarantined) by the build of the partition's day, and by a build of the whole log; it is never a
sample nor a history event. Every `date=` folder must name a day (YYYY-MM-DD): RAW holding any other is
refused (InputError), rather than read by some builds and pruned away by others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

PARTITION_COLUMN = "date"
OWNED = "_owned"  # column: the row's time lies in the build's days
MISPLACED = "misplaced_partition"  # the reject reason of a row stored in a partition far from its time


def zone(name: str):
    return timezone.utc if name.upper() == "UTC" else ZoneInfo(name)


def day_start(day: date, time_zone: str) -> int:
    """Epoch seconds of midnight starting `day` in `time_zone` (a day may last 23 or 25 hours)."""
    return int(datetime.combine(day, time(0), tzinfo=zone(time_zone)).timestamp())


@dataclass(frozen=True)
class Window:
    first_day: date
    last_day: date
    time_zone: str
    lookback: int  # seconds
    attribution: int  # seconds

    @property
    def start(self) -> int:
        return day_start(self.first_day, self.time_zone)

    @property
    def end(self) -> int:
        return day_start(self.last_day + timedelta(days=1), self.time_zone)

    @property
    def days(self) -> str:
        first, last = self.first_day.isoformat(), self.last_day.isoformat()
        return first if first == last else f"{first}..{last}"

    def read_range(self, dataset: str) -> tuple[int, int]:
        """[from, until) of the events of `dataset` ("impressions" or "clicks") this build reads."""
        until = self.end + (self.attribution if dataset == "clicks" else 0)
        return self.start - self.lookback, until

    def partitions(self) -> tuple[date, date]:
        """The first and last RAW date partitions that can hold an event read (a day's margin each side)."""
        first = datetime.fromtimestamp(self.read_range("impressions")[0], timezone.utc).date()
        last = datetime.fromtimestamp(self.read_range("clicks")[1] - 1, timezone.utc).date()
        return first - timedelta(days=1), last + timedelta(days=1)

    def describe(self, partitioned: dict[str, bool]) -> dict:
        """The window, as report.json records it."""
        out = {"days": self.days, "time_zone": self.time_zone, "samples": _iso_range(self.start, self.end)}
        for dataset in ("impressions", "clicks"):
            out[dataset] = _iso_range(*self.read_range(dataset))
        first, last = self.partitions()
        out["raw_partitions"] = {
            dataset: (f"{first.isoformat()}..{last.isoformat()}" if is_partitioned else "none: filtered by time")
            for dataset, is_partitioned in partitioned.items()
        }
        return out

    def owns(self, ts: Column) -> Column:
        return (ts >= F.lit(self.start)) & (ts < F.lit(self.end))


def iso(seconds: int) -> str:
    """Epoch seconds as an ISO UTC time, as reports and messages write it."""
    return datetime.fromtimestamp(int(seconds), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_range(start: int, end: int) -> list[str]:
    return [iso(start), iso(end)]


def partition_folders(spark: SparkSession, folder: str) -> list[str]:
    """The names of `folder`'s `date=...` sub-folders (Hadoop's file system: local or hdfs://)."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(folder)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(path):
        return []
    return sorted(
        status.getPath().getName()
        for status in fs.listStatus(path)
        if status.isDirectory() and status.getPath().getName().startswith(f"{PARTITION_COLUMN}=")
    )


def not_days(names: list[str]) -> list[str]:
    """The partition folder names that do not name a calendar day as YYYY-MM-DD."""
    bad = []
    for name in names:
        value = name[len(PARTITION_COLUMN) + 1 :]
        try:
            if len(value) != 10 or not value.isascii():
                raise ValueError(value)
            date.fromisoformat(value)
        except ValueError:
            bad.append(name)
    return bad


def is_date_partitioned(spark: SparkSession, folder: str) -> bool:
    """True when `folder` holds `date=...` sub-folders."""
    return bool(partition_folders(spark, folder))


def _partition_day() -> Column:
    return F.col(PARTITION_COLUMN).cast("date")


def misplaced(ts: Column) -> Column:
    """The row's valid time lies outside its partition's UTC day widened by a day on each side (RAW may be
    cut by day in another time zone): a build of the row's own day might not read that partition."""
    start = F.datediff(_partition_day(), F.lit(date(1970, 1, 1))).cast("long") * F.lit(86400)
    return ts.isNotNull() & ((ts < start - F.lit(86400)) | (ts >= start + F.lit(2 * 86400)))


def _reject_misplaced(events: DataFrame) -> DataFrame:
    ts = F.col("ts")
    return events.withColumn(
        "reject_reason", F.coalesce(F.col("reject_reason"), F.when(misplaced(ts), F.lit(MISPLACED)))
    )


def prune_partitions(df: DataFrame, window: Window) -> DataFrame:
    """Only the date partitions that can hold the window's events (Spark reads no other file)."""
    first, last = window.partitions()
    return df.where(_partition_day().between(F.lit(first), F.lit(last)))


def in_window(events: DataFrame, dataset: str, window: Window | None, partitioned: bool) -> DataFrame:
    """`events` (with `ts` parsed by validation, null when it is not valid) restricted to what the build
    reads, with OWNED; the partition column is dropped. Without a window: every row, every row owned."""
    if window is None:
        if partitioned:
            events = _reject_misplaced(events).drop(PARTITION_COLUMN)
        return events.withColumn(OWNED, F.lit(True))
    since, until = window.read_range(dataset)
    ts = F.col("ts")
    timed = ts.isNotNull() & (ts >= F.lit(since)) & (ts < F.lit(until))
    owned = ts.isNotNull() & window.owns(ts)
    if partitioned:
        # A row without a valid time, or misplaced, belongs to the day of its partition (and to no other build).
        own_partition = _partition_day().between(F.lit(window.first_day), F.lit(window.last_day))
        astray = ts.isNull() | misplaced(ts)
        events = _reject_misplaced(events).where((timed & ~astray) | (astray & own_partition))
        return events.withColumn(OWNED, (owned & ~astray) | astray).drop(PARTITION_COLUMN)
    return events.where(timed).withColumn(OWNED, owned)
