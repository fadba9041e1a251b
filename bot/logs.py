"""Structured logs: one JSON object per line, with secrets redacted wherever they might appear."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

FIELDS = ("event_id", "slack_user", "profile", "action", "outcome", "request_id", "attempt")


class RedactingFilter(logging.Filter):
    """Replaces every configured secret (tokens, signing secret, AWS keys) in the rendered message."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[REDACTED]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.redact(record.getMessage())
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["error"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", secrets: list[str] | None = None, stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter(secrets or []))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in LIBRARIES:
        logging.getLogger(noisy).setLevel(library_level(level))


# Libraries whose INFO lines (scheduler jobs added, connections opened…) are noise in an operator's log.
LIBRARIES = ("botocore", "boto3", "urllib3", "apscheduler", "slack_sdk", "slack_bolt")


def library_level(level: str) -> int:
    """WARNING, unless LOG_LEVEL=DEBUG; even then INFO at most (library DEBUG lines include request bodies)."""
    return logging.INFO if str(level).upper() == "DEBUG" else logging.WARNING


def gunicorn_logconfig(level: str = "INFO") -> dict[str, Any]:
    """gunicorn's `logconfig_dict`: its own lines (boot, workers, errors) as the same JSON, on stderr."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "filters": ["redact"],
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "filters": {"redact": {"()": redacting_filter_from_environment}},
        "handlers": {"json": handler},
        "root": {"level": level, "handlers": ["json"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["json"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["json"], "propagate": False},
            **{name: {"level": library_level(level)} for name in LIBRARIES},
        },
    }


def aws_credentials() -> list[str]:
    """AWS credentials in the environment (redacted from every log line)."""
    return [
        v
        for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
        if (v := os.environ.get(k))
    ]


def redacting_filter_from_environment() -> RedactingFilter:
    """Redacts the secrets the settings (environment and .env) hold, for gunicorn's lines too."""
    from pydantic import ValidationError

    from bot.config import Settings

    try:
        secrets = Settings(_env_file=".env").secrets()
    except ValidationError:  # reported by the configuration check; redact what the environment holds
        secrets = [
            os.environ[k]
            for k in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN")
            if os.environ.get(k)
        ]
    return RedactingFilter(secrets + aws_credentials())
