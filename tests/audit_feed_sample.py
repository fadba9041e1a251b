"""Writes docs/audit-feed.md: one sample OCSF record per step, built by the real code
(`bot.audit_feed.event_records`) from an event taken through its whole life.

Regenerate:  .venv/bin/python -m tests.audit_feed_sample > docs/audit-feed.md
(tests/test_audit_feed.py checks that the checked-in file is what this prints.)
"""

from __future__ import annotations

import json
from datetime import timedelta

from bot.access import Drift, ReconcileReport
from bot.audit_feed import event_records
from bot.audit_feed.notices import (
    channel_notice,
    drift_notices,
    edit_notice,
    notice_record,
    refusal_notice,
)
from store import BreakGlassEvent, Notice
from store.model import EventAccess
from tests.store_fixtures import T0, make_event


def lived_event() -> BreakGlassEvent:
    """An event invoked, warned, closed and reviewed, with AWS access (account and permission set)."""
    event = make_event(
        id="0123456789abcdef",
        incident="INC-1234",
        access=EventAccess(
            provider="identity_center",
            account="123456789012",
            permission_set="arn:aws:sso:::permissionSet/ssoins-1/ps-0123456789abcdef",
            user_id="9067a1b2c3-0000",
            email="alice@example.com",
        ),
    )
    event = event.updated(warned_at=T0 + timedelta(minutes=50))
    event = event.close(by="bob@example.com", reason="incident resolved", now=T0 + timedelta(minutes=55))
    return event.review(
        by="carol@example.com", notes="commands match the incident", now=T0 + timedelta(hours=2)
    )


def aws_event_states() -> list[BreakGlassEvent]:
    """An event with AWS access through its life, one state per step: invoked, granted in AWS, warned,
    extended, warned again, closed, revoked in AWS, its sessions denied, reviewed."""
    event = make_event(
        id="00aabbccddeeff11",
        invoker="dave@example.com",
        access=EventAccess(
            provider="identity_center",
            account="123456789012",
            permission_set="arn:aws:sso:::permissionSet/ssoins-1/ps-0123456789abcdef",
            permission_set_name="BreakGlassAdmin",
            user_id="9067a1b2c3-0001",
            email="dave@example.com",
        ),
    )
    assert event.access is not None
    at = T0 + timedelta(seconds=3)
    states = [event]

    def access(**changes: object) -> BreakGlassEvent:
        assert states[-1].access is not None
        return states[-1].updated(access=states[-1].access.model_copy(update=changes))

    states.append(access(pre_existing=False, grant_requested_at=T0 + timedelta(seconds=1), granted_at=at))
    states.append(states[-1].updated(warned_at=T0 + timedelta(minutes=50)))
    states.append(
        states[-1].extend(
            by="dave@example.com",
            duration=timedelta(minutes=30),
            reason="the database restore needs another half hour",
            now=T0 + timedelta(minutes=52),
        )
    )
    states.append(states[-1].updated(warned_at=T0 + timedelta(minutes=80)))
    states.append(
        states[-1].close(by="dave@example.com", reason="restore done", now=T0 + timedelta(minutes=85))
    )
    revoked = T0 + timedelta(minutes=85, seconds=4)
    states.append(
        access(
            revoke_requested_at=T0 + timedelta(minutes=85, seconds=1),
            revoked_at=revoked,
            assignment_deleted_at=revoked,
        )
    )
    states.append(access(sessions_issued_before=revoked, sessions_denied_at=revoked + timedelta(seconds=2)))
    states.append(
        states[-1].review(by="carol@example.com", notes="as described", now=T0 + timedelta(hours=3))
    )
    return states


def refusal() -> Notice:
    """A refused invocation (stacking): a notice, since it created no event."""
    return refusal_notice(
        now=T0 + timedelta(minutes=10),
        kind="stacking",
        slack_user_id="UALICE",
        profile="prod-admin",
        reason_code="incident",
        message="You already have active break-glass event 0123456789abcdef on 'prod-admin'.",
        request_id="V0123456789",
    )


def drift() -> list[Notice]:
    """The drift check removed an assignment breakglass did not make."""
    report = ReconcileReport(
        checked_at=T0 + timedelta(hours=5),
        targets_checked=1,
        drift=(
            Drift(
                account="123456789012",
                permission_set="arn:aws:sso:::permissionSet/ssoins-1/ps-0123456789abcdef",
                principal_type="USER",
                principal_id="9067a1b2c3-0099",
                removed=True,
            ),
        ),
    )
    return drift_notices(report)


def edited() -> Notice:
    """Someone holding the bot token edited the lived event's audit message."""
    return edit_notice(
        event_id="0123456789abcdef",
        channel="C0AUDIT",
        ts="1772366400.000100",
        edited_by="UBOT",
        content="5f1d0c2a9b7e4d3c8a6f0e1d2c3b4a59",
        now=T0 + timedelta(hours=5, minutes=30),
    )


def channel_episode() -> list[Notice]:
    """The audit channel was archived, then unarchived."""
    broken, recovered = T0 + timedelta(hours=6), T0 + timedelta(hours=6, minutes=20)
    return [
        channel_notice("broken", "C0AUDIT", "is_archived", broken, broken),
        channel_notice("recovered", "C0AUDIT", "is_archived", broken, recovered),
    ]


def expired_event() -> BreakGlassEvent:
    return make_event(id="fedcba9876543210", profile="prod-readonly").expire(now=T0 + timedelta(hours=1))


def document() -> str:
    records = event_records(lived_event()) + event_records(expired_event())[1:]
    seen = {r["unmapped"]["breakglass"]["step"] for r in records}
    for record in event_records(aws_event_states()[-1]):
        if record["unmapped"]["breakglass"]["step"] not in seen:  # warned-2, extended-1, aws_*, sessions_*
            records.append(record)
    records += [notice_record(n) for n in (refusal(), *drift(), edited(), *channel_episode())]
    out = [
        "# Audit feed: a sample OCSF record per step",
        "",
        "Generated by `tests/audit_feed_sample.py` from the real record builder (`bot/audit_feed/ocsf.py`);",
        "`tests/test_audit_feed.py` validates each against the published OCSF 1.5.0 schema and checks that",
        "this file is current.",
        "",
    ]
    for record in records:
        out += [f"## {record['unmapped']['breakglass']['step']}", "", "```json"]
        out += [json.dumps(record, indent=2, sort_keys=True), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(document(), end="")
