"""The break-glass event, its reason codes and its state machine (active -> closed | expired)."""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from store.errors import InvalidTransition
from store.timeutil import ensure_utc

MIN_JUSTIFICATION = 20
MAX_JUSTIFICATION = 1000
MAX_INCIDENT = 200
MAX_CLOSE_REASON = 500
MAX_REVIEW_NOTES = 2000
# The activity digest (bot.access.activity) is stored as its JSON text, bounded there to 16 KiB; this is
# the store's own bound (DynamoDB items are limited to 400 KB).
MAX_ACTIVITY = 32 * 1024
MAX_DURATION = timedelta(hours=4)
# The longest lifetime an extended event may reach: the longest Identity Center session (12 h).
MAX_TOTAL = timedelta(hours=12)
MAX_EXTENSION_REASON = MAX_JUSTIFICATION
SENTINEL = "sentinel"
EVENT_ID_RE = re.compile(r"^[0-9a-f]{16}$")


class ReasonCode(StrEnum):
    INCIDENT = "incident"
    MAINTENANCE = "maintenance"
    SECURITY = "security"
    RECOVERY = "recovery"
    OTHER = "other"


class OutboxKind(StrEnum):
    """A step an event owes after a stored change (its outbox). The delivery engine (bot/delivery/)
    registers one handler per kind; adding a kind is one member here plus one handler there."""

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
    ACTIVITY_DIGEST = "activity_digest"
    AUDIT_FALLBACK = "audit_fallback"
    # AWS access (bot/access): the grant and the revoke themselves, then their receipts in the thread and DM
    ACCESS_GRANT = "access_grant"
    ACCESS_REVOKE = "access_revoke"
    GRANT_RECEIPT_THREAD = "grant_receipt_thread"
    GRANT_RECEIPT_DM = "grant_receipt_dm"
    REVOKE_RECEIPT_THREAD = "revoke_receipt_thread"
    # Incident tools (bot/incidents): a note on the linked incident's timeline; the holder's DM when the
    # incident resolved and the profile says `close_on_resolve: warn`
    INCIDENT_NOTE = "incident_note"
    INCIDENT_RESOLVED_DM = "incident_resolved_dm"
    # An extension (bot/delivery/handlers/extend.py): its thread reply and the invoker's DM (plus an AUDIT_UPDATE)
    EXTEND_THREAD = "extend_thread"
    EXTEND_DM = "extend_dm"
    # An extension of an event whose expiry warning DM was sent (or is being sent): that DM updated to say
    # it was extended and when it now expires (bot/delivery/handlers/warn_refresh.py; store/refresh.py)
    WARN_DM_REFRESH = "warn_dm_refresh"
    # The end of an event (closed or expired, any way): the invoker's "access is active" DM is updated to
    # say so, without its buttons (bot/delivery/handlers/announcements.py)
    DM_ENDED = "dm_ended"
    # The audit feed outside Slack (bot/audit_feed/sinks.py): the event's OCSF records not yet in every sink
    AUDIT_FEED = "audit_feed"
    # Someone other than the bot edited the event's root audit message (bot/slack/audit_edits.py): a
    # thread reply saying so (an AUDIT_UPDATE owed with it restores the message)
    AUDIT_EDITED_THREAD = "audit_edited_thread"
    # Lambda's exact-time warning and expiry: the event's one-time EventBridge Scheduler schedules made to
    # match the event as stored (created, moved, deleted; bot/schedules.py)
    EXPIRY_SCHEDULES = "expiry_schedules"


class OutboxEntry(BaseModel):
    """One owed step: its kind and the event version it must show (the version of the write that owed it).

    Two changes owing the same kind are two entries, so a later change never merges away a pending one,
    and recording a sent entry removes exactly that entry."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    kind: OutboxKind
    version: int = Field(ge=0)
    # Not to be sent before this time (e.g. the activity digest waits for CloudTrail's delivery delay);
    # None: due at once. The stores index an event by the earliest time one of its entries is due.
    not_before: datetime | None = None

    @field_validator("not_before")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else ensure_utc(value)

    def due(self, now: datetime) -> bool:
        return self.not_before is None or self.not_before <= now

    @model_validator(mode="before")
    @classmethod
    def _from_stored(cls, value: Any) -> Any:
        # Outboxes stored before entries carried a version were plain kind strings: version 0 (any).
        if isinstance(value, str):
            return {"kind": value, "version": 0}
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return {"kind": value[0], "version": value[1]}
        return value


class Deferred(NamedTuple):
    """An outbox step owed not before `not_before` (for `BreakGlassEvent.with_outbox` and the stores'
    `close`/`expire` outbox arguments)."""

    kind: OutboxKind
    not_before: datetime


class Status(StrEnum):
    ACTIVE = "active"
    CLOSED = "closed"
    EXPIRED = "expired"

    @property
    def ended(self) -> bool:
        return self is not Status.ACTIVE


def new_event_id() -> str:
    """16 lowercase hex characters (64 bits) from the OS CSPRNG."""
    return secrets.token_hex(8)


def is_event_id(value: str) -> bool:
    return bool(EVENT_ID_RE.match(value))


# Characters that are refused in free text: C0/C1 controls (except tab and newlines), the
# unassigned/surrogate categories, and the bidirectional embedding, override and isolate controls
# (U+202A-U+202E, U+2066-U+2069: "Trojan Source" reordering, which makes an audit message read
# differently from what was typed). The implicit direction marks U+200E/U+200F (LRM/RLM) and U+061C
# are allowed: they reorder nothing beyond the next strong character and right-to-left writers need
# them. Everything else (zero-width joiners, emoji, mrkdwn punctuation) is stored exactly as typed
# and escaped wherever it is shown.
_ALLOWED_CONTROLS = {"\t", "\n", "\r"}
BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def _check_text(value: str, *, what: str) -> str:
    for ch in value:
        if ch in BIDI_CONTROLS:
            raise ValueError(
                f"{what} contains a bidirectional text control (U+{ord(ch):04X}), which can make text "
                "display in a different order than it was typed; remove it"
            )
        category = unicodedata.category(ch)
        if (category == "Cc" and ch not in _ALLOWED_CONTROLS) or category in ("Cs", "Cn"):
            raise ValueError(f"{what} contains a control or unassigned character (U+{ord(ch):04X})")
    return value


def validate_justification(value: str, *, what: str = "justification") -> str:
    text = _check_text(value.strip(), what=what)
    if len(text) < MIN_JUSTIFICATION:
        if not text:
            raise ValueError(f"{what} is required ({MIN_JUSTIFICATION}-{MAX_JUSTIFICATION} characters)")
        raise ValueError(f"{what} is too short: {len(text)} characters, at least {MIN_JUSTIFICATION} needed")
    if len(text) > MAX_JUSTIFICATION:
        raise ValueError(f"{what} is too long: {len(text)} characters, at most {MAX_JUSTIFICATION}")
    return text


def validate_extension_reason(value: str) -> str:
    """An extension's reason follows the justification's rules (length, no bidi or control characters)."""
    return validate_justification(value, what="extension reason")


def validate_incident(value: str | None) -> str | None:
    if value is None:
        return None
    text = _check_text(value.strip(), what="incident")
    if not text:
        return None
    if len(text) > MAX_INCIDENT:
        raise ValueError(f"incident is too long: {len(text)} characters, at most {MAX_INCIDENT}")
    if any(ch in text for ch in "\r\n"):
        raise ValueError("incident must be a single line (a ticket id or URL)")
    return text


def validate_free_text(value: str, *, what: str, max_length: int) -> str:
    text = _check_text(value.strip(), what=what)
    if not text:
        raise ValueError(f"{what} is required")
    if len(text) > max_length:
        raise ValueError(f"{what} is too long: {len(text)} characters, at most {max_length}")
    return text


def validate_duration(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("duration must be positive")
    if value > MAX_DURATION:
        raise ValueError("duration exceeds the 4 hour hard cap")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(ensure_utc)]
_NonEmpty = Field(min_length=1, max_length=256)


class EventAccess(BaseModel):
    """What the access provider (bot/access) grants for an event and what it did, kept with the event so
    that the owed grant and revoke steps (bot/delivery/) can run in any process, after any restart.

    ``pre_existing`` is None until the grant step has looked at AWS, before it creates anything: True means
    the assignment was already there (someone's standing access) and the revoke must leave it alone. A revoke
    never removes an assignment whose grant never looked (``pre_existing`` None): breakglass made nothing."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    provider: str = Field(min_length=1, max_length=64)
    account: str = Field(min_length=1, max_length=64)
    permission_set: str = Field(min_length=1, max_length=256)
    user_id: str = Field(min_length=1, max_length=256)
    """The identity-store user id (found by the Slack profile's email before the event was stored)."""
    email: str | None = Field(default=None, max_length=320)
    """The email the identity-store user was found by when the event was invoked: its role session name,
    which the activity digest looks for (never the Slack profile's email at gather time)."""
    permission_set_name: str | None = Field(default=None, max_length=64)
    """The permission set's name when granted: the digest counts only its ``AWSReservedSSO_<name>_`` role."""
    pre_existing: bool | None = None
    grant_requested_at: UtcDatetime | None = None
    granted_at: UtcDatetime | None = None
    revoke_requested_at: UtcDatetime | None = None
    revoked_at: UtcDatetime | None = None
    """When the revoke completed (the assignment deleted, or kept for a stated reason, and sessions denied)."""
    assignment_deleted_at: UtcDatetime | None = None
    sessions_issued_before: UtcDatetime | None = None
    sessions_denied_at: UtcDatetime | None = None
    kept: str | None = Field(default=None, max_length=64)
    """Why the revoke left the assignment in place ("pre-existing", "held-by-other-events", "never-granted")."""
    failure: str | None = Field(default=None, max_length=2000)
    """The current failure episode's AWS error (announced once when it starts); None when the last try worked."""
    failures: int = Field(default=0, ge=0)
    """Failed attempts in the current episode."""
    next_alarm_at: UtcDatetime | None = None
    """A failing revoke alarms security again at this time (growing intervals)."""
    alarms: int = Field(default=0, ge=0)


class IncidentLink(BaseModel):
    """The incident of the incident tool (bot/incidents) an event is linked to, as looked up at invoke."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    provider: str = Field(min_length=1, max_length=32)
    id: str = Field(min_length=1, max_length=128)
    reference: str = Field(min_length=1, max_length=128)
    title: str = Field(default="", max_length=256)
    url: str | None = Field(default=None, max_length=512)
    verified: bool = True
    """False: the tool was unreachable at invoke and the policy allowed it (`on_unreachable: allow`)."""
    resolved_at: UtcDatetime | None = None
    """When breakglass learned the incident resolved (webhook or poll)."""


class Extension(BaseModel):
    """One extension of an event: a new expiry, not a new event (`BreakGlassEvent.extend`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    at: UtcDatetime
    by: str = _NonEmpty
    duration: timedelta
    reason: Annotated[str, AfterValidator(validate_extension_reason)]
    escalated: bool = False
    # The expiry warning of the stretch this extension ended (an extension owes the warning again, so the
    # event's `warned_at` is cleared): kept so the audit feed's record of that warning stays derivable.
    warned_at: UtcDatetime | None = None
    # The request that asked for it (a slash command's trigger id, a form submission's view id): the same
    # request never extends twice (a retried Lambda lazy run, a replay; `Store.extend`, DuplicateRequest).
    request_id: str | None = None

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: timedelta) -> timedelta:
        return validate_duration(value)


class SentDM(BaseModel):
    """A DM the bot sent for an event besides the invoker's first one (`dm_channel`/`dm_ts`): the expiry
    warning, an extension's, an incident's resolution. Recorded when sent, updated when the event ends (its
    buttons removed). `kind` is the outbox kind that sent it (text, so a newer kind still loads)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    kind: str = Field(min_length=1, max_length=64)
    channel: str = Field(min_length=1, max_length=64)
    ts: str = Field(min_length=1, max_length=64)


class BreakGlassEvent(BaseModel):
    """One break-glass invocation and its whole life; immutable (transitions return a new copy)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, defer_build=True)

    id: str = Field(default_factory=new_event_id, pattern=EVENT_ID_RE.pattern)
    # Who wrote it: None for this bot; SENTINEL for a break-glass event that Sentinel wrote to a shared
    # table. A foreign event has no Slack user, and its justification and duration are shown as given
    # (Sentinel's own rules admitted them); everything else (state machine, times) holds as for ours.
    source: str | None = None
    invoker: str = _NonEmpty
    slack_user_id: str | None = Field(default=None, min_length=1, max_length=256)
    profile: str = _NonEmpty
    reason_code: ReasonCode
    justification: str
    incident: Annotated[str | None, AfterValidator(validate_incident)] = None
    duration: timedelta
    status: Status = Status.ACTIVE
    created_at: UtcDatetime
    updated_at: UtcDatetime
    expires_at: UtcDatetime
    ended_at: UtcDatetime | None = None
    closed_by: str | None = None
    closed_reason: str | None = None
    request_id: str | None = None

    # Slack audit trail: where the audit message lives, and the announcements still owed (the outbox).
    audit_channel: str | None = None
    audit_ts: str | None = None
    # Where the invoker's "access is active" DM lives (recorded when it is sent), updated when the event ends.
    dm_channel: str | None = None
    dm_ts: str | None = None
    # Every other DM sent for it that has buttons (warnings, extensions), oldest first: updated at the end too.
    dms: tuple[SentDM, ...] = ()
    outbox: tuple[OutboxEntry, ...] = ()
    outbox_attempts: int = Field(default=0, ge=0)
    outbox_next_at: UtcDatetime | None = None
    # Is outbox_next_at a delivery lease (True) or a backoff after a failed delivery (False)? A step owed
    # during a backoff is due at once (a broken audit channel's recheck never holds back a new DM).
    outbox_leased: bool = True
    # The audit channel failed permanently (bot/delivery/engine.py): the highest outbox version of audit-channel
    # steps already announced another way (fallback channel, security DMs), and who has that fallback.
    audit_fallback_version: int = Field(default=0, ge=0)
    audit_fallback_sent: tuple[str, ...] = ()
    # The audit feed (bot/audit_feed/sinks.py): "<sink>:<step>" of each OCSF record a sink has, recorded as
    # it is sent (a retry never sends a record to a sink twice)
    audit_feed_sent: tuple[str, ...] = ()
    # Fingerprints of the root audit message's latest contents as the bot sent them (bot/audit_feed/edits.py):
    # a message_changed event showing anything else was an edit the bot did not make
    audit_rendered: tuple[str, ...] = ()

    warned_at: UtcDatetime | None = None
    # "schedules": its warning and expiry are timed outside the bot, by one-time schedules (Lambda,
    # bot/schedules.py), so every stored change to when it ends owes EXPIRY_SCHEDULES (store.base.retimed)
    timed_by: Literal["schedules"] | None = None
    escalated: bool = False
    reviewed_by: str | None = None
    reviewed_at: UtcDatetime | None = None
    review_notes: str | None = None
    # AWS access granted for this event (None: the profile maps to no AWS target, or provider none)
    access: EventAccess | None = None
    # The incident-tool incident this event is linked to (None: no tool, or free text only)
    incident_link: IncidentLink | None = None
    # Was the invoker on call at invoke (the profile's `oncall` rule)? "unknown": the incident tool could
    # not be asked and the policy allowed it; None: the profile has no rule
    oncall: Literal["yes", "no", "unknown"] | None = None

    # The activity digest (what the session did in AWS, from CloudTrail) as JSON text, newest gathered;
    # `activity_failures`: gathers in a row that failed (the audit thread is told once per such episode).
    activity: str | None = Field(default=None, max_length=MAX_ACTIVITY)
    activity_failures: int = Field(default=0, ge=0)
    # Extensions, oldest first: expires_at = created_at + duration + their durations (`extend`).
    extensions: tuple[Extension, ...] = ()

    version: int = Field(default=1, ge=1)

    @field_validator("justification")
    @classmethod
    def _justification(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("source") is not None:
            # as Sentinel stored it, whatever its length (escaped wherever it is shown); characters that
            # are refused in every user field are refused here too (the item is then unreadable)
            return _check_text(value, what="justification")
        return validate_justification(value)

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        if info.data.get("source") is not None:
            if value <= timedelta(0):
                raise ValueError("duration must be positive")
            return value
        return validate_duration(value)

    @property
    def foreign(self) -> bool:
        """Written by another tool sharing the table (Sentinel): no Slack user to mention or message."""
        return self.source is not None

    @property
    def extended_by(self) -> timedelta:
        return sum((ext.duration for ext in self.extensions), timedelta(0))

    @property
    def lifetime(self) -> timedelta:
        """From creation to the (possibly extended) expiry."""
        return self.expires_at - self.created_at

    @property
    def segment_start(self) -> datetime:
        """When the current stretch of access began: the creation, or the latest extension."""
        return self.extensions[-1].at if self.extensions else self.created_at

    @field_validator("closed_reason")
    @classmethod
    def _closed_reason(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return validate_free_text(value, what="close reason", max_length=MAX_CLOSE_REASON)

    @field_validator("review_notes")
    @classmethod
    def _review_notes(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return validate_free_text(value, what="review notes", max_length=MAX_REVIEW_NOTES)

    @model_validator(mode="after")
    def _consistent(self) -> BreakGlassEvent:
        if self.source is None and self.slack_user_id is None:
            raise ValueError("slack_user_id is required (only a foreign event has none)")
        if self.source is None and self.expires_at != self.created_at + self.duration + self.extended_by:
            raise ValueError("expires_at must equal created_at + duration (+ its extensions)")
        if self.status is Status.ACTIVE and (self.ended_at or self.closed_by or self.closed_reason):
            raise ValueError("an active event has no ended_at, closed_by or closed_reason")
        if self.status is Status.CLOSED and not (self.ended_at and self.closed_by and self.closed_reason):
            raise ValueError("a closed event needs ended_at, closed_by and closed_reason")
        if self.status is Status.EXPIRED and not self.ended_at:
            raise ValueError("an expired event needs ended_at")
        if self.reviewed_at is not None and (self.status is Status.ACTIVE or not self.reviewed_by):
            raise ValueError("only an ended event can be reviewed, and a review names its reviewer")
        return self

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def new(
        cls,
        *,
        invoker: str,
        slack_user_id: str,
        profile: str,
        reason_code: ReasonCode | str,
        justification: str,
        duration: timedelta,
        now: datetime,
        incident: str | None = None,
        request_id: str | None = None,
        **extra: Any,
    ) -> BreakGlassEvent:
        now = ensure_utc(now)
        return cls(
            invoker=invoker,
            slack_user_id=slack_user_id,
            profile=profile,
            reason_code=ReasonCode(reason_code),
            justification=justification,
            incident=incident,
            duration=validate_duration(duration),
            created_at=now,
            updated_at=now,
            expires_at=now + duration,
            request_id=request_id,
            **extra,
        )

    # -- state machine ------------------------------------------------------------------------

    def is_effective(self, now: datetime) -> bool:
        """Does this event grant access at `now`? (active and not yet past its expiry)"""
        return self.status is Status.ACTIVE and ensure_utc(now) < self.expires_at

    def is_due(self, now: datetime) -> bool:
        return self.status is Status.ACTIVE and ensure_utc(now) >= self.expires_at

    def close(self, *, by: str, reason: str, now: datetime) -> BreakGlassEvent:
        if self.status is not Status.ACTIVE:
            raise InvalidTransition(self, "close", f"it is already {self.status.value}")
        if not by.strip():
            raise ValueError("closed_by is required")
        now = ensure_utc(now)
        return self._with(
            status=Status.CLOSED,
            closed_by=by,
            closed_reason=validate_free_text(reason, what="close reason", max_length=MAX_CLOSE_REASON),
            ended_at=now,
            updated_at=now,
        )

    def expire(self, *, now: datetime) -> BreakGlassEvent:
        if self.status is not Status.ACTIVE:
            raise InvalidTransition(self, "expire", f"it is already {self.status.value}")
        now = ensure_utc(now)
        if now < self.expires_at:
            raise InvalidTransition(self, "expire", "it is not due yet")
        return self._with(status=Status.EXPIRED, ended_at=now, updated_at=now)

    def extend(
        self,
        *,
        by: str,
        duration: timedelta,
        reason: str,
        now: datetime,
        max_total: timedelta = MAX_TOTAL,
        max_extensions: int | None = None,
        escalated: bool = False,
        request_id: str | None = None,
    ) -> BreakGlassEvent:
        """A new expiry `duration` later, the same event: only while it is effective, within `max_total`
        (never more than MAX_TOTAL) of its creation and `max_extensions`. The warning is owed again."""
        now = ensure_utc(now)
        if self.status is not Status.ACTIVE:
            raise InvalidTransition(self, "extend", f"it is already {self.status.value}")
        if now >= self.expires_at:
            raise InvalidTransition(self, "extend", "it has already run out")
        if self.foreign:
            raise InvalidTransition(self, "extend", f"it was created by {self.source}")
        if max_extensions is not None and len(self.extensions) >= max_extensions:
            raise InvalidTransition(
                self,
                "extend",
                f"its profile allows {max_extensions} extension(s) and it has {len(self.extensions)}",
            )
        cap = min(max_total, MAX_TOTAL)
        if self.lifetime + duration > cap:
            left = cap - self.lifetime
            raise InvalidTransition(
                self,
                "extend",
                f"its whole lifetime may be at most {_hours(cap)}; at most {_hours(left)} more can be added"
                if left > timedelta(0)
                else f"it already lasts the longest allowed ({_hours(cap)})",
            )
        extension = Extension(
            at=now,
            by=by,
            duration=duration,
            reason=reason,
            escalated=escalated,
            warned_at=self.warned_at,
            request_id=request_id,
        )
        return self._with(
            extensions=(*self.extensions, extension),
            expires_at=self.expires_at + duration,
            warned_at=None,
            escalated=self.escalated or escalated,
            updated_at=now,
        )

    def review(self, *, by: str, notes: str, now: datetime) -> BreakGlassEvent:
        if self.status is Status.ACTIVE:
            raise InvalidTransition(self, "review", "it is still active")
        if self.reviewed_at is not None:
            raise InvalidTransition(self, "review", f"it was already reviewed by {self.reviewed_by}")
        if not by.strip():
            raise ValueError("reviewed_by is required")
        now = ensure_utc(now)
        return self._with(
            reviewed_by=by,
            reviewed_at=now,
            review_notes=validate_free_text(notes, what="review notes", max_length=MAX_REVIEW_NOTES),
            updated_at=now,
        )

    def with_outbox(
        self,
        *add: OutboxKind | str | Deferred,
        remove: Iterable[OutboxEntry] = (),
        version: int | None = None,
    ) -> BreakGlassEvent:
        """Add owed steps (stamped with `version`, by default the version this change will be stored as:
        the current one + 1; a `Deferred` step is not due before its time) and remove exactly the `remove`
        entries. Order is kept; an entry already owed (same kind, version and time) is not added twice."""
        stamp = self.version + 1 if version is None else version
        removed = set(remove)
        items = [item for item in self.outbox if item not in removed]
        for kind in add:
            if isinstance(kind, Deferred):
                entry = OutboxEntry(kind=OutboxKind(kind.kind), version=stamp, not_before=kind.not_before)
            else:
                entry = OutboxEntry(kind=OutboxKind(kind), version=stamp)
            if entry not in items:
                items.append(entry)
        changes: dict[str, Any] = {"outbox": tuple(items)}
        if not items:
            changes.update(outbox_attempts=0, outbox_next_at=None)
        elif add and not self.outbox_leased:  # waiting out a backoff, not held: the new step is due now
            changes.update(outbox_next_at=None)
        return self._with(**changes)

    @property
    def owed_kinds(self) -> tuple[OutboxKind, ...]:
        return tuple(entry.kind for entry in self.outbox)

    def owes(self, kind: OutboxKind) -> bool:
        return any(entry.kind is kind for entry in self.outbox)

    @property
    def outbox_due_at(self) -> datetime | None:
        """When a delivery of this event's outbox is next due (what the stores index for `list_owed`):
        its next attempt (`outbox_next_at`, else `updated_at`), but not before its earliest entry is due."""
        if not self.outbox:
            return None
        attempt = self.outbox_next_at or self.updated_at
        times = [entry.not_before for entry in self.outbox]
        earliest = None if None in times else min(t for t in times if t is not None)
        return attempt if earliest is None else max(attempt, earliest)

    def recorded(self, *learned: Mapping[str, Any]) -> BreakGlassEvent:
        """What deliveries learned (their handlers' fields, in order) applied: a field not yet set is set
        (never overwritten: a retried send finds it set), and a tuple field (e.g. `dms`) gains the items
        it does not hold yet."""
        changes: dict[str, Any] = {}
        for fields in learned:
            for key, value in fields.items():
                current = changes.get(key, getattr(self, key))
                if isinstance(current, tuple):
                    changes[key] = current + tuple(item for item in value if item not in current)
                elif current is None:
                    changes[key] = value
        return self._with(**changes) if changes else self

    def _with(self, **changes: Any) -> BreakGlassEvent:
        """A validated copy with `changes` applied (model_copy does not validate)."""
        data = self.model_dump()
        data.update(changes)
        return BreakGlassEvent.model_validate(data)

    def updated(self, **changes: Any) -> BreakGlassEvent:
        """A validated copy for non-status changes; status goes through close/expire only."""
        if "status" in changes and changes["status"] != self.status:
            raise InvalidTransition(self, "update", "status changes only through close or expire")
        return self._with(**changes)


def _hours(value: timedelta) -> str:
    minutes = int(value.total_seconds() // 60)
    hours, rest = divmod(minutes, 60)
    return (
        " ".join(part for part in (f"{hours} h" if hours else "", f"{rest} min" if rest else "") if part)
        or "0 min"
    )


def with_version(event: BreakGlassEvent, version: int) -> BreakGlassEvent:
    """The same event stamped with a new version (used by stores on every successful write)."""
    return event.model_copy(update={"version": version})
