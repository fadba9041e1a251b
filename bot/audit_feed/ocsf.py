"""OCSF 1.5 records for the steps of a break-glass event, with a per-event hash chain.

A record is a pure function of the event as stored: the same event gives the same records, byte for byte
(canonical JSON), in every process and after any restart, so a record owed and sent again is the same record
and its `metadata.uid` (`<event id>:<step>`) is a stable idempotency key for every sink.

Every step is an OCSF *User Access Management* event (class 3005, category 3 Identity & Access Management):
the invocation assigns the profile's privileges (activity 1), the close and the expiry revoke them (2), the
warning and the review are activity 99 (Other) with `activity_name` saying which. AWS access is on the
`resources` (account and permission set) and in `privileges`.

Tamper evidence: `unmapped.breakglass.chain` holds the record's position in its event's chain (`seq`, from
1) and `previous`, the SHA-256 of the canonical JSON of the event's previous record ("" for the first). An
edited record changes its digest and breaks the next record's link; a removed record leaves a gap in `seq`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from store import BreakGlassEvent
from store.model import Status

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
    """One step of an event's life that the feed reports: its name, time, OCSF activity and actor."""

    name: str  # invoked, warned, closed, expired, reviewed
    time: datetime
    activity_id: int
    actor: str
    message: str


def steps_of(event: BreakGlassEvent) -> list[Step]:
    """The steps the stored event has been through, in the order they happened."""
    who = event.invoker
    steps = [
        Step(
            "invoked",
            event.created_at,
            ASSIGN,
            who,
            f"{who} took break-glass access to {event.profile} ({event.reason_code.value})",
        )
    ]
    if event.warned_at is not None:
        steps.append(Step("warned", event.warned_at, OTHER, "breakglass", f"access of {who} expires soon"))
    if event.status is Status.CLOSED and event.ended_at is not None:
        steps.append(
            Step("closed", event.ended_at, REVOKE, event.closed_by or who, f"closed: {event.closed_reason}")
        )
    elif event.status is Status.EXPIRED and event.ended_at is not None:
        steps.append(Step("expired", event.ended_at, REVOKE, "breakglass", "access expired"))
    if event.reviewed_at is not None:
        steps.append(Step("reviewed", event.reviewed_at, OTHER, event.reviewed_by or "", "reviewed"))
    return steps


def canonical(record: Record) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_digest(record: Record) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


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
        "end_time": _ms(
            event.ended_at if step.activity_id == REVOKE or step.name == "reviewed" else event.expires_at
        ),
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
    if event.access is not None and event.access.email:
        record["user"]["email_addr"] = event.access.email
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
