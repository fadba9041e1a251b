"""The break-glass event model and state machine, plus store.timeutil and store.url."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from store import model
from store.base import InvalidCursor, check_limit, decode_cursor, encode_cursor
from store.errors import InvalidTransition
from store.model import (
    MAX_DURATION,
    BreakGlassEvent,
    OutboxEntry,
    ReasonCode,
    Status,
    is_event_id,
    new_event_id,
)
from store.model import OutboxKind as K
from store.sqlite import SQLiteStore
from store.timeutil import TIMESTAMP_WIDTH, ensure_utc, format_ts, parse_ts
from store.url import DEFAULT_STORE_URL, InvalidStoreURL, open_store, parse_store_url

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
US = timedelta(microseconds=1)
VALID = "x" * 20


def new(**overrides: Any) -> BreakGlassEvent:
    values: dict[str, Any] = {
        "invoker": "alice@example.com",
        "slack_user_id": "U0001",
        "profile": "prod-admin",
        "reason_code": "incident",
        "justification": "Investigating the production outage",
        "duration": HOUR,
        "now": T0,
    }
    values.update(overrides)
    return BreakGlassEvent.new(**values)


def closed_event() -> BreakGlassEvent:
    return new().close(by="bob", reason="done", now=T0 + timedelta(minutes=5))


def expired_event() -> BreakGlassEvent:
    return new().expire(now=T0 + HOUR)


# -- ids ---------------------------------------------------------------------------------------


def test_event_id_is_16_lowercase_hex() -> None:
    event = new()
    assert len(event.id) == 16
    assert set(event.id) <= set("0123456789abcdef")
    assert is_event_id(event.id)


def test_event_ids_are_distinct() -> None:
    ids = {new_event_id() for _ in range(20_000)}
    assert len(ids) == 20_000
    assert all(is_event_id(i) for i in ids)
    assert len({new().id for _ in range(200)}) == 200


def test_event_id_comes_from_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    requested: list[int] = []

    def token_hex(nbytes: int) -> str:
        requested.append(nbytes)
        return "00ff00ff00ff00ff"

    monkeypatch.setattr(model.secrets, "token_hex", token_hex)
    assert new().id == "00ff00ff00ff00ff"
    assert requested == [8]  # 64 bits


@pytest.mark.parametrize(
    "value", ["", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", "0123456789abcdeg", "guard#x"]
)
def test_malformed_ids_are_refused(value: str) -> None:
    assert not is_event_id(value)
    with pytest.raises(ValidationError):
        new(id=value)


# -- justification -----------------------------------------------------------------------------


def test_justification_is_stripped() -> None:
    assert new(justification="  \n\t" + VALID + " \n ").justification == VALID


@pytest.mark.parametrize(("length", "ok"), [(19, False), (20, True), (1000, True), (1001, False)])
def test_justification_length_boundaries(length: int, ok: bool) -> None:
    text = "  " + "a" * length + "\n"  # surrounding whitespace does not count
    if ok:
        assert len(new(justification=text).justification) == length
    else:
        with pytest.raises(ValidationError, match="too short" if length < 20 else "too long"):
            new(justification=text)


def test_justification_too_short_message_says_how_short() -> None:
    with pytest.raises(ValidationError, match="19 characters, at least 20"):
        new(justification="a" * 19)


@pytest.mark.parametrize("text", ["", " ", " \t\n\r ", "\u3000\u2003"])
def test_whitespace_only_justification_is_refused(text: str) -> None:
    with pytest.raises(ValidationError, match="justification is required"):
        new(justification=text)


def test_justification_counts_characters_not_bytes() -> None:
    assert new(justification="🚨" * 20).justification == "🚨" * 20  # 80 bytes UTF-8, 40 UTF-16 units
    with pytest.raises(ValidationError, match="too short"):
        new(justification="🚨" * 19)
    assert len(new(justification="é" * 1000).justification) == 1000
    with pytest.raises(ValidationError, match="too long"):
        new(justification="日" * 1001)


def test_combining_characters_are_code_points_and_kept_as_typed() -> None:
    decomposed = "e\u0301" * 10  # 10 user-perceived characters, 20 code points
    event = new(justification=decomposed)
    assert event.justification == decomposed  # not NFC-normalised
    assert unicodedata.normalize("NFC", decomposed) != decomposed
    with pytest.raises(ValidationError, match="too short"):
        new(justification=unicodedata.normalize("NFC", decomposed))  # 10 code points


@pytest.mark.parametrize(
    ("char", "code"), [("\x00", "U+0000"), ("\x1b", "U+001B"), ("\x7f", "U+007F"), ("\x85", "U+0085")]
)
def test_control_characters_are_refused_clearly(char: str, code: str) -> None:
    with pytest.raises(ValidationError) as info:
        new(justification=VALID + char + VALID)
    message = str(info.value)
    assert "justification contains a control" in message
    assert code in message


def test_surrogates_and_unassigned_characters_are_refused() -> None:
    unassigned = next(chr(c) for c in range(0x0378, 0x10000) if unicodedata.category(chr(c)) == "Cn")
    for char in ("\ud800", unassigned):
        with pytest.raises(ValidationError, match="control or unassigned"):
            new(justification=VALID + char)


def test_tab_newline_and_invisible_format_characters_are_kept() -> None:
    text = "line one\twith a tab\r\nline two\u200d\u200f *bold* <!channel>"
    assert new(justification=text).justification == text


# -- incident ----------------------------------------------------------------------------------


def test_incident_is_optional() -> None:
    assert new().incident is None
    assert new(incident=None).incident is None


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_incident_becomes_none(blank: str) -> None:
    assert new(incident=blank).incident is None


def test_incident_is_stripped_and_limited_to_200() -> None:
    assert new(incident="  INC-42 ").incident == "INC-42"
    assert new(incident="i" * 200).incident == "i" * 200
    with pytest.raises(ValidationError, match="incident is too long"):
        new(incident="i" * 201)


@pytest.mark.parametrize("text", ["INC-1\nINC-2", "INC-1\rINC-2"])
def test_incident_is_a_single_line(text: str) -> None:
    with pytest.raises(ValidationError, match="single line"):
        new(incident=text)


def test_incident_refuses_control_characters() -> None:
    with pytest.raises(ValidationError, match="incident contains a control"):
        new(incident="INC\x1b[31m-1")


# -- duration, reason code, identity fields ------------------------------------------------------


@pytest.mark.parametrize("duration", [US, timedelta(minutes=15), MAX_DURATION])
def test_durations_up_to_four_hours_are_accepted(duration: timedelta) -> None:
    event = new(duration=duration)
    assert event.duration == duration
    assert event.expires_at == event.created_at + duration


@pytest.mark.parametrize(
    ("duration", "message"),
    [
        (timedelta(0), "positive"),
        (-HOUR, "positive"),
        (MAX_DURATION + timedelta(seconds=1), "4 hour"),
        (MAX_DURATION + US, "4 hour"),
        (timedelta(days=1), "4 hour"),
    ],
)
def test_durations_outside_the_cap_are_refused(duration: timedelta, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        new(duration=duration)
    with pytest.raises(ValidationError, match=message):
        BreakGlassEvent.model_validate(
            new().model_dump() | {"duration": duration, "expires_at": T0 + duration}
        )


def test_reason_codes_are_exactly_the_five() -> None:
    assert {code.value for code in ReasonCode} == {"incident", "maintenance", "security", "recovery", "other"}
    for code in ReasonCode:
        assert new(reason_code=code.value).reason_code is code


@pytest.mark.parametrize("code", ["bogus", "INCIDENT", "", " incident"])
def test_unknown_reason_codes_are_refused(code: str) -> None:
    with pytest.raises(ValueError, match="is not a valid ReasonCode"):
        new(reason_code=code)
    with pytest.raises(ValidationError):
        BreakGlassEvent.model_validate(new().model_dump() | {"reason_code": code})


@pytest.mark.parametrize("field", ["invoker", "slack_user_id", "profile"])
def test_identity_fields_are_required(field: str) -> None:
    with pytest.raises(ValidationError):
        new(**{field: ""})
    with pytest.raises(ValidationError):
        new(**{field: "x" * 257})


def test_unknown_fields_are_refused_and_events_are_frozen() -> None:
    with pytest.raises(ValidationError):
        BreakGlassEvent.model_validate(new().model_dump() | {"surprise": 1})
    event = new()
    with pytest.raises(ValidationError):
        event.status = Status.CLOSED  # type: ignore[misc]


# -- timestamps --------------------------------------------------------------------------------


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        new(now=datetime(2026, 3, 1, 12, 0))
    with pytest.raises(ValidationError, match="timezone-aware"):
        BreakGlassEvent.model_validate(new().model_dump() | {"warned_at": datetime(2026, 3, 1)})


def test_offset_timestamps_are_normalised_to_utc() -> None:
    plus_two = datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    event = new(now=plus_two)
    assert event.created_at == T0
    assert event.created_at.tzinfo is UTC
    assert event.created_at.hour == 12
    assert event.updated_at.tzinfo is UTC
    assert event.expires_at == datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
    assert event.expires_at.tzinfo is UTC
    closed = event.close(
        by="bob", reason="done", now=datetime(2026, 3, 1, 8, 30, tzinfo=timezone(-timedelta(hours=4)))
    )
    assert closed.ended_at == datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    assert closed.ended_at is not None and closed.ended_at.tzinfo is UTC


def test_expires_at_is_created_at_plus_duration() -> None:
    event = new(duration=timedelta(minutes=90, microseconds=7))
    assert event.expires_at == event.created_at + event.duration
    assert event.updated_at == event.created_at
    with pytest.raises(ValidationError, match="expires_at must equal"):
        BreakGlassEvent.model_validate(event.model_dump() | {"expires_at": event.expires_at + US})


def test_json_round_trip() -> None:
    event = closed_event().with_outbox("audit_update", "close_thread").updated(escalated=True, audit_ts="1.2")
    assert BreakGlassEvent.model_validate_json(event.model_dump_json()) == event


# -- state machine -----------------------------------------------------------------------------


def test_new_event_is_active_and_effective_until_expiry() -> None:
    event = new()
    assert event.status is Status.ACTIVE
    assert not event.status.ended
    assert event.version == 1
    assert event.is_effective(T0)
    assert event.is_effective(T0 + HOUR - US)
    assert not event.is_effective(T0 + HOUR)
    assert not event.is_due(T0 + HOUR - US)
    assert event.is_due(T0 + HOUR)


def test_close_records_who_why_and_when() -> None:
    event = new()
    closed = event.close(by="bob@example.com", reason="  work finished ", now=T0 + timedelta(minutes=5))
    assert closed.status is Status.CLOSED
    assert closed.status.ended
    assert closed.closed_by == "bob@example.com"
    assert closed.closed_reason == "work finished"
    assert closed.ended_at == closed.updated_at == T0 + timedelta(minutes=5)
    assert closed.id == event.id
    assert event.status is Status.ACTIVE  # the original is untouched
    assert not closed.is_effective(T0 + timedelta(minutes=6))


@pytest.mark.parametrize(
    ("by", "reason", "message"),
    [
        (" ", "done", "closed_by is required"),
        ("bob", "  ", "close reason is required"),
        ("bob", "r" * 501, "too long"),
    ],
)
def test_close_needs_by_and_reason(by: str, reason: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        new().close(by=by, reason=reason, now=T0)


def test_close_reason_at_the_limit() -> None:
    assert new().close(by="bob", reason="r" * 500, now=T0).closed_reason == "r" * 500


def test_expire_only_when_due() -> None:
    event = new()
    with pytest.raises(InvalidTransition, match="not due") as info:
        event.expire(now=event.expires_at - US)
    assert info.value.event is event
    assert info.value.attempted == "expire"
    expired = event.expire(now=event.expires_at)
    assert expired.status is Status.EXPIRED
    assert expired.ended_at == event.expires_at
    assert expired.closed_by is None
    late = event.expire(now=event.expires_at + HOUR)
    assert late.ended_at == event.expires_at + HOUR


@pytest.mark.parametrize(
    ("make", "status"), [(closed_event, "closed"), (expired_event, "expired")], ids=["closed", "expired"]
)
def test_ended_events_are_terminal(make: Any, status: str) -> None:
    ended = make()
    later = T0 + 5 * HOUR
    with pytest.raises(InvalidTransition, match=f"already {status}") as info:
        ended.close(by="carol", reason="again", now=later)
    assert info.value.event is ended
    assert info.value.attempted == "close"
    assert f"cannot close event {ended.id}" in str(info.value)
    with pytest.raises(InvalidTransition, match=f"already {status}"):
        ended.expire(now=later)


def test_review_only_on_ended_events_and_only_once() -> None:
    with pytest.raises(InvalidTransition, match="still active"):
        new().review(by="carol", notes="ok", now=T0)
    for ended in (closed_event(), expired_event()):
        reviewed = ended.review(by="carol", notes="  fine  ", now=T0 + 2 * HOUR)
        assert reviewed.reviewed_by == "carol"
        assert reviewed.reviewed_at == T0 + 2 * HOUR
        assert reviewed.review_notes == "fine"
        assert reviewed.status is ended.status
        with pytest.raises(InvalidTransition, match="already reviewed by carol"):
            reviewed.review(by="dave", notes="again", now=T0 + 3 * HOUR)


@pytest.mark.parametrize(
    ("by", "notes", "message"),
    [
        ("carol", " ", "review notes is required"),
        (" ", "ok", "reviewed_by is required"),
        ("", "ok", "reviewed_by is required"),
        ("carol", "n" * 2001, "review notes is too long"),
    ],
)
def test_review_needs_reviewer_and_notes(by: str, notes: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        closed_event().review(by=by, notes=notes, now=T0 + 2 * HOUR)


def test_inconsistent_states_are_refused() -> None:
    data = new().model_dump()
    with pytest.raises(ValidationError, match="active event has no"):
        BreakGlassEvent.model_validate(data | {"closed_by": "bob"})
    with pytest.raises(ValidationError, match="closed event needs"):
        BreakGlassEvent.model_validate(data | {"status": "closed", "ended_at": T0})
    with pytest.raises(ValidationError, match="expired event needs ended_at"):
        BreakGlassEvent.model_validate(data | {"status": "expired"})
    with pytest.raises(ValidationError, match="only an ended event can be reviewed"):
        BreakGlassEvent.model_validate(data | {"reviewed_by": "carol", "reviewed_at": T0})


def test_updated_refuses_status_changes() -> None:
    event = new()
    for status in (Status.CLOSED, "expired"):
        with pytest.raises(InvalidTransition, match="status changes only through close or expire"):
            event.updated(status=status)
    assert event.updated(status=Status.ACTIVE, escalated=True).escalated is True
    with pytest.raises(ValidationError):
        event.updated(justification="too short")


def test_updated_returns_a_validated_copy() -> None:
    event = new()
    warned = event.updated(warned_at=datetime(2026, 3, 1, 14, 45, tzinfo=timezone(timedelta(hours=2))))
    assert warned.warned_at == T0 + timedelta(minutes=45)
    assert warned.warned_at is not None and warned.warned_at.tzinfo is UTC
    assert event.warned_at is None


# -- outbox ------------------------------------------------------------------------------------


def test_with_outbox_stamps_the_version_of_the_write_and_keeps_order() -> None:
    event = new().with_outbox("audit_post", "dm_invoked", version=1)
    assert event.outbox == (
        OutboxEntry(kind=K.AUDIT_POST, version=1),
        OutboxEntry(kind=K.DM_INVOKED, version=1),
    )
    again = event.with_outbox("dm_invoked", version=1)
    assert again.outbox == event.outbox  # the same entry is not owed twice
    assert new().with_outbox("audit_update").outbox == (OutboxEntry(kind=K.AUDIT_UPDATE, version=2),)
    with pytest.raises(ValueError, match="no_such_kind"):
        new().with_outbox("no_such_kind")


def test_a_later_change_never_merges_away_a_pending_update() -> None:
    """Close owes audit_update at v2; a review owes it again at v3: both stay owed, and removing the
    first (what an in-flight delivery sent) leaves the second."""
    closed = new().with_outbox("audit_update", version=2)
    reviewed = closed.with_outbox("audit_update", "review_thread", version=3)
    assert reviewed.owed_kinds == (K.AUDIT_UPDATE, K.AUDIT_UPDATE, K.REVIEW_THREAD)
    after = reviewed.with_outbox(remove=[OutboxEntry(kind=K.AUDIT_UPDATE, version=2)])
    assert after.outbox == (
        OutboxEntry(kind=K.AUDIT_UPDATE, version=3),
        OutboxEntry(kind=K.REVIEW_THREAD, version=3),
    )


def test_outboxes_stored_as_kind_strings_still_read() -> None:
    data = new().model_dump(mode="json") | {"outbox": ["audit_post", "dm_invoked"]}
    event = BreakGlassEvent.model_validate(data)
    assert event.outbox == (
        OutboxEntry(kind=K.AUDIT_POST, version=0),
        OutboxEntry(kind=K.DM_INVOKED, version=0),
    )
    assert BreakGlassEvent.model_validate_json(event.model_dump_json()) == event


def test_clearing_the_outbox_resets_attempts_and_next_time() -> None:
    event = new().with_outbox("audit_post", "dm_invoked").updated(outbox_attempts=3, outbox_next_at=T0 + HOUR)
    partial = event.with_outbox(remove=event.outbox[:1])
    assert partial.outbox_attempts == 3
    assert partial.outbox_next_at == T0 + HOUR
    cleared = partial.with_outbox(remove=partial.outbox)
    assert cleared.outbox == ()
    assert cleared.outbox_attempts == 0
    assert cleared.outbox_next_at is None


def test_outbox_attempts_cannot_be_negative() -> None:
    with pytest.raises(ValidationError):
        new().updated(outbox_attempts=-1)


# -- store.timeutil ----------------------------------------------------------------------------

OFFSETS = st.timedeltas(min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59))
TIMEZONES = st.one_of(
    st.just(UTC), st.builds(timezone, OFFSETS.map(lambda d: timedelta(minutes=d // timedelta(minutes=1))))
)
AWARE = st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=TIMEZONES)


@given(AWARE)
def test_format_ts_is_fixed_width_utc(value: datetime) -> None:
    text = format_ts(value)
    assert len(text) == TIMESTAMP_WIDTH == 27
    assert text.endswith("Z")
    assert text[4] == "-" and text[10] == "T" and text[19] == "."


@given(AWARE, AWARE)
def test_format_ts_string_order_is_time_order(a: datetime, b: datetime) -> None:
    assert (format_ts(a) < format_ts(b)) == (a < b)
    assert (format_ts(a) == format_ts(b)) == (a == b)


@given(AWARE)
def test_parse_ts_round_trips(value: datetime) -> None:
    parsed = parse_ts(format_ts(value))
    assert parsed == value
    assert parsed.tzinfo is UTC


def test_format_ts_examples() -> None:
    assert format_ts(T0) == "2026-03-01T12:00:00.000000Z"
    assert format_ts(datetime(2026, 3, 1, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))) == (
        "2026-03-01T12:00:00.000005Z"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T12:00:00Z", T0),
        ("2026-03-01T12:00:00z", T0),
        ("2026-03-01T14:00:00+02:00", T0),
        ("2026-03-01T12:00:00.000001Z", T0 + US),
        (" 2026-03-01T12:00:00.000000Z\n", T0),
    ],
)
def test_parse_ts_accepts_rfc3339(text: str, expected: datetime) -> None:
    assert parse_ts(text) == expected
    assert parse_ts(text).tzinfo is UTC


def test_naive_datetimes_are_refused_by_timeutil() -> None:
    naive = datetime(2026, 3, 1, 12, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        format_ts(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        ensure_utc(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_ts("2026-03-01T12:00:00")
    with pytest.raises(ValueError, match="Invalid isoformat"):
        parse_ts("yesterday")


def test_format_ts_refuses_years_that_would_break_the_width() -> None:
    with pytest.raises(ValueError, match="out of range"):
        format_ts(datetime(999, 1, 1, tzinfo=UTC))


# -- store.url ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///breakglass.db", ("sqlite", "breakglass.db")),
        ("sqlite:///data/bg.db", ("sqlite", "data/bg.db")),
        ("sqlite:////var/lib/breakglass/bg.db", ("sqlite", "/var/lib/breakglass/bg.db")),
        ("sqlite://bg.db", ("sqlite", "bg.db")),
        ("sqlite://data/bg.db", ("sqlite", "data/bg.db")),
        ("  sqlite:///bg.db  ", ("sqlite", "bg.db")),
        ("dynamodb://breakglass-events", ("dynamodb", "breakglass-events")),
        ("dynamodb:///breakglass-events", ("dynamodb", "breakglass-events")),
        ("dynamodb://BreakGlass_Events.v2", ("dynamodb", "BreakGlass_Events.v2")),
    ],
)
def test_parse_store_url(url: str, expected: tuple[str, str]) -> None:
    assert parse_store_url(url) == expected


def test_default_store_url_is_a_relative_sqlite_file() -> None:
    assert parse_store_url(DEFAULT_STORE_URL) == ("sqlite", "breakglass.db")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "give a file"),
        ("sqlite:///", "give a file"),
        ("dynamodb://", "give a table name"),
        ("dynamodb:///", "give a table name"),
        ("dynamodb://table/extra", "give a table name"),
        ("dynamodb://ab", "give a table name"),
        ("dynamodb://bad table", "give a table name"),
        ("dynamodb://table?region=eu-west-1", "give a table name"),
        ("postgres://localhost/db", "use sqlite"),
        ("breakglass.db", "use sqlite"),
        ("", "use sqlite"),
    ],
)
def test_invalid_store_urls(url: str, message: str) -> None:
    with pytest.raises(InvalidStoreURL, match=message):
        parse_store_url(url)
    assert issubclass(InvalidStoreURL, ValueError)


def test_open_store_sqlite(tmp_path: Path) -> None:
    opened = open_store(f"sqlite:///{tmp_path}/nested/dir/events.db")
    try:
        assert isinstance(opened, SQLiteStore)
        assert (tmp_path / "nested" / "dir" / "events.db").exists()
        opened.ping()
    finally:
        opened.disconnect()


# -- store.base helpers ------------------------------------------------------------------------


def test_cursor_round_trip_and_garbage() -> None:
    value = {"c": "2026-03-01T12:00:00.000000Z", "i": "0123456789abcdef"}
    cursor = encode_cursor(value)
    assert "=" not in cursor
    assert decode_cursor(cursor) == value
    for bad in ("!!!", "W10", "bnVsbA"):  # invalid base64, a JSON list, JSON null
        with pytest.raises(InvalidCursor):
            decode_cursor(bad)


@pytest.mark.parametrize(("limit", "ok"), [(0, False), (1, True), (500, True), (501, False)])
def test_check_limit(limit: int, ok: bool) -> None:
    if ok:
        assert check_limit(limit) == limit
    else:
        with pytest.raises(ValueError, match="limit"):
            check_limit(limit)
