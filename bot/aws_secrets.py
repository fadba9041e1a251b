"""The bot's secrets from AWS Secrets Manager, read once at init and cached for the life of the process.

Set `BREAKGLASS_SECRETS_ARN` to the ARN (or name) of a secret whose SecretString is a JSON object with
any of `SECRET_KEYS`: the Slack secrets (`SLACK_BOT_TOKEN`, `SLACK_SIGNING_SECRET`, `SLACK_APP_TOKEN`)
and the incident tools' (`PAGERDUTY_API_TOKEN`, `PAGERDUTY_WEBHOOK_SECRET`, `INCIDENT_IO_API_KEY`,
`INCIDENT_IO_WEBHOOK_SECRET`; README "Incident tools"). Before the settings are read, each
key the secret holds becomes the environment variable of that name, so the secrets never sit in a Lambda
function's configuration (or a task definition) in plain text. An environment variable that is already
set wins (a local override). Nothing here logs or raises a secret's value.

The deploy templates (deploy/template.yaml, deploy/terraform/) grant `secretsmanager:GetSecretValue` on
that one secret only.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from bot.config import ConfigError

SECRETS_ENV = "BREAKGLASS_SECRETS_ARN"
SLACK_SECRET_KEYS = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN")
INCIDENT_SECRET_KEYS = (
    "PAGERDUTY_API_TOKEN",
    "PAGERDUTY_WEBHOOK_SECRET",
    "INCIDENT_IO_API_KEY",
    "INCIDENT_IO_WEBHOOK_SECRET",
)
SECRET_KEYS = SLACK_SECRET_KEYS + INCIDENT_SECRET_KEYS

_lock = threading.Lock()
_loaded: dict[str, str] | None = None  # the secret's values, once read (the cache)


def load_into_environ(client: Any = None) -> list[str]:
    """Read the secret named by BREAKGLASS_SECRETS_ARN once (later calls use the cache) and export its
    keys; return the names exported. No-op without BREAKGLASS_SECRETS_ARN. Raise ConfigError naming the
    problem (never a value) when the secret cannot be read or is not the expected JSON object."""
    global _loaded
    arn = os.environ.get(SECRETS_ENV, "").strip()
    if not arn:
        return []
    with _lock:
        if _loaded is None:
            _loaded = _read(arn, client)
        values = dict(_loaded)
    exported = []
    for name, value in values.items():
        if not os.environ.get(name):
            os.environ[name] = value
            exported.append(name)
    return exported


def reset_cache() -> None:
    global _loaded
    with _lock:
        _loaded = None


def _read(arn: str, client: Any) -> dict[str, str]:
    from botocore.exceptions import BotoCoreError, ClientError

    from store.dynamodb import aws_region, aws_session

    try:
        if client is None:
            session = aws_session()
            client = session.client("secretsmanager", region_name=aws_region(session))
        answer = client.get_secret_value(SecretId=arn)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise ConfigError(
            [
                f"{SECRETS_ENV}: cannot read the secret ({code}): check its ARN and secretsmanager:GetSecretValue"
            ]
        ) from None
    except BotoCoreError as exc:
        raise ConfigError([f"{SECRETS_ENV}: cannot reach Secrets Manager ({type(exc).__name__})"]) from None
    try:
        data = json.loads(answer.get("SecretString") or "")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{SECRETS_ENV}: the secret must be a JSON object with keys among {', '.join(SECRET_KEYS)}"]
        )
    unknown = sorted(set(data) - set(SECRET_KEYS))
    if unknown:
        raise ConfigError([f"{SECRETS_ENV}: unknown keys in the secret: {', '.join(map(str, unknown))}"])
    bad = sorted(k for k, v in data.items() if not isinstance(v, str) or not v)
    if bad:
        raise ConfigError([f"{SECRETS_ENV}: these keys must be non-empty strings: {', '.join(bad)}"])
    return {str(k): str(v) for k, v in data.items()}
