"""Extensions count toward the rate limits and escalation (issue 22), decided by the store inside the
extension's own atomic write, exactly as for a create (store/limits.py): an extension is one more entry in
the windows of the event's invoker, Slack user and profile. On every backend: each limit at its boundary,
the refusal changing nothing, escalation in the same write, racing extends and creates, and an SQLite file
from before the extensions table (its extensions count too). The real-process race is in
tests/test_multiprocess_extend_limits.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from store.base import escalate_extension
from store.errors import ExtendedMeanwhile, InvalidTransition, LimitReached
from store.limits import Limits
from store.model import BreakGlassEvent
from store.sqlite import SQLiteStore
from tests.store_fixtures import BACKENDS, HOUR, T0, make_event, open_test_store, run_concurrently

pytest_plugins = ["tests.store_fixtures"]

MINUTE = timedelta(minutes=1)
TICK = timedelta(microseconds=1)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with open_test_store(request.param, request, tmp_path) as opened:
        yield opened


def extend(
    store: Any, event: BreakGlassEvent, *, now: datetime, limits: Limits, **kw: Any
) -> BreakGlassEvent:
    kw.setdefault("duration", 30 * MINUTE)
    kw.setdefault("max_total", 12 * HOUR)
    kw.setdefault("seen", len(event.extensions))
    return store.extend(
        event.id, by="U0IC", reason="failover still running on prod", now=now, limits=limits, **kw
    )


def refused_extend(store: Any, event: BreakGlassEvent, *, now: datetime, limits: Limits) -> LimitReached:
    """The extension is refused by a limit, and nothing changed: the event, nor any window (a later entry
    is decided as if the refused one had never been asked for)."""
    before = store.get(event.id)
    with pytest.raises(LimitReached) as info:
        extend(store, before, now=now, limits=limits)
    assert store.get(event.id) == before
    return info.value


def test_an_extension_counts_toward_per_user_and_is_refused_at_the_limit(store: Any) -> None:
    limits = Limits(window=HOUR, per_user=3)
    first = store.create(make_event(profile="a", duration=2 * HOUR), limits=limits)
    extended = extend(store, first, now=T0 + 10 * MINUTE, limits=limits)  # the 2nd entry
    store.create(make_event(profile="b", now=T0 + 20 * MINUTE), limits=limits)  # the 3rd
    # a 4th entry is refused, whether it is an extension or an invocation
    refusal = refused_extend(store, extended, now=T0 + HOUR - TICK, limits=limits)
    assert (refusal.kind, refusal.limit, refusal.profile) == ("per_user", 3, "a")
    assert refusal.retry_at == T0 + HOUR  # when the creation at T0 leaves the window
    with pytest.raises(LimitReached) as info:
        store.create(make_event(profile="c", now=T0 + 30 * MINUTE), limits=limits)
    assert info.value.retry_at == T0 + HOUR
    # someone else's budget is their own
    store.create(make_event(invoker="bob@example.com", profile="c", now=T0 + 30 * MINUTE), limits=limits)
    # at the retry time the window holds the extension (T0+10m) and the creation at T0+20m: one more fits
    again = extend(store, extended, now=T0 + HOUR, limits=limits)
    assert len(again.extensions) == 2
    assert refused_extend(store, again, now=T0 + HOUR, limits=limits).retry_at == T0 + 70 * MINUTE


def test_an_extension_counts_for_the_holder_whoever_extends_it(store: Any) -> None:
    """The entry is the holder's (invoker and Slack user), not the extender's: an incident commander
    extending alice's access spends alice's budget, and a new identity of alice's keeps it."""
    limits = Limits(window=HOUR, per_user=2)
    event = store.create(make_event(profile="a", slack_user_id="U0ALICE"), limits=limits)
    extend(store, event, now=T0 + MINUTE, limits=limits)
    renamed = make_event(
        invoker="alice+1@example.com", slack_user_id="U0ALICE", profile="b", now=T0 + 2 * MINUTE
    )
    with pytest.raises(LimitReached) as info:
        store.create(renamed, limits=limits)
    assert info.value.kind == "per_user"
    store.create(make_event(invoker="icuser@example.com", slack_user_id="U0IC", profile="b"), limits=limits)


def test_an_extension_counts_toward_per_profile(store: Any) -> None:
    limits = Limits(window=2 * HOUR, per_profile=2)
    alice = store.create(make_event(invoker="a@example.com"), limits=limits)
    store.create(make_event(invoker="b@example.com", now=T0 + 30 * MINUTE), limits=limits)
    refusal = refused_extend(store, alice, now=T0 + 40 * MINUTE, limits=limits)
    assert (refusal.kind, refusal.limit, refusal.retry_at) == ("per_profile", 2, T0 + 2 * HOUR)
    # another profile is not limited by this one
    other = store.create(make_event(invoker="c@example.com", profile="other", now=T0 + MINUTE), limits=limits)
    extend(store, other, now=T0 + 2 * MINUTE, limits=limits)


def test_an_extension_takes_a_place_an_invocation_then_cannot(store: Any) -> None:
    limits = Limits(window=2 * HOUR, per_profile=2)
    alice = store.create(make_event(invoker="a@example.com"), limits=limits)
    extend(store, alice, now=T0 + 10 * MINUTE, limits=limits)
    with pytest.raises(LimitReached) as info:
        store.create(make_event(invoker="b@example.com", now=T0 + 20 * MINUTE), limits=limits)
    assert (info.value.kind, info.value.retry_at) == ("per_profile", T0 + 2 * HOUR)


def test_an_extension_crossing_escalate_after_is_escalated_in_the_same_write(store: Any) -> None:
    limits = Limits(window=HOUR, escalate_after=2)
    event = store.create(make_event(profile="a"), limits=limits)
    assert event.escalated is False

    def escalate(ev: BreakGlassEvent) -> BreakGlassEvent:
        return escalate_extension(ev).with_outbox("escalation")

    extended = extend(
        store, event, now=T0 + MINUTE, limits=limits, escalate=escalate, outbox=["extend_thread"]
    )
    assert extended.escalated is True and extended.extensions[-1].escalated is True
    assert extended.owed_kinds == ("extend_thread", "escalation")
    assert all(e.version == extended.version for e in extended.outbox)
    assert store.get(event.id) == extended
    # the default escalation marks the extension and the event, and owes nothing
    other = store.create(make_event(profile="b", now=T0 + HOUR + 2 * MINUTE), limits=limits)
    assert other.escalated is False  # T0 and T0+1m left the window
    again = extend(store, other, now=T0 + HOUR + 3 * MINUTE, limits=limits)
    assert (again.escalated, again.extensions[-1].escalated, again.owed_kinds) == (True, True, ())


def test_an_extension_below_escalate_after_is_not_escalated(store: Any) -> None:
    limits = Limits(window=HOUR, escalate_after=3)
    event = store.create(make_event(profile="a"), limits=limits)
    extended = extend(store, event, now=T0 + MINUTE, limits=limits)
    assert (extended.escalated, extended.extensions[-1].escalated) == (False, False)
    # the extension counted: the next invocation is the 3rd entry in the window
    assert store.create(make_event(profile="b", now=T0 + 2 * MINUTE), limits=limits).escalated is True


def test_bounds_refuse_before_the_limits_and_extensions_zero_still_refuses(store: Any) -> None:
    limits = Limits(window=HOUR, per_user=1)
    event = store.create(make_event(), limits=limits)
    with pytest.raises(InvalidTransition, match="allows 0 extension"):
        extend(store, event, now=T0 + MINUTE, limits=limits, max_extensions=0)
    with pytest.raises(ExtendedMeanwhile):
        extend(store, event, now=T0 + MINUTE, limits=limits, seen=1)
    assert store.get(event.id) == event
    with pytest.raises(LimitReached):  # within its bounds: the limit decides
        extend(store, event, now=T0 + MINUTE, limits=limits)
    assert store.get(event.id) == event


def test_without_limits_an_extension_is_still_recorded_in_the_windows_it_belongs_to(store: Any) -> None:
    """An extension with no limits at all changes nothing else; SQLite still counts it once limits apply
    (its windows are the rows themselves), as it counts every creation."""
    event = store.create(make_event())
    extended = extend(store, event, now=T0 + MINUTE, limits=Limits())
    assert store.get(event.id) == extended and len(extended.extensions) == 1
    if isinstance(store, SQLiteStore):
        with pytest.raises(LimitReached):
            store.create(make_event(profile="b", now=T0 + 2 * MINUTE), limits=Limits(window=HOUR, per_user=2))


def test_racing_extends_and_creates_never_exceed_per_user(store: Any) -> None:
    """One entry left in alice's window; at once: extensions of her two events (each racing itself too)
    and invocations of other profiles. Exactly one of them takes the place."""
    limits = Limits(window=HOUR, per_user=3)
    a = store.create(make_event(profile="a"), limits=limits)
    b = store.create(make_event(profile="b", now=T0 + TICK), limits=limits)

    def work(i: int) -> BreakGlassEvent:
        now = T0 + MINUTE + i * TICK
        if i % 3 == 0:
            return extend(store, a, now=now, limits=limits)
        if i % 3 == 1:
            return extend(store, b, now=now, limits=limits)
        return store.create(make_event(profile=f"p{i}", now=now), limits=limits)

    results = run_concurrently(9, work)
    won = [r for kind, r in results if kind == "ok"]
    errors = [r for kind, r in results if kind == "error"]
    assert len(won) == 1, results
    assert all(isinstance(e, (LimitReached, ExtendedMeanwhile)) for e in errors), errors
    assert any(isinstance(e, LimitReached) and e.kind == "per_user" for e in errors)
    mine = store.list_by_invoker("alice@example.com", limit=100).items
    entries = len(mine) + sum(len(e.extensions) for e in mine)
    assert entries == 3, mine


def test_an_sqlite_file_from_before_the_extensions_table_counts_its_extensions(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = SQLiteStore(path)
    event = store.create(make_event())
    extend(store, event, now=T0 + MINUTE, limits=Limits())
    store.disconnect()
    with sqlite3.connect(path) as conn:  # as a schema 3 file: no extensions table
        conn.execute("DROP TABLE extensions")
        conn.execute("PRAGMA user_version=3")
        conn.execute(  # a damaged row: skipped by the copy, it never keeps the file from opening
            "INSERT INTO events (id, invoker, profile, status, created_at, expires_at, version, data) "
            "VALUES ('0000000000000bad', 'x', 'p', 'active', 'x', 'x', 1, '{\"extensions\": [{\"at\": 1}]}')"
        )
    reopened = SQLiteStore(path)
    assert len(reopened.get(event.id).extensions) == 1
    with pytest.raises(LimitReached):
        reopened.create(make_event(profile="b", now=T0 + 2 * MINUTE), limits=Limits(window=HOUR, per_user=2))
    reopened.create(make_event(profile="b", now=T0 + 2 * MINUTE), limits=Limits(window=HOUR, per_user=3))
