"""Days written YYYY-MM-DD (feature_spec/dates.py): a date in other digits than 0-9, or one that is no calendar
day, is refused with a message saying so (parse_date), and a folder named with one is no day (folder_date): a
daily build refuses a SAMPLES holding it, as it refuses `date=garbage`."""

import pytest

from feature_spec import day_folder, folder_date, parse_date, parse_date_range
from pipelines.publish import OutputRefused
from pipelines.samples.days import check_dated_samples

# \d matches the digits of every script: these must not pass for 2026-01-01
OTHER_DIGITS = [
    "٢٠٢٦-٠١-٠١",  # Arabic-Indic
    "۲۰۲۶-۰۱-۰۱",  # Extended Arabic-Indic (Persian)
    "२०२६-०१-०१",  # Devanagari
    "２０２６-０１-０１",  # fullwidth
    "2026-01-0١",  # one Arabic-Indic digit among ASCII ones
]
NO_CALENDAR_DAY = ["2026-13-45", "2026-02-30", "2025-02-29", "2026-00-10", "2026-04-31", "0000-01-01"]


@pytest.mark.parametrize("text", OTHER_DIGITS)
def test_dates_in_other_digits_are_refused_saying_so(text):
    with pytest.raises(ValueError, match=r"is not a date written YYYY-MM-DD \(digits 0-9\)"):
        parse_date(text)
    with pytest.raises(ValueError, match=r"digits 0-9"):
        parse_date_range(f"2026-01-01..{text}")
    assert folder_date(f"date={text}") is None


@pytest.mark.parametrize("text", NO_CALENDAR_DAY)
def test_dates_that_are_no_calendar_day_are_refused_saying_so(text):
    with pytest.raises(ValueError, match=rf"'{text}' is no calendar day: "):
        parse_date(text)
    with pytest.raises(ValueError, match="is no calendar day"):
        parse_date_range(f"{text}..2026-12-31")
    assert folder_date(f"date={text}") is None
    assert folder_date(f"SAMPLES/date={text}/") is None


def test_days_and_their_folders_still_read():
    assert parse_date(" 2024-02-29 ").isoformat() == "2024-02-29"
    assert folder_date("s3://bucket/daily/date=2024-02-29/").isoformat() == "2024-02-29"
    assert day_folder("daily/", "2026-01-31") == "daily/date=2026-01-31"
    for name in ("date=2026-01-01\n", "date=2026-01-01.tmp", "xdate=2026-01-01", "date=2026-1-01", "date=garbage"):
        assert folder_date(name) is None, repr(name)


@pytest.mark.parametrize("name", ["date=garbage", *(f"date={text}" for text in OTHER_DIGITS + NO_CALENDAR_DAY)])
def test_a_daily_build_refuses_a_samples_holding_a_folder_of_no_day(name, tmp_path):
    (tmp_path / "date=2026-01-01").mkdir()
    (tmp_path / ".date=2026-01-02.staging-1234").mkdir()
    (tmp_path / name).mkdir()
    with pytest.raises(OutputRefused, match=rf"holds {name}: a date-partitioned SAMPLES holds only"):
        check_dated_samples(str(tmp_path))
