"""What a new user or operator meets in the first hour (issue 11): the real console scripts and gunicorn as
subprocesses, each configuration error one clear message with the right exit status."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bot.localslack.webapi import FakeSlack
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


def test_plain_gunicorn_in_the_project_directory_exits_2_once(tmp_path: Path) -> None:
    """`gunicorn bot.wsgi:app` with no options, from the project directory (as a Procfile or container
    runs it): gunicorn reads ./gunicorn.conf.py, so the master checks before forking."""
    policy = tmp_path / "broken.yml"
    policy.write_text(BROKEN_POLICY)
    env = slack_env(BREAKGLASS_POLICY=str(policy), SLACK_API_URL="http://127.0.0.1:9/")
    result = run([str(BIN / "gunicorn"), "--bind", "127.0.0.1:0", "bot.wsgi:app"], ROOT, env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count(BROKEN_MESSAGE) == 1
    assert "Booting worker" not in result.stderr


@pytest.mark.parametrize("workers", ["1", "3"])
def test_plain_gunicorn_elsewhere_stops_instead_of_restarting_workers(tmp_path: Path, workers: str) -> None:
    """Without our config module, a worker that cannot build the app exits with gunicorn's
    WORKER_BOOT_ERROR, so the arbiter stops (it restarted workers forever before)."""
    policy = tmp_path / "broken.yml"
    policy.write_text(BROKEN_POLICY)
    env = slack_env(BREAKGLASS_POLICY=str(policy), SLACK_API_URL="http://127.0.0.1:9/")
    command = [str(BIN / "gunicorn"), "--workers", workers, "--bind", "127.0.0.1:0", "bot.wsgi:app"]
    result = run(command, tmp_path, env)
    # 3 is gunicorn's "worker failed to boot"; when several workers fail at once, gunicorn's own halt
    # can trip over the second failure and exit 1: either way it stops, each worker reporting once
    assert result.returncode == 3 if workers == "1" else result.returncode in (1, 3), result.stderr[-2000:]
    assert 1 <= result.stderr.count(BROKEN_MESSAGE) <= int(workers)
    assert result.stderr.count("Booting worker") <= int(workers)


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
        store.disconnect()
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


# -- 6 and 10. durations shown to people ------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (19.997706, "20 seconds"),
        (0.4, "0 seconds"),
        (1, "1 second"),
        (59.4, "59 seconds"),
        (59.6, "1 minute"),
        (14 * 60 + 59.9973, "15 minutes"),
        (14 * 60 + 29, "14 minutes"),
        (3600, "1 hour"),
        (5400.2, "1 hour 30 minutes"),
        (86400, "24 hours"),
    ],
)
def test_human_duration_rounds(seconds: float, shown: str) -> None:
    from datetime import timedelta

    from bot.durations import human_duration

    assert human_duration(timedelta(seconds=seconds)) == shown


def test_warnings_and_the_admin_cli_show_the_same_rounded_durations() -> None:
    from datetime import UTC, datetime, timedelta

    from bot import admin, blocks
    from tests.store_fixtures import make_event

    event = make_event(now=datetime.now(UTC), duration=timedelta(hours=1))
    for text, _ in (
        blocks.thread_warning(event, timedelta(seconds=19.997706)),
        blocks.dm_warning(event, timedelta(minutes=14, seconds=59.9973)),
    ):
        assert "." not in text.split("xpires in ", 1)[1].split(" ", 2)[0]  # no fractional seconds
    assert "Expires in 20 seconds" in blocks.thread_warning(event, timedelta(seconds=19.997706))[0]
    assert "expires in 15 minutes" in blocks.dm_warning(event, timedelta(minutes=14, seconds=59.9973))[0]
    assert admin.list_row(event)[5] == "1 hour"  # as Slack says it, not 1h00m
    assert "for 1 hour," in admin.timeline(event)[0][1]


# -- 7. every example the bot prints works as typed, under the built-in policy ----------------------


def printed_examples() -> list[str]:
    """Each placeholder-free `/breakglass …` in the help and usage texts, unescaped as a user would type it."""
    import re

    from bot import blocks
    from bot.slack.commands import USAGE

    found = re.findall(r"`(/breakglass[^`]*)`", blocks.HELP + "\n" + USAGE)
    typed = [e.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") for e in found]
    return sorted({e for e in typed if "<" not in e and "[" not in e and "…" not in e})


def test_printed_examples_work_as_typed_under_the_builtin_policy(
    fake: FakeSlack, store: Any, clock: Any
) -> None:
    from bot.policy import load_policy
    from tests.conftest import make_bot

    examples = printed_examples()
    assert any(len(e.split()) > 4 for e in examples), examples  # the one-line invocation is among them
    bot = make_bot(fake, store, load_policy(None), clock)  # the built-in policy
    try:
        for example in examples:
            text = example.removeprefix("/breakglass").strip()
            if text in ("", "review"):  # the form opens (no reply); review is security's, who nobody is here
                continue
            reply = bot.slack.command(text, user="U0001").json["text"]
            assert not reply.startswith(":x:"), (example, reply)
        assert len(store.list_active()) == 1  # the one-line example granted access
    finally:
        bot.runtime.scheduler.shutdown(wait=False)
        bot.server.stop()


# -- 8. what a refused command says --------------------------------------------------------------


def test_an_unknown_profile_is_named_first(bot: Any) -> None:
    reply = bot.slack.command("asdf qwer zxcv").json["text"]
    assert reply.startswith(":x: There is no profile called 'asdf'."), reply
    assert "Missing justification" in reply


def test_stacking_refusal_has_no_usage_paragraph(bot: Any) -> None:
    justification = "DB failover stuck, need to promote replica"
    assert "granted" in bot.slack.command(f"sandbox 30m incident {justification}").json["text"]
    reply = bot.slack.command(f"sandbox 1h incident {justification}").json["text"]
    assert "already have active break-glass event" in reply
    assert "Usage:" not in reply


# -- 13. tables laid out differently -----------------------------------------------------------------


def test_create_table_reports_a_different_layout_and_changes_nothing(
    moto_dynamodb: tuple[Any, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from bot import admin

    client, _ = moto_dynamodb
    table = "bg-wrong-layout"
    client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        code = admin.main(["create-table", "--store", f"dynamodb://{table}"])
        err = capsys.readouterr().err
        assert code == 2
        assert "key schema is pk (HASH), sk (RANGE), expected id (HASH) only" in err
        for index in ("gsi-invoker", "gsi-status", "gsi-profile", "gsi-outbox", "gsi-review"):
            assert f"index {index} " in err and "is missing" in err, index
        assert "nothing was changed" in err
        ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        assert ttl["TimeToLiveStatus"] == "DISABLED"
        backups = client.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
        assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "DISABLED"
        # every command opening it says what is wrong, not "not found"
        for args in (["list"], ["list", "--status", "active"], ["show", "0123456789abcdef"]):
            code = admin.main([*args, "--store", f"dynamodb://{table}"])
            err = capsys.readouterr().err
            assert code == 2, (args, err)
            assert "is not laid out for breakglass" in err and "not found" not in err, (args, err)
    finally:
        client.delete_table(TableName=table)


def test_the_bot_refuses_a_table_with_a_missing_index(moto_dynamodb: tuple[Any, str]) -> None:
    from datetime import UTC, datetime

    from store.dynamodb import DynamoDBStore, table_definition
    from store.errors import StoreNotConfigured

    client, _ = moto_dynamodb
    table = "bg-missing-index"
    definition = table_definition(table)
    definition["GlobalSecondaryIndexes"] = [
        i for i in definition["GlobalSecondaryIndexes"] if i["IndexName"] != "gsi-outbox"
    ]
    definition["AttributeDefinitions"] = [
        a
        for a in definition["AttributeDefinitions"]
        if a["AttributeName"] not in ("owed_pk", "outbox_next_at")
    ]
    client.create_table(**definition)
    try:
        with pytest.raises(StoreNotConfigured, match=r"index gsi-outbox .* is missing"):
            DynamoDBStore(table, client=client).list_owed(now=datetime.now(UTC))
    finally:
        client.delete_table(TableName=table)


def test_gunicorn_log_lines_are_json_and_redacted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import io
    import logging
    from logging.config import dictConfig

    from bot.logs import gunicorn_logconfig

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    stream = io.StringIO()
    config = gunicorn_logconfig("INFO")
    config["handlers"]["json"]["stream"] = stream
    saved = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level)
        for name in ("", "gunicorn.error")
    }
    try:
        dictConfig(config)
        logging.getLogger("gunicorn.error").error("Error handling request with %s", BOT_TOKEN)
        logging.getLogger("apscheduler.scheduler").info("Added job")  # library chatter: not shown
    finally:
        for name, (handlers, level) in saved.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).setLevel(level)
    (record,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert record["logger"] == "gunicorn.error" and "[REDACTED]" in record["msg"]
    assert BOT_TOKEN not in stream.getvalue()
