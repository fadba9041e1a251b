"""Rate limits that a `Store` enforces inside the same atomic write as the create, or the extension.

The stores gather, for the new event's invoker, its Slack user and its profile, what the limits need
(the creation and extension times in the window, the end of the last event on the profile) within the
write, and `decide` says whether the create goes ahead (and whether it is escalated) or which limit
refuses it. An extension is decided the same way (`Counting`): it is one more entry in the windows.
Everything is counted both per mapped identity (invoker) and per Slack user id: a person whose mapped
identity changes (e.g. a new email address) keeps their budget and their cooldown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from store.errors import LimitReached

if TYPE_CHECKING:
    from store.model import BreakGlassEvent


@dataclass(frozen=True)
class Limits:
    """`per_user`/`escalate_after` count one person's events, `per_profile` one profile's, within the
    sliding `window` (now - window, now]; `cooldown` runs from the end of the person's last event on the
    profile. None / zero: not limited."""

    window: timedelta = timedelta(hours=24)
    per_user: int | None = None
    per_profile: int | None = None
    cooldown: timedelta = timedelta(0)
    escalate_after: int | None = None

    def __post_init__(self) -> None:
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")
        if self.cooldown < timedelta(0):
            raise ValueError("cooldown must not be negative")
        for name in ("per_user", "per_profile", "escalate_after"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")

    @property
    def counts_person(self) -> bool:
        return bool(self.per_user or self.escalate_after)

    @property
    def counts_profile(self) -> bool:
        return bool(self.per_profile)

    @property
    def person_keep(self) -> int:
        """How many of a person's newest creation times decide anything (the rest can be forgotten)."""
        return max(self.per_user or 0, self.escalate_after or 0)

    def in_window(self, created_at: datetime, now: datetime) -> bool:
        return created_at > now - self.window

    def cooldown_until(self, ended_at: datetime | None) -> datetime | None:
        return ended_at + self.cooldown if ended_at is not None and self.cooldown else None


NO_LIMITS = Limits()


@dataclass(frozen=True)
class Counting:
    """An extension counted like an invocation (`Store.extend(limits=...)`): a new entry in the limit
    windows at its time, for the event's invoker, Slack user and profile, decided by `decide` in the same
    atomic write as the extension (the cooldown does not apply: the event has not ended). When
    `escalate_after` says so, the stored event is `escalate(extended)`."""

    limits: Limits
    escalate: Callable[[BreakGlassEvent], BreakGlassEvent]


def check_cooldown(limits: Limits, profile: str, now: datetime, ended: Sequence[datetime | None]) -> None:
    """Refuse while the latest end (of the person's last event on the profile, per identity) cools down."""
    ends = [e for e in ended if e is not None]
    if not ends or not limits.cooldown:
        return
    last = max(ends)
    if now < last + limits.cooldown:
        raise LimitReached("cooldown", last + limits.cooldown, profile=profile, limit=None, ended_at=last)


def decide(
    limits: Limits,
    profile: str,
    now: datetime,
    *,
    person_times: Sequence[Sequence[datetime]] = (),
    profile_times: Sequence[datetime] = (),
) -> bool:
    """Raise LimitReached if a window limit refuses the create at `now`; return whether it is escalated.

    `person_times`: for each identity of the person (invoker, Slack user), the creation times of their
    events in the window; `profile_times`: those of the profile's events. Retry times are when enough
    events leave the window (window after the creation of the `limit`-th newest).
    """
    people = [sorted((t for t in times if limits.in_window(t, now)), reverse=True) for times in person_times]
    if limits.per_user:
        retry = _window_retry(limits, people, limits.per_user)
        if retry is not None:
            raise LimitReached("per_user", retry, profile=profile, limit=limits.per_user)
    if limits.per_profile:
        on_profile = sorted((t for t in profile_times if limits.in_window(t, now)), reverse=True)
        retry = _window_retry(limits, [on_profile], limits.per_profile)
        if retry is not None:
            raise LimitReached("per_profile", retry, profile=profile, limit=limits.per_profile)
    count = max((len(times) for times in people), default=0)
    # the Nth invocation within the window (this one included) is escalated
    return limits.escalate_after is not None and count + 1 >= limits.escalate_after


def _window_retry(limits: Limits, windows: Sequence[Sequence[datetime]], limit: int) -> datetime | None:
    retries = [times[limit - 1] + limits.window for times in windows if len(times) >= limit]
    return max(retries) if retries else None
