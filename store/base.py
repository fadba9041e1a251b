"""The `Store` protocol: what every backend guarantees."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from store.errors import (
    ConcurrentModification,
    DuplicateRequest,
    ExtendedMeanwhile,
    InvalidTransition,
    StoreError,
)
from store.limits import NO_LIMITS, Counting, Limits
from store.model import BreakGlassEvent, Deferred, OutboxKind, Status
from store.notices import DayLink, DigestOf, Notice
from store.refresh import warning_refreshed
from store.tasks import OwedTask

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class Page:
    """One page of events, newest first; pass `cursor` back to get the next page (None = no more)."""

    items: list[BreakGlassEvent] = field(default_factory=list)
    cursor: str | None = None


class InvalidCursor(StoreError, ValueError):
    pass


def encode_cursor(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError) as exc:
        raise InvalidCursor(f"invalid pagination cursor {cursor!r}") from exc
    if not isinstance(value, dict):
        raise InvalidCursor(f"invalid pagination cursor {cursor!r}")
    return value


HEARTBEAT_CLAIM = "store-heartbeat"
"""The claim name (SQLite) / item key (DynamoDB) that `Store.ping(write=True)` rewrites."""

# What a stacking claim is made of: `save` never changes these (close and expire end the claim instead).
CLAIM_FIELDS = ("invoker", "profile", "created_at", "duration", "expires_at")


def check_save(current: BreakGlassEvent, event: BreakGlassEvent) -> None:
    """Raise unless writing `event` over the stored `current` is a valid `Store.save`."""
    if current.version != event.version:
        raise ConcurrentModification(event.id)
    if current.status is not event.status:
        raise InvalidTransition(current, "save", "status changes only through close or expire")
    changed = [name for name in CLAIM_FIELDS if getattr(current, name) != getattr(event, name)]
    if changed:
        raise InvalidTransition(current, "save", f"{', '.join(changed)} never change after creation")


def retimed(before: BreakGlassEvent | None, after: BreakGlassEvent) -> BreakGlassEvent:
    """`after` as it is to be stored over `before` (None: created): an event timed by one-time schedules
    (`timed_by`) whose end changes (created, extended, closed, expired) owes EXPIRY_SCHEDULES in the same
    write, after the steps its writer owed (the AWS revoke and the announcements come first). Every backend
    calls this in `create` and `TransitionStore` in `close`/`expire`/`extend`, and `save` can change neither
    the status nor `expires_at` (`check_save`): so whoever changes an event's end (Slack, breakglass-admin,
    an incident resolved, the sweep) owes its schedules step, and no caller can forget it."""
    if after.timed_by is None:
        return after
    if before is not None and (before.status, before.expires_at) == (after.status, after.expires_at):
        return after
    return after.with_outbox(
        OutboxKind.EXPIRY_SCHEDULES, version=after.version if before is None else before.version + 1
    )


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    return limit


@runtime_checkable
class Store(Protocol):
    """Persistence of break-glass events.

    Invariant (atomic on every backend): one invoker never holds two *effective* events on one
    profile, i.e. two events with status active whose expires_at is in the future.
    Every write bumps `version`; writes are conditional, so a lost race raises instead of overwriting.
    """

    def create(
        self,
        event: BreakGlassEvent,
        *,
        limits: Limits | None = None,
        escalate: Callable[[BreakGlassEvent], BreakGlassEvent] | None = None,
    ) -> BreakGlassEvent:
        """Store a new active event, deciding `limits` in the same atomic write. Raises
        StackedAccess(existing) if the invoker, or the Slack user, already holds an effective event on
        the profile (an active event past its expiry does not block), and LimitReached (with its retry
        time) if a limit refuses; both count per invoker and per Slack user. DuplicateRequest if the event's
        `request_id` already created an event, whatever that event's state. When `escalate_after` says
        so, the stored event is `escalate(event)` (default: `escalated=True`); the result is returned."""
        ...

    def get(self, event_id: str) -> BreakGlassEvent:
        """Raises EventNotFound."""
        ...

    def close(
        self,
        event_id: str,
        *,
        by: str,
        reason: str,
        now: datetime,
        outbox: Sequence[OutboxKind | str | Deferred] = (),
        known: BreakGlassEvent | None = None,
    ) -> BreakGlassEvent:
        """active -> closed, adding `outbox` entries in the same write. Raises InvalidTransition
        (carrying the current event) when the event is no longer active, e.g. another closer won.
        `known`: the caller's copy of the event, used instead of a read on the first attempt (the write
        stays conditional on its version; a stale copy is re-read)."""
        ...

    def expire(
        self,
        event_id: str,
        *,
        now: datetime,
        outbox: Sequence[OutboxKind | str | Deferred] = (),
        known: BreakGlassEvent | None = None,
    ) -> BreakGlassEvent:
        """active -> expired, only when now >= expires_at. Raises InvalidTransition otherwise.
        `known` as for `close`."""
        ...

    def extend(
        self,
        event_id: str,
        *,
        by: str,
        duration: timedelta,
        reason: str,
        now: datetime,
        seen: int,
        max_total: timedelta,
        max_extensions: int | None = None,
        limits: Limits | None = None,
        escalate: Callable[[BreakGlassEvent], BreakGlassEvent] | None = None,
        outbox: Sequence[OutboxKind | str | Deferred] = (),
        known: BreakGlassEvent | None = None,
        request_id: str | None = None,
    ) -> BreakGlassEvent:
        """A new expiry for an effective event (`BreakGlassEvent.extend`), adding `outbox` in the same
        write, conditional on its version; the stacking claim moves with it (atomically on every backend).
        `seen`: how many extensions the caller saw: if the event has another number by the time of the
        write, someone else extended it first and ExtendedMeanwhile (an InvalidTransition) is raised,
        nothing changed. InvalidTransition too when it ended, ran out, or a bound refuses.

        The extension is a new entry in the rate-limit windows (at `now`, for the event's invoker, Slack
        user and profile), decided with `limits` in the same atomic write as for `create` (the cooldown
        aside): LimitReached if `per_user` or `per_profile` refuses it, nothing changed; when
        `escalate_after` says so, the stored event is `escalate(extended)` (default: the extension and the
        event marked escalated).

        `request_id` (the Slack request that asked): when an extension of the event already carries it,
        DuplicateRequest is raised and nothing changed, decided in the same conditional write (so a retried
        or replayed request never extends twice, whatever `seen` says)."""
        ...

    def save(self, event: BreakGlassEvent) -> BreakGlassEvent:
        """Generic conditional update: write `event` (status unchanged) if the stored version still
        equals `event.version`; returns it with version + 1. Raises ConcurrentModification (stale
        copy), EventNotFound, and InvalidTransition if `event` changes the status or a claim field
        (invoker, profile, created_at, duration, expires_at)."""
        ...

    def list_active(self) -> list[BreakGlassEvent]:
        """Every event whose status is active (including ones past expiry not yet swept), oldest first.
        Cost is proportional to the number of active events, not to history."""
        ...

    def list_by_invoker(
        self, invoker: str, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page: ...

    def list_by_profile(
        self, profile: str, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page: ...

    def list_by_status(
        self, status: Status, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page: ...

    def list_owed(self, *, now: datetime, limit: int = 100) -> list[BreakGlassEvent]:
        """Events with announcements still owed whose next attempt is due (outbox_next_at <= now)."""
        ...

    def list_unreviewed(self, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None) -> Page:
        """Ended, not yet reviewed events, oldest ended first."""
        ...

    def count_by_invoker_since(self, invoker: str, since: datetime) -> int: ...

    def count_by_profile_since(self, profile: str, since: datetime) -> int: ...

    def last_by_invoker_and_profile(self, invoker: str, profile: str) -> BreakGlassEvent | None:
        """The invoker's most recently created event on the profile, any status."""
        ...

    def claim(self, name: str, *, now: datetime, hold: timedelta) -> bool:
        """Take the named lease until now + hold if nobody holds it (atomic across replicas).

        True: the caller holds it. Used so that work done by every replica's scheduler (e.g. the daily
        review reminder) happens once."""
        ...

    def renew_claim(self, name: str, *, held: datetime, until: datetime) -> bool:
        """Extend the named lease to `until` if it still runs until `held` (the holder's last claim or
        renewal: nobody took it over meanwhile). True: renewed (a heartbeat, see bot.delivery.lease)."""
        ...

    def finish_claim(self, name: str, *, until: datetime) -> None:
        """The holder of the named lease marks its work done: nobody can claim it again before `until`.
        (A holder that fails simply lets its lease run out, and the next claim retries the work.)"""
        ...

    def owe_task(self, task: OwedTask) -> None:
        """Store an owed task outside any event (store.tasks); owing one of the same name again (owed or
        finished) keeps the first. It stays listed (`list_tasks`) until `finish_task`."""
        ...

    def list_tasks(self, *, now: datetime, limit: int = 100) -> list[OwedTask]:
        """Owed tasks due at `now`, the oldest due first (cost independent of history)."""
        ...

    def finish_task(self, name: str, *, now: datetime) -> None:
        """The task is done (at `now`): it is no longer listed (a no-op for a task not owed)."""
        ...

    def add_notice(self, notice: Notice) -> bool:
        """Store a notice (store/notices.py) owed to the audit feed, unless one with its uid exists.
        True: stored now."""
        ...

    def list_notices(self, *, limit: int = 100) -> list[Notice]:
        """Owed notices, oldest first."""
        ...

    def get_notice(self, uid: str) -> Notice | None: ...

    def update_notice(self, notice: Notice) -> None:
        """Record which sinks have the notice, and whether it is still owed."""
        ...

    def link_day(self, day: str, uid: str, digest_of: DigestOf) -> DayLink:
        """The record `uid`'s place in the day's chain (store/notices.py): the one it has, or the next one,
        taken with a conditional write (never the same place twice, whoever appends at once)."""
        ...

    def day_chain(self, day: str) -> list[DayLink]:
        """A day's links, in order (seq 1, 2, ...)."""
        ...

    def ping(self, *, write: bool = False) -> None:
        """Raise StoreUnavailable if the backend does not answer; with `write`, also if it cannot write
        (full disk, read-only file, denied or throttled writes): one small heartbeat write, outside every
        listing. Callers rate-limit the write probe (see bot.health)."""
        ...

    def disconnect(self) -> None:
        """Release the connection/client (not to be confused with `close`, which closes an event)."""
        ...


EVENT_READS = frozenset(
    {
        "get",
        "list_active",
        "list_by_invoker",
        "list_by_profile",
        "list_by_status",
        "list_owed",
        "list_unreviewed",
        "count_by_invoker_since",
        "count_by_profile_since",
        "last_by_invoker_and_profile",
    }
)
"""The `Store` methods that only read events."""


class TransitionStore:
    """close and expire for a backend, written once: each backend supplies `_transition`, its atomic
    conditional write of `apply(current)` (on `known`, the caller's copy, when given)."""

    def _transition(
        self,
        event_id: str,
        apply: Callable[[BreakGlassEvent], BreakGlassEvent],
        known: BreakGlassEvent | None = None,
        *,
        moves_claim: bool = False,
        counting: Counting | None = None,
    ) -> BreakGlassEvent:
        """`moves_claim`: the change keeps the event active with a later expiry (extend), so the
        stacking claim moves with it; otherwise the change ends the event and releases the claim.
        `counting` (extend): the extension's entry in the limit windows, decided and written in the
        same atomic write (`store.limits.Counting`)."""
        raise NotImplementedError

    def close(
        self,
        event_id: str,
        *,
        by: str,
        reason: str,
        now: datetime,
        outbox: Sequence[OutboxKind | str | Deferred] = (),
        known: BreakGlassEvent | None = None,
    ) -> BreakGlassEvent:
        return self._transition(
            event_id,
            lambda ev: retimed(ev, ev.close(by=by, reason=reason, now=now).with_outbox(*outbox)),
            known,
        )

    def expire(
        self,
        event_id: str,
        *,
        now: datetime,
        outbox: Sequence[OutboxKind | str | Deferred] = (),
        known: BreakGlassEvent | None = None,
    ) -> BreakGlassEvent:
        return self._transition(
            event_id, lambda ev: retimed(ev, ev.expire(now=now).with_outbox(*outbox)), known
        )

    def extend(
        self,
        event_id: str,
        *,
        by: str,
        duration: timedelta,
        reason: str,
        now: datetime,
        seen: int,
        max_total: timedelta,
        max_extensions: int | None = None,
        limits: Limits | None = None,
        escalate: Callable[[BreakGlassEvent], BreakGlassEvent] | None = None,
        outbox: Sequence[OutboxKind | str | Deferred] = (),
        known: BreakGlassEvent | None = None,
        request_id: str | None = None,
    ) -> BreakGlassEvent:
        def apply(ev: BreakGlassEvent) -> BreakGlassEvent:
            if request_id is not None and any(x.request_id == request_id for x in ev.extensions):
                raise DuplicateRequest(request_id, ev.id)  # before `seen`: that request moved it on
            if len(ev.extensions) != seen:
                raise ExtendedMeanwhile(ev)
            extended = ev.extend(
                by=by,
                duration=duration,
                reason=reason,
                now=now,
                max_total=max_total,
                max_extensions=max_extensions,
                request_id=request_id,
            )
            return retimed(ev, warning_refreshed(ev, extended.with_outbox(*outbox)))

        counting = Counting(limits or NO_LIMITS, escalate or escalate_extension)
        return self._transition(event_id, apply, known, moves_claim=True, counting=counting)


def escalate_extension(event: BreakGlassEvent) -> BreakGlassEvent:
    """`event` with its latest extension (and so the event) marked escalated: `escalate_after` said so."""
    *earlier, latest = event.extensions
    return event.updated(escalated=True, extensions=(*earlier, latest.model_copy(update={"escalated": True})))


def mutate(
    store: Store,
    event_id: str,
    change: Callable[[BreakGlassEvent], BreakGlassEvent | None],
    *,
    attempts: int = 8,
) -> BreakGlassEvent:
    """Read-modify-write with optimistic locking: re-reads and re-applies `change` on conflict.

    `change` returns the new event, or None when nothing needs writing (the current event is returned).
    It may raise (e.g. InvalidTransition) to abort.
    """
    for _ in range(attempts):
        current = store.get(event_id)
        new = change(current)
        if new is None:
            return current
        try:
            return store.save(new)
        except ConcurrentModification:
            continue
    raise ConcurrentModification(event_id, f"still conflicting after {attempts} attempts")
