"""Notices (store/notices.py: a refusal, a drift repair, an audit channel broken or recovered, an audit
message edited) delivered to the audit feed's sinks as soon as they are stored, not at the next sweep.

The audit feed tells `PromptNotices.stored` the uids it just stored (`AuditFeed.on_stored`, wired in
bot.app). On threaded runtimes that queues one delivery on the post-ack delivery queue (so a refusing
request's answer goes first, and a clean shutdown waits for it); notices stored while one is queued join
it. The delivery is the sweep's own, `AuditFeed.deliver_notices`, for those uids: each notice under its
claim, so the sweep, another replica and this never send one twice, and whatever fails here (a sink down,
a lost process) stays owed for the sweep. On Lambda nothing may run after the response: the uids wait here
until `flush` runs at the end of the same invocation's work (`lambda_lazy_delivery` in bot/app.py, and
`sweep_handler` in bot/lambda_handler.py); the lazy run's sweep of owed deliveries also picks up the notices
another invocation stored (a refusal decided before the ack, in the request's own invocation).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bot.clock import Clock
from bot.delivery.queue import DeliveryQueue
from store import StoreError

if TYPE_CHECKING:
    from bot.audit_feed.sinks import AuditFeed

log = logging.getLogger(__name__)

MAX_PENDING = 1000  # uids kept for the next flush; beyond, they wait for the sweep (they are stored)


class PromptNotices:
    def __init__(self, feed: AuditFeed, clock: Clock, queue: DeliveryQueue) -> None:
        self.feed = feed
        self.clock = clock
        self.queue = queue
        self._lock = threading.Lock()
        self._pending: dict[str, None] = {}  # uids stored and not yet handed to a delivery, in order
        self._queued = False  # a flush is on the delivery queue and has not started

    def stored(self, uids: Iterable[str]) -> None:
        """Notices were just stored: deliver them soon (queued on threaded runtimes; Lambda: at `flush`)."""
        with self._lock:
            for uid in uids:
                if len(self._pending) < MAX_PENDING:
                    self._pending[uid] = None
            if self._queued or not self.queue.enabled:
                return
            self._queued = True
        if not self.queue.put((self._work, ())):  # shutting down: the sweep (of any replica) delivers them
            with self._lock:
                self._queued = False

    def _work(self) -> None:  # a delivery worker's
        self.flush()

    def flush(self) -> int:
        """Deliver the notices stored since the last flush, through the sweep's claimed path. Returns the
        notices every sink has now. Never raises: what is not delivered stays owed for the sweep."""
        with self._lock:
            uids, self._pending, self._queued = list(self._pending), {}, False
        if not uids:
            return 0
        try:
            return self.feed.deliver_notices(self.clock.now(), uids=uids)
        except StoreError as exc:
            log.warning(
                "audit feed: prompt delivery of %d notice(s) failed, the sweep will retry: %s",
                len(uids),
                exc,
                extra={"action": "audit_feed", "outcome": "retry"},
            )
        except Exception:  # a delivery worker runs this: it must survive; the notices stay owed
            log.exception(
                "audit feed: prompt delivery of %d notice(s) failed, the sweep will retry",
                len(uids),
                extra={"action": "audit_feed", "outcome": "retry"},
            )
        return 0
