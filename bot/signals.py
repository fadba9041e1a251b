"""Waiting for SIGTERM/SIGINT in the main thread without losing the signal (`breakglass-bot try`, the
Socket Mode and clock runners)."""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import threading


def wait_for_signal(stop: threading.Event) -> None:
    """Block the main thread until ``stop`` is set by a signal handler. Not ``stop.wait()``: the kernel may run
    a process-directed signal's C handler on any thread, and then a main thread blocked in a lock (which
    ``Event.wait()`` is) is never woken to run the Python handler, so SIGTERM is lost. The wakeup fd is
    written by the C handler on whichever thread it runs, so the ``select`` here always returns."""
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    try:
        while not stop.is_set():
            select.select([reader], [], [])  # the Python handlers run as soon as this returns
            with contextlib.suppress(BlockingIOError):
                reader.recv(4096)
    finally:
        signal.set_wakeup_fd(previous)
        reader.close()
        writer.close()
