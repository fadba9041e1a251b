"""Typed store errors. Callers (the bot) turn these into what users see; nothing here knows about Slack."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

    from store.model import BreakGlassEvent


class StoreError(Exception):
    """Base class of every error a `Store` raises on purpose."""


class EventNotFound(StoreError):
    def __init__(self, event_id: str) -> None:
        super().__init__(f"no break-glass event with id {event_id!r}")
        self.event_id = event_id


class StackedAccess(StoreError):
    """The invoker already holds an active, unexpired event on the same profile."""

    def __init__(self, existing: BreakGlassEvent) -> None:
        super().__init__(
            f"{existing.invoker} already has active break-glass event {existing.id} on profile "
            f"{existing.profile!r} until {existing.expires_at.isoformat()}"
        )
        self.existing = existing


class DuplicateRequest(StoreError):
    """The request (a modal submission's view id, a slash command's trigger id) already created an event:
    a replayed or repeated request creates nothing, whatever state that event is in now."""

    def __init__(self, request_id: str, event_id: str) -> None:
        super().__init__(f"request {request_id!r} already created break-glass event {event_id}")
        self.request_id = request_id
        self.event_id = event_id


class LimitReached(StoreError):
    """A rate limit refused the create; nothing was written. `retry_at` is when it would be allowed.

    `kind`: "cooldown" (`ended_at` is when the person's last event on `profile` ended), "per_user" or
    "per_profile" (`limit` events already in the window)."""

    def __init__(
        self,
        kind: str,
        retry_at: datetime,
        *,
        profile: str,
        limit: int | None,
        ended_at: datetime | None = None,
    ) -> None:
        super().__init__(f"{kind} limit on profile {profile!r}: retry at {retry_at.isoformat()}")
        self.kind = kind
        self.retry_at = retry_at
        self.profile = profile
        self.limit = limit
        self.ended_at = ended_at


class InvalidTransition(StoreError):
    """A state change that the event's current state does not allow (e.g. closing an expired event)."""

    def __init__(self, event: BreakGlassEvent, attempted: str, reason: str) -> None:
        super().__init__(f"cannot {attempted} event {event.id}: {reason}")
        self.event = event
        self.attempted = attempted
        self.reason = reason


class ExtendedMeanwhile(InvalidTransition):
    """An extend lost a race: the event was extended by someone else since the caller looked at it
    (`event` is the event as it is now). Nothing was changed; look again before extending."""

    def __init__(self, event: BreakGlassEvent) -> None:
        latest = event.extensions[-1] if event.extensions else None
        detail = f" by {latest.by}" if latest else ""
        super().__init__(event, "extend", f"it was extended meanwhile{detail}; look at it again")


class ConcurrentModification(StoreError):
    """The event changed between read and write (optimistic lock lost); re-read and retry."""

    def __init__(self, event_id: str, detail: str = "the event was modified concurrently") -> None:
        super().__init__(f"event {event_id}: {detail}")
        self.event_id = event_id


class StoreUnavailable(StoreError):
    """The backend could not be reached or refused the request (throttling, 5xx, disk, locks).

    Nothing was written (the operation may be retried), unless `maybe_written`: a write whose answer
    never came (a read timeout) may have been applied.
    """

    def __init__(self, message: str, *, maybe_written: bool = False) -> None:
        super().__init__(message)
        self.maybe_written = maybe_written


class StoreNotConfigured(StoreError):
    """The store cannot be used as configured: no AWS region, a missing SQLite file for a read-only
    command, or a DynamoDB table whose layout is not breakglass's. The message says what to change."""
