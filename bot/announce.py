"""The outbox: every Slack announcement an event owes, delivered at least once and normally exactly once.

A change that owes announcements (invoke, warning, close, expiry, review) records their kinds in the
event's `outbox` in the *same* store write. Delivery then:
  1. claims the event with a conditional write (a lease: `outbox_next_at = now + LEASE`), so only one
     replica delivers at a time — a lost claim means someone else is on it;
  2. sends each owed kind in order (the audit message first: thread replies need its ts);
  3. records what was sent (and the audit message's ts) with a conditional read-modify-write.
If Slack fails, the unsent kinds stay owed with exponential backoff and the scheduler's sweep retries
them. A crash between the store write and Slack loses nothing: the lease runs out and the sweep delivers.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot import blocks
from bot.clock import Clock
from bot.durations import format_duration
from bot.policy import Policy
from store import BreakGlassEvent, ConcurrentModification, EventNotFound, Store, StoreError, mutate

log = logging.getLogger(__name__)

AUDIT_POST = "audit_post"
DM_INVOKED = "dm_invoked"
ESCALATION = "escalation"
WARN_THREAD = "warn_thread"
WARN_DM = "warn_dm"
CLOSE_THREAD = "close_thread"
CLOSE_DM = "close_dm"
EXPIRE_THREAD = "expire_thread"
EXPIRE_DM = "expire_dm"
REVIEW_THREAD = "review_thread"
AUDIT_UPDATE = "audit_update"

LEASE = timedelta(minutes=2)
# Stop starting new sends once a delivery has run this long, so it ends well inside its lease.
SEND_BUDGET = 45.0
MAX_BACKOFF = timedelta(minutes=5)
SLACK_ERRORS = (SlackApiError, SlackClientError, OSError)


class AnnouncementFailed(Exception):
    pass


def lease(event: BreakGlassEvent, now: datetime) -> BreakGlassEvent:
    """`event` holding the delivery lease: nobody else delivers it until now + LEASE."""
    return event.updated(outbox_next_at=now + LEASE, outbox_attempts=event.outbox_attempts + 1)


def owns_lease(event: BreakGlassEvent) -> bool:
    """Was `event` just created holding its delivery lease (version 1 is the created write itself)?"""
    return event.version == 1 and event.outbox_attempts == 1 and event.outbox_next_at is not None


def backoff(attempts: int) -> timedelta:
    """2 s, 4 s, 8 s … capped at 5 minutes, with ±20 % jitter."""
    base = min(MAX_BACKOFF.total_seconds(), 2.0 ** max(1, attempts))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


class Announcer:
    def __init__(
        self,
        *,
        store: Store,
        client: WebClient,
        policy: Policy,
        clock: Clock,
        on_change: Callable[[BreakGlassEvent], None] | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.policy = policy
        self.clock = clock
        self.on_change = on_change  # e.g. refresh the invoker's App Home

    # -- delivery ---------------------------------------------------------------------------

    def deliver(self, event_id: str, *, claimed: BreakGlassEvent | None = None) -> BreakGlassEvent | None:
        """Deliver everything `event_id` owes. Returns the event afterwards (None if another replica holds it).

        `claimed`: the event as written by a change that already took the delivery lease in the same write
        (a new invocation is created holding it), so no separate claim write is needed.
        """
        for _ in range(4):
            event = claimed or self._claim(event_id)
            claimed = None
            if event is None:
                return None
            event = self._send_owed(event)
            if not event.outbox or (event.outbox_next_at and event.outbox_next_at > self.clock.now()):
                break  # all sent, or waiting for a retry after a failure
        if self.on_change is not None:
            try:
                self.on_change(event)
            except Exception:  # refreshing a view must never break delivery
                log.exception("refresh after announcement failed", extra={"event_id": event_id})
        return event

    def deliver_owed(self, limit: int = 100) -> int:
        """Retry every owed announcement that is due (the sweep calls this). Returns events attempted."""
        owed = self.store.list_owed(now=self.clock.now(), limit=limit)
        for event in owed:
            try:
                self.deliver(event.id)
            except StoreError as exc:
                log.warning("outbox retry failed: %s", exc, extra={"event_id": event.id, "action": "outbox"})
        return len(owed)

    def _claim(self, event_id: str) -> BreakGlassEvent | None:
        now = self.clock.now()

        def claim(ev: BreakGlassEvent) -> BreakGlassEvent | None:
            if not ev.outbox or (
                ev.outbox_next_at is not None and ev.outbox_next_at > now and ev.outbox_attempts > 0
            ):
                raise _NothingToDo
            return lease(ev, now)

        try:
            return mutate(self.store, event_id, claim, attempts=3)
        except (_NothingToDo, ConcurrentModification, EventNotFound):
            return None

    def _send_owed(self, event: BreakGlassEvent) -> BreakGlassEvent:
        sent: list[str] = []
        updates: dict[str, Any] = {}
        failure: Exception | None = None
        current = event
        started = time.monotonic()
        for kind in event.outbox:
            if time.monotonic() - started > SEND_BUDGET:
                failure = AnnouncementFailed("delivery took too long; the rest is retried")
                break
            try:
                updates |= self._send(kind, current)
                current = current.updated(**updates) if updates else current
                sent.append(kind)
            except (*SLACK_ERRORS, AnnouncementFailed) as exc:
                failure = exc
                break
        now = self.clock.now()

        def record(ev: BreakGlassEvent) -> BreakGlassEvent:
            ev = ev.updated(**{k: v for k, v in updates.items() if getattr(ev, k) is None}).with_outbox(
                remove=tuple(sent)
            )
            if not ev.outbox:
                return ev
            if failure is not None:
                return ev.updated(outbox_next_at=now + backoff(ev.outbox_attempts))
            return ev.updated(outbox_next_at=now, outbox_attempts=0)  # new kinds arrived meanwhile: due now

        result = mutate(self.store, event.id, record)
        if failure is not None:
            log.warning(
                "Slack announcement failed, will retry: %s",
                _describe(failure),
                extra={
                    "event_id": event.id,
                    "action": "announce",
                    "outcome": "retry",
                    "attempt": event.outbox_attempts,
                },
            )
        return result

    # -- what each kind sends --------------------------------------------------------------------

    def _send(self, kind: str, event: BreakGlassEvent) -> dict[str, Any]:
        """Send one announcement; return event fields to record (the audit message's channel/ts)."""
        if kind == AUDIT_POST:
            if event.audit_ts:
                return {}  # already posted (a retry after a crash before recording the outbox)
            if not event.audit_channel:
                raise AnnouncementFailed("no audit channel configured")
            response = self.client.chat_postMessage(
                channel=event.audit_channel, text=blocks.audit_text(event), blocks=blocks.audit_message(event)
            )
            return {"audit_channel": response["channel"], "audit_ts": response["ts"]}
        if kind == AUDIT_UPDATE:
            channel, ts = self._audit(event)
            self.client.chat_update(
                channel=channel, ts=ts, text=blocks.audit_text(event), blocks=blocks.audit_message(event)
            )
            return {}
        remaining = max(event.expires_at - self.clock.now(), timedelta(0))
        remaining = (
            timedelta(seconds=round(remaining.total_seconds() / 60) * 60)
            if remaining >= timedelta(minutes=1)
            else remaining
        )
        builders: dict[str, tuple[str, Callable[[], tuple[str, blocks.Blocks]]]] = {
            DM_INVOKED: ("dm", lambda: blocks.dm_invoked(event)),
            ESCALATION: (
                "thread",
                lambda: blocks.thread_escalation(
                    event, list(self.policy.security), format_duration(self.policy.rate_limits.window)
                ),
            ),
            WARN_THREAD: ("thread", lambda: blocks.thread_warning(event, remaining)),
            WARN_DM: ("dm", lambda: blocks.dm_warning(event, remaining)),
            CLOSE_THREAD: ("thread", lambda: blocks.thread_closed(event)),
            CLOSE_DM: ("dm", lambda: blocks.dm_closed(event)),
            EXPIRE_THREAD: ("thread", lambda: blocks.thread_expired(event)),
            EXPIRE_DM: ("dm", lambda: blocks.dm_expired(event)),
            REVIEW_THREAD: ("thread", lambda: blocks.thread_reviewed(event)),
        }
        if kind not in builders:
            log.error("unknown announcement kind %r dropped", kind, extra={"event_id": event.id})
            return {}
        where, build = builders[kind]
        text, body = build()
        if where == "dm":
            self.client.chat_postMessage(channel=event.slack_user_id, text=text, blocks=body)
        else:
            channel, ts = self._audit(event)
            self.client.chat_postMessage(channel=channel, thread_ts=ts, text=text, blocks=body)
        return {}

    def _audit(self, event: BreakGlassEvent) -> tuple[str, str]:
        if not event.audit_channel or not event.audit_ts:
            raise AnnouncementFailed("the audit message has not been posted yet")
        return event.audit_channel, event.audit_ts


class _NothingToDo(Exception):
    pass


def _describe(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return f"Slack answered {exc.response.status_code} {exc.response.get('error')}"
    return type(exc).__name__ + (f": {exc}" if isinstance(exc, AnnouncementFailed) else "")
