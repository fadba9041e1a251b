"""Requests from Slack are verified before anything parses them.

Bolt parses a request's body before its `RequestVerification` middleware checks the signature, so an
unsigned request with a malformed or non-UTF-8 body used to end in a 500 and a traceback. The HTTP entry
points (bot/wsgi.py, bot/lambda_handler.py) call `RequestGuard.check` on the raw body first: unsigned or
stale → 401, signed but not a body Slack sends → 400, too large → 413, each with one log line and no
traceback. Bolt's own verification stays on behind it (a second check of the same signature costs
microseconds and keeps Bolt safe if it is ever mounted without this guard).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus

from slack_bolt.request.internals import parse_body
from slack_sdk.signature import Clock, SignatureVerifier

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
"""Slack's requests are far smaller; a larger body is refused before it is read."""


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str

    @property
    def phrase(self) -> str:
        return HTTPStatus(self.status).phrase


class RequestGuard:
    def __init__(self, signing_secret: str, *, clock: Callable[[], float] = time.time) -> None:
        self._secret = signing_secret
        self._verifier = (
            SignatureVerifier(signing_secret, clock=_Clock(clock)) if signing_secret.strip() else None
        )

    def check(self, body: bytes, headers: Mapping[str, str]) -> Refusal | None:
        """None when the request may go on to Bolt; else why not. `headers`: lower-case names."""
        timestamp = headers.get("x-slack-request-timestamp") or ""
        signature = headers.get("x-slack-signature") or ""
        try:
            text: str | None = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if not self._signed(body, text, timestamp, signature):
            return refuse(401, "invalid or missing Slack signature")
        if text is None:
            return refuse(400, "body is not UTF-8")
        content_type = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        try:
            parsed = parse_body(text, content_type)
        except ValueError:
            return refuse(400, "body is not valid JSON or form data")
        if not isinstance(parsed, dict):
            return refuse(400, "body is not a JSON object")
        return None

    def _signed(self, body: bytes, text: str | None, timestamp: str, signature: str) -> bool:
        if self._verifier is None or not signature or not timestamp.isdigit():
            return False
        if text is not None:
            return self._verifier.is_valid(text, timestamp, signature)
        # slack_sdk's verifier only takes UTF-8 text; a body that is not cannot be from Slack, but a
        # validly signed one (a buggy sender holding the secret) gets a 400, not a 401.
        if abs(self._verifier.clock.now() - int(timestamp)) > 60 * 5:
            return False
        digest = hmac.new(self._secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256)
        return hmac.compare_digest("v0=" + digest.hexdigest(), signature)

    def too_large(self) -> Refusal:
        return refuse(413, f"body larger than {MAX_BODY_BYTES} bytes")


def refuse(status: int, reason: str) -> Refusal:
    log.warning(
        "refused a request to the Slack endpoint: %s", reason, extra={"action": "verify", "outcome": status}
    )
    return Refusal(status, reason)


class _Clock(Clock):
    """slack_sdk's verifier takes a Clock object with `now()`."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()
