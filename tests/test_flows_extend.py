"""Extending break-glass access: the Extend button (expiry-warning DM, App Home), the Extend modal and
`/breakglass extend`, over the real HTTP endpoint with signed requests and the fake Slack Web API."""

from __future__ import annotations

import json
from datetime import timedelta

from store import Status
from tests.conftest import Bot
from tests.harness import not_the_invoke_form, view_id_of, without_who
from tests.test_flows_close import (
    buttons,
    dm_texts,
    ephemerals,
    invoke,
    reply_text,
    settled,
    thread_texts,
    wait_until,
)

REASON = "failover still running on the primary"


def _warn(bot: Bot, event_id: str) -> None:
    event = bot.store.get(event_id)
    bot.clock.set(bot.service.warn_at(event) + timedelta(seconds=1))
    bot.runtime.scheduler.sweep()
    settled(bot, event_id)


def _submit_extend(bot: Bot, view: dict, user: str, seconds: str, reason: str = REASON):
    return bot.slack.submit(
        "breakglass_extend",
        {"extend_duration": ("select", seconds), "extend_reason": reason},
        user=user,
        private_metadata=view["private_metadata"],
        view_id=view_id_of(bot.fake, view),
    )


def test_extend_from_the_warning_dm_moves_the_expiry_and_announces_it(bot: Bot) -> None:
    event = invoke(bot)  # sandbox, 30 min; the profile's durations 15m, 30m, 1h
    _warn(bot, event.id)
    warning = bot.fake.channel_messages("U0001")[-1]
    assert "expires in" in warning["text"]
    assert ("extend_event", event.id) in buttons(warning["blocks"])

    bot.slack.click("extend_event", event.id, user="U0001", channel="D0001")
    view = bot.fake.wait_for("views.open", where=not_the_invoke_form)[0].params["view"]
    assert view["callback_id"] == "breakglass_extend"
    offered = [
        o["value"] for b in view["blocks"] if b["type"] == "input" for o in b["element"].get("options", [])
    ]
    assert offered == ["900", "1800", "3600"]  # within 2 h in all (twice the profile's longest, 1 h)
    assert without_who(view["private_metadata"]) == {"event_id": event.id, "seen": 0}

    response = _submit_extend(bot, view, "U0001", "1800")
    assert response.json["response_action"] == "update", response.json
    extended = settled(bot, event.id)
    assert extended.expires_at == event.expires_at + timedelta(minutes=30)
    assert extended.warned_at is None and extended.status is Status.ACTIVE
    assert any("Extended by 30 minutes by <@U0001>" in t and REASON in t for t in thread_texts(bot, extended))
    assert any("<!date^" in t for t in thread_texts(bot, extended) if "Extended" in t)
    root = [c for c in bot.fake.calls_to("chat.update") if c.params.get("ts") == extended.audit_ts][-1]
    assert "extended" in json.dumps(root.params["blocks"])
    assert "You extended your break-glass access" in dm_texts(bot, "U0001")[-1]
    assert bot.fake.invalid_calls == []

    # the warning is sent again before the new expiry, and the expiry moved with it
    bot.clock.set(event.expires_at + timedelta(seconds=5))
    bot.runtime.scheduler.sweep()
    assert bot.store.get(event.id).status is Status.ACTIVE
    _warn(bot, event.id)
    texts = dm_texts(bot, "U0001")  # the first warning now says it was extended (test_flows_warn_refresh.py)
    assert sum("expires in" in t for t in texts) == 1 and "expires in" in texts[-1]
    assert sum("not as this warning said" in t for t in texts) == 1
    bot.clock.set(extended.expires_at + timedelta(seconds=1))
    bot.runtime.scheduler.sweep()
    assert settled(bot, event.id).status is Status.EXPIRED


def test_two_extends_from_stale_modals_one_wins_the_other_is_told(bot: Bot) -> None:
    event = invoke(bot)
    # both forms open before either is submitted; the second click waits for the first form, so
    # views[0] is U0001's (the forms open after each click's ack, in either order otherwise)
    bot.slack.click("extend_event", event.id, user="U0001", channel="D0001")
    bot.fake.wait_for("views.open", 1, where=not_the_invoke_form)
    bot.slack.click("extend_event", event.id, user="U0IC", channel="D0002")
    views = [c.params["view"] for c in bot.fake.wait_for("views.open", 2, where=not_the_invoke_form)]
    assert _submit_extend(bot, views[0], "U0001", "900").json["response_action"] == "update"
    refused = _submit_extend(bot, views[1], "U0IC", "900").json
    assert refused["response_action"] == "errors"
    assert "extended meanwhile by U0001" in refused["errors"]["extend_duration"]
    assert len(bot.store.get(event.id).extensions) == 1


def test_slash_command_extend_and_its_refusals(bot: Bot) -> None:
    event = invoke(bot)
    text = reply_text(bot.slack.command(f"extend {event.id} 1h {REASON}", user="U0IC"))
    assert "extended by 1 hour" in text
    extended = settled(bot, event.id)
    assert "<@U0IC> extended your break-glass access" in dm_texts(bot, "U0001")[-1]
    assert "extend_event" not in json.dumps(bot.fake.channel_messages("U0001")[-1]["blocks"])
    # beyond the profile's lifetime cap (2 h in all: 1 h 30 min used): not offered, nothing changed
    text = reply_text(bot.slack.command(f"extend {event.id} 1h {REASON}", user="U0001"))
    assert "not offered for extending" in text, text
    assert bot.store.get(event.id) == extended
    # somebody else, a too-short reason, usage
    assert "Only the invoker, an incident commander or security can extend" in reply_text(
        bot.slack.command(f"extend {event.id} 15m {REASON}", user="U0002")
    )
    assert (
        "extension reason is too short"
        in reply_text(bot.slack.command(f"extend {event.id} 15m because", user="U0001")).lower()
    )
    assert "Usage: `/breakglass extend" in reply_text(bot.slack.command(f"extend {event.id}", user="U0001"))
    assert bot.store.get(event.id) == extended


def test_extend_from_app_home(bot: Bot) -> None:
    event = invoke(bot)
    home = wait_until(
        lambda: [c for c in bot.fake.calls_to("views.publish") if c.params.get("user_id") == "U0001"],
        "App Home",
    )[-1]
    assert ("extend_event", event.id) in buttons(home.params["view"]["blocks"])
    bot.slack.click("extend_event", event.id, user="U0001", container_type="view")
    view = bot.fake.wait_for("views.open", where=not_the_invoke_form)[0].params["view"]
    _submit_extend(bot, view, "U0001", "900")
    assert settled(bot, event.id).expires_at == event.expires_at + timedelta(minutes=15)


def test_a_profile_without_extensions_says_so(bot: Bot) -> None:
    event = invoke(bot)
    closed = bot.service.close(event.id, by="U0001", reason="done with it").event
    bot.slack.click("extend_event", closed.id, user="U0001")
    assert "already closed" in ephemerals(bot, "U0001")[0]
