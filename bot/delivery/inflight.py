"""The count of post-ack work still running in this process (queued deliveries and `SlackContext.call_after_ack` work),
so a clean shutdown (and a test's `idle()`) can wait for it."""

from __future__ import annotations

import threading


class InFlight:
    """Counts post-ack work still running (queued deliveries, `SlackContext.call_after_ack`), so shutdown (and
    tests) can wait for it."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    def enter(self) -> None:
        with self._idle:
            self._count += 1

    def exit(self) -> None:
        with self._idle:
            self._count -= 1
            if self._count == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._count == 0, timeout=timeout)
