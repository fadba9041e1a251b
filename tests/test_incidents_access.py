"""Access ends with the incident on the real access provider and on Lambda: a signed PagerDuty resolve
webhook closes the linked event and its IAM Identity Center assignment is revoked (moto server); on
Lambda (DynamoDB store) the webhook closes the event, the minute sweep delivers the revoke and the
announcements, and a replayed delivery is ignored by the store's claim."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest

from bot import lambda_handler
from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import parse_policy
from bot.service import InvokeRequest
from store import Status
from store.dynamodb import DynamoDBStore
from store.sqlite import SQLiteStore
from tests.access_world import Aws
from tests.conftest import make_bot
from tests.fake_incidents import PD_TOKEN, FakePagerDuty
from tests.harness import http
from tests.test_flows_close import settled
from tests.test_incidents import PD_SECRET
from tests.test_lambda import FakeLambdaClient, LambdaContext, build_runtime, function_url_event

pytest_plugins = ["tests.store_fixtures", "tests.access_world"]

PD_SETTINGS: dict[str, Any] = {"pagerduty_api_token": PD_TOKEN, "pagerduty_webhook_secret": PD_SECRET}


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as fake:
        fake.add_incident("PINC001", 1234, "Checkout is down")
        yield fake  # type: ignore[misc]


def resolved_body(event_id: str) -> tuple[bytes, str]:
    body = json.dumps(
        {
            "event": {
                "id": event_id,
                "event_type": "incident.resolved",
                "data": {"id": "PINC001", "type": "incident"},
            }
        }
    ).encode()
    return body, "v1=" + hmac.new(PD_SECRET.encode(), body, hashlib.sha256).hexdigest()


def test_resolve_revokes_identity_center_access(
    aws: Aws, fake: FakeSlack, store: SQLiteStore, clock: ManualClock, pagerduty: FakePagerDuty
) -> None:
    policy = parse_policy("incidents: {provider: pagerduty}\n" + aws.policy_text(), "p.yml")
    bot = make_bot(fake, store, policy, clock, pagerduty_api_url=pagerduty.url, **PD_SETTINGS)
    try:
        response = bot.slack.invoke(profile="sandbox", duration="1800", incident="1234")
        assert response.json["response_action"] == "update", response.json
        (event,) = store.list_active()
        settled(bot, event.id)
        assert aws.assigned() == [aws.users["U0001"]]
        body, signature = resolved_body("E1")
        answer = http(
            "POST", bot.server.url + "/webhooks/pagerduty", body, {"X-PagerDuty-Signature": signature}
        )
        assert answer.json == {"status": "ok", "events": 1}
        closed = settled(bot, event.id)
        assert closed.status is Status.CLOSED and closed.closed_by == "PagerDuty"
        assert aws.assigned() == []
        assert closed.access is not None and closed.access.assignment_deleted_at is not None
    finally:
        bot.server.stop()


def test_lambda_webhook_on_dynamodb(
    moto_dynamodb: tuple[Any, str], fake: FakeSlack, clock: ManualClock, pagerduty: FakePagerDuty
) -> None:
    client, table = moto_dynamodb
    store = DynamoDBStore(table, client=client)
    policy = parse_policy(
        "audit_channel: C0AUDIT\nincidents: {provider: pagerduty}\nprofiles: {prod: {durations: [30m]}}\n",
        "p.yml",
    )
    runtime = build_runtime(fake, store, policy, clock, pagerduty_api_url=pagerduty.url, **PD_SETTINGS)
    lambda_handler.install(runtime, lambda_client=FakeLambdaClient())
    try:
        event = runtime.service.invoke(
            InvokeRequest(
                user_id="U0001",
                profile="prod",
                reason="incident",
                justification="Checkout is down; restarting the payment workers",
                duration="1800",
                incident="https://acme.pagerduty.com/incidents/PINC001",
            )
        )
        assert event.incident_link is not None and event.incident_link.id == "PINC001"
        lambda_handler.sweep_handler({}, None)
        body, signature = resolved_body("E7")

        def post(sig: str) -> dict[str, Any]:
            request = function_url_event(body.decode(), {"x-pagerduty-signature": sig}, encode=False)
            request["rawPath"] = request["requestContext"]["http"]["path"] = "/webhooks/pagerduty"
            return lambda_handler.handler(request, LambdaContext())

        assert post("v1=" + "0" * 64)["statusCode"] == 401
        assert json.loads(post(signature)["body"]) == {"status": "ok", "events": 1}
        assert json.loads(post(signature)["body"]) == {"status": "duplicate"}
        assert store.get(event.id).status is Status.CLOSED
        lambda_handler.sweep_handler({}, None)  # the minute sweep delivers what the close owes
        closed = store.get(event.id)
        assert closed.outbox == () and closed.closed_by == "PagerDuty"
        assert any("closed by PagerDuty" in m["text"] for m in fake.channel_messages("U0001"))
        assert pagerduty.notes == []  # no PAGERDUTY_FROM_EMAIL: PagerDuty needs one for notes
    finally:
        lambda_handler.reset()
