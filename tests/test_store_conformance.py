"""One conformance suite for every `Store` backend (see `store_fixtures.store` for the backends).

The contract is the docstrings of `store.base.Store`; each test names the promise it checks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from store.base import MAX_PAGE_SIZE, InvalidCursor, Store, encode_cursor, mutate
from store.dynamodb import guard_id
from store.errors import (
    ConcurrentModification,
    EventNotFound,
    ExtendedMeanwhile,
    InvalidTransition,
    StackedAccess,
    StoreError,
)
from store.model import BreakGlassEvent, Status, new_event_id
from store.tasks import OwedTask, TaskKind
from tests.store_fixtures import BACKENDS, HOUR, T0, all_pages, make_event, open_test_store, run_concurrently

pytest_plugins = ["tests.store_fixtures"]

MINUTE = timedelta(minutes=1)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with open_test_store(request.param, request, tmp_path) as opened:
        yield opened


def test_backend_satisfies_the_protocol(store: Any) -> None:
    assert isinstance(store, Store)
    store.ping()


# -- create / get ------------------------------------------------------------------------------


def test_create_then_get_returns_the_same_event(store: Any) -> None:
    event = make_event()
    assert event.incident is None
    created = store.create(event)
    assert created == event
    assert created.version == 1
    fetched = store.get(event.id)
    assert fetched == event
    assert fetched.incident is None
    assert fetched.status is Status.ACTIVE


def test_every_field_round_trips(store: Any) -> None:
    event = make_event(
        invoker="o'brien+ops@example.com",
        profile='prod"admin#1',
        justification="  Rollback of 🚀 deploy\n\twith ‏RTL‏ text, `code` and *mrkdwn* <!here>  ",
        incident="https://tickets.example.com/INC-42",
        request_id="req-123",
        audit_channel="C0AUDIT",
        audit_ts="1700000000.000100",
        outbox=("audit_post", "dm_invoked"),
        outbox_attempts=2,
        outbox_next_at=T0 + timedelta(minutes=5, microseconds=7),
        warned_at=T0 + timedelta(minutes=50),
        escalated=True,
        # A duration that is not a whole number of milliseconds: float nanoseconds lose the last µs.
        duration=timedelta(minutes=47, microseconds=261327),
    )
    store.create(event)
    assert store.get(event.id) == event

    closed = store.close(
        event.id, by="bob@example.com", reason="done", now=T0 + 10 * MINUTE, outbox=("close_thread",)
    )
    assert store.get(event.id) == closed
    reviewed = store.save(closed.review(by="carol@example.com", notes="looked fine ✅", now=T0 + 2 * HOUR))
    fetched = store.get(event.id)
    assert fetched == reviewed
    assert fetched.reviewed_by == "carol@example.com"
    assert fetched.reviewed_at == T0 + 2 * HOUR
    assert fetched.review_notes == "looked fine ✅"
    assert fetched.closed_by == "bob@example.com"
    assert fetched.closed_reason == "done"
    assert fetched.ended_at == T0 + 10 * MINUTE
    assert fetched.owed_kinds == ("audit_post", "dm_invoked", "close_thread")
    assert fetched.escalated is True
    assert fetched.version == 3


def test_outbox_without_next_attempt_time_round_trips(store: Any) -> None:
    event = make_event().with_outbox("audit_post")
    assert event.outbox_next_at is None
    store.create(event)
    assert store.get(event.id) == event
    assert store.get(event.id).outbox_next_at is None


@pytest.mark.parametrize("micros", [1, 261327, 999999, 4 * 3600 * 10**6 - 1])
def test_odd_durations_round_trip(store: Any, micros: int) -> None:
    event = make_event(duration=timedelta(microseconds=micros))
    store.create(event)
    fetched = store.get(event.id)
    assert fetched.duration == event.duration
    assert fetched.expires_at == event.expires_at


@pytest.mark.parametrize("event_id", ["0123456789abcdef", "", "not-an-id", "guard#", None])
def test_get_unknown_id_raises_event_not_found(store: Any, event_id: str | None) -> None:
    store.create(make_event())
    if event_id is None:  # the id under which DynamoDB keeps its stacking guard
        event_id = guard_id("alice@example.com", "prod-admin")
    with pytest.raises(EventNotFound) as info:
        store.get(event_id)
    assert info.value.event_id == event_id


def test_writes_to_unknown_id_raise_event_not_found(store: Any) -> None:
    ghost = make_event()
    with pytest.raises(EventNotFound):
        store.close(ghost.id, by="bob", reason="done", now=T0)
    with pytest.raises(EventNotFound):
        store.expire(ghost.id, now=T0 + 2 * HOUR)
    with pytest.raises(EventNotFound):
        store.save(ghost.updated(escalated=True))
    with pytest.raises(EventNotFound):
        store.get(ghost.id)


def test_create_refuses_ended_events(store: Any) -> None:
    closed = make_event().close(by="bob", reason="done", now=T0)
    with pytest.raises(InvalidTransition):
        store.create(closed)
    with pytest.raises(EventNotFound):
        store.get(closed.id)


def test_create_with_an_existing_id_does_not_overwrite(store: Any) -> None:
    first = store.create(make_event())
    store.close(first.id, by="bob", reason="done", now=T0 + MINUTE)
    same_id = make_event(id=first.id, profile="other", now=T0 + 2 * MINUTE)
    with pytest.raises(ConcurrentModification):
        store.create(same_id)
    assert store.get(first.id).status is Status.CLOSED
    store.create(make_event(profile="other", now=T0 + 3 * MINUTE))  # and no guard was left behind


# -- stacking ----------------------------------------------------------------------------------


def test_second_create_on_same_invoker_and_profile_is_stacked(store: Any) -> None:
    first = store.create(make_event())
    second = make_event(now=T0 + 5 * MINUTE)
    with pytest.raises(StackedAccess) as info:
        store.create(second)
    assert info.value.existing == first
    assert first.id in str(info.value)
    with pytest.raises(EventNotFound):
        store.get(second.id)


def test_stacking_is_per_invoker_and_per_profile(store: Any) -> None:
    store.create(make_event())
    store.create(make_event(profile="staging-admin"))
    store.create(make_event(invoker="bob@example.com"))
    store.create(make_event(invoker="bob@example.com", profile="staging-admin"))
    assert len(store.list_active()) == 4


def test_stacking_keys_are_not_confused_by_separators(store: Any) -> None:
    # invoker/profile pairs whose naive concatenation would collide
    store.create(make_event(invoker="a#b", profile="c"))
    store.create(make_event(invoker="a", profile="b#c"))
    store.create(make_event(invoker='a","b', profile="c"))
    store.create(make_event(invoker="a", profile='b","c'))
    assert len(store.list_active()) == 4


def test_event_past_expiry_does_not_block_and_can_still_be_expired(store: Any) -> None:
    old = store.create(make_event(duration=HOUR))
    # Still status active (the sweeper has not run) but past its expiry: does not block.
    at_expiry = make_event(now=T0 + HOUR, duration=HOUR)
    new = store.create(at_expiry)
    assert store.get(old.id).status is Status.ACTIVE

    expired = store.expire(old.id, now=T0 + HOUR + MINUTE)
    assert expired.status is Status.EXPIRED
    assert store.get(old.id).status is Status.EXPIRED
    # Expiring the old event must not release the new event's claim.
    with pytest.raises(StackedAccess) as info:
        store.create(make_event(now=T0 + HOUR + 2 * MINUTE))
    assert info.value.existing == new


def test_closing_an_event_past_expiry_does_not_release_the_newer_claim(store: Any) -> None:
    old = store.create(make_event())
    new = store.create(make_event(now=T0 + 2 * HOUR))
    store.close(old.id, by="sweeper", reason="late close", now=T0 + 2 * HOUR + MINUTE)
    with pytest.raises(StackedAccess) as info:
        store.create(make_event(now=T0 + 2 * HOUR + 2 * MINUTE))
    assert info.value.existing.id == new.id


def test_one_microsecond_before_expiry_still_blocks(store: Any) -> None:
    first = store.create(make_event())
    with pytest.raises(StackedAccess):
        store.create(make_event(now=T0 + HOUR - timedelta(microseconds=1)))
    assert store.get(first.id).status is Status.ACTIVE


def test_create_works_again_after_close(store: Any) -> None:
    first = store.create(make_event())
    store.close(first.id, by="alice@example.com", reason="finished", now=T0 + 5 * MINUTE)
    second = store.create(make_event(now=T0 + 6 * MINUTE))
    assert store.get(second.id).status is Status.ACTIVE
    with pytest.raises(StackedAccess) as info:
        store.create(make_event(now=T0 + 7 * MINUTE))
    assert info.value.existing == second


def test_create_works_again_after_expire(store: Any) -> None:
    first = store.create(make_event())
    store.expire(first.id, now=T0 + HOUR)
    second = store.create(make_event(now=T0 + HOUR))
    assert second.status is Status.ACTIVE
    with pytest.raises(StackedAccess) as info:
        store.create(make_event(now=T0 + HOUR + MINUTE))
    assert info.value.existing == second


def test_active_event_found_after_many_newer_events_on_other_profiles(store: Any) -> None:
    """The Sentinel seed bug: `Limit 1` + FilterExpression only looked at the newest event."""
    on_a = store.create(make_event(profile="profile-a"))
    for n in range(30):
        other = store.create(make_event(profile=f"profile-{n:02d}", now=T0 + (n + 1) * MINUTE))
        if n % 2:
            store.close(other.id, by="alice@example.com", reason="done", now=T0 + (n + 1) * MINUTE)
    with pytest.raises(StackedAccess) as info:
        store.create(make_event(profile="profile-a", now=T0 + 45 * MINUTE))
    assert info.value.existing == on_a


def test_fifty_threads_create_exactly_one(store: Any) -> None:
    candidates = [make_event() for _ in range(50)]
    assert len({c.id for c in candidates}) == 50
    results = run_concurrently(50, lambda i: store.create(candidates[i]))

    winners = [value for kind, value in results if kind == "ok"]
    errors = [value for kind, value in results if kind == "error"]
    assert len(winners) == 1, errors[:3]
    winner = winners[0]
    assert len(errors) == 49
    assert all(isinstance(e, StackedAccess) for e in errors), {type(e).__name__ for e in errors}
    assert {e.existing.id for e in errors} == {winner.id}
    assert [e.id for e in store.list_active()] == [winner.id]
    assert store.list_by_invoker("alice@example.com").items == [winner]


# -- close / expire ----------------------------------------------------------------------------


def test_two_threads_closing_one_event(store: Any) -> None:
    for round_ in range(3):
        event = store.create(make_event(profile=f"p{round_}"))
        results = run_concurrently(
            2, lambda i, event=event: store.close(event.id, by=f"closer-{i}", reason="done", now=T0 + MINUTE)
        )
        kinds = sorted(kind for kind, _ in results)
        assert kinds == ["error", "ok"], results
        winner = next(value for kind, value in results if kind == "ok")
        loser = next(value for kind, value in results if kind == "error")
        assert winner.status is Status.CLOSED
        assert winner.version == 2
        assert isinstance(loser, InvalidTransition)
        assert loser.event.closed_by == winner.closed_by
        assert loser.event.status is Status.CLOSED
        assert "closed" in str(loser)
        assert store.get(event.id) == winner


def test_close_and_expire_race_has_one_winner(store: Any) -> None:
    for round_ in range(3):
        event = store.create(make_event(profile=f"p{round_}"))
        due = T0 + HOUR

        def work(i: int, event: BreakGlassEvent = event, due: datetime = due) -> BreakGlassEvent:
            if i == 0:
                return store.close(event.id, by="bob", reason="done", now=due)
            return store.expire(event.id, now=due)

        results = run_concurrently(2, work)
        oks = [value for kind, value in results if kind == "ok"]
        errors = [value for kind, value in results if kind == "error"]
        assert len(oks) == 1, results
        assert len(errors) == 1 and isinstance(errors[0], InvalidTransition)
        assert store.get(event.id) == oks[0]
        assert errors[0].event.status is oks[0].status


def test_expire_before_due_is_refused_and_changes_nothing(store: Any) -> None:
    event = store.create(make_event())
    with pytest.raises(InvalidTransition, match="not due") as info:
        store.expire(event.id, now=event.expires_at - timedelta(microseconds=1))
    assert info.value.event == event
    assert store.get(event.id) == event
    with pytest.raises(StackedAccess):  # and it still holds its claim
        store.create(make_event(now=T0 + MINUTE))
    expired = store.expire(event.id, now=event.expires_at)
    assert expired.status is Status.EXPIRED
    assert expired.ended_at == event.expires_at
    assert expired.version == 2


def test_ended_events_are_terminal(store: Any) -> None:
    closed = store.create(make_event())
    store.close(closed.id, by="bob", reason="done", now=T0 + MINUTE)
    with pytest.raises(InvalidTransition, match="already closed") as info:
        store.close(closed.id, by="carol", reason="again", now=T0 + 2 * MINUTE)
    assert info.value.event.closed_by == "bob"
    with pytest.raises(InvalidTransition, match="already closed"):
        store.expire(closed.id, now=T0 + 2 * HOUR)

    expired = store.create(make_event(profile="other"))
    store.expire(expired.id, now=T0 + HOUR)
    with pytest.raises(InvalidTransition, match="already expired"):
        store.close(expired.id, by="bob", reason="done", now=T0 + 2 * HOUR)
    with pytest.raises(InvalidTransition, match="already expired"):
        store.expire(expired.id, now=T0 + 2 * HOUR)
    assert store.get(expired.id).version == 2
    assert store.get(closed.id).version == 2


def test_close_stores_outbox_with_the_status(store: Any) -> None:
    event = store.create(make_event().with_outbox("audit_post"))
    closed = store.close(
        event.id, by="bob", reason="done", now=T0 + MINUTE, outbox=("close_thread", "audit_post", "close_dm")
    )
    assert closed.status is Status.CLOSED
    assert closed.owed_kinds == ("audit_post", "close_thread", "close_dm")
    fetched = store.get(event.id)
    assert fetched == closed
    assert fetched.updated_at == T0 + MINUTE


def test_expire_stores_outbox_with_the_status(store: Any) -> None:
    event = store.create(make_event())
    expired = store.expire(event.id, now=T0 + HOUR, outbox=("expire_thread",))
    assert store.get(event.id) == expired
    assert expired.owed_kinds == ("expire_thread",)
    assert [e.id for e in store.list_owed(now=T0 + HOUR)] == [event.id]


def test_close_with_invalid_arguments_writes_nothing(store: Any) -> None:
    event = store.create(make_event())
    with pytest.raises(ValueError, match="close reason"):
        store.close(event.id, by="bob", reason="   ", now=T0 + MINUTE)
    with pytest.raises(ValueError, match="closed_by"):
        store.close(event.id, by=" ", reason="done", now=T0 + MINUTE)
    assert store.get(event.id) == event


# -- save / mutate -----------------------------------------------------------------------------


def test_save_bumps_version_and_persists(store: Any) -> None:
    event = store.create(make_event())
    saved = store.save(event.updated(audit_channel="C1", audit_ts="1.2", updated_at=T0 + MINUTE))
    assert saved.version == 2
    assert store.get(event.id) == saved
    again = store.save(saved.updated(escalated=True))
    assert again.version == 3
    assert store.get(event.id) == again


def test_save_of_a_stale_copy_is_refused(store: Any) -> None:
    event = store.create(make_event())
    winner = store.save(event.updated(audit_ts="1.1"))
    with pytest.raises(ConcurrentModification) as info:
        store.save(event.updated(audit_ts="2.2"))
    assert info.value.event_id == event.id
    assert store.get(event.id) == winner


def test_save_refuses_a_status_change(store: Any) -> None:
    event = store.create(make_event())
    closed = event.close(by="bob", reason="done", now=T0 + MINUTE)
    with pytest.raises((InvalidTransition, ConcurrentModification)):
        store.save(closed)
    assert store.get(event.id) == event
    with pytest.raises(StackedAccess):  # the claim is untouched
        store.create(make_event(now=T0 + 2 * MINUTE))


@pytest.mark.parametrize(
    "change",
    [
        {"invoker": "mallory@example.com"},
        {"profile": "other-profile"},
        {"duration": 2 * HOUR, "expires_at": T0 + 2 * HOUR},
        {"created_at": T0 - HOUR, "expires_at": T0},
    ],
    ids=["invoker", "profile", "expiry", "created_at"],
)
def test_save_refuses_changing_who_what_and_when(store: Any, change: dict[str, Any]) -> None:
    """These fields define the stacking claim; changing them through save would corrupt it."""
    event = store.create(make_event())
    with pytest.raises(StoreError):
        store.save(event.updated(**change))
    assert store.get(event.id) == event


def test_mutate_retries_through_a_concurrent_change(store: Any) -> None:
    event = store.create(make_event())
    calls: list[int] = []

    def change(current: BreakGlassEvent) -> BreakGlassEvent:
        calls.append(current.version)
        if len(calls) == 1:  # another replica writes between our read and our write
            store.save(current.updated(audit_ts="123.456"))
        return current.updated(escalated=True)

    result = mutate(store, event.id, change)
    assert calls == [1, 2]
    assert result.version == 3
    assert result.escalated is True
    assert result.audit_ts == "123.456"
    assert store.get(event.id) == result


def test_mutate_returns_current_when_nothing_to_write_and_propagates_aborts(store: Any) -> None:
    event = store.create(make_event())
    assert mutate(store, event.id, lambda current: None) == event

    def refuse(current: BreakGlassEvent) -> BreakGlassEvent:
        raise InvalidTransition(current, "escalate", "not allowed")

    with pytest.raises(InvalidTransition):
        mutate(store, event.id, refuse)
    with pytest.raises(EventNotFound):
        mutate(store, new_event_id(), lambda current: current)
    assert store.get(event.id) == event


def test_mutate_gives_up_after_its_attempts(store: Any) -> None:
    event = store.create(make_event())

    def always_conflict(current: BreakGlassEvent) -> BreakGlassEvent:
        store.save(current.updated(audit_ts=str(current.version)))
        return current.updated(escalated=True)

    with pytest.raises(ConcurrentModification):
        mutate(store, event.id, always_conflict, attempts=3)
    assert store.get(event.id).escalated is False


# -- listings ----------------------------------------------------------------------------------


def test_list_active_only_active_oldest_first(store: Any) -> None:
    assert store.list_active() == []
    unswept = store.create(make_event(profile="p-unswept", now=T0 - 3 * HOUR))  # past expiry, still active
    closed = store.create(make_event(profile="p-closed", now=T0 - 2 * HOUR))
    expired = store.create(make_event(profile="p-expired", now=T0 - 2 * HOUR, duration=MINUTE))
    newest = store.create(make_event(profile="p-new", now=T0))
    middle = store.create(make_event(invoker="bob@example.com", now=T0 - HOUR))
    store.close(closed.id, by="bob", reason="done", now=T0 - HOUR)
    store.expire(expired.id, now=T0 - HOUR)
    assert [e.id for e in store.list_active()] == [unswept.id, middle.id, newest.id]
    assert all(e.status is Status.ACTIVE for e in store.list_active())


def _check_pagination(pages: list[Any], expected: list[BreakGlassEvent], limit: int) -> None:
    sizes = [len(p.items) for p in pages]
    assert all(size == limit for size in sizes[:-1]), sizes
    assert 1 <= sizes[-1] <= limit
    assert pages[-1].cursor is None
    assert all(p.cursor is not None for p in pages[:-1])
    got = [e for p in pages for e in p.items]
    assert len({e.id for e in got}) == len(got), "duplicates across pages"
    assert [e.id for e in got] == [e.id for e in expected], "gaps or wrong order"
    created = [e.created_at for e in got]
    assert all(a > b for a, b in itertools.pairwise(created)), "not strictly newest first"


def test_list_by_invoker_paginates_newest_first(store: Any) -> None:
    mine = [store.create(make_event(profile=f"p{n}", now=T0 + n * MINUTE)) for n in range(23)]
    store.create(make_event(invoker="bob@example.com", now=T0 + 30 * MINUTE))
    for event in mine[::3]:
        store.close(event.id, by="alice", reason="done", now=T0 + HOUR)
    pages = all_pages(lambda **kw: store.list_by_invoker("alice@example.com", **kw), limit=5)
    assert len(pages) == 5
    expected = sorted(mine, key=lambda e: e.created_at, reverse=True)
    _check_pagination(pages, expected, 5)
    whole = store.list_by_invoker("alice@example.com", limit=MAX_PAGE_SIZE)
    assert [e.id for e in whole.items] == [e.id for e in expected]
    assert whole.cursor is None
    assert store.list_by_invoker("nobody@example.com").items == []


def test_list_by_profile_paginates_newest_first(store: Any) -> None:
    events = [
        store.create(make_event(invoker=f"user{n}@example.com", profile="shared", now=T0 - n * MINUTE))
        for n in range(23)
    ]
    store.create(make_event(profile="unrelated"))
    pages = all_pages(lambda **kw: store.list_by_profile("shared", **kw), limit=5)
    assert len(pages) == 5
    _check_pagination(pages, sorted(events, key=lambda e: e.created_at, reverse=True), 5)


def test_list_by_status_paginates_newest_first(store: Any) -> None:
    events = [store.create(make_event(profile=f"p{n}", now=T0 + n * MINUTE)) for n in range(26)]
    closed = [store.close(e.id, by="bob", reason="done", now=T0 + HOUR) for e in events[:23]]
    pages = all_pages(lambda **kw: store.list_by_status(Status.CLOSED, **kw), limit=5)
    assert len(pages) == 5
    _check_pagination(pages, sorted(closed, key=lambda e: e.created_at, reverse=True), 5)
    active = store.list_by_status(Status.ACTIVE, limit=5)
    assert [e.id for e in active.items] == [e.id for e in reversed(events[23:])]
    assert active.cursor is None
    assert store.list_by_status(Status.EXPIRED).items == []


def test_exactly_full_last_page_has_no_cursor(store: Any) -> None:
    events = [store.create(make_event(profile=f"p{n}", now=T0 + n * MINUTE)) for n in range(10)]
    pages = all_pages(lambda **kw: store.list_by_invoker("alice@example.com", **kw), limit=5)
    assert [len(p.items) for p in pages] == [5, 5]
    _check_pagination(pages, list(reversed(events)), 5)


@pytest.mark.parametrize(
    "cursor",
    ["!!!", "bm90IGpzb24", encode_cursor({}), encode_cursor({"x": 1}), "W10"],
    ids=["garbage", "not-json", "empty", "unknown-keys", "a-list"],
)
def test_invalid_cursor_is_an_error(store: Any, cursor: str) -> None:
    for n in range(3):
        store.create(make_event(profile=f"p{n}", now=T0 + n * MINUTE))
    with pytest.raises(InvalidCursor):
        store.list_by_invoker("alice@example.com", limit=1, cursor=cursor)
    with pytest.raises(InvalidCursor):
        store.list_by_status(Status.ACTIVE, limit=1, cursor=cursor)
    with pytest.raises(InvalidCursor):
        store.list_unreviewed(limit=1, cursor=cursor)


@pytest.mark.parametrize("limit", [0, -1, MAX_PAGE_SIZE + 1])
def test_out_of_range_limits_are_refused(store: Any, limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.list_by_invoker("alice@example.com", limit=limit)
    with pytest.raises(ValueError, match="limit"):
        store.list_owed(now=T0, limit=limit)


def test_list_owed_returns_due_announcements(store: Any) -> None:
    due_later = store.create(
        make_event(profile="p1", outbox=("audit_post",), outbox_next_at=T0 + 10 * MINUTE)
    )
    due_now = store.create(make_event(profile="p2", now=T0 - MINUTE).with_outbox("audit_post"))  # updated_at
    store.create(make_event(profile="p3"))  # owes nothing
    assert [e.id for e in store.list_owed(now=T0 - 2 * MINUTE)] == []
    assert [e.id for e in store.list_owed(now=T0)] == [due_now.id]
    assert [e.id for e in store.list_owed(now=T0 + 10 * MINUTE)] == [due_now.id, due_later.id]
    assert [e.id for e in store.list_owed(now=T0 + 10 * MINUTE, limit=1)] == [due_now.id]

    cleared = store.save(store.get(due_now.id).with_outbox(remove=store.get(due_now.id).outbox))
    assert cleared.owed_kinds == ()
    assert [e.id for e in store.list_owed(now=T0 + HOUR)] == [due_later.id]

    retry = store.get(due_later.id).updated(outbox_attempts=1, outbox_next_at=T0 + 30 * MINUTE)
    store.save(retry)
    assert store.list_owed(now=T0 + 20 * MINUTE) == []
    assert [e.id for e in store.list_owed(now=T0 + 30 * MINUTE)] == [due_later.id]

    closed = store.close(due_now.id, by="bob", reason="done", now=T0 + 40 * MINUTE, outbox=("close_thread",))
    assert [e.id for e in store.list_owed(now=T0 + 40 * MINUTE)] == [due_later.id, closed.id]


def test_list_unreviewed_oldest_ended_first(store: Any) -> None:
    a = store.create(make_event(profile="a"))
    b = store.create(make_event(profile="b"))
    c = store.create(make_event(profile="c"))
    store.create(make_event(profile="still-active"))
    store.close(b.id, by="bob", reason="done", now=T0 + 5 * MINUTE)
    store.expire(a.id, now=T0 + 2 * HOUR)
    store.close(c.id, by="bob", reason="done", now=T0 + 30 * MINUTE)
    page = store.list_unreviewed()
    assert [e.id for e in page.items] == [b.id, c.id, a.id]
    assert page.cursor is None

    pages = all_pages(store.list_unreviewed, limit=2)
    assert [[e.id for e in p.items] for p in pages] == [[b.id, c.id], [a.id]]

    store.save(store.get(c.id).review(by="carol", notes="ok", now=T0 + 3 * HOUR))
    assert [e.id for e in store.list_unreviewed().items] == [b.id, a.id]


def test_list_unreviewed_paginates_many(store: Any) -> None:
    ended = []
    for n in range(12):
        event = store.create(make_event(profile=f"p{n}"))
        ended.append(store.close(event.id, by="bob", reason="done", now=T0 + (12 - n) * MINUTE))
    pages = all_pages(store.list_unreviewed, limit=5)
    got = [e.id for p in pages for e in p.items]
    assert got == [e.id for e in sorted(ended, key=lambda e: e.ended_at)]
    assert [len(p.items) for p in pages] == [5, 5, 2]


# -- counts and last ---------------------------------------------------------------------------


def test_counts_since_include_the_boundary(store: Any) -> None:
    for n in range(5):
        event = store.create(make_event(profile=f"p{n}", now=T0 + n * MINUTE))
        if n % 2:
            store.close(event.id, by="alice", reason="done", now=T0 + HOUR)
    store.create(make_event(invoker="bob@example.com", profile="p0", now=T0 + 2 * MINUTE))

    assert store.count_by_invoker_since("alice@example.com", T0) == 5
    assert store.count_by_invoker_since("alice@example.com", T0 + 2 * MINUTE) == 3
    assert store.count_by_invoker_since("alice@example.com", T0 + 2 * MINUTE + timedelta(microseconds=1)) == 2
    assert store.count_by_invoker_since("alice@example.com", T0 + HOUR) == 0
    assert store.count_by_invoker_since("bob@example.com", T0) == 1
    assert store.count_by_invoker_since("nobody", T0) == 0

    assert store.count_by_profile_since("p0", T0) == 2
    assert store.count_by_profile_since("p0", T0 + timedelta(microseconds=1)) == 1
    assert store.count_by_profile_since("p0", T0 + 2 * MINUTE) == 1
    assert store.count_by_profile_since("p4", T0 + 4 * MINUTE) == 1
    assert store.count_by_profile_since("p4", T0 + 5 * MINUTE) == 0


def test_counts_see_more_than_one_page(store: Any) -> None:
    for n in range(30):
        store.create(make_event(profile=f"p{n}", now=T0 + n * MINUTE))
    assert store.count_by_invoker_since("alice@example.com", T0) == 30


def test_last_by_invoker_and_profile(store: Any) -> None:
    assert store.last_by_invoker_and_profile("alice@example.com", "prod-admin") is None
    first = store.create(make_event())
    assert store.last_by_invoker_and_profile("alice@example.com", "prod-admin") == first
    store.close(first.id, by="alice", reason="done", now=T0 + MINUTE)
    second = store.create(make_event(now=T0 + 2 * MINUTE))
    store.expire(second.id, now=T0 + 3 * HOUR)
    store.create(make_event(profile="other", now=T0 + 4 * HOUR))
    store.create(make_event(invoker="bob@example.com", now=T0 + 4 * HOUR))
    last = store.last_by_invoker_and_profile("alice@example.com", "prod-admin")
    assert last is not None
    assert last.id == second.id
    assert last.status is Status.EXPIRED
    assert store.last_by_invoker_and_profile("alice@example.com", "nope") is None


# -- claims (leases shared by replicas) ---------------------------------------------------------------


def test_claim_is_held_until_it_runs_out(store: Any) -> None:
    assert store.claim("reminder:2026-03-01", now=T0, hold=HOUR) is True
    assert store.claim("reminder:2026-03-01", now=T0 + 59 * MINUTE, hold=HOUR) is False
    assert store.claim("reminder:2026-03-02", now=T0, hold=HOUR) is True  # another name
    assert store.claim("reminder:2026-03-01", now=T0 + HOUR, hold=HOUR) is True  # ran out
    assert store.list_active() == []  # claims are not events


def test_claim_under_contention_has_one_winner(store: Any) -> None:
    results = run_concurrently(20, lambda _i: store.claim("daily", now=T0, hold=HOUR))
    assert results.count(("ok", True)) == 1
    assert results.count(("ok", False)) == 19


def test_a_finished_claim_is_not_taken_again_before_its_end(store: Any) -> None:
    """An owed task (the daily reminder) claims a short lease; once done it is finished for the day; a
    holder that failed simply lets its short lease run out, and the next claim retries."""
    assert store.claim("task", now=T0, hold=2 * MINUTE) is True
    assert store.claim("task", now=T0 + 3 * MINUTE, hold=2 * MINUTE) is True  # the failed holder's ran out
    store.finish_claim("task", until=T0 + 36 * HOUR)
    assert store.claim("task", now=T0 + 10 * MINUTE, hold=2 * MINUTE) is False
    assert store.claim("task", now=T0 + 35 * HOUR, hold=2 * MINUTE) is False
    assert store.claim("task", now=T0 + 36 * HOUR, hold=2 * MINUTE) is True
    store.finish_claim("never-claimed", until=T0 + HOUR)
    assert store.claim("never-claimed", now=T0, hold=MINUTE) is False
    assert store.list_active() == []


def test_a_claim_is_renewed_only_by_its_holder(store: Any) -> None:
    """A heartbeat extends a short claim while its holder works; once it ran out and someone else took
    it, the old holder's renewal (naming the `until` it last wrote) is refused."""
    assert store.claim("lock", now=T0, hold=MINUTE) is True
    assert store.renew_claim("lock", held=T0 + MINUTE, until=T0 + 2 * MINUTE) is True
    assert store.claim("lock", now=T0 + MINUTE + MINUTE / 2, hold=MINUTE) is False  # renewed: still held
    assert store.renew_claim("lock", held=T0 + MINUTE, until=T0 + 3 * MINUTE) is False  # not its last until
    assert store.claim("lock", now=T0 + 2 * MINUTE, hold=MINUTE) is True  # ran out: another holder
    assert store.renew_claim("lock", held=T0 + 2 * MINUTE, until=T0 + 4 * MINUTE) is False
    assert store.renew_claim("never-claimed", held=T0, until=T0 + MINUTE) is False
    assert store.list_active() == []


def test_owed_tasks_are_listed_when_due_until_finished(store: Any) -> None:
    """An owed task outside any event (store.tasks) is listed once due, oldest first, until it is finished;
    owing the same name again (owed or finished) keeps the first; the events' listings never see it."""
    later = OwedTask(name="drift:2", kind=TaskKind.ACCESS_DRIFT, payload='{"n": 2}', due=T0 + MINUTE)
    first = OwedTask(name="drift:1", kind=TaskKind.ACCESS_DRIFT, payload='{"n": 1}', due=T0)
    store.owe_task(later)
    store.owe_task(first)
    store.owe_task(first.model_copy(update={"payload": '{"n": "again"}'}))
    assert store.list_tasks(now=T0 - MINUTE) == []
    assert store.list_tasks(now=T0) == [first]
    assert store.list_tasks(now=T0 + HOUR) == [first, later]
    assert store.list_owed(now=T0 + HOUR) == [] and store.list_active() == []
    store.finish_task("drift:1", now=T0 + HOUR)
    store.finish_task("never-owed", now=T0 + HOUR)
    assert store.list_tasks(now=T0 + HOUR) == [later]
    store.owe_task(first)  # a finished task is never owed again (a retry of the owing write)
    assert store.list_tasks(now=T0 + HOUR) == [later]


# -- extend ----------------------------------------------------------------------------------------


def _extend(
    store: Any, event: BreakGlassEvent, *, now: datetime, seen: int = 0, **kw: Any
) -> BreakGlassEvent:
    kw.setdefault("duration", 30 * MINUTE)
    kw.setdefault("max_total", 4 * HOUR)
    return store.extend(
        event.id, by="U_IC", reason="failover still running on prod", now=now, seen=seen, **kw
    )


def test_extend_moves_the_expiry_and_the_claim(store: Any) -> None:
    event = store.create(make_event())
    warned = store.save(event.updated(warned_at=T0 + 50 * MINUTE))
    extended = _extend(store, warned, now=T0 + 55 * MINUTE, outbox=["extend_thread", "audit_update"])
    assert extended.expires_at == T0 + HOUR + 30 * MINUTE
    assert extended.duration == HOUR  # the invocation's own duration; the extension is on top
    assert extended.warned_at is None  # the warning is owed again before the new expiry
    assert [e.duration for e in extended.extensions] == [30 * MINUTE]
    assert extended.extensions[0].by == "U_IC"
    assert extended.owed_kinds == ("extend_thread", "audit_update")
    assert extended.version == warned.version + 1
    assert store.get(event.id) == extended
    # the claim lasts as long as the access: the same person cannot stack in the extra half hour
    with pytest.raises(StackedAccess):
        store.create(make_event(now=T0 + HOUR + MINUTE))
    with pytest.raises(InvalidTransition, match="not due"):
        store.expire(event.id, now=T0 + HOUR + MINUTE)
    assert [e.id for e in store.list_active()] == [event.id]
    expired = store.expire(event.id, now=T0 + 90 * MINUTE)
    assert expired.status is Status.EXPIRED
    store.create(make_event(now=T0 + 90 * MINUTE))  # the claim is released at the new expiry


def test_extend_refusals_change_nothing(store: Any) -> None:
    event = store.create(make_event())
    with pytest.raises(InvalidTransition, match="at most 1 h more"):
        _extend(store, event, now=T0 + MINUTE, duration=2 * HOUR, max_total=2 * HOUR)
    with pytest.raises(InvalidTransition, match="allows 0 extension"):
        _extend(store, event, now=T0 + MINUTE, max_extensions=0)
    with pytest.raises(InvalidTransition, match="run out"):
        _extend(store, event, now=T0 + HOUR)
    with pytest.raises(ValueError, match="bidirectional"):
        store.extend(
            event.id, by="U1", duration=MINUTE, reason="x" * 20 + "\u202e", now=T0, seen=0, max_total=4 * HOUR
        )
    assert store.get(event.id) == event
    closed = store.close(event.id, by="bob", reason="done", now=T0 + 2 * MINUTE)
    with pytest.raises(InvalidTransition, match="already closed"):
        _extend(store, closed, now=T0 + 3 * MINUTE)
    assert store.get(event.id) == closed


def test_extend_after_another_extend_is_told_and_changes_nothing(store: Any) -> None:
    event = store.create(make_event())
    first = _extend(store, event, now=T0 + MINUTE)
    with pytest.raises(ExtendedMeanwhile) as info:
        _extend(store, event, now=T0 + 2 * MINUTE, seen=0)
    assert info.value.event == first
    assert store.get(event.id) == first
    second = _extend(store, first, now=T0 + 2 * MINUTE, seen=1, known=first)
    assert second.expires_at == T0 + 2 * HOUR


def test_extend_unrelated_write_in_between_is_not_a_conflict(store: Any) -> None:
    event = store.create(make_event())
    store.save(event.updated(audit_ts="1700000000.000100"))  # e.g. the pipeline recorded its audit post
    extended = _extend(store, event, now=T0 + MINUTE, known=event)  # stale copy: re-read, not refused
    assert extended.audit_ts == "1700000000.000100"
    assert extended.version == 3


def test_two_racing_extends_have_one_winner(store: Any) -> None:
    for round_ in range(3):
        event = store.create(make_event(profile=f"p{round_}"))

        def work(i: int, event: BreakGlassEvent = event) -> BreakGlassEvent:
            return _extend(store, event, now=T0 + MINUTE, duration=(i + 1) * 30 * MINUTE)

        results = run_concurrently(2, work)
        oks = [value for kind, value in results if kind == "ok"]
        errors = [value for kind, value in results if kind == "error"]
        assert len(oks) == 1 and len(errors) == 1, results
        assert isinstance(errors[0], ExtendedMeanwhile)
        assert store.get(event.id) == oks[0]
        assert len(oks[0].extensions) == 1
