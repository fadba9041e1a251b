"""OCSF 1.5 records for the steps of a break-glass event, with a per-event hash chain.

A record is a pure function of the event as stored: the same event gives the same records, byte for byte
(canonical JSON), in every process and after any restart, so a record owed and sent again is the same record
and its `metadata.uid` (`<event id>:<step>`) is a stable idempotency key for every sink.

Every step is an OCSF *User Access Management* event (class 3005, category 3 Identity & Access Management):
the invocation and each extension assign the profile's privileges (activity 1), the close and the expiry
revoke them (2), the warnings and the review are activity 99 (Other) with `activity_name` saying which. AWS
access is on the `resources` (account and permission set) and in `privileges`; the AWS steps themselves
(`aws_granted` 1, `aws_revoked` 2, `sessions_denied` 2) carry their receipt in `unmapped.breakglass.receipt`.
Steps are ordered by time and derived only from fields a later step never changes (an extension keeps the
warning it clears, `Extension.warned_at`; `end_time` is the expiry known at that step), so an event's
records only ever get appended.

Tamper evidence: `unmapped.breakglass.chain` holds the record's position in its event's chain (`seq`, from
1) and `previous`, the SHA-256 of the canonical JSON of the event's previous record ("" for the first). An
edited record changes its digest and breaks the next record's link; a removed record leaves a gap in `seq`.
Records sent to a sink also carry `unmapped.breakglass.day_chain` (`day`, `seq`, `previous`): their place in
the chain of every record of that UTC day, in the order they were first delivered, kept in the store
(`Store.link_day`); the per-event digest leaves it out, so both chains hold independently.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.durations import format_duration
from store import BreakGlassEvent
from store.model import EventAccess, Status

OCSF_VERSION = "1.5.0"
PRODUCT = {"name": "breakglass", "vendor_name": "breakglass", "version": "0.1.0"}
USER_ACCESS = 3005
IAM_CATEGORY = 3
ASSIGN, REVOKE, OTHER = 1, 2, 99
SUCCESS = 1
INFORMATIONAL, MEDIUM = 1, 3

Record = dict[str, Any]


@dataclass(frozen=True)
class Step:
    """One step of an event's life that the feed reports: its name (unique in the event), time, OCSF
    activity, actor, the access's end as known at that step, and details (AWS receipts, an extension)."""

    name: str  # invoked, warned[-N], extended-N, aws_granted, aws_revoked, sessions_denied, closed, ...
    time: datetime
    activity_id: int
    actor: str
    message: str
    end: datetime
    details: dict[str, Any] = field(default_factory=dict)


def _expiry_at(event: BreakGlassEvent, moment: datetime) -> datetime:
    """The expiry in effect at `moment`: the duration and the extensions made by then."""
    extended = sum((e.duration for e in event.extensions if e.at <= moment), timedelta(0))
    return event.created_at + event.duration + extended


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _receipt(
    access: EventAccess, requested: datetime | None, completed: datetime | None, **extra: Any
) -> dict[str, Any]:
    """An AWS step's receipt: what was changed, for whom, asked and done when."""
    return {
        "provider": access.provider,
        "account": access.account,
        "permission_set": access.permission_set,
        "principal": access.user_id,
        "requested_at": _iso(requested),
        "completed_at": _iso(completed),
        **extra,
    }


def steps_of(event: BreakGlassEvent) -> list[Step]:
    """The steps the stored event has been through, in the order they happened (by time; steps at the
    same time in the order of the event's life). Each step is derived from fields that a later step never
    changes, so records only ever get appended."""
    who = event.invoker
    steps = [
        Step(
            "invoked",
            event.created_at,
            ASSIGN,
            who,
            f"{who} took break-glass access to {event.profile} ({event.reason_code.value})",
            _expiry_at(event, event.created_at),
        )
    ]
    warnings = [ext.warned_at for ext in event.extensions] + [event.warned_at]
    for n, (warned, ext) in enumerate(zip(warnings, [*event.extensions, None], strict=True), start=1):
        if warned is not None:
            name = "warned" if not any(warnings[: n - 1]) else f"warned-{n}"
            end = _expiry_at(event, warned)
            steps.append(Step(name, warned, OTHER, "breakglass", f"access of {who} expires soon", end))
        if ext is not None:
            end = _expiry_at(event, ext.at)
            steps.append(
                Step(
                    f"extended-{n}",
                    ext.at,
                    ASSIGN,
                    ext.by,
                    f"access of {who} to {event.profile} extended by {format_duration(ext.duration)}",
                    end,
                    {"extension": {"n": n, "seconds": int(ext.duration.total_seconds()), "until": _iso(end)}},
                )
            )
    access = event.access
    if access is not None and access.granted_at is not None:
        receipt = _receipt(
            access, access.grant_requested_at, access.granted_at, pre_existing=access.pre_existing
        )
        steps.append(
            Step(
                "aws_granted",
                access.granted_at,
                ASSIGN,
                "breakglass",
                f"AWS access granted: {access.permission_set_name or access.permission_set} on {access.account}",
                _expiry_at(event, access.granted_at),
                {"receipt": receipt},
            )
        )
    ended = event.ended_at or event.expires_at
    if access is not None and access.revoked_at is not None:
        receipt = _receipt(
            access,
            access.revoke_requested_at,
            access.revoked_at,
            assignment_deleted_at=_iso(access.assignment_deleted_at),
            kept=access.kept,
        )
        message = f"AWS access revoked on {access.account}" + (
            f" (kept: {access.kept})" if access.kept else ""
        )
        steps.append(
            Step("aws_revoked", access.revoked_at, REVOKE, "breakglass", message, ended, {"receipt": receipt})
        )
    if access is not None and access.sessions_denied_at is not None:
        receipt = {
            "account": access.account,
            "principal": access.user_id,
            "sessions_issued_before": _iso(access.sessions_issued_before),
            "completed_at": _iso(access.sessions_denied_at),
        }
        steps.append(
            Step(
                "sessions_denied",
                access.sessions_denied_at,
                REVOKE,
                "breakglass",
                f"AWS sessions of {who} issued before the revoke denied on {access.account}",
                ended,
                {"receipt": receipt},
            )
        )
    if event.status is Status.CLOSED and event.ended_at is not None:
        steps.append(
            Step(
                "closed",
                event.ended_at,
                REVOKE,
                event.closed_by or who,
                f"closed: {event.closed_reason}",
                event.ended_at,
            )
        )
    elif event.status is Status.EXPIRED and event.ended_at is not None:
        steps.append(Step("expired", event.ended_at, REVOKE, "breakglass", "access expired", event.ended_at))
    if event.reviewed_at is not None:
        steps.append(Step("reviewed", event.reviewed_at, OTHER, event.reviewed_by or "", "reviewed", ended))
    return sorted(steps, key=lambda step: step.time)  # stable: ties keep the order above


def canonical(record: Record) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_digest(record: Record) -> str:
    """The digest the per-event chain links: of the record without its place in the day's chain."""
    return hashlib.sha256(canonical(without_day(record))).hexdigest()


def day_digest(record: Record) -> str:
    """The digest the per-day chain links: of the record as sent, its day link included."""
    return hashlib.sha256(canonical(record)).hexdigest()


def with_day(record: Record, day: str, seq: int, previous: str) -> Record:
    """The record as sent: with its place in the day's chain (`unmapped.breakglass.day_chain`)."""
    ours = {**record["unmapped"]["breakglass"], "day_chain": {"day": day, "seq": seq, "previous": previous}}
    return {**record, "unmapped": {**record["unmapped"], "breakglass": ours}}


def without_day(record: Record) -> Record:
    ours = record.get("unmapped", {}).get("breakglass", {})
    if "day_chain" not in ours:
        return record
    rest = {k: v for k, v in ours.items() if k != "day_chain"}
    return {**record, "unmapped": {**record["unmapped"], "breakglass": rest}}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _record(event: BreakGlassEvent, step: Step, seq: int, previous: str) -> Record:
    activity_name = {ASSIGN: "Assign Privileges", REVOKE: "Revoke Privileges"}.get(step.activity_id, "Other")
    resources: list[dict[str, Any]] = [{"name": event.profile, "type": "breakglass.profile"}]
    if event.access is not None:
        resources += [
            {"uid": event.access.account, "type": "aws.account"},
            {"uid": event.access.permission_set, "type": "aws.permission_set"},
        ]
    record: Record = {
        "class_uid": USER_ACCESS,
        "class_name": "User Access Management",
        "category_uid": IAM_CATEGORY,
        "category_name": "Identity & Access Management",
        "activity_id": step.activity_id,
        "activity_name": activity_name if step.activity_id != OTHER else step.name.capitalize(),
        "type_uid": USER_ACCESS * 100 + step.activity_id,
        "type_name": f"User Access Management: {activity_name}",
        "time": _ms(step.time),
        "severity_id": MEDIUM if step.name == "invoked" else INFORMATIONAL,
        "status_id": SUCCESS,
        "message": step.message,
        "metadata": {
            "version": OCSF_VERSION,
            "product": PRODUCT,
            "uid": f"{event.id}:{step.name}",
            "correlation_uid": event.id,
            "logged_time": _ms(step.time),
        },
        "actor": {"user": {"name": step.actor}},
        "user": {"name": event.invoker, **({"uid": event.slack_user_id} if event.slack_user_id else {})},
        "privileges": [event.profile],
        "resources": resources,
        "start_time": _ms(event.created_at),
        # only what was known at this step: a later step never changes an earlier record
        "end_time": _ms(step.end),
        "unmapped": {
            "breakglass": {
                "event_id": event.id,
                "step": step.name,
                "reason_code": event.reason_code.value,
                "incident": event.incident,
                "chain": {"seq": seq, "previous": previous},
            }
        },
    }
    record["unmapped"]["breakglass"].update(step.details)
    if event.access is not None and event.access.email:
        record["user"]["email_addr"] = event.access.email
    if event.incident_link is not None:  # fixed at invoke (bot/incidents): the same in every record
        link = event.incident_link.model_dump(include={"provider", "id", "reference", "url", "verified"})
        record["unmapped"]["breakglass"]["incident_link"] = link
    if event.oncall is not None:
        record["unmapped"]["breakglass"]["oncall"] = event.oncall
    return record


def event_records(event: BreakGlassEvent) -> list[Record]:
    """Every record the event owes so far, chained in order."""
    records: list[Record] = []
    previous = ""
    for seq, step in enumerate(steps_of(event), start=1):
        record = _record(event, step, seq, previous)
        records.append(record)
        previous = chain_digest(record)
    return records


def verify_chain(records: list[Record]) -> list[str]:
    """Problems in one event's records (sorted by seq): gaps in seq, and links that do not match."""
    problems: list[str] = []
    ordered = sorted(records, key=lambda r: r["unmapped"]["breakglass"]["chain"]["seq"])
    previous, expected = "", 1
    for record in ordered:
        chain = record["unmapped"]["breakglass"]["chain"]
        uid = record["metadata"]["uid"]
        if chain["seq"] != expected:
            problems.append(f"{uid}: gap before seq {chain['seq']} (expected {expected})")
        elif chain["previous"] != previous:
            problems.append(f"{uid}: previous digest does not match the record before it (edited?)")
        previous, expected = chain_digest(record), chain["seq"] + 1
    return problems
