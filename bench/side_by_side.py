"""Section 3c: the bot and a bare Bolt app side by side, in one run, interleaved round by round.

All servers run at once under the same gunicorn settings (1 worker, 32 gthread threads): the bot, a bare
Bolt app that only acks (bench/bare_app.py) and, with BENCH_COMPARE=DIR (another checkout, e.g. `git
worktree add /tmp/before <commit>`), the bot as it was, so before and after meet the same load. Each
repeat sends every server in turn rounds of 100 modal submissions plus 20 `/breakglass` slash commands at
concurrency 20; which server goes first rotates every round, and each server's post-ack work has finished
(its CPU is quiet) before the next one's turn. Per repeat: slash-command and view-submission ack p99 of
each, the bots' ratios to bare Bolt, and each bot's invocation -> audit message p99; reported as the
median and the spread (min-max) of the repeats, with the CPU each server used per request and how busy
the machine was (CPU used by processes outside the benchmark). BENCH_PYSPY=FILE profiles the bot's worker.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Row, free_port, pct
from bench.http_bench import (
    CONCURRENCY,
    ROOT,
    UNPACED,
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


def _quiet(pids: list[int], timeout: float = 10.0) -> None:
    """Wait until these processes use no CPU for 150 ms (their post-ack work has finished)."""
    deadline = time.monotonic() + timeout
    last, still = sum(map(_proc_jiffies, pids)), 0
    while still < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
        now = sum(map(_proc_jiffies, pids))
        still = still + 1 if now == last else 0
        last = now


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

    def __init__(self, name: str, base_url: str, fake: FakeSlack, *, opens_form: bool = True) -> None:
        self.name = name
        # A bot opens the invoke form on `/breakglass`; the form is opened (untimed) before each timed
        # submission, as a person does. Bare Bolt opens none: its submissions go bare.
        self.opens_form = opens_form
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
        if kind == "invoke":
            incident = "INC-4242" if profile == "prod" else None
            sender = self._sender()
            view_id, metadata = sender.open_form(user) if self.opens_form else (None, "")
            sent = time.monotonic()  # the submission's ack alone
            r = sender.submit(
                "breakglass_invoke",
                {
                    "profile": ("select", profile),
                    "reason": ("select", "incident"),
                    "justification": "Database failover is stuck; promoting the replica by hand",
                    "duration": ("select", "900"),
                    "incident": incident,
                },
                user=user,
                private_metadata=metadata,
                view_id=view_id,
            )
        else:
            sent = time.monotonic()
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


@dataclass
class Bot:
    """One bot under test: its code (a checkout), its SQLite file, its server."""

    name: str
    root: Path
    db: Path
    store: SQLiteStore
    settle: Any
    target: Target | None = None
    pids: list[int] = field(default_factory=list)


def _bot_env(fake: FakeSlack, db: Path) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": fake.url,
        "BREAKGLASS_AUDIT_CHANNEL": "C0AUDIT",
        "BREAKGLASS_STORE": f"sqlite:///{db}",
        "LOG_LEVEL": "WARNING",
        **UNPACED,
    }


def run(rows: list[Row], *, repeats: int = 3, rounds: int = 5, compare: str | None = None) -> None:
    """`compare` (or BENCH_COMPARE=DIR): also run the bot from another checkout (e.g. `git worktree add
    /tmp/before <commit>`) as a third server in the same interleaved rounds: before and after, side by side."""
    compare = compare or os.environ.get("BENCH_COMPARE")
    users = {u: {"email": f"{u.lower()}@example.com", "name": u.lower()} for u in USERS}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        fake = stack.enter_context(FakeSlack(token=BOT_TOKEN, users=users))
        bots: list[Bot] = []
        for name, root in [("bot", ROOT), *([("bot before", Path(compare).resolve())] if compare else [])]:
            db = tmp / f"{len(bots)}.db"
            store = SQLiteStore(db)
            bots.append(Bot(name, root, db, store, _closer(store, fake)))
        pool = stack.enter_context(ThreadPoolExecutor(CONCURRENCY))
        procs = {}
        for bot in bots:
            port = free_port()
            workdir = tmp / f"cwd-{bot.db.stem}"
            workdir.mkdir()
            cmd = [_venv_bin("breakglass-bot"), "http"]
            procs[bot.name] = stack.enter_context(
                serve(cmd, _bot_env(fake, bot.db), port, str(workdir), bot.root)
            )
            bot.target = Target(bot.name, f"http://127.0.0.1:{port}", fake)
        bare_port = free_port()
        bare_cmd = gunicorn_cmd(bare_port, "bench.bare_app:app")
        procs["bare"] = stack.enter_context(
            serve(bare_cmd, _bot_env(fake, tmp / "bare.db"), bare_port, str(ROOT))
        )
        bare = Target("bare", f"http://127.0.0.1:{bare_port}", fake, opens_form=False)
        targets = [b.target for b in bots if b.target] + [bare]
        pids = {name: [p.pid, *_children(p.pid)] for name, p in procs.items()}
        # warm-up (imports, first user lookups, SQLite pages), not measured
        for target in targets:
            list(pool.map(target.one, _tasks(0)[:30]))
        for bot in bots:
            bot.settle([])
        load = Load()
        load.start([os.getpid(), *(p for ps in pids.values() for p in ps)])
        spy = _profile(pids["bot"][1:] or pids["bot"])
        cpu0 = {name: sum(map(_proc_jiffies, ps)) for name, ps in pids.items()}
        repeat_results: list[dict[str, Repeat]] = []
        for rep in range(repeats):
            got: dict[str, list[Result]] = {t.name: [] for t in targets}
            for r in range(rounds):
                shift = (rep * rounds + r) % len(targets)  # every server goes first in turn
                for target in targets[shift:] + targets[:shift]:
                    got[target.name] += pool.map(target.one, _tasks(r))
                    for bot in bots:
                        if bot.target is target:
                            bot.settle(got[bot.name])  # audit messages in, events ended
                    _quiet(pids[target.name])  # its work after the acks is done before the next server's turn
            audit = _audit_times(fake)
            per_bot = {}
            for bot in bots:
                res = got[bot.name]
                granted = _granted_ids(res)
                lags = [audit[eid] - x.sent for eid, x in granted.items() if eid in audit]
                per_bot[bot.name] = Repeat(
                    slash={"bot": _p99(res, "command"), "bare": _p99(got["bare"], "command")},
                    view={"bot": _p99(res, "invoke"), "bare": _p99(got["bare"], "invoke")},
                    audit_p99=pct(lags, 99),
                    audit_missing=len(granted) - len(lags),
                    failed=sum(1 for x in res + got["bare"] if x.status != 200),
                )
            repeat_results.append(per_bot)
        machine = load.report()
        sent = repeats * rounds * len(_tasks(0))
        cpu_ms = {
            name: (sum(map(_proc_jiffies, ps)) - cpu0[name]) / _HZ * 1000 / sent for name, ps in pids.items()
        }
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        stacked = {bot.name: _stacked_stored(bot.db) for bot in bots}
        for bot in bots:
            bot.store.disconnect()

    def add(metric: str, value: str, target: str = "", ok: bool | None = None) -> None:
        rows.append(Row(SECTION, metric, value, target, "" if ok is None else ("ok" if ok else "MISS")))

    label = f"median (min–max) of {repeats} repeats"
    bare_slash = [x["bot"].slash["bare"] for x in repeat_results]
    bare_view = [x["bot"].view["bare"] for x in repeat_results]
    add(f"bare Bolt: slash-command ack p99 ms, {label}", _spread(bare_slash, 1000))
    add(f"bare Bolt: view-submission ack p99 ms, {label}", _spread(bare_view, 1000))
    for bot in bots:
        mine = [x[bot.name] for x in repeat_results]
        slash_ratio = [x.slash["bot"] / x.slash["bare"] for x in mine]
        view_ratio = [x.view["bot"] / x.view["bare"] for x in mine]
        audit_p99 = [x.audit_p99 for x in mine]
        add(f"{bot.name}: slash-command ack p99 ms", _spread([x.slash["bot"] for x in mine], 1000))
        add(
            f"{bot.name}: slash-command ack p99 / bare Bolt",
            _spread(slash_ratio, fmt="{:.2f}") + "x",
            f"<= {TARGET_SLASH}x",
            statistics.median(slash_ratio) <= TARGET_SLASH,
        )
        add(f"{bot.name}: view-submission ack p99 ms", _spread([x.view["bot"] for x in mine], 1000))
        add(
            f"{bot.name}: view-submission ack p99 / bare Bolt",
            _spread(view_ratio, fmt="{:.2f}") + "x",
            f"<= {TARGET_VIEW}x",
            statistics.median(view_ratio) <= TARGET_VIEW,
        )
        add(
            f"{bot.name}: invocation -> audit message p99 ms",
            _spread(audit_p99, 1000) + f"; {sum(x.audit_missing for x in mine)} granted without one",
            f"<= {TARGET_AUDIT * 1000:.0f} ms",
            statistics.median(audit_p99) <= TARGET_AUDIT,
        )
        add(
            f"{bot.name}: outcome",
            f"{sum(x.failed for x in mine)} non-200 (with bare Bolt's); {stacked[bot.name]} stacked events stored",
        )
    add(
        "server CPU per request (ack and all work after it)",
        ", ".join(f"{name} {ms:.1f} ms" for name, ms in cpu_ms.items())
        + " (user + system time of each gunicorn)",
    )
    add(
        "server CPU per request / bare Bolt (the saturation benchmark: reported, not a target)",
        ", ".join(f"{name} {ms / cpu_ms['bare']:.1f}x" for name, ms in cpu_ms.items() if name != "bare"),
    )
    add(
        "load",
        f"{rounds} rounds per repeat, each: 100 submissions + 20 slash commands per server at concurrency "
        f"{CONCURRENCY}, servers in turn",
    )
    add("machine during the measured repeats", machine)
    for i, x in enumerate(repeat_results, 1):
        add(
            f"repeat {i}",
            "; ".join(
                f"{name}: slash {r.slash['bot'] * 1000:.0f}, view {r.view['bot'] * 1000:.0f}, "
                f"audit {r.audit_p99 * 1000:.0f} ms"
                for name, r in x.items()
            )
            + f"; bare: slash {x['bot'].slash['bare'] * 1000:.0f}, view {x['bot'].view['bare'] * 1000:.0f} ms",
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
