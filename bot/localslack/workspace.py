"""A local Slack workspace for `breakglass-bot try`: the bot, on the embedded SQLite store, talking to the
local Slack Web API (``webapi.FakeSlack``), and a page on http://127.0.0.1:PORT/ where you act as one of a
few example users.

Everything the page does goes to the bot the way Slack sends it: signed slash-command form posts,
``block_actions``, ``view_submission``, ``view_closed`` and ``app_home_opened`` payloads to the bot's real
HTTP endpoint (``/slack/events``). The bot answers with its real Web API calls to the local Web API, which
records them; the page renders only that record (messages, threads, ephemerals, modals, App Home), never
its own idea of what the bot would do. Time runs on an :class:`~bot.clock.OffsetClock` the page can move
forward, after which the scheduler re-times its jobs and sweeps, so warnings and expiry happen at once.

Only 127.0.0.1 is ever bound: this is a local simulation, not a Slack workspace.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import itertools
import json
import logging
import secrets
import signal
import socketserver
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from slack_sdk.signature import SignatureVerifier

from bot.app import BreakglassApp, create_app
from bot.clock import OffsetClock
from bot.config import Settings
from bot.ids import SUBCOMMANDS
from bot.incidents import IncidentNotFound
from bot.incidents.local import LocalIncidents
from bot.localslack.pageguard import SECURITY_HEADERS, TOKEN_PLACEHOLDER, PageGuard
from bot.localslack.webapi import APP_ID, TEAM_ID, FakeSlack, validate_view
from bot.policy import AccessPolicy, Policy, parse_policy
from bot.shutdown import Shutdown
from bot.signals import wait_for_signal
from bot.wsgi import EVENTS_PATH, WSGIApp
from store import open_store

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
TEAM = {"id": TEAM_ID, "domain": "breakglass-local"}
AUDIT_CHANNEL = "C0AUDIT"
OPS_CHANNEL = "C0OPS"
SECURITY_GROUP = "S0SECURITY"
CHANNELS = {OPS_CHANNEL: "ops", AUDIT_CHANNEL: "security-audit"}

# The example people: who you can be on the page. `role` is only shown; the policy below gives the powers.
USERS: dict[str, dict[str, str]] = {
    "U0ENG": {"name": "erin", "real_name": "Erin Engineer", "email": "erin@example.com", "role": "Engineer"},
    "U0IC": {
        "name": "ian",
        "real_name": "Ian Commander",
        "email": "ian@example.com",
        "role": "Incident commander",
    },
    "U0SEC": {"name": "sam", "real_name": "Sam Security", "email": "sam@example.com", "role": "Security"},
}

TRY_POLICY = f"""\
# The policy of `breakglass-bot try`: the example users in their roles (security through a user group).
audit_channel: {AUDIT_CHANNEL}
warn_before: 15m
sweep_interval: 2s
incident_commanders: [U0IC]
security: [{SECURITY_GROUP}]
profiles:
  sandbox:
    description: Sandbox account
    durations: [15m, 30m, 1h]
  prod:
    description: Production account
    durations: [15m, 30m, 1h, 2h, 4h]
    require_incident: true
"""


def try_policy(policy: Policy) -> tuple[Policy, list[str]]:
    """A team's policy for the simulation: its profiles (descriptions, durations, incident rule), rate limits,
    warning and review times as written, with the simulation's example people in the roles, and what
    was changed for that, to tell the user. The simulation has no Slack or AWS behind it."""
    notes = [
        f"audit channel: #{CHANNELS[AUDIT_CHANNEL]}; incident commander: {USERS['U0IC']['real_name']}; "
        f"security: {USERS['U0SEC']['real_name']} (the policy's own channels and people are not in the simulation)"
    ]
    profiles = {}
    for name, profile in policy.profiles.items():
        update: dict[str, Any] = {"audit_channel": None}
        if profile.invokers is not None:
            update["invokers"] = None
            notes.append(
                f"profile {name!r}: everyone may invoke it here (its invokers are not in the simulation)"
            )
        if profile.aws is not None:
            update["aws"] = None
        profiles[name] = profile.model_copy(update=update)
    if policy.access.provider != "none":
        notes.append(
            f"access: {policy.access.provider} is not called: the simulation records events, grants no AWS access"
        )
    if policy.identity != "slack_id":
        notes.append(
            f"identity: {policy.identity} becomes slack_id (the example people have no addresses of yours)"
        )
    adapted = policy.model_copy(
        update={
            "audit_channel": AUDIT_CHANNEL,
            "fallback_channel": None,
            "incident_commanders": ("U0IC",),
            "security": (SECURITY_GROUP,),
            "identity": "slack_id",
            "email_domains": (),
            "access": AccessPolicy(),
            "sweep_interval": min(policy.sweep_interval, timedelta(seconds=2)),
            "profiles": profiles,
        }
    )
    return adapted, notes


FAST_FORWARD_LIMIT = timedelta(days=2)  # one click moves at most this far


class PortInUse(OSError):
    def __init__(self, port: int) -> None:
        super().__init__(
            errno.EADDRINUSE,
            f"port {port} on {HOST} is already in use (another `make try`?): pick a free one with "
            f"`make try PORT={port + 1}` (or `breakglass-bot try --port {port + 1}`)",
        )
        self.port = port

    def __str__(self) -> str:
        return str(self.strerror)


class _QuietWSGIHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


@dataclass
class Ephemeral:
    """A message only one user sees (chat.postEphemeral, a response_url post, or a slash command's answer)."""

    seq: int
    user: str
    channel: str
    text: str
    blocks: list[dict[str, Any]]
    source: str


@dataclass
class _UserState:
    modals: list[str] = field(default_factory=list)  # view ids, bottom to top
    errors: dict[str, dict[str, str]] = field(default_factory=dict)  # view id -> block id -> error


class LocalWorkspace:
    """The bot + the local Slack Web API + the page, all on 127.0.0.1. Use as a context manager."""

    def __init__(self, *, port: int, db_path: str, policy: Policy | None = None) -> None:
        """``policy``: a team's own policy to preview (`try --policy FILE`), as `try_policy` adapts it."""
        self.port = port
        self.db_path = db_path
        self.policy = policy if policy is not None else parse_policy(TRY_POLICY, "<try>")
        self.signing_secret = secrets.token_hex(16)
        self.clock = OffsetClock()
        self.slack = FakeSlack(
            clock=lambda: self.clock.now().timestamp(),  # one time for the page, the bot and its skew check
            token="xoxb-local-" + secrets.token_hex(8),
            users={uid: {k: v for k, v in info.items() if k != "role"} for uid, info in USERS.items()},
            usergroups={SECURITY_GROUP: ["U0SEC"]},
        )
        for channel_id, name in CHANNELS.items():
            self.slack.add_channel(channel_id, name=name)
        self.runtime: BreakglassApp | None = None
        self.incidents = LocalIncidents()  # the pretend incident tool: the page can resolve its incidents
        self._bot_server: WSGIServer | None = None
        self._page_server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._verifier = SignatureVerifier(self.signing_secret)
        self._lock = threading.RLock()
        self._seq = itertools.count(1)
        self._cursor = 0  # calls of the local Web API already folded into the state below
        self._triggers: dict[str, str] = {}  # trigger_id -> user id
        self._responders: dict[str, tuple[str, str]] = {}  # response_url name -> (user, channel)
        self._users: dict[str, _UserState] = {uid: _UserState() for uid in USERS}
        self._ephemerals: list[Ephemeral] = []
        self._problems: list[str] = []
        self.stopped_in_time = True  # False when `stop` overran its deadline

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LocalWorkspace:
        # The page's port first: when it is taken (PortInUse), nothing else has been started.
        try:
            page = _PageServer((HOST, self.port), _PageHandler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(self.port) from exc
            raise
        page.workspace = self
        page.guard = PageGuard()
        self.slack.start()
        settings = Settings(
            _env_file=None,
            slack_bot_token=self.slack.token,
            slack_signing_secret=self.signing_secret,
            slack_api_url=self.slack.url,
            slack_app_token=None,  # HTTP with signed requests, whatever the environment says
            breakglass_store=f"sqlite:///{self.db_path}",
            breakglass_audit_channel=AUDIT_CHANNEL,
            breakglass_policy=None,
        )
        policy = self.policy
        store = open_store(settings.breakglass_store, retention=policy.retention)
        self.runtime = create_app(settings, store, policy=policy, clock=self.clock, incidents=self.incidents)
        self.runtime.scheduler.start()
        self._bot_server = make_server(
            HOST, 0, WSGIApp(self.runtime), server_class=_ThreadingWSGIServer, handler_class=_QuietWSGIHandler
        )
        self._page_server = page
        for name, server in (("try-bot", self._bot_server), ("try-page", page)):
            thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Stop everything within one deadline (bot/shutdown.py); False (logged) if a part overran it."""
        stopping = Shutdown(timeout)
        for name, server in (("page", self._page_server), ("bot endpoint", self._bot_server)):
            if server is not None:
                stopping.stop(name, _closer(server))
        for thread in self._threads:
            stopping.stop(thread.name, thread.join)
        if self.runtime is not None:
            self.runtime.shutdown(stopping=stopping)
        stopping.stop("local Slack", lambda _left: self.slack.stop())
        self.stopped_in_time = stopping.finish()
        return self.stopped_in_time

    def __enter__(self) -> LocalWorkspace:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        port = self._page_server.server_address[1] if self._page_server else self.port
        return f"http://{HOST}:{port}/"

    @property
    def bot_url(self) -> str:
        assert self._bot_server is not None
        return f"http://{HOST}:{self._bot_server.server_port}{EVENTS_PATH}"

    # ------------------------------------------------------------------ what Slack sends to the bot

    def _trigger(self, user: str) -> str:
        trigger = f"{int(time.time())}.{next(self._seq)}.{secrets.token_hex(8)}"
        with self._lock:
            self._triggers[trigger] = user
        return trigger

    def _response_url(self, user: str, channel: str) -> str:
        name = f"{user}-{next(self._seq)}"
        with self._lock:
            self._responders[name] = (user, channel)
        return self.slack.response_url(name)

    def _post(self, body: bytes, content_type: str) -> tuple[int, bytes]:
        ts = str(int(time.time()))
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": self._verifier.generate_signature(timestamp=ts, body=body) or "",
        }
        request = urllib.request.Request(self.bot_url, data=body, method="POST", headers=headers)  # noqa: S310 - our own http://127.0.0.1 URL
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own http://127.0.0.1 URL
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def _interactive(self, payload: dict[str, Any]) -> tuple[int, Any]:
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        status, raw = self._post(body, "application/x-www-form-urlencoded")
        try:
            answer = json.loads(raw) if raw.strip() else None
        except ValueError:
            answer = raw.decode("utf-8", "replace")
        return status, answer

    def _user(self, user: str) -> dict[str, Any]:
        if user not in USERS:
            raise LookupError(f"unknown user {user!r}")
        name = USERS[user]["name"]
        return {"id": user, "username": name, "name": name, "team_id": TEAM_ID}

    def command(self, user: str, text: str, channel: str = OPS_CHANNEL) -> None:
        """Type `/breakglass <text>` in ``channel`` as ``user`` (a signed slash-command form post)."""
        self._user(user)
        command, _, rest = text.strip().partition(" ")
        if command != "/breakglass":
            self._note(user, channel, f"`{command or text}` is not a command here: try `/breakglass help`.")
            return
        form = {
            "token": "deprecated",
            "team_id": TEAM_ID,
            "team_domain": TEAM["domain"],
            "channel_id": channel,
            "channel_name": CHANNELS.get(channel, "directmessage"),
            "user_id": user,
            "user_name": USERS[user]["name"],
            "command": "/breakglass",
            # Slack sends &, < and > in the text as HTML entities
            "text": rest.strip().replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"),
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": self._response_url(user, channel),
            "trigger_id": self._trigger(user),
        }
        status, raw = self._post(urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded")
        words = rest.split()
        opens_a_form = (
            not words
            or (len(words) == 1 and words[0].lower() not in SUBCOMMANDS)
            or (len(words) == 2 and words[0].lower() == "close")
        )
        if status == 200 and not raw.strip() and not opens_a_form:
            # acked empty: the answer follows through the response_url, a moment later (as in Slack)
            name = form["response_url"].rsplit("/", 1)[-1]
            try:
                self.slack.wait_for("response_url", where=lambda c: c.params.get("name") == name, timeout=10)
            except AssertionError:
                log.warning("no answer to /breakglass %s through its response_url", words[0])
        if status != 200:
            self._note(user, channel, f"/breakglass failed with HTTP {status}.")
        elif raw.strip():
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = {"text": raw.decode("utf-8", "replace")}
            self._ephemeral(user, channel, answer, "/breakglass")

    def action(
        self,
        user: str,
        *,
        action: dict[str, Any],
        channel: str | None = None,
        ts: str | None = None,
        view_id: str | None = None,
    ) -> None:
        """Click a button (or pick an option) in a message (``channel``/``ts``) or a view (``view_id``)."""
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._user(user),
            "api_app_id": APP_ID,
            "token": "deprecated",
            "trigger_id": self._trigger(user),
            "team": TEAM,
            "actions": [{**action, "action_ts": f"{time.time():.6f}"}],
        }
        if view_id is not None:
            view = self.slack.view(view_id)
            if view is None:
                raise LookupError(f"unknown view {view_id!r}")
            payload["container"] = {"type": "view", "view_id": view_id}
            payload["view"] = view
        else:
            if channel is None or ts is None:
                raise LookupError("a message action needs channel and ts")
            message = self.slack.message(channel, ts)
            payload["container"] = {
                "type": "message",
                "message_ts": ts,
                "channel_id": message["channel"],
                "is_ephemeral": False,
            }
            payload["channel"] = {"id": message["channel"], "name": CHANNELS.get(message["channel"], "")}
            payload["message"] = message
            payload["response_url"] = self._response_url(user, message["channel"])
        status, _ = self._interactive(payload)
        if status != 200:
            self._note(user, channel or OPS_CHANNEL, f"The app answered HTTP {status} to the click.")

    def submit(self, user: str, view_id: str, values: dict[str, Any]) -> dict[str, Any]:
        """Submit the modal ``view_id`` with ``values`` (block id -> action id -> element state)."""
        view = self.slack.view(view_id)
        if view is None or view_id not in self._state(user).modals:
            raise LookupError(f"no open modal {view_id!r} for {user}")
        view["state"] = {"values": values}
        payload = {
            "type": "view_submission",
            "team": TEAM,
            "user": self._user(user),
            "api_app_id": APP_ID,
            "token": "deprecated",
            "trigger_id": self._trigger(user),
            "view": view,
            "response_urls": [],
        }
        status, answer = self._interactive(payload)
        with self._lock:
            state = self._state(user)
            if status != 200:
                state.errors[view_id] = {"": f"The app answered HTTP {status}; the form stays open."}
                return {"status": status}
            action = answer.get("response_action") if isinstance(answer, dict) else None
            state.errors.pop(view_id, None)
            if action == "errors":
                state.errors[view_id] = dict(answer.get("errors") or {})
            elif action in ("update", "push"):
                new = answer.get("view") or {}
                self._check_view(new)
                if action == "update":
                    # unless the app already updated the view after its ack (views.update): that one stands
                    self.slack.record_view(new, view_id=view_id, unless_changed_from=view.get("hash"))
                else:
                    stored = self.slack.record_view(new)
                    assert stored is not None
                    state.modals.append(stored["id"])
            elif action == "clear":
                state.modals.clear()
            else:
                self._pop(state, view_id)
        return {"status": status, "response_action": action}

    def close(self, user: str, view_id: str) -> None:
        """The user pressed the modal's close button: `view_closed` if it asked for it, and it is gone."""
        view = self.slack.view(view_id)
        with self._lock:
            self._pop(self._state(user), view_id)
        if view is not None and view.get("notify_on_close"):
            self._interactive(
                {
                    "type": "view_closed",
                    "team": TEAM,
                    "user": self._user(user),
                    "api_app_id": APP_ID,
                    "token": "deprecated",
                    "view": view,
                    "is_cleared": False,
                }
            )

    def open_home(self, user: str) -> None:
        """The user opened the app's Home tab: an `app_home_opened` event."""
        self._user(user)
        home = self.slack.home_view(user)
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user,
            "channel": self.slack.dm_channel(user),
            "tab": "home",
            "event_ts": f"{time.time():.6f}",
        }
        if home is not None:
            event["view"] = home
        envelope = {
            "token": "deprecated",
            "team_id": TEAM_ID,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{next(self._seq):010d}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM_ID, "user_id": self.slack.bot_user_id, "is_bot": True}],
        }
        self._post(json.dumps(envelope).encode(), "application/json")

    def fast_forward(self, seconds: float) -> None:
        """Move the bot's clock forward; the scheduler re-times its exact-time jobs and sweeps right away."""
        step = timedelta(seconds=seconds)
        if step <= timedelta(0) or step > FAST_FORWARD_LIMIT:
            raise ValueError(f"fast-forward by more than 0 and at most {FAST_FORWARD_LIMIT}")
        self.clock.advance(step)
        assert self.runtime is not None
        scheduler = self.runtime.scheduler
        for event in self.runtime.store.list_active():
            scheduler.untrack(event)
            scheduler.track(event)
        scheduler.sweep()

    def resolve_incident(self, reference: str) -> int:
        """The pretend incident tool says `reference` resolved (as its webhook would): linked events close."""
        assert self.runtime is not None
        try:
            key = self.incidents.resolve(reference)
        except IncidentNotFound as exc:
            raise ValueError(exc.message) from exc
        return self.runtime.service.incidents.incident_resolved(key)

    # ------------------------------------------------------------------ what the page renders

    def _state(self, user: str) -> _UserState:
        if user not in self._users:
            raise LookupError(f"unknown user {user!r}")
        return self._users[user]

    @staticmethod
    def _pop(state: _UserState, view_id: str) -> None:
        if view_id in state.modals:
            del state.modals[state.modals.index(view_id) :]
        state.errors.pop(view_id, None)

    def _note(self, user: str, channel: str, text: str) -> None:
        self._ephemeral(user, channel, {"text": text}, "local workspace")

    def _ephemeral(self, user: str, channel: str, body: dict[str, Any], source: str) -> None:
        with self._lock:
            self._ephemerals.append(
                Ephemeral(
                    seq=next(self._seq),
                    user=user,
                    channel=self.slack.dm_channel(channel),
                    text=str(body.get("text") or ""),
                    blocks=list(body.get("blocks") or []),
                    source=source,
                )
            )

    def _check_view(self, view: dict[str, Any]) -> None:
        problems = validate_view(view)
        if problems:
            with self._lock:
                self._problems.append("a view in a response_action: " + "; ".join(problems))

    def _sync(self) -> None:
        """Fold the local Web API's new calls into who sees which modal and which ephemeral."""
        calls = self.slack.calls
        with self._lock:
            new, self._cursor = calls[self._cursor :], len(calls)
            for call in new:
                if not call.ok:
                    if call.error == "invalid_blocks":
                        self._problems.append(f"{call.method} rejected: invalid Block Kit ({call.response})")
                    continue
                params = call.params
                if call.method in ("views.open", "views.push"):
                    user = self._triggers.get(str(params.get("trigger_id")))
                    view_id = (call.response or {}).get("view", {}).get("id")
                    if user is None or view_id is None:
                        continue
                    state = self._state(user)
                    if call.method == "views.open":
                        state.modals = [view_id]
                    else:
                        state.modals.append(view_id)
                elif call.method == "chat.postEphemeral":
                    self._ephemeral(str(params.get("user")), str(params.get("channel")), params, "app")
                elif call.method == "response_url":
                    responder = self._responders.get(str(params.get("name")))
                    if responder is not None:
                        self._ephemeral(responder[0], responder[1], params, "app")

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, from the local Web API's record."""
        self._sync()
        slack = self.slack
        views = slack.views
        with self._lock:
            channels = []
            for channel_id, name in CHANNELS.items():
                channels.append({"id": channel_id, "name": name, "messages": self._messages(channel_id)})
            users = []
            for user_id, info in USERS.items():
                state = self._users[user_id]
                users.append(
                    {
                        "id": user_id,
                        **info,
                        "dm": {"id": slack.dm_channel(user_id), "messages": self._messages(user_id)},
                        "home": slack.home_view(user_id),
                        "modals": [views[v] for v in state.modals if v in views],
                        "errors": copy.deepcopy(state.errors),
                        "ephemerals": [
                            {"seq": e.seq, "channel": e.channel, "text": e.text, "blocks": e.blocks}
                            for e in self._ephemerals
                            if e.user == user_id
                        ],
                    }
                )
            problems = list(self._problems)
        return {
            "simulation": True,
            "now": self.clock.now().isoformat(),
            "offset_seconds": int(self.clock.offset.total_seconds()),
            "team": {"id": TEAM_ID, "name": "breakglass (local)"},
            "bot_user_id": slack.bot_user_id,
            "channels": channels,
            "users": users,
            "problems": problems,
        }

    def _messages(self, channel: str) -> list[dict[str, Any]]:
        out = []
        for message in self.slack.channel_messages(channel):
            message["replies"] = self.slack.thread(channel, message["ts"])
            out.append(message)
        return out


# ------------------------------------------------------------------ the page's HTTP server


def _closer(server: socketserver.BaseServer) -> Callable[[float], None]:
    def close(_left: float) -> None:
        server.shutdown()
        server.server_close()

    return close


class _PageServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    workspace: LocalWorkspace
    guard: PageGuard


class _PageHandler(BaseHTTPRequestHandler):
    server: _PageServer
    server_version = "breakglass-try/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _refused(self, method: str, path: str) -> bool:
        """Answer 403/415 and return True unless the page itself sent this (see bot/localslack/pageguard.py)."""
        refusal = self.server.guard.check(
            method, path, self.headers, self.server.server_address[1], needs_token=path.startswith("/ui/")
        )
        if refusal is None:
            return False
        if method == "POST":  # the body is not read: drop the connection after the answer
            self.close_connection = True
        self._json(refusal.status, {"error": refusal.error})
        return True

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if self._refused("GET", path):
            return
        if path in ("/", "/index.html"):
            page = resources.files("bot.localslack").joinpath("page.html").read_text(encoding="utf-8")
            page = page.replace(TOKEN_PLACEHOLDER, self.server.guard.new_token())
            self._send(200, page.encode(), "text/html; charset=utf-8")
        elif path == "/ui/state":
            self._json(200, self.server.workspace.snapshot())
        elif path == "/healthz":
            assert self.server.workspace.runtime is not None
            status, body = self.server.workspace.runtime.health()
            self._json(status, body)
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if self._refused("POST", path):
            return
        workspace = self.server.workspace
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("a JSON object")
            result: Any = None
            user = str(body.get("user", ""))
            if path == "/ui/command":
                workspace.command(user, str(body.get("text", "")), str(body.get("channel") or OPS_CHANNEL))
            elif path == "/ui/action":
                workspace.action(
                    user,
                    action=dict(body["action"]),
                    channel=body.get("channel"),
                    ts=body.get("ts"),
                    view_id=body.get("view_id"),
                )
            elif path == "/ui/submit":
                result = workspace.submit(user, str(body["view_id"]), dict(body.get("values") or {}))
            elif path == "/ui/close":
                workspace.close(user, str(body["view_id"]))
            elif path == "/ui/home":
                workspace.open_home(user)
            elif path == "/ui/fast-forward":
                workspace.fast_forward(float(body["seconds"]))
            elif path == "/ui/resolve-incident":
                result = workspace.resolve_incident(str(body["reference"]))
            else:
                self._json(404, {"error": "not found"})
                return
        except (KeyError, TypeError, ValueError, LookupError) as exc:
            self._json(400, {"error": str(exc)})
            return
        self._json(200, {"ok": True, "result": result})


def serve(port: int, db_path: str | None = None, policy: Policy | None = None) -> bool:
    """`breakglass-bot try`: run the local workspace until Ctrl-C or SIGTERM. Without ``db_path`` the store
    is a temporary directory, removed on either: the local Web API keeps its messages in memory, so each
    run starts afresh. ``policy``: a team's own policy to preview (adapted by `try_policy`). False when the
    stop overran its deadline (threads may still be running: the caller exits at once)."""
    stop = threading.Event()
    notes: list[str] = []
    if policy is not None:
        policy, notes = try_policy(policy)
    main = threading.current_thread() is threading.main_thread()  # only there can a signal be handled
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set()) if main else None
    try:
        with contextlib.ExitStack() as stack:
            if db_path is None:
                directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="breakglass-try-"))
                db_path = str(Path(directory) / "try.db")
            workspace = stack.enter_context(LocalWorkspace(port=port, db_path=db_path, policy=policy))
            for note in notes:
                print(f"breakglass: your policy in the simulation: {note}", flush=True)
            print(
                f"breakglass: local Slack simulation on {workspace.url}  (store: {db_path}; Ctrl-C to stop)",
                flush=True,
            )
            with contextlib.suppress(KeyboardInterrupt):
                if main:
                    wait_for_signal(stop)
                else:
                    stop.wait()
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    return workspace.stopped_in_time
