"""Heartbeat leases: a delivery (and an AWS assignment's lock) holds a *short* lease that this process renews
while it works, so a lease whose holder died runs out within seconds instead of minutes.

* `Lease` is one delivery lease as written in the store (`outbox_next_at`, `outbox_attempts`). It is ours
  while the stored event shows one of the `until` values we wrote with our attempt number; every renewal is a
  conditional write that first checks exactly that (fencing: a lease taken over by another process is never
  renewed back, and the delivery stops before its next send).
* `LeaseKeeper` is one thread per process that calls every registered renewal each `RENEW_EVERY`. A renewal
  that finds its lease gone, or a holder past `MAX_HOLD` (a delivery stuck in a call that never returns),
  stops renewing: the lease then runs out within `LEASE` and another process takes over.
* `MAX_HOLD` is how long one delivery may keep working while renewing (Slack's Retry-After sleeps, AWS
  polling, an activity gather): `time_left()` reports it to the Slack retry handler and the gather budget.

After a SIGKILL the owed steps are taken over within `LEASE` plus one sweep interval of their due time.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from bot.clock import Clock
from store import BreakGlassEvent, EventNotFound, Store, StoreError, mutate

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=10)
"""A lease (delivery or assignment lock) lasts this long past its last renewal."""
RENEW_EVERY = timedelta(seconds=2)
"""How often the keeper renews every lease held in this process."""
SEND_MARGIN = timedelta(seconds=4)
"""Never start a send with less than this left on the lease as stored (renewals keep it near LEASE)."""
MAX_HOLD = timedelta(minutes=2)
"""One delivery renews its lease for at most this long; waits inside it (Retry-After, AWS) stay within it."""


class Lease:
    """A delivery lease as written in the store: ours while the stored event shows our attempt number and one
    of the `until` values we wrote (the claim's, then each renewal's)."""

    def __init__(self, until: datetime, attempts: int, *, deadline: datetime | None = None) -> None:
        self.attempts = attempts
        self.until = until
        self.deadline = deadline or until - LEASE + MAX_HOLD
        self.lost = False
        self._written = [until]
        self._lock = threading.Lock()

    def held_in(self, event: BreakGlassEvent) -> bool:
        with self._lock:
            return (
                not self.lost
                and event.outbox_attempts == self.attempts
                and event.outbox_next_at in self._written
            )

    def expect(self, until: datetime) -> None:
        """A renewal to `until` is about to be written: from now on a stored `until` counts as ours."""
        with self._lock:
            self._written = [*self._written[-3:], until]

    def renewed(self, until: datetime) -> None:
        with self._lock:
            self.until = max(self.until, until)

    def lose(self) -> None:
        with self._lock:
            self.lost = True

    def expires_in(self, now: datetime) -> float:
        """Seconds until the lease as stored runs out (0 once it is lost)."""
        return 0.0 if self.lost else (self.until - now).total_seconds()

    def time_left(self, now: datetime) -> float:
        """Seconds this delivery may still work (and wait) while renewing: up to MAX_HOLD, 0 once lost."""
        return 0.0 if self.lost else (self.deadline - now).total_seconds()


class LeaseKeeper:
    """Renews every lease held in this process, from one thread that runs while there is one to renew."""

    def __init__(self, every: timedelta = RENEW_EVERY) -> None:
        self.every = every
        self._renewals: dict[object, Callable[[], bool]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, key: object, renew: Callable[[], bool]) -> None:
        """Call `renew` every `every` until it returns False or `remove(key)`."""
        with self._lock:
            self._renewals[key] = renew
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()

    def remove(self, key: object) -> None:
        with self._lock:
            self._renewals.pop(key, None)

    @contextmanager
    def keeping(self, key: object, renew: Callable[[], bool]) -> Iterator[None]:
        self.add(key, renew)
        try:
            yield
        finally:
            self.remove(key)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop renewing (shutdown): every lease still held here runs out within LEASE, and the thread ends.
        A lease added later starts the thread again."""
        with self._lock:
            self._renewals.clear()
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        with self._lock:
            return self._thread is not None

    def _run(self) -> None:
        while True:
            self._wake.wait(self.every.total_seconds())
            with self._lock:
                self._wake.clear()
                renewals = list(self._renewals.items())
                if not renewals:
                    self._thread = None
                    return
            for key, renew in renewals:
                try:
                    keep = renew()
                except StoreError as exc:  # a store hiccup: try again at the next beat (it may run out)
                    log.warning("lease renewal failed, will retry: %s", exc, extra={"action": "lease"})
                    keep = True
                except Exception:  # never let one renewal stop the others
                    log.exception("lease renewal failed, will retry", extra={"action": "lease"})
                    keep = True
                if not keep:
                    with self._lock:
                        if self._renewals.get(key) is renew:
                            del self._renewals[key]


# The lease of the delivery running in this thread (for the Slack retry handlers and the gather budget).
current: contextvars.ContextVar[tuple[Lease, Clock] | None] = contextvars.ContextVar(
    "breakglass_delivery_lease", default=None
)


def lease_time_left() -> float | None:
    """Seconds the delivery running in this thread may still work and wait (None outside a delivery)."""
    held = current.get()
    return None if held is None else held[0].time_left(held[1].now())


def lease_lost() -> bool:
    """Has the delivery running in this thread lost its lease (a send must not start)?"""
    held = current.get()
    return held is not None and (held[0].lost or held[0].expires_in(held[1].now()) <= 0)


@contextmanager
def bounded_by(lease: Lease, clock: Clock) -> Iterator[None]:
    token = current.set((lease, clock))
    try:
        yield
    finally:
        current.reset(token)


def claim_renewal(store: Store, clock: Clock, name: str, lease: Lease) -> Callable[[], bool]:
    """The heartbeat of a named claim (`Store.claim`) held with `lease`: extend it while it is ours."""

    def renew() -> bool:
        now = clock.now()
        if lease.lost or now >= lease.deadline:
            return False
        until = now + LEASE
        if not store.renew_claim(name, held=lease.until, until=until):
            lease.lose()
            return False
        lease.renewed(until)
        return True

    return renew


class _NotOurs(Exception):
    pass


def event_renewal(store: Store, clock: Clock, event_id: str, lease: Lease) -> Callable[[], bool]:
    """The heartbeat of a delivery lease: extend it by LEASE if the stored event still shows it (a
    conditional write), else mark it lost. False: stop renewing (lost, past MAX_HOLD, never created)."""

    def renew() -> bool:
        now = clock.now()
        if lease.lost or now >= lease.deadline:
            return False
        until = now + LEASE
        lease.expect(until)

        def change(ev: BreakGlassEvent) -> BreakGlassEvent:
            if not lease.held_in(ev):
                raise _NotOurs
            return ev.updated(outbox_next_at=until)

        try:
            mutate(store, event_id, change, attempts=3)
        except _NotOurs:
            lease.lose()
            return False
        except EventNotFound:  # `hold`: the event may not be stored yet (or its creation failed)
            return now < lease.until
        lease.renewed(until)
        return True

    return renew


class NewLeases:
    """New events created already holding their delivery lease (`hold`, the use case's `prepare_new`), so the
    post-ack delivery in this process needs no claim write; renewed while the delivery waits for a worker.
    Disabled on Lambda, where nothing runs after the response: the lazy listener claims like the sweep."""

    def __init__(self, store: Store, clock: Clock, keeper: LeaseKeeper, *, enabled: bool = True) -> None:
        self.store = store
        self.clock = clock
        self.keeper = keeper
        self.enabled = enabled
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()

    def hold(self, event: BreakGlassEvent) -> BreakGlassEvent:
        """A new event, about to be created, holding its delivery lease (for the post-ack delivery)."""
        if not self.enabled:
            return event
        lease = Lease(until=event.created_at + LEASE, attempts=event.outbox_attempts + 1)
        with self._lock:
            if len(self._held) > 10_000:  # creations that failed (e.g. stacked access) are never delivered
                self._held.clear()
            self._held[event.id] = lease
        self.keeper.add(lease, event_renewal(self.store, self.clock, event.id, lease))
        return event.updated(outbox_next_at=lease.until, outbox_attempts=lease.attempts, outbox_leased=True)

    def take(self, event_id: str) -> Lease | None:
        """The lease `event_id` was created holding, once (None if it was not created here)."""
        with self._lock:
            return self._held.pop(event_id, None)
