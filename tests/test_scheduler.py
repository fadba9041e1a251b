"""Warnings, expiry and the outbox, driven by the injectable clock (no sleeping) and, for timing, real time."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.clock import ManualClock, SystemClock
from bot.localslack.webapi import FakeSlack
from bot.policy import parse_policy
from bot.service import InvokeRequest
from store import BreakGlassEvent, Status
from store.sqlite import SQLiteStore
from tests.conftest import Bot, make_bot

JUST = "Database failover is stuck; promoting the replica by hand"


def invoke(
    bot: Bot, user: str = "U0001", duration: str = "3600", profile: str = "sandbox"
) -> BreakGlassEvent:
    response = bot.slack.invoke(user=user, duration=duration, profile=profile)
    assert response.json["response_action"] == "update", response.json
    bot.idle()
    return next(e for e in bot.store.list_active() if e.slack_user_id == user and e.profile == profile)


def audit_posts(fake: FakeSlack) -> list:
    return [
        c
        for c in fake.calls_to("chat.postMessage")
        if c.ok and c.params.get("channel") == "C0AUDIT" and not c.params.get("thread_ts")
    ]


def thread_texts(fake: FakeSlack, event: BreakGlassEvent, store: SQLiteStore) -> list[str]:
    stored = store.get(event.id)
    return [m.get("text", "") for m in fake.thread("C0AUDIT", stored.audit_ts)]


def dms(fake: FakeSlack, user: str) -> list[str]:
    return [
        c.params.get("text", "")
        for c in fake.calls_to("chat.postMessage")
        if c.ok and c.params.get("channel") == user
    ]


def test_warning_once_at_warn_time(bot: Bot) -> None:
    event = invoke(bot, duration="3600")
    bot.fake.wait_for("chat.postMessage", count=2)
    bot.clock.set(event.expires_at - timedelta(minutes=15, seconds=1))
    assert bot.runtime.scheduler.sweep()["warned"] == 0
    bot.clock.advance(1)
    assert bot.runtime.scheduler.sweep()["warned"] == 1
    assert bot.runtime.scheduler.sweep()["warned"] == 0  # once
    warnings = [t for t in dms(bot.fake, "U0001") if "expires in" in t]
    assert len(warnings) == 1
    assert "15 minutes" in warnings[0]
    assert any("Expires in 15 minutes" in t for t in thread_texts(bot.fake, event, bot.store))
    assert bot.store.get(event.id).warned_at == bot.clock.now()


def test_short_events_are_warned_at_half_time(bot: Bot) -> None:
    event = invoke(bot, duration="900")  # 15 minutes: warning at 7.5 minutes, not at creation
    assert bot.runtime.service.warn_at(event) == event.created_at + timedelta(minutes=7, seconds=30)


def test_closed_before_warning_gets_no_warning(bot: Bot) -> None:
    event = invoke(bot)
    bot.runtime.service.close(event.id, by="U0001", reason="done already")
    bot.clock.set(event.expires_at - timedelta(minutes=1))
    counts = bot.runtime.scheduler.sweep()
    assert counts["warned"] == 0
    assert not [t for t in dms(bot.fake, "U0001") if "expires in" in t]


def test_expiry_announced_once_and_releases_the_guard(bot: Bot) -> None:
    event = invoke(bot, duration="1800")
    bot.clock.set(event.expires_at - timedelta(microseconds=1))
    assert bot.runtime.scheduler.sweep()["expired"] == 0
    bot.clock.set(event.expires_at)
    assert bot.runtime.scheduler.sweep()["expired"] == 1
    assert bot.runtime.scheduler.sweep()["expired"] == 0
    stored = bot.store.get(event.id)
    assert stored.status is Status.EXPIRED
    assert stored.outbox == ()
    updates = [c for c in bot.fake.calls_to("chat.update") if c.params["ts"] == stored.audit_ts]
    assert len(updates) == 1
    assert "EXPIRED" in str(updates[0].params["blocks"][0])
    assert sum("Expired" in t for t in thread_texts(bot.fake, event, bot.store)) == 1
    assert sum("has expired" in t for t in dms(bot.fake, "U0001")) == 1
    # the person may invoke again
    again = bot.slack.invoke(user="U0001", duration="1800")
    assert again.json["response_action"] == "update"


def test_slack_down_at_invocation_then_back_delivers_once(bot: Bot) -> None:
    bot.fake.set_down(True)
    response = bot.slack.invoke(user="U0001")
    assert response.json["response_action"] == "update"  # access granted: the event is stored
    bot.idle()
    event = bot.store.list_active()[0]
    owed = bot.store.get(event.id)
    assert "audit_post" in owed.outbox
    assert owed.outbox_next_at is not None
    assert owed.outbox_next_at > bot.clock.now()  # backoff
    assert audit_posts(bot.fake) == []
    bot.fake.set_down(False)
    assert bot.runtime.scheduler.sweep()["owed"] == 0  # not due yet: backoff
    bot.clock.set(owed.outbox_next_at)
    bot.runtime.scheduler.sweep()
    bot.clock.advance(600)
    bot.runtime.scheduler.sweep()
    assert len(audit_posts(bot.fake)) == 1
    assert len([t for t in dms(bot.fake, "U0001") if event.id in t]) == 1
    assert bot.store.get(event.id).outbox == ()


def test_500_and_429_for_a_while_then_recovery(bot: Bot) -> None:
    bot.fake.fail("chat.postMessage", times=4, status=500)
    bot.fake.fail("chat.postMessage", times=2, status=429, retry_after=1)
    bot.slack.invoke(user="U0001")
    bot.idle()
    event = bot.store.list_active()[0]
    for _ in range(6):
        bot.clock.advance(300)
        bot.runtime.scheduler.sweep()
    assert len(audit_posts(bot.fake)) == 1
    assert len([t for t in dms(bot.fake, "U0001") if "is active until" in t]) == 1
    assert bot.store.get(event.id).outbox == ()


def test_crash_between_store_write_and_slack_loses_nothing(bot: Bot) -> None:
    # The use case stores the event with its announcements owed; the process dies before any Slack call.
    event = bot.runtime.service.invoke(InvokeRequest("U0001", "sandbox", "incident", JUST, "3600"))
    assert bot.store.get(event.id).outbox == ("audit_post", "dm_invoked")
    assert audit_posts(bot.fake) == []
    # ...or it died after claiming the delivery lease: the lease runs out and the sweep delivers.
    claimed = bot.store.save(
        bot.store.get(event.id).updated(
            outbox_next_at=bot.clock.now() + timedelta(seconds=30), outbox_attempts=1
        )
    )
    bot.runtime.scheduler.sweep()
    assert audit_posts(bot.fake) == []
    bot.clock.set(claimed.outbox_next_at)
    bot.runtime.scheduler.sweep()
    assert len(audit_posts(bot.fake)) == 1
    bot.runtime.scheduler.sweep()
    assert len(audit_posts(bot.fake)) == 1


def test_two_schedulers_on_one_store_announce_once(
    fake: FakeSlack, tmp_path: Path, policy, clock: ManualClock
) -> None:
    stores = [SQLiteStore(tmp_path / "shared.db"), SQLiteStore(tmp_path / "shared.db")]
    bots = [make_bot(fake, s, policy, clock) for s in stores]
    try:
        events = [
            invoke(bots[i % 2], user=u, duration="1800")
            for i, u in enumerate(["U0001", "U0002", "U0SRE", "U0IC"])
        ]
        fake.wait_for("chat.postMessage", count=8)

        def sweep_both() -> None:
            threads = [threading.Thread(target=b.runtime.scheduler.sweep) for b in bots for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        clock.set(events[0].expires_at - timedelta(minutes=10))
        sweep_both()
        clock.set(max(e.expires_at for e in events))
        sweep_both()
        for e in events:
            assert stores[0].get(e.id).status is Status.EXPIRED
            texts = thread_texts(fake, e, stores[0])
            assert sum("Expires in" in t for t in texts) == 1, texts
            assert sum("Expired" in t for t in texts) == 1, texts
            assert sum("has expired" in t for t in dms(fake, e.slack_user_id)) == 1
    finally:
        for b in bots:
            b.server.stop()


def _realtime_policy():
    return parse_policy(
        """
audit_channel: C0AUDIT
warn_before: 2s
sweep_interval: 1s
profiles:
  sandbox:
    durations: [4s, 1h]
""",
        "realtime.yml",
    )


def test_on_time_with_the_running_scheduler(fake: FakeSlack, store: SQLiteStore) -> None:
    bot = make_bot(fake, store, _realtime_policy(), SystemClock())  # type: ignore[arg-type]
    try:
        bot.runtime.scheduler.start()
        response = bot.slack.invoke(user="U0001", duration="4")
        assert response.json["response_action"] == "update"
        event = store.list_active()[0]
        created_wall = event.created_at.timestamp()
        warn = fake.wait_for(
            "chat.postMessage",
            where=lambda c: c.params.get("channel") == "U0001" and "expires in" in c.params.get("text", ""),
            timeout=8,
        )[0]
        expiry = fake.wait_for(
            "chat.postMessage",
            where=lambda c: c.params.get("channel") == "U0001" and "has expired" in c.params.get("text", ""),
            timeout=8,
        )[0]
        # Call.at is monotonic: convert to wall time relative to when we started waiting.
        offset = time.time() - time.monotonic()
        warn_lag = warn.at + offset - (created_wall + 2)
        expiry_lag = expiry.at + offset - (created_wall + 4)
        assert -0.1 <= warn_lag <= 2.0, warn_lag
        assert -0.1 <= expiry_lag <= 2.0, expiry_lag
        assert store.get(event.id).status is Status.EXPIRED
    finally:
        bot.runtime.scheduler.shutdown()
        bot.server.stop()


def test_restart_with_due_events_announces_within_one_sweep(fake: FakeSlack, store: SQLiteStore) -> None:
    now = datetime.now(UTC)
    overdue = BreakGlassEvent.new(
        invoker="U0001",
        slack_user_id="U0001",
        profile="sandbox",
        reason_code="incident",
        justification=JUST,
        duration=timedelta(hours=1),
        now=now - timedelta(hours=2),
        audit_channel="C0AUDIT",
    ).with_outbox("audit_post", "dm_invoked")
    store.create(overdue)
    bot = make_bot(fake, store, _realtime_policy(), SystemClock())  # type: ignore[arg-type]
    try:
        started = time.monotonic()
        bot.runtime.scheduler.start()
        expired = fake.wait_for(
            "chat.postMessage", where=lambda c: "has expired" in c.params.get("text", ""), timeout=5
        )[0]
        assert expired.at - started <= 1.5  # sweep_interval is 1 s; the first sweep runs at start
        assert store.get(overdue.id).status is Status.EXPIRED
        assert len(audit_posts(fake)) == 1  # the owed audit message, once
    finally:
        bot.runtime.scheduler.shutdown()
        bot.server.stop()


def test_scheduler_start_is_idempotent_and_shutdown_clean(bot: Bot) -> None:
    bot.runtime.scheduler.start()
    first = bot.runtime.scheduler._scheduler
    bot.runtime.scheduler.start()
    assert bot.runtime.scheduler._scheduler is first
    bot.runtime.scheduler.shutdown(wait=True)
    assert not bot.runtime.scheduler.running
