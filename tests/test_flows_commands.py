"""`/breakglass` subcommands and the one-line fast path, over the real HTTP endpoint: the ephemeral answer
is the body of the HTTP response to the slash command."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from bot.localslack.webapi import validate_blocks
from store import ReasonCode, Status
from tests.conftest import Bot
from tests.harness import Response
from tests.test_flows_close import (
    AUDIT,
    GOOD,
    buttons,
    dm_texts,
    expire,
    header,
    invoke,
    settled,
    thread_texts,
)

FAST = "DB failover stuck, need to promote replica"
# What a reply may contain between < and >: Slack's own control sequences, never anything else.
CONTROL = re.compile(r"<(@[UW][A-Z0-9]+|!date\^\d+\^[^|>]+\|[^>]+|!subteam\^S[A-Z0-9]+)>")


def answer(response: Response) -> dict:
    """The ephemeral reply (text + valid Block Kit), checked for stray angle brackets."""
    assert response.status == 200, response.text
    body = response.json
    assert body is not None and body.get("text"), response.text
    assert body.get("response_type", "ephemeral") == "ephemeral"
    assert validate_blocks(body["blocks"]) == []
    for text in [body["text"], json.dumps(body["blocks"])]:
        assert "<" not in CONTROL.sub("", text) and ">" not in CONTROL.sub("", text), text
    return body


def text_of(response: Response) -> str:
    body = answer(response)
    return body["text"] + "\n" + json.dumps(body["blocks"])


def all_slack_traffic(bot: Bot) -> str:
    return json.dumps([c.params for c in bot.fake.calls])


# -- help and unknown commands -------------------------------------------------------------------------


def test_help_lists_every_subcommand(bot: Bot) -> None:
    text = text_of(bot.slack.command("help"))
    for needle in ("/breakglass list", "status", "close", "history", "review", "help"):
        assert needle in text
    assert "Unknown command" not in text
    assert bot.fake.calls == []  # answered in the HTTP response, nothing else sent


@pytest.mark.parametrize(
    ("word", "closest"),
    [
        ("frobnicate", None),
        ("LISTS", "/breakglass list"),
        ("extnd", "/breakglass extend"),
        ("histroy", "/breakglass history"),
        ("sandbx", "/breakglass sandbox"),
        ("<!channel>", None),
    ],
)
def test_unknown_word_answers_with_the_closest_command(bot: Bot, word: str, closest: str | None) -> None:
    body = answer(bot.slack.command(word))
    assert body["text"].startswith("Unknown command")
    if closest is not None:
        assert f"Did you mean `{closest}`" in body["text"]
    else:
        assert "Did you mean" not in body["text"]
    assert "`/breakglass help` lists every command." in body["text"]
    assert "/breakglass status" not in body["text"]  # not the whole help
    assert "<!channel>" not in json.dumps(body)
    assert bot.store.list_active() == []


def test_subcommands_are_case_insensitive(bot: Bot) -> None:
    assert "/breakglass list" in text_of(bot.slack.command("HELP"))
    assert "No active break-glass access." in text_of(bot.slack.command("List"))


# -- list ----------------------------------------------------------------------------------------------------


def test_list_shows_own_active_events_and_everyones_to_commanders_and_security(bot: Bot) -> None:
    alice = invoke(bot, user="U0001")
    bob = invoke(bot, user="U0002")
    ended = invoke(bot, user="U0SRE")
    bot.slack.command(f"close {ended.id} all done", user="U0SRE")

    mine = text_of(bot.slack.command("list", user="U0001"))
    assert "Your active break-glass access" in mine
    assert alice.id in mine and bob.id not in mine and ended.id not in mine

    theirs = text_of(bot.slack.command("list", user="U0002"))
    assert bob.id in theirs and alice.id not in theirs

    for privileged in ("U0IC", "U0SECA", "U0ONCALL"):
        everyone = text_of(bot.slack.command("list", user=privileged))
        assert "All active break-glass access" in everyone
        assert alice.id in everyone and bob.id in everyone and ended.id not in everyone
        assert "<@U0001>" in everyone and "<@U0002>" in everyone

    assert "No active break-glass access." in text_of(bot.slack.command("list", user="U0SRE"))


def test_list_leaves_out_access_past_its_expiry(bot: Bot) -> None:
    event = invoke(bot)
    bot.clock.set(event.expires_at)
    assert event.id not in text_of(bot.slack.command("list", user="U0IC"))


# -- status --------------------------------------------------------------------------------------------------


def test_status_shows_the_event_fields(bot: Bot) -> None:
    event = invoke(bot, incident="INC-42", duration="1800")
    text = text_of(bot.slack.command(f"status {event.id}", user="U0001"))
    for needle in (
        event.id,
        "<@U0001>",
        "sandbox",
        "Incident",
        "30 minutes",
        "INC-42",
        GOOD,
        "ACTIVE",
        "<!date^",
    ):
        assert needle in text, needle
    # ids are accepted whatever their case or padding
    assert event.id in text_of(bot.slack.command(f"status   {event.id.upper()}  "))


def test_status_is_for_the_invoker_incident_commanders_and_security(bot: Bot) -> None:
    event = invoke(bot, user="U0001")
    refused = answer(bot.slack.command(f"status {event.id}", user="U0002"))["text"]
    assert "Only the invoker, incident commanders and security" in refused
    assert GOOD not in refused  # the justification is not shown
    for user in ("U0IC", "U0SECA"):
        assert GOOD in text_of(bot.slack.command(f"status {event.id}", user=user))


def test_status_of_a_closed_event_names_the_closer_and_reason(bot: Bot) -> None:
    event = invoke(bot)
    bot.slack.command(f"close {event.id} promoted the replica", user="U0IC")
    text = text_of(bot.slack.command(f"status {event.id}", user="U0001"))
    assert "CLOSED" in text and "<@U0IC>" in text and "promoted the replica" in text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("xyz", "is not an event id"),
        ("3f9a0c1b2d4e5f6", "is not an event id"),  # 15 characters
        ("0123456789abcdef", "There is no break-glass event with id 0123456789abcdef"),
        ("", "Usage: `/breakglass status"),
        ("a b", "Usage: `/breakglass status"),
    ],
)
def test_status_with_a_bad_or_unknown_id_says_so(bot: Bot, args: str, expected: str) -> None:
    body = answer(bot.slack.command(f"status {args}"))
    assert expected in body["text"]
    assert body["text"].startswith(":x:")
    assert "Usage: `/breakglass &lt;profile&gt;" not in body["text"]  # not the fast-path usage


# -- close -----------------------------------------------------------------------------------------------------


def test_close_subcommand_closes_and_announces_like_the_modal(bot: Bot) -> None:
    event = invoke(bot)
    text = text_of(bot.slack.command(f"close {event.id} promoted the replica, all good", user="U0ONCALL"))
    assert "Closed event" in text and event.id in text
    stored = bot.store.get(event.id)
    assert stored.status is Status.CLOSED
    assert stored.closed_by == "U0ONCALL" and stored.closed_reason == "promoted the replica, all good"

    stored = settled(bot, event.id)
    update = bot.fake.wait_for("chat.update")[0]
    assert update.params["channel"] == AUDIT and update.params["ts"] == event.audit_ts
    assert "CLOSED" in header(update.params["blocks"])
    assert buttons(update.params["blocks"]) == [("review_event", event.id)]
    replies = thread_texts(bot, stored)
    assert len(replies) == 1 and "<@U0ONCALL>" in replies[0] and "all good" in replies[0]
    dms = dm_texts(bot, "U0001")
    assert len(dms) == 2 and "<@U0ONCALL>" in dms[1]
    assert bot.fake.invalid_calls == []


def test_close_subcommand_by_the_invoker_sends_no_dm(bot: Bot) -> None:
    event = invoke(bot)
    assert "Closed event" in text_of(bot.slack.command(f"close {event.id} done", user="U0001"))
    stored = settled(bot, event.id)
    assert stored.closed_by == "U0001"
    assert len(thread_texts(bot, stored)) == 1
    assert len(dm_texts(bot, "U0001")) == 1


def test_close_subcommand_refuses_anyone_else(bot: Bot) -> None:
    event = invoke(bot)
    body = answer(bot.slack.command(f"close {event.id} not mine but closing", user="U0002"))
    assert "Only the invoker, an incident commander or security" in body["text"]
    assert bot.store.get(event.id) == event
    assert bot.fake.calls_to("chat.update") == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("", "Usage: `/breakglass close"),
        # `close {id}` alone opens the close form (tests/test_flows_review_home.py)
        ("nope some reason", "is not an event id"),
        ("0123456789abcdef some reason", "no break-glass event with id"),
    ],
)
def test_close_subcommand_errors(bot: Bot, args: str, expected: str) -> None:
    event = invoke(bot)
    body = answer(bot.slack.command(f"close {args.format(id=event.id)}"))
    assert expected in body["text"]
    assert bot.store.get(event.id) == event


# -- history and review -----------------------------------------------------------------------------------------


def test_history_shows_own_events_and_history_of_a_profile(bot: Bot) -> None:
    first = invoke(bot, user="U0001")
    bot.slack.command(f"close {first.id} done with it", user="U0001")
    bot.clock.advance(60)
    second = invoke(bot, user="U0001")
    other = invoke(bot, user="U0002")

    mine = text_of(bot.slack.command("history", user="U0001"))
    assert "Your recent break-glass events" in mine
    assert first.id in mine and second.id in mine and other.id not in mine
    assert mine.index(second.id) < mine.index(first.id)  # newest first
    assert "closed" in mine

    sandbox = text_of(bot.slack.command("history sandbox", user="U0IC"))
    assert "Recent break-glass events on sandbox" in sandbox
    assert all(e.id in sandbox for e in (first, second, other))
    # anyone else sees only their own events on a profile
    own = text_of(bot.slack.command("history sandbox", user="U0002"))
    assert other.id in own and first.id not in own and second.id not in own

    # security sees everyone's recent events, newest first, and a hint to narrow them
    everyone = text_of(bot.slack.command("history", user="U0SECA"))
    assert "Recent break-glass events" in everyone
    assert all(e.id in everyone for e in (first, second, other))
    assert everyone.index(second.id) < everyone.index(first.id)  # newest first
    assert all(e.id in text_of(bot.slack.command("history SANDBOX", user="U0SECA")) for e in (first, other))
    # prod is not open to U0001: only their own events on it (none)
    assert "No break-glass events yet." in text_of(bot.slack.command("history prod", user="U0001"))
    assert "There is no profile called 'nope'" in text_of(bot.slack.command("history nope"))


def test_review_subcommand_is_for_security_only(bot: Bot) -> None:
    event = invoke(bot)
    bot.slack.command(f"close {event.id} done", user="U0001")
    for user in ("U0001", "U0IC"):
        body = answer(bot.slack.command("review", user=user))
        assert "Only security" in body["text"] and event.id not in body["text"]
    text = text_of(bot.slack.command("review", user="U0SECA"))
    assert "awaiting review" in text and event.id in text


# -- escaping ------------------------------------------------------------------------------------------------------


def test_user_text_is_escaped_in_every_reply_and_slack_call(bot: Bot) -> None:
    hostile = "<!channel> ping <@U0002> & <https://evil|click> please look"
    event = invoke(bot, justification=hostile, incident="<!here>")
    assert bot.store.get(event.id).justification == hostile

    replies = [
        text_of(bot.slack.command(f"status {event.id}")),
        text_of(bot.slack.command("list")),
        text_of(bot.slack.command("history")),
        text_of(bot.slack.command(f"close {event.id} <!everyone> done & dusted", user="U0IC")),
        text_of(bot.slack.command(f"status {event.id}")),
        text_of(bot.slack.command("<!channel> 1h incident <!here> " + hostile)),
    ]
    settled(bot, event.id)
    everything = "\n".join(replies) + all_slack_traffic(bot)
    for raw in ("<!channel>", "<!here>", "<!everyone>", "<@U0002>", "<https://evil|click>"):
        assert raw not in everything, raw
    assert "&lt;!channel&gt;" in replies[0] and "&lt;!everyone&gt; done &amp; dusted" in replies[4]
    assert bot.store.get(event.id).closed_reason == "<!everyone> done & dusted"
    assert bot.fake.invalid_calls == []


# -- the fast path ------------------------------------------------------------------------------------------------


def normalized(blocks: list[dict], event_id: str, user: str) -> str:
    return json.dumps(blocks).replace(event_id, "EVENT").replace(user, "USER")


def test_fast_path_invokes_and_announces_exactly_like_the_modal(bot: Bot) -> None:
    response = bot.slack.command(f"sandbox 30m incident {FAST}", user="U0001")
    body = answer(response)
    events = bot.store.list_by_invoker("U0001").items
    assert len(events) == 1
    fast = settled(bot, events[0].id)
    assert "granted" in body["text"] and fast.id in body["text"]
    assert fast.status is Status.ACTIVE and fast.profile == "sandbox"
    assert fast.duration == timedelta(minutes=30) and fast.reason_code is ReasonCode.INCIDENT
    assert fast.justification == FAST and fast.incident is None
    assert fast.audit_channel == AUDIT and fast.expires_at == bot.clock.now() + timedelta(minutes=30)

    modal = invoke(bot, user="U0002", profile="sandbox", duration="1800", justification=FAST)
    audit_fast = bot.fake.message(AUDIT, fast.audit_ts)
    audit_modal = bot.fake.message(AUDIT, modal.audit_ts)
    assert normalized(audit_fast["blocks"], fast.id, "U0001") == normalized(
        audit_modal["blocks"], modal.id, "U0002"
    )
    dm_fast, dm_modal = bot.fake.channel_messages("U0001"), bot.fake.channel_messages("U0002")
    assert len(dm_fast) == len(dm_modal) == 1
    assert normalized(dm_fast[0]["blocks"], fast.id, "U0001") == normalized(
        dm_modal[0]["blocks"], modal.id, "U0002"
    )
    assert buttons(audit_fast["blocks"]) == [("close_event", fast.id)]
    # the Home of the invoker is refreshed too
    home = bot.fake.wait_for("views.publish", where=lambda c: c.params["user_id"] == "U0001")
    assert fast.id in json.dumps(home[-1].params["view"])
    assert bot.fake.invalid_calls == []


@pytest.mark.parametrize(
    ("text", "incident", "justification"),
    [
        (f"sandbox 30m incident incident=INC-9 {FAST}", "INC-9", FAST),
        ("sandbox 30m incident DB failover stuck, INCIDENT=INC-9 need to promote replica", "INC-9", FAST),
        (
            f"sandbox 30m incident {FAST} incident=https://t.example/INC-9?a=1&b=2",
            "https://t.example/INC-9?a=1&b=2",
            FAST,
        ),
    ],
)
def test_fast_path_extracts_the_incident_token(
    bot: Bot, text: str, incident: str, justification: str
) -> None:
    assert "granted" in answer(bot.slack.command(text))["text"]
    event = settled(bot, bot.store.list_by_invoker("U0001").items[0].id)
    assert event.incident == incident and event.justification == justification
    audit = bot.fake.message(AUDIT, event.audit_ts)
    assert "INC-9" in json.dumps(audit["blocks"])


def test_fast_path_for_a_profile_requiring_an_incident(bot: Bot) -> None:
    body = answer(bot.slack.command(f"prod 1h incident {FAST}", user="U0SRE"))
    assert "requires an incident" in body["text"]
    assert bot.store.list_active() == []
    body = answer(bot.slack.command(f"prod 1h incident incident=INC-77 {FAST}", user="U0SRE"))
    assert "granted" in body["text"]
    assert bot.store.list_active()[0].incident == "INC-77"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"nope 30m incident {FAST}", "There is no profile called 'nope'"),
        (f"prod 30m incident incident=INC-1 {FAST}", "You are not allowed to invoke break-glass on 'prod'"),
        (f"sandbox 5x incident {FAST}", "'5x' is not a duration"),
        (f"sandbox 2h incident {FAST}", "2 hours is not offered for 'sandbox'"),
        (f"sandbox 0 incident {FAST}", "is not offered for 'sandbox'"),
        (f"sandbox 30m because {FAST}", "Unknown reason 'because'"),
        ("sandbox 30m incident too short", "Justification is too short"),
        ("sandbox 30m incident incident=INC-1", "Justification is required"),
        ("sandbox 30m", "Missing reason, justification."),
        ("SANDBOX 30m", "Missing reason, justification."),  # profile names are matched without case
        ("sandbox 30m incident", "Missing justification."),
    ],
)
def test_fast_path_errors_answer_with_usage_and_store_nothing(bot: Bot, text: str, expected: str) -> None:
    body = answer(bot.slack.command(text, user="U0001"))
    assert body["text"].startswith(":x:")
    assert expected in body["text"], body["text"]
    assert body["text"].count("Usage: `/breakglass") == 1
    assert "&lt;profile&gt; &lt;duration&gt; &lt;reason&gt;" in body["text"]
    assert bot.store.list_by_invoker("U0001").items == []
    assert bot.fake.calls_to("chat.postMessage") == []


@pytest.mark.parametrize("word", ["sandbox", "SandBox"])
def test_profile_alone_opens_the_form_with_it_chosen_and_its_durations(bot: Bot, word: str) -> None:
    response = bot.slack.command(word, user="U0001")
    assert response.status == 200 and not response.text
    view = bot.fake.wait_for("views.open")[0].params["view"]
    profile = next(b for b in view["blocks"] if b["block_id"] == "profile")["element"]
    assert profile["initial_option"]["value"] == "sandbox"
    durations = next(b for b in view["blocks"] if b["block_id"] == "duration")["element"]["options"]
    assert [o["value"] for o in durations] == ["900", "1800", "3600"]  # sandbox's, not prod's 4 h
    assert bot.fake.invalid_calls == []


def test_profile_alone_that_the_user_may_not_invoke_says_so(bot: Bot) -> None:
    bot.slack.command("prod", user="U0001")
    call = bot.fake.wait_for("response_url")[0]
    assert "You are not allowed to invoke break-glass on 'prod'" in json.dumps(call.params)
    assert bot.fake.calls_to("views.open") == []


def test_invoking_with_a_profile_in_another_case_stores_the_policys_name(bot: Bot) -> None:
    body = answer(bot.slack.command(f"SANDBOX 30m incident {FAST}", user="U0001"))
    assert "granted" in body["text"].lower() or "active" in body["text"].lower(), body["text"]
    assert [e.profile for e in bot.store.list_by_invoker("U0001").items] == ["sandbox"]


def test_fast_path_reports_every_bad_field_at_once(bot: Bot) -> None:
    text = answer(bot.slack.command("nope 5x because short"))["text"]
    for needle in ("no profile called 'nope'", "'5x' is not a duration", "Unknown reason", "too short"):
        assert needle in text, needle


def test_fast_path_refuses_stacked_access(bot: Bot) -> None:
    assert "granted" in answer(bot.slack.command(f"sandbox 30m incident {FAST}"))["text"]
    existing = bot.store.list_active()[0]
    text = answer(bot.slack.command(f"sandbox 1h maintenance {FAST}"))["text"]
    assert "already have active break-glass event" in text and existing.id in text
    assert len(bot.store.list_by_invoker("U0001").items) == 1


def test_fast_path_stores_ampersands_and_angle_brackets_as_typed(bot: Bot) -> None:
    typed = "R&D said 5 > 3 & <b>; literally &amp; and &lt;x&gt; &copy; too"
    body = answer(bot.slack.command(f"sandbox 15m other {typed} incident=A&B<1>"))
    assert "granted" in body["text"]
    event = bot.store.list_by_invoker("U0001").items[0]
    assert event.justification == typed
    assert event.incident == "A&B<1>"
    event = settled(bot, event.id)
    audit = json.dumps(bot.fake.message(AUDIT, event.audit_ts)["blocks"])
    assert "R&amp;D said 5 &gt; 3 &amp; &lt;b&gt;; literally &amp;amp; and &amp;lt;x&amp;gt;" in audit
    assert bot.fake.invalid_calls == []


def test_fast_path_after_the_event_ended_can_invoke_again(bot: Bot) -> None:
    event = invoke(bot)
    expire(bot, event)
    assert "granted" in answer(bot.slack.command(f"sandbox 15m recovery {FAST}"))["text"]
    assert len(bot.store.list_active()) == 1
