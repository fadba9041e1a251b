"""On Lambda every request but the health check is verified before Bolt sees it, whatever its HTTP method;
only Bolt's own lazy-listener self-invocation (told by the top-level key Lambda's event cannot get from an
HTTP client) skips the guard."""

from __future__ import annotations

import json
import logging

import pytest

from bot import lambda_handler
from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from store.sqlite import SQLiteStore
from tests.test_lambda import (
    JUSTIFICATION,
    FakeLambdaClient,
    LambdaContext,
    build_runtime,
    command_body,
    function_url_event,
    rest_api_event,
    signed_headers,
)

pytest_plugins = ["tests.store_fixtures"]

METHODS = ["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "NONE", "TRACE"]


@pytest.fixture
def lam(fake: FakeSlack, store: SQLiteStore, policy: Policy, clock: ManualClock) -> FakeLambdaClient:
    """The bot installed as the Lambda function's runtime; the fake Lambda client records self-invocations."""
    client = FakeLambdaClient()
    lambda_handler.install(build_runtime(fake, store, policy, clock), lambda_client=client)
    return client


def with_method(event: dict, method: str) -> dict:
    if "http" in event["requestContext"]:
        event["requestContext"]["http"]["method"] = method
    else:
        event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    return event


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", ["function-url", "rest-api"])
def test_unsigned_requests_with_any_method_get_401_before_bolt(
    lam: FakeLambdaClient,
    store: SQLiteStore,
    method: str,
    shape: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = "{not json"  # what used to reach Bolt unsigned and raise JSONDecodeError
    headers = {"content-type": "application/json", "x-slack-bolt-lazy-only": "1"}  # a header anyone can send
    build = function_url_event if shape == "function-url" else rest_api_event
    event = with_method(
        build(body, headers) if shape == "rest-api" else build(body, headers, encode=False), method
    )
    with caplog.at_level(logging.INFO):
        response = lambda_handler.handler(event, LambdaContext())
    assert response["statusCode"] == 401
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
    assert store.list_active() == []
    assert lam.invocations == []


@pytest.mark.parametrize("method", ["GET", "PUT", "NONE"])
def test_signed_requests_that_are_not_posts_get_405_and_change_nothing(
    lam: FakeLambdaClient, store: SQLiteStore, method: str
) -> None:
    body = command_body(f"sandbox 15m maintenance {JUSTIFICATION}")
    event = with_method(function_url_event(body, signed_headers(body)), method)
    assert lambda_handler.handler(event, LambdaContext())["statusCode"] == 405
    assert store.list_active() == []
    assert lam.invocations == []


def test_the_lazy_self_invocation_is_told_by_lambdas_event_not_by_a_header(
    lam: FakeLambdaClient, store: SQLiteStore
) -> None:
    body = command_body(f"sandbox 15m maintenance {JUSTIFICATION}")
    assert (
        lambda_handler.handler(function_url_event(body, signed_headers(body)), LambdaContext())["statusCode"]
        == 200
    )
    (invocation,) = lam.invocations
    lazy = json.loads(invocation["Payload"])
    assert lambda_handler.is_lazy_self_invocation(lazy)
    # The same event as an HTTP client could make it (the header, no top-level key) is not one.
    forged = {k: v for k, v in lazy.items() if k != "method"}
    assert not lambda_handler.is_lazy_self_invocation(forged)
    # Bolt's payload skips this guard (Bolt's own RequestVerification still checks the original signature).
    assert lambda_handler.handler(lazy, LambdaContext())["statusCode"] == 200
    (event,) = store.list_active()
    assert store.get(event.id).outbox == ()
