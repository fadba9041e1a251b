"""Build the bot from the environment: settings, logging, store, `create_app`. Used by every entry point."""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

from bot.app import BreakglassApp, audit_channel, create_app, resolve_policy, unheld_roles
from bot.aws_secrets import load_into_environ as load_secrets_into_environ
from bot.config import ConfigError, Settings, load_settings
from bot.home_team import HomeTeam, start_up_client
from bot.logs import aws_credentials, configure_logging
from store import StoreError, open_store, parse_store_url

log = logging.getLogger("bot.runtime")


class ConfigurationFailed(SystemExit):
    """Exit status 2 after the configuration problems were printed; `message` is what was printed."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message


def fail(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    raise ConfigurationFailed(message)


_checked = False  # set by check_configuration(); a forked gunicorn worker inherits it


def check_configuration(settings: Settings | None = None) -> Settings:
    """Everything a serving process needs, checked without serving: settings, policy, audit channel, the
    store's configuration (AWS region). On a problem print every one and exit 2. Warns once for each role
    nobody holds. gunicorn's master calls this before forking (bot/gunicorn_conf.py)."""
    global _checked
    try:
        if settings is None:
            load_secrets_into_environ()  # BREAKGLASS_SECRETS_ARN: read once, cached (bot/aws_secrets.py)
        settings = settings or load_settings()
        configure_logging(settings.log_level, settings.secrets() + aws_credentials())
        policy = resolve_policy(settings)
        audit_channel(settings, policy)
        kind, _ = parse_store_url(settings.breakglass_store)
        if kind == "dynamodb":  # its region (the client itself is made once, by open_store in build)
            from store.dynamodb import NO_REGION, StoreNotConfigured, aws_region

            if not aws_region():
                raise StoreNotConfigured(NO_REGION)
    except ConfigError as exc:
        fail(exc.render())
    except StoreError as exc:
        fail(f"breakglass cannot start:\n  - BREAKGLASS_STORE: {exc}")
    for warning in unheld_roles(policy):
        log.warning(warning, extra={"action": "start", "outcome": "warning"})
    _checked = True
    return settings


def build(settings: Settings | None = None, *, lazy_delivery: bool = False) -> BreakglassApp:
    """Everything from the environment; on bad configuration print every problem and exit 2."""
    if not _checked:
        settings = check_configuration(settings)
    try:
        settings = settings or load_settings()
        configure_logging(settings.log_level, settings.secrets() + aws_credentials())
        # Lambda: no Slack round trip on a cold start (SLACK_TEAM_ID is required there)
        home = None if lazy_delivery else check_bot_token(settings)
        policy = resolve_policy(settings)
        store = open_store(settings.breakglass_store, retention=policy.retention, lazy=lazy_delivery)
        return create_app(settings, store, policy=policy, lazy_delivery=lazy_delivery, home_team=home)
    except ConfigError as exc:
        fail(exc.render())
    except StoreError as exc:
        fail(f"breakglass cannot start:\n  - BREAKGLASS_STORE: {exc}")


def check_bot_token(settings: Settings) -> HomeTeam:
    """The one auth.test at start-up (a single attempt, bot/home_team.py): a token Slack refuses is one
    clear line naming it; Slack being unreachable is not fatal (invocations are recorded and announced
    when it answers again). Its answer names the installed workspace: the HomeTeam returned is handed to
    create_app, which then does not ask again (and, when Slack did not answer, learns it in the
    background)."""
    home = HomeTeam(settings.slack_team_id)
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    home.ask(start_up_client(token, settings.slack_api_url).auth_test)
    if home.refused:
        fail(
            f"breakglass cannot start:\n  - SLACK_BOT_TOKEN was refused by Slack (auth.test: {home.refused}): "
            "copy the Bot User OAuth Token (xoxb-...) again from OAuth & Permissions"
        )
    return home
