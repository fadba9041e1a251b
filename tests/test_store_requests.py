"""One event per request: a request id (the view id of a modal submission, the trigger id of a slash
command) creates at most one event, whatever happened to that event since, on every backend.

A captured, validly signed `view_submission` replayed within Slack's 5-minute signature window used to
create a second event and a second audit message once the first had been closed (nothing stacked any
more). The store refuses it in the create's own atomic write (SQLite: a unique index in the insert;
DynamoDB: a request item conditional on not existing, in the same TransactWriteItems), with a typed
`DuplicateRequest` naming the event the request already created.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from store.errors import DuplicateRequest
from store.limits import Limits
from store.sqlite import SQLiteStore
from tests.store_fixtures import BACKENDS, HOUR, T0, make_event, open_test_store, run_concurrently

pytest_plugins = ["tests.store_fixtures"]

MINUTE = timedelta(minutes=1)
# No limits (SQLite's one-statement create) and limits (its transaction; DynamoDB's window items).
LIMITS = {
    "unlimited": None,
    "limited": Limits(window=HOUR, per_user=10, per_profile=10, cooldown=timedelta(0)),
}


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with open_test_store(request.param, request, tmp_path) as opened:
        yield opened


@pytest.mark.parametrize("limits", LIMITS.values(), ids=LIMITS.keys())
def test_a_replayed_request_after_close_creates_no_second_event(store: Any, limits: Limits | None) -> None:
    first = store.create(make_event(request_id="V0REPLAYED"), limits=limits)
    store.close(first.id, by="alice@example.com", reason="done", now=T0 + MINUTE)
    replay = make_event(request_id="V0REPLAYED", now=T0 + 2 * MINUTE)
    with pytest.raises(DuplicateRequest) as refused:
        store.create(replay, limits=limits)
    assert refused.value.request_id == "V0REPLAYED"
    assert refused.value.event_id == first.id
    assert store.list_by_invoker("alice@example.com").items == [store.get(first.id)]
    # another request of the same person is still granted
    assert store.create(make_event(request_id="V0OTHER", now=T0 + 3 * MINUTE), limits=limits).request_id


@pytest.mark.parametrize("limits", LIMITS.values(), ids=LIMITS.keys())
def test_a_replay_while_the_event_is_active_is_named_as_a_replay_not_stacking(
    store: Any, limits: Limits | None
) -> None:
    first = store.create(make_event(request_id="V0REPLAYED"), limits=limits)
    with pytest.raises(DuplicateRequest) as refused:  # also on another profile: nothing stacks there
        store.create(make_event(request_id="V0REPLAYED", profile="sandbox", now=T0 + MINUTE), limits=limits)
    assert refused.value.event_id == first.id


def test_events_without_a_request_id_are_not_refused(store: Any) -> None:
    first = store.create(make_event())
    store.close(first.id, by="alice@example.com", reason="done", now=T0 + MINUTE)
    assert store.create(make_event(now=T0 + 2 * MINUTE)).request_id is None


@pytest.mark.parametrize("limits", LIMITS.values(), ids=LIMITS.keys())
def test_racing_replays_create_one_event(store: Any, limits: Limits | None) -> None:
    """Eight threads submit the same request at once, each on its own profile (so stacking refuses none)."""
    results = run_concurrently(
        8,
        lambda i: store.create(
            make_event(request_id="V0RACED", profile=f"profile-{i}", now=T0 + i * timedelta(seconds=1)),
            limits=limits,
        ),
    )
    created = [value for outcome, value in results if outcome == "ok"]
    refused = [value for outcome, value in results if outcome == "error"]
    assert len(created) == 1, results
    assert all(isinstance(exc, DuplicateRequest) and exc.event_id == created[0].id for exc in refused), (
        refused
    )
    assert [e.id for e in store.list_by_invoker("alice@example.com").items] == [created[0].id]


def test_a_file_from_before_the_check_keeps_its_duplicates_and_refuses_new_ones(tmp_path: Path) -> None:
    """A schema-2 SQLite file (no request_id column) in which a replay already made a second event: it opens,
    both events stay, the first holds the request id, and the next replay is refused."""
    path = tmp_path / "old.db"
    store = SQLiteStore(path)
    first = store.create(make_event(request_id="V0OLD"))
    store.close(first.id, by="alice@example.com", reason="done", now=T0 + MINUTE)
    second = store.create(make_event(request_id="V0TEMP", now=T0 + 2 * MINUTE))
    store.disconnect()
    with sqlite3.connect(path) as conn:  # what the file looked like before: the replay's event, no column
        conn.execute("DROP INDEX events_request")
        conn.execute("ALTER TABLE events DROP COLUMN request_id")
        conn.execute(
            "UPDATE events SET data = json_set(data, '$.request_id', 'V0OLD') WHERE id = ?", (second.id,)
        )
        conn.execute("PRAGMA user_version = 2")
    conn.close()

    reopened = SQLiteStore(path)
    try:
        assert {e.id for e in reopened.list_by_invoker("alice@example.com").items} == {first.id, second.id}
        reopened.close(second.id, by="alice@example.com", reason="done", now=T0 + 3 * MINUTE)
        with pytest.raises(DuplicateRequest) as refused:
            reopened.create(make_event(request_id="V0OLD", now=T0 + 4 * MINUTE))
        assert refused.value.event_id == first.id
    finally:
        reopened.disconnect()
