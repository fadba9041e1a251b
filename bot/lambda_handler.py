"""AWS Lambda entry points (see deploy/template.yaml).

* `handler(event, context)`: Slack's HTTP requests through a Function URL or API Gateway (payload v1 or
  v2). The app is built with `lazy_delivery=True` (and, like every runtime, `process_before_response=True`): each listener
  acks within Lambda's request, and delivery goes to a Bolt *lazy listener* (calling the same
  `bot.pipeline.Pipeline.deliver` as every other writer), which Bolt's `LambdaLazyListenerRunner` runs in
  a second, asynchronous invocation of this same function (`lambda:InvokeFunction` on itself). So the
  response to Slack never waits for the announcements.
* `sweep_handler(event, context)`: an EventBridge schedule (every minute) runs one scheduler sweep:
  warnings and expiries that are due, and owed announcements (the outbox), then returns the counts.

The runtime (settings, store, Bolt app) is built once per container and cached at module level.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
from typing import Any

from slack_bolt.adapter.aws_lambda import SlackRequestHandler
from slack_bolt.adapter.aws_lambda.lazy_listener_runner import LambdaLazyListenerRunner

from bot.app import BreakglassApp
from bot.incidents.webhooks import PATHS as WEBHOOK_PATHS
from bot.runtime import ConfigurationFailed
from bot.verify import MAX_BODY_BYTES, Refusal, RequestGuard, refuse

log = logging.getLogger(__name__)

# The lazy listener `create_app(..., lazy_delivery=True)` adds to every announcing listener.
LAZY_FUNCTION_NAME = "deliver_owed_announcements"
HEALTH_PATHS = ("/healthz",)

_lock = threading.Lock()
_runtime: BreakglassApp | None = None
_slack: SlackRequestHandler | None = None


def install(runtime: BreakglassApp, *, lambda_client: Any = None) -> SlackRequestHandler:
    """Use `runtime` for this container (tests pass their own runtime and a fake Lambda client)."""
    global _runtime, _slack
    if runtime.pipeline.post_ack_threads:
        raise ValueError("the Lambda runtime must be built with lazy_delivery=True")
    slack = SlackRequestHandler(runtime.bolt)
    if lambda_client is not None:
        runtime.bolt.listener_runner.lazy_listener_runner = LambdaLazyListenerRunner(
            slack.logger, lambda_client=lambda_client
        )
    _runtime, _slack = runtime, slack
    return slack


def reset() -> None:
    global _runtime, _slack
    with _lock:
        _runtime, _slack = None, None


def runtime() -> BreakglassApp:
    """The container's runtime, built from the environment on first use."""
    with _lock:
        if _runtime is None:
            from bot.runtime import build

            try:
                install(build(lazy_delivery=True))
            except ConfigurationFailed as exc:  # the init fails with every configuration problem
                raise RuntimeError(exc.message) from None
        assert _runtime is not None
        return _runtime


def _slack_handler() -> SlackRequestHandler:
    runtime()
    assert _slack is not None
    return _slack


def _method_and_path(event: dict[str, Any]) -> tuple[str | None, str]:
    context = event.get("requestContext") or {}
    http = context.get("http") or {}
    method = http.get("method") or context.get("httpMethod")
    path = event.get("rawPath") or event.get("path") or http.get("path") or "/"
    return method, path


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """HTTP: Slack's POSTs (signature verified on the raw body before Bolt parses it, then by Bolt),
    plus GET /healthz. The lazy-listener self-invocations (method NONE) come from this function, not
    from the internet, and go straight to Bolt."""
    method, path = _method_and_path(event)
    if method in ("GET", "HEAD") and path.rstrip("/").endswith(HEALTH_PATHS):
        status, body = runtime().health()
        return _response(status, body)
    if method == "POST" and path.rstrip("/") in WEBHOOK_PATHS:
        return _incident_webhook(path.rstrip("/"), event)
    if method == "POST":
        refusal = _verify(event)
        if refusal is not None:
            return _response(refusal.status, {"error": refusal.reason})
    return _slack_handler().handle(event, context)


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}


def _incident_webhook(path: str, event: dict[str, Any]) -> dict[str, Any]:
    """An incident tool's webhook (bot.incidents.webhooks verifies the raw body before parsing it)."""
    raw = event.get("body") or ""
    try:
        body = base64.b64decode(raw, validate=True) if event.get("isBase64Encoded") else raw.encode()
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return _response(400, {"error": "body is not valid base64"})
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    status, answer = runtime().webhooks.handle(path, body, headers)
    return _response(status, answer)


def _verify(event: dict[str, Any]) -> Refusal | None:
    secret = runtime().settings.slack_signing_secret
    guard = RequestGuard(secret.get_secret_value() if secret else "")
    raw = event.get("body") or ""
    if len(raw) > MAX_BODY_BYTES * 4 // 3 + 4:
        return guard.too_large()
    try:
        body = base64.b64decode(raw, validate=True) if event.get("isBase64Encoded") else raw.encode()
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return refuse(400, "body is not valid base64")
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    return guard.check(body, headers)


def sweep_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    """EventBridge schedule: one sweep (due warnings and expiries, owed announcements); returns counts."""
    counts = runtime().scheduler.sweep()  # includes the daily review reminder, once a day across runs
    log.info("sweep", extra={"action": "sweep", "outcome": "ok", **counts})
    return counts


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    # In Lambda, build during the init phase: a configuration error fails the init with its message
    # (and the function's first request), instead of surfacing on some later request.
    runtime()
