"""The value types of the job configs (pipelines/config_schema.py): numbers that keep their type, names,
moments, lists of distinct names, item vector columns and OOV buckets, each with its own message."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Annotated, Any, Union

from pydantic import AfterValidator, BeforeValidator, Field, WrapValidator
from pydantic_core import PydanticCustomError

from pipelines.errors import shown


def _keep_int(value, handler):
    """A number setting: an int stays an int (30 is written back as 30, not 30.0)."""
    out = handler(value)
    return value if type(value) is int else out


Number = Annotated[float, WrapValidator(_keep_int)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveNumber = Annotated[Number, Field(gt=0)]
Name = Annotated[str, Field(min_length=1)]
SEED_MAX = 2**32 - 1  # numpy's and keras.utils.set_random_seed's range

# What Spark's to_timestamp (validation.ts_min / ts_max) and to_epoch_seconds both read.
_ISO_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}(?::\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?)?(?:Z|[+-]\d{2}:\d{2})?")


def _iso_text(value) -> str:
    """A date written unquoted in YAML is a datetime.date: its ISO string, as the code reads it."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        text = value.strip()
        if _ISO_MOMENT.fullmatch(text):
            try:
                to_epoch_seconds(text)
                return text
            except ValueError:
                pass
        raise PydanticCustomError(
            "moment", "must be a date or time such as 2026-01-22 or 2026-01-22T06:00:00 (UTC unless a zone is given)"
        )
    raise PydanticCustomError("moment", "must be a date such as 2026-01-22 (a string or an unquoted YAML date)")


def _split_moment(value):
    """split.valid_start / test_start: a date or time (as _iso_text), or epoch seconds (an int or digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return value
    try:
        return _iso_text(value)
    except PydanticCustomError:
        raise PydanticCustomError(
            "moment", "must be a date or time such as 2026-01-22 or 2026-01-22T06:00:00, or epoch seconds"
        ) from None


def to_epoch_seconds(value) -> int:
    """The instant a moment names: a date/time string ("2026-01-22", "2026-01-22T06:00:00", UTC if naive) or a
    number of epoch seconds. The split (features/split.py) reads its boundaries with it too."""
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


Moment = Annotated[str, BeforeValidator(_iso_text)]
SplitMoment = Annotated[Any, BeforeValidator(_split_moment)]


def _distinct(names: list[str]) -> list[str]:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise PydanticCustomError(
            "repeated", "names must be distinct, {repeated} repeated", {"repeated": shown(repeated)}
        )
    return names


Names = Annotated[list[Name], AfterValidator(_distinct)]


def _vector_columns(value):
    """items.vector_columns: a list of names (lengths from the data) or {name: positive length or null}."""
    if value is None:
        return value
    if not isinstance(value, (list, dict)):
        raise PydanticCustomError("vector_columns", "must be a list of names or a mapping name: length")
    for name in value:
        if not isinstance(name, str) or not name:
            raise PydanticCustomError("vector_columns", "{name} is not a column name", {"name": shown(name)})
    columns = dict.fromkeys(_distinct(value)) if isinstance(value, list) else value
    for name, length in columns.items():
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise PydanticCustomError(
                "vector_columns",
                "the length of {name} must be a positive integer or null",
                {"name": shown(name), "length": shown(length)},
            )
    return value


VectorColumns = Annotated[Any, BeforeValidator(_vector_columns)]


VOCABULARY_NAMES = ("user_id", "item_id", "position", "genre")  # features/vocab.py: ID_INDICES and genre


def _oov_buckets(value):
    """vocab.oov_buckets: one positive integer for every vocabulary, or {vocabulary: positive integer}."""
    per_name = value if isinstance(value, dict) else {"": value}
    for name, count in per_name.items():
        if name and name not in VOCABULARY_NAMES:
            names = {"name": shown(name), "names": ", ".join(VOCABULARY_NAMES)}
            raise PydanticCustomError("oov_buckets", "{name} is not a vocabulary (one of {names})", names)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise PydanticCustomError("oov_buckets", "must be a positive integer, or {vocabulary: positive integer}")
    return value


OovBuckets = Annotated[Union[PositiveInt, dict[str, PositiveInt]], BeforeValidator(_oov_buckets)]
