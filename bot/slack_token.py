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

from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.health import CheckResult

log = logging.getLogger(__name__)

TOKEN_REFUSED = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)


class TokenWatch(RetryHandler):
    """Add first to a WebClient's `retry_handlers`: slack_sdk shows every answer to them."""

    def __init__(self) -> None:
        super().__init__(max_retry_count=2**31)
        self._lock = threading.Lock()
        self._refused: str | None = None  # Slack's error while the token is refused
        self._accepted = False  # some answer accepted the token

    def __deepcopy__(self, memo: dict[int, Any]) -> TokenWatch:
        return self  # Bolt deep-copies a request's client (lazy listeners): share the state

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

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is not None:
            self.observe(response.body)
        return False
