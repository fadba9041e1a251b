"""Forged and replayed requests never reach a listener (Bolt's RequestVerification on the real endpoint)."""

from __future__ import annotations

import time
import urllib.parse

from tests.conftest import Bot
from tests.harness import http


def _form(text: str, user: str = "U0001") -> bytes:
    return urllib.parse.urlencode(
        {
            "team_id": "T0001",
            "user_id": user,
            "command": "/breakglass",
            "text": text,
            "trigger_id": "1.2.3",
            "channel_id": "C0001",
        }
    ).encode()


def test_valid_request_replayed_with_tampered_body_is_rejected(bot: Bot) -> None:
    original = _form("list", user="U0002")
    ts = str(int(time.time()))
    signature = bot.slack.verifier.generate_signature(timestamp=ts, body=original)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature,
    }
    # the genuine request is accepted...
    assert http("POST", bot.slack.url, original, headers).status == 200
    # ...the same signature on a changed body (another user, a fast-path invocation) is not
    tampered = _form("sandbox 30m incident replaying someone else's signed request here", user="U0001")
    assert http("POST", bot.slack.url, tampered, headers).status == 401
    assert bot.store.list_active() == []


def test_missing_signature_headers_are_rejected(bot: Bot) -> None:
    body = _form("sandbox 30m incident no signature at all on this request")
    assert (
        http("POST", bot.slack.url, body, {"Content-Type": "application/x-www-form-urlencoded"}).status == 401
    )
    ts_only = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(int(time.time())),
    }
    assert http("POST", bot.slack.url, body, ts_only).status == 401
    assert bot.store.list_active() == []
    assert bot.fake.calls == []


def test_signature_from_the_future_or_past_is_rejected(bot: Bot) -> None:
    body = _form("help")
    for skew in (-301, 301):
        assert (
            bot.slack.post(
                body, "application/x-www-form-urlencoded", timestamp=int(time.time()) + skew
            ).status
            == 401
        )
