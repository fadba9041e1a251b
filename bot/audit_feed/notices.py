"""Audit-feed records of facts that belong to no stored event: a refused invocation (limits, stacking,
authorization, incident, AWS access). Nothing was created, so the refusal is stored as a notice
(store/notices.py) in the refusing request itself, owed to the feed's sinks until each has it.

A refusal is an OCSF *User Access Management* record (3005), activity 1 Assign Privileges with `status_id`
2 Failure and `status_detail` the refusal's kind; its `metadata.uid` is the notice's uid (`refused:<hex>`,
from the Slack request's id when there is one, so a retried request is one notice). It is a chain of one
(`seq` 1): there is no event to chain it to.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime
from typing import Any, Literal

from bot.audit_feed.ocsf import IAM_CATEGORY, MEDIUM, OCSF_VERSION, PRODUCT, USER_ACCESS, Record
from store.notices import Notice

RefusalKind = Literal["limits", "stacking", "authorization", "incident", "aws_access"]
FAILURE = 2
ASSIGN = 1


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
) -> Notice:
    token = hashlib.sha256(request_id.encode()).hexdigest()[:32] if request_id else secrets.token_hex(16)
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


def notice_record(notice: Notice) -> Record:
    """The OCSF record of a notice: a pure function of the notice as stored."""
    body: dict[str, Any] = json.loads(notice.body)
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
