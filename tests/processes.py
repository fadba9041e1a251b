"""Run the real `breakglass-bot` as subprocesses (gunicorn HTTP), for cross-process tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.harness import BOT_TOKEN, SIGNING_SECRET, http

BIN = Path(sys.executable).parent

# Python source to begin a script run in a fresh interpreter with: `send_sigterm_when(blocked, ready)` starts
# a thread that waits for `ready` (an Event, if given), then until `blocked(names)` holds for the main thread's
# stack (its function names, innermost first; read from its frames, not guessed by sleeping), then sends
# SIGTERM to itself, a non-main thread: the case where a main thread blocked in a lock never wakes.
SIGTERM_FROM_ANOTHER_THREAD = """
import signal, sys, threading, time


def _main_stack():
    frame = sys._current_frames().get(threading.main_thread().ident)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names


def send_sigterm_when(blocked, ready=None):
    def send():
        if ready is not None and not ready.wait(60):
            print("never ready", flush=True)
            return
        deadline = time.monotonic() + 60
        while not blocked(_main_stack()):
            if time.monotonic() > deadline:
                print("never blocked", flush=True)
                return
            time.sleep(0.01)
        print("sending", flush=True)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    threading.Thread(target=send, daemon=True).start()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "BREAKGLASS_"))}
    env.update(extra)
    return env


class BotProcess:
    """`breakglass-bot http` on a free port, pointed at a fake Slack and a given store."""

    def __init__(
        self, cwd: Path, slack_url: str, store_url: str, *, command: Sequence[str] | None = None, **env: str
    ) -> None:
        """`command` replaces `breakglass-bot http`; "{port}" in its arguments becomes the chosen port."""
        self.port = free_port()
        self.command = (
            [arg.format(port=self.port) for arg in command]
            if command
            else [str(BIN / "breakglass-bot"), "http"]
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.cwd = cwd
        self.env = clean_env(
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=slack_url,
            BREAKGLASS_AUDIT_CHANNEL="C0AUDIT",
            BREAKGLASS_STORE=store_url,
            PORT=str(self.port),
            **env,
        )
        self.process: subprocess.Popen[str] | None = None
        # Its log goes to a file, never to a pipe nobody reads while it runs: a full pipe (64 KiB) would
        # block the bot's next log line, and with it whatever thread logged (a stalled delivery, a late
        # expiry). A restart appends to the same file.
        self.log_path = cwd / f"bot-{self.port}.log"

    def start(self, timeout: float = 30) -> BotProcess:
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                text=True,
                start_new_session=True,  # its own process group: `kill_all` reaches gunicorn's workers too
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("bot exited: " + self.stderr())
            try:
                if http("GET", self.url + "/healthz", timeout=1).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError("bot did not become healthy in time")

    def terminate(self, timeout: float = 30) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def kill_all(self) -> None:
        """SIGKILL the whole process group, gunicorn's master and workers at once (a lost node, an OOM of
        the container). `kill` signals the master alone, and an orphaned worker finishes its work."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stderr(self) -> str:
        """Everything the bot logged so far (every start of it)."""
        return self.log_path.read_text() if self.log_path.exists() else ""


def race_workers(script: str, argvs: Sequence[Sequence[str]], *, timeout: float = 180) -> list[str]:
    """Run `python -c script ARGV...` once per argv, from the repository root: each prints "ready", waits
    for "go" on stdin (sent to all at once, so they race), then prints its result as its last line.
    Returns the last lines, in argv order; fails with a worker's stderr if one fails."""
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        for argv in argvs
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            line = worker.stdout.readline()
            assert line.strip() == "ready", (line, worker.stderr.read() if worker.stderr else "")
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = []
        for worker in workers:
            out, err = worker.communicate(timeout=timeout)
            assert worker.returncode == 0, err
            results.append(out.strip().splitlines()[-1])
        return results
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
