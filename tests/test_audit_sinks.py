"""The audit feed's sinks (bot/audit_feed/sinks.py), delivered through the outbox: S3 with Object Lock,
EventBridge with a rule to SQS, JSON lines on a file; a failing sink retried and delivered once, never a
second copy across a retry, and the Object Lock check at start-up. On moto (in-process)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bot.audit_feed import event_records
from bot.audit_feed.ocsf import canonical, without_day
from bot.audit_feed.sinks import (
    AuditFeed,
    FeedConfigError,
    FileSink,
    S3Sink,
    StreamSink,
    deliver,
    parse_sinks,
    s3_key,
)
from bot.clock import ManualClock
from bot.config import ConfigError
from bot.delivery.errors import DeliveryFailed
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from store import BreakGlassEvent
from store.model import OutboxKind
from store.sqlite import SQLiteStore
from tests.conftest import AWS_TEST_ENV, Bot, dynamodb_bot, make_bot
from tests.store_fixtures import make_event
from tests.test_flows_close import invoke, settled, submit_close, wait_until
from tests.test_flows_review_home import submit_review

BUCKET = "audit-feed"
QUEUE = "feed-queue"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """moto: an Object Lock bucket (COMPLIANCE, 1 day) and the default bus with a rule to an SQS queue."""
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
        s3.put_object_lock_configuration(
            Bucket=BUCKET,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
            },
        )
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events = boto3.client("events", region_name="us-east-1")
        events.put_rule(Name="breakglass-feed", EventPattern=json.dumps({"source": ["breakglass"]}))
        events.put_targets(Rule="breakglass-feed", Targets=[{"Id": "queue", "Arn": arn}])
        yield {"s3": s3, "sqs": sqs, "queue": queue, "events": events}


def feed_spec(tmp_path: Path) -> str:
    return f"s3://{BUCKET}/breakglass,eventbridge://default,file:{tmp_path / 'audit.log'}"


def s3_records(s3: Any) -> dict[str, dict[str, Any]]:
    objects = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return {
        o["Key"]: without_day(json.loads(s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()))
        for o in objects
    }


def queued(aws: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        got = aws["sqs"].receive_message(QueueUrl=aws["queue"], MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return messages
        for m in got:
            messages.append(json.loads(m["Body"]))
            aws["sqs"].delete_message(QueueUrl=aws["queue"], ReceiptHandle=m["ReceiptHandle"])


def file_lines(tmp_path: Path) -> list[dict[str, Any]]:
    """The file sink's records, without their place in the day's chain (to compare with event_records)."""
    path = tmp_path / "audit.log"
    return [without_day(json.loads(line)) for line in path.read_text().splitlines()] if path.exists() else []


def invoked(bot: Bot) -> BreakGlassEvent:
    """Invoke through the modal; the stored event at once (its feed may still be owed)."""
    response = bot.slack.invoke(user="U0001")
    assert response.json["response_action"] == "update", response.json
    (event,) = bot.store.list_active()
    return event


def fed(bot: Bot, event_id: str, steps: int) -> BreakGlassEvent:
    """The event once every sink has its `steps` records."""

    def check() -> BreakGlassEvent | None:
        event = settled(bot, event_id)
        return event if len(event.audit_feed_sent) == 3 * steps and not event.outbox else None

    return wait_until(check, f"the audit feed of {event_id}")


@pytest.fixture
def feed_bot(
    fake: FakeSlack,
    store: SQLiteStore,
    policy: Policy,
    clock: ManualClock,
    aws: dict[str, Any],
    tmp_path: Path,
) -> Iterator[Bot]:
    bot = make_bot(fake, store, policy, clock, breakglass_audit_feed=feed_spec(tmp_path))
    yield bot
    bot.runtime.scheduler.shutdown(wait=False)
    bot.server.stop()


def test_every_step_reaches_s3_eventbridge_and_the_file_once(
    feed_bot: Bot, aws: dict[str, Any], tmp_path: Path
) -> None:
    bot = feed_bot
    event = invoke(bot)
    fed(bot, event.id, 1)
    assert submit_close(bot, event.id, "incident resolved").status == 200
    bot.idle()
    fed(bot, event.id, 2)
    assert submit_review(bot, event.id, "commands match the incident").status == 200
    bot.idle()
    stored = fed(bot, event.id, 3)
    expected = event_records(stored)
    assert [r["unmapped"]["breakglass"]["step"] for r in expected] == ["invoked", "closed", "reviewed"]

    # S3: one object per record, dated keys, byte for byte the record
    objects = s3_records(aws["s3"])
    assert objects == {s3_key("breakglass", r): r for r in expected}
    day = stored.created_at
    assert f"breakglass/year={day:%Y}/month={day:%m}/day={day:%d}/{event.id}:invoked.json" in objects
    # every object is under the bucket's COMPLIANCE retention
    head = aws["s3"].head_object(Bucket=BUCKET, Key=s3_key("breakglass", expected[0]))
    assert head["ObjectLockMode"] == "COMPLIANCE"

    # EventBridge: through the rule to SQS, one message per record, detail-type per step
    messages = queued(aws)
    assert sorted(m["detail-type"] for m in messages) == sorted(
        f"breakglass.{s}" for s in ("invoked", "closed", "reviewed")
    )
    assert {m["source"] for m in messages} == {"breakglass"}
    assert sorted((without_day(m["detail"]) for m in messages), key=lambda r: r["time"]) == expected

    # the file: JSON lines, the canonical record each, as every sink has it (its day's place included)
    assert file_lines(tmp_path) == expected
    lines = (tmp_path / "audit.log").read_bytes().splitlines()
    sent = [json.loads(line) for line in lines]
    assert lines == [canonical(r) for r in sent]
    assert sorted(canonical(m["detail"]) for m in messages) == sorted(lines)  # the same in every sink
    assert [r["unmapped"]["breakglass"]["day_chain"]["seq"] for r in sent] == [1, 2, 3]


def test_a_failing_sink_is_retried_and_delivered_once(
    feed_bot: Bot, aws: dict[str, Any], tmp_path: Path
) -> None:
    """S3 refuses (the bucket policy denies, here: the bucket is gone): the other sinks get the record at
    once; S3 stays owed, is retried after the backoff, and gets it once; EventBridge and the file are not
    sent it again."""
    bot = feed_bot
    s3 = aws["s3"]
    sink = next(s for s in bot.runtime.pipeline.deps.audit_feed.sinks if isinstance(s, S3Sink))
    real_bucket, sink.bucket = sink.bucket, "no-such-bucket"
    event = invoked(bot)

    def failing() -> BreakGlassEvent | None:
        ev = bot.store.get(event.id)
        return ev if ev.owes(OutboxKind.AUDIT_FEED) and len(ev.audit_feed_sent) == 2 else None

    stuck = wait_until(failing, "the other sinks to have the record while S3 fails")
    assert sorted(stuck.audit_feed_sent) == ["eventbridge:invoked", "file:invoked"]
    assert s3_records(s3) == {}
    sink.bucket = real_bucket  # S3 works again
    bot.clock.advance(60)  # past the backoff
    bot.runtime.pipeline.deliver_owed()
    stored = fed(bot, event.id, 1)
    assert list(s3_records(s3).values()) == event_records(stored)
    assert len(queued(aws)) == 1
    assert len(file_lines(tmp_path)) == 1


def test_no_duplicate_when_the_outcome_of_a_send_was_lost(
    feed_bot: Bot, aws: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 accepted the record but recording that failed (the store write was lost, as if the process died
    right after the put): the retry puts again, the conditional put refuses a second copy, and it counts
    as delivered; the other sinks get the record once."""
    bot = feed_bot
    feed = bot.runtime.pipeline.deps.audit_feed
    real = feed.record_sent
    lost: list[tuple[str, ...]] = []

    def lose_first(event_id: str, marks: Any) -> None:
        if not lost:
            lost.append(tuple(marks))
            raise DeliveryFailed("simulated: the recording write was lost")
        real(event_id, marks)

    monkeypatch.setattr(feed, "record_sent", lose_first)
    event = invoked(bot)
    wait_until(lambda: lost, "the first attempt")
    bot.idle()
    assert lost == [("s3:invoked",)] and bot.store.get(event.id).audit_feed_sent == ()
    bot.clock.advance(60)  # past the backoff
    bot.runtime.pipeline.deliver_owed()
    stored = fed(bot, event.id, 1)
    versions = aws["s3"].list_object_versions(Bucket=BUCKET).get("Versions", [])
    assert len(versions) == 1  # the conditional put refused the second write
    assert list(s3_records(aws["s3"]).values()) == event_records(stored)
    assert len(queued(aws)) == 1
    assert file_lines(tmp_path) == event_records(stored)


def test_the_file_sink_does_not_append_a_record_it_already_has(tmp_path: Path) -> None:
    """After an unknown outcome (a retry), the file's tail is searched for each record's uid first."""
    sink = FileSink(tmp_path / "audit.log")
    records = event_records(make_event())
    assert sink.send(records, retry=False) == {r["metadata"]["uid"] for r in records}
    assert sink.send(records, retry=True) == {r["metadata"]["uid"] for r in records}
    assert file_lines(tmp_path) == records
    sink.send(records, retry=False)  # a first attempt does not look (nothing can be there)
    assert len(file_lines(tmp_path)) == 2 * len(records)


def test_the_feed_on_dynamodb_records_what_each_sink_has(
    fake: FakeSlack,
    policy: Policy,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.log"
    with dynamodb_bot(fake, policy, clock, monkeypatch, "feed") as bot:
        bot.runtime.pipeline.deps.audit_feed = AuditFeed(bot.store, parse_sinks(f"file:{path}"))
        event = invoke(bot)

        def recorded() -> BreakGlassEvent | None:
            ev = bot.store.get(event.id)
            return ev if ev.audit_feed_sent == ("file:invoked",) else None

        stored = wait_until(recorded, "the file sink's record on DynamoDB")
        assert not stored.outbox
        sent = [json.loads(line) for line in path.read_text().splitlines()]
        assert [without_day(r) for r in sent] == event_records(stored)
        day = sent[0]["unmapped"]["breakglass"]["day_chain"]["day"]
        assert [link.uid for link in bot.store.day_chain(day)] == [r["metadata"]["uid"] for r in sent]


# -- units --------------------------------------------------------------------------------------------


def test_stdout_sink_writes_json_lines_and_records_them(store: SQLiteStore) -> None:
    out = io.StringIO()
    event = store.create(make_event())
    feed = AuditFeed(store, [StreamSink(stream=lambda: out)])
    assert feed.owe(event).owes(OutboxKind.AUDIT_FEED)
    deliver(feed, event)
    assert [without_day(json.loads(line)) for line in out.getvalue().splitlines()] == event_records(event)
    stored = store.get(event.id)
    assert stored.audit_feed_sent == ("stdout:invoked",)
    assert not feed.owe(stored).owes(OutboxKind.AUDIT_FEED)  # nothing left for the sink
    assert not AuditFeed(store).owe(event).outbox  # no sinks: nothing owed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("stdout,stdout", "at most one stdout sink"),
        ("s3://", "give the bucket"),
        ("file:", "give the file's path"),
        ("eventbridge://", "give the event bus"),
        ("kafka://x", "is not a sink"),
    ],
)
def test_bad_sink_settings_are_refused_with_a_reason(
    fake: FakeSlack, store: SQLiteStore, policy: Policy, clock: ManualClock, spec: str, message: str
) -> None:
    with pytest.raises(FeedConfigError, match=message):
        parse_sinks(spec)
    with pytest.raises(ConfigError, match=f"BREAKGLASS_AUDIT_FEED: .*{message}"):
        make_bot(fake, store, policy, clock, breakglass_audit_feed=spec)


def test_s3_keys_are_partitioned_by_the_records_day() -> None:
    record = event_records(make_event())[0]
    assert s3_key("/bg/", record).startswith("bg/year=")
    assert s3_key("", record).endswith(f"/{record['metadata']['uid']}.json")


def test_object_lock_is_checked_at_start_up(
    fake: FakeSlack,
    store: SQLiteStore,
    policy: Policy,
    clock: ManualClock,
    aws: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    aws["s3"].create_bucket(Bucket="plain-bucket")
    aws["s3"].create_bucket(Bucket="governed", ObjectLockEnabledForBucket=True)
    aws["s3"].put_object_lock_configuration(
        Bucket="governed",
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )
    with caplog.at_level(logging.WARNING):
        bot = make_bot(fake, store, policy, clock, breakglass_audit_feed="s3://plain-bucket/x")
        bot.server.stop()
    assert any("audit feed bucket plain-bucket has no Object Lock" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        bot = make_bot(fake, store, policy, clock, breakglass_audit_feed=f"s3://{BUCKET}/x")
        bot.server.stop()
    assert not [r for r in caplog.records if "Object Lock" in r.getMessage()]
    for bucket, says in (
        ("plain-bucket", "has no Object Lock"),
        ("governed", "has Object Lock but not in compliance mode"),
    ):
        with pytest.raises(ConfigError, match=f"audit feed bucket {bucket} {says}"):
            make_bot(
                fake,
                store,
                policy,
                clock,
                breakglass_audit_feed=f"s3://{bucket}",
                breakglass_audit_feed_object_lock="required",
            )


def test_verify_audit_reads_an_s3_sink(
    feed_bot: Bot, aws: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """`breakglass-admin verify-audit s3://bucket/prefix`: the bucket matches the store; then a new
    version of one object (Object Lock keeps the old one, but readers see the new), an object the store
    does not know, and a record copied under another key are each reported."""
    from bot import admin

    bot = feed_bot
    event = invoke(bot)
    assert submit_close(bot, event.id, "incident resolved").status == 200
    bot.idle()
    stored = fed(bot, event.id, 2)
    url = f"sqlite:///{bot.store.path}"
    verify = ("--store", url, "verify-audit", f"s3://{BUCKET}/breakglass")
    assert admin.main(list(verify)) == 0
    assert "every chain holds" in capsys.readouterr().err

    s3 = aws["s3"]
    invoked_record, closed_record = (
        json.loads(s3.get_object(Bucket=BUCKET, Key=s3_key("breakglass", r))["Body"].read())
        for r in event_records(stored)
    )
    edited = {**closed_record, "message": "closed: nothing to see"}
    s3.put_object(Bucket=BUCKET, Key=s3_key("breakglass", closed_record), Body=canonical(edited))
    stranger = json.loads(json.dumps(invoked_record))
    stranger["unmapped"]["breakglass"]["event_id"] = "00000000000000aa"
    stranger["metadata"]["uid"] = "00000000000000aa:invoked"
    s3.put_object(Bucket=BUCKET, Key=s3_key("breakglass", stranger), Body=canonical(stranger))
    s3.put_object(Bucket=BUCKET, Key="breakglass/copied.json", Body=canonical(invoked_record))
    assert admin.main(list(verify)) == 1
    out = capsys.readouterr().out.splitlines()
    uid = invoked_record["metadata"]["uid"]
    assert (
        f"s3://{BUCKET}/breakglass/copied.json: holds {uid}, whose key is {s3_key('breakglass', invoked_record)}"
        in out
    )
    assert (
        f"{closed_record['metadata']['uid']}: edited (differs from the record the stored event gives)" in out
    )
    assert "00000000000000aa:invoked: unknown record (the store has no event 00000000000000aa)" in out
    assert f"{uid}: duplicate record" in out
