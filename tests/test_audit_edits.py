"""Edits of the bot's audit messages it did not make (bot/slack/audit_edits.py): Slack's message_changed
event, sent signed to the bot's real HTTP endpoint; the bot says so in the thread and restores the message;
its own updates, thread replies and other messages are left alone."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
from slack_sdk import WebClient

from bot.audit_feed.edits import fingerprint
from bot.audit_feed.verify import verify_feed
from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from store.sqlite import SQLiteStore
from tests.conftest import Bot, make_bot
from tests.harness import BOT_TOKEN
from tests.test_audit_feed import class_schema
from tests.test_flows_close import AUDIT, invoke, settled, submit_close


def changed(root: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "message",
        "subtype": "message_changed",
        "hidden": True,
        "channel": AUDIT,
        "channel_type": "channel",
        "ts": "1700000000.000100",
        "event_ts": "1700000000.000100",
        "message": new,
        "previous_message": root,
    }


def edit_notices(bot: Bot, ts: str) -> list[dict[str, Any]]:
    return [m for m in bot.fake.thread(AUDIT, ts) if "edited, and not by breakglass" in m["text"]]


def test_an_edit_the_bot_did_not_make_is_said_in_the_thread_and_undone(bot: Bot) -> None:
    event = invoke(bot)
    assert event.audit_ts
    root = bot.fake.message(AUDIT, event.audit_ts)
    forged = copy.deepcopy(root)
    forged["text"] = "Break-glass closed: nothing happened here"
    forged["blocks"][0]["text"]["text"] = "Nothing to see"
    forged["edited"] = {"user": "UBOT", "ts": "1700000000.000100"}
    # someone holding the bot token edits it: Slack shows the edit as the bot's own
    WebClient(token=BOT_TOKEN, base_url=bot.fake.url).chat_update(
        channel=AUDIT, ts=event.audit_ts, text=forged["text"], blocks=forged["blocks"]
    )
    response = bot.slack.event(changed(root, forged))
    assert response.status == 200
    bot.idle()
    settled(bot, event.id)
    (notice,) = edit_notices(bot, event.audit_ts)
    restored = bot.fake.message(AUDIT, event.audit_ts)
    assert fingerprint(restored["text"], restored["blocks"]) == fingerprint(root["text"], root["blocks"])
    # the restore is the bot's own update: its message_changed says nothing more
    assert bot.slack.event(changed(forged, restored)).status == 200
    bot.idle()
    assert len(edit_notices(bot, event.audit_ts)) == 1
    assert "restored from the store" in json.dumps(notice["blocks"])


def test_the_bots_own_updates_thread_replies_and_other_messages_are_left_alone(bot: Bot) -> None:
    event = invoke(bot)
    assert event.audit_ts
    root = bot.fake.message(AUDIT, event.audit_ts)
    assert submit_close(bot, event.id, "incident resolved").status == 200
    bot.idle()
    closed = settled(bot, event.id)
    updated = bot.fake.message(AUDIT, event.audit_ts)
    assert updated["text"] != root["text"]
    calls = len(bot.fake.calls)
    # the bot's own update (also a late one of an earlier content), a thread reply, a new message
    for previous, new in ((root, updated), (updated, root)):
        assert bot.slack.event(changed(previous, new)).status == 200
    reply = bot.fake.thread(AUDIT, event.audit_ts)[0]
    assert bot.slack.event(changed(reply, {**reply, "text": "edited reply"})).status == 200
    other = {**root, "ts": "1.000001", "text": f"Break-glass active: x, event {event.id}"}
    assert bot.slack.event(changed(other, {**other, "text": "changed"})).status == 200
    new_message = {"type": "message", "channel": AUDIT, "user": "U0002", "text": "hi", "ts": "2.0"}
    assert bot.slack.event(new_message).status == 200
    bot.idle()
    assert edit_notices(bot, event.audit_ts) == []
    assert [c.method for c in bot.fake.calls[calls:]] == []  # nothing sent to Slack
    assert bot.store.get(event.id).outbox == closed.outbox == ()


def test_the_edit_reaches_the_audit_feed(
    fake: FakeSlack, store: SQLiteStore, policy: Policy, clock: ManualClock, tmp_path: Path
) -> None:
    bot = make_bot(fake, store, policy, clock, breakglass_audit_feed=f"file:{tmp_path / 'audit.log'}")
    try:
        event = invoke(bot)
        assert event.audit_ts
        root = bot.fake.message(AUDIT, event.audit_ts)
        forged = {**root, "text": "nothing happened", "edited": {"user": "UBOT", "ts": "1.0"}}
        for _ in range(2):  # Slack may report one edit twice: one notice
            assert bot.slack.event(changed(root, forged)).status == 200
        bot.idle()
        bot.runtime.pipeline.deliver_owed()
        lines = (tmp_path / "audit.log").read_text().splitlines()
        (record,) = [
            r for r in map(json.loads, lines) if r["unmapped"]["breakglass"]["step"] == "audit_message_edited"
        ]
        jsonschema.validate(record, class_schema(record["class_uid"]))
        assert record["entity"] == {"uid": f"{AUDIT}/{event.audit_ts}", "type": "slack.message"}
        assert (
            record["actor"] == {"user": {"uid": "UBOT"}} and record["metadata"]["correlation_uid"] == event.id
        )
        assert verify_feed(lines, bot.store) == []
    finally:
        bot.runtime.scheduler.shutdown(wait=False)
        bot.server.stop()
