"""Parsing and formatting of durations such as ``90s``, ``15m``, ``1h30m`` or ``400d``.

The short form is what people write in the policy file and in Slack; the long form
("1 hour 30 minutes") is what the bot shows back to them.

* :func:`parse_duration` turns ``"1h30m"``, ``"900"``, ``900`` or a :class:`~datetime.timedelta`
  into a :class:`~datetime.timedelta`, rejecting anything else with a :class:`ValueError`
  whose message says what is accepted.
* :func:`format_duration` renders a :class:`~datetime.timedelta` in words.
* :func:`compact_duration` renders it in the short form that :func:`parse_duration` reads back.
* :data:`Duration` and :data:`PositiveDuration` are pydantic field types built on these.
"""

import math
import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

__all__ = [
    "Duration",
    "PositiveDuration",
    "compact_duration",
    "format_duration",
    "human_duration",
    "parse_duration",
]

_HINT = "use a number with s, m, h or d, such as 90s, 15m, 1h or 1h30m"

_NUMBER = r"\d+(?:\.\d+)?"
# Units must appear in descending order and at most once each: "1h30m" but not "30m1h" or "1h1h".
_UNITS_RE = re.compile(rf"(?:({_NUMBER})d)?(?:({_NUMBER})h)?(?:({_NUMBER})m)?(?:({_NUMBER})s)?")
_SECONDS_RE = re.compile(_NUMBER)
_UNIT_SECONDS = (86_400, 3_600, 60, 1)

_MICROS_PER_SECOND = 1_000_000
_MICROS_PER_MINUTE = 60 * _MICROS_PER_SECOND
_MICROS_PER_HOUR = 60 * _MICROS_PER_MINUTE
_MICROS_PER_DAY = 24 * _MICROS_PER_HOUR


def _not_a_duration(value: object) -> ValueError:
    return ValueError(f"{value!r} is not a duration: {_HINT}")


def _from_seconds(seconds: Decimal, original: object) -> timedelta:
    micros = int((seconds * _MICROS_PER_SECOND).to_integral_value())
    try:
        return timedelta(microseconds=micros)
    except OverflowError:
        raise ValueError(f"{original!r} is too long to be a duration") from None


def _parse_text(value: str) -> timedelta:
    text = value.strip().lower()
    if _SECONDS_RE.fullmatch(text):
        return _from_seconds(Decimal(text), value)
    match = _UNITS_RE.fullmatch(text)
    if not text or match is None or not any(match.groups()):
        raise _not_a_duration(value)
    pairs = zip(match.groups(), _UNIT_SECONDS, strict=True)
    total = sum((Decimal(number) * unit for number, unit in pairs if number), start=Decimal(0))
    return _from_seconds(total, value)


def parse_duration(value: str | int | float | timedelta, *, allow_zero: bool = False) -> timedelta:
    """Parse a duration.

    Accepts strings such as ``"90s"``, ``"15m"``, ``"1h"``, ``"1h30m"``, ``"2h15m30s"``, ``"1d"`` and
    ``"400d"`` (units d, h, m, s in that order, each at most once; case-insensitive; surrounding
    whitespace ignored; decimals such as ``"1.5h"`` allowed), strings of digits and plain
    ints/floats (seconds), and :class:`~datetime.timedelta` values.

    Negative durations are always rejected; zero is rejected unless ``allow_zero`` is true.
    Every rejection is a :class:`ValueError` whose message says what is accepted.
    """
    if value is None:
        raise ValueError(f"a duration is required: {_HINT}")
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, str):
        result = _parse_text(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise _not_a_duration(value)
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value!r}")
        result = _from_seconds(Decimal(value), value)
    else:
        raise _not_a_duration(value)

    if result < timedelta(0):
        raise ValueError(f"duration must not be negative, got {compact_duration(result)}")
    if result == timedelta(0) and not allow_zero:
        shown = compact_duration(value) if isinstance(value, timedelta) else repr(value)
        raise ValueError(f"duration must be greater than zero, got {shown}")
    return result


def _split(td: timedelta) -> tuple[str, int, int, int, int]:
    """Split into (sign, days, hours, minutes, microseconds of the seconds part)."""
    micros = td // timedelta(microseconds=1)
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    days, micros = divmod(micros, _MICROS_PER_DAY)
    hours, micros = divmod(micros, _MICROS_PER_HOUR)
    minutes, micros = divmod(micros, _MICROS_PER_MINUTE)
    return sign, days, hours, minutes, micros


def _seconds_text(micros: int) -> str:
    whole, fraction = divmod(micros, _MICROS_PER_SECOND)
    if fraction == 0:
        return str(whole)
    return f"{whole}.{fraction:06d}".rstrip("0")


def format_duration(td: timedelta, *, use_days: bool = True) -> str:
    """Render a duration in words: ``5400s`` -> ``"1 hour 30 minutes"``, ``0`` -> ``"0 seconds"``.

    With ``use_days=False`` whole days are counted as hours (``1d`` -> ``"24 hours"``).
    Fractions of a second are kept (``"1.5 seconds"``); negative durations get a leading ``-``.
    """
    sign, days, hours, minutes, micros = _split(td)
    if not use_days:
        hours += days * 24
        days = 0
    parts = [
        f"{count} {unit}{'' if count == 1 else 's'}"
        for count, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"))
        if count
    ]
    if micros:
        seconds = _seconds_text(micros)
        parts.append(f"{seconds} second{'' if seconds == '1' else 's'}")
    if not parts:
        return "0 seconds"
    return sign + " ".join(parts)


def human_duration(td: timedelta) -> str:
    """A duration as shown to a person, everywhere (Slack, the admin CLI): whole minutes from a minute up
    (``14m59.9s`` -> ``"15 minutes"``, ``1h`` -> ``"1 hour"``), whole seconds below (``19.997s`` ->
    ``"20 seconds"``); hours past a day stay hours (``"24 hours"``)."""
    micros = abs(td // timedelta(microseconds=1))
    sign = "-" if td < timedelta(0) else ""
    seconds = (micros + _MICROS_PER_SECOND // 2) // _MICROS_PER_SECOND
    if seconds >= 60:
        rounded = timedelta(minutes=(micros + _MICROS_PER_MINUTE // 2) // _MICROS_PER_MINUTE)
    else:
        rounded = timedelta(seconds=seconds)
    return sign + format_duration(rounded, use_days=False) if rounded else "0 seconds"


def compact_duration(td: timedelta) -> str:
    """Render a duration in the short form :func:`parse_duration` reads: ``"1h30m"``, ``"1m30s"``, ``"400d"``.

    Zero is ``"0s"``; negative durations get a leading ``-``.
    """
    sign, days, hours, minutes, micros = _split(td)
    text = "".join(f"{count}{unit}" for count, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if count)
    if micros:
        text += f"{_seconds_text(micros)}s"
    return sign + text if text else "0s"


def _parse_allowing_zero(value: str | int | float | timedelta) -> timedelta:
    return parse_duration(value, allow_zero=True)


def _parse_positive(value: str | int | float | timedelta) -> timedelta:
    return parse_duration(value)


_AS_COMPACT_TEXT = PlainSerializer(compact_duration, return_type=str, when_used="json")

Duration = Annotated[timedelta, BeforeValidator(_parse_allowing_zero), _AS_COMPACT_TEXT]
"""A pydantic field type for a duration >= 0 written ``15m``, ``900``, ``1h30m``...; JSON-dumps as ``15m``."""

PositiveDuration = Annotated[timedelta, BeforeValidator(_parse_positive), _AS_COMPACT_TEXT]
"""Like :data:`Duration`, but zero is rejected."""
