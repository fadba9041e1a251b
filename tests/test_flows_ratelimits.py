"""Policy rate limits (cooldown, per_user, per_profile, escalate_after) over the real HTTP endpoint, with
bots built on custom policies and a ManualClock moved by hand."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest

from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import parse_policy
from store import BreakGlassEvent
from store.sqlite import SQLiteStore
from tests.conftest import Bot, make_bot
from tests.test_flows_close import AUDIT, GOOD, header, invoke, reply_text, settled, thread_texts

POLICY = """
audit_channel: C0AUDIT
incident_commanders: [U0IC, S0ONCALL]
security: [S0SEC]
profiles:
  sandbox:
    durations: [15m, 30m, 1h]
  staging:
    durations: [15m, 30m, 1h]
rate_limits:
"""

MakeBot = Callable[[str], Bot]


@pytest.fixture
def limited(fake: FakeSlack, store: SQLiteStore, clock: ManualClock) -> Iterator[MakeBot]:
    """Build a bot whose policy has the given `rate_limits` entries (YAML lines, indented by us)."""
    bots: list[Bot] = []

    def make(limits: str) -> Bot:
        text = POLICY + "".join(f"  {line.strip()}\n" for line in limits.strip().splitlines())
        bot = make_bot(fake, store, parse_policy(text, "limits.yml"), clock)
        bots.append(bot)
        return bot

    yield make
    for bot in bots:
        bot.runtime.scheduler.shutdown(wait=False)
        bot.server.stop()


def until(value: datetime, now: datetime, relative: str) -> str:
    return f"{value.strftime('%Y-%m-%d %H:%M UTC')} (in {relative})"


def refused(bot: Bot, user: str = "U0001", profile: str = "sandbox") -> str:
    """Invoke through the modal, expect the rate-limit refusal inline on `profile`; nothing stored."""
    before = bot.store.list_by_invoker(user, limit=100).items
    posts = len(bot.fake.calls_to("chat.postMessage"))
    body = bot.slack.invoke(user=user, profile=profile).json
    assert body["response_action"] == "errors", body
    assert list(body["errors"]) == ["profile"]
    assert bot.store.list_by_invoker(user, limit=100).items == before
    assert len(bot.fake.calls_to("chat.postMessage")) == posts
    return body["errors"]["profile"]


def close(bot: Bot, event: BreakGlassEvent, user: str = "U0001") -> BreakGlassEvent:
    assert "Closed event" in reply_text(bot.slack.command(f"close {event.id} done with it", user=user))
    return settled(bot, event.id)


# -- cooldown -----------------------------------------------------------------------------------------------


def test_cooldown_after_close(limited: MakeBot) -> None:
    bot = limited("cooldown: 10m")
    event = invoke(bot, profile="sandbox")
    bot.clock.advance(timedelta(minutes=5))
    closed = close(bot, event)
    ended = closed.ended_at
    assert ended == bot.clock.now()

    message = refused(bot, profile="sandbox")
    assert message.startswith("Cooldown")
    assert "'sandbox'" in message and ended.strftime("%Y-%m-%d %H:%M UTC") in message
    assert until(ended + timedelta(minutes=10), bot.clock.now(), "10 minutes") in message

    # the fast path is refused the same way, ephemerally
    text = reply_text(bot.slack.command(f"sandbox 15m incident {GOOD}"))
    assert "Cooldown" in text and "in 10 minutes" in text
    # another profile, or another person, is not cooling down
    assert invoke(bot, profile="staging").profile == "staging"
    assert invoke(bot, user="U0002", profile="sandbox").slack_user_id == "U0002"

    bot.clock.advance(timedelta(minutes=9, seconds=59))
    assert "in 1 second" in refused(bot, profile="sandbox")
    bot.clock.advance(timedelta(seconds=1))  # exactly at the retry time given
    again = invoke(bot, profile="sandbox")
    assert again.created_at == ended + timedelta(minutes=10)
    assert bot.fake.invalid_calls == []


def test_cooldown_after_expiry(limited: MakeBot) -> None:
    bot = limited("cooldown: 1h")
    event = invoke(bot, profile="sandbox", duration="900")
    bot.clock.set(event.expires_at)
    bot.runtime.scheduler.sweep()
    expired = settled(bot, event.id)
    assert expired.ended_at == event.expires_at
    assert until(event.expires_at + timedelta(hours=1), bot.clock.now(), "1 hour") in refused(bot)
    bot.clock.advance(timedelta(hours=1))
    invoke(bot, profile="sandbox")


# -- per_user / per_profile -------------------------------------------------------------------------------------


def test_per_user_limit_within_the_window(limited: MakeBot) -> None:
    bot = limited("window: 1h\nper_user: 2")
    t0 = bot.clock.now()
    first = invoke(bot, profile="sandbox")
    close(bot, first)
    bot.clock.advance(timedelta(minutes=10))
    invoke(bot, profile="staging")
    bot.clock.advance(timedelta(minutes=10))

    message = refused(bot, profile="sandbox")
    assert "at most 2 break-glass events per person per 1 hour" in message
    assert until(t0 + timedelta(hours=1), bot.clock.now(), "40 minutes") in message
    assert "Rate limit" in reply_text(bot.slack.command(f"sandbox 15m incident {GOOD}"))
    assert invoke(bot, user="U0002", profile="sandbox").slack_user_id == "U0002"  # per person

    bot.clock.set(t0 + timedelta(minutes=59, seconds=59))
    assert "in 1 second" in refused(bot, profile="sandbox")
    bot.clock.set(t0 + timedelta(hours=1))  # exactly when the refusal said
    third = invoke(bot, profile="sandbox")
    assert third.created_at == t0 + timedelta(hours=1)
    # the window slides: the second event (t0+10m) and the third are now the two in it
    close(bot, third)
    message = refused(bot, profile="sandbox")
    assert until(t0 + timedelta(minutes=70), bot.clock.now(), "10 minutes") in message


def test_per_profile_limit_within_the_window(limited: MakeBot) -> None:
    bot = limited("window: 2h\nper_profile: 2")
    t0 = bot.clock.now()
    invoke(bot, user="U0001", profile="sandbox")
    bot.clock.advance(timedelta(minutes=30))
    invoke(bot, user="U0002", profile="sandbox")
    bot.clock.advance(timedelta(minutes=1))

    message = refused(bot, user="U0SRE", profile="sandbox")
    assert "at most 2 break-glass events on 'sandbox' per 2 hours" in message
    assert until(t0 + timedelta(hours=2), bot.clock.now(), "1 hour 29 minutes") in message
    assert invoke(bot, user="U0SRE", profile="staging").profile == "staging"  # per profile

    bot.clock.set(t0 + timedelta(hours=2))
    assert invoke(bot, user="U0SRE", profile="sandbox").created_at == t0 + timedelta(hours=2)


# -- escalation -----------------------------------------------------------------------------------------------------


def test_escalate_after_flags_the_nth_invocation(limited: MakeBot) -> None:
    bot = limited("window: 24h\nescalate_after: 3")
    first = invoke(bot, profile="sandbox")
    second = invoke(bot, profile="staging")
    for event in (first, second):
        assert event.escalated is False
        assert "Escalated" not in json.dumps(bot.fake.message(AUDIT, event.audit_ts)["blocks"])
        assert thread_texts(bot, event) == []
    close(bot, first)
    bot.clock.advance(timedelta(minutes=5))

    third = invoke(bot, profile="sandbox")  # allowed, but escalated
    assert third.escalated is True
    audit = bot.fake.message(AUDIT, third.audit_ts)
    assert "Escalated" in json.dumps(audit["blocks"]) and "ACTIVE" in header(audit["blocks"])
    replies = thread_texts(bot, third)
    assert len(replies) == 1
    assert "<!subteam^S0SEC>" in replies[0] and "<@U0001>" in replies[0] and third.id in replies[0]

    other = invoke(bot, user="U0002", profile="sandbox")  # counted per person
    assert other.escalated is False and thread_texts(bot, other) == []

    # later events in the window are escalated too, and the flag survives the close
    close(bot, third)
    fourth = invoke(bot, profile="sandbox")
    assert fourth.escalated is True and "<!subteam^S0SEC>" in thread_texts(bot, fourth)[0]
    closed = bot.fake.message(AUDIT, third.audit_ts)
    assert "CLOSED" in header(closed["blocks"]) and "Escalated" in json.dumps(closed["blocks"])
    assert bot.fake.invalid_calls == []


def test_escalation_window_passes(limited: MakeBot) -> None:
    bot = limited("window: 1h\nescalate_after: 2")
    first = invoke(bot, profile="sandbox")
    close(bot, first)
    bot.clock.advance(timedelta(hours=1, seconds=1))
    assert invoke(bot, profile="sandbox").escalated is False
    assert invoke(bot, profile="staging").escalated is True
