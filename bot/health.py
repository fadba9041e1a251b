"""`/healthz`: a dict of named checks, each saying whether it passes and whether its failure makes the
answer non-200.

A check's failure is *critical* (HTTP 503) only when this replica cannot record access, and another
replica, or this one once restarted or rescheduled, might: today the store read and write probes. Checks
that restarting cannot fix (a skewed clock; later, a broken audit channel) are reported with HTTP 200 and
`"status": "degraded"`, so an orchestrator does not restart the process in a loop; alert on the field.
To add a check: `runtime.health.add("name", fn)` with `fn() -> CheckResult`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from store import Store

log = logging.getLogger(__name__)

WRITE_PROBE_INTERVAL = 10.0
"""Seconds between two write probes of the store; health checks in between reuse the last answer."""


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    critical: bool = False
    """When not ok: does it make /healthz answer 503?"""
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **({} if self.ok else {"critical": self.critical}), **self.detail}


Check = Callable[[], CheckResult]


class Health:
    def __init__(self) -> None:
        self.checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

    def report(self) -> tuple[int, dict[str, Any]]:
        results: dict[str, CheckResult] = {}
        for name, check in self.checks.items():
            try:
                results[name] = check()
            except Exception as exc:  # noqa: BLE001 - health must answer, whatever a check raises
                results[name] = CheckResult(False, critical=True, detail={"error": type(exc).__name__})
        failing = [r for r in results.values() if not r.ok]
        if any(r.critical for r in failing):
            status, code = "unavailable", 503
        else:
            status, code = ("degraded" if failing else "ok"), 200
        return code, {"status": status, "checks": {name: r.as_json() for name, r in results.items()}}


class StoreProbe:
    """Reads every time (cheap); writes a heartbeat at most once per `interval` (the last answer in between)."""

    def __init__(
        self,
        store: Store,
        *,
        interval: float = WRITE_PROBE_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.interval = interval
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._last: tuple[float, str | None] | None = None  # (when, error or None)

    def read(self) -> CheckResult:
        try:
            self.store.ping()
        except Exception as exc:  # noqa: BLE001
            return CheckResult(
                False, critical=True, detail={"backend": _backend(self.store), "error": _error(exc)}
            )
        return CheckResult(True, detail={"backend": _backend(self.store)})

    def write(self) -> CheckResult:
        now = self.monotonic()
        with self._lock:
            last = self._last
            due = last is None or now - last[0] >= self.interval
            if due:
                self._last = (now, last[1] if last else None)  # one prober at a time
        if due:
            error: str | None = None
            try:
                self.store.ping(write=True)
            except Exception as exc:  # noqa: BLE001
                error = _error(exc)
                if last is None or last[1] is None:  # once per episode
                    log.error("the store cannot be written: %s", exc, extra={"outcome": "unwritable"})
            with self._lock:
                self._last = (now, error)
            last = (now, error)
        assert last is not None
        age = round(now - last[0], 1)
        if last[1] is None:
            return CheckResult(True, detail={"checked_seconds_ago": age})
        return CheckResult(False, critical=True, detail={"error": last[1], "checked_seconds_ago": age})


def _backend(store: Store) -> str:
    return type(store).__name__


def _error(exc: Exception) -> str:
    """What /healthz shows of an error: its type (the message, which may name paths, goes to the log)."""
    return type(exc).__name__
