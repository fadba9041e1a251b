"""WSGI entry point: `gunicorn bot.wsgi:app`. Serves POST /slack/events (the signature is verified on
the raw body by bot.verify before Bolt parses it, and again by Bolt), GET /healthz (see
BreakglassApp.health: 200 unless a check that stops this replica from recording access fails) and GET
/metrics (Prometheus text, bot.metrics; only with `Authorization: Bearer $BREAKGLASS_METRICS_TOKEN`, and
404 while that setting is unset)."""

from __future__ import annotations

import atexit
import hmac
import io
import json
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot import metrics
from bot.app import BreakglassApp
from bot.incidents.webhooks import MAX_BODY as WEBHOOK_MAX_BODY
from bot.incidents.webhooks import PATHS as WEBHOOK_PATHS
from bot.verify import MAX_BODY_BYTES, RequestGuard

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
LIVE_PATH = "/livez"
WORKER_BOOT_ERROR = 3  # gunicorn.arbiter.Arbiter.WORKER_BOOT_ERROR


class WSGIApp:
    def __init__(self, runtime: BreakglassApp) -> None:
        self.runtime = runtime
        self.slack = SlackRequestHandler(runtime.bolt, path=EVENTS_PATH)
        secret = runtime.settings.slack_signing_secret
        self.guard = RequestGuard(secret.get_secret_value() if secret else "")
        token = runtime.settings.breakglass_metrics_token
        self.metrics_token = token.get_secret_value().encode() if token else None
        self.metrics = metrics.PrometheusEndpoint(self._state) if self.metrics_token else None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            status, body = self.runtime.health()
            return _json(start_response, status, body)
        if path == LIVE_PATH and method in ("GET", "HEAD"):  # liveness: the process serves requests
            return _json(start_response, 200, {"status": "alive"})
        if path == METRICS_PATH and method in ("GET", "HEAD"):
            return self._metrics(environ, start_response)
        if path in WEBHOOK_PATHS:
            if method != "POST":
                return _json(start_response, 405, {"error": "use POST"}, [("Allow", "POST")])
            return self._incident_webhook(path, environ, start_response)
        if path == EVENTS_PATH:
            if method != "POST":
                return _json(start_response, 405, {"error": "use POST"}, [("Allow", "POST")])
            return self._slack_event(environ, start_response)
        return _json(start_response, 404, {"error": "not found"})

    def _incident_webhook(
        self, path: str, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """An incident tool's webhook (bot.incidents.webhooks: verified on the raw body first)."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > WEBHOOK_MAX_BODY:
            return _json(start_response, 413, {"error": "body too large"})
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
        status, answer = self.runtime.webhooks.handle(path, body, headers)
        return _json(start_response, status, answer)

    def _metrics(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Prometheus text, for a scraper that presents the metrics token (bot.metrics: counts and state
        say which profiles are in use and when; nothing a request from the Internet should read)."""
        if self.metrics is None or self.metrics_token is None:
            return _json(start_response, 404, {"error": "metrics are off: set BREAKGLASS_METRICS_TOKEN"})
        presented = environ.get("HTTP_AUTHORIZATION", "").encode()
        if not hmac.compare_digest(presented, b"Bearer " + self.metrics_token):
            return _json(
                start_response,
                401,
                {"error": "metrics need the metrics token"},
                [("WWW-Authenticate", "Bearer")],
            )
        body, content_type = self.metrics.render()
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    def _state(self) -> metrics.State:
        pipeline = self.runtime.pipeline
        return metrics.read_state(self.runtime.store, pipeline.clock.now(), pipeline.audit_channels.check)

    def _slack_event(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Verify the signature on the raw body, then hand Bolt a body it can parse."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            refusal = self.guard.too_large()
            return _json(start_response, refusal.status, {"error": refusal.reason})
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {
            key[5:].lower().replace("_", "-"): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        headers["content-type"] = environ.get("CONTENT_TYPE", "")
        refused = self.guard.check(body, headers)
        if refused is not None:
            return _json(start_response, refused.status, {"error": refused.reason})
        environ = {**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
        return self.slack(environ, start_response)


def _json(
    start_response: Callable[..., Any],
    status: int,
    body: dict[str, Any],
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *(extra or [])],
    )
    return [data]


def build_wsgi() -> WSGIApp:
    """Build from the environment; start the embedded scheduler unless BREAKGLASS_SCHEDULER=off."""
    from bot.runtime import build

    runtime = build()
    if runtime.settings.breakglass_scheduler == "embedded":
        runtime.scheduler.start()
    atexit.register(runtime.shutdown)
    return WSGIApp(runtime)


app: Any  # built on first access (module __getattr__ below), not at import


def __getattr__(name: str) -> Any:
    # `gunicorn bot.wsgi:app` builds the app in each worker, on first access (after the fork).
    if name == "app":
        global app
        try:
            app = build_wsgi()
        except SystemExit as exc:
            # build() printed every configuration problem. Under gunicorn, a worker exiting with any
            # other status is restarted forever; WORKER_BOOT_ERROR (3) makes the arbiter halt at once.
            # (`gunicorn -c python:bot.gunicorn_conf`, as in the Procfile, checks in the master: exit 2.)
            raise SystemExit(WORKER_BOOT_ERROR) from exc
        return app
    raise AttributeError(name)
