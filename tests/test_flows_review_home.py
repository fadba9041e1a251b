"""Security review of ended events (button, modal, `/breakglass review`) and the App Home, over the real
HTTP endpoint with signed requests and the fake Slack Web API."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.localslack.webapi import Call
from store import BreakGlassEvent, Status
from tests.conftest import Bot
from tests.harness import Response, modals_opened, not_the_invoke_form, without_who
from tests.test_flows_close import (
    AUDIT,
    action_ids,
    buttons,
    ephemerals,
    expire,
    header,
    invoke,
    meta,
    reply_text,
    settled,
    submit_close,
    thread_texts,
)


def ended(bot: Bot, user: str = "U0001", reason: str = "replica promoted") -> BreakGlassEvent:
    event = invoke(bot, user=user)
    assert "Closed event" in reply_text(bot.slack.command(f"close {event.id} {reason}", user=user))
    return settled(bot, event.id)


def submit_review(bot: Bot, event_id: str, notes: str | None, user: str = "U0SECA") -> Response:
    """A review form's submission without the opener's roles in its metadata (as from a form opened before
    they were carried): decided after the ack, with live lookups (tests/test_ack_every_listener.py has the
    submissions decided in the ack)."""
    return bot.slack.submit(
        "breakglass_review", {"review_notes": notes}, user=user, private_metadata=meta(event_id)
    )


def refused(body: dict[str, Any], why: str) -> bool:
    """The review was refused after its "Checking…" ack, saying `why`, shown in the modal."""
    return body["view"]["title"]["text"] == "Not reviewed" and why in json.dumps(body["view"])


# -- review ------------------------------------------------------------------------------------------------


def test_security_clicking_review_opens_the_review_modal(bot: Bot) -> None:
    event = ended(bot)
    assert buttons(bot.fake.message(AUDIT, event.audit_ts)["blocks"]) == [("review_event", event.id)]
    bot.slack.click("review_event", event.id, user="U0SECA")
    view = bot.fake.wait_for("views.open", where=not_the_invoke_form)[0].params["view"]
    assert view["callback_id"] == "breakglass_review"
    inputs = [b for b in view["blocks"] if b["type"] == "input"]
    assert [b["block_id"] for b in inputs] == ["review_notes"]
    assert inputs[0]["element"]["action_id"] == "review_notes"
    assert json.loads(view["private_metadata"])["event_id"] == event.id
    assert event.id in json.dumps(view["blocks"])
    assert bot.store.get(event.id) == event
    assert bot.fake.invalid_calls == []


@pytest.mark.parametrize("user", ["U0001", "U0IC", "U0ONCALL", "U0002"])
def test_anyone_but_security_clicking_review_is_refused(bot: Bot, user: str) -> None:
    event = ended(bot)
    bot.slack.click("review_event", event.id, user=user)
    assert "Only security" in ephemerals(bot, user)[0]
    assert modals_opened(bot.fake) == []
    assert bot.store.get(event.id) == event


def test_submitting_the_review_records_and_announces_it(bot: Bot) -> None:
    event = ended(bot)
    updates_before = len(bot.fake.calls_to("chat.update"))
    response = submit_review(bot, event.id, "Checked CloudTrail: only the failover. OK.")
    assert response.status == 200 and response.json["view"]["title"]["text"] == "Reviewed"
    stored = bot.store.get(event.id)
    assert stored.reviewed_by == "U0SECA"
    assert stored.reviewed_at == bot.clock.now()
    assert stored.review_notes == "Checked CloudTrail: only the failover. OK."
    assert stored.status is Status.CLOSED and stored.closed_reason == "replica promoted"

    stored = settled(bot, event.id)
    update = bot.fake.wait_for("chat.update", updates_before + 1)[-1]
    assert update.params["channel"] == AUDIT and update.params["ts"] == event.audit_ts
    blocks = update.params["blocks"]
    rendered = json.dumps(blocks)
    assert "Reviewed by <@U0SECA>" in rendered and "Checked CloudTrail" in rendered
    assert "CLOSED" in header(blocks)
    assert action_ids(blocks) == []  # no more Review (or Close) button
    replies = thread_texts(bot, stored)
    assert "Reviewed by <@U0SECA>" in replies[-1] and "only the failover" in replies[-1]
    assert bot.fake.invalid_calls == []


def test_reviewing_an_expired_event(bot: Bot) -> None:
    event = expire(bot, invoke(bot))
    assert submit_review(bot, event.id, "expired untouched").json["view"]["title"]["text"] == "Reviewed"
    stored = settled(bot, event.id)
    assert stored.status is Status.EXPIRED and stored.reviewed_by == "U0SECA"
    assert "Reviewed by <@U0SECA>" in thread_texts(bot, stored)[-1]


def test_reviewing_twice_answers_already_reviewed(bot: Bot) -> None:
    event = ended(bot)
    submit_review(bot, event.id, "first look")
    reviewed = settled(bot, event.id)
    replies, updates = thread_texts(bot, reviewed), len(bot.fake.calls_to("chat.update"))

    bot.slack.click("review_event", event.id, user="U0SECA")
    text = ephemerals(bot, "U0SECA")[0]
    assert "already reviewed" in text and "<@U0SECA>" in text
    body = submit_review(bot, event.id, "second look").json
    assert refused(body, "already reviewed")

    assert bot.store.get(event.id) == reviewed
    assert modals_opened(bot.fake) == []
    assert thread_texts(bot, reviewed) == replies
    assert len(bot.fake.calls_to("chat.update")) == updates


def test_reviewing_an_active_event_is_refused(bot: Bot) -> None:
    event = invoke(bot)
    bot.slack.click("review_event", event.id, user="U0SECA")
    assert "still active" in ephemerals(bot, "U0SECA")[0]
    body = submit_review(bot, event.id, "looks fine").json
    assert refused(body, "still active")
    assert bot.store.get(event.id) == event
    assert modals_opened(bot.fake) == []


@pytest.mark.parametrize("notes", ["", "   ", None])
def test_empty_review_notes_are_an_inline_error(bot: Bot, notes: str | None) -> None:
    event = ended(bot)
    body = submit_review(bot, event.id, notes).json
    assert body["response_action"] == "errors"
    assert "required" in body["errors"]["review_notes"]
    assert bot.store.get(event.id).reviewed_at is None


def test_review_submission_is_authorized_on_the_server(bot: Bot) -> None:
    event = ended(bot)
    body = submit_review(bot, event.id, "I approve of myself", user="U0001").json
    assert refused(body, "Only security")
    body = bot.slack.submit(
        "breakglass_review", {"review_notes": "x"}, user="U0SECA", private_metadata="garbage"
    ).json
    assert body["response_action"] == "errors" and "review_notes" in body["errors"]
    assert bot.store.get(event.id) == event


def test_review_subcommand_lists_ended_unreviewed_events(bot: Bot) -> None:
    first = ended(bot, user="U0001")
    second = ended(bot, user="U0002")
    active = invoke(bot, user="U0SRE")
    text = reply_text(bot.slack.command("review", user="U0SECA"))
    assert "Ended events awaiting review" in text
    assert first.id in text and second.id in text and active.id not in text

    submit_review(bot, first.id, "fine")
    text = reply_text(bot.slack.command("review", user="U0SECA"))
    assert first.id not in text and second.id in text
    submit_review(bot, second.id, "fine too")
    assert "Nothing awaits review." in reply_text(bot.slack.command("review", user="U0SECA"))


# -- App Home ------------------------------------------------------------------------------------------------


def publishes_for(bot: Bot, user: str) -> list[Call]:
    return [c for c in bot.fake.calls_to("views.publish") if c.ok and c.params["user_id"] == user]


def open_home(bot: Bot, user: str) -> dict:
    before = len(publishes_for(bot, user))
    response = bot.slack.event({"type": "app_home_opened", "user": user, "channel": "D0001", "tab": "home"})
    assert response.status == 200
    calls = bot.fake.wait_for("views.publish", before + 1, where=lambda c: c.params["user_id"] == user)
    return calls[-1].params["view"]


def sections(view: dict) -> list[str]:
    """The mrkdwn text of each section, with its accessory button if any: 'text [action_id:value]'."""
    out = []
    for block in view["blocks"]:
        if block["type"] in ("section", "context"):
            text = block["text"]["text"] if "text" in block else block["elements"][0]["text"]
            accessory = block.get("accessory")
            if accessory:
                text += f" [{accessory['action_id']}:{accessory['value']}]"
            out.append(text)
    return out


def part(view: dict, title: str, next_title: str | None = None) -> list[str]:
    lines = sections(view)
    start = lines.index(title) + 1
    end = lines.index(next_title) if next_title else len(lines)
    return lines[start:end]


def test_home_for_someone_without_events(bot: Bot) -> None:
    view = open_home(bot, "U0001")
    assert view["type"] == "home"
    assert ("open_breakglass", "open") in buttons(view["blocks"])
    assert part(view, "*Your active access*", "*Your recent events*") == ["You hold no break-glass access."]
    assert part(view, "*Your recent events*") == ["No history yet."]
    assert "*All active access*" not in sections(view) and "*Awaiting review*" not in sections(view)
    assert bot.fake.home_view("U0001")["blocks"] == view["blocks"]
    assert bot.fake.invalid_calls == []


def test_home_shows_own_active_access_with_close_and_own_history(bot: Bot) -> None:
    old = ended(bot, user="U0001")
    bot.clock.advance(60)
    mine = invoke(bot, user="U0001", reason="maintenance")
    other = invoke(bot, user="U0002")
    view = open_home(bot, "U0001")
    active = part(view, "*Your active access*", "*Your recent events*")
    assert len(active) == 1 and mine.id in active[0] and active[0].endswith(f"[close_event:{mine.id}]")
    recent = part(view, "*Your recent events*")
    assert len(recent) == 1 and old.id in recent[0] and "closed" in recent[0]
    assert not recent[0].endswith("]")  # history has no buttons
    assert other.id not in json.dumps(view)
    assert "*All active access*" not in sections(view)
    assert bot.fake.invalid_calls == []


@pytest.mark.parametrize(("user", "review_buttons"), [("U0IC", False), ("U0SECA", True)])
def test_home_for_commanders_and_security_shows_everything(bot: Bot, user: str, review_buttons: bool) -> None:
    done = ended(bot, user="U0002")
    alice = invoke(bot, user="U0001")
    bot.clock.advance(60)
    sre = invoke(bot, user="U0SRE")  # listed oldest first
    view = open_home(bot, user)
    everyone = part(view, "*All active access*", "*Awaiting review*")
    assert [
        line.endswith(f"[close_event:{e.id}]") for line, e in zip(everyone, (alice, sre), strict=True)
    ] == [
        True,
        True,
    ]
    waiting = part(view, "*Awaiting review*")
    assert len(waiting) == 1 and done.id in waiting[0]
    assert waiting[0].endswith(f"[review_event:{done.id}]") is review_buttons
    assert part(view, "*Your active access*", "*Your recent events*") == ["You hold no break-glass access."]
    assert bot.fake.invalid_calls == []


def test_break_glass_button_on_home_opens_the_invoke_modal(bot: Bot) -> None:
    bot.slack.command("", user="U0001")
    from_command = bot.fake.wait_for("views.open")[0].params["view"]
    response = bot.slack.click("open_breakglass", "open", user="U0001", container_type="view")
    assert response.status == 200
    from_home = bot.fake.wait_for("views.open", 2)[1].params["view"]
    assert from_home["callback_id"] == "breakglass_invoke"
    assert from_home["blocks"] == from_command["blocks"]
    assert bot.fake.invalid_calls == []


def test_close_button_on_home_opens_the_close_modal_or_answers_in_a_modal(bot: Bot) -> None:
    event = invoke(bot)
    bot.slack.click("close_event", event.id, user="U0001", container_type="view")
    view = bot.fake.wait_for("views.open", where=not_the_invoke_form)[0].params["view"]
    assert view["callback_id"] == "breakglass_close"
    assert without_who(view["private_metadata"]) == {"event_id": event.id}
    # someone else's click from their Home: no channel to answer in, so a small modal says why
    bot.slack.click("close_event", event.id, user="U0002", container_type="view")
    notice = bot.fake.wait_for("views.open", 2, where=not_the_invoke_form)[1].params["view"]
    assert "Only the invoker" in json.dumps(notice) and not notice.get("callback_id")
    assert bot.fake.calls_to("chat.postEphemeral") == []


def test_home_is_republished_when_the_users_event_changes(bot: Bot) -> None:
    event = invoke(bot, user="U0001")
    call = bot.fake.wait_for("views.publish", where=lambda c: c.params["user_id"] == "U0001")[-1]
    active = part(call.params["view"], "*Your active access*", "*Your recent events*")
    assert len(active) == 1 and event.id in active[0]

    count = len(publishes_for(bot, "U0001"))
    submit_close(bot, event.id, "all done", user="U0IC")
    calls = bot.fake.wait_for("views.publish", count + 1, where=lambda c: c.params["user_id"] == "U0001")
    view = calls[-1].params["view"]
    assert part(view, "*Your active access*", "*Your recent events*") == ["You hold no break-glass access."]
    recent = part(view, "*Your recent events*")
    assert len(recent) == 1 and event.id in recent[0] and "closed" in recent[0]
    assert bot.fake.home_view("U0001")["blocks"] == view["blocks"]
    assert publishes_for(bot, "U0IC") == []  # only the invoker's Home is about this event
    assert bot.fake.invalid_calls == []


def test_review_modal_shows_incident_duration_extensions_and_how_it_ended(bot: Bot) -> None:
    event = invoke(bot, incident="INC-4242")
    bot.slack.command(f"extend {event.id} 15m failover still running on the primary", user="U0001")
    settled(bot, event.id)
    bot.slack.command(f"close {event.id} replica promoted, all good", user="U0IC")
    closed = settled(bot, event.id)
    bot.slack.click("review_event", closed.id, user="U0SECA")
    view = bot.fake.wait_for("views.open", where=not_the_invoke_form)[0].params["view"]
    shown = json.dumps(view["blocks"])
    for needle in (
        "INC-4242",
        "30 minutes + 15 minutes extended",
        "*Extended* by 15 minutes by <@U0001>",
        "failover still running on the primary",
        "*Closed* by <@U0IC>",
        "replica promoted, all good",
    ):
        assert needle in shown, needle
    assert bot.fake.invalid_calls == []


def test_close_with_only_an_event_id_opens_the_close_form(bot: Bot) -> None:
    event = invoke(bot)
    response = bot.slack.command(f"close {event.id}", user="U0001")
    assert response.status == 200 and not response.text
    view = bot.fake.wait_for("views.open", where=not_the_invoke_form)[0].params["view"]
    assert view["callback_id"] == "breakglass_close"
    assert without_who(view["private_metadata"]) == {"event_id": event.id}
    assert bot.store.get(event.id) == event
    bot.slack.command(f"close {event.id}", user="U0002")
    refused = bot.fake.wait_for("response_url")[0]
    assert "Only the invoker, an incident commander or security" in json.dumps(refused.params)
