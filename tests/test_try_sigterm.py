"""`breakglass-bot try` stops on SIGTERM whichever thread the kernel runs the signal's handler on.

The intermittent CI hang: a process-directed SIGTERM may be taken by any thread that does not block it. When a
non-main thread took it, CPython's C handler only flagged it, and the main thread, blocked in
``threading.Event.wait()`` (a lock acquire), was never woken to run the Python handler: `try` ran on until
killed. Here the SIGTERM is sent to one of the process's own non-main threads (``pthread_kill``), once the
main thread is known to be blocked in its wait, so the case that used to happen now and then happens
every time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.processes import SIGTERM_FROM_ANOTHER_THREAD, clean_env, free_port

# Run `serve` in the main thread of a fresh interpreter; SIGTERM is sent from a non-main thread once the main
# thread is blocked in serve's wait.
SCRIPT = SIGTERM_FROM_ANOTHER_THREAD + textwrap.dedent(
    """
    from bot.localslack import workspace


    def blocked_in_serve(names):
        # innermost first: blocked in a wait called (directly or not) by serve, not yet returned
        return "serve" in names and names[0] in ("wait", "wait_for_signal", "select")


    send_sigterm_when(blocked_in_serve)
    workspace.serve(int(sys.argv[1]))
    print("stopped", flush=True)
    """
)


def test_sigterm_taken_by_another_thread_still_stops_it_and_removes_its_store(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(free_port())],
        cwd=tmp_path,
        env=clean_env(TMPDIR=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(
            f"SIGTERM on a non-main thread did not stop `try`: {out!r} {err[-2000:]!r}"
        ) from None
    assert process.returncode == 0, err
    assert "sending" in out and out.rstrip().endswith("stopped"), out
    assert list(tmp_path.iterdir()) == []  # the temporary store is gone
