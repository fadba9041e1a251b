"""Socket Mode: the real SocketModeHandler against a local WebSocket server acting as Slack."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from slack_bolt.adapter.socket_mode import SocketModeHandler
from websockets.sync.server import ServerConnection, serve

from bot.app import create_app, make_slack_client
from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from store.sqlite import SQLiteStore
from tests.conftest import settings_for


class FakeSocketSlack:
    """Says hello, then pushes each queued envelope and collects the app's acks."""

    def __init__(self) -> None:
        self.outgoing: queue.Queue[dict[str, Any]] = queue.Queue()
        self.acks: queue.Queue[dict[str, Any]] = queue.Queue()
        self.server = serve(self._handle, "127.0.0.1", 0)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/link"

    def _handle(self, ws: ServerConnection) -> None:
        ws.send(json.dumps({"type": "hello", "num_connections": 1, "debug_info": {}, "connection_info": {}}))
        while True:
            try:
                envelope = self.outgoing.get(timeout=0.05)
                ws.send(json.dumps(envelope))
            except queue.Empty:
                pass
            try:
                message = ws.recv(timeout=0.05)
            except TimeoutError:
                continue
            except Exception:
                return
            self.acks.put(json.loads(message))


@pytest.fixture
def socket_slack() -> Iterator[FakeSocketSlack]:
    server = FakeSocketSlack()
    server.thread.start()
    yield server
    server.server.shutdown()


def test_socket_mode_slash_command_and_submission(
    fake: FakeSlack, socket_slack: FakeSocketSlack, tmp_path, policy: Policy, clock: ManualClock
) -> None:
    fake.socket_mode_url = socket_slack.url
    settings = settings_for(fake, slack_app_token=fake.app_token, slack_signing_secret=None)
    store = SQLiteStore(tmp_path / "socket.db")
    runtime = create_app(settings, store, make_slack_client(settings), policy=policy, clock=clock)
    handler = SocketModeHandler(runtime.bolt, fake.app_token)
    handler.client.web_client.base_url = fake.url
    handler.connect()
    try:
        socket_slack.outgoing.put(
            {
                "envelope_id": "env-1",
                "type": "slash_commands",
                "accepts_response_payload": True,
                "payload": {
                    "team_id": "T0001",
                    "channel_id": "C0001",
                    "user_id": "U0001",
                    "command": "/breakglass",
                    "text": "",
                    "api_app_id": "A0001",
                    "response_url": fake.response_url("socket"),
                    "trigger_id": "111.222.socket",
                },
            }
        )
        ack = socket_slack.acks.get(timeout=10)
        assert ack["envelope_id"] == "env-1"
        opened = fake.wait_for("views.open")[0]
        view = opened.params["view"]
        assert view["callback_id"] == "breakglass_invoke"
        view_id = opened.response["view"]["id"]  # who U0001 is, put into the opened view (bot.invoker)
        fake.wait_for("views.update", where=lambda c: c.params.get("view_id") == view_id)
        metadata = fake.views[view_id]["private_metadata"]

        state = {
            "profile": {"profile": {"type": "static_select", "selected_option": {"value": "sandbox"}}},
            "reason": {"reason": {"type": "static_select", "selected_option": {"value": "incident"}}},
            "justification": {
                "justification": {"type": "plain_text_input", "value": "Database failover is stuck again"}
            },
            "duration": {"duration": {"type": "static_select", "selected_option": {"value": "1800"}}},
            "incident": {"incident": {"type": "plain_text_input", "value": None}},
        }
        socket_slack.outgoing.put(
            {
                "envelope_id": "env-2",
                "type": "interactive",
                "accepts_response_payload": True,
                "payload": {
                    "type": "view_submission",
                    "team": {"id": "T0001"},
                    "user": {"id": "U0001"},
                    "api_app_id": "A0001",
                    "view": {
                        "id": view_id,
                        "type": "modal",
                        "callback_id": "breakglass_invoke",
                        "state": {"values": state},
                        "private_metadata": metadata,
                    },
                },
            }
        )
        ack = socket_slack.acks.get(timeout=10)
        assert ack["envelope_id"] == "env-2"
        assert ack["payload"]["response_action"] == "update"
        event = store.list_active()[0]
        audit = fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == "C0AUDIT")[0]
        assert event.id in json.dumps(audit.params["blocks"])
        assert fake.socket_opens >= 1
    finally:
        handler.close()
        runtime.shutdown()
        store.disconnect()
