"""Property-based: any text a user can type either gets a clear validation error or is stored exactly as
typed and shown escaped — never an exception, never an injection into mrkdwn."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_sdk import WebClient

from bot import blocks
from bot.clock import ManualClock
from bot.directory import Directory
from bot.errors import BreakglassError, ValidationFailed
from bot.localslack.webapi import FakeSlack, validate_blocks
from bot.policy import parse_policy
from bot.service import BreakGlassService, InvokeRequest
from bot.slack.commands import parse_fast_path, unescape_command_text
from store import StoreError
from store.sqlite import SQLiteStore

POLICY = parse_policy(
    "audit_channel: C0AUDIT\nprofiles:\n  sandbox:\n    durations: [15m, 1h]\n  prod:\n    durations: [1h]\n",
    "hostile.yml",
)
NASTY = [
    "<!channel>",
    "<!here>",
    "<@U0002>",
    "<https://evil.example|click me>",
    "&lt;!channel&gt;",
    "*bold* _it_ ~s~ `code` ```block```",
    "\u202eRTL override\u202c",
    "zero\u200bwidth\u200d",
    "emoji 🔥🧯👩‍🚒",
    "\x00nul",
    "\x1b[31mansi",
    "line\nbreak\r\nand\ttab",
    "a" * 10_000,
]
texts = st.one_of(
    st.text(max_size=1200),
    st.sampled_from(NASTY),
    st.lists(st.sampled_from(NASTY), min_size=1, max_size=6).map(" ".join),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=15, max_size=40).map(
        lambda s: s + " <!channel> <@U1>"
    ),
)
OUR_TOKENS = re.compile(r"<@U[0-9A-Z]+>|<!date\^\d+\^[^|>]*\|[^>]*>|<!subteam\^S[0-9A-Z]+>")
_users = itertools.count()


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(token="xoxb-test-token") as server:
        yield server


def new_user(slack: FakeSlack) -> str:
    """A fresh workspace member (every invocation looks its invoker up: guests and strangers are refused)."""
    user = f"U{next(_users):08d}"
    slack.add_user(user)
    return user


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, slack: FakeSlack) -> BreakGlassService:
    store = SQLiteStore(Path(tmp_path_factory.mktemp("hostile")) / "h.db")
    directory = Directory(WebClient(token="xoxb-test-token", base_url=slack.url), team_id="T0001")
    return BreakGlassService(
        store=store,
        policy=POLICY,
        directory=directory,
        clock=ManualClock(datetime.now(UTC)),
        default_audit_channel="C0AUDIT",
    )


def assert_no_injection(rendered: list[dict]) -> None:
    text = json.dumps(rendered, ensure_ascii=False)
    assert "<" not in OUR_TOKENS.sub("", text), text[:500]
    assert validate_blocks(rendered) == []


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(justification=texts, incident=st.one_of(st.none(), texts))
def test_any_justification_and_incident(
    service: BreakGlassService, slack: FakeSlack, justification: str, incident: str | None
) -> None:
    user = new_user(slack)
    request = InvokeRequest(user, "sandbox", "incident", justification, "900", incident)
    try:
        event = service.invoke(request)
    except ValidationFailed as exc:
        assert exc.errors
        assert all(isinstance(m, str) and m for m in exc.errors.values())
        assert service.store.list_by_invoker(user).items == []  # nothing changed
        return
    assert event.justification == justification.strip()  # stored as typed
    stored = service.store.get(event.id)
    assert stored.justification == justification.strip()
    assert stored.incident == (incident.strip() or None if incident is not None else None)
    assert_no_injection(blocks.audit_message(stored))
    assert_no_injection(blocks.dm_invoked(stored)[1])
    closed = service.close(event.id, by=user, reason=justification[:400] if justification.strip() else "done")
    assert_no_injection(blocks.audit_message(closed.event))
    assert_no_injection(blocks.thread_closed(closed.event)[1])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.one_of(
        st.text(max_size=300),
        st.lists(
            st.sampled_from([*NASTY[:9], "sandbox", "1h", "15m", "incident", "incident=INC-1", "5x", "-1h"]),
            max_size=8,
        ).map(" ".join),
    )
)
def test_fast_path_parser_never_crashes(service: BreakGlassService, slack: FakeSlack, text: str) -> None:
    words = unescape_command_text(text).split()
    try:
        request = parse_fast_path(new_user(slack), words, None)
        service.invoke(request)
    except (BreakglassError, StoreError) as exc:
        assert str(exc)


@pytest.mark.parametrize("value", NASTY)
def test_escape_removes_every_control_character_of_mrkdwn(value: str) -> None:
    escaped = blocks.escape(value)
    assert "<" not in escaped
    assert ">" not in escaped
    assert escaped.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "").count("&") == 0


def test_bot_authored_help_and_usage_have_no_raw_angle_brackets() -> None:
    from bot.slack.commands import USAGE

    for text in (blocks.HELP, blocks.escape(USAGE)):
        assert "<" not in OUR_TOKENS.sub("", text)
