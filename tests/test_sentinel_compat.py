"""Sentinel compatibility: an event raised in Slack (identity: email_local_part) reads back through the
seed's item layout — keys, GSIs, attribute names and types, duration in nanoseconds, RFC 3339 times —
so a Sentinel deployment sharing the table honours it."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import parse_policy
from store import Status
from store.dynamodb import table_definition
from tests.conftest import TEST_POLICY, Bot, dynamodb_bot
from tests.test_flows_close import reply_text

SEED_ATTRIBUTES = {
    "id": "S",
    "invoker": "S",
    "profile": "S",
    "reason_code": "S",
    "justification": "S",
    "duration": "N",
    "status": "S",
    "created_at": "S",
    "updated_at": "S",
    "expires_at": "S",
    "ttl": "N",
    "request_id": "S",
}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


@pytest.fixture
def sentinel_bot(
    fake: FakeSlack, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Bot, object]]:
    policy = parse_policy(
        TEST_POLICY + "identity: email_local_part\nemail_domains: [example.com]\n", "sentinel.yml"
    )
    with dynamodb_bot(fake, policy, clock, monkeypatch, "sentinel-breakglass") as bot:
        yield bot, bot.store.client


def go_time(text: str) -> datetime:
    """Parse like Go's time.Parse(time.RFC3339Nano, ...)."""
    assert RFC3339.match(text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_table_has_the_seeds_keys_and_indexes() -> None:
    definition = table_definition("t")
    assert definition["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    indexes = {
        i["IndexName"]: [k["AttributeName"] for k in i["KeySchema"]]
        for i in definition["GlobalSecondaryIndexes"]
    }
    assert indexes["gsi-invoker"] == ["invoker", "created_at"]
    assert indexes["gsi-status"] == ["status", "created_at"]
    assert indexes["gsi-profile"] == ["profile", "created_at"]


def test_event_raised_in_slack_reads_back_through_the_seed_layout(sentinel_bot) -> None:
    bot, client = sentinel_bot
    assert (
        bot.slack.invoke(user="U0001", profile="sandbox", duration="1800").json["response_action"] == "update"
    )
    bot.idle()
    # What Sentinel does: look up the invoker's events on gsi-invoker, newest first.
    result = client.query(
        TableName="sentinel-breakglass",
        IndexName="gsi-invoker",
        KeyConditionExpression="invoker = :i",
        ExpressionAttributeValues={":i": {"S": "alice"}},  # alice@example.com -> alice
        ScanIndexForward=False,
    )
    (item,) = result["Items"]
    for name, kind in SEED_ATTRIBUTES.items():
        assert kind in item[name], (name, item[name])
    assert re.fullmatch(r"[0-9a-f]{16}", item["id"]["S"])
    assert item["status"]["S"] == "active"
    assert item["profile"]["S"] == "sandbox"
    assert item["reason_code"]["S"] == "incident"
    assert int(item["duration"]["N"]) == 1800 * 1_000_000_000  # Go time.Duration
    created, expires = go_time(item["created_at"]["S"]), go_time(item["expires_at"]["S"])
    go_time(item["updated_at"]["S"])
    assert expires - created == timedelta(seconds=1800)
    assert int(item["ttl"]["N"]) >= int((expires + timedelta(days=400)).timestamp())  # records outlive access
    # Sentinel's "is there an active event" check finds it by status too.
    active = client.query(
        TableName="sentinel-breakglass",
        IndexName="gsi-status",
        KeyConditionExpression="#s = :a",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":a": {"S": "active"}},
    )["Items"]
    assert [i["id"]["S"] for i in active] == [item["id"]["S"]]

    # Closing in Slack is visible to Sentinel with the seed's attribute names.
    bot.slack.command(f"close {item['id']['S']} incident over, access no longer needed", user="U0001")
    closed = client.get_item(TableName="sentinel-breakglass", Key={"id": item["id"]})["Item"]
    assert closed["status"]["S"] == "closed"
    assert closed["closed_by"]["S"] == "U0001"
    assert closed["closed_reason"]["S"] == "incident over, access no longer needed"
    assert go_time(closed["updated_at"]["S"]) >= created


# -- foreign and damaged items (issue 12.3) ------------------------------------------------------------------


def go_rfc3339nano(value: datetime) -> str:
    """How Go's time.Time marshals (RFC3339Nano): nanoseconds, trailing zeros trimmed, 'Z'."""
    fraction = f"{value.microsecond:06d}123".rstrip("0")
    return value.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def sentinel_item(event_id: str, now: datetime, *, minutes: int = 30, **extra: object) -> dict:
    """An active break-glass event as Sentinel writes it: the seed's attributes only (no Slack fields,
    no version), Go time formats, duration in nanoseconds, a justification shorter than ours allow."""
    created = now - timedelta(minutes=5)
    item = {
        "id": {"S": event_id},
        "invoker": {"S": "bob"},
        "profile": {"S": "sandbox"},
        "reason_code": {"S": "maintenance"},
        "justification": {"S": "db restore <!channel>"},
        "duration": {"N": str(minutes * 60 * 1_000_000_000)},
        "status": {"S": "active"},
        "created_at": {"S": go_rfc3339nano(created)},
        "updated_at": {"S": go_rfc3339nano(created)},
        "expires_at": {"S": go_rfc3339nano(created + timedelta(minutes=minutes))},
        "ttl": {"N": str(int((created + timedelta(days=7)).timestamp()))},
        "request_id": {"S": "req-sentinel-1"},
    }
    item.update(extra)  # type: ignore[arg-type]
    return item


def test_a_sentinel_event_is_listed_and_expired_like_ours(sentinel_bot) -> None:
    bot, client = sentinel_bot
    now = bot.clock.now()
    client.put_item(TableName="sentinel-breakglass", Item=sentinel_item("00000000000000aa", now))
    (foreign,) = bot.store.list_active()
    assert (foreign.source, foreign.slack_user_id, foreign.invoker) == ("sentinel", None, "bob")
    assert foreign.justification == "db restore <!channel>"  # as given, though under 20 characters
    assert foreign.expires_at - foreign.created_at == timedelta(minutes=30)

    listed = reply_text(bot.slack.command("list", user="U0IC"))
    assert "00000000000000aa" in listed and "bob (via sentinel)" in listed

    bot.runtime.scheduler.sweep()  # not due: nothing happens, and no warning for a foreign event
    assert bot.store.get("00000000000000aa").status is Status.ACTIVE
    assert bot.fake.calls_to("chat.postMessage") == []

    bot.clock.set(foreign.expires_at)
    counts = bot.runtime.scheduler.sweep()
    assert counts["expired"] == 1
    bot.idle()
    expired = bot.store.get("00000000000000aa")
    assert expired.status is Status.EXPIRED and expired.ended_at == foreign.expires_at
    assert expired.outbox == ()
    posts = [c for c in bot.fake.calls_to("chat.postMessage") if c.ok]
    assert [c.params["channel"] for c in posts] == ["C0AUDIT"]  # one audit message, no DM to anyone
    body = json.dumps(posts[0].params)
    assert "00000000000000aa" in body and "EXPIRED" in body and "bob (via sentinel)" in body
    assert "<@" not in body and "<!channel>" not in body  # no mention; the justification is escaped
    # Sentinel still reads it with its own attribute names
    item = client.get_item(TableName="sentinel-breakglass", Key={"id": {"S": "00000000000000aa"}})["Item"]
    assert item["status"]["S"] == "expired" and "slack_user_id" not in item
    assert bot.fake.invalid_calls == []


def test_a_damaged_item_is_logged_once_and_skipped(sentinel_bot, caplog: pytest.LogCaptureFixture) -> None:
    bot, client = sentinel_bot
    now = bot.clock.now()
    damaged = sentinel_item("00000000000000bb", now)
    del damaged["duration"]
    client.put_item(TableName="sentinel-breakglass", Item=damaged)
    client.put_item(
        TableName="sentinel-breakglass",
        Item=sentinel_item("00000000000000cc", now, reason_code={"S": "???"}),
    )
    client.put_item(TableName="sentinel-breakglass", Item=sentinel_item("00000000000000dd", now))
    assert (
        bot.slack.invoke(user="U0001", profile="sandbox", duration="900").json["response_action"] == "update"
    )
    bot.idle()
    with caplog.at_level(logging.ERROR, logger="store.dynamodb"):
        assert sorted(e.id for e in bot.store.list_active())[:1] == ["00000000000000dd"]
        listed = reply_text(bot.slack.command("list", user="U0IC"))
        bot.clock.advance(timedelta(hours=1))
        assert bot.runtime.scheduler.sweep()["expired"] == 2  # ours and the readable Sentinel event
    assert "00000000000000dd" in listed and "00000000000000bb" not in listed
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert sorted(r.getMessage().split("'")[1] for r in errors) == ["00000000000000bb", "00000000000000cc"]
    assert all(bot.store.get(e.id).status is Status.EXPIRED for e in bot.store.list_by_invoker("alice").items)


def test_one_failing_event_never_stops_the_sweep(sentinel_bot, monkeypatch: pytest.MonkeyPatch) -> None:
    bot, _ = sentinel_bot
    for user in ("U0001", "U0002"):
        assert (
            bot.slack.invoke(user=user, profile="sandbox", duration="900").json["response_action"] == "update"
        )
    bot.idle()
    first, second = bot.store.list_active()
    real_expire = bot.service.expire

    def expire(event_id: str):
        if event_id == first.id:
            raise RuntimeError("boom")
        return real_expire(event_id)

    monkeypatch.setattr(bot.service, "expire", expire)
    bot.clock.advance(timedelta(hours=1))
    counts = bot.runtime.scheduler.sweep()
    assert (counts["expired"], counts["failed"]) == (1, 1)
    assert bot.store.get(second.id).status is Status.EXPIRED
    monkeypatch.setattr(bot.service, "expire", real_expire)
    assert bot.runtime.scheduler.sweep()["expired"] == 1
