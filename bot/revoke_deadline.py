"""The revocation deadline: an ended event's AWS revoke must be done soon after the event ended; one that is
not is an alarm, never silence.

The deadline is the moment the event ended (``ended_at``: the close, or the expiry) plus the scheduler's
``sweep_interval`` (an expiry is noticed by the next sweep; on Lambda the minute schedule) plus
:data:`REVOKE_DEADLINE`. A revoke that *fails* is announced by the revoke step itself (bot/delivery/handlers/access.py); this
catches the rest: a revoke that nobody attempted (a stalled deps, a lease or lock that never frees, a
step stuck behind a broken audit channel). Once per event:

* the audit thread (mentioning security) and every security member by DM, with the access_failed message;
* one ERROR log line;
* ``/healthz`` says ``degraded`` (check ``revocations``) while any revoke is overdue.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from bot.delivery.deps import DeliveryDeps
from bot.delivery.handlers.access import announce_failure
from bot.health import CheckResult
from store import BreakGlassEvent, mutate
from store.model import OutboxKind

log = logging.getLogger(__name__)

REVOKE_DEADLINE = timedelta(seconds=10)
"""How long after the sweep that notices an ended event its assignment must be deleted and sessions denied."""
HORIZON = timedelta(days=1)
"""Ended events with a revoke owed (in a backoff too) are looked for this far ahead of now."""
CHECK_INTERVAL = timedelta(seconds=10)
"""Time between two store reads of the health check; checks in between reuse the last answer."""
FIRST_ALARM = timedelta(minutes=5)


def deadline(deps: DeliveryDeps, event: BreakGlassEvent) -> datetime | None:
    """When the event's revoke must be done by (None: it owes none, or is not ended)."""
    access = event.access
    if access is None or access.revoked_at is not None or not event.status.ended or event.ended_at is None:
        return None
    return event.ended_at + deps.policy.sweep_interval + REVOKE_DEADLINE


def overdue(deps: DeliveryDeps, now: datetime) -> list[BreakGlassEvent]:
    """Ended events whose revoke is owed and past its deadline."""
    found = []
    for event in deps.store.list_owed(now=now + HORIZON, limit=500):
        due = deadline(deps, event)
        if due is not None and now > due and any(e.kind is OutboxKind.ACCESS_REVOKE for e in event.outbox):
            found.append(event)
    return found


def alarm_overdue(deps: DeliveryDeps, now: datetime) -> int:
    """Alarm each overdue revoke that has not alarmed yet (see the module docstring). Returns how many."""

    alarmed = 0
    for event in overdue(deps, now):
        access = event.access
        assert access is not None
        if access.alarms or access.failure is not None:
            continue  # already alarmed, by this or by the revoke step's own failure announcement
        due = deadline(deps, event)
        assert due is not None
        late = (now - due).total_seconds()
        error = (
            f"the revoke is still not done {late:.0f} s after its deadline; the assignment may still exist "
            "and the sessions are not denied"
        )
        log.error(
            "AWS access revoke overdue: %s",
            error,
            extra={"event_id": event.id, "action": "revoke", "outcome": "overdue"},
        )
        announce_failure(deps, event, "revoke", error, repeat=0)

        def record(ev: BreakGlassEvent) -> BreakGlassEvent:
            assert ev.access is not None
            changes = {"alarms": ev.access.alarms + 1, "next_alarm_at": now + FIRST_ALARM}
            return ev.updated(access=ev.access.model_copy(update=changes))

        mutate(deps.store, event.id, record)
        alarmed += 1
    return alarmed


class RevocationCheck:
    """The ``/healthz`` check: degraded (never 503: restarting does not revoke) while a revoke is overdue."""

    def __init__(self, deps: DeliveryDeps) -> None:
        self.deps = deps
        self._lock = threading.Lock()
        self._last: tuple[datetime, CheckResult] | None = None

    def __call__(self) -> CheckResult:
        with self._lock:
            now = self.deps.clock.now()
            if self._last is not None and timedelta(0) <= now - self._last[0] < CHECK_INTERVAL:
                return self._last[1]
            late = overdue(self.deps, now)
            result = (
                CheckResult(True)
                if not late
                else CheckResult(
                    False, detail={"overdue_revokes": [e.id for e in late[:20]], "count": len(late)}
                )
            )
            self._last = (now, result)
            return result
