"""Settings from the environment (and an optional .env file), checked all at once at start-up."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.policy import CHANNEL_ID_RE
from store.url import DEFAULT_STORE_URL, InvalidStoreURL, parse_store_url

MANIFEST_HINT = "create the Slack app from manifest.yml (see README.md, 'Set up Slack')"
ENV_HINT = "put the settings in .env (copy .env.example and fill in every value) or export them"
_TOKEN_BODY_RE = re.compile(r"^[A-Za-z0-9]+(-[A-Za-z0-9]+)+$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{16,}$")
# The values .env.example ships with: copied unchanged, they must not pass for settings.
PLACEHOLDER_CHANNEL = "C0123456"


def _placeholder(value: str) -> bool:
    return "..." in value or "…" in value or "<" in value or value.lower().startswith(("your", "changeme"))


def _token_problem(name: str, value: str, prefix: str, what: str) -> str | None:
    if _placeholder(value):
        return f"{name} is still the .env.example placeholder: replace it with the {what} ({prefix}...)"
    if not value.startswith(prefix):
        return f"{name} does not look like a {what}: it must start with {prefix}"
    if not _TOKEN_BODY_RE.fullmatch(value):
        return f"{name} is malformed: a {what} is {prefix} followed by letters, digits and dashes (copy it again)"
    return None


class ConfigError(Exception):
    """Every problem with the settings, each with how to fix it. Never contains a secret."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems

    def render(self) -> str:
        text = "breakglass cannot start:\n" + "\n".join(f"  - {p}" for p in self.problems)
        if any("is not set" in p or ".env.example" in p for p in self.problems):
            text += f"\n({ENV_HINT}; README.md lists every setting)"
        return text


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_team_id: str | None = None  # the installed workspace; learned from auth.test when unset
    breakglass_audit_channel: str | None = None
    breakglass_store: str = DEFAULT_STORE_URL
    breakglass_policy: Path | None = None
    breakglass_scheduler: Literal["embedded", "off"] = "embedded"
    # Lambda's exact-time warnings and expiry (bot/schedules.py): the sweep function the one-time
    # EventBridge Scheduler schedules invoke, the role Scheduler assumes to invoke it, their schedule group
    breakglass_scheduler_target_arn: str | None = None
    breakglass_scheduler_role_arn: str | None = None
    breakglass_scheduler_group: str = Field(default="breakglass", pattern=r"^[0-9A-Za-z_.-]{1,64}$")
    port: int = Field(default=3000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Posts per second and burst per Slack channel (bot/slack_pacing.py; default: just under Slack's ~1/s)
    slack_channel_rate: float | None = Field(default=None, gt=0)
    slack_channel_burst: int | None = Field(default=None, ge=1)
    # Incident tools (bot/incidents; the policy's incidents.provider says which is used)
    pagerduty_api_token: SecretStr | None = None
    pagerduty_webhook_secret: SecretStr | None = None
    pagerduty_api_url: str = "https://api.pagerduty.com"
    pagerduty_from_email: str | None = None  # the PagerDuty user incident notes are written as
    incident_io_api_key: SecretStr | None = None
    incident_io_webhook_secret: SecretStr | None = None
    incident_io_api_url: str = "https://api.incident.io"
    # The OCSF audit feed's sinks (bot/audit_feed/sinks.py): stdout, file:PATH, s3://BUCKET/PREFIX,
    # eventbridge://BUS, comma-separated; and whether an S3 bucket without Object Lock refuses the start
    breakglass_audit_feed: str | None = None
    breakglass_audit_feed_object_lock: Literal["required", "recommended", "off"] = "recommended"
    # GET /metrics (HTTP mode) answers only `Authorization: Bearer <this>`; unset, it is off (404)
    breakglass_metrics_token: SecretStr | None = Field(default=None, min_length=16)

    @field_validator("slack_api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError("must be an http(s) URL such as https://slack.com/api/")
        return value if value.endswith("/") else value + "/"

    @field_validator("pagerduty_api_url", "incident_io_api_url")
    @classmethod
    def _tool_url(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    def secrets(self) -> list[str]:
        """Secret values, so logging can redact them."""
        return [
            s.get_secret_value()
            for s in (
                self.slack_bot_token,
                self.slack_signing_secret,
                self.slack_app_token,
                self.pagerduty_api_token,
                self.pagerduty_webhook_secret,
                self.incident_io_api_key,
                self.incident_io_webhook_secret,
                self.breakglass_metrics_token,
            )
            if s is not None and s.get_secret_value()
        ]


def load_settings(
    *, need_slack: bool = True, serving: bool = True, env_file: str | None = ".env"
) -> Settings:
    """Read settings; raise ConfigError naming every problem (missing or malformed), never a value.

    `need_slack`: the bot token (and the audit channel) are required. `serving`: the process receives
    Slack's requests, so it needs the signing secret (HTTP) or an app token (Socket Mode); the admin CLI
    only calls the Web API and does not.
    """
    try:
        settings = Settings(_env_file=env_file)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = str(err["loc"][0]).upper() if err["loc"] else "settings"
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError(problems) from None
    problems = check_settings(settings, need_slack=need_slack, serving=serving)
    if problems:
        raise ConfigError(problems)
    return settings


def check_settings(settings: Settings, *, need_slack: bool = True, serving: bool = True) -> list[str]:
    problems: list[str] = []
    if need_slack:
        token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
        if not token:
            problems.append(
                f"SLACK_BOT_TOKEN is not set: {MANIFEST_HINT}, install it to your workspace and copy "
                "the Bot User OAuth Token (xoxb-...)"
            )
        elif problem := _token_problem("SLACK_BOT_TOKEN", token, "xoxb-", "bot token"):
            problems.append(problem)
    if need_slack and serving:
        app_token = settings.slack_app_token.get_secret_value() if settings.slack_app_token else None
        if app_token is not None and (
            problem := _token_problem("SLACK_APP_TOKEN", app_token, "xapp-", "app-level token")
        ):
            problems.append(
                problem + " (Basic Information > App-Level Tokens, scope connections:write); "
                "unset it to serve HTTP"
            )
        secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
        if not secret and app_token is None:
            problems.append(
                f"SLACK_SIGNING_SECRET is not set (needed to verify requests over HTTP): {MANIFEST_HINT} "
                "and copy Basic Information > Signing Secret; or set SLACK_APP_TOKEN for Socket Mode"
            )
        elif secret and (_placeholder(secret) or not _SECRET_RE.fullmatch(secret)):
            problems.append(
                "SLACK_SIGNING_SECRET is malformed or still the .env.example placeholder: copy Basic "
                "Information > Signing Secret"
            )
    channel = settings.breakglass_audit_channel
    if need_slack and channel is None and settings.breakglass_policy is None:  # built-in policy: no channel
        problems.append(
            "BREAKGLASS_AUDIT_CHANNEL is not set: create the security audit channel, invite the bot, and set "
            "its id (C0123456), or set audit_channel in a policy file (BREAKGLASS_POLICY)"
        )
    if channel is not None and not CHANNEL_ID_RE.fullmatch(channel):
        problems.append(
            f"BREAKGLASS_AUDIT_CHANNEL={channel!r} is not a channel id: use the id (C0123456), not the name"
        )
    elif channel == PLACEHOLDER_CHANNEL:
        problems.append(
            "BREAKGLASS_AUDIT_CHANNEL is still the .env.example placeholder C0123456: set your audit channel's id"
        )
    try:
        parse_store_url(settings.breakglass_store)
    except InvalidStoreURL as exc:
        problems.append(f"BREAKGLASS_STORE: {exc}")
    problems += _schedule_problems(settings)
    if settings.breakglass_policy is not None and not settings.breakglass_policy.is_file():
        problems.append(f"BREAKGLASS_POLICY: no such file {str(settings.breakglass_policy)!r}")
    return problems


_LAMBDA_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:function:[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9$_-]+)?$"
)
_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$")


def _schedule_problems(settings: Settings) -> list[str]:
    """BREAKGLASS_SCHEDULER_TARGET_ARN and _ROLE_ARN come together, each a well-formed ARN."""
    target, role = settings.breakglass_scheduler_target_arn, settings.breakglass_scheduler_role_arn
    if target is None and role is None:
        return []
    if target is None or role is None:
        missing = "BREAKGLASS_SCHEDULER_TARGET_ARN" if target is None else "BREAKGLASS_SCHEDULER_ROLE_ARN"
        return [
            f"{missing} is not set: the exact-time schedules need both the sweep function's ARN "
            "(BREAKGLASS_SCHEDULER_TARGET_ARN) and the role EventBridge Scheduler invokes it with "
            "(BREAKGLASS_SCHEDULER_ROLE_ARN); unset both to rely on the minute sweep"
        ]
    problems = []
    if not _LAMBDA_ARN_RE.fullmatch(target):
        problems.append(
            "BREAKGLASS_SCHEDULER_TARGET_ARN is not a Lambda function ARN "
            "(arn:aws:lambda:REGION:ACCOUNT:function:NAME): set the sweep function's ARN"
        )
    if not _ROLE_ARN_RE.fullmatch(role):
        problems.append(
            "BREAKGLASS_SCHEDULER_ROLE_ARN is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
        )
    return problems
