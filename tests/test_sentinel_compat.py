"""Sentinel compatibility: an event raised in Slack (identity: email_local_part) reads back through the
seed's item layout — keys, GSIs, attribute names and types, duration in nanoseconds, RFC 3339 times —
so a Sentinel deployment sharing the table honours it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import parse_policy
from store.dynamodb import table_definition
from tests.conftest import TEST_POLICY, Bot, dynamodb_bot

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
