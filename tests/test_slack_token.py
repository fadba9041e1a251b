"""/healthz reflects a bot token Slack refuses (bot/slack_token.py): every Web API answer is watched, a
refusal degrades the health check `slack_token` and logs one ERROR per episode, an accepted answer ends it."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import pytest
from slack_sdk.errors import SlackApiError

from bot.localslack.webapi import FakeSlack
from tests.conftest import Bot
from tests.harness import BOT_TOKEN


def _healthz(bot: Bot) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(bot.server.url + "/healthz", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_refused_token_degrades_healthz_until_slack_accepts_it_again(
    bot: Bot, fake: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    client = bot.runtime.context.client
    client.auth_test()
    status, body = _healthz(bot)
    assert (status, body["checks"]["slack_token"]) == (200, {"ok": True, "verified": True})

    fake.token = "xoxb-rotated-0000"  # the token was revoked or rotated in Slack
    caplog.set_level(logging.ERROR, logger="bot.slack_token")
    for _ in range(6):  # six refusals: one ERROR line, not six
        with pytest.raises(SlackApiError):
            client.auth_test()
    status, body = _healthz(bot)
    assert status == 200  # restarting does not fix a token (bot/health.py): degraded, not 503
    assert body["status"] == "degraded"
    assert body["checks"]["slack_token"] == {"ok": False, "critical": False, "error": "invalid_auth"}
    refusals = [r for r in caplog.records if getattr(r, "outcome", None) == "refused"]
    assert len(refusals) == 1 and getattr(refusals[0], "action", None) == "slack_token"
    assert BOT_TOKEN not in caplog.text

    # An accepted answer ends the episode.
    fake.token = BOT_TOKEN
    client.auth_test()
    status, body = _healthz(bot)
    assert body["checks"]["slack_token"] == {"ok": True, "verified": True}


def test_other_slack_errors_do_not_touch_the_token_check(bot: Bot) -> None:
    watch_check = bot.runtime.checks.checks["slack_token"]
    with pytest.raises(SlackApiError):
        bot.runtime.context.client.api_call("no.such.method")
    assert watch_check().ok
