"""The use cases — invoke, close, warn, expire, review — written against `Store`, a `Clock` and the policy.

Nothing here talks to Slack directly: announcements are recorded in the event's outbox (in the same
store write as the change that owes them) and delivered by the delivery engine (bot/delivery/).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from bot import ids, invoker, metrics, schedules
from bot.access import AccessProvider, NoneProvider, PermanentAccessError, TransientAccessError
from bot.clock import Clock
from bot.directory import Admission, Directory
from bot.durations import format_duration, parse_duration
from bot.errors import (
    AlreadyActive,
    AlreadySubmitted,
    AwsAccessRefused,
    DirectoryUnavailable,
    NotAuthorized,
    RateLimited,
    ValidationFailed,
)
from bot.incidents import NoIncidents
from bot.incidents.links import IncidentLinks, incident_note
from bot.policy import Policy, ProfilePolicy
from store import (
    BreakGlassEvent,
    DuplicateRequest,
    EventNotFound,
    InvalidTransition,
    LimitReached,
    Limits,
    Page,
    ReasonCode,
    StackedAccess,
    Status,
    Store,
    is_event_id,
    mutate,
)
from store.base import escalate_extension
from store.model import (
    MAX_CLOSE_REASON,
    MAX_REVIEW_NOTES,
    Deferred,
    EventAccess,
    OutboxKind,
    validate_free_text,
    validate_incident,
    validate_justification,
)

if TYPE_CHECKING:
    from bot.audit_feed.notices import RefusalKind

log = logging.getLogger(__name__)

# What an extension owes, in order, in the same store write as the new expiry (its handlers:
# bot/delivery/handlers/extend.py). An event timed by one-time schedules (Lambda) also owes its re-timing
# step, added by the store to every change of its end (store.base.retimed).
EXTENSION_OUTBOX: tuple[OutboxKind, ...] = (OutboxKind.AUDIT_UPDATE, OutboxKind.EXTEND_THREAD)


def extension_outbox(event: BreakGlassEvent) -> list[OutboxKind]:
    """The steps an extension of `event` owes (the invoker's DM always: their timer moved)."""
    owed = list(EXTENSION_OUTBOX)
    if not event.foreign:
        owed.append(OutboxKind.EXTEND_DM)
    return owed


@dataclass(frozen=True)
class Roles:
    incident_commander: bool = False
    security: bool = False

    @property
    def can_see_all(self) -> bool:
        return self.incident_commander or self.security


@dataclass(frozen=True)
class InvokeRequest:
    user_id: str
    profile: str | None
    reason: str | None
    justification: str | None
    duration: str | None  # whole seconds ("3600", from the modal) or a duration ("1h", fast path)
    incident: str | None = None
    request_id: str | None = None
    # Who the user is, resolved when their form opened (bot.invoker): given, the use case makes no Slack,
    # AWS or incident-tool round trip and raises invoker.Unresolved for what it does not cover.
    known: invoker.KnownInvoker | None = None


@dataclass(frozen=True)
class CloseResult:
    event: BreakGlassEvent
    closed_now: bool  # False: it had already ended (closed or expired) before this request


def _fmt_utc(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _plain_until(value: datetime, now: datetime) -> str:
    """Plain text (modal errors cannot hold Slack date tokens): absolute UTC plus relative."""
    remaining = value - now
    if remaining <= timedelta(0):
        return _fmt_utc(value)
    return f"{_fmt_utc(value)} (in {format_duration(_round_up_minute(remaining))})"


def _sentence(exc: Exception) -> str:
    """A validation message as a sentence (str.capitalize would lower-case "U+202E" and ids)."""
    text = str(exc)
    return text[:1].upper() + text[1:] + "."


def _round_up_minute(delta: timedelta) -> timedelta:
    seconds = int(delta.total_seconds())
    if seconds >= 60:
        seconds = -(-seconds // 60) * 60
    return timedelta(seconds=max(seconds, 1))


class BreakGlassService:
    def __init__(
        self,
        *,
        store: Store,
        policy: Policy,
        directory: Directory,
        clock: Clock,
        default_audit_channel: str | None = None,
        prepare_new: Callable[[BreakGlassEvent], BreakGlassEvent] | None = None,
        access: AccessProvider | None = None,
        incidents: IncidentLinks | None = None,
    ) -> None:
        self.store = store
        # The incident tool (bot/incidents): the incident field is looked up and linked, on-call checked.
        self.incidents = incidents or IncidentLinks(
            provider=NoIncidents(), policy=policy.incidents, store=store, directory=directory, clock=clock
        )
        self.incidents.service = self
        # Who changes AWS access (bot/access): looked up before an invocation is stored; the grant and the
        # revoke themselves are owed steps delivered by the pipeline.
        self.access: AccessProvider = access or NoneProvider()
        self.policy = policy
        self.directory = directory
        self.clock = clock
        self.default_audit_channel = default_audit_channel
        # Applied to a new invocation just before it is stored (the delivery pipeline uses it to be
        # handed the event together with its creation, in the same write).
        self.prepare_new = prepare_new
        # Told of each refused invocation (the audit feed stores it as a notice, bot/audit_feed/notices.py).
        self.on_refused: Callable[[InvokeRequest, RefusalKind, str], None] | None = None
        # How new events are timed where a runtime keeps their timers outside this process: "schedules"
        # (Lambda's one-time schedules, bot/schedules.py); None where the scheduler runs in-process. The store
        # then owes EXPIRY_SCHEDULES with every change to the event's end, whoever makes it (store.base.retimed).
        self.timed_by: Literal["schedules"] | None = None
        self.admission = Admission(
            email_domains=policy.email_domains,
            allow_guests=policy.allow_guests,
            allow_external_users=policy.allow_external_users,
        )

    # -- who may do what --------------------------------------------------------------------

    def identity(self, user_id: str) -> str:
        """The user's invoker identity (policy `identity`); NotAuthorized if the policy refuses them."""
        return self.directory.identity(user_id, self.policy.identity, self.admission)

    def roles(self, user_id: str) -> Roles:
        return Roles(
            incident_commander=self.directory.is_member(user_id, self.policy.incident_commanders),
            security=self.directory.is_member(user_id, self.policy.security),
        )

    def may_invoke(self, user_id: str, profile: ProfilePolicy) -> bool:
        return profile.invokers is None or self.directory.is_member(user_id, profile.invokers)

    def profiles_for(self, user_id: str) -> list[str]:
        return [name for name, p in self.policy.profiles.items() if self.may_invoke(user_id, p)]

    def durations_for(self, profiles: list[str]) -> list[timedelta]:
        offered = {d for name in profiles for d in self.policy.profiles[name].durations}
        return sorted(offered)

    def may_close(self, user_id: str, event: BreakGlassEvent) -> bool:
        return user_id == event.slack_user_id or self.roles(user_id).can_see_all

    def warn_at(self, event: BreakGlassEvent) -> datetime:
        """When the expiry warning is due: warn_before ahead, but never in the first half of the event."""
        return schedules.warn_time(event, self.policy.warn_before)

    # -- invoke -------------------------------------------------------------------------------

    def validate(self, request: InvokeRequest) -> tuple[ProfilePolicy, BreakGlassEvent]:
        """Check every field on the server; raise ValidationFailed with one message per bad field."""
        errors: dict[str, str] = {}
        now = self.clock.now()
        profile_name = (request.profile or "").strip()
        profile_name = self.policy.profile_name(profile_name) or profile_name  # `PROD` is `prod`
        profile = self.policy.profile(profile_name) if profile_name else None
        if not profile_name:
            errors[ids.PROFILE] = "Choose a profile."
        elif profile is None:
            errors[ids.PROFILE] = f"There is no profile called {profile_name!r}."
        elif not (
            invoker.may_invoke(request.known, profile_name)
            if request.known
            else self.may_invoke(request.user_id, profile)
        ):
            errors[ids.PROFILE] = f"You are not allowed to invoke break-glass on {profile_name!r}."

        reason = (request.reason or "").strip().lower()
        if reason not in ReasonCode.__members__.values():
            choices = ", ".join(r.value for r in ReasonCode)
            errors[ids.REASON] = (
                f"Choose a reason: {choices}." if not reason else f"Unknown reason {reason!r}: use {choices}."
            )

        justification = request.justification or ""
        try:
            justification = validate_justification(justification)
        except ValueError as exc:
            errors[ids.JUSTIFICATION] = _sentence(exc)

        duration: timedelta | None = None
        raw = (request.duration or "").strip()
        try:
            duration = timedelta(seconds=int(raw)) if raw.isdigit() else parse_duration(raw)
        except (ValueError, OverflowError) as exc:
            errors[ids.DURATION] = "Choose a duration." if not raw else f"{exc}."
        if duration is not None and profile is not None and duration not in profile.durations:
            allowed = ", ".join(format_duration(d) for d in profile.durations)
            errors[ids.DURATION] = (
                f"{format_duration(duration)} is not offered for {profile_name!r}: choose {allowed}."
            )

        incident: str | None = None
        try:
            incident = validate_incident(request.incident)
        except ValueError as exc:
            errors[ids.INCIDENT] = _sentence(exc)
        if (
            incident is None
            and ids.INCIDENT not in errors
            and profile is not None
            and profile.require_incident
        ):
            errors[ids.INCIDENT] = f"Profile {profile_name!r} requires an incident ticket id or URL."
        link = None
        if incident is not None and not errors:  # looked up only once everything else is right
            if request.known is not None and self.incidents.enabled:
                raise invoker.Unresolved("incident")  # the tool is asked after the ack
            link = self.incidents.link(incident)  # IncidentRefused: unknown, resolved, unverifiable
        if errors:
            raise ValidationFailed(errors)
        assert profile is not None
        assert duration is not None
        known = request.known
        identity = invoker.identity(known) if known else self.identity(request.user_id)
        oncall = (
            invoker.oncall(self, known, profile_name, profile)
            if known
            else self.incidents.check_oncall(request.user_id, profile_name, profile.oncall)
        )
        event = BreakGlassEvent.new(
            invoker=identity,
            slack_user_id=request.user_id,
            profile=profile_name,
            reason_code=reason,
            justification=justification,
            duration=duration,
            incident=incident,
            now=now,
            request_id=request.request_id,
            audit_channel=self.policy.audit_channel_for(profile_name, self.default_audit_channel),
            incident_link=link,
            oncall=oncall,
        )
        return profile, event

    def invoke(self, request: InvokeRequest) -> BreakGlassEvent:
        """`_invoke`; a refusal (not bad input) is also handed to `on_refused` (the audit feed's notice)."""
        try:
            return self._invoke(request)
        except (ValidationFailed, NotAuthorized, RateLimited, AwsAccessRefused) as exc:
            kind = self.refusal_kind(request, exc)
            if kind is not None and self.on_refused is not None:
                self.on_refused(request, kind, exc.message)
            raise

    def refusal_kind(self, request: InvokeRequest, exc: Exception) -> RefusalKind | None:
        """What refused a well-formed invocation (None: bad input, or a repeated request)."""
        if isinstance(exc, AlreadyActive):
            return "stacking"
        if isinstance(exc, RateLimited):
            return "limits"
        if isinstance(exc, NotAuthorized):
            return "authorization"
        if isinstance(exc, AwsAccessRefused):
            return "aws_access"
        if isinstance(exc, AlreadySubmitted) or not isinstance(exc, ValidationFailed):
            return None
        name = self.policy.profile_name((request.profile or "").strip()) or ""
        profile = self.policy.profile(name) if name else None
        if (
            ids.PROFILE in exc.errors
            and profile is not None
            and not self.may_invoke(request.user_id, profile)
        ):
            return "authorization"
        try:
            typed = validate_incident(request.incident)
        except ValueError:
            typed = None
        if ids.INCIDENT in exc.errors and typed is not None:
            return "incident"  # the incident tool refused it (unknown, resolved, unverifiable)
        return None

    def _invoke(self, request: InvokeRequest) -> BreakGlassEvent:
        """Validate, then store atomically: the store decides the rate limits, escalation and stacking
        in the same write as the create.

        The announcements (audit message, DM, escalation) are owed in the outbox of the stored event.
        """
        profile, event = self.validate(request)
        owed = [OutboxKind.AUDIT_POST, OutboxKind.DM_INVOKED, *incident_note(event)]
        event = event.updated(timed_by=self.timed_by)
        access = self._access_for(request.user_id, profile, request.known)
        if access is not None:
            # right after the audit message: the access itself comes before the other announcements
            event = event.updated(access=access)
            owed.insert(1, OutboxKind.ACCESS_GRANT)
        event = event.with_outbox(*owed, version=event.version)
        if self.prepare_new is not None:
            event = self.prepare_new(event)
        try:
            stored = self.store.create(
                event,
                limits=self.limits(),
                escalate=lambda ev: ev.updated(escalated=True).with_outbox(
                    OutboxKind.ESCALATION, version=ev.version
                ),
            )
        except StackedAccess as exc:
            existing = exc.existing
            raise AlreadyActive(
                {
                    ids.PROFILE: f"You already have active break-glass event {existing.id} on "
                    f"{existing.profile!r} until {_plain_until(existing.expires_at, self.clock.now())}. "
                    "Close it first, or keep using it."
                }
            ) from exc
        except LimitReached as exc:
            raise self._rate_limited(exc, event.created_at) from exc
        except DuplicateRequest as exc:
            log.warning(
                "refused a repeated request: it already created an event",
                extra={
                    "event_id": exc.event_id,
                    "slack_user": request.user_id,
                    "action": "invoke",
                    "outcome": "duplicate",
                    "request_id": exc.request_id,
                },
            )
            raise AlreadySubmitted(
                {
                    ids.PROFILE: f"This request was already submitted and recorded as event {exc.event_id}. "
                    "Run /breakglass again to request new access."
                }
            ) from exc
        log.info(
            "break-glass invoked",
            extra={
                "event_id": stored.id,
                "slack_user": stored.slack_user_id,
                "profile": stored.profile,
                "action": "invoke",
                "outcome": "escalated" if stored.escalated else "ok",
                "request_id": stored.request_id,
            },
        )
        metrics.invoked(stored.profile)
        return stored

    def limits(self) -> Limits:
        """The policy's rate limits, as the store enforces them."""
        limits = self.policy.rate_limits
        return Limits(
            window=limits.window,
            per_user=limits.per_user,
            per_profile=limits.per_profile,
            cooldown=limits.cooldown,
            escalate_after=limits.escalate_after,
        )

    def _rate_limited(
        self, exc: LimitReached, now: datetime, *, extending: BreakGlassEvent | None = None
    ) -> RateLimited:
        """What the user is told when a limit refuses an invocation, or the extension of `extending`
        (extensions count toward `per_user` and `per_profile` like invocations)."""
        retry = exc.retry_at
        window = format_duration(self.policy.rate_limits.window)
        if extending is not None:
            whose = "per person" if exc.kind == "per_user" else f"on {exc.profile!r}"
            return RateLimited(
                f"Rate limit: at most {exc.limit} break-glass invocations and extensions {whose} per "
                f"{window}, so event {extending.id} cannot be extended now (nothing was changed). It may be "
                f"extended again at {_plain_until(retry, now)}.",
                retry,
            )
        if exc.kind == "cooldown":
            ended = exc.ended_at or retry
            return RateLimited(
                f"Cooldown: your last event on {exc.profile!r} ended {_fmt_utc(ended)}; you may invoke "
                f"it again at {_plain_until(retry, now)}.",
                retry,
            )
        if exc.kind == "per_user":
            rule = f"at most {exc.limit} break-glass events per person per {window}"
            phrase = "You may invoke again"
        else:
            rule = f"at most {exc.limit} break-glass events on {exc.profile!r} per {window}"
            phrase = "It may be invoked again"
        return RateLimited(
            f"Rate limit: {rule} (extensions count too). {phrase} at {_plain_until(retry, now)}.", retry
        )

    # -- close --------------------------------------------------------------------------------

    def get(self, event_id: str) -> BreakGlassEvent:
        event_id = event_id.strip().lower()
        if not is_event_id(event_id):
            raise ValidationFailed(
                {"event": f"{event_id!r} is not an event id (16 hex characters, e.g. 3f9a0c1b2d4e5f60)."}
            )
        return self.store.get(event_id)

    def check_close(self, user_id: str, event_id: str) -> BreakGlassEvent:
        event = self.get(event_id)
        if not self.may_close(user_id, event):
            raise NotAuthorized(
                f"Only the invoker, an incident commander or security can close event {event.id}."
            )
        return event

    def close(self, event_id: str, *, by: str, reason: str, operator: bool = False) -> CloseResult:
        """Close an active event. `operator`: `by` is an operator of `breakglass-admin` (`operator:NAME`),
        authorized by their access to the store, not by Slack roles; every other rule is the same."""
        try:  # the form's own text first: a form decided after its ack (bot.slack.roles_meta) keeps it
            reason = validate_free_text(reason, what="close reason", max_length=MAX_CLOSE_REASON)
        except ValueError as exc:
            raise ValidationFailed({ids.CLOSE_REASON: _sentence(exc)}) from exc
        event = self.get(event_id) if operator else self.check_close(by, event_id)
        if event.status.ended:
            return CloseResult(event, closed_now=False)
        now = self.clock.now()
        if event.is_due(now):  # the access already ran out (the sweep is late): it expired, not closed
            return CloseResult(self.expire(event.id) or self.store.get(event.id), closed_now=False)
        event = self._with_audit_channel(event)
        owed = self._ending_outbox(
            event, OutboxKind.CLOSE_THREAD, OutboxKind.CLOSE_DM if by != event.slack_user_id else None, now
        )
        try:
            closed = self.store.close(event.id, by=by, reason=reason, now=now, outbox=owed, known=event)
        except InvalidTransition as exc:  # lost a race with another closer or the expiry
            return CloseResult(exc.event, closed_now=False)
        log.info(
            "break-glass closed",
            extra={
                "event_id": closed.id,
                "slack_user": by,
                "profile": closed.profile,
                "action": "close",
                "outcome": "ok",
            },
        )
        return CloseResult(closed, closed_now=True)

    # -- extend -------------------------------------------------------------------------------

    def extend_durations(self, event: BreakGlassEvent) -> list[timedelta]:
        """The profile's durations that still fit the event's `max_total` and `extensions` (none: it cannot
        be extended any more)."""
        profile = self.policy.profile(event.profile)
        if profile is None or not event.is_effective(self.clock.now()) or event.foreign:
            return []
        if profile.extensions is not None and len(event.extensions) >= profile.extensions:
            return []
        return [d for d in profile.durations if event.lifetime + d <= profile.lifetime_cap]

    def check_extend(self, user_id: str, event_id: str) -> BreakGlassEvent:
        """Who may extend: as for close (the holder, incident commanders, security)."""
        event = self.get(event_id)
        if not self.may_close(user_id, event):
            raise NotAuthorized(
                f"Only the invoker, an incident commander or security can extend event {event.id}."
            )
        return event

    def extend(
        self,
        event_id: str,
        *,
        by: str,
        duration: str,
        reason: str,
        seen: int | None = None,
        operator: bool = False,
        request_id: str | None = None,
    ) -> BreakGlassEvent:
        """A new expiry for an effective event, atomically (the store's conditional write). `seen`: how
        many extensions the requester saw (a modal's), so two racing extends never both apply; default:
        as read here. `operator` as for `close`. Raises ValidationFailed saying why, nothing changed.
        `request_id` (the Slack request asking): when it already extended the event (a retried Lambda lazy
        run), the event as stored is returned and nothing changes."""
        event = self.get(event_id) if operator else self.check_extend(by, event_id)
        if request_id is not None and any(x.request_id == request_id for x in event.extensions):
            return event  # this request's extension, already stored
        profile = self.policy.profile(event.profile)
        errors: dict[str, str] = {}
        raw = (duration or "").strip()
        length: timedelta | None = None
        try:
            length = timedelta(seconds=int(raw)) if raw.isdigit() else parse_duration(raw)
        except (ValueError, OverflowError) as exc:
            errors[ids.EXTEND_DURATION] = "Choose how much longer." if not raw else f"{exc}."
        offered = self.extend_durations(event)
        if length is not None and profile is not None and length not in offered:
            errors[ids.EXTEND_DURATION] = self.why_not_extend(event, length, offered)
        try:
            reason = validate_justification(reason, what="extension reason")
        except ValueError as exc:
            errors[ids.EXTEND_REASON] = _sentence(exc)
        if profile is None:
            errors[ids.EXTEND_DURATION] = f"Profile {event.profile!r} is no longer in the policy."
        if errors:
            raise ValidationFailed(errors)
        assert length is not None and profile is not None
        try:
            extended = self.store.extend(
                event.id,
                by=by,
                duration=length,
                reason=reason,
                now=self.clock.now(),
                seen=len(event.extensions) if seen is None else seen,
                max_total=profile.lifetime_cap,
                max_extensions=profile.extensions,
                # an extension counts toward the rate limits and escalation like an invocation
                limits=self.limits(),
                escalate=lambda ev: escalate_extension(ev).with_outbox(OutboxKind.ESCALATION),
                outbox=extension_outbox(event) + incident_note(event),
                known=event,
                request_id=request_id,
            )
        except DuplicateRequest:  # the same request's other attempt extended it meanwhile
            return self.store.get(event.id)
        except InvalidTransition as exc:  # ended, ran out, or another extend won the race
            raise ValidationFailed(
                {ids.EXTEND_DURATION: f"Cannot extend event {event.id}: {exc.reason}."}
            ) from exc
        except LimitReached as exc:
            raise self._rate_limited(exc, self.clock.now(), extending=event) from exc
        log.info(
            "break-glass extended",
            extra={
                "event_id": extended.id,
                "slack_user": by,
                "profile": extended.profile,
                "action": "extend",
                "outcome": "ok",
            },
        )
        return extended

    def why_not_extend(self, event: BreakGlassEvent, length: timedelta, offered: list[timedelta]) -> str:
        if event.status.ended:
            return f"Event {event.id} already {event.status.value}: nothing to extend."
        if not event.is_effective(self.clock.now()):
            return f"Event {event.id} has already run out: invoke again."
        if not offered:
            profile = self.policy.profile(event.profile)
            if profile is not None and profile.extensions == 0:
                return f"Profile {event.profile!r} cannot be extended: invoke again when it ends."
            if (
                profile is not None
                and profile.extensions is not None
                and len(event.extensions) >= profile.extensions
            ):
                return f"Event {event.id} was already extended {len(event.extensions)} time(s), the most {event.profile!r} allows."
            cap = format_duration(profile.lifetime_cap) if profile else "its cap"
            return f"Event {event.id} already lasts as long as {event.profile!r} allows ({cap} in all)."
        choices = ", ".join(format_duration(d) for d in offered)
        return f"{format_duration(length)} is not offered for extending event {event.id}: choose {choices}."

    # -- scheduler work -----------------------------------------------------------------------

    def warn(self, event_id: str) -> BreakGlassEvent | None:
        """Record the expiry warning once (conditional write); None when not due or already done."""
        now = self.clock.now()
        won: list[BreakGlassEvent] = []

        def change(ev: BreakGlassEvent) -> BreakGlassEvent | None:
            if ev.foreign:  # Sentinel's events: nobody in Slack to warn; they are expired and announced
                return None
            if ev.warned_at is not None or not ev.is_effective(now) or now < self.warn_at(ev):
                return None
            won.append(ev)
            return ev.updated(warned_at=now).with_outbox(OutboxKind.WARN_THREAD, OutboxKind.WARN_DM)

        result = mutate(self.store, event_id, change)
        if not won or result.warned_at != now:
            return None
        log.info("expiry warning", extra={"event_id": event_id, "action": "warn", "outcome": "ok"})
        return result

    def expire(self, event_id: str) -> BreakGlassEvent | None:
        """Expire once (conditional write); None when not due or already ended (another replica won)."""
        try:
            event = self._with_audit_channel(self.store.get(event_id))
            now = self.clock.now()
            expired = self.store.expire(
                event_id,
                now=now,
                outbox=self._ending_outbox(event, OutboxKind.EXPIRE_THREAD, OutboxKind.EXPIRE_DM, now),
                known=event,
            )
        except (InvalidTransition, EventNotFound):
            return None
        log.info("break-glass expired", extra={"event_id": event_id, "action": "expire", "outcome": "ok"})
        return expired

    def _access_for(
        self, user_id: str, profile: ProfilePolicy, known: invoker.KnownInvoker | None = None
    ) -> EventAccess | None:
        """The AWS access an invocation of `profile` is to get: the person's identity-store user, found by
        the email of their Slack profile. Raises AwsAccessRefused (nothing is stored) when there is none."""
        if self.access.name == "none" or profile.aws is None:
            return None
        if known is not None:
            email, aws_user = invoker.aws_user(known)
            return self._event_access(profile, email, aws_user)
        user = self.directory.user(user_id)
        email = str((user.get("profile") or {}).get("email") or "")
        if not email:
            raise AwsAccessRefused(invoker.NO_EMAIL)
        try:
            aws_user = self.access.resolve_user(email)
        except PermanentAccessError as exc:  # UserNotInIdentityStore says exactly that
            raise AwsAccessRefused(exc.message) from exc
        except TransientAccessError as exc:
            raise AwsAccessRefused(
                f"Could not look you up in the AWS identity store ({exc.message}), so nothing was recorded "
                "and no access was granted. Try again in a moment."
            ) from exc
        return self._event_access(profile, email, aws_user)

    def _event_access(self, profile: ProfilePolicy, email: str, aws_user: str | None) -> EventAccess | None:
        if aws_user is None or profile.aws is None:
            return None
        return EventAccess(
            provider=self.access.name,
            account=profile.aws.account,
            permission_set=profile.aws.permission_set,
            user_id=aws_user,
            email=email,
        )

    def _ending_outbox(
        self, event: BreakGlassEvent, thread: OutboxKind, dm: OutboxKind | None, now: datetime
    ) -> list[OutboxKind | Deferred]:
        """What a close or expiry at `now` owes: the AWS revoke first (when access was granted), then the
        announcements. A foreign (Sentinel) event has no Slack user to mention or message and no audit
        message yet: it owes one audit message showing how it ended. Every event of a profile with an
        activity role owes its activity digest, after CloudTrail's delay (bot.evidence)."""
        revoke: list[OutboxKind | Deferred] = [OutboxKind.ACCESS_REVOKE] if event.access is not None else []
        return revoke + self._ending_announcements(event, thread, dm, now) + incident_note(event)

    def _ending_announcements(
        self, event: BreakGlassEvent, thread: OutboxKind, dm: OutboxKind | None, now: datetime
    ) -> list[OutboxKind | Deferred]:
        from bot import evidence  # CloudTrail evidence: imported when an event ends, not at start-up

        digest = evidence.ending_outbox(self.policy, event, now)
        if event.foreign and not event.audit_ts:
            return [OutboxKind.AUDIT_POST, *digest]
        if event.foreign:
            return [OutboxKind.AUDIT_UPDATE, thread, *digest]
        return [OutboxKind.AUDIT_UPDATE, thread] + ([dm] if dm else []) + [OutboxKind.DM_ENDED] + digest

    def _with_audit_channel(self, event: BreakGlassEvent) -> BreakGlassEvent:
        """A foreign event gets the audit channel of its profile before its first announcement."""
        if not event.foreign or event.audit_channel:
            return event
        channel = self.policy.audit_channel_for(event.profile, self.default_audit_channel)
        if channel is None:
            return event
        return mutate(
            self.store,
            event.id,
            lambda ev: None if ev.audit_channel or ev.status.ended else ev.updated(audit_channel=channel),
        )

    # -- review -------------------------------------------------------------------------------

    def check_review(self, user_id: str, event_id: str) -> BreakGlassEvent:
        event = self.get(event_id)
        if not self.roles(user_id).security:
            raise NotAuthorized("Only security can mark break-glass events as reviewed.")
        if self._invoked_by(user_id, event):
            raise NotAuthorized(
                f"You invoked event {event.id}, so you cannot review it (separation of duties). "
                + self._other_reviewers(event)
            )
        if event.status is Status.ACTIVE:
            raise ValidationFailed(
                {ids.REVIEW_NOTES: f"Event {event.id} is still active: review it after it ends."}
            )
        return event

    def review(self, event_id: str, *, by: str, notes: str) -> BreakGlassEvent:
        try:  # the form's own text first (as for close)
            validate_free_text(notes, what="review notes", max_length=MAX_REVIEW_NOTES)
        except ValueError as exc:
            raise ValidationFailed({ids.REVIEW_NOTES: _sentence(exc)}) from exc
        event = self.check_review(by, event_id)
        now = self.clock.now()

        from bot import evidence

        def change(ev: BreakGlassEvent) -> BreakGlassEvent:
            ev = ev.review(by=by, notes=notes, now=now).with_outbox(
                OutboxKind.AUDIT_UPDATE, OutboxKind.REVIEW_THREAD
            )
            return evidence.regather_for_review(self.policy, ev, now) or ev  # the thread gets the newer one

        reviewed = mutate(self.store, event.id, change)
        log.info(
            "break-glass reviewed", extra={"event_id": reviewed.id, "slack_user": by, "action": "review"}
        )
        return reviewed

    def request_evidence(self, event_id: str) -> BreakGlassEvent | None:
        """The review form was opened: owe a gather of the activity digest now if the stored one needs it
        (bot.evidence.regather_for_review). Returns the event as stored when something became owed."""
        from bot import evidence

        now = self.clock.now()
        owed: list[BreakGlassEvent] = []

        def change(ev: BreakGlassEvent) -> BreakGlassEvent | None:
            new = evidence.regather_for_review(self.policy, ev, now)
            owed[:] = [new] if new is not None else []
            return new

        result = mutate(self.store, event_id, change)
        return result if owed else None

    def _invoked_by(self, user_id: str, event: BreakGlassEvent) -> bool:
        """Is `user_id` the invoker of `event`: the same Slack user, or the same mapped identity?"""
        if user_id == event.slack_user_id:
            return True
        if self.policy.identity == "slack_id":
            return False
        return self.identity(user_id) == event.invoker

    def _other_reviewers(self, event: BreakGlassEvent) -> str:
        """Who else may review `event`: the security members other than its invoker, by name."""
        others = sorted(self.directory.members(self.policy.security) - {event.slack_user_id})
        if not others:
            return (
                "Nobody else is in security: add a second member to the policy's `security` "
                f"({', '.join(self.policy.security)})."
            )
        names = []
        for member in others[:10]:
            try:
                user = self.directory.user(member)
                names.append(f"{user.get('real_name') or user.get('name') or member} ({member})")
            except DirectoryUnavailable:
                names.append(member)
        more = f" and {len(others) - 10} more" if len(others) > 10 else ""
        return f"Ask another security member to review it: {', '.join(names)}{more}."

    # -- queries ------------------------------------------------------------------------------

    def active(self) -> list[BreakGlassEvent]:
        """Every active event, including ones past their expiry not yet swept (the scheduler's work list)."""
        return self.store.list_active()

    def all_effective(self) -> list[BreakGlassEvent]:
        """Every event granting access now."""
        now = self.clock.now()
        return [e for e in self.store.list_active() if e.is_effective(now)]

    def events_of(self, invoker: str, *, limit: int, cursor: str | None = None) -> Page:
        """One invoker's events, newest first."""
        return self.store.list_by_invoker(invoker, limit=limit, cursor=cursor)

    def active_for(self, user_id: str) -> list[BreakGlassEvent]:
        """Active events the user should see: their own, or all for incident commanders and security."""
        active = self.all_effective()
        if self.roles(user_id).can_see_all:
            return active
        return [e for e in active if e.slack_user_id == user_id]

    def status(self, user_id: str, event_id: str) -> BreakGlassEvent:
        """One event, for those who may act on it: its invoker, incident commanders and security.
        (Justifications can be sensitive; everyone else sees events in the audit channel, if a member.)"""
        event = self.get(event_id)
        if not self.may_close(user_id, event):
            raise NotAuthorized(
                f"Only the invoker, incident commanders and security can see event {event.id}."
            )
        return event

    def history(self, user_id: str, profile: str | None = None, limit: int = 10) -> list[BreakGlassEvent]:
        """Recent events, newest first: incident commanders and security see everyone's (on a profile, or
        on all); everyone else sees only their own."""
        if profile:
            profile = self.policy.profile_name(profile) or profile
        if profile and self.policy.profile(profile) is None:
            raise ValidationFailed({"profile": f"There is no profile called {profile!r}."})
        if self.roles(user_id).can_see_all:
            if profile:
                return self.store.list_by_profile(profile, limit=limit).items
            recent = [e for status in Status for e in self.store.list_by_status(status, limit=limit).items]
            return sorted(recent, key=lambda e: (e.created_at, e.id), reverse=True)[:limit]
        invoker = self.identity(user_id)
        if not profile:
            return self.store.list_by_invoker(invoker, limit=limit).items
        own: list[BreakGlassEvent] = []
        cursor: str | None = None
        for _ in range(5):  # the user's 250 newest events at most
            page = self.store.list_by_invoker(invoker, limit=50, cursor=cursor)
            own += [e for e in page.items if e.profile == profile]
            cursor = page.cursor
            if len(own) >= limit or cursor is None:
                break
        return own[:limit]

    def unreviewed(self, limit: int = 25) -> list[BreakGlassEvent]:
        return self.store.list_unreviewed(limit=limit).items
