"""A fake Slack Web API served over real HTTP: the test suite's fake and the local Web API of
``breakglass-bot try`` (see ``bot.localslack.workspace``).

The bot's real ``slack_sdk.WebClient(base_url=fake.url, token=...)`` talks to it over the loopback
interface, so the SDK's request encoding, error handling and retry handlers are exercised for real::

    with FakeSlack(users={"U0001": {"email": "alice@example.com"}}) as fake:
        client = WebClient(token=fake.token, base_url=fake.url)
        client.chat_postMessage(channel="C0001", text="hi")
        fake.wait_for("chat.postMessage")
        assert fake.invalid_calls == []

Everything is kept in memory and guarded by one lock; the server logs nothing.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from email.parser import BytesParser
from email.policy import HTTP as HTTP_POLICY
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from zoneinfo import ZoneInfo

from slack_sdk.models.basic_objects import JsonObject
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot.localslack.ratelimit import ChannelRateLimit

__all__ = ["Call", "FakeSlack", "SlackWarning"]

TEAM_ID = "T0001"
TEAM_NAME = "Example WS"
TEAM_URL = "https://example-ws.slack.com/"
BOT_ID = "B0001"
APP_ID = "A0001"

# Parameters that Slack accepts either as JSON text (form bodies) or as objects (JSON bodies).
_JSON_PARAMS = ("blocks", "view", "attachments", "metadata")

_HTTP_ERRORS = {500: "internal_error", 502: "bad_gateway", 503: "service_unavailable", 504: "gateway_timeout"}

# Block Kit limits that the fake checks on the raw JSON (slack_sdk checks some, not all, of them).
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_SECTION_FIELDS = 10
MAX_SECTION_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_URL = 3000
MAX_ID = 255  # action_id, block_id, callback_id, external_id
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_OPTIONS = 100
MAX_ACTIONS_ELEMENTS = 25
MAX_CONTEXT_ELEMENTS = 10
MAX_LABEL = 2000
MAX_VIEW_TITLE = 24
MAX_PRIVATE_METADATA = 3000


def _block_types() -> frozenset[str]:
    found: set[str] = set()
    pending = list(Block.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        block_type = getattr(cls, "type", None)
        if isinstance(block_type, str):
            found.add(block_type)
    return frozenset(found)


_KNOWN_BLOCK_TYPES = _block_types()


@dataclass
class Call:
    """One request the fake received (recorded before the response is written)."""

    method: str  # e.g. "chat.postMessage"; "response_url" for posts to a response_url
    params: dict  # merged query + body; blocks/view/attachments/metadata JSON strings decoded
    token: str | None  # bearer token (or `token` param); None for response_url posts
    at: float  # time.monotonic() when received
    ok: bool  # what the fake answered
    error: str | None
    status: int = 200  # HTTP status answered
    response: Any = None  # the body answered (dict, or str for response_url)
    retry_after: int | None = None  # the Retry-After answered with a 429


@dataclass
class SlackWarning:
    """A warning Slack would attach to an otherwise successful response (e.g. "missing_text")."""

    method: str
    warning: str
    params: dict


@dataclass
class _Failure:
    method: str | None
    remaining: int
    status: int
    error: str | None
    retry_after: int | None
    delay: float
    channel: str | None = None


class _SlackError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def _required(params: dict, name: str, error: str = "invalid_arguments") -> Any:
    value = params.get(name)
    if value in (None, ""):
        raise _SlackError(error, response_metadata={"messages": [f"missing required field: {name}"]})
    return value


def _text_of(obj: Any) -> str | None:
    if isinstance(obj, dict):
        text = obj.get("text")
        return text if isinstance(text, str) else None
    if isinstance(obj, str):
        return obj
    return None


# ----------------------------------------------------------------------------------------------------------
# Block Kit validation
# ----------------------------------------------------------------------------------------------------------


def _validate_sdk_tree(obj: Any, seen: set[int]) -> None:
    """Run slack_sdk's validate_json() on a parsed object and every model object nested in it."""
    if isinstance(obj, JsonObject):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        obj.validate_json()
        for value in vars(obj).values():
            _validate_sdk_tree(value, seen)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _validate_sdk_tree(value, seen)


def _walk_dicts(obj: Any, path: str) -> Iterator[tuple[str, dict]]:
    if isinstance(obj, dict):
        yield path, obj
        for key, value in obj.items():
            yield from _walk_dicts(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _walk_dicts(value, f"{path}[{index}]")


def _check_text_object(obj: Any, path: str, *, max_len: int, plain_only: bool, errors: list[str]) -> None:
    if obj is None:
        return
    if isinstance(obj, str):
        errors.append(f"{path}: must be a text object ({{'type': ..., 'text': ...}}), not a string")
        return
    if isinstance(obj, dict):
        kind = obj.get("type")
        if kind not in ("plain_text", "mrkdwn"):
            errors.append(f"{path}: text object type must be plain_text or mrkdwn, got {kind!r}")
        elif plain_only and kind != "plain_text":
            errors.append(f"{path}: must be a plain_text text object")
    text = _text_of(obj)
    if text is None:
        errors.append(f"{path}: text object must have a string `text`")
        return
    if len(text) < 1:
        errors.append(f"{path}: text must be at least 1 character")
    if len(text) > max_len:
        errors.append(f"{path}: text must be at most {max_len} characters (got {len(text)})")


def _raw_element_checks(path: str, element: dict, errors: list[str]) -> None:
    """Checks that apply to any interactive element / composition object, wherever it is nested."""
    action_id = element.get("action_id")
    if isinstance(action_id, str) and len(action_id) > MAX_ID:
        errors.append(f"{path}.action_id: must be at most {MAX_ID} characters (got {len(action_id)})")
    kind = element.get("type")
    if kind == "button":
        _check_text_object(
            element.get("text"), f"{path}.text", max_len=MAX_BUTTON_TEXT, plain_only=True, errors=errors
        )
        value = element.get("value")
        if isinstance(value, str) and len(value) > MAX_BUTTON_VALUE:
            errors.append(f"{path}.value: must be at most {MAX_BUTTON_VALUE} characters (got {len(value)})")
        url = element.get("url")
        if isinstance(url, str) and len(url) > MAX_URL:
            errors.append(f"{path}.url: must be at most {MAX_URL} characters")
    options = element.get("options")
    if isinstance(options, list) and kind is not None:
        if len(options) > MAX_OPTIONS:
            errors.append(f"{path}.options: at most {MAX_OPTIONS} options (got {len(options)})")
        plain_only = kind.endswith("select") or kind == "overflow"
        for index, option in enumerate(options):
            if not isinstance(option, dict):
                errors.append(f"{path}.options[{index}]: option must be an object")
                continue
            _check_text_object(
                option.get("text"),
                f"{path}.options[{index}].text",
                max_len=MAX_OPTION_TEXT,
                plain_only=plain_only,
                errors=errors,
            )
            value = option.get("value")
            if isinstance(value, str) and len(value) > MAX_OPTION_VALUE:
                errors.append(f"{path}.options[{index}].value: must be at most {MAX_OPTION_VALUE} characters")


def _raw_block_checks(block: dict, path: str, errors: list[str]) -> None:
    kind = block.get("type")
    block_id = block.get("block_id")
    if block_id is not None and (not isinstance(block_id, str) or not block_id):
        errors.append(f"{path}.block_id: must be a non-empty string")
    elif isinstance(block_id, str) and len(block_id) > MAX_ID:
        errors.append(f"{path}.block_id: must be at most {MAX_ID} characters (got {len(block_id)})")

    if kind == "section":
        text, fields = block.get("text"), block.get("fields")
        if text is None and not fields:
            errors.append(f"{path}: section needs `text` or `fields`")
        if text is not None:
            _check_text_object(
                text, f"{path}.text", max_len=MAX_SECTION_TEXT, plain_only=False, errors=errors
            )
        if fields is not None:
            if not isinstance(fields, list):
                errors.append(f"{path}.fields: must be an array")
            else:
                if len(fields) > MAX_SECTION_FIELDS:
                    errors.append(f"{path}.fields: at most {MAX_SECTION_FIELDS} fields (got {len(fields)})")
                for index, item in enumerate(fields):
                    _check_text_object(
                        item,
                        f"{path}.fields[{index}]",
                        max_len=MAX_SECTION_FIELD_TEXT,
                        plain_only=False,
                        errors=errors,
                    )
    elif kind == "header":
        _check_text_object(
            block.get("text"), f"{path}.text", max_len=MAX_HEADER_TEXT, plain_only=True, errors=errors
        )
    elif kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            errors.append(f"{path}.elements: actions block needs at least one element")
        elif len(elements) > MAX_ACTIONS_ELEMENTS:
            errors.append(f"{path}.elements: at most {MAX_ACTIONS_ELEMENTS} elements (got {len(elements)})")
    elif kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            errors.append(f"{path}.elements: context block needs at least one element")
        elif len(elements) > MAX_CONTEXT_ELEMENTS:
            errors.append(f"{path}.elements: at most {MAX_CONTEXT_ELEMENTS} elements (got {len(elements)})")
    elif kind == "input":
        _check_text_object(
            block.get("label"), f"{path}.label", max_len=MAX_LABEL, plain_only=True, errors=errors
        )
        if not isinstance(block.get("element"), dict):
            errors.append(f"{path}.element: input block needs an element")
        if block.get("hint") is not None:
            _check_text_object(
                block.get("hint"), f"{path}.hint", max_len=MAX_LABEL, plain_only=True, errors=errors
            )

    for sub_path, obj in _walk_dicts(block, path):
        if obj is not block:
            _raw_element_checks(sub_path, obj, errors)


def _action_ids(block: dict) -> list[str]:
    return [
        obj["action_id"]
        for _, obj in _walk_dicts(block, "")
        if obj is not block and isinstance(obj.get("action_id"), str)
    ]


def validate_blocks(
    blocks: Any,
    *,
    max_blocks: int = MAX_MESSAGE_BLOCKS,
    where: str = "blocks",
    view_wide_action_ids: bool = False,
) -> list[str]:
    """Return the reasons why Slack would reject ``blocks`` (empty list when they look valid)."""
    if not isinstance(blocks, list):
        return [f"{where}: must be an array of blocks"]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"{where}: at most {max_blocks} blocks allowed (got {len(blocks)})")
    block_ids: set[str] = set()
    all_action_ids: set[str] = set()
    for index, block in enumerate(blocks):
        path = f"{where}[{index}]"
        if not isinstance(block, dict):
            errors.append(f"{path}: block must be an object")
            continue
        kind = block.get("type")
        if kind not in _KNOWN_BLOCK_TYPES:
            errors.append(f"{path}: unknown block type {kind!r}")
            continue
        try:
            _validate_sdk_tree(Block.parse(block), set())
        except Exception as exc:
            errors.append(f"{path} ({kind}): {exc}")
        _raw_block_checks(block, path, errors)

        block_id = block.get("block_id")
        if isinstance(block_id, str):
            if block_id in block_ids:
                errors.append(f"{path}.block_id: duplicate block_id {block_id!r}")
            block_ids.add(block_id)
        action_ids = _action_ids(block)
        for action_id, n in Counter(action_ids).items():
            if n > 1:
                errors.append(f"{path}: duplicate action_id {action_id!r} within the block")
        if view_wide_action_ids:
            for action_id in set(action_ids) & all_action_ids:
                errors.append(f"{path}: duplicate action_id {action_id!r} within the view")
        all_action_ids.update(action_ids)
    return errors


def validate_view(view: Any, *, view_wide_action_ids: bool = False) -> list[str]:
    """Return the reasons why Slack would reject ``view`` (empty list when it looks valid)."""
    if not isinstance(view, dict):
        return ["view: must be an object"]
    errors: list[str] = []
    kind = view.get("type")
    if kind not in ("modal", "home", "workflow_step"):
        errors.append(f"view.type: must be modal or home, got {kind!r}")
    blocks = view.get("blocks")
    if blocks is None:
        errors.append("view.blocks: missing required field")
    if kind == "modal":
        if view.get("title") in (None, ""):
            errors.append("view.title: a modal needs a title")
        has_inputs = isinstance(blocks, list) and any(
            isinstance(b, dict) and b.get("type") == "input" for b in blocks
        )
        if has_inputs and view.get("submit") in (None, ""):
            errors.append("view.submit: a modal with input blocks needs a submit button")
    for name in ("title", "submit", "close"):
        if isinstance(view.get(name), dict):
            _check_text_object(
                view[name], f"view.{name}", max_len=MAX_VIEW_TITLE, plain_only=True, errors=errors
            )
    for name, limit in (
        ("callback_id", MAX_ID),
        ("external_id", MAX_ID),
        ("private_metadata", MAX_PRIVATE_METADATA),
    ):
        value = view.get(name)
        if value is not None and not isinstance(value, str):
            errors.append(f"view.{name}: must be a string")
        elif isinstance(value, str) and len(value) > limit:
            errors.append(f"view.{name}: must be at most {limit} characters (got {len(value)})")

    # slack_sdk's own View validators (blocks are validated one by one below, so unknown ones are left out
    # here to keep slack_sdk from logging about them).
    sdk_view = dict(view)
    if isinstance(blocks, list):
        sdk_view["blocks"] = [
            b for b in blocks if isinstance(b, dict) and b.get("type") in _KNOWN_BLOCK_TYPES
        ]
    try:
        View(**sdk_view).validate_json()
    except Exception as exc:
        errors.append(f"view: {exc}")
    if blocks is not None:
        errors.extend(
            validate_blocks(
                blocks,
                max_blocks=MAX_VIEW_BLOCKS,
                where="view.blocks",
                view_wide_action_ids=view_wide_action_ids,
            )
        )
    # Several checks may report the same problem; keep the first of each.
    return list(dict.fromkeys(errors))


# ----------------------------------------------------------------------------------------------------------
# HTTP plumbing
# ----------------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    fake: FakeSlack

    def handle_error(self, request: Any, client_address: Any) -> None:  # keep test output clean
        return


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "FakeSlack/1.0"

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header, on the fake's clock (the bot's skew check compares it with its own)."""
        return super().date_time_string(self.server.fake.clock() if timestamp is None else timestamp)

    def do_GET(self) -> None:
        self.server.fake._handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _parse_body(content_type: str, raw: bytes) -> dict:
    ctype = content_type.split(";", 1)[0].strip().lower()
    if not raw:
        return {}
    if ctype == "application/json":
        body = json.loads(raw.decode("utf-8"))
        if not isinstance(body, dict):
            raise ValueError("JSON body must be an object")
        return body
    if ctype == "multipart/form-data":
        message = BytesParser(policy=HTTP_POLICY).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
        )
        params: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            assert isinstance(payload, bytes)  # decode=True: the bytes of a non-multipart part
            if name:
                params[str(name)] = payload if part.get_filename() else payload.decode("utf-8")
        return params
    # application/x-www-form-urlencoded (and anything else that looks like it)
    return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))


def _decode_json_params(params: dict) -> None:
    for name in _JSON_PARAMS:
        value = params.get(name)
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            with contextlib.suppress(ValueError):  # left as a string on failure; validation reports it
                params[name] = json.loads(value)


class FakeSlack:
    """A fake Slack Web API + response_url endpoint on 127.0.0.1 (see module docstring)."""

    def __init__(
        self,
        *,
        token: str = "xoxb-test-token",  # noqa: S107
        users: dict[str, dict] | None = None,
        usergroups: dict[str, list[str]] | None = None,
        validate_blocks: bool = True,
        bot_user_id: str = "UBOT",
        view_wide_action_ids: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token = token
        # Seconds since the epoch, for message timestamps and the `Date` header: `try` passes its simulated
        # clock, so the page, the bot and its clock-skew check see one time.
        self.clock = clock
        self.bot_user_id = bot_user_id
        self.validate_blocks = validate_blocks
        # Slack requires action_ids to be unique within their block; True also rejects duplicates across the
        # blocks of a view/message (stricter than Slack).
        self.view_wide_action_ids = view_wide_action_ids
        self._lock = threading.RLock()
        # Seconds every Web API answer is delayed (real Slack answers in 50-150 ms); see also `rate_limit`.
        self.latency = 0.0
        self.limits: ChannelRateLimit | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._last_ts_us = 0
        self._view_seq = 0
        # Slack's view ids are unique in the workspace: a run that reopens a kept store (`try --db FILE`)
        # must not hand out the view ids of an earlier run (the store refuses a second event per view).
        self._view_prefix = secrets.token_hex(3).upper()
        self._hash_seq = itertools.count(1)
        self._users: dict[str, dict] = {}
        self._usergroups: dict[str, list[str]] = {gid: list(uids) for gid, uids in (usergroups or {}).items()}
        self._channels: dict[str, dict] = {}
        for user_id, info in (users or {}).items():
            info = dict(info)
            profile = info.pop("profile", None) or {}
            self.add_user(
                user_id,
                email=info.pop("email", None) or profile.get("email"),
                name=info.pop("name", None),
                tz=info.pop("tz", "UTC"),
                deleted=info.pop("deleted", False),
                **info,
            )
        self._clear_state()
        self._methods: dict[str, Callable[[dict], dict]] = {
            "api.test": self._api_test,
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "conversations.open": self._conversations_open,
            "conversations.info": self._conversations_info,
            "conversations.history": self._conversations_history,
            "conversations.join": self._conversations_join,
            "views.open": self._views_open,
            "views.push": self._views_push,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "usergroups.users.list": self._usergroups_users_list,
            "users.info": self._users_info,
            "users.lookupByEmail": self._users_lookup_by_email,
        }

    app_token: str = "xapp-test-app-token"
    socket_mode_url: str | None = None  # set by a Socket Mode test to its local WebSocket server
    socket_opens: int = 0

    def _record_socket_open(self) -> None:
        with self._lock:
            self.socket_opens += 1

    def _clear_state(self) -> None:
        self._calls: list[Call] = []
        self._invalid_calls: list[Call] = []
        self._warnings: list[SlackWarning] = []
        self._messages: dict[tuple[str, str], dict] = {}
        self._history: dict[tuple[str, str], list[dict]] = {}
        self._order: list[tuple[str, str]] = []
        self._views: dict[str, dict] = {}
        self._home_views: dict[str, str] = {}
        self._failures: list[_Failure] = []
        self._down = False

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FakeSlack:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, name="fake-slack", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeSlack is not started")
        return self._server.server_address[1]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The Web API base URL, for ``WebClient(base_url=fake.url)``."""
        return f"{self.base}/api/"

    def response_url(self, name: str) -> str:
        """A response_url on this server; posts to it are recorded as "response_url" calls, params["name"]."""
        return f"{self.base}/response_url/{quote(name, safe='')}"

    # ---------------------------------------------------------------- configuration

    def add_user(
        self,
        user_id: str,
        *,
        email: str | None = None,
        name: str | None = None,
        tz: str = "UTC",
        deleted: bool = False,
        **extra: Any,
    ) -> None:
        name = name or user_id.lower()
        try:
            offset = datetime.now(ZoneInfo(tz)).utcoffset()
            tz_offset = int(offset.total_seconds()) if offset is not None else 0
        except Exception:
            tz_offset = 0
        user = {
            "id": user_id,
            "team_id": TEAM_ID,
            "name": name,
            "real_name": name,
            "deleted": deleted,
            "is_bot": False,
            "tz": tz,
            "tz_offset": tz_offset,
            "profile": {"email": email, "real_name": name, "display_name": name},
        }
        user.update(extra)
        with self._lock:
            self._users[user_id] = user

    def set_usergroup(self, group_id: str, user_ids: list[str]) -> None:
        with self._lock:
            self._usergroups[group_id] = list(user_ids)

    def add_channel(
        self,
        channel_id: str,
        *,
        name: str | None = None,
        is_private: bool = False,
        is_archived: bool = False,
        is_member: bool = True,
        exists: bool = True,
    ) -> None:
        """Describe a channel. Archived ones answer "is_archived", non-member ones "not_in_channel" to posts
        and history (a private one "channel_not_found", as Slack hides it), deleted ones (``exists=False``)
        "channel_not_found". ``conversations.join`` makes the bot a member of a public, unarchived channel.

        Channels never added are treated as existing public channels the bot is a member of.
        """
        with self._lock:
            self._channels[channel_id] = {
                "name": name or channel_id.lower(),
                "is_private": is_private,
                "is_archived": is_archived,
                "is_member": is_member,
                "exists": exists,
            }

    def fail(
        self,
        method: str | None,
        *,
        times: int = 1,
        status: int = 500,
        error: str | None = None,
        retry_after: int | None = None,
        delay: float = 0.0,
        channel: str | None = None,
    ) -> None:
        """Queue failures for the next ``times`` calls to ``method`` (None: any method, response_url too),
        only those whose ``channel`` parameter is ``channel`` if given.

        status 429 -> HTTP 429 + Retry-After (default 1) + {"ok": false, "error": "ratelimited"};
        ``error`` given -> HTTP 200 {"ok": false, "error": error}; other status -> that HTTP status with
        {"ok": false, "error": "internal_error" | "service_unavailable" | ...}.
        ``delay`` sleeps before answering. status 200 without ``error`` answers normally after ``delay``
        (a slow but successful call; see ``slow``). Queued failures are used in the order queued.
        """
        with self._lock:
            self._failures.append(_Failure(method, times, status, error, retry_after, delay, channel))

    def heal(self, method: str | None = None) -> None:
        """Drop the failures still queued for ``method`` (None: every queued failure)."""
        with self._lock:
            self._failures = [f for f in self._failures if method is not None and f.method != method]

    def slow(self, method: str | None, delay: float, *, times: int = 1) -> None:
        """The next ``times`` calls to ``method`` are processed normally but answered after ``delay`` s."""
        self.fail(method, times=times, status=200, delay=delay)

    def rate_limit(
        self,
        *methods: str,
        per_second: float = 1.0,
        burst: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> ChannelRateLimit:
        """Limit ``methods`` (default chat.postMessage) per channel as Slack does: a token bucket per channel,
        then HTTP 429 + Retry-After; what it answered is in the returned `ChannelRateLimit`."""
        self.limits = ChannelRateLimit(frozenset(methods or ("chat.postMessage",)), per_second, burst, clock)
        return self.limits

    def set_down(self, down: bool) -> None:
        """While down, every request (API or response_url) answers HTTP 503 and is recorded with ok=False."""
        with self._lock:
            self._down = down

    def reset(self) -> None:
        """Forget calls, messages, views, warnings, failures and ``set_down``; keep users/groups/channels."""
        with self._lock:
            self._clear_state()

    # ---------------------------------------------------------------- inspection

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if c.method == method]

    @property
    def invalid_calls(self) -> list[Call]:
        with self._lock:
            return list(self._invalid_calls)

    @property
    def warnings(self) -> list[SlackWarning]:
        with self._lock:
            return list(self._warnings)

    @property
    def messages(self) -> dict[tuple[str, str], dict]:
        """(channel, ts) -> latest state of each message posted (copies)."""
        with self._lock:
            return copy.deepcopy(self._messages)

    def message(self, channel: str, ts: str) -> dict:
        """Latest state of one message; KeyError if unknown. A user id channel means the DM with that user."""
        with self._lock:
            return copy.deepcopy(self._messages[(self.dm_channel(channel), ts)])

    def history(self, channel: str, ts: str) -> list[dict]:
        """Every state a message went through: as posted, then after each chat.update."""
        with self._lock:
            return copy.deepcopy(self._history.get((self.dm_channel(channel), ts), []))

    def thread(self, channel: str, ts: str) -> list[dict]:
        """Replies posted with thread_ts == ts in ``channel``, in order (latest state of each)."""
        channel = self.dm_channel(channel)
        with self._lock:
            return [
                copy.deepcopy(self._messages[key])
                for key in self._order
                if key[0] == channel and self._messages[key].get("thread_ts") == ts and key[1] != ts
            ]

    def channel_messages(self, channel: str, *, include_replies: bool = False) -> list[dict]:
        """Messages posted to ``channel`` in order (latest state), top-level only unless include_replies."""
        channel = self.dm_channel(channel)
        with self._lock:
            out = []
            for key in self._order:
                msg = self._messages[key]
                if key[0] != channel:
                    continue
                if not include_replies and msg.get("thread_ts") not in (None, msg["ts"]):
                    continue
                out.append(copy.deepcopy(msg))
            return out

    @property
    def views(self) -> dict[str, dict]:
        """view id -> latest state of each view opened/pushed/updated/published (copies)."""
        with self._lock:
            return copy.deepcopy(self._views)

    def view(self, view_id: str) -> dict | None:
        """The latest state of one view (a copy), or None."""
        with self._lock:
            found = self._views.get(view_id)
            return copy.deepcopy(found) if found is not None else None

    def home_view(self, user_id: str) -> dict | None:
        with self._lock:
            view_id = self._home_views.get(user_id)
            return copy.deepcopy(self._views[view_id]) if view_id else None

    def record_view(
        self, view: dict, *, view_id: str | None = None, unless_changed_from: str | None = None
    ) -> dict | None:
        """Store a view that Slack got from an HTTP response (``response_action: update`` or ``push``), as
        Slack would: a new view, or the new state of ``view_id``. Returns the stored view (a copy).

        ``unless_changed_from``: the hash of ``view_id`` as it was submitted. When the app has updated the
        view since (``views.update`` after its ack, which may come before its answer), that update stands and
        nothing is stored (None). Checked and stored under one lock: checked first and stored after, an
        update landing in between would be overwritten by the older answer."""
        with self._lock:
            previous = self._views.get(view_id) if view_id else None
            if unless_changed_from is not None and previous and previous.get("hash") != unless_changed_from:
                return None
            return copy.deepcopy(self._new_view(view, view_id=view_id, previous=previous))

    @staticmethod
    def dm_channel(channel_or_user: str) -> str:
        """The DM channel id used for a user id ("U0001" -> "D0001"); other ids are returned as-is."""
        if channel_or_user[:1] in ("U", "W") and len(channel_or_user) > 1:
            return "D" + channel_or_user[1:]
        return channel_or_user

    def wait_for(
        self,
        method: str | None,
        count: int = 1,
        timeout: float = 5.0,
        where: Callable[[Call], bool] | None = None,
    ) -> list[Call]:
        """Wait for at least ``count`` successful calls to ``method`` (None: any) matching ``where``.

        Returns all the matching successful calls.

        Raises AssertionError listing the calls received when the timeout expires.
        """
        deadline = time.monotonic() + timeout
        matched: list[Call] = []
        seen, source = 0, self._calls  # calls looked at: each poll reads only the new ones (long runs)
        while True:
            with self._lock:
                if self._calls is not source:  # reset() meanwhile: start again on the new record
                    matched, seen, source = [], 0, self._calls
                calls, seen = self._calls[seen:], len(self._calls)
            matched += [
                c
                for c in calls
                if c.ok and (method is None or c.method == method) and (where is None or where(c))
            ]
            if len(matched) >= count:
                return matched
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"FakeSlack: expected >= {count} successful {method or 'any'} call(s)"
                    f"{' matching the predicate' if where else ''} within {timeout}s, got {len(matched)}.\n"
                    + self.dump()
                )
            time.sleep(0.01)

    def dump(self, limit: int = 60) -> str:
        """A readable listing of the last ``limit`` calls (used in wait_for failures)."""
        calls = self.calls
        lines = [f"{len(calls)} call(s) received:"]
        if len(calls) > limit:
            lines.append(f"  ... {len(calls) - limit} earlier call(s) omitted")
        for call in calls[-limit:]:
            status = "ok" if call.ok else f"FAILED {call.status} {call.error}"
            params = json.dumps(call.params, default=repr, sort_keys=True)
            if len(params) > 400:
                params = params[:400] + "...(truncated)"
            lines.append(f"  {call.method} [{status}] {params}")
        return "\n".join(lines)

    # ---------------------------------------------------------------- request handling

    def _handle(self, handler: _Handler) -> None:
        received = time.monotonic()
        split = urlsplit(handler.path)
        path = split.path
        if path.startswith("/api/"):
            method = unquote(path[len("/api/") :])
        elif path.startswith("/response_url/"):
            method = "response_url"
        else:
            self._send(handler, 404, "not_found")
            return

        params: dict[str, Any] = dict(parse_qsl(split.query, keep_blank_values=True))
        token: str | None = None
        status, headers = 200, {}
        body: Any = None
        error: str | None = None
        content_type = handler.headers.get("Content-Type", "")
        try:
            length = int(handler.headers.get("Content-Length") or 0)
            raw = handler.rfile.read(length) if length > 0 else b""
            params.update(_parse_body(content_type, raw))
        except (ValueError, UnicodeDecodeError):
            error = "invalid_json" if "json" in content_type else "invalid_form_data"
            body = {"ok": False, "error": error}
        if method == "response_url":
            params["name"] = unquote(path[len("/response_url/") :])
        else:
            auth = handler.headers.get("Authorization", "")
            header_token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else None
            param_token = params.pop("token", None)
            token = header_token or param_token
        _decode_json_params(params)

        with self._lock:
            down = self._down
            failure = None if down else self._take_failure(method, params.get("channel"))
            limits = self.limits
        if failure is None and not down and limits is not None and body is None:
            channel = params.get("channel")
            retry_after = limits.check(
                method, self.dm_channel(channel) if isinstance(channel, str) else channel
            )
            if retry_after is not None:
                failure = _Failure(method, 0, 429, None, retry_after, 0.0)
        if failure is not None and failure.delay > 0:
            time.sleep(failure.delay)

        invalid = False
        if body is not None:
            pass
        elif down:
            status, error = 503, "service_unavailable"
            body = {"ok": False, "error": error}
        elif failure is not None and failure.status == 429:
            status, error = 429, "ratelimited"
            headers["Retry-After"] = str(1 if failure.retry_after is None else failure.retry_after)
            body = {"ok": False, "error": error}
        elif failure is not None and failure.error:
            error = failure.error
            body = {"ok": False, "error": error}
        elif failure is not None and failure.status != 200:
            status = failure.status
            error = _HTTP_ERRORS.get(status, f"http_{status}")
            body = {"ok": False, "error": error}
        else:
            try:
                status, body, invalid = self._dispatch(method, params, token)
            except Exception as exc:  # a bug in the fake itself: make it visible in the recorded call
                status, body = 500, {"ok": False, "error": f"fake_slack_bug: {exc!r}"}
            error = None if _ok(body) else (body.get("error") if isinstance(body, dict) else str(body))

        call = Call(
            method=method,
            params=params,
            token=token,
            at=received,
            ok=status == 200 and _ok(body),
            error=error,
            status=status,
            response=body,
            retry_after=int(headers["Retry-After"]) if "Retry-After" in headers else None,
        )
        with self._lock:
            self._calls.append(call)
            if invalid:
                self._invalid_calls.append(call)
        if self.latency > 0 and method != "response_url":
            time.sleep(self.latency)
        self._send(handler, status, body, headers)

    def _take_failure(self, method: str, channel: Any = None) -> _Failure | None:
        for failure in self._failures:
            if (
                failure.remaining > 0
                and (failure.method is None or failure.method == method)
                and (failure.channel is None or failure.channel == channel)
            ):
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                return failure
        return None

    def _dispatch(self, method: str, params: dict, token: str | None) -> tuple[int, Any, bool]:
        """Answer a request that is not failed on purpose: (status, body, rejected as invalid Block Kit)."""
        if method == "apps.connections.open":  # Socket Mode: app-level token, answers a WebSocket URL
            if token != self.app_token or not self.socket_mode_url:
                return 200, {"ok": False, "error": "invalid_auth"}, False
            self._record_socket_open()
            return 200, {"ok": True, "url": self.socket_mode_url}, False
        if method != "response_url":
            if token != self.token:
                return 200, {"ok": False, "error": "invalid_auth"}, False
            if method not in self._methods:
                return 200, {"ok": False, "error": "unknown_method"}, False
        if self.validate_blocks:
            reasons = self._validate_params(params)
            if reasons:
                if method == "response_url":
                    return 400, "invalid_blocks", True
                body = {
                    "ok": False,
                    "error": "invalid_blocks",
                    "errors": reasons,
                    "response_metadata": {"messages": [f"[ERROR] {r}" for r in reasons]},
                }
                return 200, body, True
        if method == "response_url":
            return 200, "ok", False
        with self._lock:
            try:
                return 200, {"ok": True, **self._methods[method](params)}, False
            except _SlackError as exc:
                return 200, {"ok": False, "error": exc.error, **exc.extra}, False

    def _validate_params(self, params: dict) -> list[str]:
        reasons: list[str] = []
        if "blocks" in params:
            reasons += validate_blocks(params["blocks"], view_wide_action_ids=self.view_wide_action_ids)
        attachments = params.get("attachments")
        if isinstance(attachments, list):
            for index, attachment in enumerate(attachments):
                if isinstance(attachment, dict) and "blocks" in attachment:
                    reasons += validate_blocks(
                        attachment["blocks"],
                        where=f"attachments[{index}].blocks",
                        view_wide_action_ids=self.view_wide_action_ids,
                    )
        elif attachments is not None:
            reasons.append("attachments: must be an array")
        if "view" in params:
            reasons += validate_view(params["view"], view_wide_action_ids=self.view_wide_action_ids)
        return reasons

    @staticmethod
    def _send(handler: _Handler, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        if isinstance(body, str):
            payload, ctype = body.encode("utf-8"), "text/plain; charset=utf-8"
        else:
            payload, ctype = json.dumps(body).encode("utf-8"), "application/json; charset=utf-8"
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", ctype)
            handler.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
            handler.wfile.flush()
        except OSError:
            pass  # the client gave up (e.g. timed out during a delayed answer)

    # ---------------------------------------------------------------- helpers (called with the lock held)

    def _next_ts(self) -> str:
        now_us = int(self.clock() * 1_000_000)
        self._last_ts_us = max(now_us, self._last_ts_us + 1)
        return f"{self._last_ts_us // 1_000_000}.{self._last_ts_us % 1_000_000:06d}"

    def _next_view_id(self) -> str:
        self._view_seq += 1
        return f"V{self._view_prefix}{self._view_seq:06d}"

    def _check_postable(self, channel: str) -> None:
        info = self._channels.get(channel)
        if info is not None:
            if not info.get("exists", True) or (info["is_private"] and not info["is_member"]):
                raise _SlackError("channel_not_found")
            if info["is_archived"]:
                raise _SlackError("is_archived")
            if not info["is_member"]:
                raise _SlackError("not_in_channel")

    def _check_readable(self, channel: str) -> None:
        info = self._channels.get(channel)
        if info is not None:
            if not info.get("exists", True) or (info["is_private"] and not info["is_member"]):
                raise _SlackError("channel_not_found")
            if not info["is_member"]:
                raise _SlackError("not_in_channel")

    def _warn_missing_text(self, method: str, params: dict, response: dict) -> None:
        if not params.get("text") and (params.get("blocks") or params.get("attachments")):
            self._warnings.append(SlackWarning(method, "missing_text", copy.deepcopy(params)))
            response["warning"] = "missing_text"
            response["response_metadata"] = {"warnings": ["missing_text"]}

    def _store(self, key: tuple[str, str], message: dict) -> None:
        if key not in self._messages:
            self._order.append(key)
        self._messages[key] = message
        self._history.setdefault(key, []).append(copy.deepcopy(message))

    # ---------------------------------------------------------------- Web API methods

    def _api_test(self, params: dict) -> dict:
        return {"args": {k: v for k, v in params.items() if isinstance(v, str)}}

    def _auth_test(self, params: dict) -> dict:
        return {
            "url": TEAM_URL,
            "team": TEAM_NAME,
            "user": "breakglass",
            "team_id": TEAM_ID,
            "user_id": self.bot_user_id,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, params: dict) -> dict:
        channel = self.dm_channel(_required(params, "channel", "channel_not_found"))
        if not (params.get("text") or params.get("blocks") or params.get("attachments")):
            raise _SlackError("no_text")
        self._check_postable(channel)
        ts = self._next_ts()
        thread_ts = params.get("thread_ts") or None
        message = {
            "type": "message",
            "channel": channel,
            "ts": ts,
            "user": self.bot_user_id,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "team": TEAM_ID,
            "text": params.get("text") or "",
            "blocks": copy.deepcopy(params.get("blocks")) or [],
            "attachments": copy.deepcopy(params.get("attachments")) or [],
            "thread_ts": thread_ts,
        }
        if params.get("metadata") is not None:
            message["metadata"] = copy.deepcopy(params["metadata"])
        if thread_ts is not None:
            message["reply_broadcast"] = params.get("reply_broadcast") in (True, "1", "true")
            parent = self._messages.get((channel, thread_ts))
            if parent is not None:
                parent["thread_ts"] = thread_ts
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                parent["latest_reply"] = ts
        self._store((channel, ts), message)
        response = {"channel": channel, "ts": ts, "message": copy.deepcopy(message)}
        self._warn_missing_text("chat.postMessage", params, response)
        return response

    def _chat_update(self, params: dict) -> dict:
        channel = _required(params, "channel", "channel_not_found")
        ts = _required(params, "ts", "message_not_found")
        message = self._messages.get((channel, ts))
        if message is None:
            raise _SlackError("message_not_found")
        if not (params.get("text") or params.get("blocks") or params.get("attachments")):
            raise _SlackError("no_text")
        self._check_postable(channel)
        message = copy.deepcopy(message)
        for name in ("text", "blocks", "attachments", "metadata"):
            if name in params:
                message[name] = copy.deepcopy(params[name])
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        self._store((channel, ts), message)
        response = {
            "channel": channel,
            "ts": ts,
            "text": message.get("text", ""),
            "message": copy.deepcopy(message),
        }
        self._warn_missing_text("chat.update", params, response)
        return response

    def _chat_post_ephemeral(self, params: dict) -> dict:
        _required(params, "channel", "channel_not_found")
        _required(params, "user", "user_not_found")
        if not (params.get("text") or params.get("blocks") or params.get("attachments")):
            raise _SlackError("no_text")
        self._check_postable(params["channel"])
        response = {"message_ts": self._next_ts()}
        self._warn_missing_text("chat.postEphemeral", params, response)
        return response

    def _chat_get_permalink(self, params: dict) -> dict:
        channel = _required(params, "channel", "channel_not_found")
        ts = _required(params, "message_ts", "message_not_found")
        message = self._messages.get((channel, ts))
        if message is None:
            raise _SlackError("message_not_found")
        permalink = f"{TEAM_URL}archives/{channel}/p{ts.replace('.', '')}"
        if message.get("thread_ts") not in (None, ts):
            permalink += f"?thread_ts={message['thread_ts']}&cid={channel}"
        return {"channel": channel, "permalink": permalink}

    def _conversations_open(self, params: dict) -> dict:
        users = params.get("users")
        if isinstance(users, list):
            user_ids = [str(u) for u in users]
        else:
            user_ids = [u.strip() for u in str(users or "").split(",") if u.strip()]
        if not user_ids:
            channel = params.get("channel")
            if not channel:
                raise _SlackError("users_list_not_supplied")
            return {"channel": {"id": channel}, "already_open": True}
        if len(user_ids) == 1:
            channel_id = self.dm_channel(user_ids[0])
        else:
            channel_id = "G" + "".join(sorted(u[1:] for u in user_ids))
        return {"channel": {"id": channel_id}, "no_op": False, "already_open": False}

    def _conversations_info(self, params: dict) -> dict:
        channel = _required(params, "channel", "channel_not_found")
        info = self._channels.get(channel, {})
        result = {
            "id": channel,
            "name": info.get("name", channel.lower()),
            "is_channel": channel.startswith("C"),
            "is_group": channel.startswith("G"),
            "is_im": channel.startswith("D"),
            "is_private": info.get("is_private", not channel.startswith("C")),
            "is_archived": info.get("is_archived", False),
            "is_member": info.get("is_member", True),
            "context_team_id": TEAM_ID,
        }
        if channel.startswith("D"):
            result["user"] = "U" + channel[1:]
        return {"channel": result}

    def _conversations_history(self, params: dict) -> dict:
        """Top-level messages, newest first, after ``oldest``; ``metadata`` only with include_all_metadata."""
        channel = _required(params, "channel", "channel_not_found")
        self._check_readable(channel)
        oldest = float(params.get("oldest") or 0)
        limit = int(params.get("limit") or 100)
        with_metadata = params.get("include_all_metadata") in (True, "1", "true")
        found = []
        for key in reversed(self._order):
            msg = self._messages[key]
            if (
                key[0] != channel
                or msg.get("thread_ts") not in (None, msg["ts"])
                or float(msg["ts"]) <= oldest
            ):
                continue
            out = copy.deepcopy(msg)
            if not with_metadata:
                out.pop("metadata", None)
            found.append(out)
            if len(found) >= limit:
                break
        return {"messages": found, "has_more": False}

    def _conversations_join(self, params: dict) -> dict:
        """Joins a public channel; private channels cannot be joined (Slack: method_not_supported...)."""
        channel = _required(params, "channel", "channel_not_found")
        info = self._channels.get(channel)
        if info is None:
            return {"channel": {"id": channel, "is_member": True}}
        if not info.get("exists", True) or (info["is_private"] and not info["is_member"]):
            raise _SlackError("channel_not_found")
        if info["is_private"]:
            raise _SlackError("method_not_supported_for_channel_type")
        if info["is_archived"]:
            raise _SlackError("is_archived")
        info["is_member"] = True
        return {"channel": {"id": channel, "name": info["name"], "is_member": True}}

    def _check_trigger(self, params: dict) -> None:
        trigger_id = params.get("trigger_id")
        if not trigger_id and not params.get("interactivity_pointer"):
            raise _SlackError("invalid_arguments", response_metadata={"messages": ["invalid `trigger_id`"]})
        if trigger_id == "expired":
            raise _SlackError("expired_trigger_id")

    def _new_view(self, view: Any, *, view_id: str | None = None, previous: dict | None = None) -> dict:
        if not isinstance(view, dict):
            raise _SlackError(
                "invalid_arguments", response_metadata={"messages": ["missing required field: view"]}
            )
        view_id = view_id or self._next_view_id()
        stored = copy.deepcopy(view)
        stored.update(
            {
                "id": view_id,
                "team_id": TEAM_ID,
                "app_id": APP_ID,
                "bot_id": BOT_ID,
                "callback_id": view.get("callback_id", ""),
                "external_id": view.get("external_id", ""),
                "private_metadata": view.get("private_metadata", ""),
                "state": {"values": {}},
                "hash": f"{time.time():.6f}.{next(self._hash_seq)}",
                "root_view_id": (previous or {}).get("root_view_id", view_id),
                "previous_view_id": (previous or {}).get("previous_view_id"),
            }
        )
        self._views[view_id] = stored
        return stored

    def _views_open(self, params: dict) -> dict:
        self._check_trigger(params)
        return {"view": copy.deepcopy(self._new_view(params.get("view")))}

    def _views_push(self, params: dict) -> dict:
        self._check_trigger(params)
        return {"view": copy.deepcopy(self._new_view(params.get("view")))}

    def _views_update(self, params: dict) -> dict:
        view_id, external_id = params.get("view_id"), params.get("external_id")
        if not view_id and not external_id:
            raise _SlackError("invalid_arguments", response_metadata={"messages": ["view_id or external_id"]})
        current = self._views.get(view_id) if view_id else None
        if current is None and external_id:
            current = next((v for v in self._views.values() if v.get("external_id") == external_id), None)
        if current is None:
            raise _SlackError("not_found")
        if params.get("hash") and params["hash"] != current["hash"]:
            raise _SlackError("hash_conflict")
        return {
            "view": copy.deepcopy(self._new_view(params.get("view"), view_id=current["id"], previous=current))
        }

    def _views_publish(self, params: dict) -> dict:
        user_id = _required(params, "user_id")
        view = params.get("view")
        if isinstance(view, dict) and view.get("type") != "home":
            raise _SlackError("invalid_arguments", response_metadata={"messages": ["view type must be home"]})
        current_id = self._home_views.get(user_id)
        current = self._views.get(current_id) if current_id else None
        if current is not None and params.get("hash") and params["hash"] != current["hash"]:
            raise _SlackError("hash_conflict")
        stored = self._new_view(view, view_id=current_id, previous=current)
        self._home_views[user_id] = stored["id"]
        return {"view": copy.deepcopy(stored)}

    def _usergroups_users_list(self, params: dict) -> dict:
        group = params.get("usergroup")
        if group not in self._usergroups:
            raise _SlackError("no_such_subteam")
        return {"users": list(self._usergroups[group])}

    def _users_info(self, params: dict) -> dict:
        user = self._users.get(params.get("user") or "")
        if user is None:
            raise _SlackError("user_not_found")
        return {"user": copy.deepcopy(user)}

    def _users_lookup_by_email(self, params: dict) -> dict:
        email = (params.get("email") or "").lower()
        for user in self._users.values():
            if email and (user["profile"].get("email") or "").lower() == email:
                return {"user": copy.deepcopy(user)}
        raise _SlackError("users_not_found")


def _ok(body: Any) -> bool:
    if isinstance(body, dict):
        return bool(body.get("ok"))
    return body == "ok"
