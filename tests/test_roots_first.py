"""Roots before thread replies across the whole delivery path (issue 21.2), against the fake Web API's real
HTTP server with Slack's per-channel limit (bot/localslack/ratelimit.py): every delivery worker is busy
with thread replies of older events (closed through `/breakglass close`) when new engineers invoke; each
new invocation's root message reaches the audit channel before any older event's thread reply that took
its turn after that root was owed (bot/delivery/queue.py, bot/delivery/precedence.py, bot/slack_pacing.py).

With the old code (roots first only among posts already waiting in the pacing gate) both tests fail: the
replies the four workers already hold, and those queued before the new invocations, go first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from bot.slack_pacing import THREAD
from store import Status
from store.sqlite import SQLiteStore
from tests.conftest import Bot, make_bot

OLD, NEW = 8, 3  # older events closed at once (2 per worker), new invocations while they are delivered
AUDIT = "C0AUDIT"


@pytest.fixture
def bot(fake: FakeSlack, store: SQLiteStore, policy: Policy, clock: ManualClock) -> Iterator[Bot]:
    for i in range(OLD + NEW):
        fake.add_user(f"U{9100 + i}", email=f"u{9100 + i}@example.com")
    # paced by the gate create_app wires (4 posts a second, no burst), Slack allowing a little more
    b = make_bot(fake, store, policy, clock, slack_channel_rate=4.0, slack_channel_burst=1)
    yield b
    b.runtime.scheduler.shutdown(wait=False)
    b.server.stop()


def in_parallel(*calls: object) -> None:
    threads = [threading.Thread(target=call) for call in calls]  # type: ignore[arg-type]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def audit_posts(fake: FakeSlack) -> list:  # type: ignore[type-arg]
    return [c for c in fake.calls_to("chat.postMessage") if c.ok and c.params.get("channel") == AUDIT]


def root_event(call: object) -> str | None:
    params = call.params  # type: ignore[attr-defined]
    if params.get("thread_ts"):
        return None
    return str(params["metadata"]["event_payload"]["event_id"])


def invoke_old(bot: Bot) -> list[str]:
    users = [f"U{9100 + i}" for i in range(OLD)]
    in_parallel(*(lambda u=u: bot.slack.invoke(user=u) for u in users))
    bot.idle()
    old = bot.store.list_active()
    assert len(old) == OLD and all(e.audit_ts for e in old)
    return [e.id for e in old]


def close_all(bot: Bot, ids: list[str]) -> list[threading.Thread]:
    """`/breakglass close` for each: every close owes a thread reply, delivered by the workers."""
    closers = [
        threading.Thread(
            target=bot.slack.command,
            args=(f"close {i} incident resolved, all done",),
            kwargs={"user": bot.store.get(i).slack_user_id},
        )
        for i in ids
    ]
    for closer in closers:
        closer.start()
    return closers


def owed_times(bot: Bot) -> dict[str, float]:
    """When each event was handed to the post-ack queue (its root owed from then), by event id."""
    queue = bot.runtime.pipeline.queue
    owed: dict[str, float] = {}
    handed = queue.deliver_after_ack

    def spy(event_id: str, **kwargs: object) -> None:
        owed.setdefault(event_id, time.monotonic())
        handed(event_id, **kwargs)  # type: ignore[arg-type]

    queue.deliver_after_ack = spy  # type: ignore[method-assign]
    return owed


def thread_replies_waiting(bot: Bot) -> int:
    gate = bot.runtime.pipeline.client.gate  # type: ignore[attr-defined]
    with gate._cond:
        state = gate._channels.get(AUDIT)
        return sum(1 for t in state.waiting if t[0] == THREAD) if state else 0


def test_new_roots_go_before_older_replies_the_busy_workers_hold(bot: Bot, fake: FakeSlack) -> None:
    """Paced at the channel's rate: 8 closes keep the 4 workers waiting in the gate with thread replies
    (4 more queued) when 3 engineers invoke. Each new root arrives before every older reply that took its
    turn after the root was owed (at most one reply may already be on its way: one post in flight)."""
    fake.rate_limit("chat.postMessage", per_second=5.0, burst=2)
    old = invoke_old(bot)
    owed = owed_times(bot)
    closers = close_all(bot, old)
    deadline = time.monotonic() + 10
    while thread_replies_waiting(bot) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert thread_replies_waiting(bot) >= 3, "the workers wait in the gate with older thread replies"
    users = [f"U{9100 + OLD + i}" for i in range(NEW)]
    in_parallel(*(lambda u=u: bot.slack.invoke(user=u) for u in users))
    for closer in closers:
        closer.join(30)
    bot.idle()
    posts = audit_posts(fake)
    new = {e.id for e in bot.store.list_active()}
    assert len(new) == NEW and set(owed) >= new
    old_replies = [c for c in posts if root_event(c) is None]
    assert len(old_replies) == OLD, "every close announced once in its thread"
    for event_id in new:
        (root,) = [c for c in posts if root_event(c) == event_id]
        jumped = [c for c in old_replies if owed[event_id] < c.at < root.at]
        assert len(jumped) <= 1, f"{len(jumped)} older thread replies went before a new root"
    assert {bot.store.get(i).status for i in old} == {Status.CLOSED}


def test_after_a_pause_the_new_roots_come_first_though_every_worker_held_a_reply(
    bot: Bot, fake: FakeSlack
) -> None:
    """Slack pauses the audit channel (429, Retry-After 2) while 8 older events are closed and 3 engineers
    invoke: every worker already waits with an older reply, yet when the pause ends the channel shows the
    3 new accesses first, then the 8 replies; nothing lost, nothing twice."""
    fake.rate_limit("chat.postMessage", per_second=5.0, burst=2)
    old = invoke_old(bot)
    gate = bot.runtime.pipeline.client.gate  # type: ignore[attr-defined]
    gate.pause(AUDIT, 2.0)  # as a 429 would
    before = len(audit_posts(fake))
    closers = close_all(bot, old)
    deadline = time.monotonic() + 5
    while thread_replies_waiting(bot) < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert thread_replies_waiting(bot) == 4, "all four workers wait with older replies"
    users = [f"U{9100 + OLD + i}" for i in range(NEW)]
    in_parallel(*(lambda u=u: bot.slack.invoke(user=u) for u in users))
    assert gate.paused_for(AUDIT) > 0, "the new invocations came during the pause"
    for closer in closers:
        closer.join(30)
    bot.idle()
    after = audit_posts(fake)[before:]
    kinds = ["root" if root_event(c) else "reply" for c in after]
    assert kinds == ["root"] * NEW + ["reply"] * OLD
    assert len({root_event(c) for c in after[:NEW]}) == NEW
    assert len({c.params["thread_ts"] for c in after[NEW:]}) == OLD
