"""Audit-feed records of facts that belong to no stored event, each stored as a notice (store/notices.py)
owed to the feed's sinks until each has it:

* `refused`: a refused invocation (limits, stacking, authorization, incident, AWS access). Nothing was
  created, so the refusing request itself stores the notice.
* `drift_repaired`: the drift check (bot/delivery/handlers/drift.reconcile) removed an AWS assignment no event expects
  (3005 Revoke Privileges), or granted again one an active event holds that had vanished (3005 Assign).
* `audit_message_edited`: someone other than the bot edited an event's root audit message
  (bot/slack/audit_edits.py; 3004 Entity Management, Update, the message as entity).
* `audit_channel_broken` / `audit_channel_recovered`: Slack refused the audit channel for good, and later
  a send to it worked again (3004 Entity Management, the channel as entity; one per episode per process).

A refusal is an OCSF *User Access Management* record (3005), activity 1 Assign Privileges with `status_id`
2 Failure and `status_detail` the refusal's kind; its `metadata.uid` is the notice's uid (`refused:<hex>`,
from the Slack request's id and what it submitted when there is one, so a retried request is one notice).
It is a chain of one (`seq` 1): there is no event to chain it to.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from bot.audit_feed.ocsf import (
    IAM_CATEGORY,
    INFORMATIONAL,
    MEDIUM,
    OCSF_VERSION,
    OTHER,
    PRODUCT,
    REVOKE,
    SUCCESS,
    USER_ACCESS,
    Record,
)
from store.notices import Notice

if TYPE_CHECKING:
    from bot.access import ReconcileReport

RefusalKind = Literal["limits", "stacking", "authorization", "incident", "aws_access"]
FAILURE = 2
ASSIGN = 1
HIGH = 4
ENTITY_MANAGEMENT = 3004
UPDATE = 3  # Entity Management: Update


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def refusal_notice(
    *,
    now: datetime,
    kind: RefusalKind,
    slack_user_id: str,
    profile: str | None,
    reason_code: str | None,
    message: str,
    request_id: str | None = None,
    attempt: str = "",
) -> Notice:
    """`attempt`: what was submitted under `request_id`. A modal's view id is the request id, and a form given
    back after a refusal (bot.slack.refused_form) is submitted again under it: each different attempt is
    its own notice, a retry of the same one (by Slack) is the same notice."""
    key = f"{request_id}\0{attempt}" if attempt else request_id
    token = hashlib.sha256(str(key).encode()).hexdigest()[:32] if request_id else secrets.token_hex(16)
    body = {
        "notice": "refused",
        "refusal": kind,
        "slack_user_id": slack_user_id,
        "profile": profile,
        "reason_code": reason_code,
        "message": message[:2000],
        "time": _ms(now),
    }
    return Notice(uid=f"refused:{token}", at=now, body=json.dumps(body, sort_keys=True))


def _uid(kind: str, *parts: object) -> str:
    return f"{kind}:" + hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


def drift_notices(report: ReconcileReport) -> list[Notice]:
    """One notice per assignment the drift check removed or granted again."""
    now = report.checked_at
    notices = []
    for drift in report.drift:
        if not drift.removed:
            continue
        body = {
            "notice": "drift_repaired",
            "repair": "removed",
            "account": drift.account,
            "permission_set": drift.permission_set,
            "principal": f"{drift.principal_type}:{drift.principal_id}",
            "time": _ms(now),
        }
        notices.append(_notice(_uid("drift_repaired", now, drift.model_dump()), now, body))
    for receipt in report.regranted:
        if receipt.assignment is None:
            continue
        body = {
            "notice": "drift_repaired",
            "repair": "regranted",
            "account": receipt.assignment.account,
            "permission_set": receipt.assignment.permission_set,
            "principal": f"USER:{receipt.assignment.user_id}",
            "event_id": receipt.event_id,
            "time": _ms(receipt.completed_at),
        }
        notices.append(_notice(_uid("drift_repaired", receipt.event_id, receipt.completed_at), now, body))
    return notices


def channel_notice(
    kind: Literal["broken", "recovered"], channel: str, error: str, since: datetime, now: datetime
) -> Notice:
    """The audit channel broke (Slack's `error`) or works again after the episode that began at `since`."""
    body = {
        "notice": f"audit_channel_{kind}",
        "channel": channel,
        "error": error,
        "since": _ms(since),
        "time": _ms(now),
    }
    return _notice(_uid(f"audit_channel_{kind}", channel, since, error), now, body)


def edit_notice(
    *, event_id: str, channel: str, ts: str, edited_by: str, content: str, now: datetime
) -> Notice:
    """Someone other than the bot edited the root audit message of `event_id` (`content`: the edited
    content's fingerprint, so each edit is one notice however often Slack reports it)."""
    body = {
        "notice": "audit_message_edited",
        "event_id": event_id,
        "channel": channel,
        "message_ts": ts,
        "edited_by": edited_by,
        "time": _ms(now),
    }
    return _notice(_uid("audit_message_edited", channel, ts, content), now, body)


def _notice(uid: str, now: datetime, body: dict[str, Any]) -> Notice:
    return Notice(uid=uid, at=now, body=json.dumps(body, sort_keys=True))


def notice_record(notice: Notice) -> Record:
    """The OCSF record of a notice: a pure function of the notice as stored."""
    body: dict[str, Any] = json.loads(notice.body)
    if body["notice"] == "drift_repaired":
        return _drift_record(notice, body)
    if body["notice"].startswith("audit_channel_"):
        return _channel_record(notice, body)
    if body["notice"] == "audit_message_edited":
        return _edit_record(notice, body)
    profile = body.get("profile") or ""
    record: Record = {
        "class_uid": USER_ACCESS,
        "class_name": "User Access Management",
        "category_uid": IAM_CATEGORY,
        "category_name": "Identity & Access Management",
        "activity_id": ASSIGN,
        "activity_name": "Assign Privileges",
        "type_uid": USER_ACCESS * 100 + ASSIGN,
        "type_name": "User Access Management: Assign Privileges",
        "time": body["time"],
        "severity_id": MEDIUM,
        "status_id": FAILURE,
        "status": "Failure",
        "status_detail": body["refusal"],
        "message": f"refused ({body['refusal']}): {body['message']}",
        "metadata": {
            "version": OCSF_VERSION,
            "product": PRODUCT,
            "uid": notice.uid,
            "logged_time": body["time"],
        },
        "actor": {"user": {"uid": body["slack_user_id"]}},
        "user": {"uid": body["slack_user_id"]},
        "privileges": [profile] if profile else [],
        "resources": [{"name": profile, "type": "breakglass.profile"}] if profile else [],
        "unmapped": {
            "breakglass": {
                "notice": notice.uid,
                "step": "refused",
                "refusal": body["refusal"],
                "reason_code": body.get("reason_code"),
                "chain": {"seq": 1, "previous": ""},
            }
        },
    }
    return record


def _metadata(notice: Notice, body: dict[str, Any]) -> dict[str, Any]:
    return {"version": OCSF_VERSION, "product": PRODUCT, "uid": notice.uid, "logged_time": body["time"]}


def _drift_record(notice: Notice, body: dict[str, Any]) -> Record:
    activity = ASSIGN if body["repair"] == "regranted" else REVOKE
    name = "Assign Privileges" if activity == ASSIGN else "Revoke Privileges"
    principal_type, _, principal_id = str(body["principal"]).partition(":")
    ours = {"notice": notice.uid, "step": "drift_repaired", "repair": body["repair"]}
    if body.get("event_id"):
        ours["event"] = body["event_id"]
    return {
        "class_uid": USER_ACCESS,
        "class_name": "User Access Management",
        "category_uid": IAM_CATEGORY,
        "category_name": "Identity & Access Management",
        "activity_id": activity,
        "activity_name": name,
        "type_uid": USER_ACCESS * 100 + activity,
        "type_name": f"User Access Management: {name}",
        "time": body["time"],
        "severity_id": HIGH if body["repair"] == "removed" else MEDIUM,
        "status_id": SUCCESS,
        "message": (
            f"drift repaired: an assignment breakglass did not make was removed from {body['account']}"
            if body["repair"] == "removed"
            else f"drift repaired: a vanished assignment of event {body.get('event_id')} was granted again"
        ),
        "metadata": _metadata(notice, body),
        "actor": {"user": {"name": "breakglass"}},
        "user": {"uid": principal_id, "type": principal_type.capitalize() or "Unknown"},
        "privileges": [body["permission_set"]],
        "resources": [
            {"uid": body["account"], "type": "aws.account"},
            {"uid": body["permission_set"], "type": "aws.permission_set"},
        ],
        "unmapped": {"breakglass": {**ours, "chain": {"seq": 1, "previous": ""}}},
    }


def _channel_record(notice: Notice, body: dict[str, Any]) -> Record:
    broken = body["notice"] == "audit_channel_broken"
    return {
        "class_uid": ENTITY_MANAGEMENT,
        "class_name": "Entity Management",
        "category_uid": IAM_CATEGORY,
        "category_name": "Identity & Access Management",
        "activity_id": OTHER,
        "activity_name": "Audit channel broken" if broken else "Audit channel recovered",
        "type_uid": ENTITY_MANAGEMENT * 100 + OTHER,
        "type_name": "Entity Management: Other",
        "time": body["time"],
        "severity_id": HIGH if broken else INFORMATIONAL,
        "status_id": FAILURE if broken else SUCCESS,
        "status_detail": body["error"],
        "message": (
            f"audit channel {body['channel']} is broken (Slack: {body['error']}): announcements go to the "
            "fallback channel and security by DM"
            if broken
            else f"audit channel {body['channel']} works again; missed announcements are posted there"
        ),
        "metadata": _metadata(notice, body),
        "actor": {"user": {"name": "breakglass"}},
        "entity": {"uid": body["channel"], "type": "slack.channel"},
        "start_time": body["since"],
        "unmapped": {
            "breakglass": {
                "notice": notice.uid,
                "step": body["notice"],
                "chain": {"seq": 1, "previous": ""},
            }
        },
    }


def _edit_record(notice: Notice, body: dict[str, Any]) -> Record:
    return {
        "class_uid": ENTITY_MANAGEMENT,
        "class_name": "Entity Management",
        "category_uid": IAM_CATEGORY,
        "category_name": "Identity & Access Management",
        "activity_id": UPDATE,
        "activity_name": "Update",
        "type_uid": ENTITY_MANAGEMENT * 100 + UPDATE,
        "type_name": "Entity Management: Update",
        "time": body["time"],
        "severity_id": HIGH,
        "status_id": SUCCESS,
        "message": (
            f"the audit message of event {body['event_id']} in {body['channel']} was edited, not by "
            "breakglass; it was restored from the store"
        ),
        "metadata": {**_metadata(notice, body), "correlation_uid": body["event_id"]},
        "actor": {"user": {"uid": body["edited_by"]}},
        "entity": {"uid": f"{body['channel']}/{body['message_ts']}", "type": "slack.message"},
        "unmapped": {
            "breakglass": {
                "notice": notice.uid,
                "step": "audit_message_edited",
                "event": body["event_id"],
                "chain": {"seq": 1, "previous": ""},
            }
        },
    }
