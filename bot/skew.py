"""Clock skew: how far this replica's clock is from Slack's and AWS's, read from the `Date` header of
their responses.

Stacking and expiry are decided with the replica's own clock (the store compares the times it is given).
A replica whose clock runs ahead expires events early and lets access stack once the earlier event looks
expired; one running behind keeps access open too long. So every Slack Web API and DynamoDB response is
compared with the clock that decides (`Clock.now()`): the latest skew per source is in `/healthz` (check
`clock`), and a skew beyond `SKEW_BOUND` logs one WARNING per episode (and one INFO when it ends). A
`Date` header has one-second resolution and is stamped before the response travels, so a clock in sync
reads between 0 and about 1 s + the round trip ahead.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.response import HttpResponse

from bot.clock import Clock
from bot.health import CheckResult
from bot.slack_observer import SlackResponseObserver

log = logging.getLogger(__name__)

SKEW_BOUND = timedelta(seconds=30)
"""Skew beyond this is reported (health check `clock` fails, not critically) and logged."""


class SkewMonitor:
    def __init__(self, clock: Clock, *, bound: timedelta = SKEW_BOUND) -> None:
        self.clock = clock
        self.bound = bound
        self._skews: dict[str, float] = {}
        self._alarmed = False
        self._lock = threading.Lock()

    def observe(self, source: str, date_header: str | None) -> None:
        """Record the skew of our clock against a response's `Date` (ignored when absent or unparsable)."""
        if not date_header:
            return
        try:
            theirs = parsedate_to_datetime(date_header)
        except (TypeError, ValueError):
            return
        if theirs.tzinfo is None:
            return
        skew = (self.clock.now() - theirs).total_seconds()
        with self._lock:
            self._skews[source] = skew
            beyond = {s: v for s, v in self._skews.items() if abs(v) > self.bound.total_seconds()}
            started, ended = bool(beyond) and not self._alarmed, not beyond and self._alarmed
            self._alarmed = bool(beyond)
        if started:
            log.warning(
                "this replica's clock is %+.0f s off %s's (bound %.0f s): stacking and expiry decisions "
                "use this clock; fix its time synchronisation (NTP)",
                skew,
                source,
                self.bound.total_seconds(),
                extra={"action": "clock", "outcome": "skewed"},
            )
        elif ended:
            log.info("this replica's clock is back within %.0f s", self.bound.total_seconds())

    def skews(self) -> dict[str, float]:
        with self._lock:
            return dict(self._skews)

    def check(self) -> CheckResult:
        """Not critical: restarting does not fix a clock (see bot.health)."""
        skews = self.skews()
        ok = all(abs(v) <= self.bound.total_seconds() for v in skews.values())
        detail = {
            "bound_seconds": self.bound.total_seconds(),
            "skew_seconds": {s: round(v, 1) for s, v in skews.items()},
        }
        return CheckResult(ok, critical=False, detail=detail)

    # -- sources ------------------------------------------------------------------------------

    def slack_hook(self) -> RetryHandler:
        """Add first to a WebClient's `retry_handlers`: slack_sdk shows every response to them."""
        return _SlackDateObserver(self)

    def watch_boto3(self, client: Any, source: str = "aws") -> None:
        """Observe every response of a boto3 client (botocore's `after-call` event)."""

        def after_call(http_response: Any = None, **_: Any) -> None:
            headers = getattr(http_response, "headers", None) or {}
            self.observe(source, headers.get("Date") or headers.get("date"))

        client.meta.events.register("after-call", after_call, unique_id=f"breakglass-skew-{id(self)}")


class _SlackDateObserver(SlackResponseObserver):
    """Reads the `Date` of each Slack response."""

    def __init__(self, monitor: SkewMonitor) -> None:
        super().__init__()
        self.monitor = monitor

    def on_response(self, response: HttpResponse) -> None:
        for name, values in response.headers.items():
            if name.lower() == "date" and values:
                self.monitor.observe("slack", values[0])
                break
