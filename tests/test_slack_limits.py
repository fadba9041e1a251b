"""Slack's per-channel posting limit, against the fake Web API's real HTTP server (bot/localslack/ratelimit.py:
a token bucket per channel, then 429 + Retry-After): the pacing gate (bot/slack_pacing.py) shared by every
thread posting through one client, and the delivery pipeline under a burst of invocations.

Rates are scaled up (a few posts a second instead of one) to keep the tests short; Retry-After is whole
seconds, as Slack's. The gate's unit tests on an injected clock: tests/test_slack_pacing.py.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from slack_sdk import WebClient

from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from bot.slack_pacing import ChannelGate, PacedRateLimitRetryHandler, PacedWebClient
from store import Status
from store.sqlite import SQLiteStore
from tests.conftest import Bot, make_bot
from tests.harness import BOT_TOKEN

WORKERS = 4


def post_from_workers(client: WebClient, channel: str, per_worker: int) -> list[BaseException]:
    """`WORKERS` threads (the delivery workers) post `per_worker` messages each to `channel`."""
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        for n in range(per_worker):
            try:
                client.chat_postMessage(channel=channel, text=f"w{worker}-{n}")
            except Exception as exc:  # recorded: the test asserts there are none
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def accepted_texts(fake: FakeSlack, channel: str) -> Counter[str]:
    return Counter(
        str(c.params.get("text"))
        for c in fake.calls_to("chat.postMessage")
        if c.ok and c.params.get("channel") == channel
    )


def paced_client(fake: FakeSlack, gate: ChannelGate) -> PacedWebClient:
    return PacedWebClient(
        token=BOT_TOKEN,
        base_url=fake.url,
        timeout=5,
        gate=gate,
        retry_handlers=[PacedRateLimitRetryHandler(max_retry_count=5)],
    )


def test_a_429_pauses_the_channel_for_every_worker_of_the_process(fake: FakeSlack) -> None:
    """The gate paces faster than the fake allows (so Slack answers 429s): once one worker is told to
    wait, no worker posts to that channel until the Retry-After has run out; every post still arrives once."""
    limits = fake.rate_limit("chat.postMessage", per_second=4.0, burst=2)
    client = paced_client(fake, ChannelGate(rate=100.0, burst=20))
    errors = post_from_workers(client, "C0AUDIT", per_worker=4)
    assert errors == []
    assert limits.limited, "the fake limited the channel (else this test proves nothing)"
    assert limits.early == [], "a post arrived while Slack's Retry-After was still running"
    texts = accepted_texts(fake, "C0AUDIT")
    assert texts == Counter({f"w{w}-{n}": 1 for w in range(WORKERS) for n in range(4)})


def test_slack_sdk_alone_keeps_posting_to_a_channel_it_was_told_to_leave_alone(fake: FakeSlack) -> None:
    """What the gate fixes: with slack_sdk's own 429 handler each worker sleeps only its own request."""
    from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

    limits = fake.rate_limit("chat.postMessage", per_second=4.0, burst=2)
    client = WebClient(
        token=BOT_TOKEN, base_url=fake.url, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=5)]
    )
    post_from_workers(client, "C0AUDIT", per_worker=4)
    assert limits.early, "without the gate, workers post while another one's Retry-After runs"


def test_proactive_pacing_at_slacks_rate_causes_no_429(fake: FakeSlack) -> None:
    limits = fake.rate_limit("chat.postMessage", per_second=5.0, burst=3)
    client = paced_client(fake, ChannelGate(rate=5.0 * 0.95, burst=3))
    started = time.monotonic()
    errors = post_from_workers(client, "C0AUDIT", per_worker=3)
    elapsed = time.monotonic() - started
    assert errors == [] and limits.limited == []
    assert sum(accepted_texts(fake, "C0AUDIT").values()) == 12
    assert elapsed >= (12 - 3) / 5.0, "paced: the burst, then the channel's rate"


def test_other_channels_are_not_held_up_by_a_paused_one(fake: FakeSlack) -> None:
    fake.rate_limit("chat.postMessage", per_second=1.0, burst=1)
    gate = ChannelGate(rate=1.0, burst=1)
    client = paced_client(fake, gate)
    client.chat_postMessage(channel="C0AUDIT", text="first")
    gate.pause("C0AUDIT", 3.0)  # as a 429 for the audit channel would
    started = time.monotonic()
    client.chat_postMessage(channel="U0001", text="your access is active")  # a DM: its own channel
    assert time.monotonic() - started < 1.0
    assert gate.paused_for("C0AUDIT") > 1.5


# -- the delivery pipeline ---------------------------------------------------------------------------


@pytest.fixture
def paced_bot(fake: FakeSlack, store: SQLiteStore, policy: Policy, clock: ManualClock) -> Iterator[Bot]:
    for i in range(12):
        fake.add_user(f"U{9000 + i}", email=f"u{9000 + i}@example.com")
    b = make_bot(fake, store, policy, clock, slack_channel_rate=None, slack_channel_burst=None)  # paced
    yield b
    b.runtime.scheduler.shutdown(wait=False)
    b.server.stop()


def roots_by_event(fake: FakeSlack) -> dict[str, list[float]]:
    roots: dict[str, list[float]] = {}
    for call in fake.calls_to("chat.postMessage"):
        if call.ok and call.params.get("channel") == "C0AUDIT" and not call.params.get("thread_ts"):
            event_id = call.params["metadata"]["event_payload"]["event_id"]
            roots.setdefault(event_id, []).append(call.at)
    return roots


def test_a_burst_of_invocations_is_announced_once_each_without_hitting_a_paused_channel(
    paced_bot: Bot, fake: FakeSlack
) -> None:
    """12 engineers submit at once; Slack allows 4 posts a second per channel, bursts of 2: every invocation
    gets its root audit message exactly once, no post arrives inside a Retry-After, and pacing at the
    channel's rate leaves at most one 429 (the issue's target: 3 per 30 invocations)."""
    limits = fake.rate_limit("chat.postMessage", per_second=4.0, burst=2)
    paced_bot.runtime.pipeline.client.gate = ChannelGate(rate=4.0 * 0.95, burst=2)  # scaled like the fake
    users = [f"U{9000 + i}" for i in range(12)]
    answers: list[int] = []
    threads = [
        threading.Thread(target=lambda u=u: answers.append(paced_bot.slack.invoke(user=u).status))
        for u in users
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == [200] * 12
    events = paced_bot.store.list_active()
    assert len(events) == 12
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and set(roots_by_event(fake)) != {e.id for e in events}:
        time.sleep(0.05)
    paced_bot.idle()
    roots = roots_by_event(fake)
    assert set(roots) == {e.id for e in events}, "lost root messages"
    assert all(len(times) == 1 for times in roots.values()), "duplicated root messages"
    assert limits.early == []
    assert len(limits.limited) <= 1
    assert all(paced_bot.store.get(e.id).audit_ts for e in events)


def test_new_invocations_root_messages_come_before_older_events_thread_replies(
    paced_bot: Bot, fake: FakeSlack
) -> None:
    """While the audit channel is paused (a 429), three older events are closed (each owes a thread reply)
    and three engineers invoke: when the pause ends, the channel shows the three new accesses first."""
    gate = ChannelGate(rate=20.0, burst=1)
    paced_bot.runtime.pipeline.client.gate = gate
    for user in ("U9000", "U9001", "U9002"):
        assert paced_bot.slack.invoke(user=user).status == 200
    paced_bot.idle()
    old = paced_bot.store.list_active()
    assert len(old) == 3 and all(e.audit_ts for e in old)

    fake.fail("chat.postMessage", status=429, retry_after=3, channel="C0AUDIT")
    assert paced_bot.slack.invoke(user="U9003").status == 200  # its root gets the 429: the channel pauses
    deadline = time.monotonic() + 5
    while gate.paused_for("C0AUDIT") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gate.paused_for("C0AUDIT") > 1.5
    closers = []
    for event in old:
        paced_bot.service.close(event.id, by=event.invoker, reason="incident resolved, access not needed")
        closer = threading.Thread(target=paced_bot.runtime.pipeline.deliver, args=(event.id,))
        closer.start()
        closers.append(closer)
    for user in ("U9004", "U9005", "U9006"):
        assert paced_bot.slack.invoke(user=user).status == 200

    def waiting() -> int:
        with gate._cond:
            state = gate._channels.get("C0AUDIT")
            return len(state.waiting) if state else 0

    deadline = time.monotonic() + 5
    while waiting() < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert waiting() == 6, "three replies and three roots wait for the channel"
    assert gate.paused_for("C0AUDIT") > 0, "all of them queued during the pause"
    for closer in closers:
        closer.join(30)
    paced_bot.idle()
    posts = [c for c in fake.calls_to("chat.postMessage") if c.ok and c.params.get("channel") == "C0AUDIT"]
    after_pause = posts[3:]  # the three older roots came before the 429
    kinds = ["reply" if c.params.get("thread_ts") else "root" for c in after_pause]
    assert kinds == ["root"] * 4 + ["reply"] * 3
    assert {paced_bot.store.get(e.id).status for e in old} == {Status.CLOSED}


def test_the_pace_per_channel_is_a_setting(fake: FakeSlack) -> None:
    from pydantic import ValidationError

    from bot.app import make_slack_client
    from bot.slack_pacing import BURST, RATE
    from tests.conftest import settings_for

    default = make_slack_client(settings_for(fake, slack_channel_rate=None, slack_channel_burst=None))
    assert isinstance(default, PacedWebClient)
    assert (default.gate.rate, default.gate.burst) == (RATE, BURST)
    tuned = make_slack_client(settings_for(fake, slack_channel_rate=2.5, slack_channel_burst=6))
    assert isinstance(tuned, PacedWebClient)
    assert (tuned.gate.rate, tuned.gate.burst) == (2.5, 6)
    with pytest.raises(ValidationError):
        settings_for(fake, slack_channel_rate=0)


def test_a_delivery_waiting_out_a_retry_after_keeps_its_lease(paced_bot: Bot, fake: FakeSlack) -> None:
    """Slack answers the root post 429 with Retry-After: 30. The delivery waits for the channel (on the
    bot's clock, which the test moves 8 s at a time, past the 10 s lease) while the lease keeper renews its
    lease: the sweeps meanwhile find nothing to take over, and the one retry posts the root message once."""
    from bot.delivery.lease import RENEW_EVERY

    fake.fail("chat.postMessage", status=429, retry_after=30, channel="C0AUDIT")
    assert paced_bot.slack.invoke(user="U9000").status == 200
    gate = paced_bot.runtime.pipeline.client.gate
    deadline = time.monotonic() + 5
    while gate.paused_for("C0AUDIT") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    (event,) = paced_bot.store.list_active()
    for _ in range(4):
        assert roots_by_event(fake) == {}, "nothing posted before Slack's Retry-After ran out"
        paced_bot.clock.advance(8)
        time.sleep(RENEW_EVERY.total_seconds() + 0.5)  # a beat of the lease keeper
        stored = paced_bot.store.get(event.id)
        if stored.audit_ts is None:
            assert stored.outbox_next_at is not None and stored.outbox_next_at > paced_bot.clock.now()
        paced_bot.runtime.scheduler.sweep()
    paced_bot.idle()
    assert roots_by_event(fake) == {event.id: roots_by_event(fake)[event.id]}
    assert len(roots_by_event(fake)[event.id]) == 1
    assert paced_bot.store.get(event.id).audit_ts is not None


REPLICA = """
import sys, threading
from bot.slack_pacing import ChannelGate, PacedRateLimitRetryHandler, PacedWebClient

name, url, token = sys.argv[1:4]
client = PacedWebClient(
    token=token, base_url=url, timeout=10, gate=ChannelGate(rate=100.0, burst=20),
    retry_handlers=[PacedRateLimitRetryHandler(max_retry_count=10)],
)

def work(worker):
    for n in range(3):
        client.chat_postMessage(channel="C0AUDIT", text=f"{name}-w{worker}-{n}")

threads = [threading.Thread(target=work, args=(w,)) for w in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def test_each_replica_honours_every_429_it_is_given(fake: FakeSlack) -> None:
    """Two replicas (real processes, each with its own gate) post to one channel faster than Slack allows:
    across replicas the gate is per process, but no replica posts inside a Retry-After it was given, and
    every post arrives once."""
    import subprocess
    import sys

    from tests.test_cold_start import ROOT

    fake.rate_limit("chat.postMessage", per_second=4.0, burst=2)
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", REPLICA, name, fake.url, BOT_TOKEN],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("r1", "r2")
    ]
    for replica in replicas:
        _, err = replica.communicate(timeout=120)
        assert replica.returncode == 0, err
    posts = [c for c in fake.calls_to("chat.postMessage") if c.params.get("channel") == "C0AUDIT"]
    for name in ("r1", "r2"):
        mine = [c for c in posts if str(c.params.get("text")).startswith(name + "-")]
        told = [(c.at, c.at + (c.retry_after or 0)) for c in mine if c.status == 429]
        assert told, f"{name} was given 429s (else this test proves nothing)"
        inside = [c.params["text"] for c in mine for start, end in told if start < c.at < end]
        assert inside == [], f"{name} posted inside a Retry-After it was given"
    assert accepted_texts(fake, "C0AUDIT") == Counter(
        {f"r{r}-w{w}-{n}": 1 for r in (1, 2) for w in range(3) for n in range(3)}
    )
