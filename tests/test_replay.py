"""A captured, validly signed `view_submission` replayed to the bot's real HTTP endpoint (within Slack's
5-minute signature window) after its event was closed: no second event, no second audit message, on the
SQLite and the DynamoDB store. The store refuses it (tests/test_store_requests.py); this is what the
replayer and the audit channel see."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from tests.conftest import Bot, dynamodb_bot
from tests.test_flows_close import GOOD, settled, submit_close

INVOKE = {
    "profile": ("select", "sandbox"),
    "reason": ("select", "incident"),
    "justification": GOOD,
    "duration": ("select", "1800"),
    "incident": None,
}


@pytest.fixture(params=["sqlite", "dynamodb"])
def any_bot(
    request: pytest.FixtureRequest, bot: Bot, fake: FakeSlack, policy: Policy, clock: ManualClock
) -> Iterator[Bot]:
    if request.param == "sqlite":
        yield bot
        return
    monkeypatch = request.getfixturevalue("monkeypatch")
    with dynamodb_bot(fake, policy, clock, monkeypatch, "replay") as dynamo:
        yield dynamo


def audit_posts(bot: Bot) -> list[str]:
    return [
        c.params["text"] for c in bot.fake.calls_to("chat.postMessage") if c.params["channel"] == "C0AUDIT"
    ]


def test_a_replayed_view_submission_creates_no_second_event_or_audit_message(any_bot: Bot) -> None:
    bot = any_bot
    view_id, metadata = bot.slack.open_form("U0001")  # the captured submission carries its metadata
    first = bot.slack.submit("breakglass_invoke", INVOKE, view_id=view_id, private_metadata=metadata)
    assert first.json["response_action"] == "update", first.json
    [event] = bot.store.list_by_invoker("U0001").items
    settled(bot, event.id)
    assert submit_close(bot, event.id, "incident over").status == 200
    settled(bot, event.id)
    posted = audit_posts(bot)

    replay = bot.slack.submit("breakglass_invoke", INVOKE, view_id=view_id, private_metadata=metadata)

    assert replay.status == 200
    assert replay.json["response_action"] == "errors"
    assert f"already submitted and recorded as event {event.id}" in replay.json["errors"]["profile"]
    assert [e.id for e in bot.store.list_by_invoker("U0001").items] == [event.id]
    bot.idle()
    assert audit_posts(bot) == posted
