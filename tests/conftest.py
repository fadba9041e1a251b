from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from bot.app import BreakglassApp, create_app, make_slack_client
from bot.clock import ManualClock
from bot.config import Settings
from bot.directory import Directory
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy, parse_policy
from bot.service import BreakGlassService
from store.dynamodb import DynamoDBStore, create_table
from store.sqlite import SQLiteStore
from tests.harness import BOT_TOKEN, SIGNING_SECRET, BotServer, SlackSender
from tests.moto_atomic import install as make_moto_dynamodb_atomic

TEST_POLICY = """
audit_channel: C0AUDIT
warn_before: 15m
sweep_interval: 30s
incident_commanders: [U0IC, S0ONCALL]
security: [S0SEC]
profiles:
  sandbox:
    description: Sandbox account
    durations: [15m, 30m, 1h]
  prod:
    durations: [15m, 30m, 1h, 2h, 4h]
    invokers: [S0SRE]
    require_incident: true
"""

USERS = {
    "U0001": {"email": "alice@example.com", "name": "alice"},
    "U0002": {"email": "bob@example.com", "name": "bob"},
    "U0SRE": {"email": "sre@example.com", "name": "sre"},
    "U0IC": {"email": "ic@example.com", "name": "ic"},
    "U0SECA": {"email": "sec@example.com", "name": "sec"},
    "U0ONCALL": {"email": "oncall@example.com", "name": "oncall"},
}
GROUPS = {"S0SRE": ["U0SRE"], "S0SEC": ["U0SECA"], "S0ONCALL": ["U0ONCALL"]}

make_moto_dynamodb_atomic()  # DynamoDB's per-item atomicity, which moto lacks (tests/moto_atomic.py)


def settings_for(fake: FakeSlack, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "slack_bot_token": BOT_TOKEN,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_api_url": fake.url,
        "breakglass_audit_channel": "C0AUDIT",
        "slack_team_id": "T0001",  # as recommended in production: no auth.test round trip to learn it
        # the fake Slack does not rate-limit unless a test asks (tests/test_slack_limits.py paces for real)
        "slack_channel_rate": 1000.0,
        "slack_channel_burst": 1000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(token=BOT_TOKEN, users=USERS, usergroups=GROUPS) as server:
        yield server


@pytest.fixture
def policy() -> Policy:
    return parse_policy(TEST_POLICY, "test-policy.yml")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@dataclass
class Bot:
    runtime: BreakglassApp
    server: BotServer
    slack: SlackSender
    fake: FakeSlack
    clock: ManualClock
    store: SQLiteStore

    @property
    def service(self) -> BreakGlassService:
        return self.runtime.service

    def idle(self) -> None:
        """Wait until work the bot does after acking (announcements, App Home) has finished."""
        assert self.runtime.pipeline.inflight.wait_idle(15)


def make_bot(
    fake: FakeSlack,
    store: SQLiteStore,
    policy: Policy,
    clock: ManualClock,
    *,
    directory_ttl: float | None = None,
    delivery_workers: int = 4,
    **settings: object,
) -> Bot:
    """`directory_ttl`: how long Slack lookups are cached (0: every lookup asks Slack, as after the cache
    expired; None: the default)."""
    config = settings_for(fake, **settings)
    client = make_slack_client(config, timeout=5)
    directory = None if directory_ttl is None else Directory(client, ttl=directory_ttl, team_id="T0001")
    runtime = create_app(
        config,
        store,
        client,
        policy=policy,
        clock=clock,
        directory=directory,
        delivery_workers=delivery_workers,
    )
    server = BotServer(runtime).start()
    return Bot(runtime, server, SlackSender(server.url, fake), fake, clock, store)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "breakglass.db")
    yield s
    s.disconnect()


@pytest.fixture
def bot(fake: FakeSlack, store: SQLiteStore, policy: Policy, clock: ManualClock) -> Iterator[Bot]:
    b = make_bot(fake, store, policy, clock)
    yield b
    b.server.stop()  # and the bot's scheduler, delivery workers and lease keeper


AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",  # only AWS_REGION, as on Lambda (botocore itself reads AWS_DEFAULT_REGION)
}


@contextmanager
def dynamodb_bot(
    fake: FakeSlack, policy: Policy, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, table: str
) -> Iterator[Bot]:
    """A bot on a DynamoDB table in moto's in-process mock (dummy credentials)."""
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, table)
        bot = make_bot(fake, DynamoDBStore(table, client=client), policy, clock)  # type: ignore[arg-type]
        try:
            yield bot
        finally:
            bot.server.stop()
