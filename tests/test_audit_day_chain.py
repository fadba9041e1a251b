"""The per-day hash chain of the audit feed (Store.link_day, bot/audit_feed): one place per record, taken
atomically on both stores (real processes racing on one SQLite file and on one DynamoDB table over moto
server), the same place on a retry; verify-audit reports a record removed from the day, or moved in it."""

from __future__ import annotations

import hashlib
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.audit_feed.ocsf import day_digest, event_records, without_day
from bot.audit_feed.sinks import AuditFeed, FileSink, deliver
from bot.audit_feed.verify import verify_feed
from store.notices import DayLink
from store.sqlite import SQLiteStore
from tests.processes import race_workers
from tests.store_fixtures import BACKENDS, T0, make_event, open_test_store

pytest_plugins = ["tests.store_fixtures"]

DAY = "2026-03-01"


@pytest.fixture(params=BACKENDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with open_test_store(request.param, request, tmp_path) as opened:
        yield opened


def digest(seq: int, previous: str, uid: str = "") -> str:
    return hashlib.sha256(f"{uid}|{seq}|{previous}".encode()).hexdigest()


def test_a_day_chain_appends_and_a_record_keeps_its_place(any_store: Any) -> None:
    links = [
        any_store.link_day(DAY, f"e{i}:invoked", lambda s, p, i=i: digest(s, p, f"e{i}")) for i in range(3)
    ]
    assert [(link.seq, link.previous) for link in links] == [
        (1, ""),
        (2, links[0].digest),
        (3, links[1].digest),
    ]
    again = any_store.link_day(
        DAY, "e1:invoked", lambda s, p: pytest.fail("a placed record is not placed again")
    )
    assert again == links[1]
    assert any_store.day_chain(DAY) == links
    other = any_store.link_day("2026-03-02", "e9:invoked", lambda s, p: digest(s, p))
    assert (other.seq, other.previous) == (1, "")
    assert any_store.day_chain("2026-03-03") == []
    assert any_store.list_active() == [] and any_store.list_notices() == []  # never taken for events


WORKER = textwrap.dedent(
    """
    import hashlib, json, sys
    from tests.store_fixtures import dynamodb_client
    from store.dynamodb import DynamoDBStore
    from store.sqlite import SQLiteStore

    kind, target, name, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if kind == "sqlite":
        store = SQLiteStore(target)
    else:
        store = DynamoDBStore(name, client=dynamodb_client(target))
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"
    links = []
    for i in range(count):
        uid = f"{sys.argv[5]}-{i}:invoked"
        link = store.link_day("2026-03-01", uid, lambda s, p: hashlib.sha256(f"{uid}|{s}|{p}".encode()).hexdigest())
        links.append(link.model_dump())
    print(json.dumps(links), flush=True)
    """
)


def _race(kind: str, target: str, table: str, *, processes: int, count: int) -> list[dict[str, Any]]:
    argvs = [[kind, target, table, str(count), f"p{n}"] for n in range(processes)]
    return [link for last in race_workers(WORKER, argvs) for link in json.loads(last)]


def _check_one_chain(links: list[dict[str, Any]], stored: list[DayLink], total: int) -> None:
    assert sorted(link["seq"] for link in links) == list(range(1, total + 1))  # no place taken twice
    assert [link.seq for link in stored] == list(range(1, total + 1))
    previous = ""
    for link in stored:  # each link names the digest of the one before it
        assert link.previous == previous
        assert link.digest == hashlib.sha256(f"{link.uid}|{link.seq}|{link.previous}".encode()).hexdigest()
        previous = link.digest
    assert {link["uid"]: link["seq"] for link in links} == {link.uid: link.seq for link in stored}


def test_processes_racing_on_one_sqlite_file_take_one_place_each(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    SQLiteStore(path).disconnect()
    links = _race("sqlite", str(path), "", processes=3, count=15)
    store = SQLiteStore(path)
    try:
        _check_one_chain(links, store.day_chain(DAY), 45)
    finally:
        store.disconnect()


def test_processes_racing_on_one_dynamodb_table_take_one_place_each(
    server_dynamodb: tuple[Any, str], moto_server_url: str
) -> None:
    from store.dynamodb import DynamoDBStore

    client, table = server_dynamodb
    links = _race("dynamodb", moto_server_url, table, processes=3, count=8)
    _check_one_chain(links, DynamoDBStore(table, client=client).day_chain(DAY), 24)


def test_verify_reports_a_record_removed_from_its_day_or_moved_in_it(
    store: SQLiteStore, tmp_path: Path
) -> None:
    feed = AuditFeed(store, [FileSink(tmp_path / "audit.log")])
    first = store.create(make_event(invoker="a@example.com"))
    second = store.create(make_event(invoker="b@example.com", now=T0.replace(minute=5)))
    closed = store.close(second.id, by="b@example.com", reason="done", now=T0.replace(minute=6))
    for event in (first, closed):
        deliver(feed, event)
    lines = (tmp_path / "audit.log").read_text().splitlines()
    sent = [json.loads(line) for line in lines]
    assert [without_day(r) for r in sent] == event_records(first) + event_records(closed)
    assert [r["unmapped"]["breakglass"]["day_chain"]["seq"] for r in sent] == [1, 2, 3]
    assert sent[1]["unmapped"]["breakglass"]["day_chain"]["previous"] == day_digest(sent[0])
    assert verify_feed(lines, store) == []
    # a retry sends the very same bytes (the place is kept)
    assert feed.seal(event_records(first)[0]) == sent[0]

    # the whole of the first event removed: no event chain of its own is left to show it, the day's does
    assert verify_feed(lines[1:], store) == [
        f"{DAY} seq 1 ({first.id}:invoked): missing from the feed (gap in the day's chain)"
    ]
    # a record moved to another place in the day
    moved = json.loads(lines[2])
    moved["unmapped"]["breakglass"]["day_chain"]["seq"] = 9
    problems = verify_feed([lines[0], lines[1], json.dumps(moved)], store)
    assert problems == [f"{closed.id}:closed: its place in the chain of {DAY} is not the stored one (seq 3)"]
