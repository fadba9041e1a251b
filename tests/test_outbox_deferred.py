"""Outbox entries owed for later (`OutboxEntry.not_before`, `Deferred`) on every store backend and in the
pipeline: `list_owed` does not list an event before one of its entries is due, the event reads back exactly
(its own next attempt time and every entry's time), and the pipeline sends the due entries while leaving the
deferred one owed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.delivery import handlers
from bot.delivery.engine import next_entry, satisfied
from store import mutate
from store.model import Deferred, OutboxEntry, OutboxKind
from tests.store_fixtures import BACKENDS, HOUR, T0, make_event, open_test_store

pytest_plugins = ["tests.store_fixtures"]

LATER = T0 + 2 * HOUR


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with open_test_store(request.param, request, tmp_path) as opened:
        yield opened


def test_a_deferred_entry_is_not_listed_as_owed_before_its_time(store: Any) -> None:
    event = store.create(make_event(now=T0))
    closed = store.close(
        event.id,
        by="U0IC",
        reason="incident over",
        now=T0 + HOUR,
        outbox=[Deferred(OutboxKind.ACTIVITY_DIGEST, LATER)],
    )
    [entry] = closed.outbox
    assert entry.not_before == LATER and closed.outbox_due_at == LATER
    assert store.get(event.id) == closed  # round trip: entries with their times, outbox_next_at None
    assert store.list_owed(now=LATER - timedelta(seconds=1)) == []
    assert [e.id for e in store.list_owed(now=LATER)] == [event.id]

    # A lease / backoff time earlier than the entry's time keeps the entry's time in the index, and the
    # event's own outbox_next_at reads back unchanged.
    leased = mutate(store, event.id, lambda ev: ev.updated(outbox_next_at=T0 + HOUR, outbox_attempts=1))
    assert store.get(event.id) == leased and leased.outbox_next_at == T0 + HOUR
    assert store.list_owed(now=LATER - timedelta(seconds=1)) == []
    # A later backoff wins over the entry's time.
    backed_off = mutate(store, event.id, lambda ev: ev.updated(outbox_next_at=LATER + HOUR))
    assert store.get(event.id) == backed_off
    assert store.list_owed(now=LATER) == []
    assert [e.id for e in store.list_owed(now=LATER + HOUR)] == [event.id]


def test_an_entry_due_now_makes_the_event_owed_whatever_else_is_deferred(store: Any) -> None:
    event = store.create(make_event(now=T0))
    closed = store.close(
        event.id,
        by="U0IC",
        reason="incident over",
        now=T0 + HOUR,
        outbox=[OutboxKind.AUDIT_UPDATE, Deferred(OutboxKind.ACTIVITY_DIGEST, LATER)],
    )
    assert [e.id for e in store.list_owed(now=T0 + HOUR)] == [event.id]
    assert store.get(event.id) == closed


def test_the_pipeline_sends_due_entries_only_and_keeps_deferred_ones() -> None:
    event = make_event(now=T0).with_outbox(
        OutboxKind.AUDIT_UPDATE, Deferred(OutboxKind.ACTIVITY_DIGEST, LATER), OutboxKind.ACTIVITY_DIGEST
    )
    update, deferred, now_digest = event.outbox
    registry = handlers.registry()
    assert next_entry(event, [], T0, registry) == update
    assert next_entry(event, [update], T0, registry) == now_digest
    assert next_entry(event, [update, now_digest], T0, registry) is None
    assert next_entry(event, [update, now_digest], LATER, registry) == deferred
    # one gather satisfies every gather due, never one owed for later
    sent = [(now_digest, now_digest.version)]  # rendered at the version that owed them
    assert satisfied(event.outbox, sent, T0, registry.renders_state) == [now_digest]
    assert set(satisfied(event.outbox, sent, LATER, registry.renders_state)) == {deferred, now_digest}
    assert OutboxEntry(kind="activity_digest", version=1).not_before is None  # stored entries still read
