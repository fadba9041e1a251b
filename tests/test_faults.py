"""Faults: Slack failing on each call the bot makes, DynamoDB throttled, failing or unreachable.
Users always get a clear answer; no half-written state; owed announcements arrive once Slack is back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from bot.slack.errors import STORE_DOWN
from store.dynamodb import DynamoDBStore, guard_id
from tests.conftest import Bot, dynamodb_bot, make_bot


@pytest.fixture
def ddb_bot(
    fake: FakeSlack, policy: Policy, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bot]:
    with dynamodb_bot(fake, policy, clock, monkeypatch, "faults") as bot:
        yield bot


def _throttle(*args: Any, **kwargs: Any) -> None:
    raise ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
        "TransactWriteItems",
    )


def test_dynamodb_throttled_user_told_nothing_granted_and_nothing_written(
    ddb_bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ddb_bot.store
    monkeypatch.setattr(store.client, "transact_write_items", _throttle)
    body = ddb_bot.slack.invoke(user="U0001").json
    assert body["response_action"] == "errors"
    assert body["errors"]["profile"] == STORE_DOWN
    assert "nothing was recorded" in STORE_DOWN
    monkeypatch.undo()
    assert store.list_active() == []
    assert (
        store.client.get_item(TableName="faults", Key={"id": {"S": guard_id("U0001", "sandbox")}}).get("Item")
        is None
    )
    assert ddb_bot.fake.calls_to("chat.postMessage") == []
    # once DynamoDB recovers the same request works
    assert ddb_bot.slack.invoke(user="U0001").json["response_action"] == "update"


@pytest.mark.parametrize("code", ["InternalServerError", "ThrottlingException"])
def test_dynamodb_errors_on_close_leave_the_event_active(
    ddb_bot: Bot, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    ddb_bot.slack.invoke(user="U0001")
    ddb_bot.idle()
    event = ddb_bot.store.list_active()[0]

    def fail(*args: Any, **kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": code, "Message": "x"}}, "TransactWriteItems")

    monkeypatch.setattr(ddb_bot.store.client, "transact_write_items", fail)
    response = ddb_bot.slack.command(f"close {event.id} finished with it", user="U0001")
    assert "Could not reach the break-glass store" in response.json["text"]
    monkeypatch.undo()
    assert ddb_bot.store.get(event.id).status.value == "active"


def test_dynamodb_unreachable(
    fake: FakeSlack, policy: Policy, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:1",
        config=Config(connect_timeout=0.5, read_timeout=0.5, retries={"mode": "standard", "max_attempts": 1}),
    )
    bot = make_bot(fake, DynamoDBStore("nowhere", client=client), policy, clock)  # type: ignore[arg-type]
    try:
        body = bot.slack.invoke(user="U0001").json
        assert body["errors"]["profile"] == STORE_DOWN
        from tests.harness import http

        assert http("GET", bot.server.url + "/healthz").status == 503
    finally:
        bot.server.stop()


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 500},
        {"status": 429, "retry_after": 1},
        {"error": "fatal_error"},
        {"error": "expired_trigger_id"},
    ],
    ids=["500", "429", "ok-false", "expired-trigger"],
)
def test_views_open_failing_tells_the_user_how_to_proceed(bot: Bot, failure: dict) -> None:
    bot.fake.fail("views.open", times=10, **failure)
    bot.slack.command("", user="U0001")
    reply = bot.fake.wait_for("response_url", timeout=15)[0]
    assert "Could not open the break-glass form" in reply.params["text"]
    assert "/breakglass &lt;profile&gt;" in reply.params["text"]  # the fast path still works (escaped mrkdwn)


def test_views_open_timeout(fake: FakeSlack, store, policy: Policy, clock: ManualClock) -> None:
    from bot.app import create_app, make_client
    from tests.conftest import settings_for
    from tests.harness import BotServer, SlackSender

    config = settings_for(fake)
    runtime = create_app(config, store, make_client(config, timeout=1), policy=policy, clock=clock)
    server = BotServer(runtime).start()
    try:
        fake.fail("views.open", times=5, status=500, delay=2)
        SlackSender(server.url, fake).command("", user="U0001")
        reply = fake.wait_for("response_url", timeout=20)[0]
        assert "Could not open" in reply.params["text"]
    finally:
        server.stop()


def test_ephemeral_refusal_failing_does_not_break_anything(bot: Bot) -> None:
    bot.slack.invoke(user="U0001")
    bot.idle()
    event = bot.store.list_active()[0]
    bot.fake.fail("chat.postEphemeral", times=10, error="channel_not_found")
    assert bot.slack.click("close_event", event.id, user="U0002").status == 200
    assert bot.store.get(event.id).status.value == "active"


@pytest.mark.parametrize("method", ["chat.postMessage", "chat.update"])
def test_each_announcement_call_failing_then_recovering_arrives_once(bot: Bot, method: str) -> None:
    bot.slack.invoke(user="U0001")
    bot.idle()
    event = bot.store.list_active()[0]
    bot.fake.fail(method, times=6, error="internal_error")
    bot.slack.command(f"close {event.id} finished for now", user="U0IC")
    bot.idle()
    assert bot.store.get(event.id).outbox  # still owed
    for _ in range(8):
        bot.clock.advance(400)
        bot.runtime.scheduler.sweep()
    stored = bot.store.get(event.id)
    assert stored.outbox == ()
    updates = [c for c in bot.fake.calls_to("chat.update") if c.ok and c.params["ts"] == stored.audit_ts]
    assert len(updates) == 1
    closes = [
        c
        for c in bot.fake.calls_to("chat.postMessage")
        if c.ok and c.params.get("thread_ts") == stored.audit_ts
    ]
    assert len(closes) == 1
    dms = [
        c
        for c in bot.fake.calls_to("chat.postMessage")
        if c.ok and c.params.get("channel") == "U0001" and "was closed by" in json.dumps(c.params)
    ]
    assert len(dms) == 1


def test_home_publish_failing_is_harmless(bot: Bot) -> None:
    bot.fake.fail("views.publish", times=10, status=500)
    assert (
        bot.slack.event(
            {"type": "app_home_opened", "user": "U0001", "channel": "D0001", "tab": "home"}
        ).status
        == 200
    )
    assert bot.slack.invoke(user="U0001").json["response_action"] == "update"


def test_write_timeout_is_reported_as_uncertain_not_as_nothing_granted(
    ddb_bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ReadTimeoutError

    from bot.slack.errors import STORE_UNCERTAIN

    original = ddb_bot.store.client.transact_write_items

    def applied_then_timed_out(**kwargs: Any) -> None:
        original(**kwargs)  # DynamoDB applied it, but the answer never came back
        raise ReadTimeoutError(endpoint_url="http://dynamodb")

    monkeypatch.setattr(ddb_bot.store.client, "transact_write_items", applied_then_timed_out)
    body = ddb_bot.slack.invoke(user="U0001").json
    assert body["errors"]["profile"] == STORE_UNCERTAIN
    assert "/breakglass list" in STORE_UNCERTAIN
    monkeypatch.undo()
    (event,) = ddb_bot.store.list_active()  # it was recorded: the user was not told otherwise
    ddb_bot.runtime.scheduler.sweep()
    ddb_bot.clock.advance(600)
    ddb_bot.runtime.scheduler.sweep()
    audit = [
        c for c in ddb_bot.fake.calls_to("chat.postMessage") if c.ok and c.params.get("channel") == "C0AUDIT"
    ]
    assert len(audit) == 1  # and announced by the sweep
    assert event.id in json.dumps(audit[0].params)


def test_a_retried_create_whose_first_attempt_landed_succeeds(
    ddb_bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore retries a transaction after a timeout; if the first attempt was applied, the retry's
    condition failures name our own event and guard: that is success, not stacked access."""
    original = ddb_bot.store.client.transact_write_items

    def applied_then_replayed(**kwargs: Any) -> Any:
        original(**kwargs)
        return original(**kwargs)  # the retry: cancelled, both conditions fail

    monkeypatch.setattr(ddb_bot.store.client, "transact_write_items", applied_then_replayed)
    body = ddb_bot.slack.invoke(user="U0001").json
    assert body["response_action"] == "update", body
    monkeypatch.undo()
    assert len(ddb_bot.store.list_active()) == 1
