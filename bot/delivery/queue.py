"""The post-ack delivery queue (threaded runtimes: HTTP/WSGI, Socket Mode): a writer that stored a change
hands the event id here (`deliver_after_ack`) and returns, so Slack gets its answer first; the engine's
delivery workers take it from here and deliver. Queued, never awaited, counted in flight (`InFlight`) so a
clean shutdown and a test's `idle()` can wait for it. If the queue is lost (a crash), nothing is: the steps
are owed in the store and the sweep delivers them.

Roots first, across the queue: a delivery that owes a root audit message (a new invocation, `root_owed`)
waits in a lane of its own that workers take before anything else, and the queue counts, per audit
channel, the roots still *owed* (queued, or taken by a worker whose post has not reached the channel's
pacing gate yet). The gate (bot/slack_pacing.py) holds back older events' thread replies to that channel
while a root is owed there, and when every worker is already busy a worker waiting with such a reply
gives way (`should_give_way`: its step stays owed and is queued again, bot/delivery/precedence.py) so
that one of them takes the root. Roots go first for at most `ROOTS_FIRST_FOR` seconds: work that has
waited that long behind them (a close's DM, a delivery that gave way, an App Home refresh) is taken next,
so a long stream of invocations never starves the rest (a thread reply it holds still waits in the gate
for the owed roots, up to the gate's own patience).

On Lambda (`enabled=False`) nothing may run after the response: `deliver_after_ack` does nothing and a Bolt
lazy listener delivers instead (bot/app.py, `lambda_lazy_delivery`)."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.delivery.inflight import InFlight
from store import BreakGlassEvent
from store.model import OutboxKind


@dataclass(frozen=True)
class Delivery:
    """Deliver what `event_id` owes. `root`: the audit channel of the root message it owes (roots first);
    `since`: when its thread reply first waited for the channel (gate seconds), kept when it gave way."""

    event_id: str
    root: str | None = None
    since: float | None = None


Work = Delivery | tuple[Callable[..., None], tuple[Any, ...]]

ROOTS_FIRST_FOR = 30.0
"""Seconds other work may wait behind deliveries owing a root before it is taken first (never starved)."""


def root_owed(event: BreakGlassEvent) -> str | None:
    """The audit channel `event` owes its root audit message to (None: it owes none)."""
    if event.audit_ts is None and event.audit_channel and event.owes(OutboxKind.AUDIT_POST):
        return event.audit_channel
    return None


class DeliveryQueue:
    def __init__(
        self, inflight: InFlight, *, enabled: bool = True, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.inflight = inflight
        self.enabled = enabled
        self.now = now
        self._roots: deque[Work] = deque()  # deliveries owing a root audit message: taken first
        # the rest, first come first served, with when each was queued (None: a worker stops)
        self._rest: deque[tuple[float, Work | None]] = deque()
        self._queued: Counter[str] = Counter()  # per audit channel: roots queued
        self._owed: Counter[str] = Counter()  # per audit channel: roots queued or taken, not yet in the gate
        self._idle = 0  # workers waiting for work
        self._returning = 0  # workers that gave way and are on their way back for a root
        self._watchers: list[Callable[[], None]] = []
        self._closed = False
        self._cond = threading.Condition()

    def deliver_after_ack(self, event_id: str, *, root: str | None = None) -> None:
        """Deliver `event_id` on a delivery worker, after the caller returns (a no-op on Lambda). `root`:
        the audit channel it owes a root message to (`root_owed`), which goes before older thread replies."""
        if self.enabled:
            self.put(Delivery(event_id, root=root))

    def put(self, work: Work) -> bool:
        """Queue `work` (counted in flight until a worker is done with it); False once shut down."""
        with self._cond:
            if self._closed:
                return False
            self.inflight.enter()
            root = work.root if isinstance(work, Delivery) else None
            if root is not None:
                self._queued[root] += 1
                self._owed[root] += 1
                self._roots.append(work)
            else:
                self._rest.append((self.now(), work))
            self._cond.notify()
        if root is not None:  # a worker waiting in the gate with an older reply may have to give way
            for watcher in self._watchers:
                watcher()
        return True

    def get(self, *, returning: bool = False) -> Work | None:
        """The next work for a delivery worker, roots first (None: stop). `returning`: this worker gave way
        to a queued root (`should_give_way`) and comes back for it."""
        with self._cond:
            if returning:
                self._returning -= 1
            self._idle += 1
            while not self._roots and not self._rest:
                self._cond.wait()
            self._idle -= 1
            if self._roots and not self._rest_overdue():
                work = self._roots.popleft()
                assert isinstance(work, Delivery) and work.root is not None
                self._queued[work.root] -= 1
                if self._queued[work.root] <= 0:
                    del self._queued[work.root]
                return work
            return self._rest.popleft()[1]

    def _rest_overdue(self) -> bool:
        """The oldest other work has waited `ROOTS_FIRST_FOR` behind the roots (a stop never jumps ahead)."""
        if not self._rest:
            return False
        queued, work = self._rest[0]
        return work is not None and self.now() - queued >= ROOTS_FIRST_FOR

    def close(self, workers: int) -> None:
        """Take no more work; `workers` workers stop once they reach the end of what is queued."""
        with self._cond:
            self._closed = True
            self._rest.extend([(self.now(), None)] * workers)
            self._cond.notify_all()

    # -- what the pacing gate asks (roots first across the queue) ----------------------------------------

    def watch(self, wake: Callable[[], None]) -> None:
        """Call `wake` whenever a channel's owed roots change (a pacing gate re-checks its waiting posts)."""
        self._watchers.append(wake)

    def roots_owed(self, channel: str) -> int:
        """Roots owed to `channel` that are not in its pacing gate yet (queued, or taken by a worker)."""
        with self._cond:
            return self._owed[channel]

    def root_reached_gate(self, channel: str, *, wake: bool = True) -> None:
        """A delivery taken with `root=channel` has its root post in the gate (or ended without one)."""
        with self._cond:
            self._owed[channel] -= 1
            if self._owed[channel] <= 0:
                del self._owed[channel]
        if wake:
            for watcher in self._watchers:
                watcher()

    def should_give_way(self, channel: str) -> bool:
        """A worker waits with an older event's thread reply to `channel`: True if it must give way, because
        a root for `channel` is queued and no other worker is free (nor coming back) to take it. A True
        answer counts that worker as coming back (`get(returning=True)`). Never once shut down: the step
        could not be queued again, and the queued roots are delivered before the workers stop anyway."""
        with self._cond:
            if not self._closed and self._queued[channel] > self._idle + self._returning:
                self._returning += 1
                return True
            return False
