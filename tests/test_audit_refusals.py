"""Refused invocations in the audit feed (bot/audit_feed/notices.py): stored as a notice by the refusing
request (both stores), delivered to the sinks at once (by the sweep if that failed), once, valid OCSF, and
checked by verify-audit."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bot.audit_feed.notices import notice_record, refusal_notice
from bot.audit_feed.ocsf import without_day
from bot.audit_feed.verify import verify_feed
from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from store.notices import Notice
from store.sqlite import SQLiteStore
from tests.conftest import Bot, make_bot
from tests.store_fixtures import BACKENDS, T0, open_test_store
from tests.test_audit_feed import class_schema
from tests.test_flows_close import invoke

pytest_plugins = ["tests.store_fixtures"]


@pytest.fixture(params=BACKENDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with open_test_store(request.param, request, tmp_path) as opened:
        yield opened


@pytest.fixture
def feed_bot(
    fake: FakeSlack, store: SQLiteStore, policy: Policy, clock: ManualClock, tmp_path: Path
) -> Iterator[Bot]:
    bot = make_bot(fake, store, policy, clock, breakglass_audit_feed=f"file:{tmp_path / 'audit.log'}")
    yield bot
    bot.runtime.scheduler.shutdown(wait=False)
    bot.server.stop()


def lines(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def refusals(tmp_path: Path) -> list[dict[str, Any]]:
    return [r for r in lines(tmp_path) if r["unmapped"]["breakglass"]["step"] == "refused"]


def test_stacking_and_authorization_refusals_reach_the_feed_once(feed_bot: Bot, tmp_path: Path) -> None:
    bot = feed_bot
    invoke(bot)
    assert bot.slack.invoke(user="U0001").json["response_action"] == "errors"  # stacked
    bot.clock.advance(1)  # notices are listed oldest first
    prod = bot.slack.invoke(user="U0001", profile="prod", incident="INC-1")  # not among prod's invokers
    assert prod.json["response_action"] == "errors"
    short = bot.slack.invoke(user="U0002", justification="too short")  # bad input: not a refusal
    assert short.json["response_action"] == "errors"
    bot.idle()  # each is delivered right after it is stored (tests/test_audit_notices_prompt.py)
    assert bot.store.list_notices() == []
    bot.runtime.pipeline.deliver_owed()  # the sweep: nothing left for it
    got = sorted(refusals(tmp_path), key=lambda r: r["unmapped"]["breakglass"]["refusal"] != "stacking")
    assert [r["unmapped"]["breakglass"]["refusal"] for r in got] == ["stacking", "authorization"]
    assert [r["status_id"] for r in got] == [2, 2]
    assert got[1]["privileges"] == ["prod"] and got[1]["user"] == {"uid": "U0001"}
    for record in got:
        jsonschema.validate(record, class_schema(record["class_uid"]))
    assert bot.store.list_notices() == []  # every sink has them
    bot.runtime.pipeline.deliver_owed()
    assert len(refusals(tmp_path)) == 2  # never sent twice
    assert verify_feed((tmp_path / "audit.log").read_text().splitlines(), bot.store) == []


def test_verify_reports_an_edited_or_unknown_refusal(store: SQLiteStore) -> None:
    notice = refusal_notice(
        now=T0,
        kind="limits",
        slack_user_id="U1",
        profile="prod",
        reason_code="incident",
        message="rate limit",
    )
    store.add_notice(notice)
    record = notice_record(notice)
    edited = copy.deepcopy(record)
    edited["status_id"] = 1
    unknown = notice_record(
        refusal_notice(now=T0, kind="limits", slack_user_id="U2", profile=None, reason_code=None, message="x")
    )
    feed = [json.dumps(r) for r in (record, edited, unknown)]
    problems = verify_feed(feed, store)
    assert problems == [
        f"{notice.uid}: duplicate record",
        f"{unknown['metadata']['uid']}: unknown record (the store has no such notice)",
    ]
    assert verify_feed([json.dumps(edited)], store) == [
        f"{notice.uid}: edited (differs from the record the stored notice gives)"
    ]


def test_notices_on_both_stores(any_store: Any) -> None:
    """Stored once per uid (a retried request is one notice), listed oldest first while owed, updated as
    sinks take it, out of the listing when every sink has it."""

    def stacked(seconds: int) -> Notice:  # the same request (its id), refused again a little later
        return refusal_notice(
            now=T0 + timedelta(seconds=seconds),
            kind="stacking",
            slack_user_id="U1",
            profile="prod",
            reason_code="incident",
            message="already active",
            request_id="V123",
        )

    first, again = stacked(5), stacked(9)
    assert any_store.add_notice(first) is True
    assert again.uid == first.uid and any_store.add_notice(again) is False
    older = Notice(uid="refused:" + "0" * 32, at=T0, body='{"x": 1}')
    any_store.add_notice(older)
    assert [n.uid for n in any_store.list_notices()] == [older.uid, first.uid]
    assert any_store.get_notice(first.uid) == first
    any_store.update_notice(first.model_copy(update={"sent": ("file",)}))
    assert any_store.get_notice(first.uid).sent == ("file",)
    any_store.update_notice(first.model_copy(update={"sent": ("file", "s3"), "owed": False}))
    assert [n.uid for n in any_store.list_notices()] == [older.uid]
    assert any_store.get_notice(first.uid) == first.model_copy(update={"sent": ("file", "s3"), "owed": False})
    assert any_store.get_notice("refused:" + "f" * 32) is None
    assert any_store.list_active() == []  # notices are never taken for events


def test_what_counts_as_a_refusal(bot: Bot) -> None:
    """Policy refusals are recorded; bad input and a repeated request are not."""
    from bot import ids
    from bot.errors import AlreadySubmitted, AwsAccessRefused, NotAuthorized, RateLimited, ValidationFailed
    from bot.service import InvokeRequest

    def request(**kw: Any) -> InvokeRequest:
        return InvokeRequest(
            **{
                "user_id": "U0001",
                "profile": "sandbox",
                "reason": "incident",
                "justification": "x" * 30,
                "duration": "900",
                **kw,
            }
        )

    kind = bot.service.refusal_kind
    assert kind(request(), RateLimited("rate limit", None)) == "limits"
    assert kind(request(), NotAuthorized("not on call")) == "authorization"
    assert kind(request(), AwsAccessRefused("no identity-store user")) == "aws_access"
    assert kind(request(), AlreadySubmitted({ids.PROFILE: "already submitted"})) is None
    tool = ValidationFailed({ids.INCIDENT: "PagerDuty incident P1 is already resolved"})
    assert kind(request(incident="P1"), tool) == "incident"
    assert kind(request(incident="x" * 300), ValidationFailed({ids.INCIDENT: "too long"})) is None
    assert kind(request(profile="prod"), ValidationFailed({ids.PROFILE: "not allowed"})) == "authorization"
    assert (
        kind(request(user_id="U0SRE", profile="prod"), ValidationFailed({ids.INCIDENT: "required"})) is None
    )


# -- drift repaired, audit channel broken/recovered: notices too -----------------------------------------


def test_drift_repairs_are_notices_with_valid_records(store: SQLiteStore) -> None:
    from bot.access import Drift, GrantReceipt, ReconcileReport
    from bot.access.base import Assignment
    from bot.audit_feed.notices import drift_notices
    from bot.audit_feed.sinks import AuditFeed, StreamSink

    report = ReconcileReport(
        checked_at=T0,
        targets_checked=1,
        drift=(
            Drift(
                account="123456789012",
                permission_set="arn:ps-1",
                principal_type="USER",
                principal_id="u-9",
                removed=True,
            ),
            Drift(
                account="123456789012",
                permission_set="arn:ps-1",
                principal_type="GROUP",
                principal_id="g-1",
                removed=False,
                error="AccessDenied",
            ),
        ),
        regranted=(
            GrantReceipt(
                provider="identity_center",
                event_id="0123456789abcdef",
                assignment=Assignment(account="123456789012", permission_set="arn:ps-1", user_id="u-1"),
                requested_at=T0,
                completed_at=T0 + timedelta(seconds=2),
            ),
        ),
    )
    notices = drift_notices(report)
    assert [n.uid for n in notices] == [n.uid for n in drift_notices(report)]  # stable: a retry is one notice
    records = [notice_record(n) for n in notices]
    assert [(r["activity_id"], r["unmapped"]["breakglass"]["repair"]) for r in records] == [
        (2, "removed"),
        (1, "regranted"),
    ]  # the drift that could not be removed is not a repair (the check reports it as an error)
    for record in records:
        jsonschema.validate(record, class_schema(record["class_uid"]))
    out: list[str] = []

    class Lines:
        def write(self, text: str) -> None:
            out.append(text)

        def flush(self) -> None:
            pass

    feed = AuditFeed(store, [StreamSink(stream=lambda: Lines())])  # type: ignore[arg-type,return-value]
    feed.repaired(report)
    feed.repaired(report)  # the same report again: no second notice
    assert feed.deliver_notices(T0) == 2
    assert [without_day(json.loads(line)) for line in "".join(out).splitlines()] == records
    assert verify_feed("".join(out).splitlines(), store) == []


def test_audit_channel_broken_and_recovered_reach_the_feed(
    fake: FakeSlack, store: SQLiteStore, clock: ManualClock, tmp_path: Path
) -> None:
    from bot.delivery.fallback import AUDIT_RECHECK
    from bot.policy import parse_policy
    from tests.conftest import TEST_POLICY

    policy = parse_policy(TEST_POLICY + "fallback_channel: C0FALLBACK\n", "test-policy.yml")
    bot = make_bot(fake, store, policy, clock, breakglass_audit_feed=f"file:{tmp_path / 'audit.log'}")
    try:
        bot.fake.add_channel("C0AUDIT", is_archived=True)
        response = bot.slack.invoke(user="U0001")
        assert response.json["response_action"] == "update"
        bot.idle()
        bot.fake.add_channel("C0AUDIT")  # unarchived
        bot.clock.advance((AUDIT_RECHECK * 1.2).total_seconds() + 1)
        bot.runtime.scheduler.sweep()
        bot.idle()
        bot.runtime.pipeline.deliver_owed()
        channel = [r for r in lines(tmp_path) if "notice" in r["unmapped"]["breakglass"]]
        assert [r["unmapped"]["breakglass"]["step"] for r in channel] == [
            "audit_channel_broken",
            "audit_channel_recovered",
        ]
        assert channel[0]["entity"] == {"uid": "C0AUDIT", "type": "slack.channel"}
        assert channel[0]["status_detail"] == "is_archived" and channel[0]["status_id"] == 2
        assert channel[1]["start_time"] == channel[0]["time"]  # the episode it ends
        for record in channel:
            jsonschema.validate(record, class_schema(record["class_uid"]))
        assert verify_feed((tmp_path / "audit.log").read_text().splitlines(), bot.store) == []
    finally:
        bot.runtime.scheduler.shutdown(wait=False)
        bot.server.stop()
