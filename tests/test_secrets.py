"""Secrets never reach logs (captured at DEBUG), error messages or Slack messages."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bot.logs import configure_logging
from tests.conftest import Bot
from tests.harness import BOT_TOKEN, SIGNING_SECRET, SlackSender

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    configure_logging("DEBUG", [BOT_TOKEN, SIGNING_SECRET, AWS_SECRET], stream=stream)
    yield stream
    root.handlers[:], root.level = saved[0], saved[1]


def test_no_secret_in_debug_logs_or_slack_messages(bot: Bot, captured: io.StringIO) -> None:
    bot.slack.command("")
    bot.slack.invoke(user="U0001")
    bot.slack.invoke(user="U0001")  # stacked: an error path
    SlackSender(bot.server.url, bot.fake, secret="wrong").command("help")  # forged: 401 path
    bot.fake.fail("chat.postMessage", times=3, status=500)
    bot.slack.invoke(user="U0002")
    bot.idle()
    event = bot.store.list_active()[0]
    bot.slack.command(f"close {event.id} done with it", user=event.slack_user_id)
    bot.idle()
    logging.getLogger("test").error("token in a message by mistake: %s", BOT_TOKEN)
    logs = captured.getvalue()
    assert (
        "Sending a request" in logs or "chat.postMessage" in logs
    )  # DEBUG really captured the Web API traffic
    assert "[REDACTED]" in logs
    for secret in (BOT_TOKEN, SIGNING_SECRET, AWS_SECRET):
        assert secret not in logs
        for call in bot.fake.calls:
            assert secret not in json.dumps(call.params)
    entries = [json.loads(line) for line in logs.splitlines()]  # one JSON object per line
    invoked = [e for e in entries if e["msg"] == "break-glass invoked"]
    assert invoked
    for entry in invoked:
        assert {"ts", "level", "event_id", "slack_user", "profile", "action", "outcome", "request_id"} <= set(
            entry
        )


def test_unexpected_errors_show_a_reference_not_internals(
    bot: Bot, monkeypatch: pytest.MonkeyPatch, captured: io.StringIO
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"internal detail {BOT_TOKEN}")

    monkeypatch.setattr(bot.runtime.context.service, "invoke", boom)
    body = bot.slack.invoke(user="U0001").json
    message = body["errors"]["profile"]
    assert "reference" in message
    assert "internal detail" not in message
    assert BOT_TOKEN not in message
    reference = message.split("reference ")[1].split(")")[0]
    assert reference in captured.getvalue()  # the log carries the same reference, with the traceback
    assert BOT_TOKEN not in captured.getvalue()
