"""The activity digest through the one delivery pipeline (issue 15, phase 2), end to end: signed Slack requests
to the real HTTP endpoint, the injected clock, the fake Slack Web API, and the local fake CloudTrail/STS
(tests/fake_cloudtrail.py, reached through AWS_ENDPOINT_URL_CLOUDTRAIL / AWS_ENDPOINT_URL_STS).

invoke → close → (nothing before ended_at + activity_delay) → sweep → the digest in the audit thread, sensitive
calls named, stored with the event (SQLite and DynamoDB) → the review modal shows it → `breakglass-admin show`
and `export`. Soft failures: AccessDenied on AssumeRole (said once, not retried), a CloudTrail outage (said
once, retried with backoff, the digest posted once it recovers), and an early gather at review time followed
by the regather once CloudTrail's delay has passed."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import admin
from bot.access.activity import ActivityDigest, DigestStatus, RateLimiter
from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy, parse_policy
from store import BreakGlassEvent, Store
from store.dynamodb import DynamoDBStore
from store.model import OutboxKind
from store.sqlite import SQLiteStore
from tests.conftest import Bot, make_bot
from tests.fake_cloudtrail import FakeCloudTrail, session_records, sso_record
from tests.harness import view_id_of
from tests.test_flows_close import AUDIT, reply_text, wait_until

pytest_plugins = ["tests.store_fixtures"]

ALICE = "alice@example.com"
DELAY = timedelta(minutes=15)
POLICY = """
audit_channel: C0AUDIT
identity: email
security: [S0SEC]
incident_commanders: [U0IC]
profiles:
  sandbox:
    durations: [15m, 30m, 1h]
    aws:
      account: "123456789012"
      permission_set: arn:aws:sso:::permissionSet/ssoins-0123456789abcdef/ps-0123456789abcdef
      activity_role: arn:aws:iam::123456789012:role/breakglass-activity
      activity_external_id: breakglass-ext-id
      activity_regions: [us-east-1, eu-west-1]
  plain:
    durations: [15m, 30m]
"""


class FakeTime:
    """The rate limiter's monotonic clock and the gather's sleep: sleeping moves it (no real waiting)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += max(0.0, seconds)


@pytest.fixture
def policy() -> Policy:
    return parse_policy(POLICY, "activity-policy.yml")


@pytest.fixture
def cloudtrail(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloudTrail]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with FakeCloudTrail() as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        yield server


@pytest.fixture(params=["sqlite", "dynamodb-server"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Store, str]]:
    """(store, its URL for breakglass-admin) on SQLite, or on DynamoDB served over HTTP by moto."""
    if request.param == "sqlite":
        store = SQLiteStore(tmp_path / "breakglass.db")
        yield store, f"sqlite:///{tmp_path / 'breakglass.db'}"
        store.disconnect()
    else:
        client, table = request.getfixturevalue("server_dynamodb")
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", request.getfixturevalue("moto_server_url"))
        yield DynamoDBStore(table, client=client), f"dynamodb://{table}"


def start_bot(
    fake: FakeSlack, store: Store, policy: Policy, clock: ManualClock, cloudtrail: FakeCloudTrail
) -> Bot:
    bot = make_bot(fake, store, policy, clock)  # type: ignore[arg-type]
    time = FakeTime()
    limiters: dict[tuple[str, str], RateLimiter] = {}

    def limiter(account: str, region: str) -> RateLimiter:
        return limiters.setdefault((account, region), RateLimiter(monotonic=time.monotonic, sleep=time.sleep))

    bot.runtime.pipeline.deps.activity_options = {
        "sleep": time.sleep,
        "limiters": limiter,
        "monotonic": time.monotonic,
    }
    return bot


@pytest.fixture
def abot(
    fake: FakeSlack, store: SQLiteStore, policy: Policy, clock: ManualClock, cloudtrail: FakeCloudTrail
) -> Iterator[Bot]:
    bot = start_bot(fake, store, policy, clock, cloudtrail)
    yield bot
    bot.runtime.scheduler.shutdown(wait=False)
    bot.server.stop()


# -- helpers ------------------------------------------------------------------------------------------------


def settled(bot: Bot, event_id: str) -> BreakGlassEvent:
    """The event once everything it owes *now* has been delivered (a digest owed for later may remain)."""

    def check() -> BreakGlassEvent | None:
        event = bot.store.get(event_id)
        due = [e for e in event.outbox if e.due(bot.clock.now())]
        return event if not due and event.audit_ts else None

    return wait_until(check, f"the announcements of {event_id}")


def invoke(bot: Bot, profile: str = "sandbox") -> BreakGlassEvent:
    response = bot.slack.invoke(user="U0001", profile=profile, duration="1800")
    assert response.json["response_action"] == "update", response.json
    event = bot.store.list_by_invoker(ALICE, limit=1).items[0]
    return settled(bot, event.id)


def close(bot: Bot, event: BreakGlassEvent, after: timedelta = timedelta(minutes=20)) -> BreakGlassEvent:
    bot.clock.set(event.created_at + after)
    assert "Closed event" in reply_text(bot.slack.command(f"close {event.id} replica promoted", user="U0001"))
    return settled(bot, event.id)


def sweep(bot: Bot) -> None:
    bot.runtime.scheduler.sweep()
    bot.idle()


def digests(bot: Bot, event: BreakGlassEvent) -> list[dict[str, Any]]:
    """The activity messages of the event's audit thread, in order."""
    return [m for m in bot.fake.thread(AUDIT, event.audit_ts or "") if m["text"].startswith(":mag:")]


def stored(bot: Bot, event: BreakGlassEvent) -> ActivityDigest:
    current = bot.store.get(event.id)
    assert current.activity is not None
    return ActivityDigest.model_validate_json(current.activity)


def review_view(bot: Bot, event: BreakGlassEvent) -> dict[str, Any]:
    before = len(bot.fake.calls_to("views.open"))
    bot.slack.click("review_event", event.id, user="U0SECA")
    call = wait_until(lambda: bot.fake.calls_to("views.open")[before:], "the review modal")[0]
    bot.idle()
    return call.params["view"]


def assumed(cloudtrail: FakeCloudTrail) -> int:
    return len(cloudtrail.requests("sts"))


# -- the happy path, on both stores ------------------------------------------------------------------------


def test_digest_after_the_delay_in_the_thread_stored_in_the_modal_and_the_admin_cli(
    fake: FakeSlack,
    backend: tuple[Store, str],
    policy: Policy,
    clock: ManualClock,
    cloudtrail: FakeCloudTrail,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, url = backend
    bot = start_bot(fake, store, policy, clock, cloudtrail)
    try:
        event = invoke(bot)
        cloudtrail.add(*session_records(ALICE, event.created_at))
        event = close(bot, event)
        owed = [e for e in event.outbox if e.kind is OutboxKind.ACTIVITY_DIGEST]
        assert [e.not_before for e in owed] == [event.ended_at + DELAY]  # type: ignore[operator]

        # Not before ended_at + activity_delay: the sweep leaves it owed and asks CloudTrail nothing.
        clock.set(event.ended_at + DELAY - timedelta(seconds=1))  # type: ignore[operator]
        sweep(bot)
        assert assumed(cloudtrail) == 0 and digests(bot, event) == []
        assert bot.store.get(event.id).owes(OutboxKind.ACTIVITY_DIGEST)

        clock.set(event.ended_at + DELAY + timedelta(seconds=30))  # type: ignore[operator]
        sweep(bot)
        [message] = digests(bot, event)
        rendered = json.dumps(message["blocks"])
        for name in ("AttachRolePolicy", "PutBucketPolicy", "AuthorizeSecurityGroupIngress", "StopLogging"):
            assert name in rendered
        assert "<!channel>" not in rendered and "&lt;!channel&gt;" in rendered  # CloudTrail text is escaped
        assert "5 sensitive" in message["text"]
        digest = stored(bot, event)
        assert digest.status is DigestStatus.COMPLETE and not digest.early
        assert digest.sensitive_calls == 5 and digest.total_calls == 13 and digest.denied_calls == 3
        assert set(digest.regions_queried) == {"us-east-1", "eu-west-1"}
        assert [r.params.get("ExternalId") for r in cloudtrail.requests("sts")] == ["breakglass-ext-id"]
        assert not bot.store.get(event.id).outbox
        assert bot.fake.invalid_calls == []

        # Delivered once: later sweeps post nothing and ask CloudTrail nothing.
        requests = len(cloudtrail.requests())
        clock.advance(timedelta(hours=1))
        sweep(bot)
        assert len(digests(bot, event)) == 1 and len(cloudtrail.requests()) == requests

        # The review modal shows it; opening it gathers nothing more (the stored digest is complete).
        view = review_view(bot, event)
        assert "AWS activity" in json.dumps(view["blocks"]) and "AttachRolePolicy" in json.dumps(
            view["blocks"]
        )
        assert assumed(cloudtrail) == 1

        # breakglass-admin show and export (jsonl in full, csv as counts at the end).
        assert admin.main(["--store", url, "show", event.id]) == 0
        out = capsys.readouterr().out
        assert "activity digest: complete" in out and "AttachRolePolicy" in out and "[IAM]" in out
        since = (event.created_at - timedelta(days=1)).strftime("%Y-%m-%d")
        assert admin.main(["--store", url, "export", "--since", since, "--format", "jsonl"]) == 0
        [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert row["activity"]["sensitive_calls"] == 5 and len(row["activity"]["event_ids"]) == 13
        assert row["activity_status"] == "complete"
        assert admin.main(["--store", url, "export", "--since", since, "--format", "csv"]) == 0
        rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
        assert rows[0][-6:] == list(admin.EXPORT_COLUMNS[-6:])
        assert admin.EXPORT_COLUMNS[-6] == "activity_status" and "activity" not in rows[0]
        assert rows[1][-6] == "complete"
        values = dict(zip(rows[0], rows[1], strict=True))
        assert (values["activity_calls"], values["activity_write_calls"]) == ("13", "9")
        assert (values["activity_denied_calls"], values["activity_sensitive_calls"]) == ("3", "5")
    finally:
        bot.runtime.scheduler.shutdown(wait=False)
        bot.server.stop()


def test_a_profile_without_an_activity_role_gets_no_digest(abot: Bot, cloudtrail: FakeCloudTrail) -> None:
    event = close(abot, invoke(abot, profile="plain"))
    assert not event.owes(OutboxKind.ACTIVITY_DIGEST)
    abot.clock.advance(DELAY * 2)
    sweep(abot)
    assert digests(abot, event) == [] and assumed(cloudtrail) == 0
    assert "AWS activity" not in json.dumps(review_view(abot, event)["blocks"])
    assert not abot.store.get(event.id).outbox


# -- soft failures --------------------------------------------------------------------------------------------


def test_access_denied_on_assume_role_is_said_once_and_never_blocks_the_review(
    abot: Bot, cloudtrail: FakeCloudTrail
) -> None:
    cloudtrail.fail("sts", "AccessDenied", status=403, times=100, message="not authorized to assume")
    event = close(abot, invoke(abot))
    abot.clock.set(event.ended_at + DELAY + timedelta(seconds=1))  # type: ignore[operator]
    sweep(abot)
    [note] = digests(abot, event)
    assert note["text"] == ":mag: AWS activity could not be gathered"
    shown = json.dumps(note["blocks"])
    assert "AccessDenied" in shown and "not retried" in shown
    digest = stored(abot, event)
    assert digest.status is DigestStatus.FAILED and not digest.retryable
    assert not abot.store.get(event.id).outbox  # not retried: the operator must fix the role

    abot.clock.advance(timedelta(hours=2))
    sweep(abot)
    view = review_view(abot, event)  # the modal says what could not be gathered, and opens all the same
    assert "could not be gathered" in json.dumps(view["blocks"])
    response = abot.slack.submit(
        "breakglass_review",
        {"review_notes": "Checked by hand: CloudTrail role missing"},
        user="U0SECA",
        private_metadata=view["private_metadata"],  # the opened form's: decided in the ack
        view_id=view_id_of(abot.fake, view),
    )
    assert response.status == 200 and not response.body
    reviewed = settled(abot, event.id)
    assert reviewed.reviewed_by == "U0SECA"
    assert len(digests(abot, event)) == 1 and assumed(cloudtrail) == 1  # no regather of a permanent failure


def test_cloudtrail_outage_is_said_once_retried_with_backoff_and_posted_once_recovered(
    abot: Bot, cloudtrail: FakeCloudTrail
) -> None:
    cloudtrail.set_down(True)
    event = close(abot, invoke(abot))
    cloudtrail.add(*session_records(ALICE, event.created_at))
    abot.clock.set(event.ended_at + DELAY + timedelta(seconds=1))  # type: ignore[operator]
    sweep(abot)
    [note] = digests(abot, event)
    shown = json.dumps(note["blocks"])
    assert "will be retried" in shown and "lookup_events" in shown
    current = abot.store.get(event.id)
    assert current.activity_failures == 1
    [retry] = [e for e in current.outbox if e.kind is OutboxKind.ACTIVITY_DIGEST]
    assert retry.not_before is not None and retry.not_before > abot.clock.now()

    # The backoff is honoured: nothing is asked before the retry is due.
    requests = len(cloudtrail.requests())
    sweep(abot)
    assert len(cloudtrail.requests()) == requests

    # Still down at the retry: quiet (once per episode), retried again later.
    abot.clock.set(retry.not_before + timedelta(seconds=1))
    sweep(abot)
    assert len(cloudtrail.requests()) > requests and len(digests(abot, event)) == 1
    current = abot.store.get(event.id)
    assert current.activity_failures == 2
    [retry2] = [e for e in current.outbox if e.kind is OutboxKind.ACTIVITY_DIGEST]
    assert retry2.not_before is not None and retry2.not_before - abot.clock.now() > timedelta(seconds=90)

    cloudtrail.set_down(False)
    abot.clock.set(retry2.not_before + timedelta(seconds=1))
    sweep(abot)
    messages = digests(abot, event)
    assert len(messages) == 2 and "5 sensitive" in messages[1]["text"]
    assert stored(abot, event).status is DigestStatus.COMPLETE
    current = abot.store.get(event.id)
    assert current.activity_failures == 0 and not current.outbox
    abot.clock.advance(timedelta(hours=3))
    sweep(abot)
    assert len(digests(abot, event)) == 2  # posted once


# -- early gather at review time, then the regather -----------------------------------------------------------


def test_early_gather_at_review_then_regather_after_the_delay_reaches_the_thread(
    abot: Bot, cloudtrail: FakeCloudTrail
) -> None:
    event = invoke(abot)
    records = session_records(ALICE, event.created_at)
    cloudtrail.add(*records[:5])  # CloudTrail has delivered only part of the session so far
    event = close(abot, event)

    # Security opens the review form at once: nothing is stored yet, so a gather is owed now (early).
    view = review_view(abot, event)
    assert "has not been gathered yet" in json.dumps(view["blocks"])
    [early] = wait_until(lambda: digests(abot, event) or None, "the early digest")
    assert "gathered before CloudTrail" in json.dumps(early["blocks"])
    first = stored(abot, event)
    assert first.early and first.total_calls == 5
    pending = [e for e in abot.store.get(event.id).outbox if e.kind is OutboxKind.ACTIVITY_DIGEST]
    assert [e.not_before for e in pending] == [event.ended_at + DELAY]  # type: ignore[operator]

    # Opening the form again before the delay gathers nothing more (the late gather is owed already).
    review_view(abot, event)
    assert assumed(cloudtrail) == 1

    # The rest arrives late; the review is recorded after the delay: the thread gets the newer digest.
    cloudtrail.add(
        *records[5:],
        sso_record(
            ALICE,
            event.created_at + timedelta(minutes=19),
            "iam.amazonaws.com",
            "CreateAccessKey",
            read_only=False,
            request={"userName": "ops"},
        ),
    )
    abot.clock.set(event.ended_at + DELAY + timedelta(minutes=1))  # type: ignore[operator]
    response = abot.slack.submit(
        "breakglass_review",
        {"review_notes": "Early evidence looked fine; checking the full digest"},
        user="U0SECA",
        private_metadata=json.dumps({"event_id": event.id}),
    )
    assert response.status == 200
    abot.idle()
    messages = wait_until(lambda: digests(abot, event)[1:] or None, "the newer digest")
    assert "CreateAccessKey" in json.dumps(messages[-1]["blocks"])
    newer = stored(abot, event)
    assert not newer.early and newer.total_calls == len(records) + 1 and newer.sensitive_calls == 6
    assert assumed(cloudtrail) == 2 and len(digests(abot, event)) == 2
    assert not abot.store.get(event.id).outbox
    assert abot.store.get(event.id).reviewed_by == "U0SECA"


def test_retries_stop_after_a_long_outage_and_review_time_gathers_again(
    abot: Bot, cloudtrail: FakeCloudTrail
) -> None:
    from bot.evidence import MAX_FAILURES

    cloudtrail.set_down(True)
    event = close(abot, invoke(abot))
    cloudtrail.add(*session_records(ALICE, event.created_at))
    abot.clock.set(event.ended_at + DELAY + timedelta(seconds=1))  # type: ignore[operator]
    for _ in range(MAX_FAILURES):
        sweep(abot)
        owed = [e for e in abot.store.get(event.id).outbox if e.kind is OutboxKind.ACTIVITY_DIGEST]
        if not owed:
            break
        abot.clock.set(owed[0].not_before + timedelta(seconds=1))  # type: ignore[operator]
    current = abot.store.get(event.id)
    assert current.activity_failures == MAX_FAILURES and not current.outbox
    texts = [m["text"] for m in digests(abot, event)]
    assert len(texts) == 2 and "no more automatic retries" in texts[1]  # the first failure, then giving up

    # CloudTrail is back; recording the review gathers again (the stored digest is a retryable failure).
    cloudtrail.set_down(False)
    response = abot.slack.submit(
        "breakglass_review",
        {"review_notes": "Reviewed during the CloudTrail outage"},
        user="U0SECA",
        private_metadata=json.dumps({"event_id": event.id}),
    )
    assert response.status == 200
    abot.idle()
    messages = wait_until(lambda: digests(abot, event)[2:] or None, "the digest after the outage")
    assert "5 sensitive" in messages[-1]["text"]
    assert stored(abot, event).status is DigestStatus.COMPLETE
    assert abot.store.get(event.id).activity_failures == 0


def test_identity_center_sessions_are_looked_up_by_the_identity_stored_at_invoke_time(
    fake: FakeSlack, policy: Policy
) -> None:
    """The role session name is the identity-store user name: the email the user was found by when the
    event was invoked, stored with it. An invoker who changes their Slack email after closing must not get
    an empty "complete" digest: the Slack profile is never asked at gather time."""

    from bot.evidence import activity_target, session_names
    from tests.fake_cloudtrail import identity_center_access
    from tests.store_fixtures import T0, make_event

    access = identity_center_access("alice@example.com")
    fake.add_user("U0001", email="mallory@example.com")  # changed after the event
    slack_id = make_event(invoker="U0001", profile="sandbox", now=T0, slack_user_id="U0001", access=access)
    by_email = make_event(
        invoker="Alice@Example.com", profile="sandbox", now=T0, slack_user_id="U0001", access=access
    )

    calls = len(fake.calls_to("users.info"))
    assert session_names(slack_id) == ("U0001", "alice@example.com")
    assert session_names(by_email) == ("Alice@Example.com",)
    target = activity_target(policy, slack_id, ("U0001", "alice@example.com"))
    assert target is not None and target.sso_permission_set == "BreakGlassAdmin"
    assert len(fake.calls_to("users.info")) == calls  # the Slack profile is never asked

    plain = make_event(invoker="U0001", profile="sandbox", now=T0, slack_user_id="U0001")
    assert session_names(plain) == ("U0001",)
    target = activity_target(policy, plain)
    assert target is not None and target.sso_permission_set is None  # `none` provider: no role binding


def test_a_broken_audit_channel_keeps_the_digest_owed_until_it_is_repaired(
    abot: Bot, cloudtrail: FakeCloudTrail
) -> None:
    """The digest is an audit-channel step: while the channel refuses posts for good it stays owed (the
    audit fallback tells security) and is posted once, in the thread, after the channel is repaired."""
    from bot.delivery.fallback import AUDIT_RECHECK

    event = close(abot, invoke(abot))
    cloudtrail.add(*session_records(ALICE, event.created_at))
    abot.fake.add_channel(AUDIT, is_archived=True)
    abot.clock.set(event.ended_at + DELAY + timedelta(seconds=1))  # type: ignore[operator]
    sweep(abot)
    assert digests(abot, event) == []
    assert abot.store.get(event.id).owes(OutboxKind.ACTIVITY_DIGEST)

    abot.fake.add_channel(AUDIT)  # unarchived
    abot.clock.advance(AUDIT_RECHECK * 1.3)
    sweep(abot)
    [message] = digests(abot, event)
    assert "5 sensitive" in message["text"]
    assert not abot.store.get(event.id).owes(OutboxKind.ACTIVITY_DIGEST)
    abot.clock.advance(AUDIT_RECHECK * 2)
    sweep(abot)
    assert len(digests(abot, event)) == 1
