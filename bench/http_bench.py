"""End-to-end HTTP: the bot under gunicorn (`breakglass-bot http`) against the fake Slack, side by side
with a bare Bolt app under the same gunicorn gthread settings; plus the bot's memory (VmRSS)."""

from __future__ import annotations

import itertools
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import Row, event, free_port, pct, summary_ms
from bot.localslack.webapi import FakeSlack
from store.errors import ConcurrentModification, InvalidTransition
from store.model import Status
from store.sqlite import _COLUMNS, _PLACEHOLDERS, SQLiteStore, _row
from tests.harness import BOT_TOKEN, SIGNING_SECRET, SlackSender, http

ROOT = Path(__file__).resolve().parent.parent
USERS = [f"U{1000 + i}" for i in range(100)]
CONCURRENCY = 20
EVENT_ID = re.compile(r"event `([0-9a-f]{16})`")
SECTION = "3 HTTP end-to-end"
# The fake Slack of sections 3-3c never rate-limits: the bot does not pace its posts at Slack's per-channel
# rate there (bot/slack_pacing.py); section 8 measures it against Slack's limits.
UNPACED = {"SLACK_CHANNEL_RATE": "1000", "SLACK_CHANNEL_BURST": "1000"}


def _audit_lag_row(section: str, lags: list[float], granted: int) -> Row:
    """Submission -> audit message at the fake Slack, against the 500 ms target."""
    return Row(
        section,
        "submission -> audit message at fake Slack",
        summary_ms(lags) + f"; {granted - len(lags)} granted without audit message",
        "p99 <= 500 ms",
        "ok" if lags and pct(lags, 99) <= 0.5 and len(lags) == granted else "MISS",
    )


@dataclass
class Result:
    kind: str  # "invoke" or "command"
    user: str
    sent: float  # monotonic
    done: float
    status: int
    body: bytes
    round: int = 0

    @property
    def latency(self) -> float:
        return self.done - self.sent


def _venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def serve(
    cmd: list[str], env: dict[str, str], port: int, cwd: str, root: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    full_env = {**os.environ, **env, "PORT": str(port), "PYTHONPATH": str(root)}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, env=full_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        yield from _serving(proc, log, cmd, port)


def _serving(
    proc: subprocess.Popen[bytes], log: Any, cmd: list[str], port: int
) -> Iterator[subprocess.Popen[bytes]]:
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {log.read()[-2000:].decode()}")
            try:
                if http("GET", f"http://127.0.0.1:{port}/healthz", timeout=2).status in (200, 404):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[0]} did not start")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _drive(
    base_url: str, fake: FakeSlack, submissions: int, between_rounds: Any = None
) -> tuple[list[Result], float]:
    """Rounds of 100 invoke submissions (one per user) plus 20 slash commands, at concurrency 20."""
    local = threading.local()

    def sender() -> SlackSender:
        if not hasattr(local, "sender"):
            local.sender = SlackSender(base_url, fake)
        s: SlackSender = local.sender
        return s

    def one(task: tuple[str, str, str]) -> Result:
        kind, user, profile = task
        sent = time.monotonic()
        if kind == "invoke":
            incident = "INC-4242" if profile == "prod" else None
            r = sender().invoke(user=user, profile=profile, duration="900", incident=incident)
        else:
            r = sender().command("", user=user)
        return Result(kind, user, sent, time.monotonic(), r.status, r.body)

    results: list[Result] = []
    rounds = (submissions + len(USERS) - 1) // len(USERS)
    elapsed = 0.0
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        for r in range(rounds):
            profile = "sandbox" if r % 2 == 0 else "prod"
            count = min(len(USERS), submissions - r * len(USERS))
            tasks = [("invoke", USERS[i], profile) for i in range(count)]
            for i in range(count // 5):  # a slash command (opens the modal) after every 5th submission
                tasks.insert(i * 6 + 5, ("command", USERS[(i * 7) % len(USERS)], ""))
            t = time.monotonic()
            batch = list(pool.map(one, tasks))
            for res in batch:
                res.round = r
            results += batch
            elapsed += time.monotonic() - t
            if between_rounds is not None:
                between_rounds(results)
    return results, elapsed


def _audit_times(fake: FakeSlack) -> dict[str, float]:
    """event id -> when its audit message reached the fake Slack."""
    seen: dict[str, float] = {}
    for call in fake.calls_to("chat.postMessage"):
        if call.params.get("channel") != "C0AUDIT":
            continue
        text = json.dumps(call.params)
        for eid in re.findall(r"[0-9a-f]{16}", text):
            seen.setdefault(eid, call.at)
    return seen


def _granted_ids(results: list[Result]) -> dict[str, Result]:
    out = {}
    for r in results:
        if r.kind == "invoke" and r.status == 200:
            m = EVENT_ID.search(r.body.decode(errors="replace"))
            if m:
                out[m.group(1)] = r
    return out


def _closer(store: Any, fake: FakeSlack) -> Any:
    def settle_and_close(results: list[Result]) -> None:
        # wait for this round's audit messages, then end the round's events (directly in the store)
        wanted = set(_granted_ids(results))
        deadline = time.monotonic() + 30
        while not wanted <= set(_audit_times(fake)) and time.monotonic() < deadline:
            time.sleep(0.05)
        now = datetime.now(UTC)
        for ev in store.list_active():
            for _ in range(10):
                try:
                    store.close(ev.id, by=ev.invoker, reason="benchmark round over", now=now)
                    break
                except ConcurrentModification:
                    time.sleep(0.01)
                except InvalidTransition:
                    break

    return settle_and_close


def _stacked_stored(db: Path) -> int:
    """Pairs of events of one invoker on one profile whose effective periods overlap (must be 0)."""
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT invoker, profile, created_at, COALESCE(ended_at, expires_at) FROM events "
        "ORDER BY invoker, profile, created_at"
    ).fetchall()
    conn.close()
    return _overlaps(rows)


def _overlaps(rows: list[Any]) -> int:
    rows = sorted(rows)
    overlaps = 0
    for prev, cur in itertools.pairwise(rows):
        if prev[:2] == cur[:2] and cur[2] < prev[3]:
            overlaps += 1
    return overlaps


def run(rows: list[Row], *, submissions: int = 500, memory: bool = True) -> None:
    users = {u: {"email": f"{u.lower()}@example.com", "name": u.lower()} for u in USERS}
    with tempfile.TemporaryDirectory() as tmp, FakeSlack(token=BOT_TOKEN, users=users) as fake:
        db = Path(tmp) / "b.db"
        env = {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.url,
            "BREAKGLASS_AUDIT_CHANNEL": "C0AUDIT",
            "BREAKGLASS_STORE": f"sqlite:///{db}",
            "LOG_LEVEL": "WARNING",
            **UNPACED,
        }
        port = free_port()
        store = SQLiteStore(db)

        settle_and_close = _closer(store, fake)

        with serve([_venv_bin("breakglass-bot"), "http"], env, port, tmp) as proc:
            time.sleep(1.0)
            workers = _children(proc.pid)
            worker = workers[0] if workers else proc.pid
            idle = rss_mb(worker)
            master = rss_mb(proc.pid)
            results, elapsed = _drive(f"http://127.0.0.1:{port}", fake, submissions, settle_and_close)
            after_load = rss_mb(worker)
            if memory:
                _memory(rows, store, db, fake, port, worker, idle, master, after_load)

        invokes = [r for r in results if r.kind == "invoke"]
        commands = [r for r in results if r.kind == "command"]
        granted = _granted_ids(results)
        refused = [r for r in invokes if r.status == 200 and b"already have active" in r.body]
        failed = [r for r in results if r.status != 200]
        audit = _audit_times(fake)
        lags = [audit[eid] - r.sent for eid, r in granted.items() if eid in audit]
        ours = [r.latency for r in results]
        rows.append(Row(SECTION, "bot ack latency, all requests", summary_ms(ours), "p99 <= 100 ms", ""))
        rows[-1].verdict = "ok" if pct(ours, 99) <= 0.1 else "MISS"
        warm = [r.latency for r in results if r.round > 0]
        if warm:
            rows.append(Row(SECTION, "bot ack latency, rounds 2+ (user lookups cached)", summary_ms(warm)))
        rows.append(
            Row(SECTION, "bot ack latency, modal submissions", summary_ms([r.latency for r in invokes]))
        )
        rows.append(
            Row(SECTION, "bot ack latency, slash commands", summary_ms([r.latency for r in commands]))
        )
        rows.append(
            Row(
                SECTION,
                "bot throughput",
                f"{len(results) / elapsed:.0f} req/s ({len(results)} requests in {elapsed:.1f} s of load, "
                f"concurrency {CONCURRENCY})",
            )
        )
        rows.append(_audit_lag_row(SECTION, lags, len(granted)))
        rows.append(
            Row(
                SECTION,
                "outcomes",
                f"{len(granted)} granted, {len(refused)} refused as stacked, {len(failed)} non-200, "
                f"{len(commands)} slash commands ({len(fake.calls_to('views.open'))} views.open)",
            )
        )
        stacked = _stacked_stored(db)
        rows.append(
            Row(SECTION, "stacked events stored", str(stacked), "0", "ok" if stacked == 0 else "MISS")
        )
        store.disconnect()

        # the baseline: a bare Bolt app, same server settings, same requests
        port = free_port()
        gunicorn = [
            _venv_bin("gunicorn"),
            "-w",
            "1",
            "-k",
            "gthread",
            "--threads",
            "32",
            "--backlog",
            "2048",
            "--keep-alive",
            "5",
            "-b",
            f"127.0.0.1:{port}",
            "bench.bare_app:app",
        ]
        with serve(gunicorn, env, port, str(ROOT)):
            bare, bare_elapsed = _drive(f"http://127.0.0.1:{port}", fake, submissions)
        base = [r.latency for r in bare]
        rows.append(Row(SECTION, "bare Bolt ack latency, all requests", summary_ms(base)))
        bare_warm = [r.latency for r in bare if r.round > 0]
        if bare_warm and warm:
            rows.append(
                Row(
                    SECTION,
                    "bot p99 / bare Bolt p99, rounds 2+",
                    f"{pct(warm, 99) / pct(bare_warm, 99):.2f}x",
                )
            )
        rows.append(
            Row(
                SECTION,
                "bare Bolt throughput",
                f"{len(bare) / bare_elapsed:.0f} req/s ({len(bare)} requests)",
            )
        )
        ratio = pct(ours, 99) / pct(base, 99)
        rows.append(
            Row(
                SECTION,
                "bot p99 / bare Bolt p99",
                f"{ratio:.2f}x ({pct(ours, 99) * 1000:.1f} / {pct(base, 99) * 1000:.1f} ms)",
                "<= 1.5x",
                "ok" if ratio <= 1.5 else "MISS",
            )
        )


def _memory(
    rows: list[Row],
    store: SQLiteStore,
    db: Path,
    fake: FakeSlack,
    port: int,
    worker: int,
    idle: float,
    master: float,
    after_load: float,
) -> None:
    section = "4 memory"
    rows.append(
        Row(
            section,
            "bot worker VmRSS idle",
            f"{idle:.1f} MB (gunicorn master {master:.1f} MB)",
            "<= 120 MB",
            "ok" if idle <= 120 else "MISS",
        )
    )
    rows.append(Row(section, "bot worker VmRSS after the HTTP run", f"{after_load:.1f} MB"))
    # 10,000 ended events written straight into the bot's SQLite file, then more traffic and a sweep
    now = datetime.now(UTC)
    have = len(store.list_by_status(Status.CLOSED, limit=500).items)
    extra = max(0, 10_000 - have)
    events = [
        event(
            invoker=f"hist-{i % 300}",
            profile="sandbox",
            created_at=now - timedelta(days=1, seconds=i),
            ended=True,
        )
        for i in range(extra)
    ]
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            f"INSERT INTO events ({_COLUMNS}) VALUES ({_PLACEHOLDERS})",  # noqa: S608
            [_row(e) for e in events],
        )
    total = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    conn.close()
    sender = SlackSender(f"http://127.0.0.1:{port}", fake)
    for i in range(50):
        sender.command("", user=USERS[i])
    time.sleep(1)
    rows.append(
        Row(
            section,
            f"bot worker VmRSS with {total:,} events in its store",
            f"{rss_mb(worker):.1f} MB (after 50 more slash commands)",
        )
    )


def run_dynamodb(rows: list[Row], *, submissions: int = 500) -> None:
    """The same load with BREAKGLASS_STORE=dynamodb://TABLE on a local moto server (no baseline, no memory)."""
    import logging

    from bench.common import moto_server
    from store.dynamodb import DynamoDBStore, create_table, from_item, make_client

    section = "3b HTTP end-to-end, DynamoDB (moto)"
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    users = {u: {"email": f"{u.lower()}@example.com", "name": u.lower()} for u in USERS}
    with (
        moto_server() as url,
        tempfile.TemporaryDirectory() as tmp,
        FakeSlack(token=BOT_TOKEN, users=users) as fake,
    ):
        client = make_client("us-east-1", url)
        create_table(client, "breakglass-bench", pitr=False)
        store = DynamoDBStore("breakglass-bench", client=client)
        env = {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.url,
            "BREAKGLASS_AUDIT_CHANNEL": "C0AUDIT",
            "BREAKGLASS_STORE": "dynamodb://breakglass-bench",
            "AWS_ENDPOINT_URL_DYNAMODB": url,
            "LOG_LEVEL": "WARNING",
            **UNPACED,
        }
        port = free_port()
        with serve([_venv_bin("breakglass-bot"), "http"], env, port, tmp):
            results, elapsed = _drive(f"http://127.0.0.1:{port}", fake, submissions, _closer(store, fake))
        items: list[Any] = []
        for page in client.get_paginator("scan").paginate(TableName="breakglass-bench"):
            items += page["Items"]
        from bench.store_bench import _de_all

        events = [from_item(i) for i in _de_all(items) if not str(i["id"]).startswith("guard#")]
        stacked = _overlaps(
            [(e.invoker, e.profile, e.created_at, e.ended_at or e.expires_at) for e in events]
        )
        granted = _granted_ids(results)
        audit = _audit_times(fake)
        lags = [audit[eid] - r.sent for eid, r in granted.items() if eid in audit]
        ours = [r.latency for r in results]
        invokes = [r for r in results if r.kind == "invoke"]
        refused = [r for r in invokes if r.status == 200 and b"already have active" in r.body]
        failed = [r for r in results if r.status != 200]
        rows.append(
            Row(
                section,
                "bot ack latency, all requests",
                summary_ms(ours),
                "p99 <= 100 ms",
                "ok" if pct(ours, 99) <= 0.1 else "MISS",
            )
        )
        rows.append(
            Row(section, "bot ack latency, modal submissions", summary_ms([r.latency for r in invokes]))
        )
        rows.append(Row(section, "bot throughput", f"{len(results) / elapsed:.0f} req/s"))
        rows.append(_audit_lag_row(section, lags, len(granted)))
        rows.append(
            Row(
                section,
                "outcomes",
                f"{len(granted)} granted, {len(refused)} refused as stacked, {len(failed)} non-200 "
                f"(HTTP {dict(Counter(r.status for r in failed))}); {len(events)} events in the table",
            )
        )
        rows.append(
            Row(section, "stacked events stored", str(stacked), "0", "ok" if stacked == 0 else "MISS")
        )
