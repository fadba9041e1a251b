"""`breakglass-bot try` as a new user meets it: a busy port, stopping it with SIGTERM, previewing the team's
own policy, and one simulated clock for the page, the bot and its clock-skew check."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from bot.localslack.workspace import AUDIT_CHANNEL, LocalWorkspace, try_policy
from bot.policy import parse_policy
from tests.harness import http
from tests.processes import BIN, clean_env, free_port
from tests.test_try_workspace import post, state_of

TEAM_POLICY = """\
audit_channel: C0TEAMAUDIT
incident_commanders: [S0TEAMIC]
security: [S0TEAMSEC]
identity: email
email_domains: [team.example]
rate_limits:
  per_user: 2
access:
  provider: identity-center
  instance_arn: arn:aws:sso:::instance/ssoins-1234567890abcdef
  identity_store_id: d-1234567890
profiles:
  billing-readonly:
    description: Billing, read only
    durations: [20m, 40m]
    invokers: [S0FINANCE]
    aws:
      account: "123456789012"
      permission_set: arn:aws:sso:::permissionSet/ssoins-1234567890abcdef/ps-1234567890abcdef
"""


def start_try(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "breakglass-bot"), "try", *args],
        cwd=tmp_path,
        env=clean_env(TMPDIR=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_busy_port_is_named_with_the_port_to_use_instead(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_try(tmp_path, "--port", str(port))
        out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in err
    assert f"make try PORT={port + 1}" in err
    assert "Traceback" not in err
    assert out == ""
    assert list(tmp_path.iterdir()) == []  # no temporary store was left behind


def test_sigterm_stops_it_and_removes_its_temporary_store(tmp_path: Path) -> None:
    port = free_port()
    process = start_try(tmp_path, "--port", str(port))
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line
        store = Path(line.split("store: ", 1)[1].split(";", 1)[0])
        assert store.parent.name.startswith("breakglass-try-")
        assert store.parent.parent == tmp_path
        assert store.exists()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert not store.parent.exists()
    assert list(tmp_path.iterdir()) == []


def test_policy_previews_the_teams_profiles_and_limits_with_the_example_people(tmp_path: Path) -> None:
    path = tmp_path / "team.yml"
    path.write_text(TEAM_POLICY)
    port = free_port()
    process = start_try(tmp_path, "--port", str(port), "--policy", str(path))
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(5)]
        said = "".join(lines)
        assert "profile 'billing-readonly': everyone may invoke it here" in said
        assert "access: identity-center is not called" in said
        assert "identity: email becomes slack_id" in said
        assert f"http://127.0.0.1:{port}/" in lines[-1], said
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_an_invalid_policy_file_is_refused_with_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("warn_before: soon\nprofiles:\n  x:\n    durations: [5h]\n")
    process = start_try(tmp_path, "--port", str(free_port()), "--policy", str(path))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "warn_before" in err and "profiles.x.durations" in err


def test_the_teams_policy_runs_in_the_simulation(tmp_path: Path) -> None:
    policy, _ = try_policy(parse_policy(TEAM_POLICY, "team.yml"))
    with LocalWorkspace(port=0, db_path=str(tmp_path / "try.db"), policy=policy) as workspace:
        text = "/breakglass billing-readonly 20m incident " + "x" * 25
        assert post(workspace, "/ui/command", {"user": "U0ENG", "text": text})[0] == 200
        assert post(workspace, "/ui/command", {"user": "U0IC", "text": text})[0] == 200
        assert workspace.runtime is not None
        active = workspace.runtime.store.list_active()
        assert sorted(e.slack_user_id for e in active) == ["U0ENG", "U0IC"]
        assert {e.access for e in active} == {None}  # no AWS access in the simulation
        workspace.slack.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == AUDIT_CHANNEL)
        # its durations hold: 15m is not one of them
        post(workspace, "/ui/command", {"user": "U0SEC", "text": text.replace("20m", "15m")})
        sam = next(u for u in state_of(workspace)["users"] if u["id"] == "U0SEC")
        assert "choose 20 minutes, 40 minutes" in sam["ephemerals"][-1]["text"]
        assert len(workspace.runtime.store.list_active()) == 2


def test_one_clock_for_the_page_the_bot_and_the_skew_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with LocalWorkspace(port=0, db_path=str(tmp_path / "try.db")) as workspace:
        assert post(workspace, "/ui/fast-forward", {"seconds": 6 * 3600})[0] == 200
        with caplog.at_level(logging.WARNING):
            text = "/breakglass sandbox 15m incident " + "x" * 25
            assert post(workspace, "/ui/command", {"user": "U0ENG", "text": text})[0] == 200
            [audit] = workspace.slack.wait_for(
                "chat.postMessage", where=lambda c: c.params.get("channel") == AUDIT_CHANNEL
            )
            health = http("GET", workspace.url + "healthz").json
        simulated = workspace.clock.now().timestamp()
        ts = float(audit.response["ts"])
        assert abs(ts - simulated) < 60  # the message is stamped with the simulated time, 6 h ahead
        assert ts - time.time() > 5 * 3600
        assert next(m for m in state_of(workspace)["channels"] if m["id"] == AUDIT_CHANNEL)["messages"]
        assert health["checks"]["clock"]["ok"] is True, json.dumps(health)
        assert not [r for r in caplog.records if "skew" in r.getMessage().lower()]
