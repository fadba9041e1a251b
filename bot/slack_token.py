"""Whether Slack still accepts the bot token, from the answers of every Web API call (health check
`slack_token`).

A revoked or rotated token does not stop the process: events are still recorded, but nothing can be
announced. So every Slack answer is watched (a retry handler that never retries, as bot/skew.py does for
the `Date` header): an error that refuses the token (`invalid_auth`, `token_revoked`, ...) fails the check
and logs one ERROR per episode (`"action": "slack_token", "outcome": "refused"`); the next accepted answer
ends the episode. Not critical (see bot/health.py): restarting does not fix a token, so /healthz answers
200 with `"status": "degraded"`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from slack_sdk.http_retry.response import HttpResponse

from bot.health import CheckResult
from bot.slack_observer import SlackResponseObserver

log = logging.getLogger(__name__)

TOKEN_REFUSED = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)


class TokenWatch(SlackResponseObserver):
    """Add first to a WebClient's `retry_handlers`: slack_sdk shows every answer to them."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._refused: str | None = None  # Slack's error while the token is refused
        self._accepted = False  # some answer accepted the token

    def observe(self, body: Any) -> None:
        if not isinstance(body, dict) or "ok" not in body:
            return
        error = body.get("error") if body.get("ok") is False else None
        if body.get("ok") is not True and error not in TOKEN_REFUSED:
            return  # another error (channel_not_found, ratelimited...) says nothing about the token
        with self._lock:
            before = self._refused
            self._refused = error if error in TOKEN_REFUSED else None
            self._accepted = self._accepted or self._refused is None
        if self._refused and before is None:
            log.error(
                "Slack refuses the bot token (%s): nothing can be announced until SLACK_BOT_TOKEN is replaced "
                "(OAuth & Permissions > Bot User OAuth Token)",
                error,
                extra={"action": "slack_token", "outcome": "refused"},
            )
        elif before and self._refused is None:
            log.info("Slack accepts the bot token again", extra={"action": "slack_token", "outcome": "ok"})

    def check(self) -> CheckResult:
        with self._lock:
            refused, accepted = self._refused, self._accepted
        if refused:
            return CheckResult(False, critical=False, detail={"error": refused})
        return CheckResult(True, detail={"verified": accepted})

    def on_response(self, response: HttpResponse) -> None:
        self.observe(response.body)
