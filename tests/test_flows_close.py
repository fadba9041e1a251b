"""Closing break-glass access: the Close button, the close modal and `/breakglass close`, over the real
HTTP endpoint with signed requests and the fake Slack Web API.

The helpers at the top are shared by the other `test_flows_*` files of this series.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from bot.localslack.webapi import Call
from store import BreakGlassEvent, Status
from tests.conftest import Bot
from tests.harness import Response, modals_opened, not_the_invoke_form

GOOD = "Database failover is stuck; promoting the replica by hand"
AUDIT = "C0AUDIT"
T = TypeVar("T")


# -- helpers ---------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], T | None], what: str, timeout: float = 5.0) -> T:
    """Poll `predicate` (like FakeSlack.wait_for) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def settled(bot: Bot, event_id: str) -> BreakGlassEvent:
    """The event once every announcement it owes has been delivered (outbox empty, audit message posted)."""

    def check() -> BreakGlassEvent | None:
        event = bot.store.get(event_id)
        return event if event.outbox == () and event.audit_ts else None

    return wait_until(check, f"the announcements of {event_id}")


def invoke(bot: Bot, user: str = "U0001", **fields: Any) -> BreakGlassEvent:
    """Invoke through the modal and return the stored event once it has been announced."""
    before = {e.id for e in bot.store.list_by_invoker(user, limit=100).items}
    response = bot.slack.invoke(user=user, **fields)
    assert response.status == 200
    assert response.json["response_action"] == "update", response.json
    new = [e for e in bot.store.list_by_invoker(user, limit=100).items if e.id not in before]
    assert len(new) == 1
    return settled(bot, new[0].id)


def meta(event_id: str, channel: str | None = AUDIT) -> str:
    return json.dumps({"event_id": event_id, "channel_id": channel})


def submit_close(bot: Bot, event_id: str, reason: str | None, user: str = "U0001") -> Response:
    return bot.slack.submit(
        "breakglass_close", {"close_reason": reason}, user=user, private_metadata=meta(event_id)
    )


def action_ids(blocks: Any) -> list[str]:
    """Every action_id in a block list / view, in order."""
    found: list[str] = []
    if isinstance(blocks, dict):
        if isinstance(blocks.get("action_id"), str):
            found.append(blocks["action_id"])
        for value in blocks.values():
            found += action_ids(value)
    elif isinstance(blocks, list):
        for value in blocks:
            found += action_ids(value)
    return found


def buttons(blocks: Any) -> list[tuple[str, str]]:
    """(action_id, value) of every button in a block list / view."""
    out: list[tuple[str, str]] = []
    if isinstance(blocks, dict):
        if blocks.get("type") == "button":
            out.append((blocks["action_id"], blocks.get("value", "")))
        for value in blocks.values():
            out += buttons(value)
    elif isinstance(blocks, list):
        for value in blocks:
            out += buttons(value)
    return out


def header(blocks: list[dict]) -> str:
    return next(b["text"]["text"] for b in blocks if b["type"] == "header")


def audit_updates(bot: Bot, event: BreakGlassEvent) -> list[Call]:
    return [
        c
        for c in bot.fake.calls_to("chat.update")
        if c.ok and c.params.get("channel") == event.audit_channel and c.params.get("ts") == event.audit_ts
    ]


def thread_texts(bot: Bot, event: BreakGlassEvent) -> list[str]:
    assert event.audit_channel and event.audit_ts
    return [m["text"] for m in bot.fake.thread(event.audit_channel, event.audit_ts)]


def dm_texts(bot: Bot, user: str) -> list[str]:
    return [m["text"] for m in bot.fake.channel_messages(user)]


def ephemerals(bot: Bot, user: str, count: int = 1) -> list[str]:
    calls = bot.fake.wait_for("chat.postEphemeral", count, where=lambda c: c.params.get("user") == user)
    return [c.params["text"] for c in calls]


def reply_text(response: Response) -> str:
    """The ephemeral answer to a slash command, from the HTTP response body (text and blocks)."""
    assert response.status == 200, response.text
    body = response.json
    assert body is not None, "the command was acked without an answer"
    return body["text"] + "\n" + json.dumps(body.get("blocks", []))


def expire(bot: Bot, event: BreakGlassEvent) -> BreakGlassEvent:
    """Let the access run out, and let the scheduler's sweep expire it and announce it."""
    bot.clock.set(event.expires_at + timedelta(seconds=1))
    bot.runtime.scheduler.sweep()
    expired = settled(bot, event.id)
    assert expired.status is Status.EXPIRED
    return expired


# -- the Close button --------------------------------------------------------------------------------


def test_invoker_clicking_close_opens_the_close_modal(bot: Bot) -> None:
    event = invoke(bot)
    response = bot.slack.click("close_event", event.id, user="U0001")
    assert response.status == 200
    view = bot.fake.wait_for("views.open", where=not_the_invoke_form)[0].params["view"]
    assert view["callback_id"] == "breakglass_close"
    inputs = [b for b in view["blocks"] if b["type"] == "input"]
    assert [b["block_id"] for b in inputs] == ["close_reason"]
    assert inputs[0]["element"]["action_id"] == "close_reason"
    metadata = json.loads(view["private_metadata"])
    assert (
        metadata["event_id"] == event.id
    )  # and who opened it, bound to the view (tests/test_ack_every_listener.py)
    assert metadata["who"]["user_id"] == "U0001" and metadata["who"]["view"] == view["external_id"]
    assert event.id in json.dumps(view["blocks"])
    assert bot.store.get(event.id) == event  # opening the form changes nothing
    assert bot.fake.calls_to("chat.postEphemeral") == []
    assert bot.fake.invalid_calls == []


@pytest.mark.parametrize(
    "closer",
    [
        pytest.param("U0IC", id="incident-commander-directly"),
        pytest.param("U0ONCALL", id="incident-commander-via-group"),
        pytest.param("U0SECA", id="security-via-group"),
    ],
)
def test_incident_commanders_and_security_may_open_the_close_modal(bot: Bot, closer: str) -> None:
    event = invoke(bot)
    bot.slack.click("close_event", event.id, user=closer)
    view = bot.fake.wait_for("views.open", where=not_the_invoke_form)[0].params["view"]
    assert view["callback_id"] == "breakglass_close"
    assert json.loads(view["private_metadata"])["event_id"] == event.id
    assert bot.fake.calls_to("chat.postEphemeral") == []


def test_anyone_else_clicking_close_is_refused_ephemerally(bot: Bot) -> None:
    event = invoke(bot)
    bot.slack.click("close_event", event.id, user="U0002")
    call = bot.fake.wait_for("chat.postEphemeral")[0]
    assert call.params["user"] == "U0002" and call.params["channel"] == AUDIT
    assert "Only the invoker, an incident commander or security" in call.params["text"]
    assert modals_opened(bot.fake) == []
    assert bot.store.get(event.id) == event
    assert audit_updates(bot, event) == []
    assert bot.fake.invalid_calls == []


def test_clicking_close_with_a_bogus_value_answers_clearly(bot: Bot) -> None:
    bot.slack.click("close_event", "not-an-id", user="U0001")
    assert "is not an event id" in ephemerals(bot, "U0001")[0]
    bot.slack.click("close_event", "0123456789abcdef", user="U0001")
    assert "no break-glass event with id 0123456789abcdef" in ephemerals(bot, "U0001", 2)[1]
    assert modals_opened(bot.fake) == []


# -- submitting the close modal ------------------------------------------------------------------------


def test_invoker_closing_updates_the_audit_message_and_threads_without_a_dm(bot: Bot) -> None:
    event = invoke(bot)
    dms_before = dm_texts(bot, "U0001")
    assert len(dms_before) == 1  # the "access is active" DM

    response = submit_close(bot, event.id, "Replica promoted, done", user="U0001")
    assert response.status == 200
    # the closer is told: the modal turns into a confirmation naming the event and the person
    assert response.json["response_action"] == "update"
    confirmation = json.dumps(response.json["view"])
    assert "Access closed" in confirmation and event.id in confirmation and "<@U0001>" in confirmation
    stored = bot.store.get(event.id)
    assert stored.status is Status.CLOSED
    assert stored.closed_by == "U0001" and stored.closed_reason == "Replica promoted, done"
    assert stored.ended_at == bot.clock.now()

    stored = settled(bot, event.id)
    update = bot.fake.wait_for("chat.update")[0]
    assert update.params["channel"] == AUDIT and update.params["ts"] == event.audit_ts
    blocks = update.params["blocks"]
    assert "CLOSED" in header(blocks)
    assert [a for a, _ in buttons(blocks)] == ["review_event"]
    assert buttons(blocks) == [("review_event", event.id)]
    message = bot.fake.message(AUDIT, event.audit_ts)
    assert "CLOSED" in header(message["blocks"]) and "close_event" not in action_ids(message["blocks"])

    replies = thread_texts(bot, stored)
    assert len(replies) == 1
    assert "<@U0001>" in replies[0] and "Replica promoted, done" in replies[0]
    # closing your own access: no new DM; the "access is active" one now says it was closed
    (dm,) = dm_texts(bot, "U0001")
    assert dm != dms_before[0] and "was closed by <@U0001>" in dm
    assert bot.fake.invalid_calls == []


@pytest.mark.parametrize("closer", ["U0IC", "U0ONCALL", "U0SECA"])
def test_someone_else_closing_dms_the_invoker(bot: Bot, closer: str) -> None:
    event = invoke(bot)
    response = submit_close(bot, event.id, "Incident over, closing for them", user=closer)
    assert response.status == 200 and response.json["response_action"] == "update"
    assert "<@U0001>" in json.dumps(response.json["view"])  # the closer is told whose access ended
    stored = settled(bot, event.id)
    assert stored.status is Status.CLOSED and stored.closed_by == closer

    replies = thread_texts(bot, stored)
    assert len(replies) == 1 and f"<@{closer}>" in replies[0]
    assert "Incident over, closing for them" in replies[0]
    dms = dm_texts(bot, "U0001")
    assert len(dms) == 2
    assert f"<@{closer}>" in dms[1] and event.id in dms[1] and "Incident over" in dms[1]
    assert dm_texts(bot, closer) == []  # the closer is not DMed
    assert "CLOSED" in header(bot.fake.message(AUDIT, event.audit_ts)["blocks"])
    assert bot.fake.invalid_calls == []


@pytest.mark.parametrize("reason", ["", "   \n  ", None])
def test_empty_close_reason_is_an_inline_error(bot: Bot, reason: str | None) -> None:
    event = invoke(bot)
    body = submit_close(bot, event.id, reason).json
    assert body["response_action"] == "errors"
    assert list(body["errors"]) == ["close_reason"]
    assert "required" in body["errors"]["close_reason"]
    assert bot.store.get(event.id) == event
    assert bot.fake.calls_to("chat.update") == []


def test_close_reason_is_escaped_in_every_announcement(bot: Bot) -> None:
    event = invoke(bot)
    hostile = "<!channel> done & <https://evil|here>"
    submit_close(bot, event.id, hostile, user="U0IC")
    stored = settled(bot, event.id)
    assert stored.closed_reason == hostile  # stored as typed
    rendered = json.dumps([c.params for c in bot.fake.calls])
    assert "<!channel>" not in rendered and "<https://evil|here>" not in rendered
    assert "&lt;!channel&gt; done &amp;" in rendered
    assert bot.fake.invalid_calls == []


# -- already ended ---------------------------------------------------------------------------------------


def test_an_already_closed_event_answers_already_closed_everywhere(bot: Bot) -> None:
    event = invoke(bot)
    submit_close(bot, event.id, "finished", user="U0001")
    closed = settled(bot, event.id)
    updates, replies = len(bot.fake.calls_to("chat.update")), thread_texts(bot, closed)

    bot.slack.click("close_event", event.id, user="U0IC")
    text = ephemerals(bot, "U0IC")[0]
    assert "already closed" in text and "<@U0001>" in text

    body = submit_close(bot, event.id, "closing again", user="U0IC").json
    assert body["response_action"] == "update"
    assert "already closed" in json.dumps(body["view"])

    text = reply_text(bot.slack.command(f"close {event.id} once more", user="U0001"))
    assert "already closed" in text

    assert bot.store.get(event.id) == closed  # nothing changed
    assert bot.store.get(event.id).closed_reason == "finished"
    assert modals_opened(bot.fake) == []
    assert len(bot.fake.calls_to("chat.update")) == updates
    assert thread_texts(bot, closed) == replies
    assert bot.fake.invalid_calls == []


def test_an_expired_event_answers_already_expired_everywhere(bot: Bot) -> None:
    event = invoke(bot)
    expired = expire(bot, event)
    replies = thread_texts(bot, expired)
    assert any("Expired" in r for r in replies)

    bot.slack.click("close_event", event.id, user="U0001")
    assert "already expired" in ephemerals(bot, "U0001")[0]
    body = submit_close(bot, event.id, "too late", user="U0001").json
    assert body["response_action"] == "update" and "already expired" in json.dumps(body["view"])
    assert "already expired" in reply_text(bot.slack.command(f"close {event.id} too late"))

    stored = bot.store.get(event.id)
    assert stored == expired and stored.closed_by is None and stored.closed_reason is None
    assert thread_texts(bot, expired) == replies
    assert modals_opened(bot.fake) == []


def test_closing_access_that_ran_out_before_the_sweep_records_it_as_expired(bot: Bot) -> None:
    """Past its expiry the access is gone even if the sweep has not run yet: closing cannot rewrite that."""
    event = invoke(bot)
    bot.clock.set(event.expires_at + timedelta(seconds=5))
    body = submit_close(bot, event.id, "done now", user="U0001").json
    assert body["response_action"] == "update" and "already expired" in json.dumps(body["view"])
    stored = bot.store.get(event.id)
    assert stored.status is Status.EXPIRED and stored.closed_by is None
    assert "already expired" in reply_text(bot.slack.command(f"close {event.id} done now"))
    stored = settled(bot, event.id)  # the expiry is still announced
    assert any("Expired" in r for r in thread_texts(bot, stored))
    assert not any("Closed by" in r for r in thread_texts(bot, stored))


# -- races and tampering -----------------------------------------------------------------------------------


def test_concurrent_close_submissions_close_once(bot: Bot) -> None:
    event = invoke(bot)
    closers = ["U0001", "U0IC", "U0SECA", "U0ONCALL"]
    barrier = threading.Barrier(len(closers))
    responses: dict[str, Response] = {}

    def close(user: str) -> None:
        barrier.wait()
        responses[user] = submit_close(bot, event.id, f"closed by {user}", user=user)

    threads = [threading.Thread(target=close, args=(u,)) for u in closers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(responses) == len(closers)

    # the winner's modal turns into the "Access closed" confirmation; the others say it already ended
    winners = [u for u, r in responses.items() if "Access closed" in r.text]
    losers = [u for u, r in responses.items() if "Access closed" not in r.text]
    assert len(winners) == 1, {u: r.text for u, r in responses.items()}
    for user in losers:
        body = responses[user].json
        assert body["response_action"] == "update" and "already closed" in json.dumps(body["view"])

    stored = settled(bot, event.id)
    assert stored.closed_by == winners[0] and stored.closed_reason == f"closed by {winners[0]}"
    replies = thread_texts(bot, stored)
    assert len(replies) == 1 and f"<@{winners[0]}>" in replies[0]
    assert len(audit_updates(bot, stored)) == 1


@pytest.mark.parametrize(
    "metadata",
    ["garbage", "", "{}", '{"event_id": 5}', '{"event_id": "x", "extra": 1}', "[1, 2]"],
)
def test_damaged_private_metadata_is_refused(bot: Bot, metadata: str) -> None:
    event = invoke(bot)
    body = bot.slack.submit(
        "breakglass_close", {"close_reason": "sneaky"}, user="U0001", private_metadata=metadata
    ).json
    assert body["response_action"] == "errors"
    assert "close_reason" in body["errors"]
    assert bot.store.get(event.id) == event


def test_private_metadata_naming_someone_elses_event_is_refused(bot: Bot) -> None:
    victim = invoke(bot, user="U0001")
    invoke(bot, user="U0002")
    body = submit_close(bot, victim.id, "closing alice's access", user="U0002").json
    # no opener's roles in the metadata: decided after the ack with live lookups, refused in the modal
    assert body["view"]["title"]["text"] == "Not closed"
    assert "Only the invoker, an incident commander or security" in json.dumps(body["view"])
    for bad in ("../../etc", "0123456789abcdef"):
        body = submit_close(bot, bad, "whatever", user="U0002").json
        assert body["response_action"] == "errors" and "close_reason" in body["errors"]
    assert bot.store.get(victim.id) == victim
    assert bot.fake.calls_to("chat.update") == []
