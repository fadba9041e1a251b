"""Proves bot/localslack/webapi.py (the local Slack Web API) with the real slack_sdk clients talking HTTP to it."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler, ServerErrorRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.webhook import WebhookClient

from bot.localslack.webapi import Call, FakeSlack, validate_blocks, validate_view

USERS = {
    "U0001": {"email": "alice@example.com", "name": "alice", "tz": "Europe/Berlin"},
    "U0002": {"profile": {"email": "bob@example.com"}, "name": "bob", "deleted": True},
}
GROUPS = {"S0001": ["U0001", "U0002"]}


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(users=USERS, usergroups=GROUPS) as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    return WebClient(token=fake.token, base_url=fake.url, timeout=5)


def api_error(call, /, *args, **kwargs) -> SlackApiError:
    with pytest.raises(SlackApiError) as info:
        call(*args, **kwargs)
    return info.value


def raw_post(url: str, body: bytes, content_type: str, headers: dict | None = None) -> tuple[int, dict, str]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def section(text: str, block_id: str | None = None) -> dict:
    block: dict = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if block_id:
        block["block_id"] = block_id
    return block


def modal(title: str = "Break glass", blocks: list | None = None, **extra) -> dict:
    return {
        "type": "modal",
        "callback_id": "request",
        "title": {"type": "plain_text", "text": title},
        "submit": {"type": "plain_text", "text": "Submit"},
        "blocks": blocks if blocks is not None else [section("hello", "b1")],
        **extra,
    }


def button(action_id: str = "approve", value: str = "42") -> dict:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": "Go"},
        "value": value,
    }


# ------------------------------------------------------------------------------------------ basics


def test_url_requires_start() -> None:
    fake = FakeSlack()
    with pytest.raises(RuntimeError):
        _ = fake.url
    with fake:
        assert fake.url.startswith("http://127.0.0.1:")
        assert fake.url.endswith("/api/")
    fake.stop()  # idempotent


def test_auth_test(fake: FakeSlack, client: WebClient) -> None:
    response = client.auth_test()
    assert response["user_id"] == "UBOT"
    assert response["team_id"] == "T0001"
    assert response["bot_id"] == "B0001"
    assert response["url"]
    [call] = fake.calls_to("auth.test")
    assert call.ok
    assert call.token == fake.token
    assert call.at <= time.monotonic()


def test_invalid_token_and_unknown_method(fake: FakeSlack, client: WebClient) -> None:
    bad = WebClient(token="xoxb-wrong", base_url=fake.url)
    assert api_error(bad.auth_test).response["error"] == "invalid_auth"
    assert api_error(WebClient(base_url=fake.url).auth_test).response["error"] == "invalid_auth"
    assert api_error(client.api_call, "nope.nothing").response["error"] == "unknown_method"
    assert [(c.method, c.ok, c.error) for c in fake.calls] == [
        ("auth.test", False, "invalid_auth"),
        ("auth.test", False, "invalid_auth"),
        ("nope.nothing", False, "unknown_method"),
    ]


def test_form_body_query_string_and_token_param(fake: FakeSlack) -> None:
    blocks = [section("from a form")]
    body = urlencode({"token": fake.token, "channel": "C0001", "text": "t", "blocks": json.dumps(blocks)})
    status, _, text = raw_post(
        fake.url + "chat.postMessage", body.encode(), "application/x-www-form-urlencoded"
    )
    assert status == 200
    assert json.loads(text)["ok"] is True
    [call] = fake.calls_to("chat.postMessage")
    assert call.token == fake.token
    assert "token" not in call.params
    assert call.params["blocks"] == blocks  # decoded from its JSON string

    query = urlencode({"user": "U0001"})
    request = urllib.request.Request(
        f"{fake.url}users.info?{query}", headers={"Authorization": f"Bearer {fake.token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read())["user"]["id"] == "U0001"
    assert fake.calls_to("users.info")[0].params == {"user": "U0001"}


def test_malformed_json_body(fake: FakeSlack) -> None:
    status, _, text = raw_post(
        fake.url + "auth.test", b"{nope", "application/json", {"Authorization": f"Bearer {fake.token}"}
    )
    assert status == 200
    assert json.loads(text) == {"ok": False, "error": "invalid_json"}


# ------------------------------------------------------------------------------------------ chat.*


def test_post_message_records_message_and_increasing_ts(fake: FakeSlack, client: WebClient) -> None:
    first = client.chat_postMessage(channel="C0001", text="one")
    second = client.chat_postMessage(
        channel="C0001", text="two", metadata={"event_type": "x", "event_payload": {}}
    )
    assert first["channel"] == "C0001"
    assert first["message"]["text"] == "one"
    assert float(second["ts"]) > float(first["ts"])
    assert len(first["ts"].split(".")[1]) == 6
    assert fake.messages[("C0001", first["ts"])]["text"] == "one"
    assert fake.message("C0001", second["ts"])["metadata"]["event_type"] == "x"
    assert [m["text"] for m in fake.channel_messages("C0001")] == ["one", "two"]
    assert fake.wait_for("chat.postMessage", count=2)[1].params["text"] == "two"


def test_post_message_argument_errors(client: WebClient) -> None:
    assert api_error(client.api_call, "chat.postMessage", json={"text": "x"}).response["error"] == (
        "channel_not_found"
    )
    assert (
        api_error(client.api_call, "chat.postMessage", json={"channel": "C1"}).response["error"] == "no_text"
    )


def test_dm_to_user_id_answers_d_channel(fake: FakeSlack, client: WebClient) -> None:
    response = client.chat_postMessage(channel="U0001", text="psst")
    assert response["channel"] == "D0001"
    assert fake.messages[("D0001", response["ts"])]["text"] == "psst"
    assert fake.dm_channel("U0001") == "D0001"
    assert fake.message("U0001", response["ts"])["text"] == "psst"  # user id accepted as a shortcut


def test_thread_replies_recorded(fake: FakeSlack, client: WebClient) -> None:
    parent = client.chat_postMessage(channel="C0001", text="parent")["ts"]
    client.chat_postMessage(channel="C0001", text="other top-level")
    for text in ("r1", "r2"):
        client.chat_postMessage(channel="C0001", text=text, thread_ts=parent)
    replies = fake.thread("C0001", parent)
    assert [r["text"] for r in replies] == ["r1", "r2"]
    assert all(r["thread_ts"] == parent for r in replies)
    assert fake.messages[("C0001", parent)]["reply_count"] == 2
    assert [m["text"] for m in fake.channel_messages("C0001")] == ["parent", "other top-level"]
    assert len(fake.channel_messages("C0001", include_replies=True)) == 4


def test_chat_update_changes_messages(fake: FakeSlack, client: WebClient) -> None:
    ts = client.chat_postMessage(channel="C0001", text="pending", blocks=[section("*pending*")])["ts"]
    response = client.chat_update(channel="C0001", ts=ts, text="approved", blocks=[section("*approved*")])
    assert response["ts"] == ts
    message = fake.messages[("C0001", ts)]
    assert message["text"] == "approved"
    assert message["blocks"][0]["text"]["text"] == "*approved*"
    assert [m["text"] for m in fake.history("C0001", ts)] == ["pending", "approved"]
    # fields not passed are kept
    client.chat_update(channel="C0001", ts=ts, text="approved again")
    assert fake.messages[("C0001", ts)]["blocks"][0]["text"]["text"] == "*approved*"
    error = api_error(client.chat_update, channel="C0001", ts="1.000001", text="x")
    assert error.response["error"] == "message_not_found"


def test_post_ephemeral_and_permalink(fake: FakeSlack, client: WebClient) -> None:
    response = client.chat_postEphemeral(channel="C0001", user="U0001", text="only you")
    assert response["message_ts"]
    assert ("C0001", response["message_ts"]) not in fake.messages
    ts = client.chat_postMessage(channel="C0001", text="x")["ts"]
    link = client.chat_getPermalink(channel="C0001", message_ts=ts)["permalink"]
    assert link.startswith("https://")
    assert f"/C0001/p{ts.replace('.', '')}" in link
    reply = client.chat_postMessage(channel="C0001", text="r", thread_ts=ts)["ts"]
    assert f"thread_ts={ts}" in client.chat_getPermalink(channel="C0001", message_ts=reply)["permalink"]
    error = api_error(client.chat_getPermalink, channel="C0001", message_ts="1.000002")
    assert error.response["error"] == "message_not_found"


def test_channel_configuration(fake: FakeSlack, client: WebClient) -> None:
    fake.add_channel("C0009", name="old", is_archived=True)
    fake.add_channel("C0010", name="private", is_private=True, is_member=False)
    assert api_error(client.chat_postMessage, channel="C0009", text="x").response["error"] == "is_archived"
    # Slack hides a private channel from a non-member: channel_not_found, and it cannot be joined
    assert (
        api_error(client.chat_postMessage, channel="C0010", text="x").response["error"] == "channel_not_found"
    )
    assert api_error(client.conversations_join, channel="C0010").response["error"] == "channel_not_found"
    info = client.conversations_info(channel="C0010")["channel"]
    assert info["name"] == "private"
    assert info["is_private"] is True
    assert info["is_member"] is False
    assert api_error(client.conversations_join, channel="C0009").response["error"] == "is_archived"


def test_a_public_channel_the_bot_left_is_joined_again(fake: FakeSlack, client: WebClient) -> None:
    fake.add_channel("C0011", name="audit", is_member=False)
    assert api_error(client.chat_postMessage, channel="C0011", text="x").response["error"] == "not_in_channel"
    assert api_error(client.conversations_history, channel="C0011").response["error"] == "not_in_channel"
    assert client.conversations_join(channel="C0011")["channel"]["is_member"] is True
    assert client.chat_postMessage(channel="C0011", text="x")["ok"] is True
    fake.add_channel("C0012", exists=False)
    assert (
        api_error(client.chat_postMessage, channel="C0012", text="x").response["error"] == "channel_not_found"
    )
    fake.add_channel("C0013", is_private=True, is_member=True)
    error = api_error(client.conversations_join, channel="C0013").response["error"]
    assert error == "method_not_supported_for_channel_type"


def test_missing_text_is_a_warning_not_an_error(fake: FakeSlack, client: WebClient) -> None:
    with pytest.warns(UserWarning, match="text"):  # slack_sdk warns client-side too
        response = client.chat_postMessage(channel="C0001", blocks=[section("no fallback")])
    assert response["ok"] is True
    assert response["warning"] == "missing_text"
    [warning] = fake.warnings
    assert warning.method == "chat.postMessage"
    assert warning.warning == "missing_text"
    client.chat_postMessage(channel="C0001", text="fallback", blocks=[section("ok")])
    assert len(fake.warnings) == 1


# ------------------------------------------------------------------------------ conversations / users


def test_conversations_open_and_info(client: WebClient) -> None:
    assert client.conversations_open(users="U0001")["channel"]["id"] == "D0001"
    assert client.conversations_open(users=["U0001", "U0002"])["channel"]["id"].startswith("G")
    info = client.conversations_info(channel="C0001")["channel"]
    assert info["id"] == "C0001"
    assert info["is_channel"] is True
    dm = client.conversations_info(channel="D0001")["channel"]
    assert dm["is_im"] is True
    assert dm["user"] == "U0001"


def test_users_and_usergroups(fake: FakeSlack, client: WebClient) -> None:
    user = client.users_info(user="U0001")["user"]
    assert user["id"] == "U0001"
    assert user["name"] == "alice"
    assert user["tz"] == "Europe/Berlin"
    assert user["deleted"] is False
    assert user["profile"]["email"] == "alice@example.com"
    bob = client.users_info(user="U0002")["user"]
    assert bob["deleted"] is True
    assert bob["profile"]["email"] == "bob@example.com"
    assert api_error(client.users_info, user="U9999").response["error"] == "user_not_found"
    assert client.users_lookupByEmail(email="ALICE@example.com")["user"]["id"] == "U0001"
    assert api_error(client.users_lookupByEmail, email="x@example.com").response["error"] == "users_not_found"

    assert client.usergroups_users_list(usergroup="S0001")["users"] == ["U0001", "U0002"]
    assert api_error(client.usergroups_users_list, usergroup="S9").response["error"] == "no_such_subteam"

    fake.add_user("U0003", email="carol@example.com", name="carol", tz="America/New_York")
    fake.set_usergroup("S0002", ["U0003"])
    assert client.users_info(user="U0003")["user"]["tz"] == "America/New_York"
    assert client.usergroups_users_list(usergroup="S0002")["users"] == ["U0003"]


# ------------------------------------------------------------------------------------------ views.*


def test_views_open_push_update_publish(fake: FakeSlack, client: WebClient) -> None:
    opened = client.views_open(trigger_id="123.456.abc", view=modal())["view"]
    assert opened["id"].startswith("V")
    assert opened["callback_id"] == "request"
    pushed = client.views_push(trigger_id="123.456.def", view=modal("Step 2"))["view"]
    assert pushed["id"] != opened["id"]

    updated = client.views_update(view_id=opened["id"], view=modal("Updated"), hash=opened["hash"])["view"]
    assert updated["id"] == opened["id"]
    assert fake.views[opened["id"]]["title"]["text"] == "Updated"
    stale = api_error(client.views_update, view_id=opened["id"], view=modal(), hash=opened["hash"])
    assert stale.response["error"] == "hash_conflict"
    assert api_error(client.views_update, view_id="V404", view=modal()).response["error"] == "not_found"
    by_external = client.views_open(trigger_id="t", view=modal(external_id="ext-1"))["view"]
    assert client.views_update(external_id="ext-1", view=modal("Ext"))["view"]["id"] == by_external["id"]

    home = {"type": "home", "blocks": [section("home tab")]}
    published = client.views_publish(user_id="U0001", view=home)["view"]
    assert published["id"].startswith("V")
    assert fake.home_view("U0001")["blocks"][0]["text"]["text"] == "home tab"
    assert client.views_publish(user_id="U0001", view=home)["view"]["id"] == published["id"]
    error = api_error(client.api_call, "views.publish", json={"view": home})
    assert error.response["error"] == "invalid_arguments"


def test_an_ack_update_never_overwrites_a_later_views_update(fake: FakeSlack, client: WebClient) -> None:
    """The local workspace records a submission's `response_action: update` after the app's answer; when the
    app's own `views.update` came first (after its ack, before its answer reached us), that update stands.
    Checked and stored as one step: checked apart from the store, an update landing in between was
    overwritten by the older answer (a browser test saw the refused form replaced by "Checking...")."""
    opened = client.views_open(trigger_id="t", view=modal("Form"))["view"]
    client.views_update(view_id=opened["id"], view=modal("Form again"))
    assert (
        fake.record_view(modal("Checking"), view_id=opened["id"], unless_changed_from=opened["hash"]) is None
    )
    assert fake.view(opened["id"])["title"]["text"] == "Form again"
    current = fake.view(opened["id"])["hash"]
    stored = fake.record_view(modal("Checking"), view_id=opened["id"], unless_changed_from=current)
    assert stored is not None and fake.view(opened["id"])["title"]["text"] == "Checking"


def test_views_open_trigger_errors(fake: FakeSlack, client: WebClient) -> None:
    missing = api_error(client.api_call, "views.open", json={"view": modal()})
    assert missing.response["error"] == "invalid_arguments"
    assert api_error(client.views_open, trigger_id="expired", view=modal()).response["error"] == (
        "expired_trigger_id"
    )
    assert api_error(client.views_push, trigger_id="", view=modal()).response["error"] == "invalid_arguments"
    assert fake.views == {}


# ------------------------------------------------------------------------------------------ response_url


def test_response_url_posts_recorded(fake: FakeSlack) -> None:
    url = fake.response_url("approve-42")
    response = WebhookClient(url).send(text="done", replace_original=True, blocks=[section("done")])
    assert response.status_code == 200
    assert response.body == "ok"
    [call] = fake.wait_for("response_url", where=lambda c: c.params["name"] == "approve-42")
    assert call.params["text"] == "done"
    assert call.params["replace_original"] is True
    assert call.params["blocks"][0]["type"] == "section"
    assert call.token is None

    bad = WebhookClient(fake.response_url("bad")).send(text="x", blocks=[section("x" * 3001)])
    assert bad.status_code == 400
    assert [c.params["name"] for c in fake.invalid_calls] == ["bad"]


# ------------------------------------------------------------------------------------------ wait_for


def test_wait_for_polls_until_calls_arrive(fake: FakeSlack, client: WebClient) -> None:
    def later() -> None:
        time.sleep(0.1)
        for text in ("a", "b", "c"):
            client.chat_postMessage(channel="C0001", text=text)

    thread = threading.Thread(target=later)
    thread.start()
    calls = fake.wait_for("chat.postMessage", count=3, timeout=3)
    thread.join()
    assert [c.params["text"] for c in calls] == ["a", "b", "c"]
    assert all(isinstance(c, Call) and c.ok for c in calls)
    matched = fake.wait_for("chat.postMessage", where=lambda c: c.params["text"] == "b")
    assert len(matched) == 1


def test_wait_for_times_out_with_call_dump(fake: FakeSlack, client: WebClient) -> None:
    fake.fail("chat.postMessage", error="channel_not_found")
    with pytest.raises(SlackApiError):
        client.chat_postMessage(channel="C0404", text="lost")
    start = time.monotonic()
    with pytest.raises(AssertionError) as info:
        fake.wait_for("chat.postMessage", timeout=0.2)
    assert time.monotonic() - start < 2
    message = str(info.value)
    assert "chat.postMessage" in message
    assert "channel_not_found" in message
    assert "C0404" in message
    with pytest.raises(AssertionError):
        fake.wait_for("views.open", timeout=0.05)


# ------------------------------------------------------------------------------ Block Kit validation


def _actions(*elements: dict, block_id: str = "acts") -> dict:
    return {"type": "actions", "block_id": block_id, "elements": list(elements)}


INVALID_MESSAGE_BLOCKS = {
    "section text 3001 chars": [section("x" * 3001)],
    "empty section text": [section("")],
    "header text 151 chars": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
    "header mrkdwn": [{"type": "header", "text": {"type": "mrkdwn", "text": "*h*"}}],
    "51 blocks": [section(f"s{i}") for i in range(51)],
    "duplicate block_ids": [section("a", "same"), section("b", "same")],
    "block_id 256 chars": [section("a", "b" * 256)],
    "button value 2001 chars": [_actions(button(value="v" * 2001))],
    "action_id 256 chars": [_actions(button(action_id="a" * 256))],
    "duplicate action_ids in a block": [_actions(button("go"), button("go"))],
    "unknown block type": [{"type": "sparkles"}],
    "blocks not a list": {"type": "section"},
    "section accessory button text too long": [
        {**section("x"), "accessory": {**button(), "text": {"type": "plain_text", "text": "t" * 76}}}
    ],
}


@pytest.mark.parametrize("blocks", INVALID_MESSAGE_BLOCKS.values(), ids=INVALID_MESSAGE_BLOCKS.keys())
def test_invalid_message_blocks_rejected(fake: FakeSlack, client: WebClient, blocks) -> None:
    error = api_error(client.chat_postMessage, channel="C0001", text="fallback", blocks=blocks)
    assert error.response["error"] == "invalid_blocks"
    assert error.response["errors"]
    [invalid] = fake.invalid_calls
    assert invalid.method == "chat.postMessage"
    assert invalid.ok is False
    assert invalid.error == "invalid_blocks"
    assert fake.messages == {}


def test_invalid_blocks_in_update_rejected_and_message_kept(fake: FakeSlack, client: WebClient) -> None:
    ts = client.chat_postMessage(channel="C0001", text="ok")["ts"]
    api_error(client.chat_update, channel="C0001", ts=ts, text="x", blocks=[section("y" * 3001)])
    assert fake.messages[("C0001", ts)]["text"] == "ok"
    assert [c.method for c in fake.invalid_calls] == ["chat.update"]


def test_limits_are_inclusive(client: WebClient, fake: FakeSlack) -> None:
    blocks = [section("x" * 3000, "b0")] + [section(f"s{i}", f"b{i + 1}") for i in range(48)]
    blocks.append({"type": "header", "text": {"type": "plain_text", "text": "h" * 150}})
    client.chat_postMessage(channel="C0001", text="max", blocks=blocks)
    client.chat_postMessage(channel="C0001", text="btn", blocks=[_actions(button("a" * 255, "v" * 2000))])
    client.views_open(trigger_id="t", view=modal("t" * 24, [section(f"s{i}") for i in range(100)]))
    assert fake.invalid_calls == []


INVALID_VIEWS = {
    "title 25 chars": modal("t" * 25),
    "no title": {k: v for k, v in modal().items() if k != "title"},
    "private_metadata 3001 chars": modal(private_metadata="m" * 3001),
    "callback_id 256 chars": modal(callback_id="c" * 256),
    "101 blocks": modal(blocks=[section(f"s{i}") for i in range(101)]),
    "duplicate block_ids": modal(blocks=[section("a", "dup"), section("b", "dup")]),
    "bad block inside": modal(blocks=[section("x" * 3001)]),
    "input without submit": {
        k: v
        for k, v in modal(
            blocks=[
                {
                    "type": "input",
                    "block_id": "reason",
                    "label": {"type": "plain_text", "text": "Reason"},
                    "element": {"type": "plain_text_input", "action_id": "reason"},
                }
            ]
        ).items()
        if k != "submit"
    },
    "bad type": modal(type="dialog"),
}


@pytest.mark.parametrize("view", INVALID_VIEWS.values(), ids=INVALID_VIEWS.keys())
def test_invalid_views_rejected(fake: FakeSlack, client: WebClient, view) -> None:
    error = api_error(client.views_open, trigger_id="123.456", view=view)
    assert error.response["error"] == "invalid_blocks"
    assert error.response["errors"]
    assert [c.method for c in fake.invalid_calls] == ["views.open"]
    assert fake.views == {}


def test_view_wide_action_id_uniqueness_is_opt_in(client: WebClient) -> None:
    view = modal(blocks=[_actions(button("go"), block_id="a1"), _actions(button("go"), block_id="a2")])
    assert validate_view(view) == []  # Slack only requires uniqueness within a block
    assert any("duplicate action_id" in e for e in validate_view(view, view_wide_action_ids=True))
    with FakeSlack(view_wide_action_ids=True) as strict:
        strict_client = WebClient(token=strict.token, base_url=strict.url)
        assert api_error(strict_client.views_open, trigger_id="t", view=view).response["error"] == (
            "invalid_blocks"
        )


def test_validation_helpers_accept_shared_payload_examples() -> None:
    view = {
        "type": "modal",
        "callback_id": "ops_request",
        "title": {"type": "plain_text", "text": "Ops request"},
        "submit": {"type": "plain_text", "text": "Submit"},
        "private_metadata": json.dumps({"channel_id": "C0001"}),
        "blocks": [
            {
                "type": "input",
                "block_id": "severity_block",
                "label": {"type": "plain_text", "text": "Severity"},
                "element": {
                    "type": "static_select",
                    "action_id": "severity",
                    "options": [{"text": {"type": "plain_text", "text": "P1"}, "value": "p1"}],
                },
            },
            {"type": "divider"},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "ctx"}]},
        ],
    }
    assert validate_view(view) == []
    assert validate_blocks([section("hi", "b"), _actions(button())]) == []


def test_validation_can_be_disabled(client: WebClient) -> None:
    with FakeSlack(validate_blocks=False) as lax:
        lax_client = WebClient(token=lax.token, base_url=lax.url)
        lax_client.chat_postMessage(channel="C0001", text="x", blocks=[section("x" * 3001)])
        assert lax.invalid_calls == []


# ------------------------------------------------------------------------------------------ failures


def test_fail_500_then_recovers(fake: FakeSlack, client: WebClient) -> None:
    fake.fail("chat.postMessage", status=500)
    error = api_error(client.chat_postMessage, channel="C0001", text="x")
    assert error.response.status_code == 500
    assert error.response["error"] == "internal_error"
    assert client.chat_postMessage(channel="C0001", text="x")["ok"] is True
    assert [(c.status, c.ok) for c in fake.calls_to("chat.postMessage")] == [(500, False), (200, True)]


def test_fail_with_error_times_and_any_method(fake: FakeSlack, client: WebClient) -> None:
    fake.fail("views.open", error="push_limit_reached", times=2)
    for _ in range(2):
        assert api_error(client.views_open, trigger_id="t", view=modal()).response["error"] == (
            "push_limit_reached"
        )
    assert client.views_open(trigger_id="t", view=modal())["ok"] is True
    fake.fail(None, status=503)
    assert api_error(client.auth_test).response.status_code == 503
    assert client.auth_test()["ok"] is True
    fake.fail("users.info", error="ratelimited")
    assert client.auth_test()["ok"] is True  # other methods unaffected


def test_fail_429_answers_retry_after(fake: FakeSlack, client: WebClient) -> None:
    fake.fail("auth.test", status=429)
    status, headers, text = raw_post(
        fake.url + "auth.test", b"{}", "application/json", {"Authorization": f"Bearer {fake.token}"}
    )
    assert status == 429
    assert headers["Retry-After"] == "1"
    assert json.loads(text) == {"ok": False, "error": "ratelimited"}
    fake.fail("auth.test", status=429, retry_after=0)
    error = api_error(client.auth_test)  # no retry handler for 429 installed by default
    assert error.response.status_code == 429
    assert error.response.headers["Retry-After"] == "0"
    assert fake.calls_to("auth.test")[-1].error == "ratelimited"


def test_rate_limit_retry_handler_retries_through_429(fake: FakeSlack) -> None:
    client = WebClient(token=fake.token, base_url=fake.url, retry_handlers=[RateLimitErrorRetryHandler(1)])
    fake.fail("chat.postMessage", status=429, retry_after=0)
    response = client.chat_postMessage(channel="C0001", text="eventually")
    assert response["ok"] is True
    assert [c.error for c in fake.calls_to("chat.postMessage")] == ["ratelimited", None]
    assert len(fake.messages) == 1


def test_server_error_retry_handler_retries_through_500_and_503(fake: FakeSlack) -> None:
    handler = ServerErrorRetryHandler(
        max_retry_count=2, interval_calculator=FixedValueRetryIntervalCalculator(0.01)
    )
    client = WebClient(token=fake.token, base_url=fake.url, retry_handlers=[handler])
    fake.fail("chat.postMessage", status=500)
    fake.fail("chat.postMessage", status=503)
    response = client.chat_postMessage(channel="C0001", text="eventually")
    assert response["ok"] is True
    assert [c.status for c in fake.calls_to("chat.postMessage")] == [500, 503, 200]


def test_set_down_toggles(fake: FakeSlack, client: WebClient) -> None:
    fake.set_down(True)
    assert api_error(client.auth_test).response.status_code == 503
    assert api_error(client.chat_postMessage, channel="C0001", text="x").response.status_code == 503
    assert WebhookClient(fake.response_url("r")).send(text="x").status_code == 503
    assert all(not c.ok and c.status == 503 for c in fake.calls)
    assert fake.messages == {}
    fake.set_down(False)
    assert client.auth_test()["ok"] is True


def test_delay_causes_client_timeout_but_slack_still_acts(fake: FakeSlack) -> None:
    impatient = WebClient(token=fake.token, base_url=fake.url, timeout=0.2)
    fake.slow("chat.postMessage", 0.5)
    with pytest.raises(TimeoutError):
        impatient.chat_postMessage(channel="C0001", text="slow")
    [call] = fake.wait_for("chat.postMessage", timeout=3)
    assert call.at < time.monotonic()
    assert len(fake.messages) == 1  # like Slack: the message was posted even though the client gave up

    fake.fail("auth.test", status=500, delay=0.5)
    with pytest.raises(TimeoutError):
        impatient.auth_test()


def test_reset_clears_state(fake: FakeSlack, client: WebClient) -> None:
    client.chat_postMessage(channel="C0001", text="x")
    api_error(client.chat_postMessage, channel="C0001", text="x", blocks=[section("x" * 3001)])
    fake.fail("auth.test", times=5)
    fake.set_down(True)
    fake.reset()
    assert fake.calls == []
    assert fake.invalid_calls == []
    assert fake.messages == {}
    assert client.auth_test()["ok"] is True
    assert client.users_info(user="U0001")["ok"] is True  # configuration survives reset


def test_snapshots_are_copies(fake: FakeSlack, client: WebClient) -> None:
    ts = client.chat_postMessage(channel="C0001", text="x")["ts"]
    fake.calls.clear()
    fake.messages[("C0001", ts)]["text"] = "mutated"
    assert len(fake.calls) == 1
    assert fake.messages[("C0001", ts)]["text"] == "x"


def test_many_concurrent_requests(fake: FakeSlack, client: WebClient) -> None:
    errors: list[BaseException] = []

    def post(i: int) -> None:
        try:
            client.chat_postMessage(channel="C0001", text=f"m{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    calls = fake.wait_for("chat.postMessage", count=60)
    assert len(calls) == 60
    timestamps = [ts for _, ts in fake.messages]
    assert len(set(timestamps)) == 60
    assert sorted({m["text"] for m in fake.messages.values()}) == sorted(f"m{i}" for i in range(60))
