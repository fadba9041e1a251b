"""Shared helpers: result rows, percentiles, free ports, a local moto DynamoDB server, event factories."""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from store.model import BreakGlassEvent, ReasonCode

JUSTIFICATION = "Benchmark: database failover is stuck, promoting the replica by hand"


@dataclass
class Row:
    section: str
    metric: str
    value: str
    target: str = ""
    verdict: str = ""  # "ok", "MISS", or "" (informational)


def bot_settings(slack_url: str, **extra: Any) -> Any:
    """The bot's settings against the fake Slack at `slack_url` (test tokens, audit channel C0AUDIT)."""
    from bot.config import Settings
    from tests.harness import BOT_TOKEN, SIGNING_SECRET

    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack_url,
        breakglass_audit_channel="C0AUDIT",
        **extra,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {pct(values, 50) * 1000:.1f} / p95 {pct(values, 95) * 1000:.1f} / "
        f"p99 {pct(values, 99) * 1000:.1f} / max {max(values) * 1000:.1f} ms (n={len(values)})"
    )


def mean_ms(values: list[float]) -> float:
    return statistics.fmean(values) * 1000 if values else float("nan")


def aws_env() -> None:
    """Dummy credentials: nothing here may ever reach real AWS."""
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    os.environ["AWS_SESSION_TOKEN"] = "testing"
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    os.environ["AWS_REGION"] = "us-east-1"
    os.environ.pop("AWS_PROFILE", None)


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 (free port); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    from tests.moto_atomic import install

    install()  # DynamoDB's atomic conditional writes, which moto lacks
    aws_env()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def event(
    *,
    invoker: str,
    profile: str,
    created_at: datetime,
    duration: timedelta = timedelta(minutes=15),
    ended: bool = False,
    **extra: Any,
) -> BreakGlassEvent:
    ev = BreakGlassEvent.new(
        invoker=invoker,
        slack_user_id=invoker,
        profile=profile,
        reason_code=ReasonCode.INCIDENT,
        justification=JUSTIFICATION,
        duration=duration,
        now=created_at,
        **extra,
    )
    if ended:
        ev = ev.close(by=invoker, reason="benchmark history", now=created_at + timedelta(seconds=1))
    return ev


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start
