"""Fixtures and helpers shared by the store tests (``pytest_plugins = ["tests.store_fixtures"]``).

`open_test_store` gives each conformance test one of three backends:

* ``sqlite``: a fresh SQLite file under ``tmp_path``;
* ``dynamodb-moto``: DynamoDB emulated in-process by moto's ``mock_aws``;
* ``dynamodb-server``: DynamoDB served over HTTP by moto's ``ThreadedMotoServer`` (one server per test
  session, bound to a free port; a fresh, uniquely named table per test).

Every timestamp is an explicit UTC datetime: nothing here sleeps or reads the clock.

The test modules import helpers from here before pytest loads it as a plugin, so its asserts are
left as plain asserts (PYTEST_DONT_REWRITE) instead of warning that it cannot be rewritten.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws
from moto.server import ThreadedMotoServer

from store.base import Page
from store.dynamodb import DynamoDBStore, create_table
from store.model import BreakGlassEvent, ReasonCode
from store.sqlite import SQLiteStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
JUSTIFICATION = "Investigating the production outage reported by on-call"
BACKENDS = ("sqlite", "dynamodb-moto", "dynamodb-server")


def make_event(
    *,
    invoker: str = "alice@example.com",
    profile: str = "prod-admin",
    now: datetime = T0,
    duration: timedelta = HOUR,
    reason_code: ReasonCode | str = ReasonCode.INCIDENT,
    justification: str = JUSTIFICATION,
    **extra: Any,
) -> BreakGlassEvent:
    extra.setdefault("slack_user_id", "U" + invoker.split("@")[0].upper()[:10].ljust(3, "X"))
    return BreakGlassEvent.new(
        invoker=invoker,
        profile=profile,
        reason_code=reason_code,
        justification=justification,
        duration=duration,
        now=now,
        **extra,
    )


def all_pages(fetch: Callable[..., Page], *, limit: int) -> list[Page]:
    """Follow cursors until the last page; fails instead of looping forever."""
    pages = [fetch(limit=limit)]
    while pages[-1].cursor is not None:
        assert len(pages) < 1000, "pagination does not terminate"
        pages.append(fetch(limit=limit, cursor=pages[-1].cursor))
    return pages


def run_concurrently(count: int, work: Callable[[int], Any]) -> list[tuple[str, Any]]:
    """Run work(0..count-1) on `count` threads released together by a barrier.

    Returns, per index, ("ok", result) or ("error", exception).
    """
    barrier = threading.Barrier(count)
    results: list[tuple[str, Any]] = [("missing", None)] * count

    def runner(index: int) -> None:
        barrier.wait()
        try:
            results[index] = ("ok", work(index))
        except Exception as exc:
            results[index] = ("error", exc)

    threads = [threading.Thread(target=runner, args=(i,), name=f"store-race-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a racing thread hung"
    return results


# -- AWS / moto --------------------------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and region; never the developer's real AWS configuration."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    # AWS_REGION only (as on Lambda): the code must honour it although botocore reads AWS_DEFAULT_REGION.
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/breakglass-test-aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/breakglass-test-aws-credentials")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@functools.cache
def _boto_session() -> boto3.session.Session:
    # One session for the whole run: a new session re-reads the service models (~0.2 s per client).
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )


def dynamodb_client(endpoint_url: str | None = None, **config: Any) -> Any:
    """A DynamoDB client with dummy credentials; `config` overrides the botocore Config settings."""
    settings: dict[str, Any] = {
        "retries": {"mode": "standard", "max_attempts": 2},
        "connect_timeout": 5,
        "read_timeout": 30,
        "max_pool_connections": 64,
    }
    settings.update(config)
    return _boto_session().client("dynamodb", endpoint_url=endpoint_url, config=Config(**settings))


def unique_table_name() -> str:
    return f"breakglass-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def moto_server_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def _moto_in_process() -> Iterator[None]:
    # One mock per test module, not per test: every fresh mock generates a KMS key for the table's
    # encryption (~0.2 s). Tests still get a fresh table each. Requests to an explicit endpoint_url
    # (the moto server, 127.0.0.1:1) are not intercepted by the mock.
    with mock_aws():
        yield


@pytest.fixture
def moto_dynamodb(_moto_in_process: None, aws_env: None) -> Iterator[tuple[Any, str]]:
    """(client, table) on moto's in-process DynamoDB."""
    client = dynamodb_client()
    table = unique_table_name()
    create_table(client, table)
    try:
        yield client, table
    finally:
        client.delete_table(TableName=table)


@pytest.fixture
def server_dynamodb(aws_env: None, moto_server_url: str) -> Iterator[tuple[Any, str]]:
    """(client, table) on the session's moto server, reached over HTTP."""
    client = dynamodb_client(moto_server_url)
    table = unique_table_name()
    create_table(client, table)
    try:
        yield client, table
    finally:
        client.delete_table(TableName=table)


@contextmanager
def open_test_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh, empty store of `backend` (one of BACKENDS), closed afterwards.

    Test modules define their own parametrized ``store`` fixture with this (a module fixture wins
    over the bot's SQLite-only ``store`` fixture in tests/conftest.py).
    """
    if backend == "sqlite":
        opened: Any = SQLiteStore(tmp_path / "events.db")
    else:
        fixture = "moto_dynamodb" if backend == "dynamodb-moto" else "server_dynamodb"
        client, table = request.getfixturevalue(fixture)
        opened = DynamoDBStore(table, client=client)
    try:
        yield opened
    finally:
        opened.disconnect()
