"""The main flow over the real HTTP endpoint with signed requests and the fake Slack Web API."""

from __future__ import annotations

import json
from datetime import timedelta

from store import Status
from tests.conftest import Bot

GOOD = "Database failover is stuck; promoting the replica by hand"


def test_command_opens_modal_with_only_permitted_profiles(bot: Bot) -> None:
    response = bot.slack.command("", user="U0001")
    assert response.status == 200
    call = bot.fake.wait_for("views.open")[0]
    view = call.params["view"]
    blocks = {b["block_id"]: b for b in view["blocks"]}
    assert list(blocks) == ["profile", "reason", "justification", "duration", "incident"]
    for block_id, block in blocks.items():
        assert block["element"]["action_id"] == block_id
    profiles = [o["value"] for o in blocks["profile"]["element"]["options"]]
    assert profiles == ["sandbox"]  # prod is only for S0SRE
    durations = [o["value"] for o in blocks["duration"]["element"]["options"]]
    assert durations == ["900", "1800", "3600"]
    assert [o["text"]["text"] for o in blocks["duration"]["element"]["options"]] == [
        "15 minutes",
        "30 minutes",
        "1 hour",
    ]
    reasons = [o["value"] for o in blocks["reason"]["element"]["options"]]
    assert reasons == ["incident", "maintenance", "security", "recovery", "other"]
    assert blocks["incident"]["optional"] is True
    assert bot.fake.invalid_calls == []


def test_sre_sees_union_of_durations(bot: Bot) -> None:
    bot.slack.command("", user="U0SRE")
    view = bot.fake.wait_for("views.open")[0].params["view"]
    blocks = {b["block_id"]: b for b in view["blocks"]}
    assert [o["value"] for o in blocks["profile"]["element"]["options"]] == ["sandbox", "prod"]
    assert [o["value"] for o in blocks["duration"]["element"]["options"]] == [
        "900",
        "1800",
        "3600",
        "7200",
        "14400",
    ]


def test_submission_stores_then_announces(bot: Bot) -> None:
    response = bot.slack.invoke(user="U0001", profile="sandbox", duration="1800", incident="INC-42")
    assert response.status == 200
    assert response.json["response_action"] == "update"
    events = bot.store.list_by_invoker("U0001").items
    assert len(events) == 1
    event = events[0]
    assert event.status is Status.ACTIVE and event.duration == timedelta(minutes=30)
    assert event.incident == "INC-42" and event.reason_code.value == "incident"
    assert event.id in json.dumps(response.json)

    audit = bot.fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == "C0AUDIT")[0]
    text = json.dumps(audit.params["blocks"])
    for needle in (
        "<@U0001>",
        "sandbox",
        "Incident",
        "30 minutes",
        "INC-42",
        event.id,
        "<!date^",
        "close_event",
    ):
        assert needle in text, needle
    close = next(e for b in audit.params["blocks"] if b["type"] == "actions" for e in b["elements"])
    # one step: the button opens the close form (its reason is the confirmation), no dialog before it
    assert close["action_id"] == "close_event" and close["value"] == event.id and "confirm" not in close
    dm = bot.fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == "U0001")[0]
    assert event.id in json.dumps(dm.params["blocks"]) and "close_event" in json.dumps(dm.params["blocks"])
    bot.idle()  # the delivery records the audit message's ts after Slack answered
    stored = bot.store.get(event.id)
    assert stored.audit_channel == "C0AUDIT" and stored.audit_ts
    assert stored.outbox == ()
    assert bot.fake.invalid_calls == []


def test_validation_errors_keyed_by_block_id_and_nothing_stored(bot: Bot) -> None:
    response = bot.slack.invoke(
        user="U0001", profile="prod", reason="bogus", justification="too short", duration="7"
    )
    assert response.status == 200
    body = response.json
    assert body["response_action"] == "errors"
    errors = body["errors"]
    assert "not allowed" in errors["profile"]
    assert "reason" in errors["reason"].lower()
    assert "too short" in errors["justification"] and "9 characters" in errors["justification"]
    assert "duration" in errors
    assert bot.store.list_active() == []
    assert bot.fake.calls_to("chat.postMessage") == []


def test_duration_must_be_one_of_the_profiles(bot: Bot) -> None:
    body = bot.slack.invoke(
        user="U0SRE", profile="sandbox", duration="14400"
    ).json  # 4h offered only for prod
    assert body["response_action"] == "errors"
    assert "not offered for 'sandbox'" in body["errors"]["duration"]
    body = bot.slack.invoke(user="U0001", profile="nope", duration="900").json
    assert "no profile called 'nope'" in body["errors"]["profile"]


def test_require_incident(bot: Bot) -> None:
    body = bot.slack.invoke(user="U0SRE", profile="prod", duration="3600").json
    assert body["errors"] == {"incident": "Profile 'prod' requires an incident ticket id or URL."}
    body = bot.slack.invoke(
        user="U0SRE", profile="prod", duration="3600", incident="https://tickets/INC-1"
    ).json
    assert body["response_action"] == "update"


def test_justification_boundaries(bot: Bot) -> None:
    assert bot.slack.invoke(justification=" " * 30).json["response_action"] == "errors"
    assert bot.slack.invoke(justification="x" * 19).json["response_action"] == "errors"
    assert (
        bot.slack.invoke(justification="x" * 1001)
        .json["errors"]["justification"]
        .startswith("Justification is too long")
    )
    assert bot.slack.invoke(justification="  " + "x" * 20 + "  ").json["response_action"] == "update"


def test_stacked_access_is_refused_naming_the_existing_event(bot: Bot) -> None:
    first = bot.slack.invoke(user="U0001")
    assert first.json["response_action"] == "update"
    existing = bot.store.list_active()[0]
    second = bot.slack.invoke(user="U0001").json
    assert second["response_action"] == "errors"
    assert existing.id in second["errors"]["profile"]
    assert "UTC" in second["errors"]["profile"]
    assert len(bot.store.list_active()) == 1
    # another person, or another profile, is fine
    assert bot.slack.invoke(user="U0002").json["response_action"] == "update"


def test_escaping_of_user_text_everywhere(bot: Bot) -> None:
    hostile = "<!channel> ping <@U0002> & <https://evil|click> *bold* — pls"
    bot.slack.invoke(user="U0001", justification=hostile, incident="<!here>")
    event = bot.store.list_active()[0]
    assert event.justification == hostile  # stored as typed
    audit = bot.fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == "C0AUDIT")[0]
    rendered = json.dumps(audit.params)
    for raw in ("<!channel>", "<!here>", "<@U0002>", "<https://evil|click>"):
        assert raw not in rendered
    assert "&lt;!channel&gt;" in rendered and "&amp;" in rendered


def test_forged_or_stale_signature_is_rejected_and_nothing_happens(bot: Bot) -> None:
    from tests.harness import SlackSender

    forged = SlackSender(bot.server.url, bot.fake, secret="not-the-secret")
    assert forged.command("", user="U0001").status == 401
    assert forged.invoke().status == 401
    import time

    stale = bot.slack.command.__self__  # type: ignore[attr-defined]
    body = b"payload=%7B%7D"
    assert (
        stale.post(body, "application/x-www-form-urlencoded", timestamp=int(time.time()) - 400).status == 401
    )
    assert stale.post(body, "application/x-www-form-urlencoded", signature="v0=deadbeef").status == 401
    assert bot.store.list_active() == []
    assert bot.fake.calls == []


def test_healthz(bot: Bot) -> None:
    from tests.harness import http

    response = http("GET", bot.server.url + "/healthz")
    assert response.status == 200 and response.json["status"] == "ok"
    bot.store.disconnect()
    bot.store.path = "/nonexistent-dir/x/y.db"
    assert http("GET", bot.server.url + "/healthz").status == 503
    assert http("GET", bot.server.url + "/nope").status == 404


def test_the_invoke_form_offers_the_chosen_profiles_durations(bot: Bot) -> None:
    """The profile select dispatches a block action; the bot answers with views.update offering only the
    chosen profile's durations (sandbox stops at 1 h; prod's 4 h is not offered for it)."""
    from tests.harness import TEAM

    bot.slack.command("", user="U0SRE")  # may invoke sandbox and prod
    opened = bot.fake.wait_for("views.open")[0]
    profile_block = next(b for b in opened.params["view"]["blocks"] if b["block_id"] == "profile")
    assert profile_block["dispatch_action"] is True
    bot.fake.wait_for("views.update")  # who the user is, put into the opened view (bot.slack.invoke_meta)
    view = bot.fake.views[opened.response["view"]["id"]]  # as Slack sends it: its latest state and hash
    assert view["private_metadata"]
    payload = {
        "type": "block_actions",
        "user": {"id": "U0SRE", "username": "sre", "name": "sre", "team_id": TEAM["id"]},
        "api_app_id": "A0001",
        "token": "deprecated",
        "container": {"type": "view", "view_id": view["id"]},
        "trigger_id": "1.2.3",
        "team": TEAM,
        "view": view,
        "actions": [
            {
                "action_id": "profile",
                "block_id": "profile",
                "type": "static_select",
                "selected_option": {"value": "sandbox", "text": {"type": "plain_text", "text": "sandbox"}},
                "action_ts": "1700000000.1",
            }
        ],
    }
    assert bot.slack.interactive(payload).status == 200
    updated = bot.fake.wait_for("views.update", 2)[1]
    assert updated.ok, updated.response
    assert updated.params["view_id"] == view["id"]
    assert updated.params["view"]["private_metadata"] == view["private_metadata"]  # carried on
    blocks = updated.params["view"]["blocks"]
    durations = next(b for b in blocks if b["block_id"] == "duration")["element"]["options"]
    assert [o["value"] for o in durations] == ["900", "1800", "3600"]
    chosen = next(b for b in blocks if b["block_id"] == "profile")["element"]["initial_option"]
    assert chosen["value"] == "sandbox"
    assert bot.fake.invalid_calls == []
