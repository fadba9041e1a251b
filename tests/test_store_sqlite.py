"""SQLite-specific promises: the stacking check holds across processes sharing one file."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from store.errors import StoreUnavailable
from store.model import Status
from store.sqlite import SQLiteStore
from tests.processes import race_workers
from tests.store_fixtures import T0, make_event

# Each worker says "ready", waits for "go" on stdin (so that the processes race), tries `count` creates
# for the same invoker and profile, and prints what happened as JSON. It opens the store before "ready",
# or after "go" when `open_late` (then the processes also race to create the file and its schema).
WORKER = textwrap.dedent(
    """
    import json, sys
    from datetime import datetime, timedelta
    from store.errors import StackedAccess
    from store.model import BreakGlassEvent
    from store.sqlite import SQLiteStore

    path, count, now = sys.argv[1], int(sys.argv[2]), datetime.fromisoformat(sys.argv[3])
    open_late = sys.argv[4] == "late"
    store = None if open_late else SQLiteStore(path)
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"
    store = store or SQLiteStore(path)
    created, stacked = [], []
    for _ in range(count):
        event = BreakGlassEvent.new(
            invoker="alice@example.com", slack_user_id="U1", profile="prod-admin",
            reason_code="incident", justification="Two processes racing for the same claim",
            duration=timedelta(hours=1), now=now,
        )
        try:
            created.append(store.create(event).id)
        except StackedAccess as exc:
            stacked.append(exc.existing.id)
    print(json.dumps({"created": created, "stacked": stacked}), flush=True)
    """
)


def _race(path: Path, *, processes: int, count: int, open_late: bool) -> list[dict[str, list[str]]]:
    argv = [str(path), str(count), T0.isoformat(), "late" if open_late else "early"]
    return [json.loads(last) for last in race_workers(WORKER, [argv] * processes, timeout=120)]


@pytest.mark.parametrize("precreated", [True, False], ids=["existing-file", "fresh-file"])
def test_two_processes_on_one_file_create_exactly_one(tmp_path: Path, precreated: bool) -> None:
    path = tmp_path / "shared.db"
    if precreated:
        SQLiteStore(path).disconnect()
    count = 25
    results = _race(path, processes=2, count=count, open_late=not precreated)

    created = [event_id for result in results for event_id in result["created"]]
    stacked = [event_id for result in results for event_id in result["stacked"]]
    assert len(created) == 1, results
    assert len(stacked) == 2 * count - 1
    assert set(stacked) == set(created)

    store = SQLiteStore(path)
    try:
        assert [e.id for e in store.list_active()] == created
        assert store.count_by_invoker_since("alice@example.com", T0) == 1
    finally:
        store.disconnect()


def test_store_persists_across_connections(tmp_path: Path) -> None:
    path = tmp_path / "persist.db"
    first = SQLiteStore(path)
    event = first.create(make_event())
    first.disconnect()
    second = SQLiteStore(path)
    try:
        assert second.get(event.id) == event
        closed = second.close(event.id, by="bob", reason="done", now=T0)
        assert second.get(event.id).status is Status.CLOSED
        assert closed.version == 2
    finally:
        second.disconnect()


def test_store_reopens_after_close_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "reopen.db")
    event = store.create(make_event())
    store.disconnect()
    assert store.get(event.id) == event  # a new connection is opened on demand
    store.disconnect()


def test_unopenable_path_is_store_unavailable(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory.db"
    directory.mkdir()
    with pytest.raises(StoreUnavailable):
        SQLiteStore(directory)


def test_write_lock_timeout_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = SQLiteStore(path)
    waiter = SQLiteStore(path, busy_timeout=0.05)
    try:
        conn = holder._conn()
        conn.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        try:
            with pytest.raises(StoreUnavailable, match="busy"):
                waiter.create(make_event())
        finally:
            conn.execute("ROLLBACK")
        waiter.create(make_event())
    finally:
        holder.disconnect()
        waiter.disconnect()


def test_create_without_limits_holds_the_write_lock_for_one_statement(tmp_path: Path) -> None:
    """Under load the write lock is held until the writer gets the GIL back after each statement: a create
    without rate limits is one INSERT … WHERE NOT EXISTS, not BEGIN, two checks, INSERT and COMMIT."""
    from store.errors import StackedAccess

    store = SQLiteStore(tmp_path / "one.db")
    statements: list[str] = []
    store._conn().set_trace_callback(statements.append)
    first = store.create(make_event(invoker="alice@example.com", slack_user_id="U0ALICE"))
    assert len(statements) == 1 and statements[0].startswith("INSERT INTO events")
    statements.clear()
    # refused for the invoker and for the Slack user under a new identity: the refusal names the blocker
    for other in (
        make_event(now=T0 + T0.resolution),
        make_event(invoker="a@x.example", slack_user_id="U0ALICE"),
    ):
        with pytest.raises(StackedAccess) as refused:
            store.create(other)
        assert refused.value.existing.id == first.id
    assert [s.split()[0] for s in statements] == ["INSERT", "SELECT", "INSERT", "SELECT", "SELECT"]
    assert [e.id for e in store.list_active()] == [first.id]
    store.disconnect()
