"""The delivery pipeline (bot/pipeline.py): one top-level audit message per event whatever Slack and the
clock do, no update lost to a concurrent change, App Home refreshed whoever stored the change, and the
daily review reminder retried until it is posted."""

from __future__ import annotations

import json
import threading
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bot import admin, ids
from bot.clock import ManualClock
from bot.delivery.deps import DeliveryDeps
from bot.delivery.lease import LEASE, Lease, bounded_by
from bot.delivery.retry import LeaseBoundedRateLimitRetryHandler
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy, parse_policy
from store import BreakGlassEvent, Status
from store.model import OutboxKind
from store.sqlite import SQLiteStore
from tests.conftest import TEST_POLICY, Bot, dynamodb_bot, make_bot
from tests.test_flows_close import (
    AUDIT,
    action_ids,
    expire,
    header,
    invoke,
    settled,
    submit_close,
    wait_until,
)
from tests.test_flows_review_home import submit_review


def audit_roots(bot: Bot) -> list[dict]:
    return bot.fake.channel_messages(AUDIT)


def roots_by_event(bot: Bot) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in audit_roots(bot):
        event_id = message["metadata"]["event_payload"]["event_id"]
        counts[event_id] = counts.get(event_id, 0) + 1
    return counts


def test_retry_after_longer_than_the_lease_posts_one_audit_message_showing_the_final_state(bot: Bot) -> None:
    """Slack answers 429 Retry-After: 125 with a 2-minute lease: the delivery does not sleep through its
    lease (the sweep would then post too); it stops, and the retry posts once, showing the final state."""
    bot.fake.fail("chat.postMessage", status=429, retry_after=125)
    response = bot.slack.invoke(user="U0001")
    assert response.json["response_action"] == "update"
    bot.idle()  # returns at once: nothing slept 125 s
    (event,) = bot.store.list_active()
    assert event.audit_ts is None and event.owes(OutboxKind.AUDIT_POST)
    assert submit_close(bot, event.id, "all done").status == 200
    bot.idle()
    # past Slack's Retry-After (the whole channel waits it out, bot/slack_pacing.py), the lease and the backoff
    bot.clock.advance(125 + int(LEASE.total_seconds()) + 60)
    bot.runtime.scheduler.sweep()
    closed = settled(bot, event.id)
    roots = audit_roots(bot)
    assert len(roots) == 1
    assert roots[0]["ts"] == closed.audit_ts
    assert "CLOSED" in header(roots[0]["blocks"])
    assert ids.ACTION_CLOSE not in action_ids(roots[0]["blocks"])
    assert bot.fake.invalid_calls == []


def test_a_delivery_backlog_posts_one_audit_message_per_event(bot: Bot) -> None:
    """12 invocations queue behind slow post-ack deliveries; their leases run out and the sweep delivers
    them; the queued deliveries then find their lease gone and send nothing: one root per event."""
    gate = threading.Event()
    blocked = threading.Semaphore(0)

    def hold_delivery_workers(event: BreakGlassEvent) -> None:
        if threading.current_thread().name.startswith("delivery") and not gate.is_set():
            blocked.release()
            gate.wait(10)

    bot.runtime.pipeline.follow_ups.insert(0, hold_delivery_workers)
    for _ in range(12):
        user = "U0001"
        assert bot.slack.invoke(user=user, profile="sandbox").status == 200
        bot.service.store.close(
            bot.store.list_active()[0].id, by=user, reason="next one", now=bot.clock.now()
        )
    for _ in range(4):  # every worker is busy; the other deliveries wait in the queue
        assert blocked.acquire(timeout=10)
    bot.clock.advance(int(LEASE.total_seconds()) + 1)
    bot.runtime.scheduler.sweep()
    gate.set()
    bot.idle()
    bot.runtime.scheduler.sweep()
    bot.idle()
    counts = roots_by_event(bot)
    assert len(counts) == 12
    assert set(counts.values()) == {1}


def test_a_review_during_an_in_flight_close_delivery_appears_on_the_audit_message(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = invoke(bot, user="U0001")
    handlers = bot.runtime.pipeline.handlers
    original = handlers[OutboxKind.AUDIT_UPDATE].send
    in_flight, release = threading.Event(), threading.Event()

    def slow_update(p: DeliveryDeps, ev: BreakGlassEvent) -> dict[str, Any]:
        if not release.is_set():
            in_flight.set()
            release.wait(10)  # renders "closed, unreviewed" after the review was stored
        return original(p, ev)

    handlers.replace(OutboxKind.AUDIT_UPDATE, slow_update)
    assert submit_close(bot, event.id, "replica promoted").status == 200
    assert in_flight.wait(10)
    assert submit_review(bot, event.id, "Checked CloudTrail: fine.").status == 200
    release.set()
    bot.idle()
    final = wait_until(lambda: next((e for e in [bot.store.get(event.id)] if not e.outbox), None), "delivery")
    message = bot.fake.message(AUDIT, final.audit_ts or "")
    rendered = json.dumps(message["blocks"])
    assert "Reviewed by <@U0SECA>" in rendered
    assert action_ids(message["blocks"]) == []  # no Mark reviewed button left


def test_app_home_refreshes_after_a_scheduler_expiry(bot: Bot) -> None:
    event = invoke(bot, user="U0001")
    bot.idle()
    before = len(bot.fake.calls_to("views.publish"))
    expire(bot, event)
    calls = bot.fake.wait_for("views.publish", before + 1, where=lambda c: c.params["user_id"] == "U0001")
    assert "expired" in json.dumps(calls[-1].params["view"])


def test_app_home_refreshes_after_an_admin_close(
    bot: Bot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: Policy
) -> None:
    event = invoke(bot, user="U0001")
    bot.idle()  # the invocation's own App Home refresh is done
    before = len([c for c in bot.fake.calls_to("views.publish") if c.params["user_id"] == "U0001"])
    policy_file = tmp_path / "policy.yml"
    policy_file.write_text(TEST_POLICY)
    for key, value in {
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_SIGNING_SECRET": "test-signing-secret-0123456789abcdef",
        "SLACK_API_URL": bot.fake.url,
        "BREAKGLASS_POLICY": str(policy_file),
    }.items():
        monkeypatch.setenv(key, value)
    code = admin.main(
        ["--store", f"sqlite:///{bot.store.path}", "close", event.id, "--operator", "sam", "--reason", "done"]
    )
    assert code == 0
    assert bot.store.get(event.id).status is Status.CLOSED
    calls = [c for c in bot.fake.calls_to("views.publish") if c.params["user_id"] == "U0001"]
    assert len(calls) == before + 1
    assert "closed" in json.dumps(calls[-1].params["view"])


def test_the_lease_bounds_retries_of_a_rate_limited_send() -> None:
    handler = LeaseBoundedRateLimitRetryHandler(max_retry_count=3)

    class Response:
        status_code = 429
        headers: ClassVar[dict[str, list[str]]] = {"Retry-After": ["125"]}

    clock = ManualClock(datetime(2026, 11, 25, 8, 0, tzinfo=UTC))

    def can_retry(time_left: float | None) -> bool:
        if time_left is None:
            return handler._can_retry(state=None, request=None, response=Response())  # type: ignore[arg-type]
        now = clock.now()
        lease = Lease(now + LEASE, 1, deadline=now + timedelta(seconds=time_left))
        with bounded_by(lease, clock):
            return handler._can_retry(state=None, request=None, response=Response())  # type: ignore[arg-type]

    assert can_retry(None)  # outside a delivery: Slack's own behaviour
    assert not can_retry(120)  # 125 s does not fit in the 2 minutes a delivery may hold its lease
    assert can_retry(timedelta(minutes=10).total_seconds())  # a short lease renewed while it waits


@pytest.mark.parametrize("backend", ["sqlite", "dynamodb"])
def test_the_review_reminder_survives_a_slack_failure(
    backend: str, fake: FakeSlack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The day's reminder is owed until posted: a failed post is retried by the next sweep once its short
    lease runs out, then posted exactly once (on both stores)."""
    clock = ManualClock(datetime(2026, 11, 25, 8, 0, tzinfo=UTC))
    policy = parse_policy(TEST_POLICY + "review_reminder_after: 1h\nreview_reminder_time: '09:00'\n", "p.yml")
    with ExitStack() as stack:
        if backend == "sqlite":
            bot = make_bot(fake, SQLiteStore(tmp_path / "r.db"), policy, clock)
            stack.callback(bot.server.stop)
        else:
            bot = stack.enter_context(dynamodb_bot(fake, policy, clock, monkeypatch, "reminder"))
        bot.slack.invoke(user="U0001")
        bot.idle()
        (event,) = bot.store.list_active()
        bot.service.close(event.id, by="U0001", reason="finished")
        bot.runtime.scheduler.sweep()  # delivers the close; no reminder before 09:00
        clock.set(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))

        def reminders() -> int:
            return len(
                [
                    c
                    for c in fake.calls_to("chat.postMessage")
                    if c.ok and "await review" in c.params.get("text", "")
                ]
            )

        fake.fail("chat.postMessage", error="internal_error")
        assert bot.runtime.scheduler.sweep()["reminded"] == 0  # Slack failed: still owed
        assert reminders() == 0
        clock.advance(LEASE.total_seconds() / 2)
        assert bot.runtime.scheduler.sweep()["reminded"] == 0  # another replica's lease would still hold
        clock.advance(LEASE.total_seconds())
        assert bot.runtime.scheduler.sweep()["reminded"] == 1  # retried, posted
        assert reminders() == 1
        clock.advance(3600)
        assert bot.runtime.scheduler.sweep()["reminded"] == 0  # once that day
        assert reminders() == 1


def test_an_audit_post_of_unknown_outcome_is_found_by_its_metadata_not_posted_twice(bot: Bot) -> None:
    """Slack accepts the root audit message only after the client gave up (timeout): the outcome is
    unknown, the post stays owed, and the retry finds it in the channel's history by its metadata."""
    bot.fake.slow("chat.postMessage", 6.0)  # the test client times out after 5 s
    assert bot.slack.invoke(user="U0001").json["response_action"] == "update"
    bot.idle()
    (event,) = bot.store.list_active()
    assert event.audit_ts is None and event.owes(OutboxKind.AUDIT_POST)
    wait_until(lambda: audit_roots(bot) or None, "Slack to accept the timed-out post", timeout=10)
    bot.clock.advance(int(LEASE.total_seconds()) + 60)
    bot.runtime.scheduler.sweep()
    delivered = settled(bot, event.id)
    (root,) = audit_roots(bot)
    assert delivered.audit_ts == root["ts"]
    assert root["metadata"] == {"event_type": "breakglass_event", "event_payload": {"event_id": event.id}}
    history = [c for c in bot.fake.calls_to("conversations.history") if c.ok]
    assert history and history[-1].params["channel"] == AUDIT
