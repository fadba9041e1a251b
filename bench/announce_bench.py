"""Announcement lag: many events expiring together; the real scheduler (SystemClock, 1 s sweep, 2 s
warning) against the fake Slack. Lag = when the Slack call arrived minus when it was due."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import Row, bot_settings, event, pct
from bot.app import create_app, make_slack_client
from bot.clock import SystemClock
from bot.localslack.webapi import FakeSlack
from bot.policy import parse_policy
from store.model import OutboxKind
from store.sqlite import SQLiteStore
from tests.harness import BOT_TOKEN

POLICY = """
audit_channel: C0AUDIT
warn_before: 2s
sweep_interval: 1s
profiles:
  sandbox:
    durations: [15m]
"""
SECTION = "5 announcement lag"


def _summary(lags: list[float], expected: int) -> str:
    if not lags:
        return f"none of {expected} arrived"
    return (
        f"p50 {pct(lags, 50) * 1000:.0f} / p99 {pct(lags, 99) * 1000:.0f} / max {max(lags) * 1000:.0f} ms "
        f"({len(lags)} of {expected})"
    )


def run(rows: list[Row], *, count: int = 200, lead: float = 15.0) -> None:
    users = {f"U{2000 + i}": {"email": f"u{2000 + i}@example.com"} for i in range(count)}
    with tempfile.TemporaryDirectory() as tmp, FakeSlack(token=BOT_TOKEN, users=users) as fake:
        store = SQLiteStore(Path(tmp) / "b.db")
        settings = bot_settings(fake.url)
        policy = parse_policy(POLICY, "bench-policy.yml")
        runtime = create_app(
            settings, store, make_slack_client(settings, timeout=5), policy=policy, clock=SystemClock()
        )
        now = datetime.now(UTC)
        events = []
        for i, user in enumerate(users):
            # all expire within one second, `lead` seconds from now; the audit post is owed, as after invoke
            ev = event(
                invoker=user,
                profile="sandbox",
                created_at=now,
                duration=timedelta(seconds=lead, milliseconds=5 * i),
                audit_channel="C0AUDIT",
            ).with_outbox(OutboxKind.AUDIT_POST, OutboxKind.DM_INVOKED)
            store.create(ev)
            events.append(ev)
        offset = time.time() - time.monotonic()
        runtime.scheduler.start()
        try:
            last_due = max(e.expires_at for e in events).timestamp()
            deadline = last_due + 30
            while time.time() < deadline:
                updates = {c.params.get("ts") for c in fake.calls_to("chat.update")}
                done = sum(
                    1 for e in store.list_by_status("expired", limit=500).items if e.audit_ts in updates
                )
                if done >= count:
                    break
                time.sleep(0.2)
            time.sleep(1.0)
        finally:
            runtime.scheduler.shutdown(wait=False)

        warn_at: dict[str, float] = {}
        updated_at: dict[str, float] = {}
        for call in fake.calls:
            wall = call.at + offset
            if call.method == "chat.postMessage" and call.params.get("thread_ts"):
                warn_at.setdefault(str(call.params["thread_ts"]), wall)
            elif call.method == "chat.update":
                updated_at.setdefault(str(call.params.get("ts")), wall)
        warn_lags, expire_lags, no_ts = [], [], 0
        for ev in events:
            stored = store.get(ev.id)
            if stored.audit_ts is None:
                no_ts += 1
                continue
            due_warn = (ev.expires_at - policy.warn_before).timestamp()
            if stored.audit_ts in warn_at:
                warn_lags.append(warn_at[stored.audit_ts] - due_warn)
            if stored.audit_ts in updated_at:
                expire_lags.append(updated_at[stored.audit_ts] - ev.expires_at.timestamp())
        store.disconnect()
    rows.append(
        Row(
            SECTION,
            f"warning (thread reply) lag, {count} events",
            _summary(warn_lags, count) + (f"; {no_ts} never got an audit message" if no_ts else ""),
            "p99 <= 2 s",
            "ok" if len(warn_lags) == count and pct(warn_lags, 99) <= 2 else "MISS",
        )
    )
    rows.append(
        Row(
            SECTION,
            f"expiry (audit message update) lag, {count} events",
            _summary(expire_lags, count),
            "p99 <= 2 s",
            "ok" if len(expire_lags) == count and pct(expire_lags, 99) <= 2 else "MISS",
        )
    )
