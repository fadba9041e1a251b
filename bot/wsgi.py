"""WSGI entry point: `gunicorn bot.wsgi:app`. Serves POST /slack/events (signature-verified by Bolt)
and GET /healthz (200 when the store answers, 503 otherwise)."""

from __future__ import annotations

import atexit
import json
from collections.abc import Callable, Iterable
from typing import Any

from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot.app import BreakglassApp

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
WORKER_BOOT_ERROR = 3  # gunicorn.arbiter.Arbiter.WORKER_BOOT_ERROR


class WSGIApp:
    def __init__(self, runtime: BreakglassApp) -> None:
        self.runtime = runtime
        self.slack = SlackRequestHandler(runtime.bolt, path=EVENTS_PATH)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            status, body = self.runtime.health()
            return _json(start_response, status, body)
        if path == EVENTS_PATH:
            if method != "POST":
                return _json(start_response, 405, {"error": "use POST"}, [("Allow", "POST")])
            return self.slack(environ, start_response)
        return _json(start_response, 404, {"error": "not found"})


def _json(
    start_response: Callable[..., Any],
    status: int,
    body: dict[str, Any],
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    data = json.dumps(body).encode()
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
    start_response(
        f"{status} {reason}",
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
