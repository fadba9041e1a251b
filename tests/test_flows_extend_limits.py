"""Extensions count toward the policy's rate limits and escalation (issue 22), over the real HTTP endpoint
with signed requests and the fake Slack Web API, on SQLite and DynamoDB (moto): an extension that crosses
`escalate_after` is escalated and announced as an invocation would be; one past `per_user` is refused,
from the slash command and from the Extend modal, with a message naming the limit, and nothing is changed
or announced; an invocation then finds the extensions in its window too."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest

from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy, parse_policy
from store import BreakGlassEvent
from tests.conftest import Bot, dynamodb_bot, make_bot
from tests.test_flows_close import invoke, reply_text, settled, thread_texts

REASON = "failover still running on the primary"
POLICY = """
audit_channel: C0AUDIT
warn_before: 15m
sweep_interval: 30s
incident_commanders: [U0IC]
security: [S0SEC]
rate_limits:
  window: 1h
  per_user: 3
  escalate_after: 2
profiles:
  sandbox:
    durations: [15m, 30m, 1h]
  staging:
    durations: [15m, 30m, 1h]
  frozen:
    durations: [15m, 1h]
    extensions: 0
"""
REFUSAL = re.compile(
    r"Rate limit: at most 3 break-glass invocations and extensions per person per 1 hour, so event "
    r"(?P<id>[0-9a-f]{16}) cannot be extended now \(nothing was changed\)\. It may be extended again at "
    r"\d{4}-\d\d-\d\d \d\d:\d\d UTC \(in 58 minutes\)\."
)


@pytest.fixture
def policy() -> Policy:
    return parse_policy(POLICY, "extend-limits.yml")


@pytest.fixture(params=["sqlite", "dynamodb"])
def any_bot(
    request: pytest.FixtureRequest,
    fake: FakeSlack,
    policy: Policy,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Bot]:
    if request.param == "dynamodb":
        with dynamodb_bot(fake, policy, clock, monkeypatch, "extend-limits") as ddb:
            yield ddb
        return
    bot = make_bot(fake, request.getfixturevalue("store"), policy, clock)
    yield bot
    bot.runtime.scheduler.shutdown(wait=False)
    bot.server.stop()


def _announcements(bot: Bot) -> int:
    bot.idle()
    return len(bot.fake.calls_to("chat.postMessage")) + len(bot.fake.calls_to("chat.update"))


def _extend_by_modal(bot: Bot, event: BreakGlassEvent, seconds: str, user: str = "U0001") -> dict:
    opened = len(bot.fake.calls_to("views.open"))
    bot.slack.click("extend_event", event.id, user=user, channel="D0001")
    view = bot.fake.wait_for("views.open", opened + 1)[-1].params["view"]
    return bot.slack.submit(
        "breakglass_extend",
        {"extend_duration": ("select", seconds), "extend_reason": REASON},
        user=user,
        private_metadata=view["private_metadata"],
    ).json


def test_extensions_escalate_and_are_refused_past_per_user(any_bot: Bot) -> None:
    bot = any_bot
    t0 = bot.clock.now()
    event = invoke(bot, profile="sandbox", duration="3600")  # the 1st entry in U0001's window
    assert event.escalated is False

    # the 2nd entry crosses escalate_after: escalated, and announced as an escalated invocation is
    bot.clock.advance(timedelta(minutes=1))
    assert _extend_by_modal(bot, event, "900")["response_action"] == "update"
    first = settled(bot, event.id)
    assert first.escalated and first.extensions[-1].escalated
    texts = thread_texts(bot, first)
    escalations = [t for t in texts if "escalation" in t]
    assert len(escalations) == 1, texts
    assert (
        "<!subteam^S0SEC>" in escalations[0]
        and "invoked or extended break-glass repeatedly" in escalations[0]
    )
    assert "just extended by <@U0001>" in escalations[0]
    assert any("Extended by 15 minutes" in t and "escalated" in t for t in texts)

    # the 3rd entry, by an incident commander through the slash command: allowed (and escalated too)
    bot.clock.advance(timedelta(minutes=1))
    assert "extended by 15 minutes" in reply_text(
        bot.slack.command(f"extend {event.id} 15m {REASON}", user="U0IC")
    )
    second = settled(bot, event.id)
    assert len(second.extensions) == 2 and sum("escalation" in t for t in thread_texts(bot, second)) == 2

    # the 4th is refused, from the slash command and from the modal: the limit named, nothing changed
    before = _announcements(bot)
    text = reply_text(bot.slack.command(f"extend {event.id} 15m {REASON}", user="U0001"))
    assert (match := REFUSAL.search(text)) and match["id"] == event.id, text
    body = _extend_by_modal(bot, event, "900")
    assert body["response_action"] == "errors", body
    assert REFUSAL.fullmatch(body["errors"]["extend_duration"]), body
    assert bot.store.get(event.id) == second
    assert _announcements(bot) == before  # no thread reply, no DM, no root update
    assert bot.fake.invalid_calls == []

    # an invocation finds the extensions in its window too
    refusal = bot.slack.invoke(user="U0001", profile="staging").json
    assert refusal["response_action"] == "errors"
    assert (
        "at most 3 break-glass events per person per 1 hour (extensions count too)"
        in refusal["errors"]["profile"]
    )
    assert len(bot.store.list_by_invoker(event.invoker, limit=10).items) == 1

    # when the invocation leaves the window, one more extension fits
    bot.clock.set(t0 + timedelta(hours=1))
    assert _extend_by_modal(bot, event, "900")["response_action"] == "update"
    assert len(settled(bot, event.id).extensions) == 3


def test_a_profile_with_extensions_zero_still_cannot_be_extended(any_bot: Bot) -> None:
    bot = any_bot
    event = invoke(bot, profile="frozen", duration="900")
    before = _announcements(bot)
    text = reply_text(bot.slack.command(f"extend {event.id} 15m {REASON}", user="U0001"))
    assert "Profile 'frozen' cannot be extended" in text, text
    assert bot.store.get(event.id) == event and _announcements(bot) == before
