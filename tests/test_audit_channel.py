"""Issue 12.2: nobody can silence the audit trail. An audit channel that fails for good (archived, deleted,
the bot removed) is recognised, repaired where the bot can (joining a public channel again), and otherwise
announced at once another way (the policy's fallback channel and a DM to every security member); each owed
message is delivered on its own; /healthz says so (200, degraded); once the channel works again, what it
missed is posted there, once. All through signed requests to the bot's real endpoint, on the fake Slack
Web API, with the injected clock."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest

from bot.clock import ManualClock
from bot.delivery.fallback import AUDIT_RECHECK
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy, PolicyError, parse_policy
from store import BreakGlassEvent, Status, open_store
from store.model import OutboxKind
from store.sqlite import SQLiteStore
from tests.conftest import TEST_POLICY, Bot, dynamodb_bot, make_bot
from tests.harness import SlackSender, http
from tests.test_flows_close import AUDIT, header, settled, submit_close
from tests.test_multiprocess import backend, bots_on, moto_url  # noqa: F401 - fixtures: real processes

FALLBACK = "C0FALLBACK"
SECURITY_DM = FakeSlack.dm_channel("U0SECA")  # S0SEC's one member
INVOKER_DM = FakeSlack.dm_channel("U0001")
RECHECK = AUDIT_RECHECK * 1.2 + timedelta(seconds=1)  # past the recheck, jitter included


@pytest.fixture
def policy() -> Policy:
    return parse_policy(TEST_POLICY + f"fallback_channel: {FALLBACK}\n", "test-policy.yml")


def audit_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("bot.delivery")
        and r.levelno >= logging.ERROR
        and "audit channel" in r.getMessage()
    ]


def recoveries(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("bot.delivery") and "works again (broken since" in r.getMessage()
    ]


def events_in(bot: Bot, channel: str) -> list[str]:
    """Event ids of the messages in `channel` that carry an event's audit message (root or fallback)."""
    found = []
    for message in bot.fake.channel_messages(channel):
        text = json.dumps(message["blocks"])
        found += [e.id for e in bot.store.list_active() + _ended(bot) if f"`{e.id}`" in text]
    return found


def _ended(bot: Bot) -> list[BreakGlassEvent]:
    return [
        e for u in ("U0001", "U0002") for e in bot.store.list_by_invoker(u, limit=50).items if e.status.ended
    ]


def invoked(bot: Bot, user: str = "U0001") -> tuple[BreakGlassEvent, str]:
    """Invoke through the modal; the stored event once its delivery ran, and the text the invoker saw."""
    before = {e.id for e in bot.store.list_by_invoker(user, limit=50).items}
    response = bot.slack.invoke(user=user)
    assert response.status == 200 and response.json["response_action"] == "update", response.json
    bot.idle()
    (event,) = [e for e in bot.store.list_by_invoker(user, limit=50).items if e.id not in before]
    return event, json.dumps(response.json["view"])


def audit_calls(bot: Bot) -> int:
    return len([c for c in bot.fake.calls if c.params.get("channel") == AUDIT])


def health(bot: Bot) -> tuple[int, dict]:
    response = http("GET", bot.server.url + "/healthz")
    return response.status, response.json


@pytest.mark.parametrize(
    ("channel", "error"),
    [
        ({"is_archived": True}, "is_archived"),
        ({"exists": False}, "channel_not_found"),  # deleted
        ({"is_private": True, "is_member": False}, "channel_not_found"),  # bot removed from a private one
    ],
)
def test_a_broken_audit_channel_is_announced_at_once_to_the_fallback_channel_and_security(
    bot: Bot, caplog: pytest.LogCaptureFixture, channel: dict, error: str
) -> None:
    bot.fake.add_channel(AUDIT, **channel)
    caplog.set_level(logging.INFO, logger="bot.delivery")
    event, reply = invoked(bot)

    # granted, and told another way at once: the fallback channel and every security member by DM
    assert event.status is Status.ACTIVE
    for where in (FALLBACK, SECURITY_DM):
        (message,) = bot.fake.channel_messages(where)
        text = json.dumps(message["blocks"])
        assert f"<#{AUDIT}> is broken" in text and error in text
        assert f"`{event.id}`" in text and "Database failover is stuck" in text  # what it missed
        assert "actions" not in [b["type"] for b in message["blocks"]]
    # the invoker's DM went out (the failed audit post did not hold it back) and says why
    (dm,) = bot.fake.channel_messages(INVOKER_DM)
    assert "audit channel is broken" in dm["text"] and "told directly" in dm["text"]
    # one attempt on the audit channel; the post stays owed for the channel, not retried as if transient
    assert [c.error for c in bot.fake.calls_to("chat.postMessage") if c.params["channel"] == AUDIT] == [error]
    tried = audit_calls(bot)
    bot.clock.advance(60)
    bot.runtime.scheduler.sweep()
    bot.idle()
    assert audit_calls(bot) == tried
    stored = bot.store.get(event.id)
    assert stored.owed_kinds == (OutboxKind.AUDIT_POST,)
    assert stored.outbox_next_at is not None
    assert stored.outbox_next_at - bot.clock.now() >= AUDIT_RECHECK * 0.8 - timedelta(seconds=60)
    # /healthz: 200 (restarting cannot fix it), degraded, naming the channel and Slack's error
    code, body = health(bot)
    assert code == 200 and body["status"] == "degraded"
    assert body["checks"]["audit_channel"]["ok"] is False
    assert body["checks"]["audit_channel"]["critical"] is False
    assert body["checks"]["audit_channel"]["broken"][AUDIT]["error"] == error
    assert len(audit_errors(caplog)) == 1

    # the next invocation is granted too, and its reply says the channel is broken and security was told
    second, reply = invoked(bot, user="U0002")
    assert second.status is Status.ACTIVE
    assert "audit channel is broken" in reply and "told directly" in reply
    assert len(bot.fake.channel_messages(SECURITY_DM)) == 2
    # rechecks while still broken: no new fallback for what was already announced, no new ERROR line
    tried = audit_calls(bot)
    bot.clock.advance(RECHECK.total_seconds())
    bot.runtime.scheduler.sweep()
    bot.idle()
    assert 2 <= audit_calls(bot) - tried <= 4  # each event's audit post tried again (history, post)
    assert len(bot.fake.channel_messages(SECURITY_DM)) == 2
    assert len(bot.fake.channel_messages(FALLBACK)) == 2
    assert len(audit_errors(caplog)) == 1
    assert bot.fake.invalid_calls == []


def test_the_bot_removed_from_a_public_audit_channel_joins_it_again_then_posts(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    bot.fake.add_channel(AUDIT, is_member=False)
    caplog.set_level(logging.INFO, logger="bot.delivery")
    event, reply = invoked(bot)
    delivered = settled(bot, event.id)
    (root,) = bot.fake.channel_messages(AUDIT)
    assert root["ts"] == delivered.audit_ts
    assert [c.params["channel"] for c in bot.fake.calls_to("conversations.join")] == [AUDIT]
    assert bot.fake.channel_messages(FALLBACK) == [] and bot.fake.channel_messages(SECURITY_DM) == []
    assert "broken" not in reply
    assert health(bot)[1]["status"] == "ok"
    assert audit_errors(caplog) == []


def test_a_failing_audit_post_never_holds_back_the_dm_and_a_failing_dm_never_holds_back_the_thread(
    bot: Bot,
) -> None:
    bot.fake.fail("chat.postMessage", error="internal_error")  # the first send: the root audit post
    event, _ = invoked(bot)
    (dm,) = bot.fake.channel_messages(INVOKER_DM)
    assert event.id in dm["text"]
    stored = bot.store.get(event.id)
    assert stored.owed_kinds == (OutboxKind.AUDIT_POST,)  # transient: retried, no fallback
    assert bot.fake.channel_messages(SECURITY_DM) == []

    # now the invoker cannot be messaged: the close by an incident commander still reaches the thread
    bot.fake.add_channel(INVOKER_DM, exists=False)
    bot.clock.advance(60)
    bot.runtime.scheduler.sweep()  # posts the root
    assert submit_close(bot, event.id, "incident resolved", user="U0IC").status == 200
    bot.idle()
    closed = bot.store.get(event.id)
    assert closed.status is Status.CLOSED and closed.audit_ts
    assert closed.owed_kinds == (OutboxKind.CLOSE_DM, OutboxKind.DM_ENDED)  # the DMs are retried
    replies = bot.fake.thread(AUDIT, closed.audit_ts)
    assert any("Closed by" in m["text"] for m in replies)
    assert "CLOSED" in header(bot.fake.message(AUDIT, closed.audit_ts)["blocks"])


def test_a_failing_security_dm_is_retried_and_nobody_gets_the_fallback_twice(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    bot.fake.set_usergroup("S0SEC", ["U0SECA", "U0IC", "U0ONCALL"])
    bot.fake.add_channel(AUDIT, is_archived=True)
    bot.fake.add_channel(FakeSlack.dm_channel("U0ONCALL"), exists=False)  # can never be reached: skipped
    bot.fake.fail("chat.postMessage", channel="U0IC", error="internal_error")  # fails once: retried
    event, _ = invoked(bot)
    stored = bot.store.get(event.id)
    assert stored.owes(OutboxKind.AUDIT_FALLBACK)
    assert stored.audit_fallback_sent == (FALLBACK,)  # recorded as it went; stopped at U0IC
    bot.clock.advance(60)
    bot.runtime.scheduler.sweep()
    bot.idle()
    stored = bot.store.get(event.id)
    assert stored.owed_kinds == (OutboxKind.AUDIT_POST,)
    assert stored.audit_fallback_sent == (FALLBACK, "U0IC", "U0ONCALL", "U0SECA")
    for where in (FALLBACK, SECURITY_DM, FakeSlack.dm_channel("U0IC")):
        assert len(bot.fake.channel_messages(where)) == 1, where
    assert any("cannot reach U0ONCALL" in r.getMessage() for r in caplog.records)


def test_a_change_while_the_channel_is_broken_is_announced_again_then_recovery_posts_what_was_missed_once(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    bot.fake.add_channel(AUDIT, is_archived=True)
    caplog.set_level(logging.INFO, logger="bot.delivery")
    first, _ = invoked(bot)
    second, _ = invoked(bot, user="U0002")
    assert submit_close(bot, first.id, "replica promoted, all good").status == 200
    bot.idle()
    # the close is announced another way too (it is news), showing the closed state
    fallbacks = bot.fake.channel_messages(SECURITY_DM)
    assert len(fallbacks) == 3
    assert "CLOSED" in json.dumps(fallbacks[-1]["blocks"]) and first.id in json.dumps(fallbacks[-1]["blocks"])

    bot.fake.add_channel(AUDIT)  # unarchived
    bot.clock.advance(RECHECK.total_seconds())
    bot.runtime.scheduler.sweep()
    bot.idle()
    closed, active = settled(bot, first.id), settled(bot, second.id)
    roots = bot.fake.channel_messages(AUDIT)
    assert sorted(m["metadata"]["event_payload"]["event_id"] for m in roots) == sorted([first.id, second.id])
    assert "CLOSED" in header(bot.fake.message(AUDIT, closed.audit_ts or "")["blocks"])
    assert any("Closed by" in m["text"] for m in bot.fake.thread(AUDIT, closed.audit_ts or ""))
    assert active.audit_ts
    assert len(recoveries(caplog)) == 1 and len(audit_errors(caplog)) == 1
    assert health(bot)[1]["checks"]["audit_channel"] == {"ok": True}
    # nothing more later
    bot.clock.advance(RECHECK.total_seconds())
    bot.runtime.scheduler.sweep()
    bot.idle()
    assert len(bot.fake.channel_messages(AUDIT)) == 2
    assert len(bot.fake.channel_messages(SECURITY_DM)) == 3


@pytest.fixture
def two_deliverers(
    request: pytest.FixtureRequest,
    fake: FakeSlack,
    tmp_path: Path,
    policy: Policy,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Bot, Bot]]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            path = tmp_path / "shared.db"
            bots = [make_bot(fake, SQLiteStore(path), policy, clock) for _ in range(2)]
            for b in bots:
                stack.callback(b.server.stop)
        else:
            first = stack.enter_context(dynamodb_bot(fake, policy, clock, monkeypatch, "audit"))
            second = make_bot(fake, first.store, policy, clock)
            stack.callback(second.server.stop)
            bots = [first, second]
        yield bots[0], bots[1]


@pytest.mark.parametrize("two_deliverers", ["sqlite", "dynamodb"], indirect=True)
def test_two_deliverers_racing_after_recovery_post_each_missed_event_once(
    two_deliverers: tuple[Bot, Bot],
) -> None:
    a, b = two_deliverers
    a.fake.add_channel(AUDIT, is_archived=True)
    events = [invoked(bot, user=user)[0] for bot, user in ((a, "U0001"), (b, "U0002"), (a, "U0IC"))]
    assert len(a.fake.channel_messages(SECURITY_DM)) == 3  # one fallback per event, whichever replica
    a.fake.add_channel(AUDIT)
    a.fake.slow("chat.postMessage", 0.2, times=6)
    a.clock.advance(RECHECK.total_seconds())
    sweeps = [threading.Thread(target=bot.runtime.scheduler.sweep) for bot in (a, b, a, b)]
    for t in sweeps:
        t.start()
    for t in sweeps:
        t.join()
    a.idle()
    b.idle()
    roots = a.fake.channel_messages(AUDIT)
    assert sorted(m["metadata"]["event_payload"]["event_id"] for m in roots) == sorted(e.id for e in events)
    assert all(a.store.get(e.id).outbox == () for e in events)
    assert len(a.fake.channel_messages(SECURITY_DM)) == 3


def test_fallback_channel_is_validated() -> None:
    with pytest.raises(PolicyError, match="fallback_channel"):
        parse_policy(TEST_POLICY + "fallback_channel: C0AUDIT\n", "p.yml")  # the audit channel itself
    with pytest.raises(PolicyError, match="fallback_channel"):
        parse_policy(TEST_POLICY + "fallback_channel: '#security'\n", "p.yml")
    assert parse_policy(TEST_POLICY, "p.yml").fallback_channel is None


def test_a_step_owed_during_a_backoff_is_due_at_once_but_never_during_a_lease(clock: ManualClock) -> None:
    """The model rule behind "a broken audit channel's recheck never holds back a new DM"."""
    event = BreakGlassEvent.new(
        invoker="U0001",
        slack_user_id="U0001",
        profile="sandbox",
        reason_code="incident",
        justification="Database failover is stuck; promoting the replica by hand",
        duration=timedelta(hours=1),
        now=clock.now(),
    ).with_outbox(OutboxKind.AUDIT_POST)
    later = clock.now() + AUDIT_RECHECK
    backing_off = event.updated(outbox_next_at=later, outbox_attempts=3, outbox_leased=False)
    assert backing_off.with_outbox(OutboxKind.CLOSE_DM).outbox_next_at is None  # due now
    leased = event.updated(outbox_next_at=later, outbox_attempts=3, outbox_leased=True)
    assert leased.with_outbox(OutboxKind.CLOSE_DM).outbox_next_at == later  # the holder sends it


MULTIPROCESS_POLICY = f"""
audit_channel: {AUDIT}
fallback_channel: {FALLBACK}
sweep_interval: 1s
incident_commanders: [U0IC]
security: [U0SECA]
profiles:
  sandbox:
    durations: [1h]
"""


def test_two_processes_announce_a_broken_audit_channel_once_per_event(backend, tmp_path: Path) -> None:  # noqa: F811
    """Two real bot processes on one store (SQLite file, DynamoDB on a moto server), both sweeping every
    second, the audit channel archived: each event's fallback reaches the fallback channel and security
    once, both invokers get their DM, and the replica that met the broken channel reports it."""
    with bots_on(backend, tmp_path, MULTIPROCESS_POLICY) as (bots, fake, store_url):
        fake.add_channel(AUDIT, is_archived=True)
        users = ("U0001", "U0002", "U0IC")
        for i, user in enumerate(users):
            reply = SlackSender(bots[i % 2].url, fake).invoke(user=user, profile="sandbox", duration="3600")
            assert reply.json["response_action"] == "update"
        for user in users:
            fake.wait_for(
                "chat.postMessage", where=lambda c, u=user: c.ok and c.params["channel"] == u, timeout=20
            )
        fake.wait_for(
            "chat.postMessage", 3, where=lambda c: c.ok and c.params["channel"] == "U0SECA", timeout=20
        )
        time.sleep(2.5)  # more sweeps on both processes: nothing more may be sent
        store = open_store(store_url)
        events = [store.list_by_invoker(user).items[0] for user in users]
        for where in (FALLBACK, SECURITY_DM):
            texts = [json.dumps(m["blocks"]) for m in fake.channel_messages(where)]
            assert sorted(e.id for e in events for t in texts if f"`{e.id}`" in t) == sorted(
                e.id for e in events
            )
        assert all(e.owed_kinds == (OutboxKind.AUDIT_POST,) for e in events)
        healths = [http("GET", b.url + "/healthz") for b in bots]
        assert all(h.status == 200 for h in healths)
        assert {h.json["status"] for h in healths} == {"degraded"}  # each process posted once and failed
