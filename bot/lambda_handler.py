"""AWS Lambda entry points (see deploy/template.yaml).

* `handler(event, context)`: Slack's HTTP requests through a Function URL or API Gateway (payload v1 or
  v2). The app is built with `lazy_delivery=True` (and, like every runtime, `process_before_response=True`): each listener
  acks within Lambda's request, and delivery goes to a Bolt *lazy listener* (calling the same
  `Pipeline.deliver` of bot/delivery/engine.py as every other writer), which Bolt's `LambdaLazyListenerRunner` runs in
  a second, asynchronous invocation of this same function (`lambda:InvokeFunction` on itself). So the
  response to Slack never waits for the announcements.
* `sweep_handler(event, context)`: an EventBridge schedule (every minute) runs one scheduler sweep:
  warnings and expiries that are due, and owed announcements (the outbox), then returns the counts. The
  same function is the target of each event's one-time EventBridge Scheduler schedules (bot/schedules.py):
  their payload names the event and the step, done at its exact time.

Each invocation ends by writing what bot.metrics recorded during it as CloudWatch embedded metric format
lines on stdout (namespace `breakglass`); the sweep adds the state (active events, owed deliveries, broken
audit channels).

The runtime (settings, store, Bolt app) is built once per container and cached at module level.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from slack_bolt.adapter.aws_lambda import SlackRequestHandler
from slack_bolt.adapter.aws_lambda.lazy_listener_runner import LambdaLazyListenerRunner

from bot import metrics, schedules
from bot.app import BreakglassApp
from bot.incidents.webhooks import PATHS as WEBHOOK_PATHS
from bot.runtime import ConfigurationFailed
from bot.verify import MAX_BODY_BYTES, Refusal, RequestGuard, refuse

log = logging.getLogger(__name__)

# The lazy listener `create_app(..., lazy_delivery=True)` adds to every announcing listener.
LAZY_FUNCTION_NAME = "lambda_lazy_delivery"
HEALTH_PATHS = ("/healthz",)
FIRE_MARGIN = 30.0  # seconds of a fired schedule's invocation kept for the expiry and its revoke
sleep: Callable[[float], None] = time.sleep  # how a fired schedule waits for its due time (tests: a clock)

_lock = threading.Lock()
_runtime: BreakglassApp | None = None
_slack: SlackRequestHandler | None = None
_emf: metrics.EmfSink | None = None  # what this container's invocations recorded, flushed after each one


def install(runtime: BreakglassApp, *, lambda_client: Any = None) -> SlackRequestHandler:
    """Use `runtime` for this container (tests pass their own runtime and a fake Lambda client)."""
    global _runtime, _slack
    if runtime.pipeline.queue.enabled:
        raise ValueError("the Lambda runtime must be built with lazy_delivery=True")
    slack = SlackRequestHandler(runtime.bolt)
    if lambda_client is not None:
        runtime.bolt.listener_runner.lazy_listener_runner = LambdaLazyListenerRunner(
            slack.logger, lambda_client=lambda_client
        )
    _runtime, _slack = runtime, slack
    _attach_emf()
    return slack


def _attach_emf() -> None:
    global _emf
    if _emf is None:
        _emf = metrics.EmfSink()
        metrics.RECORDER.attach(_emf)


def reset() -> None:
    global _runtime, _slack, _emf
    with _lock:
        _runtime, _slack = None, None
        if _emf is not None:
            metrics.RECORDER.detach(_emf)
            _emf = None


def _flush_metrics(*, with_state: bool = False) -> None:
    """Write this invocation's metrics as EMF lines; a state the store cannot give is left out, logged."""
    if _emf is None:
        return
    state = None
    if with_state and _runtime is not None:
        pipeline = _runtime.pipeline
        try:
            state = metrics.read_state(_runtime.store, pipeline.clock.now(), pipeline.audit_channels.check)
        except Exception as exc:  # noqa: BLE001 - the sweep's own result must not depend on its metrics
            log.warning("metrics: could not read the state: %s", type(exc).__name__)
    _emf.flush(state)


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


def is_lazy_self_invocation(event: dict[str, Any]) -> bool:
    """Bolt's `LambdaLazyListenerRunner` re-invokes this function with the original request's event plus a
    top-level ``"method": "NONE"`` and the ``x-slack-bolt-lazy-only`` header. Lambda builds a Function URL or
    API Gateway event itself, and no HTTP request can add a top-level key to it (a client controls only its
    method, path, headers and body): so the top-level key, not the header or the HTTP method, tells a
    self-invocation (made with `lambda:InvokeFunction`, which only this function's role holds) from a request."""
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    return event.get("method") == "NONE" and headers.get("x-slack-bolt-lazy-only") == "1"


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """HTTP: GET /healthz, and Slack's POSTs: every other request, whatever its method, is verified on the
    raw body before Bolt parses it (then again by Bolt), and one that is not a POST gets 405. Only the
    lazy-listener self-invocations (`is_lazy_self_invocation`) go straight to Bolt."""
    try:
        return _handle(event, context)
    finally:
        _flush_metrics()


def _handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    method, path = _method_and_path(event)
    if method in ("GET", "HEAD") and path.rstrip("/").endswith(HEALTH_PATHS):
        status, body = runtime().health()
        return _response(status, body)
    if method == "POST" and path.rstrip("/") in WEBHOOK_PATHS:
        return _incident_webhook(path.rstrip("/"), event)
    if is_lazy_self_invocation(event):
        return _slack_handler().handle(event, context)
    refusal = _verify(event)
    if refusal is not None:
        return _response(refusal.status, {"error": refusal.reason})
    if method != "POST":
        log.warning(
            "refused a signed %s request to the Slack endpoint: Slack only POSTs",
            method,
            extra={"action": "verify", "outcome": 405},
        )
        return _response(405, {"error": "Slack requests are POSTs"})
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
    """EventBridge's minute schedule: one sweep (due warnings and expiries, owed announcements). An event's
    one-time schedule (bot/schedules.py, its payload names the event and the step): that step, at its
    time, at once (waiting for it within the invocation's time left). Returns counts. Either ends by
    delivering the audit-feed notices it stored (bot/delivery/prompt_notices.py) and writing its metrics
    (EMF); the minute sweep adds the state."""
    fired = schedules.parse_payload(event)
    try:
        if fired is not None:
            event_id, step = fired
            remaining = getattr(context, "get_remaining_time_in_millis", None)
            left = remaining() / 1000 if remaining is not None else 900.0  # Lambda's longest timeout
            counts = runtime().scheduler.fire(
                event_id, step, max_wait=max(0.0, left - FIRE_MARGIN), sleep=sleep
            )
            log.info(
                "schedule %s fired: %s",
                step,
                ", ".join(f"{k} {v}" for k, v in counts.items()),
                extra={"event_id": event_id, "action": "schedule", "outcome": "ok"},
            )
            return counts
        counts = runtime().scheduler.sweep()  # includes the daily review reminder, once a day across runs
        log.info("sweep", extra={"action": "sweep", "outcome": "ok", **counts})
        return counts
    finally:
        if _runtime is not None and _runtime.notices is not None:  # notices this run stored (e.g. drift)
            _runtime.notices.flush()
        _flush_metrics(with_state=fired is None)


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    # In Lambda, build during the init phase: a configuration error fails the init with its message
    # (and the function's first request), instead of surfacing on some later request.
    runtime()
