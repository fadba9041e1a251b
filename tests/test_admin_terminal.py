"""`breakglass-admin` at a terminal, as an operator runs it: real processes, what they print."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bot.admin import render_show
from store.model import OutboxKind
from store.sqlite import SQLiteStore
from tests.processes import BIN, clean_env
from tests.store_fixtures import make_event


def admin(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "breakglass-admin"), "--store", f"sqlite:///{tmp_path / 'b.db'}", *argv],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_close_then_a_refused_close_print_only_what_happened(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "b.db")
    event = store.create(make_event(profile="sandbox", now=datetime.now(UTC)))
    store.disconnect()
    closed = admin(tmp_path, "close", event.id, "--reason", "incident over", "--operator", "alice")
    assert closed.returncode == 0, closed.stderr
    assert f"closed event {event.id}" in closed.stdout
    assert "owed" in closed.stderr  # no Slack settings here: the announcements wait for the bot's sweep
    assert not [line for line in closed.stderr.splitlines() if line.startswith("{")], (
        closed.stderr
    )  # no JSON log

    refused = admin(tmp_path, "close", event.id, "--reason", "again", "--operator", "bob")
    assert refused.returncode != 0
    assert f"refused: event {event.id} is already closed by operator:alice" in refused.stderr
    assert "owed" not in refused.stderr and "announce" not in refused.stderr, refused.stderr
    assert not [line for line in refused.stderr.splitlines() if line.startswith("{")], refused.stderr


def test_show_says_nothing_of_a_lease_when_nothing_is_owed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "b.db")
    event = store.create(make_event(profile="sandbox", now=datetime.now(UTC)))
    delivered = store.get(event.id)
    assert delivered.outbox == () and delivered.outbox_leased is True  # the stored default
    line = next(ln for ln in render_show(delivered).splitlines() if ln.startswith("outbox_leased"))
    assert line.split() == ["outbox_leased", "-"]
    owed = delivered.with_outbox(OutboxKind.AUDIT_POST, version=delivered.version)
    owed = owed.updated(outbox_next_at=datetime.now(UTC), outbox_leased=False)
    line = next(ln for ln in render_show(owed).splitlines() if ln.startswith("outbox_leased"))
    assert "backoff" in line
    store.disconnect()


def test_since_shows_its_date_format_in_help(tmp_path: Path) -> None:
    for command in ("list", "export"):
        shown = admin(tmp_path, command, "--help")
        assert "YYYY-MM-DD" in " ".join(shown.stdout.split()), shown.stdout
