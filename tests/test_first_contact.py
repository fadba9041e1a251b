"""What a new user or operator meets in the first hour (issue 11): the real console scripts and gunicorn as
subprocesses, each configuration error one clear message with the right exit status."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fake_slack import FakeSlack
from tests.harness import BOT_TOKEN, SIGNING_SECRET
from tests.processes import BIN, BotProcess, clean_env

pytest_plugins = ["tests.store_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
BROKEN_POLICY = "profiles:\n  prod:\n    durations: [5h]\n"
BROKEN_MESSAGE = "profiles.prod.durations[0]"
GUNICORN = [str(BIN / "gunicorn"), "--worker-class", "gthread", "--workers", "2", "--threads", "2"]


def run(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def slack_env(**extra: str) -> dict[str, str]:
    env = clean_env(
        SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET, BREAKGLASS_AUDIT_CHANNEL="C0AUDIT"
    )
    env.update(extra)
    return env


def no_aws_region(env: dict[str, str], **extra: str) -> dict[str, str]:
    """`env` without any AWS region (nor a profile or config file that could name one), plus `extra`."""
    env = {k: v for k, v in env.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE")}
    env.update(extra)
    env["AWS_CONFIG_FILE"] = "/nonexistent/breakglass-test-aws-config"
    env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent/breakglass-test-aws-credentials"
    env["AWS_ACCESS_KEY_ID"] = "testing"
    env["AWS_SECRET_ACCESS_KEY"] = "testing"
    return env


# -- 1. configuration errors end every mode with exit 2 and the message, once -------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["breakglass-bot"],  # HTTP under gunicorn (no SLACK_APP_TOKEN)
        ["breakglass-bot", "http"],
        ["breakglass-bot", "socket"],
        ["breakglass-bot", "clock"],
        [*GUNICORN, "-c", "python:bot.gunicorn_conf", "--bind", "127.0.0.1:0", "bot.wsgi:app"],  # Procfile
    ],
    ids=["default", "http", "socket", "clock", "procfile-gunicorn"],
)
def test_a_broken_policy_exits_2_with_the_message_once(tmp_path: Path, command: list[str]) -> None:
    policy = tmp_path / "broken.yml"
    policy.write_text(BROKEN_POLICY)
    argv = [str(BIN / command[0]), *command[1:]] if command[0].startswith("breakglass") else command
    env = slack_env(BREAKGLASS_POLICY=str(policy), SLACK_API_URL="http://127.0.0.1:9/")
    if command[-1] == "socket":
        env["SLACK_APP_TOKEN"] = "xapp-1-A0-1-abc"
    result = run(argv, tmp_path, env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count(BROKEN_MESSAGE) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "Booting worker" not in result.stderr  # found before any worker was forked


def test_plain_gunicorn_halts_at_the_first_boot_instead_of_restarting_workers(tmp_path: Path) -> None:
    """`gunicorn bot.wsgi:app` without our config module: the worker exits with gunicorn's
    WORKER_BOOT_ERROR, so the arbiter stops at once (it restarted workers forever before)."""
    policy = tmp_path / "broken.yml"
    policy.write_text(BROKEN_POLICY)
    env = slack_env(BREAKGLASS_POLICY=str(policy), SLACK_API_URL="http://127.0.0.1:9/")
    result = run([*GUNICORN, "--bind", "127.0.0.1:0", "bot.wsgi:app"], tmp_path, env)
    assert result.returncode == 3, result.stderr[-2000:]  # gunicorn's "worker failed to boot"
    # one worker booted, failed with the message, and the arbiter halted (the other may not have started)
    assert 1 <= result.stderr.count(BROKEN_MESSAGE) <= 2, result.stderr[-3000:]
    assert result.stderr.count("Booting worker") <= 2


def test_a_policy_without_an_audit_channel_exits_2(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text("profiles:\n  sandbox:\n    durations: [15m]\n")
    env = clean_env(
        SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET, BREAKGLASS_POLICY=str(policy)
    )
    result = run([str(BIN / "breakglass-bot")], tmp_path, env)
    assert result.returncode == 2
    assert result.stderr.count("no audit channel") == 1
    assert "Traceback" not in result.stderr


def test_lambda_init_fails_with_the_configuration_problem(tmp_path: Path) -> None:
    policy = tmp_path / "broken.yml"
    policy.write_text(BROKEN_POLICY)
    env = slack_env(BREAKGLASS_POLICY=str(policy), AWS_LAMBDA_FUNCTION_NAME="breakglass-http")
    result = run([str(BIN / "python"), "-c", "import bot.lambda_handler"], tmp_path, env)
    assert result.returncode != 0
    # the init error (what Lambda shows for a failed init) is the configuration problem itself
    error = result.stderr[result.stderr.index("RuntimeError: ") :]
    assert error.startswith("RuntimeError: breakglass cannot start:")
    assert BROKEN_MESSAGE in error


# -- 2. AWS_REGION -------------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["breakglass-admin", "breakglass-bot"])
def test_create_table_with_only_aws_region(tmp_path: Path, moto_server_url: str, script: str) -> None:
    env = no_aws_region(clean_env(AWS_ENDPOINT_URL_DYNAMODB=moto_server_url), AWS_REGION="us-east-1")
    table = f"bg-region-{script}"
    result = run([str(BIN / script), "create-table", "--store", f"dynamodb://{table}"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert f"created table {table}" in result.stdout


@pytest.mark.parametrize(
    "command",
    [["breakglass-admin", "create-table"], ["breakglass-bot", "create-table"], ["breakglass-admin", "list"]],
)
def test_no_region_is_one_clear_line(tmp_path: Path, command: list[str]) -> None:
    env = no_aws_region(clean_env(BREAKGLASS_STORE="dynamodb://breakglass-events"))
    result = run([str(BIN / command[0]), *command[1:]], tmp_path, env)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "no AWS region: set AWS_REGION" in result.stderr


def test_the_bot_boots_on_dynamodb_with_only_aws_region(tmp_path: Path, moto_server_url: str) -> None:
    env = no_aws_region(clean_env(AWS_ENDPOINT_URL_DYNAMODB=moto_server_url), AWS_REGION="us-east-1")
    assert (
        run(
            [str(BIN / "breakglass-admin"), "create-table", "--store", "dynamodb://bg-boot"], tmp_path, env
        ).returncode
        == 0
    )
    with FakeSlack(token=BOT_TOKEN) as fake:
        bot = BotProcess(
            tmp_path, fake.url, "dynamodb://bg-boot", **{k: v for k, v in env.items() if k.startswith("AWS_")}
        )
        bot.env.pop("AWS_DEFAULT_REGION", None)
        try:
            bot.start()
        finally:
            bot.kill()


def test_no_region_stops_the_bot_with_one_line(tmp_path: Path) -> None:
    env = no_aws_region(slack_env(BREAKGLASS_STORE="dynamodb://breakglass-events"))
    result = run([str(BIN / "breakglass-bot")], tmp_path, env)
    assert result.returncode == 2
    assert result.stderr.count("no AWS region") == 1
    assert "Traceback" not in result.stderr


# -- 3. placeholders, malformed tokens, tokens Slack refuses ----------------------------------------


def test_env_example_copied_unchanged_is_refused(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = run([str(BIN / "breakglass-bot")], tmp_path, clean_env())
    assert result.returncode == 2
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "BREAKGLASS_AUDIT_CHANNEL"):
        assert f"{name} is still the .env.example placeholder" in result.stderr, name
    assert "Traceback" not in result.stderr


def test_missing_settings_point_at_env_example(tmp_path: Path) -> None:
    result = run([str(BIN / "breakglass-bot")], tmp_path, clean_env())
    assert result.returncode == 2
    assert "copy .env.example" in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SLACK_BOT_TOKEN", "xoxb-12 34", "SLACK_BOT_TOKEN is malformed"),
        ("SLACK_BOT_TOKEN", "xoxb-…", "placeholder"),
        ("SLACK_APP_TOKEN", "xapp-1-A0!-2", "SLACK_APP_TOKEN is malformed"),
        (
            "SLACK_SIGNING_SECRET",
            "...",
            "SLACK_SIGNING_SECRET is malformed or still the .env.example placeholder",
        ),
    ],
)
def test_malformed_tokens_are_refused(tmp_path: Path, name: str, value: str, expected: str) -> None:
    result = run([str(BIN / "breakglass-bot")], tmp_path, slack_env(**{name: value}))
    assert result.returncode == 2
    assert expected in result.stderr
    assert value not in result.stderr.replace(expected, "")


def test_a_bot_token_slack_refuses_is_one_line_naming_it(tmp_path: Path) -> None:
    with FakeSlack(token="xoxb-the-real-one") as fake:
        result = run([str(BIN / "breakglass-bot"), "clock"], tmp_path, slack_env(SLACK_API_URL=fake.url))
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN was refused by Slack (auth.test: invalid_auth)" in result.stderr
    assert "Traceback" not in result.stderr
    assert BOT_TOKEN not in result.stderr


def test_an_app_token_slack_refuses_is_one_line_naming_it(tmp_path: Path) -> None:
    with FakeSlack(token=BOT_TOKEN) as fake:
        env = slack_env(SLACK_API_URL=fake.url, SLACK_APP_TOKEN="xapp-1-A0WRONG-1-abcdef")
        result = run([str(BIN / "breakglass-bot"), "socket"], tmp_path, env)
    assert result.returncode == 2
    assert "SLACK_APP_TOKEN was refused by Slack (apps.connections.open: invalid_auth)" in result.stderr
    assert "Traceback" not in result.stderr
    assert "xapp-1-A0WRONG-1-abcdef" not in result.stderr


# -- 4 and 14. start-up warnings, JSON logs from gunicorn, no library chatter ------------------------


def json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def test_http_start_up_logs_json_only_and_warns_once_per_unheld_role(tmp_path: Path) -> None:
    with FakeSlack(token=BOT_TOKEN) as fake:
        bot = BotProcess(tmp_path, fake.url, f"sqlite:///{tmp_path / 'bot.db'}").start()  # built-in policy
        assert bot.terminate() == 0
        stderr = bot.stderr()
    records = json_lines(stderr)  # every line is one JSON object, gunicorn's own included
    loggers = {r["logger"] for r in records}
    assert "gunicorn.error" in loggers
    messages = [r["msg"] for r in records]
    assert sum("nobody is in the security role" in m for m in messages) == 1
    assert sum("nobody is an incident commander" in m for m in messages) == 1
    chatter = [
        r
        for r in records
        if r["logger"].startswith(("apscheduler", "slack_", "botocore")) and r["level"] == "info"
    ]
    assert chatter == []


def test_procfile_gunicorn_logs_json(tmp_path: Path) -> None:
    with FakeSlack(token=BOT_TOKEN) as fake:
        bot = BotProcess(
            tmp_path,
            fake.url,
            f"sqlite:///{tmp_path / 'web.db'}",
            command=[
                *GUNICORN,
                "-c",
                "python:bot.gunicorn_conf",
                "--bind",
                "127.0.0.1:{port}",
                "bot.wsgi:app",
            ],
            BREAKGLASS_SCHEDULER="off",
        ).start()
        assert bot.terminate() == 0
        records = json_lines(bot.stderr())
    assert any(r["logger"] == "gunicorn.error" and "Booting worker" in r["msg"] for r in records)
    # the master checked the configuration and warned once; the forked workers did not warn again
    assert sum("nobody is in the security role" in r["msg"] for r in records) == 1


def test_check_policy_shows_unheld_roles(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text("audit_channel: C0AUDIT\nincident_commanders: [U0IC]\nprofiles:\n  sandbox: {}\n")
    result = run([str(BIN / "breakglass-bot"), "check-policy", str(policy)], tmp_path, clean_env())
    assert result.returncode == 0
    assert "WARNING: nobody is in the security role" in result.stdout
    assert "incident commander" not in result.stdout.split("WARNING", 1)[1]


# -- 5. profile names that are subcommands ----------------------------------------------------------


def test_check_policy_refuses_subcommand_profile_names(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text("audit_channel: C0AUDIT\nprofiles:\n  List: {}\n  prod: {}\n")
    result = run([str(BIN / "breakglass-bot"), "check-policy", str(policy)], tmp_path, clean_env())
    assert result.returncode == 2
    assert "'List' cannot be a profile name: `/breakglass list` is a subcommand" in result.stderr


# -- 11. the admin CLI needs only the settings it uses ------------------------------------------------


def test_admin_close_announces_with_only_the_bot_token(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from slack_sdk import WebClient

    from store.sqlite import SQLiteStore
    from tests.store_fixtures import make_event

    with FakeSlack(token=BOT_TOKEN) as fake:
        audit = WebClient(token=BOT_TOKEN, base_url=fake.url).chat_postMessage(
            channel="C0AUDIT", text="audit"
        )
        store = SQLiteStore(tmp_path / "bg.db")
        now = datetime.now(UTC)
        event = store.create(
            make_event(now=now, profile="sandbox", audit_channel="C0AUDIT", audit_ts=audit["ts"])
        )
        store.close_store()
        env = clean_env(
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_API_URL=fake.url,
            BREAKGLASS_AUDIT_CHANNEL="C0AUDIT",
            BREAKGLASS_STORE=f"sqlite:///{tmp_path / 'bg.db'}",
        )
        args = ["close", event.id, "--reason", "Incident resolved", "--operator", "oncall"]
        result = run([str(BIN / "breakglass-admin"), *args], tmp_path, env)
        assert result.returncode == 0, result.stderr
        assert "announced in the audit channel" in result.stderr
        assert "SLACK_SIGNING_SECRET" not in result.stderr
        # slack_bolt's notices about the token it was not given ("`token` will be unused" / "ignored")
        assert "will be unused" not in result.stderr and "will be ignored" not in result.stderr
        assert len(fake.thread("C0AUDIT", audit["ts"])) == 1  # the close, in the audit thread


# -- 12. read commands never create a store ---------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["show", "0123456789abcdef"],
        ["export", "--since", "2026-01-01", "--format", "csv"],
        ["close", "0123456789abcdef", "--reason", "done here", "--operator", "ops"],
    ],
    ids=["list", "show", "export", "close"],
)
def test_read_commands_never_create_a_store(tmp_path: Path, args: list[str]) -> None:
    result = run([str(BIN / "breakglass-admin"), *args], tmp_path, clean_env())
    assert result.returncode == 2
    assert "SQLite store breakglass.db not found" in result.stderr
    assert not (tmp_path / "breakglass.db").exists()
    assert "Traceback" not in result.stderr


# -- 15. the policy: an example file, the built-in one, the SAM parameter ------------------------------


def test_examples_policy_is_valid_and_matches_the_readme() -> None:
    from bot.policy import load_policy, unheld_roles

    policy = load_policy(ROOT / "examples" / "policy.yml")
    assert unheld_roles(policy) == []  # a realistic policy: every role is held
    assert policy.profiles["prod"].require_incident and policy.profiles["prod"].invokers
    readme = (ROOT / "README.md").read_text()
    assert "examples/policy.yml" in readme
    for key in policy.model_fields_set:  # every key the example sets is documented in the README
        assert f"{key}:" in readme, key


def test_show_policy_prints_the_builtin_policy(tmp_path: Path) -> None:
    from bot.policy import DEFAULT_POLICY_YAML, parse_policy

    result = run([str(BIN / "breakglass-bot"), "show-policy", "--builtin"], tmp_path, clean_env())
    assert result.returncode == 0
    assert result.stdout == DEFAULT_POLICY_YAML
    assert set(parse_policy(result.stdout).profiles) == {"sandbox", "prod"}
    example = ROOT / "examples" / "policy.yml"
    env = clean_env(BREAKGLASS_POLICY=str(example))
    shown = run([str(BIN / "breakglass-bot"), "show-policy"], tmp_path, env)
    assert shown.returncode == 0 and shown.stdout == example.read_text()


def test_manifest_comment_counts_the_request_urls() -> None:
    import yaml

    manifest_text = (ROOT / "manifest.yml").read_text()
    settings = yaml.safe_load(manifest_text)
    urls = [
        *(c.get("url") for c in settings["features"].get("slash_commands", [])),
        settings["settings"]["interactivity"].get("request_url"),
        settings["settings"].get("event_subscriptions", {}).get("request_url"),
    ]
    count = {1: "one", 2: "two", 3: "three", 4: "four"}[len(urls)]
    assert f"the {count} request URLs" in manifest_text
