"""Build the bot from the environment: settings, logging, store, `create_app`. Used by every entry point."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from bot.app import BreakglassApp, create_app, resolve_policy
from bot.config import ConfigError, Settings, load_settings
from bot.logs import configure_logging
from store import StoreError, open_store


def aws_secrets() -> list[str]:
    return [
        v
        for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
        if (v := os.environ.get(k))
    ]


def fail(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(2)


def build(settings: Settings | None = None, *, lazy_delivery: bool = False) -> BreakglassApp:
    """Everything from the environment; on bad configuration print every problem and exit 2."""
    try:
        settings = settings or load_settings()
        configure_logging(settings.log_level, settings.secrets() + aws_secrets())
        policy = resolve_policy(settings)
        store = open_store(settings.breakglass_store, retention=policy.retention)
        return create_app(settings, store, policy=policy, lazy_delivery=lazy_delivery)
    except ConfigError as exc:
        fail(exc.render())
    except StoreError as exc:
        fail(f"breakglass cannot start:\n  - BREAKGLASS_STORE: {exc}")
