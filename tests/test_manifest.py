"""manifest.yml validates against Slack's official schema and matches what the code uses."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from bot import ids
from tests.outside import shared_file

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "slack/manifest.schema.1.0.0.json"  # in ../shared (Slack's schema, MIT)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


def test_manifest_validates_against_slacks_schema(manifest: dict) -> None:
    schema = json.loads(shared_file(SCHEMA).read_text())
    jsonschema.validate(manifest, schema)


def test_manifest_has_what_the_bot_needs(manifest: dict) -> None:
    commands = [c["command"] for c in manifest["features"]["slash_commands"]]
    assert commands == [ids.COMMAND]
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert "app_home_opened" in manifest["settings"]["event_subscriptions"]["bot_events"]


def test_only_the_scopes_the_code_uses(manifest: dict) -> None:
    """Each scope is justified by a Web API method the bot calls, and each method's scope is granted."""
    scope_for = {
        "chat_postMessage": "chat:write",
        "chat_postEphemeral": "chat:write",
        "chat_update": "chat:write",
        "usergroups_users_list": "usergroups:read",
        "users_info": "users:read",
        "conversations_history": "channels:history",
        "conversations_join": "channels:join",
    }
    source = "\n".join(p.read_text() for p in (ROOT / "bot").rglob("*.py"))
    used = {m for m in re.findall(r"\.(\w+)\(", source) if m in scope_for or m.startswith("views_")}
    needed = {scope_for[m] for m in used if m in scope_for} | {"commands", "users:read.email"}
    if "conversations_history" in used:  # the audit channel may be private
        needed.add("groups:history")
    granted = set(manifest["oauth_config"]["scopes"]["bot"])
    assert granted == needed
    assert {"views_open", "views_publish"} <= used  # need no scope beyond the command/interactivity


def test_procfile_runs_the_wsgi_app_and_socket_mode() -> None:
    lines = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    assert "gunicorn" in lines["web"] and "bot.wsgi:app" in lines["web"]
    assert "breakglass-bot socket" in lines["worker"]
    assert "breakglass-bot clock" in lines["clock"]
