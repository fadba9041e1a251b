"""The `try` workspace without a browser: the offset clock, fast-forward limits, and what the page's
endpoints turn into (signed requests to the bot; the state the page renders)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.clock import ManualClock, OffsetClock
from bot.localslack.pageguard import TOKEN_HEADER
from bot.localslack.workspace import AUDIT_CHANNEL, OPS_CHANNEL, LocalWorkspace
from tests.harness import http
from tests.processes import BIN, clean_env, free_port


def test_offset_clock_moves_only_forward() -> None:
    base = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    clock = OffsetClock(base)
    assert clock.now() == base.now()
    clock.advance(timedelta(minutes=15))
    base.advance(1)
    assert clock.now() == base.now() + timedelta(minutes=15)
    assert clock.offset == timedelta(minutes=15)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[LocalWorkspace]:
    with LocalWorkspace(port=0, db_path=str(tmp_path / "try.db")) as ws:
        yield ws


def page_token(url: str) -> str:
    """The token the page served at ``url`` holds (what its script sends in X-Breakglass-Token)."""
    page = http("GET", url).text
    match = re.search(r'<meta name="breakglass-token" content="([^"]+)">', page)
    assert match, "the page carries no token"
    return match.group(1)


def post(workspace: LocalWorkspace, path: str, body: dict) -> tuple[int, dict]:
    response = http(
        "POST",
        workspace.url + path.lstrip("/"),
        json.dumps(body).encode(),
        {"Content-Type": "application/json", TOKEN_HEADER: page_token(workspace.url)},
    )
    return response.status, response.json


def state_of(workspace: LocalWorkspace) -> dict:
    return http("GET", workspace.url + "ui/state", headers={TOKEN_HEADER: page_token(workspace.url)}).json


def test_page_is_served_on_loopback_and_says_it_is_a_simulation(workspace: LocalWorkspace) -> None:
    assert workspace.url.startswith("http://127.0.0.1:")
    page = http("GET", workspace.url)
    assert page.status == 200
    assert "Local simulation" in page.text
    state = state_of(workspace)
    assert state["simulation"] is True
    assert {u["role"] for u in state["users"]} == {"Engineer", "Incident commander", "Security"}
    assert http("GET", workspace.url + "healthz").json["status"] == "ok"


def test_fast_forward_expires_on_the_advanced_clock(workspace: LocalWorkspace) -> None:
    status, _ = post(
        workspace, "/ui/command", {"user": "U0ENG", "text": "/breakglass sandbox 15m incident " + "x" * 25}
    )
    assert status == 200
    runtime = workspace.runtime
    assert runtime is not None
    [event] = runtime.store.list_active()
    assert post(workspace, "/ui/fast-forward", {"seconds": -5})[0] == 400
    assert post(workspace, "/ui/fast-forward", {"seconds": 3 * 86400})[0] == 400
    assert post(workspace, "/ui/fast-forward", {"seconds": 16 * 60})[0] == 200
    assert runtime.store.get(event.id).status.value == "expired"  # type: ignore[union-attr]
    workspace.slack.wait_for("chat.update", where=lambda c: "EXPIRED" in json.dumps(c.params))


def test_command_answers_and_unknown_input_are_ephemeral(workspace: LocalWorkspace) -> None:
    post(workspace, "/ui/command", {"user": "U0IC", "text": "/breakglass help", "channel": OPS_CHANNEL})
    post(workspace, "/ui/command", {"user": "U0IC", "text": "hello", "channel": AUDIT_CHANNEL})
    assert post(workspace, "/ui/command", {"user": "U0NOBODY", "text": "/breakglass"})[0] == 400
    state = state_of(workspace)
    ic = next(u for u in state["users"] if u["id"] == "U0IC")
    assert [e["channel"] for e in ic["ephemerals"]] == [OPS_CHANNEL, AUDIT_CHANNEL]
    assert "/breakglass" in ic["ephemerals"][0]["text"]
    assert "not a command" in ic["ephemerals"][1]["text"]
    others = [u for u in state["users"] if u["id"] != "U0IC"]
    assert all(u["ephemerals"] == [] for u in others)
    assert state["channels"][1]["messages"] == []


def test_breakglass_bot_try_serves_the_page_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "breakglass-bot"), "try", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line + (process.stderr.read() if process.stderr else "")
        store = Path(line.split("store: ", 1)[1].split(";", 1)[0])
        assert store.exists()
        assert "Local simulation" in http("GET", f"http://127.0.0.1:{port}/").text
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    assert not store.parent.exists()  # the temporary store is gone
    assert list(tmp_path.iterdir()) == []  # nothing left in the working directory
