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
from bot.ids import SUBCOMMANDS
from bot.localslack.webapi import FakeSlack
from bot.slack.views import CHECKING_TITLE
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
        if self.runtime.home is not None:
            self.runtime.home.stop()


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
        """Send `/breakglass text`; returns what the user sees: the ack's body, or, when the bot acks empty
        and answers through the command's response_url (everything that reads Slack, AWS or the incident
        tool), that answer, waited for. A command that opens a modal returns its (empty) ack."""
        name = f"cmd-{user}-{self._trigger()}"
        response = self.raw_command(
            text, user, channel, response_url=self.fake.response_url(name), **overrides
        )
        words = text.split()
        opens_a_form = (
            not words
            or (len(words) == 1 and words[0].lower() not in SUBCOMMANDS)
            or (len(words) == 2 and words[0].lower() == "close")
        )
        if response.status != 200 or response.body or opens_a_form:
            return response
        (reply,) = self.fake.wait_for(
            "response_url", where=lambda c: c.params.get("name") == name, timeout=15
        )
        answer = {k: v for k, v in reply.params.items() if k in ("text", "blocks", "response_type")}
        return Response(200, json.dumps(answer).encode(), {"X-Answered-By": "response_url"})

    def raw_command(
        self, text: str = "", user: str = "U0001", channel: str = "C0001", **overrides: Any
    ) -> Response:
        """Send `/breakglass text` and return the HTTP answer (the ack) as it is."""
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
            "response_url": self.fake.response_url(f"cmd-{user}"),  # `command` names each one
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
        final: bool = True,
    ) -> Response:
        """Submit a modal; `final`: when the bot answers "Checking…" and decides after its ack, wait for
        the outcome it then shows in the same modal (views.update), returned as if it were the ack. `values`: block_id -> str (plain text), or ("select", value), or None.
        `view_id`: a fresh one by default (each modal Slack opens has its own); pass one to resubmit."""
        view_id = view_id or "V" + secrets.token_hex(5).upper()
        payload = submission_payload(
            callback_id,
            values,
            user=user,
            private_metadata=private_metadata,
            view_id=view_id,
            external_id=str((self.fake.view(view_id) or {}).get("external_id") or ""),
            trigger_id=self._trigger(),
        )
        # Slack only sends submissions of views it holds (`view`: one copied, not every view as `views`)
        if self.fake.view(view_id) is None:
            self.fake.record_view(payload["view"], view_id=view_id)
        sent = time.monotonic()
        response = self.interactive(payload)
        if not final or response.status != 200 or not response.body:
            return response
        title = ((response.json.get("view") or {}).get("title") or {}).get("text")
        if response.json.get("response_action") != "update" or title != CHECKING_TITLE:
            return response
        deadline = time.monotonic() + 15
        while True:  # the outcome the bot then shows in the modal (also when Slack refused it)
            shown = [
                c
                for c in self.fake.calls
                if c.method == "views.update"
                and c.at > sent
                and c.params.get("view_id") == view_id
                and ((c.params.get("view") or {}).get("title") or {}).get("text") != CHECKING_TITLE
            ]
            if shown:
                break
            assert time.monotonic() < deadline, "no outcome after the Checking… ack\n" + self.fake.dump()
            time.sleep(0.01)
        answer = {"response_action": "update", "view": shown[0].params["view"]}
        how = "views.update" if shown[0].ok else "views.update (refused by Slack)"
        return Response(200, json.dumps(answer).encode(), {"X-Answered-By": how})

    def open_form(self, user: str = "U0001", timeout: float = 3.0) -> tuple[str | None, str]:
        """`/breakglass` as `user`, as Slack would: the view the bot opened and the private_metadata it put
        into it once it had looked the user up (None, "" when it opened none or stored none in time)."""
        trigger = self._trigger()
        self.raw_command("", user, trigger_id=trigger)
        try:
            (opened,) = self.fake.wait_for(
                "views.open", where=lambda c: c.params.get("trigger_id") == trigger, timeout=timeout
            )
        except AssertionError:
            return None, ""
        view_id = str(opened.response["view"]["id"])
        try:
            self.fake.wait_for(
                "views.update",
                where=lambda c: (
                    c.params.get("view_id") == view_id
                    and bool((c.params.get("view") or {}).get("private_metadata"))
                ),
                timeout=timeout,
            )
        except AssertionError:
            return view_id, ""
        return view_id, str((self.fake.view(view_id) or {}).get("private_metadata") or "")

    def invoke(
        self,
        *,
        opened: bool = True,
        user: str = "U0001",
        profile: str | None = "sandbox",
        reason: str | None = "incident",
        justification: str | None = "Database failover is stuck; promoting the replica by hand",
        duration: str | None = "1800",
        incident: str | None = None,
    ) -> Response:
        """Fill in and submit the invoke form; `opened`: opened first with `/breakglass` (as people do), so
        the submission carries what the bot resolved then; False: a bare submission without it."""
        view_id, metadata = self.open_form(user) if opened else (None, "")
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
            private_metadata=metadata,
            view_id=view_id,
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
        payload = click_payload(
            action_id,
            value,
            user=user,
            channel=channel,
            message_ts=message_ts,
            container_type=container_type,
            trigger_id=self._trigger(),
            response_url=self.fake.response_url(f"action-{user}"),
        )
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


def submission_payload(
    callback_id: str,
    values: dict[str, Any],
    *,
    user: str,
    private_metadata: str,
    view_id: str,
    external_id: str,
    trigger_id: str,
) -> dict[str, Any]:
    """A `view_submission` payload as Slack sends it (`SlackSender.submit` has the arguments' meaning)."""
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
    return {
        "type": "view_submission",
        "team": TEAM,
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM["id"]},
        "api_app_id": "A0001",
        "token": "deprecated",
        "trigger_id": trigger_id,
        "view": {
            "id": view_id,
            "team_id": TEAM["id"],
            "type": "modal",
            "blocks": [],
            "private_metadata": private_metadata,
            "callback_id": callback_id,
            # the external_id the bot gave the view it opened (Slack returns it with the submission)
            "external_id": external_id,
            "state": {"values": state},
            "hash": "1700000010.AbCdEf12",
            "title": {"type": "plain_text", "text": "Break glass"},
            "app_id": "A0001",
            "bot_id": "B0001",
        },
        "response_urls": [],
    }


def click_payload(
    action_id: str,
    value: str,
    *,
    user: str,
    channel: str,
    message_ts: str,
    container_type: str,
    trigger_id: str,
    response_url: str,
) -> dict[str, Any]:
    """A button's `block_actions` payload as Slack sends it (`SlackSender.click`)."""
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
        "trigger_id": trigger_id,
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
        payload["response_url"] = response_url
    return payload


def not_the_invoke_form(call: Any) -> bool:
    """A views.open call for any modal but the invoke form (which `SlackSender.invoke` opens first)."""
    return (call.params.get("view") or {}).get("callback_id") != "breakglass_invoke"


def view_id_of(fake: FakeSlack, view: dict[str, Any]) -> str | None:
    """The id Slack gave a view the bot opened (found by the external_id the bot gave it), to submit it."""
    external_id = view.get("external_id")
    return next(
        (i for i, v in fake.views.items() if external_id and v.get("external_id") == external_id), None
    )


def without_who(metadata: str) -> dict[str, Any]:
    """A close, review or extend form's private_metadata without who opened it (bot.slack.roles_meta)."""
    return {k: v for k, v in json.loads(metadata).items() if k != "who"}


def modals_opened(fake: FakeSlack) -> list[Any]:
    """The views.open calls of every modal but the invoke form."""
    return [c for c in fake.calls_to("views.open") if not_the_invoke_form(c)]
