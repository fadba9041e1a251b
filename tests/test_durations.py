from datetime import timedelta

import pytest
from pydantic import BaseModel, ValidationError

from bot.durations import Duration, PositiveDuration, compact_duration, format_duration, parse_duration

HINT = "use a number with s, m, h or d, such as 90s, 15m, 1h or 1h30m"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2h15m30s", timedelta(hours=2, minutes=15, seconds=30)),
        ("1d", timedelta(days=1)),
        ("400d", timedelta(days=400)),
        ("1d2h", timedelta(days=1, hours=2)),
        ("90m", timedelta(minutes=90)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("900", timedelta(minutes=15)),
        ("1H30M", timedelta(hours=1, minutes=30)),
        ("15M", timedelta(minutes=15)),
        ("  15m\n", timedelta(minutes=15)),
        (" 900 ", timedelta(minutes=15)),
        (900, timedelta(minutes=15)),
        (1.5, timedelta(seconds=1.5)),
        (timedelta(minutes=5), timedelta(minutes=5)),
    ],
)
def test_parse_duration_accepts(value: str | int | float | timedelta, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "1x",
        "5x",
        "h",
        "m",
        "1h1h",
        "-5m",
        "-5",
        "30m1h",
        "1h 30m",
        "1.h",
        "one hour",
        "1:30",
        "PT1H",
    ],
)
def test_parse_duration_rejects_garbage_saying_what_is_accepted(value: str) -> None:
    with pytest.raises(ValueError, match="is not a duration") as info:
        parse_duration(value)
    assert str(info.value) == f"{value!r} is not a duration: {HINT}"


def test_parse_duration_error_message_example() -> None:
    with pytest.raises(ValueError, match="is not a duration") as info:
        parse_duration("5x")
    assert (
        str(info.value)
        == "'5x' is not a duration: use a number with s, m, h or d, such as 90s, 15m, 1h or 1h30m"
    )


@pytest.mark.parametrize("value", [-5, -0.5, timedelta(seconds=-1)])
def test_parse_duration_rejects_negative(value: int | float | timedelta) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration(value)
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration(value, allow_zero=True)


@pytest.mark.parametrize("value", [0, 0.0, "0", "0s", "0h0m", "0d", timedelta(0)])
def test_parse_duration_rejects_zero_unless_allowed(value: str | int | float | timedelta) -> None:
    with pytest.raises(ValueError, match="must be greater than zero"):
        parse_duration(value)
    assert parse_duration(value, allow_zero=True) == timedelta(0)


@pytest.mark.parametrize("value", [None, True, False, [], {}, float("nan"), float("inf")])
def test_parse_duration_rejects_other_types(value: object) -> None:
    with pytest.raises(ValueError, match="1h30m"):
        parse_duration(value)  # type: ignore[arg-type]


def test_parse_duration_rejects_overflow() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("9" * 30 + "d")


@pytest.mark.parametrize(
    ("td", "expected"),
    [
        (timedelta(seconds=90), "1 minute 30 seconds"),
        (timedelta(seconds=3600), "1 hour"),
        (timedelta(seconds=5400), "1 hour 30 minutes"),
        (timedelta(seconds=1800), "30 minutes"),
        (timedelta(seconds=14400), "4 hours"),
        (timedelta(seconds=86400), "1 day"),
        (timedelta(0), "0 seconds"),
        (timedelta(seconds=1), "1 second"),
        (timedelta(seconds=2), "2 seconds"),
        (timedelta(minutes=1), "1 minute"),
        (timedelta(days=400), "400 days"),
        (timedelta(days=2, hours=1, minutes=1, seconds=1), "2 days 1 hour 1 minute 1 second"),
        (timedelta(hours=2, seconds=5), "2 hours 5 seconds"),
        (timedelta(seconds=1.5), "1.5 seconds"),
        (timedelta(minutes=-5), "-5 minutes"),
    ],
)
def test_format_duration(td: timedelta, expected: str) -> None:
    assert format_duration(td) == expected


def test_format_duration_without_days() -> None:
    assert format_duration(timedelta(days=1), use_days=False) == "24 hours"
    assert format_duration(timedelta(days=1, minutes=30), use_days=False) == "24 hours 30 minutes"


@pytest.mark.parametrize(
    ("td", "expected"),
    [
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(minutes=15), "15m"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(days=400), "400d"),
        (timedelta(hours=4), "4h"),
        (timedelta(days=1, hours=2, minutes=3, seconds=4), "1d2h3m4s"),
        (timedelta(0), "0s"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(minutes=-5), "-5m"),
    ],
)
def test_compact_duration(td: timedelta, expected: str) -> None:
    assert compact_duration(td) == expected


@pytest.mark.parametrize(
    "td",
    [timedelta(seconds=s) for s in (1, 59, 60, 61, 90, 3599, 3600, 5400, 86399, 86400, 90061, 34_560_000)]
    + [timedelta(seconds=1.25)],
)
def test_compact_duration_round_trips(td: timedelta) -> None:
    assert parse_duration(compact_duration(td)) == td


class _Settings(BaseModel):
    any_length: Duration = timedelta(0)
    positive: PositiveDuration = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("15m", timedelta(minutes=15)), (900, timedelta(minutes=15)), ("900", timedelta(minutes=15))],
)
def test_pydantic_types_parse_text_and_seconds(raw: object, expected: timedelta) -> None:
    settings = _Settings.model_validate({"any_length": raw, "positive": raw})
    assert settings.any_length == expected
    assert settings.positive == expected


def test_duration_type_allows_zero_positive_duration_does_not() -> None:
    assert _Settings.model_validate({"any_length": 0}).any_length == timedelta(0)
    with pytest.raises(ValidationError, match="must be greater than zero"):
        _Settings.model_validate({"positive": "0s"})


def test_pydantic_types_reject_garbage_with_the_hint() -> None:
    with pytest.raises(ValidationError) as info:
        _Settings.model_validate({"any_length": "5x"})
    (error,) = info.value.errors()
    assert error["loc"] == ("any_length",)
    assert HINT in error["msg"]


def test_pydantic_types_dump_to_compact_text_in_json_mode() -> None:
    settings = _Settings.model_validate({"any_length": "90m", "positive": 30})
    assert settings.model_dump(mode="json") == {"any_length": "1h30m", "positive": "30s"}
    assert settings.model_dump()["any_length"] == timedelta(minutes=90)
