"""Sections 8a and 8b: the bot under Slack's real latency and per-channel rate limit, side by side with bare Bolt.

The fake Web API answers every call after `LATENCY` (real Slack: 50-150 ms). All servers run under the same
gunicorn settings as section 3c, at once: the bot, bare Bolt that only acks (bench/bare_app.py), bare Bolt
that makes one SQLite store write before it acks (the floor of a submission's ack), and, with
BENCH_COMPARE=DIR (another checkout), the bot as it was.

* 8a, submission ack: `rounds` rounds of `ACK_PER_ROUND` modal submissions to each server, *interleaved*
  (each user submits to every server in a rotating order, 10 at a time), so the servers share one load
  mix at every moment; a fresh user each time (an invocation, never a stacking refusal). Per round and
  pooled: ack p50/p90/p99 of each, the bot's p99 against bare Bolt + one store write (issue 21.1's target:
  1.2x), and the load average around it. The bot of 8a is a process of its own, unpaced
  (`SLACK_CHANNEL_RATE=1000`, as in sections 3-3c): paced at Slack's rate its post-ack audit posts would
  still be draining, one a second, when 8b starts.
* 8b, the 429 burst: `chat.postMessage` limited as Slack does, 1 per second per channel with bursts of 4
  (bot/localslack/ratelimit.py); 30 engineers submit within 3 s; each bot is driven alone, and the run ends
  when every invocation's root audit message and "access is active" DM is in. Reported: 429s answered,
  posts that arrived while a Retry-After was still running, the audit channel's drain time against
  Slack's floor (the burst, then one per second, from the first submission), lost and duplicated root
  messages.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.common import Row, free_port, pct
from bench.http_bench import ROOT, USERS, _children, _venv_bin, serve
from bench.side_by_side import Load, Target, _bot_env, _proc_jiffies, gunicorn_cmd
from bot.localslack.webapi import FakeSlack
from store.sqlite import SQLiteStore
from tests.harness import BOT_TOKEN

SECTION_ACK = "8a ack, Slack 80 ms"
SECTION_BURST = "8b 429 burst"
LATENCY = 0.08
TARGET_ACK = 1.2
BURST_USERS = 30
BURST_WINDOW = 3.0
TARGET_429 = 3
TARGET_DRAIN = 1.2
AUDIT = "C0AUDIT"
BURSTERS = [f"U{2000 + i}" for i in range(BURST_USERS)]  # never used before the burst: nothing stacked
ACK_PER_ROUND = 200
ACK_USERS = [f"U{3000 + i}" for i in range(ACK_PER_ROUND * 8)]  # one submission each per server (<= 8 rounds)


def _submissions(round_no: int, count: int = 30) -> list[tuple[str, str, str]]:
    users = USERS[(round_no * count) % len(USERS) :][:count]
    return [("invoke", user, "sandbox") for user in users]


def _ack_round(acks: dict[str, list[float]], load0: float, load1: float) -> str:
    """One round of 8a: p50/p90/p99 (ms) of each server, the bots' p99 against bare Bolt + 1 store write."""
    floor = pct(acks["bare Bolt + 1 store write"], 99)
    parts = [
        f"{name} {pct(v, 50) * 1000:.0f}/{pct(v, 90) * 1000:.0f}/{pct(v, 99) * 1000:.0f}"
        + (f" ({pct(v, 99) / floor:.2f}x)" if name.startswith("bot") else "")
        for name, v in acks.items()
    ]
    return f"p50/p90/p99 ms: {'; '.join(parts)}; load {load0:.2f} -> {load1:.2f}"


def _roots(fake: FakeSlack) -> dict[str, list[float]]:
    """event id -> arrival of each root audit message posted for it (accepted by the fake)."""
    roots: dict[str, list[float]] = {}
    for call in fake.calls_to("chat.postMessage"):
        if call.ok and call.params.get("channel") == AUDIT and not call.params.get("thread_ts"):
            payload = (call.params.get("metadata") or {}).get("event_payload") or {}
            roots.setdefault(str(payload.get("event_id")), []).append(call.at)
    return roots


def _event_ids(db: Path) -> set[str]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM events")}
    finally:
        conn.close()


def _quiet_slack(fake: FakeSlack, quiet: float = 3.0, timeout: float = 180.0) -> None:
    """Wait until no call has reached the fake Slack for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = fake.calls
        if not calls or time.monotonic() - calls[-1].at >= quiet:
            return
        time.sleep(0.2)


def run(rows: list[Row], *, rounds: int = 4, compare: str | None = None) -> None:
    compare = compare or os.environ.get("BENCH_COMPARE")
    users = {
        u: {"email": f"{u.lower()}@example.com", "name": u.lower()} for u in USERS + BURSTERS + ACK_USERS
    }
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        fake = stack.enter_context(FakeSlack(token=BOT_TOKEN, users=users))
        pool = stack.enter_context(ThreadPoolExecutor(BURST_USERS))
        bots: list[tuple[str, Path, Target, list[int]]] = []  # paced as against Slack (8b)
        ackers: list[Target] = []  # the same code, unpaced (8a)
        for name, root in [("bot", ROOT), *([("bot before", Path(compare).resolve())] if compare else [])]:
            for paced in (True, False):
                db = tmp / f"{len(bots)}-{paced}.db"
                SQLiteStore(db).disconnect()  # the schema
                port = free_port()
                workdir = tmp / f"cwd-{len(bots)}-{paced}"
                workdir.mkdir()
                cmd = [_venv_bin("breakglass-bot"), "http"]
                env = _bot_env(fake, db)
                if paced:
                    del env["SLACK_CHANNEL_RATE"], env["SLACK_CHANNEL_BURST"]  # paced as against Slack
                proc = stack.enter_context(serve(cmd, env, port, str(workdir), root))
                target = Target(name, f"http://127.0.0.1:{port}", fake)
                if paced:
                    bots.append((name, db, target, [proc.pid, *_children(proc.pid)]))
                else:
                    ackers.append(target)
        bares = []
        for name, extra in (("bare Bolt", {}), ("bare Bolt + 1 store write", {"BENCH_BARE_STORE": "x"})):
            port = free_port()
            env = _bot_env(fake, tmp / "bare.db")
            if extra:
                env["BENCH_BARE_STORE"] = f"sqlite:///{tmp / 'bare-write.db'}"
            stack.enter_context(serve(gunicorn_cmd(port, "bench.bare_app:app"), env, port, str(ROOT)))
            bares.append(Target(name, f"http://127.0.0.1:{port}", fake, opens_form=False))
        targets = ackers + bares
        for target in [b[2] for b in bots] + targets:  # warm-up: imports, user lookups, SQLite pages
            list(pool.map(target.one, _submissions(0)[:10]))
        fake.latency = LATENCY
        time.sleep(1.0)

        def add(section: str, metric: str, value: str, target: str = "", ok: bool | None = None) -> None:
            rows.append(Row(section, metric, value, target, "" if ok is None else ("ok" if ok else "MISS")))

        # -- 8a: submission ack latency, the servers' samples interleaved ---------------------------
        load = Load()
        load.start([os.getpid()])
        pooled: dict[str, list[float]] = {t.name: [] for t in targets}
        with ThreadPoolExecutor(10) as ten:
            for r in range(min(rounds, len(ACK_USERS) // ACK_PER_ROUND)):
                users = ACK_USERS[r * ACK_PER_ROUND : (r + 1) * ACK_PER_ROUND]
                order = [  # user i submits to every server, starting with server i mod n
                    (targets[(i + k) % len(targets)], ("invoke", user, "sandbox"))
                    for i, user in enumerate(users)
                    for k in range(len(targets))
                ]
                load0 = os.getloadavg()[0]
                results = list(ten.map(lambda job: (job[0].name, job[0].one(job[1])), order))
                acks: dict[str, list[float]] = {t.name: [] for t in targets}
                for name, result in results:
                    if result.status == 200:
                        acks[name].append(result.latency)
                for name, values in acks.items():
                    pooled[name] += values
                add(SECTION_ACK, f"round {r + 1}", _ack_round(acks, load0, os.getloadavg()[0]))
        machine = load.report()
        floor = pct(pooled["bare Bolt + 1 store write"], 99)
        for target in targets:
            values = pooled[target.name]
            line = (
                f"p50 {pct(values, 50) * 1000:.0f} / p90 {pct(values, 90) * 1000:.0f} / "
                f"p99 {pct(values, 99) * 1000:.0f} ms (n={len(values)}, all rounds)"
            )
            add(SECTION_ACK, f"{target.name}: submission ack", line)
            if target in ackers:
                ratio = pct(values, 99) / floor
                add(
                    SECTION_ACK,
                    f"{target.name}: ack p99 / (bare Bolt + 1 store write) p99, all rounds",
                    f"{ratio:.2f}x",
                    f"<= {TARGET_ACK}x",
                    ratio <= TARGET_ACK,
                )
        add(SECTION_ACK, "machine during 8a", machine)

        # -- 8b: the 429 burst, each bot alone -------------------------------------------------------
        for name, db, target, pids in bots:
            _quiet_slack(fake)  # the bots' work after 8a's acks is over (paced: one audit post a second)
            fake.reset()
            limits = fake.rate_limit("chat.postMessage", per_second=1.0, burst=4)
            before = _event_ids(db)
            cpu0 = sum(map(_proc_jiffies, pids))
            started = time.monotonic()
            users_now = [("invoke", user, "sandbox") for user in BURSTERS]

            def submit(i: int, t: Target = target, at: float = started, who: list[Any] = users_now) -> Any:
                time.sleep(max(0.0, at + i * BURST_WINDOW / BURST_USERS - time.monotonic()))
                return t.one(who[i])

            results = list(pool.map(submit, range(BURST_USERS)))
            new = _event_ids(db) - before
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                roots = _roots(fake)
                dms = {
                    c.params.get("channel")
                    for c in fake.calls_to("chat.postMessage")
                    if c.ok and str(c.params.get("channel", "")).startswith("U")
                }
                if set(roots) >= new and len(dms) >= len(new):
                    break
                time.sleep(0.1)
            roots = _roots(fake)
            drained = max(at for eid in new for at in roots.get(eid, [started]))
            audit_posts = [
                c for c in fake.calls_to("chat.postMessage") if c.ok and c.params.get("channel") == AUDIT
            ]
            floor_s = limits.floor(len(audit_posts))
            drain = drained - started
            lost = len(new - set(roots))
            duplicated = sum(len(v) - 1 for eid, v in roots.items() if eid in new)
            acked = sum(1 for x in results if x.status == 200)
            add(
                SECTION_BURST,
                f"{name}: 429s answered",
                f"{len(limits.limited)} for {len(new)} invocations ({acked} acked)",
                f"<= {TARGET_429} per {BURST_USERS}",
                len(limits.limited) <= TARGET_429 * max(1, len(new)) / BURST_USERS,
            )
            add(
                SECTION_BURST,
                f"{name}: posts before Retry-After ran out",
                str(len(limits.early)),
                "0",
                not limits.early,
            )
            add(
                SECTION_BURST,
                f"{name}: audit channel drained",
                f"{drain:.1f} s against Slack's floor {floor_s:.1f} s ({drain / floor_s:.2f}x)",
                f"<= {TARGET_DRAIN}x",
                drain <= TARGET_DRAIN * floor_s,
            )
            add(
                SECTION_BURST,
                f"{name}: lost / duplicated root messages",
                f"{lost} / {duplicated}",
                "0 / 0",
                lost == 0 and duplicated == 0,
            )
            cpu = (sum(map(_proc_jiffies, pids)) - cpu0) / os.sysconf("SC_CLK_TCK")
            add(SECTION_BURST, f"{name}: server CPU for the burst", f"{cpu:.2f} s")
            fake.limits = None
        add(
            SECTION_BURST,
            "machine load (1/5/15 min) at the end",
            " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        )


if __name__ == "__main__":
    from bench.__main__ import print_table

    out: list[Row] = []
    run(out, rounds=int(os.environ.get("BENCH_ROUNDS", "4")))
    print_table(out)
    print(json.dumps({"load": Path("/proc/loadavg").read_text().split()[:3]}))
