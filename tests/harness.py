"""Test harness: the bot's real WSGI endpoint on a loopback HTTP server, a fake Slack Web API, and a
client that signs requests exactly as Slack does (slack_sdk's SignatureVerifier)."""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from slack_sdk.signature import SignatureVerifier

from bot.app import BreakglassApp
from bot.localslack.webapi import FakeSlack
from bot.wsgi import WSGIApp

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-test-token"
TEAM = {"id": "T0001", "domain": "example-ws"}


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def text(self) -> str:
        return self.body.decode()


class BotServer:
    """Serves a BreakglassApp's WSGIApp on 127.0.0.1 (threaded), for signed requests in tests."""

    def __init__(self, runtime: BreakglassApp) -> None:
        self.runtime = runtime
        self.server = make_server(
            "127.0.0.1", 0, WSGIApp(runtime), server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def start(self) -> BotServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, then the bot: its scheduler, delivery workers and lease keeper (no thread of this
        bot keeps renewing leases or logging after the test)."""
        self.server.shutdown()
        self.server.server_close()
        self.runtime.scheduler.shutdown(wait=False)
        self.runtime.pipeline.shutdown(5)


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> Response:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Response(response.status, response.read(), dict(response.headers))
    except urllib.error.HTTPError as error:
        return Response(error.code, error.read(), dict(error.headers))


class SlackSender:
    """Sends what Slack sends: slash commands, interactivity payloads and events, signed."""

    def __init__(self, base_url: str, fake: FakeSlack, secret: str = SIGNING_SECRET) -> None:
        self.url = base_url + "/slack/events"
        self.fake = fake
        self.verifier = SignatureVerifier(secret)
        self._n = 0

    def _trigger(self) -> str:
        self._n += 1
        return f"{int(time.time())}.{self._n}.{secrets.token_hex(6)}"  # unique, like Slack's

    def post(
        self, body: bytes, content_type: str, *, timestamp: int | None = None, signature: str | None = None
    ) -> Response:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        sig = (
            signature if signature is not None else self.verifier.generate_signature(timestamp=ts, body=body)
        )
        return http(
            "POST",
            self.url,
            body,
            {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig},
        )

    def command(
        self, text: str = "", user: str = "U0001", channel: str = "C0001", **overrides: Any
    ) -> Response:
        form = {
            "token": "deprecated",
            "team_id": TEAM["id"],
            "team_domain": TEAM["domain"],
            "channel_id": channel,
            "channel_name": "ops",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/breakglass",
            "text": text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"),
            "api_app_id": "A0001",
            "is_enterprise_install": "false",
            "response_url": self.fake.response_url(f"cmd-{user}"),
            "trigger_id": self._trigger(),
        }
        form.update(overrides)
        return self.post(urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded")

    def interactive(self, payload: dict[str, Any], **kwargs: Any) -> Response:
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        return self.post(body, "application/x-www-form-urlencoded", **kwargs)

    def submit(
        self,
        callback_id: str,
        values: dict[str, Any],
        *,
        user: str = "U0001",
        private_metadata: str = "",
        view_id: str | None = None,
    ) -> Response:
        """Submit a modal. `values`: block_id -> str (plain text), or ("select", value), or None.
        `view_id`: a fresh one by default (each modal Slack opens has its own); pass one to resubmit."""
        view_id = view_id or "V" + secrets.token_hex(5).upper()
        state: dict[str, Any] = {}
        for block_id, value in values.items():
            if isinstance(value, tuple) and value[0] == "select":
                option = (
                    None
                    if value[1] is None
                    else {"text": {"type": "plain_text", "text": str(value[1])}, "value": value[1]}
                )
                state[block_id] = {block_id: {"type": "static_select", "selected_option": option}}
            else:
                state[block_id] = {block_id: {"type": "plain_text_input", "value": value}}
        payload = {
            "type": "view_submission",
            "team": TEAM,
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM["id"]},
            "api_app_id": "A0001",
            "token": "deprecated",
            "trigger_id": self._trigger(),
            "view": {
                "id": view_id,
                "team_id": TEAM["id"],
                "type": "modal",
                "blocks": [],
                "private_metadata": private_metadata,
                "callback_id": callback_id,
                "state": {"values": state},
                "hash": "1700000010.AbCdEf12",
                "title": {"type": "plain_text", "text": "Break glass"},
                "app_id": "A0001",
                "bot_id": "B0001",
            },
            "response_urls": [],
        }
        return self.interactive(payload)

    def invoke(
        self,
        *,
        user: str = "U0001",
        profile: str | None = "sandbox",
        reason: str | None = "incident",
        justification: str | None = "Database failover is stuck; promoting the replica by hand",
        duration: str | None = "1800",
        incident: str | None = None,
    ) -> Response:
        return self.submit(
            "breakglass_invoke",
            {
                "profile": ("select", profile),
                "reason": ("select", reason),
                "justification": justification,
                "duration": ("select", duration),
                "incident": incident,
            },
            user=user,
        )

    def click(
        self,
        action_id: str,
        value: str,
        *,
        user: str = "U0001",
        channel: str = "C0AUDIT",
        message_ts: str = "1700000000.000100",
        container_type: str = "message",
    ) -> Response:
        container: dict[str, Any] = {"type": container_type}
        if container_type == "message":
            container.update(message_ts=message_ts, channel_id=channel, is_ephemeral=False)
        else:
            container.update(view_id="VHOME")
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM["id"]},
            "api_app_id": "A0001",
            "token": "deprecated",
            "container": container,
            "trigger_id": self._trigger(),
            "team": TEAM,
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "event_actions",
                    "type": "button",
                    "value": value,
                    "action_ts": str(time.time()),
                }
            ],
        }
        if container_type == "message":
            payload["channel"] = {"id": channel, "name": "audit"}
            payload["message"] = {"type": "message", "ts": message_ts, "text": "x"}
            payload["response_url"] = self.fake.response_url(f"action-{user}")
        return self.interactive(payload)

    def event(self, event: dict[str, Any]) -> Response:
        envelope = {
            "token": "deprecated",
            "team_id": TEAM["id"],
            "api_app_id": "A0001",
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{self._trigger().replace('.', '')}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM["id"], "user_id": "UBOT", "is_bot": True}],
        }
        return self.post(json.dumps(envelope).encode(), "application/json")
