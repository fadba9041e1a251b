"""Audit channels this process found broken (`AuditChannels`): the engine tells it about every send to an
audit channel; `/healthz` (check `audit_channel`) and the invoker's messages ("the audit channel is broken")
read it."""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from bot.clock import Clock
from bot.health import CheckResult

log = logging.getLogger(__name__)


class AuditChannels:
    """Audit channels this process found broken: one ERROR line when a channel breaks (not one per retry),
    one INFO line when a send to it works again, and the `audit_channel` check of `/healthz`."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._broken: dict[str, tuple[str, datetime]] = {}  # channel -> (Slack's error, since)
        self._lock = threading.Lock()

    def failed(self, channel: str, error: str) -> None:
        with self._lock:
            new = channel not in self._broken
            if new or self._broken[channel][0] != error:
                self._broken[channel] = (error, self._broken.get(channel, (error, self.clock.now()))[1])
        if new:
            log.error(
                "audit channel %s is broken (Slack: %s): announcements go to the fallback channel and "
                "security by DM until it works again",
                channel,
                error,
                extra={"action": "audit_channel", "outcome": "broken", "channel": channel},
            )

    def worked(self, channel: str) -> None:
        with self._lock:
            was = self._broken.pop(channel, None)
        if was is not None:
            log.info(
                "audit channel %s works again (broken since %s: %s); missed announcements are posted there",
                channel,
                was[1].isoformat(),
                was[0],
                extra={"action": "audit_channel", "outcome": "recovered", "channel": channel},
            )

    def error(self, channel: str | None) -> str | None:
        """Slack's error if `channel` is known broken, else None."""
        with self._lock:
            broken = self._broken.get(channel or "")
        return broken[0] if broken else None

    def check(self) -> CheckResult:
        with self._lock:
            broken = dict(self._broken)
        if not broken:
            return CheckResult(True)
        return CheckResult(
            False,
            critical=False,  # restarting cannot fix an archived channel: 200 "degraded", alert on it
            detail={
                "broken": {
                    channel: {"error": error, "since": since.isoformat()}
                    for channel, (error, since) in sorted(broken.items())
                }
            },
        )
