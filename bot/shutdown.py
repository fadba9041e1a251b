"""One deadline for a whole shutdown (`breakglass-bot try`, the Socket Mode and clock runners, the HTTP
worker's exit): the parts stop in order, each given the time left of one total deadline, and a part that
does not finish in time (a scheduled job stuck in a Slack or AWS call keeps APScheduler's wait going; a
join that never ends) is left running in the background instead of holding up the parts after it.

Leaving a part unfinished loses nothing: every change is stored before its side effects, which stay owed
in the event's outbox under a lease another process (or the next start) takes over (bot/delivery/).
The runners then exit at once (bot/cli.py): the interpreter would otherwise wait for those threads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

DEADLINE = 10.0  # seconds for a whole shutdown


def _wait(event: threading.Event, timeout: float) -> bool:
    return event.wait(timeout)


class Shutdown:
    """`stop(name, part)` for each part in order, then `finish()`. `total`: seconds (default DEADLINE);
    `monotonic` and `wait` are injectable (tests: a clock that moves when waited on)."""

    def __init__(
        self,
        total: float | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float], bool] = _wait,
    ) -> None:
        self.total = DEADLINE if total is None else total
        self._monotonic = monotonic
        self._wait = wait
        self._end = monotonic() + self.total
        self.late: list[str] = []  # the parts that had not finished when the deadline came

    def left(self) -> float:
        """Seconds left of the deadline (0 once it has passed)."""
        return max(0.0, self._end - self._monotonic())

    def stop(self, name: str, part: Callable[[float], object]) -> bool:
        """Run `part(seconds_left)` in a daemon thread and wait for it until the deadline. False if it had
        not finished by then (it goes on in the background; it is named in `late` and in `finish`'s log).
        A part is started even when the deadline has passed, so that it is at least asked to stop."""
        done = threading.Event()
        left = self.left()

        def run() -> None:
            try:
                part(left)
            except Exception:
                log.exception("shutdown: stopping %s failed", name, extra={"action": "shutdown"})
            finally:
                done.set()

        threading.Thread(target=run, name=f"breakglass-stop-{name}", daemon=True).start()
        if self._wait(done, left) or done.is_set():
            return True
        self.late.append(name)
        return False

    def finish(self) -> bool:
        """Log (one ERROR) the parts that overran the deadline; True when every part finished in time."""
        if self.late:
            log.error(
                "shutdown exceeded its %g s deadline; not finished: %s",
                self.total,
                ", ".join(self.late),
                extra={"action": "shutdown", "outcome": "late"},
            )
        return not self.late
