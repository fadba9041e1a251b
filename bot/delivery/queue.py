"""The post-ack delivery queue (threaded runtimes: HTTP/WSGI, Socket Mode): a writer that stored a change
hands the event id here (`deliver_after_ack`) and returns, so Slack gets its answer first; the engine's
delivery workers take it from here and deliver. Queued, never awaited, counted in flight (`InFlight`) so a
clean shutdown and a test's `idle()` can wait for it. If the queue is lost (a crash), nothing is: the steps
are owed in the store and the sweep delivers them.

On Lambda (`enabled=False`) nothing may run after the response: `deliver_after_ack` does nothing and a Bolt
lazy listener delivers instead (bot/app.py, `lambda_lazy_delivery`)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from bot.delivery.inflight import InFlight

Work = tuple[Callable[..., None], tuple[Any, ...]] | tuple[str, str]


class DeliveryQueue:
    def __init__(self, inflight: InFlight, *, enabled: bool = True) -> None:
        self.inflight = inflight
        self.enabled = enabled
        self._items: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()

    def deliver_after_ack(self, event_id: str) -> None:
        """Deliver `event_id` on a delivery worker, after the caller returns (a no-op on Lambda)."""
        if self.enabled:
            self.put(("deliver", event_id))

    def put(self, work: Work) -> bool:
        """Queue `work` (counted in flight until a worker is done with it); False once shut down."""
        with self._lock:
            if self._closed:
                return False
            self.inflight.enter()
            self._items.put(work)
        return True

    def get(self) -> Work | None:
        """The next work for a delivery worker (None: stop)."""
        return self._items.get()

    def close(self, workers: int) -> None:
        """Take no more work; `workers` workers stop once they reach the end of what is queued."""
        with self._lock:
            self._closed = True
            for _ in range(workers):
                self._items.put(None)
