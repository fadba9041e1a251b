"""One total deadline for a shutdown (bot/shutdown.py), and the runners' SIGTERM wait (bot/signals.py).

A part that hangs (a scheduled job stuck in a call: APScheduler's own wait has no bound) no longer holds
the shutdown, nor the parts after it, past one deadline; the runners then exit at once. And the Socket Mode
and clock runners stop on SIGTERM whichever thread takes it, as `try` does (tests/test_try_sigterm.py)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from bot.localslack.webapi import FakeSlack
from bot.shutdown import Shutdown
from tests.conftest import Bot
from tests.harness import BOT_TOKEN, SIGNING_SECRET
from tests.processes import SIGTERM_FROM_ANOTHER_THREAD, clean_env
from tests.test_access_multiprocess import eventually
from tests.test_socket_mode import FakeSocketSlack


class StuckParts:
    """Parts for a Shutdown on a fake clock: `hang` blocks until `release`, and the fake `wait` moves the
    clock by the whole timeout as soon as the part it waits for is known to be stuck (no real waiting)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.given: list[float] = []  # the seconds left each part was given
        self.stuck = threading.Semaphore(0)
        self.release = threading.Event()

    def hang(self, left: float) -> None:
        self.given.append(left)
        self.stuck.release()
        self.release.wait()

    def quick(self, left: float) -> None:
        self.given.append(left)

    def wait(self, done: threading.Event, timeout: float) -> bool:
        while not done.wait(0.01):
            if self.stuck.acquire(blocking=False):
                self.now += timeout
                return done.is_set()
        return True


def test_parts_share_one_deadline_and_a_hung_part_does_not_hold_up_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    parts = StuckParts()
    stopping = Shutdown(10, monotonic=lambda: parts.now, wait=parts.wait)
    try:
        assert stopping.stop("servers", parts.quick)
        assert not stopping.stop("scheduler", parts.hang)  # given the whole 10 s, then left running
        assert not stopping.stop("delivery", parts.hang)  # still started (asked to stop), not waited for
        assert parts.given == [10.0, 10.0, 0.0]
        assert parts.now == 10.0  # one deadline in all, not 10 s per part
        with caplog.at_level(logging.ERROR, logger="bot.shutdown"):
            assert not stopping.finish()
        assert [r.getMessage() for r in caplog.records] == [
            "shutdown exceeded its 10 s deadline; not finished: scheduler, delivery"
        ]
    finally:
        parts.release.set()


def test_a_part_that_fails_is_logged_and_the_others_still_stop(caplog: pytest.LogCaptureFixture) -> None:
    parts = StuckParts()
    stopping = Shutdown(10, monotonic=lambda: parts.now, wait=parts.wait)

    def broken(_left: float) -> None:
        raise RuntimeError("boom")

    assert stopping.stop("broken", broken)
    assert stopping.stop("next", parts.quick)
    assert stopping.finish() and parts.given == [10.0]
    assert any("stopping broken failed" in r.getMessage() for r in caplog.records)


def test_the_bot_stops_within_its_deadline_when_a_scheduled_job_hangs(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = bot.runtime
    runtime.scheduler.start()
    entered, release = threading.Event(), threading.Event()

    def stuck_job() -> None:  # e.g. a sweep stuck in a Slack or AWS call
        entered.set()
        release.wait()

    assert runtime.scheduler._scheduler is not None
    runtime.scheduler._scheduler.add_job(stuck_job)
    assert entered.wait(10)
    result: list[bool] = []
    stopper = threading.Thread(target=lambda: result.append(runtime.shutdown(timeout=0.5)))
    started = time.monotonic()
    try:
        stopper.start()
        stopper.join(10)  # before: APScheduler's wait for the job never ended
        assert not stopper.is_alive(), "shutdown waited for the hung job past its deadline"
        assert time.monotonic() - started < 5
        assert result == [False]
        # the parts after the scheduler were still asked to stop (with no time left, so not waited for)
        leases = runtime.pipeline.deps.leases
        eventually(lambda: not leases.running, "the lease keeper stopped", timeout=10)
        assert any(
            "shutdown exceeded its 0.5 s deadline; not finished: scheduler" in r.getMessage()
            for r in caplog.records
        )
    finally:
        release.set()


# -- the runners, as processes: SIGTERM sent to a non-main thread ----------------------------------------

# Run a runner (`breakglass-bot clock` or `socket`) in the main thread of a fresh interpreter; SIGTERM is sent
# from a non-main thread once the main thread is blocked in the runner's signal wait (and, with "hang", once
# the first sweep is stuck).
SCRIPT = SIGTERM_FROM_ANOTHER_THREAD + textwrap.dedent(
    """
    import bot.shutdown
    from bot import cli, scheduler

    command, hang = sys.argv[1], sys.argv[2] == "hang"
    stuck = threading.Event()
    if hang:
        bot.shutdown.DEADLINE = 1.0

        def stuck_sweep(self, *args, **kwargs):
            stuck.set()
            threading.Event().wait()  # never returns

        scheduler.Scheduler.sweep = stuck_sweep


    def blocked_in_wait(names):
        installed = callable(signal.getsignal(signal.SIGTERM))  # the runner's handler, not the default
        return installed and "run_" + command in names and names[0] in ("wait", "wait_for_signal", "select")


    send_sigterm_when(blocked_in_wait, stuck if hang else None)
    code = cli.main([command])
    print("stopped", flush=True)
    sys.exit(code)
    """
)


def run_runner(command: str, hang: bool, tmp_path: Path, fake: FakeSlack) -> tuple[int, str, str, float]:
    env = clean_env(
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=fake.url,
        SLACK_TEAM_ID="T0001",
        BREAKGLASS_AUDIT_CHANNEL="C0AUDIT",
        BREAKGLASS_STORE=f"sqlite:///{tmp_path / 'events.db'}",
        LOG_LEVEL="INFO",
    )
    if command == "socket":
        env["SLACK_APP_TOKEN"] = fake.app_token
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, command, "hang" if hang else "clean"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"`{command}` did not stop on SIGTERM: {out!r} {err[-3000:]!r}") from None
    return process.returncode, out, err, time.monotonic() - started


@pytest.mark.parametrize("command", ["clock", "socket"])
def test_a_runner_stops_on_sigterm_taken_by_another_thread(
    command: str, tmp_path: Path, fake: FakeSlack
) -> None:
    socket_slack = FakeSocketSlack()
    socket_slack.thread.start()
    fake.socket_mode_url = socket_slack.url
    try:
        code, out, err, _ = run_runner(command, False, tmp_path, fake)
    finally:
        socket_slack.server.shutdown()
    assert code == 0, err[-3000:]
    assert out.split() == ["sending", "stopped"], out
    assert "shutdown exceeded" not in err
    if command == "socket":
        assert fake.calls_to("apps.connections.open")


def test_a_runner_whose_sweep_hangs_exits_once_its_deadline_has_passed(
    tmp_path: Path, fake: FakeSlack
) -> None:
    code, out, err, _elapsed = run_runner("clock", True, tmp_path, fake)
    assert code == 1, err[-3000:]
    assert out.split() == ["sending"], out  # exited at once: the stuck job's thread was not waited for
    late = [json.loads(line) for line in err.splitlines() if "shutdown exceeded" in line]
    assert [line["msg"] for line in late] == ["shutdown exceeded its 1 s deadline; not finished: scheduler"]
