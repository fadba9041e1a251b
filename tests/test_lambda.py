"""Lambda entry points: the Slack HTTP handler (Function URL / API Gateway events, lazy delivery through
an asynchronous self-invocation) and the scheduled sweep, on SQLite and on moto's DynamoDB."""

from __future__ import annotations

import base64
import itertools
import json
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.signature import SignatureVerifier

from bot import ids, lambda_handler
from bot.app import BreakglassApp, create_app, make_slack_client
from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from bot.slack.lazy_decide import LAZY_DECIDE_NAME
from store import Status, Store
from store.dynamodb import DynamoDBStore
from store.model import OutboxKind
from store.sqlite import SQLiteStore
from tests.conftest import AWS_TEST_ENV, settings_for
from tests.harness import SIGNING_SECRET, TEAM
from tests.store_fixtures import make_event

pytest_plugins = ["tests.store_fixtures"]

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:breakglass-http"
JUSTIFICATION = "Restarting the stuck payment workers after the deploy"


@dataclass
class LambdaContext:
    function_name: str = "breakglass-http"
    invoked_function_arn: str = FUNCTION_ARN
    aws_request_id: str = "req-1"


@dataclass
class FakeLambdaClient:
    """Records `invoke` calls made by Bolt's LambdaLazyListenerRunner (the async self-invocation)."""

    invocations: list[dict[str, Any]] = field(default_factory=list)

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        self.invocations.append(kwargs)
        return {"StatusCode": 202}


@pytest.fixture(autouse=True)
def _reset_module_cache() -> Iterator[None]:
    lambda_handler.reset()
    yield
    lambda_handler.reset()


def build_runtime(
    fake: FakeSlack, store: Store, policy: Policy, clock: ManualClock, **overrides: object
) -> BreakglassApp:
    settings = settings_for(fake, **overrides)
    return create_app(
        settings,
        store,
        make_slack_client(settings, timeout=5),
        policy=policy,
        clock=clock,
        lazy_delivery=True,
    )


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "lambda.db")
    yield store
    store.disconnect()


_TRIGGERS = itertools.count(1)


# A response_url nobody listens on (a closed local port: refused at once). The tests that read the bot's answer
# pass the fake's (`FakeSlack.response_url`); the default never reaches the network (hooks.slack.com was looked
# up in DNS by every such post: 0.5-1.4 s each offline, and a real request to Slack wherever DNS answered).
NOWHERE = "http://127.0.0.1:9/commands/T0001/1/x"


def command_body(text: str, user: str = "U0001", response_url: str = NOWHERE) -> str:
    return urllib.parse.urlencode(
        {
            "token": "deprecated",
            "team_id": TEAM["id"],
            "team_domain": TEAM["domain"],
            "channel_id": "C0001",
            "channel_name": "ops",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/breakglass",
            "text": text,
            "api_app_id": "A0001",
            "is_enterprise_install": "false",
            "response_url": response_url,
            # unique per command: the fast path takes the trigger id as the request's idempotency key, so two
            # commands in one second with one id would be one request (the second a retry of the first)
            "trigger_id": f"{int(time.time())}.{next(_TRIGGERS)}.trigger",
        }
    )


def signed_headers(body: str, secret: str = SIGNING_SECRET) -> dict[str, str]:
    ts = str(int(time.time()))
    return {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": ts,
        "x-slack-signature": SignatureVerifier(secret).generate_signature(timestamp=ts, body=body),
    }


def function_url_event(body: str, headers: dict[str, str], *, encode: bool = True) -> dict[str, Any]:
    """Payload format 2.0 (Lambda Function URL / HTTP API); Function URLs base64-encode form bodies."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/slack/events",
        "rawQueryString": "",
        "headers": dict(headers),
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abc123",
            "domainName": "abc123.lambda-url.us-east-1.on.aws",
            "http": {
                "method": "POST",
                "path": "/slack/events",
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
                "userAgent": "Slackbot 1.0",
            },
            "requestId": "r-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "25/Nov/2026:10:00:00 +0000",
            "timeEpoch": int(time.time() * 1000),
        },
        "body": base64.b64encode(body.encode()).decode() if encode else body,
        "isBase64Encoded": encode,
    }


def rest_api_event(body: str, headers: dict[str, str]) -> dict[str, Any]:
    """Payload format 1.0 (API Gateway REST API, proxy integration)."""
    return {
        "resource": "/slack/events",
        "path": "/slack/events",
        "httpMethod": "POST",
        "headers": dict(headers),
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "requestContext": {"httpMethod": "POST", "path": "/prod/slack/events", "stage": "prod"},
        "body": body,
        "isBase64Encoded": False,
    }


def test_slash_command_acks_then_lazy_invocation_decides_and_announces(
    fake: FakeSlack, sqlite_store: SQLiteStore, policy: Policy, clock: ManualClock
) -> None:
    """The fast path acks empty; the lazy listener decides it from the same request, answers through
    response_url and delivers; Lambda retrying that invocation stores nothing twice."""
    lam = FakeLambdaClient()
    lambda_handler.install(build_runtime(fake, sqlite_store, policy, clock), lambda_client=lam)
    body = command_body(f"sandbox 15m maintenance {JUSTIFICATION}", response_url=fake.response_url("fast"))

    response = lambda_handler.handler(function_url_event(body, signed_headers(body)), LambdaContext())

    assert response["statusCode"] == 200, response
    assert response["body"] == ""  # an empty ack: decided after it
    assert sqlite_store.list_active() == []
    (invocation,) = lam.invocations
    assert invocation["FunctionName"] == FUNCTION_ARN
    assert invocation["InvocationType"] == "Event"

    # Lambda runs the asynchronous invocation: only the lazy listener runs, the command's ack is not re-run.
    lazy_event = json.loads(invocation["Payload"])
    assert lazy_event["headers"]["x-slack-bolt-lazy-function-name"] == LAZY_DECIDE_NAME
    assert lambda_handler.handler(lazy_event, LambdaContext())["statusCode"] == 200
    (event,) = sqlite_store.list_active()
    assert sqlite_store.get(event.id).outbox == ()
    (audit,) = fake.channel_messages("C0AUDIT")
    assert event.id in json.dumps(audit)
    (reply,) = fake.calls_to("response_url")
    assert event.id in json.dumps(reply.params) and "granted" in json.dumps(reply.params).lower()
    assert len(lam.invocations) == 1  # the lazy run does not start another one

    # Lambda retries the asynchronous invocation: nothing stored or announced twice, the same answer
    assert lambda_handler.handler(json.loads(invocation["Payload"]), LambdaContext())["statusCode"] == 200
    assert [e.id for e in sqlite_store.list_active()] == [event.id]
    assert len(fake.channel_messages("C0AUDIT")) == 1
    first, again = fake.calls_to("response_url")
    assert again.params["text"] == first.params["text"]


@pytest.mark.parametrize("text", ["", "sandbox", "close {event_id}"])
def test_a_command_that_only_opens_a_form_starts_no_lazy_run(
    text: str, fake: FakeSlack, sqlite_store: SQLiteStore, policy: Policy, clock: ManualClock
) -> None:
    """Opening a form stores nothing: no self-invocation (Bolt starts it before the response, and on a
    cold start it also builds the Lambda client first: docs/benchmarks.md 7c)."""
    held = sqlite_store.create(
        make_event(invoker="u0001@example.com", profile="sandbox", now=clock.now(), slack_user_id="U0001")
    )
    lam = FakeLambdaClient()
    lambda_handler.install(build_runtime(fake, sqlite_store, policy, clock), lambda_client=lam)
    body = command_body(text.format(event_id=held.id))

    response = lambda_handler.handler(function_url_event(body, signed_headers(body)), LambdaContext())

    assert response["statusCode"] == 200, response
    (opened,) = fake.calls_to("views.open")
    expected = ids.CALLBACK_CLOSE if text.startswith("close") else ids.CALLBACK_INVOKE
    assert opened.params["view"]["callback_id"] == expected
    assert lam.invocations == []
    # a command that may store a change still gets its lazy delivery run
    body = command_body("help")
    lambda_handler.handler(function_url_event(body, signed_headers(body)), LambdaContext())
    assert len(lam.invocations) == 1


def test_rest_api_event_and_subcommands_without_announcements(
    fake: FakeSlack, sqlite_store: SQLiteStore, policy: Policy, clock: ManualClock
) -> None:
    lam = FakeLambdaClient()
    lambda_handler.install(build_runtime(fake, sqlite_store, policy, clock), lambda_client=lam)
    body = command_body("help")
    response = lambda_handler.handler(rest_api_event(body, signed_headers(body)), LambdaContext())
    assert response["statusCode"] == 200
    assert "/breakglass" in response["body"]
    # Every command may announce, so a lazy run is started; it finds nothing owed.
    for invocation in lam.invocations:
        assert lambda_handler.handler(json.loads(invocation["Payload"]), LambdaContext())["statusCode"] == 200
    assert fake.channel_messages("C0AUDIT") == []


def test_forged_signature_is_rejected(
    fake: FakeSlack, sqlite_store: SQLiteStore, policy: Policy, clock: ManualClock
) -> None:
    lam = FakeLambdaClient()
    lambda_handler.install(build_runtime(fake, sqlite_store, policy, clock), lambda_client=lam)
    body = command_body(f"sandbox 15m maintenance {JUSTIFICATION}")
    event = function_url_event(body, signed_headers(body, secret="not-the-secret"), encode=False)
    assert lambda_handler.handler(event, LambdaContext())["statusCode"] == 401
    assert sqlite_store.list_active() == []
    assert lam.invocations == []


def test_health_check(fake: FakeSlack, sqlite_store: SQLiteStore, policy: Policy, clock: ManualClock) -> None:
    lambda_handler.install(build_runtime(fake, sqlite_store, policy, clock), lambda_client=FakeLambdaClient())
    event = {"rawPath": "/healthz", "requestContext": {"http": {"method": "GET", "path": "/healthz"}}}
    response = lambda_handler.handler(event, LambdaContext())
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["status"] == "ok"


def test_lazy_listener_on_every_announcing_listener(
    fake: FakeSlack, sqlite_store: SQLiteStore, policy: Policy, clock: ManualClock
) -> None:
    runtime = build_runtime(fake, sqlite_store, policy, clock)
    lazy = [
        [f.__name__ for f in listener.lazy_functions]
        for listener in runtime.bolt._listeners  # Bolt keeps registered listeners here
    ]
    # message_changed in an audit channel (an edit the bot did not make) delivers; /breakglass and the
    # invoke, close, review and extend modals decide what their ack did not, then deliver; the buttons,
    # App Home and the commands that only open a form announce nothing
    assert lazy.count([lambda_handler.LAZY_FUNCTION_NAME]) == 1
    assert lazy.count([LAZY_DECIDE_NAME]) == 5


def test_install_requires_lazy_delivery(
    fake: FakeSlack, sqlite_store: SQLiteStore, policy: Policy, clock: ManualClock
) -> None:
    settings = settings_for(fake)
    runtime = create_app(settings, sqlite_store, make_slack_client(settings), policy=policy, clock=clock)
    with pytest.raises(ValueError, match="lazy_delivery"):
        lambda_handler.install(runtime)


def test_runtime_is_built_once_per_container(
    fake: FakeSlack,
    sqlite_store: SQLiteStore,
    policy: Policy,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    builds: list[bool] = []

    def build(*, lazy_delivery: bool = False) -> BreakglassApp:
        builds.append(lazy_delivery)
        return build_runtime(fake, sqlite_store, policy, clock)

    monkeypatch.setattr("bot.runtime.build", build)
    assert lambda_handler.runtime() is lambda_handler.runtime()
    assert builds == [True]


def test_sweep_handler_on_dynamodb(
    moto_dynamodb: tuple[Any, str], fake: FakeSlack, policy: Policy, clock: ManualClock
) -> None:
    client, table = moto_dynamodb
    store = DynamoDBStore(table, client=client)
    lambda_handler.install(build_runtime(fake, store, policy, clock), lambda_client=FakeLambdaClient())
    due = store.create(
        make_event(
            invoker="alice@example.com",
            profile="sandbox",
            now=clock.now() - timedelta(hours=2),
            slack_user_id="U0001",
            audit_channel="C0AUDIT",
            outbox=(OutboxKind.AUDIT_POST, OutboxKind.DM_INVOKED),
        )
    )
    running = store.create(
        make_event(invoker="bob@example.com", profile="sandbox", now=clock.now(), slack_user_id="U0002")
    )

    counts = lambda_handler.sweep_handler({"source": "aws.events", "detail-type": "Scheduled Event"}, None)

    assert counts == {
        "active": 2,
        "warned": 0,
        "expired": 1,
        "owed": 0,
        "reminded": 0,
        "drift": 0,
        "incidents": 0,
        "revokes_overdue": 0,
    }
    assert store.get(due.id).status is Status.EXPIRED
    assert store.get(due.id).outbox == ()
    assert store.get(running.id).status is Status.ACTIVE
    (audit,) = fake.channel_messages("C0AUDIT")
    assert len(fake.thread("C0AUDIT", audit["ts"])) == 1  # the expiry notice

    clock.advance(timedelta(minutes=55))  # 1 h event, warned 15 min before its end
    counts = lambda_handler.sweep_handler({}, None)
    assert counts["warned"] == 1
    assert store.get(running.id).warned_at == clock.now()


def test_lazy_self_invocation_through_moto_lambda(
    fake: FakeSlack,
    sqlite_store: SQLiteStore,
    policy: Policy,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The asynchronous self-invocation goes through a real boto3 Lambda client (moto, no Docker); the
    payload it sent is then run as Lambda would run it."""
    import boto3
    from moto import mock_aws

    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    with mock_aws(config={"lambda": {"use_docker": False}}):
        lam = boto3.client("lambda", region_name="us-east-1")
        sent: list[dict[str, Any]] = []
        lam.meta.events.register(
            "provide-client-params.lambda.Invoke", lambda params, **_: sent.append(dict(params))
        )
        lambda_handler.install(build_runtime(fake, sqlite_store, policy, clock), lambda_client=lam)
        body = command_body(f"sandbox 15m maintenance {JUSTIFICATION}", response_url=fake.response_url("m"))
        response = lambda_handler.handler(function_url_event(body, signed_headers(body)), LambdaContext())
        assert response["statusCode"] == 200
        assert sqlite_store.list_active() == []  # decided after the ack, in the lazy invocation
        (invocation,) = sent
        assert invocation["FunctionName"] == FUNCTION_ARN
        assert invocation["InvocationType"] == "Event"
        lazy_event = json.loads(invocation["Payload"])
        assert lambda_handler.handler(lazy_event, LambdaContext())["statusCode"] == 200
        (event,) = sqlite_store.list_active()
        assert sqlite_store.get(event.id).outbox == ()
        assert [m for m in fake.channel_messages("C0AUDIT") if event.id in json.dumps(m)]
