"""The real entry points as subprocesses: `breakglass-bot http` under gunicorn, config errors, check-policy."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bot.localslack.webapi import FakeSlack
from tests.harness import BOT_TOKEN, SIGNING_SECRET, SlackSender, http
from tests.processes import BIN, BotProcess, clean_env


def test_missing_settings_exit_2_naming_each_problem(tmp_path: Path) -> None:
    result = subprocess.run(
        [BIN / "breakglass-bot"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN is not set" in result.stderr
    assert "SLACK_SIGNING_SECRET is not set" in result.stderr
    assert "BREAKGLASS_AUDIT_CHANNEL is not set" in result.stderr  # every problem at once
    assert "manifest.yml" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_settings_never_print_secrets(tmp_path: Path) -> None:
    secret = "sekrit-signing-value-123456"
    env = clean_env(
        SLACK_BOT_TOKEN="xoxp-user-token-not-a-bot-token-98765",
        SLACK_SIGNING_SECRET=secret,
        SLACK_APP_TOKEN="not-an-app-token-55555",
        BREAKGLASS_AUDIT_CHANNEL="#security",
        BREAKGLASS_STORE="postgres://x",
    )
    result = subprocess.run(
        [BIN / "breakglass-bot"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    out = result.stdout + result.stderr
    for problem in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "BREAKGLASS_AUDIT_CHANNEL", "BREAKGLASS_STORE"):
        assert problem in out
    for value in ("xoxp-user-token-not-a-bot-token-98765", secret, "not-an-app-token-55555"):
        assert value not in out


def test_missing_audit_channel_and_bad_policy(tmp_path: Path) -> None:
    env = clean_env(SLACK_BOT_TOKEN="xoxb-1-2-3", SLACK_SIGNING_SECRET="s" * 32)
    result = subprocess.run(
        [BIN / "breakglass-bot", "clock"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "BREAKGLASS_AUDIT_CHANNEL" in result.stderr
    policy = tmp_path / "policy.yml"
    policy.write_text("profiles:\n  prod:\n    durations: [5h]\n")
    env["BREAKGLASS_POLICY"] = str(policy)
    env["BREAKGLASS_AUDIT_CHANNEL"] = "C0AUDIT"
    result = subprocess.run(
        [BIN / "breakglass-bot", "clock"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert str(policy) in result.stderr
    assert "profiles.prod.durations[0]" in result.stderr
    assert "4h" in result.stderr


def test_check_policy(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text(
        "audit_channel: C0AUDIT\nprofiles:\n  prod:\n    durations: [15m, 1h]\n    invokers: [S0SRE]\n"
    )
    result = subprocess.run(
        [BIN / "breakglass-bot", "check-policy", str(good)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "prod" in result.stdout
    assert "S0SRE" in result.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text("profils: {}\n")
    result = subprocess.run(
        [BIN / "breakglass-bot", "check-policy", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "profils" in result.stderr


@pytest.fixture
def http_bot(tmp_path: Path) -> Iterator[tuple[BotProcess, FakeSlack]]:
    with FakeSlack(token=BOT_TOKEN, users={"U0001": {"email": "a@example.com"}}) as fake:
        bot = BotProcess(tmp_path, fake.url, f"sqlite:///{tmp_path / 'bot.db'}").start()
        try:
            yield bot, fake
        finally:
            bot.kill()


def test_http_server_under_gunicorn_handles_20_concurrent_connections(http_bot) -> None:
    bot, fake = http_bot
    sender = SlackSender(bot.url, fake)

    def one(i: int) -> int:
        if i % 2:
            return http("GET", bot.url + "/healthz", timeout=10).status
        return sender.command("help", user=f"U{i:04d}").status

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(one, range(60)))
    assert statuses == [200] * 60
    # a signed invocation works end to end through gunicorn
    response = sender.invoke(user="U0001", profile="sandbox", duration="900")
    assert response.json["response_action"] == "update", response.text
    fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == "C0AUDIT")
    # forged requests are refused
    assert SlackSender(bot.url, fake, secret="wrong").command("help").status == 401
    # SIGTERM: a clean, prompt exit
    assert bot.terminate() == 0
    logs = bot.stderr()
    assert SIGNING_SECRET not in logs
    assert BOT_TOKEN not in logs


def test_procfile_web_command_serves_bot_wsgi_app(tmp_path: Path) -> None:
    """`gunicorn bot.wsgi:app` as in the Procfile: several workers, scheduler off (the clock process runs it)."""
    gunicorn = [str(BIN / "gunicorn"), "--worker-class", "gthread", "--workers", "2", "--threads", "4"]
    with FakeSlack(token=BOT_TOKEN) as fake:
        bot = BotProcess(
            tmp_path,
            fake.url,
            f"sqlite:///{tmp_path / 'web.db'}",
            command=[*gunicorn, "--bind", "127.0.0.1:{port}", "bot.wsgi:app"],
            BREAKGLASS_SCHEDULER="off",
        ).start()
        try:
            health = http("GET", bot.url + "/healthz")
            assert health.status == 200
            assert health.json["checks"]["scheduler"] == {"ok": True, "running": False}
            assert SlackSender(bot.url, fake).command("help").json["text"].startswith("*Break-glass*")
        finally:
            assert bot.terminate() == 0
