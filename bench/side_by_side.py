"""Section 3c: the bot and a bare Bolt app side by side, in one run, interleaved round by round.

Both servers run at once under the same gunicorn settings (1 worker, 32 gthread threads). Each repeat
sends, to each server in turn, rounds of 100 modal submissions plus 20 `/breakglass` slash commands at
concurrency 20; the order alternates every round (bot first, then bare first), so both see the same
machine load. Per repeat: slash-command ack p99 and view-submission ack p99 of each, their ratios, and
the bot's invocation -> audit message p99. Reported as the median and the spread (min-max) of the
repeats, with how busy the machine was (CPU used by processes outside the benchmark).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Row, free_port, pct
from bench.http_bench import (
    CONCURRENCY,
    ROOT,
    USERS,
    Result,
    _audit_times,
    _children,
    _closer,
    _granted_ids,
    _stacked_stored,
    _venv_bin,
    serve,
)
from bot.localslack.webapi import FakeSlack
from store.sqlite import SQLiteStore
from tests.harness import BOT_TOKEN, SIGNING_SECRET, SlackSender

SECTION = "3c side by side"
TARGET_SLASH = 1.3
TARGET_VIEW = 2.0
TARGET_AUDIT = 0.4


def gunicorn_cmd(port: int, app: str) -> list[str]:
    return [
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
        app,
    ]


# -- how busy the machine was ------------------------------------------------------------------------

_HZ = os.sysconf("SC_CLK_TCK")


def _busy_jiffies() -> int:
    """All CPUs' non-idle time since boot (/proc/stat), in clock ticks."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle


def _proc_jiffies(pid: int) -> int:
    """utime + stime of one process, children it waited for included."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(v) for v in parts[11:15])  # utime, stime, cutime, cstime


@dataclass
class Load:
    """CPU time used during the run: by the benchmark's own processes and by everything else."""

    pids: list[int] = field(default_factory=list)
    started: float = 0.0
    busy0: int = 0
    ours0: int = 0
    load0: str = ""

    def ours(self) -> int:
        return sum(_proc_jiffies(p) for p in self.pids)

    def start(self, pids: list[int]) -> None:
        self.pids = pids
        self.started = time.monotonic()
        self.busy0 = _busy_jiffies()
        self.ours0 = self.ours()
        self.load0 = Path("/proc/loadavg").read_text().split()[0]

    def report(self) -> str:
        wall = time.monotonic() - self.started
        busy = (_busy_jiffies() - self.busy0) / _HZ
        ours = (self.ours() - self.ours0) / _HZ
        others = max(0.0, busy - ours)
        load1 = Path("/proc/loadavg").read_text().split()[0]
        return (
            f"{wall:.0f} s wall on {os.cpu_count()} CPUs: all processes used {busy / wall:.2f} CPUs, "
            f"the benchmark's own {ours / wall:.2f}, others {others / wall:.2f} "
            f"(load average {self.load0} at start, {load1} at end)"
        )


# -- driving ---------------------------------------------------------------------------------------------


def _tasks(round_no: int) -> list[tuple[str, str, str]]:
    """One round: 100 submissions (one per user), a slash command (opens the modal) after every 5th."""
    profile = "sandbox" if round_no % 2 == 0 else "prod"
    tasks = [("invoke", user, profile) for user in USERS]
    for i in range(len(USERS) // 5):
        tasks.insert(i * 6 + 5, ("command", USERS[(i * 7) % len(USERS)], ""))
    return tasks


class Target:
    """One server under test and the results it gave."""

    def __init__(self, name: str, base_url: str, fake: FakeSlack) -> None:
        self.name = name
        self.base_url = base_url
        self.fake = fake
        self.results: list[Result] = []
        self._senders: dict[int, SlackSender] = {}

    def _sender(self) -> SlackSender:
        import threading

        key = threading.get_ident()
        if key not in self._senders:
            self._senders[key] = SlackSender(self.base_url, self.fake)
        return self._senders[key]

    def one(self, task: tuple[str, str, str]) -> Result:
        kind, user, profile = task
        sent = time.monotonic()
        if kind == "invoke":
            incident = "INC-4242" if profile == "prod" else None
            r = self._sender().invoke(user=user, profile=profile, duration="900", incident=incident)
        else:
            r = self._sender().command("", user=user)
        return Result(kind, user, sent, time.monotonic(), r.status, r.body)


@dataclass
class Repeat:
    slash: dict[str, float]
    view: dict[str, float]
    audit_p99: float
    audit_missing: int
    failed: int


def _p99(results: list[Result], kind: str) -> float:
    return pct([r.latency for r in results if r.kind == kind], 99)


def _spread(values: list[float], scale: float = 1.0, fmt: str = "{:.0f}") -> str:
    med = statistics.median(values) * scale
    return f"{fmt.format(med)} ({fmt.format(min(values) * scale)}–{fmt.format(max(values) * scale)})"


def run(rows: list[Row], *, repeats: int = 3, rounds: int = 5) -> None:
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
        }
        bot_port, bare_port = free_port(), free_port()
        store = SQLiteStore(db)
        settle_and_close = _closer(store, fake)
        with (
            serve([_venv_bin("breakglass-bot"), "http"], env, bot_port, tmp) as bot_proc,
            serve(gunicorn_cmd(bare_port, "bench.bare_app:app"), env, bare_port, str(ROOT)) as bare_proc,
            ThreadPoolExecutor(CONCURRENCY) as pool,
        ):
            bot = Target("bot", f"http://127.0.0.1:{bot_port}", fake)
            bare = Target("bare", f"http://127.0.0.1:{bare_port}", fake)
            # warm-up: one round each (imports, first user lookups, SQLite pages), not measured
            for target in (bot, bare):
                list(pool.map(target.one, _tasks(0)[:30]))
            settle_and_close(bot.results)
            pids = [
                os.getpid(),
                bot_proc.pid,
                bare_proc.pid,
                *_children(bot_proc.pid),
                *_children(bare_proc.pid),
            ]
            load = Load()
            load.start(pids)
            spy = _profile(_children(bot_proc.pid) or [bot_proc.pid])
            repeat_results: list[Repeat] = []
            bot_pids = [bot_proc.pid, *_children(bot_proc.pid)]
            bare_pids = [bare_proc.pid, *_children(bare_proc.pid)]
            cpu0 = {"bot": sum(map(_proc_jiffies, bot_pids)), "bare": sum(map(_proc_jiffies, bare_pids))}
            for rep in range(repeats):
                got: dict[str, list[Result]] = {"bot": [], "bare": []}
                for r in range(rounds):
                    order = (bot, bare) if (rep * rounds + r) % 2 == 0 else (bare, bot)
                    for target in order:
                        batch = list(pool.map(target.one, _tasks(r)))
                        got[target.name] += batch
                        if target is bot:
                            settle_and_close(got["bot"])  # audit messages in, events ended
                bot_res, bare_res = got["bot"], got["bare"]
                granted = _granted_ids(bot_res)
                audit = _audit_times(fake)
                lags = [audit[eid] - res.sent for eid, res in granted.items() if eid in audit]
                repeat_results.append(
                    Repeat(
                        slash={"bot": _p99(bot_res, "command"), "bare": _p99(bare_res, "command")},
                        view={"bot": _p99(bot_res, "invoke"), "bare": _p99(bare_res, "invoke")},
                        audit_p99=pct(lags, 99),
                        audit_missing=len(granted) - len(lags),
                        failed=sum(1 for x in bot_res + bare_res if x.status != 200),
                    )
                )
            machine = load.report()
            sent = repeats * rounds * len(_tasks(0))
            cpu_ms = {
                "bot": (sum(map(_proc_jiffies, bot_pids)) - cpu0["bot"]) / _HZ * 1000 / sent,
                "bare": (sum(map(_proc_jiffies, bare_pids)) - cpu0["bare"]) / _HZ * 1000 / sent,
            }
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
        stacked = _stacked_stored(db)
        store.close_store()

    def add(metric: str, value: str, target: str = "", ok: bool | None = None) -> None:
        rows.append(Row(SECTION, metric, value, target, "" if ok is None else ("ok" if ok else "MISS")))

    slash_ratio = [x.slash["bot"] / x.slash["bare"] for x in repeat_results]
    view_ratio = [x.view["bot"] / x.view["bare"] for x in repeat_results]
    audit = [x.audit_p99 for x in repeat_results]
    label = f"median (min–max) of {repeats} repeats"
    add(f"slash-command ack p99, bot ms, {label}", _spread([x.slash["bot"] for x in repeat_results], 1000))
    add(
        f"slash-command ack p99, bare Bolt ms, {label}",
        _spread([x.slash["bare"] for x in repeat_results], 1000),
    )
    add(
        "slash-command ack p99 ratio bot / bare",
        _spread(slash_ratio, fmt="{:.2f}") + "x",
        f"<= {TARGET_SLASH}x",
        statistics.median(slash_ratio) <= TARGET_SLASH,
    )
    add(f"view-submission ack p99, bot ms, {label}", _spread([x.view["bot"] for x in repeat_results], 1000))
    add(
        f"view-submission ack p99, bare Bolt ms, {label}",
        _spread([x.view["bare"] for x in repeat_results], 1000),
    )
    add(
        "view-submission ack p99 ratio bot / bare",
        _spread(view_ratio, fmt="{:.2f}") + "x",
        f"<= {TARGET_VIEW}x",
        statistics.median(view_ratio) <= TARGET_VIEW,
    )
    add(
        "invocation -> audit message p99, ms",
        _spread(audit, 1000) + f"; {sum(x.audit_missing for x in repeat_results)} granted without one",
        f"<= {TARGET_AUDIT * 1000:.0f} ms",
        statistics.median(audit) <= TARGET_AUDIT,
    )
    add(
        "requests per repeat and outcome",
        f"{rounds} rounds x (100 submissions + 20 slash commands) per server, concurrency {CONCURRENCY}; "
        f"{sum(x.failed for x in repeat_results)} non-200; {stacked} stacked events stored",
    )
    add("machine load during the measured repeats", machine)
    add(
        "server CPU per request (ack and everything after it)",
        f"bot {cpu_ms['bot']:.1f} ms, bare Bolt {cpu_ms['bare']:.1f} ms (user + system time of each gunicorn)",
    )
    for i, x in enumerate(repeat_results, 1):
        add(
            f"repeat {i}",
            f"slash p99 {x.slash['bot'] * 1000:.0f} / {x.slash['bare'] * 1000:.0f} ms, "
            f"view p99 {x.view['bot'] * 1000:.0f} / {x.view['bare'] * 1000:.0f} ms (bot / bare), "
            f"audit p99 {x.audit_p99 * 1000:.0f} ms",
        )


def _profile(pids: list[int]) -> Any:
    """With BENCH_PYSPY=FILE (py-spy on PATH, or BENCH_PYSPY_BIN): sample the bot's worker into FILE in
    py-spy's collapsed-stack format. BENCH_PYSPY_MODE=gil (default): only the thread holding the GIL, i.e.
    where the CPU goes; =wall: every thread, waiting ones included (e.g. for the SQLite write lock)."""
    import subprocess

    out = os.environ.get("BENCH_PYSPY")
    if not out:
        return None
    mode = ["--idle"] if os.environ.get("BENCH_PYSPY_MODE") == "wall" else ["--gil"]
    spy = os.environ.get("BENCH_PYSPY_BIN", "py-spy")
    cmd = [spy, "record", "-p", str(pids[0]), "-r", "200", "--format", "raw", "-o", out, "--threads", *mode]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
