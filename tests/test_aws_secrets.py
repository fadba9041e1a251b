"""The Slack secrets from Secrets Manager (bot/aws_secrets.py, BREAKGLASS_SECRETS_ARN): read once at init,
cached, exported as the settings' environment variables; every failure is a ConfigError that names the
problem and never a secret. Against moto's Secrets Manager."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bot import aws_secrets, runtime
from bot.config import ConfigError
from tests.harness import BOT_TOKEN, SIGNING_SECRET

pytest_plugins = ["tests.store_fixtures"]


@pytest.fixture
def secrets(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in aws_secrets.SECRET_KEYS:  # recorded, so what a test exports is undone after it
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    aws_secrets.reset_cache()
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")
    aws_secrets.reset_cache()


def _secret(client: Any, monkeypatch: pytest.MonkeyPatch, value: str) -> str:
    arn = client.create_secret(Name="breakglass/slack", SecretString=value)["ARN"]
    monkeypatch.setenv(aws_secrets.SECRETS_ENV, arn)
    return str(arn)


def test_secret_is_exported_once_and_cached(secrets: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _secret(
        secrets,
        monkeypatch,
        json.dumps({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET}),
    )
    assert sorted(aws_secrets.load_into_environ()) == ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"]
    assert os.environ["SLACK_BOT_TOKEN"] == BOT_TOKEN
    assert os.environ["SLACK_SIGNING_SECRET"] == SIGNING_SECRET
    # Cached: a second init in the same process does not read Secrets Manager again, even once the
    # secret is gone (a re-read would raise ResourceNotFoundException) (a Lambda container reads it at init only).
    secrets.delete_secret(SecretId="breakglass/slack", ForceDeleteWithoutRecovery=True)
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    assert aws_secrets.load_into_environ() == ["SLACK_BOT_TOKEN"]
    assert os.environ["SLACK_BOT_TOKEN"] == BOT_TOKEN


def test_environment_wins_and_no_arn_is_a_no_op(secrets: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert aws_secrets.load_into_environ() == []  # BREAKGLASS_SECRETS_ARN unset: nothing is read
    _secret(secrets, monkeypatch, json.dumps({"SLACK_BOT_TOKEN": BOT_TOKEN}))
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-local-override")
    assert aws_secrets.load_into_environ() == []
    assert os.environ["SLACK_BOT_TOKEN"] == "xoxb-local-override"


def test_check_configuration_reads_the_secret(secrets: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the Lambda init (and any serving process) does: the settings come out of the secret."""
    _secret(
        secrets,
        monkeypatch,
        json.dumps({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET}),
    )
    monkeypatch.setenv("BREAKGLASS_AUDIT_CHANNEL", "C0AUDIT01")
    monkeypatch.setenv("BREAKGLASS_STORE", "sqlite:///:memory:")
    monkeypatch.setattr(runtime, "_checked", False)
    settings = runtime.check_configuration()
    assert settings.slack_bot_token is not None
    assert settings.slack_bot_token.get_secret_value() == BOT_TOKEN
    assert settings.slack_signing_secret is not None
    assert settings.slack_signing_secret.get_secret_value() == SIGNING_SECRET


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("not json " + BOT_TOKEN, "must be a JSON object"),
        (json.dumps([BOT_TOKEN]), "must be a JSON object"),
        (
            json.dumps({"SLACK_BOT_TOKEN": BOT_TOKEN, "PASSWORD": "hunter2-hunter2"}),
            "unknown keys in the secret: PASSWORD",
        ),
        (json.dumps({"SLACK_BOT_TOKEN": ""}), "must be non-empty strings: SLACK_BOT_TOKEN"),
    ],
)
def test_bad_secret_is_a_clear_error_without_values(
    secrets: Any, monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    _secret(secrets, monkeypatch, value)
    with pytest.raises(ConfigError) as caught:
        aws_secrets.load_into_environ()
    message = str(caught.value)
    assert expected in message
    assert BOT_TOKEN not in message and "hunter2" not in message


def test_missing_secret_names_the_aws_error(secrets: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        aws_secrets.SECRETS_ENV, "arn:aws:secretsmanager:us-east-1:123456789012:secret:breakglass/none-AbCdEf"
    )
    with pytest.raises(ConfigError, match=r"cannot read the secret \(ResourceNotFoundException\)"):
        aws_secrets.load_into_environ()


INCIDENT_POLICY = """
audit_channel: C0AUDIT01
incidents: {provider: pagerduty}
profiles:
  sandbox:
    durations: [30m]
"""
PD_WEBHOOK_SECRET = "pd-webhook-secret-from-secrets-manager"


def test_incident_tool_secrets_come_from_the_same_secret(
    secrets: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """On Lambda/SAM the incident tool's secrets are keys of the one Secrets Manager JSON (no parameter, no
    environment variable): the app starts with the tool, calls it with that token, and logs never show it."""
    import io
    import logging

    from bot.app import create_app
    from bot.logs import configure_logging
    from store.sqlite import SQLiteStore
    from tests.fake_incidents import PD_TOKEN, FakePagerDuty

    _secret(
        secrets,
        monkeypatch,
        json.dumps(
            {
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "PAGERDUTY_API_TOKEN": PD_TOKEN,
                "PAGERDUTY_WEBHOOK_SECRET": PD_WEBHOOK_SECRET,
            }
        ),
    )
    policy = tmp_path / "policy.yml"
    policy.write_text(INCIDENT_POLICY)
    monkeypatch.setenv("BREAKGLASS_POLICY", str(policy))
    monkeypatch.setenv("BREAKGLASS_AUDIT_CHANNEL", "C0AUDIT01")
    monkeypatch.setenv("BREAKGLASS_STORE", "sqlite:///:memory:")
    monkeypatch.setenv("SLACK_TEAM_ID", "T0001")
    monkeypatch.setattr(runtime, "_checked", False)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    with FakePagerDuty() as pagerduty:
        monkeypatch.setenv("PAGERDUTY_API_URL", pagerduty.url)
        try:
            settings = runtime.check_configuration()  # what the Lambda init does
            assert settings.pagerduty_api_token is not None
            assert settings.pagerduty_api_token.get_secret_value() == PD_TOKEN
            assert settings.pagerduty_webhook_secret is not None
            assert settings.pagerduty_webhook_secret.get_secret_value() == PD_WEBHOOK_SECRET
            out = io.StringIO()
            configure_logging("INFO", settings.secrets(), stream=out)
            app = create_app(settings, SQLiteStore(tmp_path / "events.db"))
            pagerduty.add_incident("PINC001", 1234, "Checkout is down")
            assert app.service.incidents.link("PINC001") is not None  # the fake refuses a wrong token
            logging.getLogger("breakglass.test").warning("token %s secret %s", PD_TOKEN, PD_WEBHOOK_SECRET)
        finally:
            root.handlers[:], _ = saved
            root.setLevel(saved[1])
    assert all(pagerduty.authorized(call) for call in pagerduty.calls)
    assert PD_TOKEN not in out.getvalue() and PD_WEBHOOK_SECRET not in out.getvalue()
    assert "token" in out.getvalue()  # the line was logged, redacted
