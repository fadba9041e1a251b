"""Rate limits decided by the store inside the create's atomic write (issue 12 items 1 and 4), on every
backend: each limit at its boundary, per invoker and per Slack user, and under racing threads (the
multi-process proof is in tests/test_multiprocess.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from store.errors import LimitReached, StackedAccess
from store.limits import Limits
from tests.store_fixtures import BACKENDS, HOUR, T0, make_event, open_test_store, run_concurrently

pytest_plugins = ["tests.store_fixtures"]

MINUTE = timedelta(minutes=1)
TICK = timedelta(microseconds=1)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with open_test_store(request.param, request, tmp_path) as opened:
        yield opened


def refused(store: Any, limits: Limits, **event: Any) -> LimitReached:
    """The create is refused by a limit and writes nothing."""
    candidate = make_event(**event)
    before = store.list_by_invoker(candidate.invoker, limit=100).items
    with pytest.raises(LimitReached) as info:
        store.create(candidate, limits=limits)
    assert store.list_by_invoker(candidate.invoker, limit=100).items == before
    return info.value


def test_cooldown_runs_from_the_close_to_the_microsecond(store: Any) -> None:
    limits = Limits(cooldown=HOUR)
    event = store.create(make_event(), limits=limits)
    store.close(event.id, by="U0IC", reason="incident over", now=T0 + 30 * MINUTE)
    refusal = refused(store, limits, now=T0 + 90 * MINUTE - TICK)
    assert refusal.kind == "cooldown"
    assert refusal.retry_at == T0 + 90 * MINUTE
    assert refusal.ended_at == T0 + 30 * MINUTE
    assert refusal.profile == "prod-admin"
    # another profile, or another person, is not cooling down
    store.create(make_event(profile="sandbox", now=T0 + 31 * MINUTE), limits=limits)
    store.create(make_event(invoker="bob@example.com", now=T0 + 31 * MINUTE), limits=limits)
    assert store.create(make_event(now=T0 + 90 * MINUTE), limits=limits).created_at == T0 + 90 * MINUTE


def test_cooldown_runs_from_the_expiry_of_an_unswept_event(store: Any) -> None:
    limits = Limits(cooldown=HOUR)
    store.create(make_event(), limits=limits)  # expires at T0 + 1h; the sweep has not run
    refusal = refused(store, limits, now=T0 + 2 * HOUR - TICK)
    assert (refusal.kind, refusal.retry_at) == ("cooldown", T0 + 2 * HOUR)
    store.create(make_event(now=T0 + 2 * HOUR), limits=limits)


def test_an_effective_event_is_stacking_not_cooldown(store: Any) -> None:
    limits = Limits(cooldown=HOUR)
    store.create(make_event(), limits=limits)
    with pytest.raises(StackedAccess):
        store.create(make_event(now=T0 + MINUTE), limits=limits)


def test_per_user_limit_at_its_boundary_and_the_window_slides(store: Any) -> None:
    limits = Limits(window=HOUR, per_user=2)
    store.create(make_event(profile="a"), limits=limits)
    store.create(make_event(profile="b", now=T0 + 10 * MINUTE), limits=limits)
    refusal = refused(store, limits, profile="c", now=T0 + HOUR - TICK)
    assert (refusal.kind, refusal.retry_at, refusal.limit) == ("per_user", T0 + HOUR, 2)
    store.create(make_event(invoker="bob@example.com", profile="c", now=T0 + 20 * MINUTE), limits=limits)
    store.create(make_event(profile="c", now=T0 + HOUR), limits=limits)
    # now T0+10m and T0+1h are in the window: the next slot opens at T0+70m
    assert refused(store, limits, profile="d", now=T0 + HOUR).retry_at == T0 + 70 * MINUTE


def test_per_profile_limit_at_its_boundary(store: Any) -> None:
    limits = Limits(window=2 * HOUR, per_profile=2)
    store.create(make_event(invoker="a@example.com"), limits=limits)
    store.create(make_event(invoker="b@example.com", now=T0 + 30 * MINUTE), limits=limits)
    refusal = refused(store, limits, invoker="c@example.com", now=T0 + 2 * HOUR - TICK)
    assert (refusal.kind, refusal.retry_at, refusal.limit) == ("per_profile", T0 + 2 * HOUR, 2)
    store.create(make_event(invoker="c@example.com", profile="other", now=T0 + MINUTE), limits=limits)
    store.create(make_event(invoker="c@example.com", now=T0 + 2 * HOUR), limits=limits)


def test_escalate_after_marks_the_nth_in_the_window_in_the_same_write(store: Any) -> None:
    limits = Limits(window=HOUR, escalate_after=3)

    def escalate(event: Any) -> Any:
        return event.updated(escalated=True).with_outbox("escalation")

    first = store.create(make_event(profile="a"), limits=limits, escalate=escalate)
    second = store.create(make_event(profile="b", now=T0 + MINUTE), limits=limits, escalate=escalate)
    third = store.create(make_event(profile="c", now=T0 + 2 * MINUTE), limits=limits, escalate=escalate)
    assert [first.escalated, second.escalated, third.escalated] == [False, False, True]
    assert store.get(third.id) == third and "escalation" in third.outbox
    assert store.create(make_event(invoker="bob@example.com", profile="c"), limits=limits).escalated is False
    # T0 leaves the window at T0+1h: the fourth is the third in the window again
    assert store.create(make_event(profile="d", now=T0 + HOUR), limits=limits).escalated is True
    assert store.create(make_event(profile="e", now=T0 + HOUR + MINUTE), limits=limits).escalated is True
    assert store.create(make_event(profile="f", now=T0 + 2 * HOUR + MINUTE), limits=limits).escalated is False


# -- per Slack user, whatever the mapped identity (issue 12 item 4) --------------------------------------


def test_a_new_identity_for_the_same_slack_user_cannot_stack(store: Any) -> None:
    event = store.create(make_event(invoker="alice@example.com", slack_user_id="U0ALICE"))
    with pytest.raises(StackedAccess) as info:
        store.create(make_event(invoker="alice+1@example.com", slack_user_id="U0ALICE", now=T0 + MINUTE))
    assert info.value.existing.id == event.id
    # closing releases both claims
    store.close(event.id, by="U0ALICE", reason="done with it", now=T0 + 2 * MINUTE)
    store.create(make_event(invoker="alice+1@example.com", slack_user_id="U0ALICE", now=T0 + 3 * MINUTE))


def test_a_new_identity_for_the_same_slack_user_keeps_budget_and_cooldown(store: Any) -> None:
    limits = Limits(window=HOUR, per_user=2, cooldown=HOUR)
    first = store.create(make_event(profile="a", slack_user_id="U0ALICE"), limits=limits)
    store.create(make_event(profile="b", slack_user_id="U0ALICE", now=T0 + MINUTE), limits=limits)
    renamed = {"invoker": "alice+1@example.com", "slack_user_id": "U0ALICE"}
    assert refused(store, limits, profile="c", now=T0 + 2 * MINUTE, **renamed).kind == "per_user"
    store.close(first.id, by="U0ALICE", reason="done with it", now=T0 + 3 * MINUTE)
    cooling = refused(store, Limits(cooldown=HOUR), profile="a", now=T0 + 4 * MINUTE, **renamed)
    assert (cooling.kind, cooling.retry_at) == ("cooldown", T0 + 63 * MINUTE)


def test_racing_creates_never_exceed_the_limits(store: Any) -> None:
    limits = Limits(window=HOUR, per_user=3, escalate_after=2)
    results = run_concurrently(
        12, lambda i: store.create(make_event(profile=f"p{i}", now=T0 + i * TICK), limits=limits)
    )
    created = [r for kind, r in results if kind == "ok"]
    errors = [r for kind, r in results if kind == "error"]
    assert len(created) == 3, results
    assert all(isinstance(e, LimitReached) and e.kind == "per_user" for e in errors), errors
    assert sum(e.escalated for e in created) == 2
    assert len(store.list_by_invoker("alice@example.com", limit=100).items) == 3


# -- close/expire with the caller's copy: no read first (issue 13.6) -------------------------------------


def _count_calls(store: Any) -> list[str]:
    calls: list[str] = []
    if hasattr(store, "client"):
        store.client.meta.events.register(
            "before-call.dynamodb.*", lambda model, **_: calls.append(model.name)
        )
    return calls


def test_close_and_expire_with_a_known_copy_skip_the_read_and_stay_conditional(store: Any) -> None:
    first = store.create(make_event(profile="a"))
    second = store.create(make_event(profile="b"))
    calls = _count_calls(store)
    closed = store.close(first.id, by="U0IC", reason="incident over", now=T0 + MINUTE, known=first)
    expired = store.expire(second.id, now=T0 + HOUR, known=second)
    assert (closed.status.value, closed.version, expired.status.value) == ("closed", 2, "expired")
    if hasattr(store, "client"):
        assert calls == ["TransactWriteItems", "TransactWriteItems"]  # no GetItem before either write
    # a stale copy is not written over a newer version: the write fails, the store re-reads
    third = store.create(make_event(profile="c"))
    store.save(third.updated(warned_at=T0 + MINUTE))
    done = store.close(third.id, by="U0IC", reason="incident over", now=T0 + 2 * MINUTE, known=third)
    assert (done.warned_at, done.version) == (T0 + MINUTE, 3)
    assert store.get(third.id) == done
