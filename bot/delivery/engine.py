"""The delivery engine: everything that happens after a change is stored, from one place.

Every writer of a change (Slack listeners, the scheduler's warning and expiry, the sweep, `breakglass-admin
close`, Lambda's lazy listener and minute sweep) records the owed steps in the event's outbox in the *same*
store write as the change, then hands the event id to `Pipeline.deliver(event_id)` (or, right after a Slack
ack, to the post-ack queue, `DeliveryQueue.deliver_after_ack`, which the delivery workers here take from).
Delivery reads top to bottom:

  1. claim: a conditional write takes the event's delivery lease (`outbox_next_at = now + LEASE`); a lost
     claim means another process holds it. (A new invocation is created already holding its lease, see
     `NewLeases`, so the hot path needs no extra write.) The lease is short (seconds) and renewed by this
     process's `LeaseKeeper` while the delivery works (bot/delivery/lease.py), so a dead holder's lease
     runs out within `LEASE` and the next sweep takes its steps over.
  2. re-read, then send the first owed entry, through its handler in the `Registry` this engine was handed,
     rendering the event as stored *now* — never an in-memory copy. Before each send the lease must still be
     ours with at least `SEND_MARGIN` left; Slack's 429 retries inside a send are bounded by the lease left
     (bot/delivery/retry.py). A delivery that finds its lease gone stops.
  3. record: one conditional read-modify-write removes exactly the entries sent (kind and version; an
     `audit_update` rendered at version V satisfies every `audit_update` owed at <= V, never a later one)
     and, on failure, sets an exponential backoff; the sweep (`deliver_owed`) retries what stays owed.
  4. follow-ups: refresh the invoker's App Home and (re)track the event in the scheduler (`follow_ups`).

A root audit message carries Slack message metadata (`breakglass_event`, with the event id). Before
re-posting a root message after an unknown outcome (a connection dropped after Slack accepted it) its
handler looks for it in the audit channel's recent history and records it instead of posting twice.

The audit channel can break for good (archived, deleted, the bot removed from it): Slack then answers a
send to it with one of `AUDIT_CHANNEL_ERRORS`, which is not retried as if transient. Where the bot can
repair it (`not_in_channel` on a public channel) it joins (`conversations.join`) and sends again. Otherwise
the event owes an `audit_fallback` at once (bot/delivery/fallback.py); the audit steps stay owed and are
tried again every `AUDIT_RECHECK`. `AuditChannels` remembers broken channels in this process.

Every entry is sent independently: a failed entry is skipped for the rest of the delivery (and retried
with the rest after the backoff), and only the steps that need the root audit message (thread replies and
updates) wait for it. A failing audit post never holds back the invoker's DM, and a failing DM never holds
back the audit post.

The engine knows no handler: it is handed a `Registry` (bot/delivery/handlers, composed in `create_app`)
and the `DeliveryDeps` the handlers get. Adding an outbox kind: a member of `store.model.OutboxKind`, a
handler in its own module of `bot.delivery.handlers` registered there with one line, and the use case that
owes it (`event.with_outbox(kind)`, or `Deferred(kind, not_before)` for later) in the write that makes it owed.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable
from datetime import datetime, timedelta

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.access import AccessProvider
from bot.clock import Clock
from bot.delivery.audit_channels import AuditChannels
from bot.delivery.deps import DeliveryDeps
from bot.delivery.errors import (
    AUDIT_CHANNEL_ERRORS,
    SLACK_ERRORS,
    AuditChannelBroken,
    DeliveryFailed,
    describe,
    slack_error,
)
from bot.delivery.fallback import AUDIT_RECHECK, owe_fallback
from bot.delivery.inflight import InFlight
from bot.delivery.lease import (
    LEASE,
    SEND_MARGIN,
    Lease,
    LeaseKeeper,
    NewLeases,
    bounded_by,
    claim_renewal,
    event_renewal,
)
from bot.delivery.precedence import GaveWay, WorkerTurn, may_give_way, working
from bot.delivery.queue import Delivery, DeliveryQueue
from bot.delivery.registry import Fields, Registry, TaskStep
from bot.errors import DirectoryUnavailable
from bot.policy import Policy
from store import BreakGlassEvent, ConcurrentModification, EventNotFound, Store, StoreError, mutate
from store.model import OutboxEntry, OutboxKind
from store.tasks import OwedTask

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(minutes=5)
MAX_SENDS = 50  # per delivery; the rest waits for the next one
FollowUp = Callable[[BreakGlassEvent], None]


def backoff(attempts: int) -> timedelta:
    """2 s, 4 s, 8 s … capped at 5 minutes, with ±20 % jitter."""
    base = min(MAX_BACKOFF.total_seconds(), 2.0 ** max(1, attempts))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


class _NothingToDo(Exception):
    pass


class Pipeline:
    """The one delivery engine of a process: handed its dependencies, its handlers, the new events' leases,
    the post-ack queue it works off and the follow-ups to run after each delivery."""

    def __init__(
        self,
        deps: DeliveryDeps,
        handlers: Registry,
        *,
        new_leases: NewLeases,
        queue: DeliveryQueue,
        follow_ups: Iterable[FollowUp] = (),
        workers: int = 4,
    ) -> None:
        self.deps = deps
        self.handlers = handlers
        self.new_leases = new_leases
        self.queue = queue
        # Run after every delivery with the event as stored (App Home refresh, scheduler tracking).
        self.follow_ups: list[FollowUp] = list(follow_ups)
        self._workers = [
            threading.Thread(target=self._work, name=f"delivery_{i}", daemon=True)
            for i in range(workers if queue.enabled else 0)
        ]
        for thread in self._workers:
            thread.start()

    # What the engine's callers read (the handlers get the same through `deps`).
    @property
    def store(self) -> Store:
        return self.deps.store

    @property
    def clock(self) -> Clock:
        return self.deps.clock

    @property
    def policy(self) -> Policy:
        return self.deps.policy

    @property
    def client(self) -> WebClient:
        return self.deps.client

    @property
    def access(self) -> AccessProvider:
        return self.deps.access

    @property
    def audit_channels(self) -> AuditChannels:
        return self.deps.audit_channels

    @property
    def leases(self) -> LeaseKeeper:
        return self.deps.leases

    @property
    def inflight(self) -> InFlight:
        return self.queue.inflight

    # -- entry points -------------------------------------------------------------------------

    def deliver(self, event_id: str, *, queue_follow_ups: bool = False) -> BreakGlassEvent | None:
        """Deliver what `event_id` owes, then run the follow-ups. Returns the event as stored afterwards
        (None if it does not exist). Never sends without holding the lease; never raises for Slack.
        `queue_follow_ups` (post-ack deliveries): the follow-ups go to the back of the delivery queue, so
        under a burst every queued audit message is sent before the App Home refreshes."""
        lease = self.new_leases.take(event_id)
        event: BreakGlassEvent | None = None
        for _ in range(4):
            lease = lease or self._claim(event_id)
            if lease is None:
                break  # nothing owed now, or another process holds the lease
            event, done, gave_way = self._send_owed(event_id, lease)
            lease = None
            if gave_way is not None and self.queue.put(Delivery(event_id, since=gave_way.since)):
                return event  # queued again behind the root it gave way to (its follow-ups come then)
            if done:
                break
        if event is None:  # nothing was delivered here: follow-ups still see the change as stored
            try:
                event = self.deps.store.get(event_id)
            except EventNotFound:
                return None
        if not (queue_follow_ups and self.queue.put((self._follow_up, (event,)))):
            self._follow_up(event)
        return event

    def deliver_owed(self, limit: int = 100) -> int:
        """Retry every owed delivery that is due (the sweep and Lambda's lazy listener). Returns events tried."""
        try:  # notices (refusals, drift, audit-channel episodes) owed to the audit feed's sinks
            self.deps.audit_feed.deliver_notices(self.deps.clock.now())
        except StoreError as exc:
            log.warning("audit feed notices failed: %s", exc, extra={"action": "audit_feed"})
        owed = self.deps.store.list_owed(now=self.deps.clock.now(), limit=limit)
        for event in owed:
            try:
                self.deliver(event.id)
            except StoreError as exc:
                log.warning("outbox retry failed: %s", exc, extra={"event_id": event.id, "action": "outbox"})
        return len(owed)

    def deliver_task(self, name: str, send: Callable[[], None], *, done_for: timedelta) -> bool:
        """A named owed task outside any event (the daily review reminder), delivered once across replicas
        and retried until it is: claim its lease, send (Slack retries bounded by the lease), then mark it
        done for `done_for`. On failure the lease runs out and the next call retries. True: sent now."""
        store, clock = self.deps.store, self.deps.clock
        now = clock.now()
        if not store.claim(name, now=now, hold=LEASE):
            return False  # done already, or another replica is on it
        lease = Lease(until=now + LEASE, attempts=0)
        try:
            with (
                bounded_by(lease, clock),
                self.deps.leases.keeping(lease, claim_renewal(store, clock, name, lease)),
            ):
                send()
        except SLACK_ERRORS as exc:
            log.warning("task %s failed, will retry: %s", name, describe(exc), extra={"action": name})
            return False
        store.finish_claim(name, until=now + done_for)
        return True

    def deliver_tasks(self, limit: int = 100) -> list[OwedTask]:
        """Deliver the owed tasks outside any event that are due (store.tasks, e.g. a drift announcement),
        each once across replicas (its claim) through its handler, then mark it finished. A failed task stays
        owed for the next call. Returns the tasks delivered now."""
        delivered: list[OwedTask] = []
        for task in self.deps.store.list_tasks(now=self.deps.clock.now(), limit=limit):
            step = self.handlers.tasks[task.kind]

            def send(task: OwedTask = task, step: TaskStep = step) -> None:
                step.send(self.deps, task)
                self.deps.store.finish_task(task.name, now=self.deps.clock.now())
                delivered.append(task)

            try:
                self.deliver_task(f"task:{task.name}", send, done_for=LEASE)
            except (DeliveryFailed, StoreError) as exc:
                log.warning(
                    "task %s failed, will retry: %s", task.name, describe(exc), extra={"action": "task"}
                )
        return delivered

    def shutdown(self, timeout: float = 20.0) -> None:
        """Let queued deliveries finish (up to `timeout`), stop the delivery workers and the lease keeper:
        leases still held here then run out within LEASE and another process takes their steps over."""
        deadline = time.monotonic() + timeout
        self.inflight.wait_idle(timeout)
        self.queue.close(len(self._workers))
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.deps.leases.stop(max(0.0, deadline - time.monotonic()))

    # -- the steps ----------------------------------------------------------------------------------

    def _work(self) -> None:
        """A delivery worker: deliver what the post-ack queue holds (roots first, bot/delivery/queue.py)."""
        returning = False  # the last delivery gave way to a queued root: back for it
        while (work := self.queue.get(returning=returning)) is not None:
            returning = False
            try:
                if isinstance(work, Delivery):
                    with working(WorkerTurn(self.queue, root=work.root, since=work.since)) as turn:
                        try:
                            self.deliver(work.event_id, queue_follow_ups=True)
                        except Exception:
                            log.exception(
                                "post-ack delivery failed; the sweep will retry",
                                extra={"event_id": work.event_id},
                            )
                    returning = turn.gave_way
                else:
                    func, args = work
                    func(*args)
            finally:
                self.inflight.exit()

    def _follow_up(self, event: BreakGlassEvent, queued: bool = False) -> None:
        for follow_up in self.follow_ups:
            try:
                follow_up(event)
            except Exception:  # a follow-up (e.g. an App Home refresh) must never break delivery
                log.exception("follow-up after delivery failed", extra={"event_id": event.id})

    def _claim(self, event_id: str) -> Lease | None:
        """Take the lease with a conditional write, if anything is owed and nobody holds it."""
        now = self.deps.clock.now()
        taken: list[Lease] = []

        def claim(ev: BreakGlassEvent) -> BreakGlassEvent:
            if not any(entry.due(now) for entry in ev.outbox) or (
                ev.outbox_next_at is not None and ev.outbox_next_at > now and ev.outbox_attempts > 0
            ):
                raise _NothingToDo
            lease = Lease(until=now + LEASE, attempts=ev.outbox_attempts + 1)
            taken[:] = [lease]
            return ev.updated(outbox_next_at=lease.until, outbox_attempts=lease.attempts, outbox_leased=True)

        try:
            mutate(self.deps.store, event_id, claim, attempts=3)
        except (_NothingToDo, ConcurrentModification, EventNotFound):
            return None
        return taken[0] if taken else None

    def _send_owed(self, event_id: str, lease: Lease) -> tuple[BreakGlassEvent | None, bool, GaveWay | None]:
        """Send owed entries one by one, re-reading before each, while the lease is ours; then record.
        Returns (event, done, gave_way): done is False when more became owed meanwhile and is due now;
        gave_way: a thread reply gave way to a queued root message (bot/delivery/precedence.py), so the
        delivery stopped there, recorded what it sent and left the rest due now, unleased."""
        sent: list[tuple[OutboxEntry, int]] = []  # (entry, version of the event it rendered)
        failed: list[OutboxEntry] = []  # skipped for the rest of this delivery, retried after the backoff
        learned: list[Fields] = []  # what each send returned, recorded with it (BreakGlassEvent.recorded)
        failure: Exception | None = None  # the first failure (for the log)
        transient = False  # a failure other than a broken audit channel: exponential backoff
        broken = False  # the audit channel refused a send for good: its other steps are not tried now
        lost = False
        gave_way: GaveWay | None = None
        with (
            bounded_by(lease, self.deps.clock),
            self.deps.leases.keeping(lease, event_renewal(self.deps.store, self.deps.clock, event_id, lease)),
        ):
            for _ in range(MAX_SENDS):
                try:
                    event = self.deps.store.get(event_id)
                except EventNotFound:
                    return None, True, None
                left = lease.expires_in(self.deps.clock.now())
                if not lease.held_in(event) or left < SEND_MARGIN.total_seconds():
                    lost = True  # someone else took over (or we ran out of time): stop sending
                    break
                event = event.recorded(*learned)
                entry = next_entry(
                    event,
                    [e for e, _ in sent] + failed,
                    self.deps.clock.now(),
                    self.handlers,
                    skip_audit=broken,
                )
                if entry is None:
                    break
                try:
                    with may_give_way(entry.kind in self.handlers.needs_audit_root):
                        learned.append(self._send(entry, event))
                except GaveWay as exc:  # nothing of this step was sent: it stays owed, queued again
                    gave_way = exc
                    break
                except AuditChannelBroken as exc:
                    failure, broken = failure or exc, True
                    failed.append(entry)
                    owe_fallback(self.deps.store, event_id, lease, self.handlers.audit_channel_kinds)
                except (*SLACK_ERRORS, DeliveryFailed, DirectoryUnavailable) as exc:
                    failure, transient = failure or exc, True
                    failed.append(entry)
                else:
                    sent.append((entry, event.version))
        if lost and not sent:  # nothing sent: a fresh claim decides (it fails while someone else holds it)
            log.info("delivery lease lost, stopping", extra={"event_id": event_id, "action": "deliver"})
            return None, False, None
        now = self.deps.clock.now()

        def record(ev: BreakGlassEvent) -> BreakGlassEvent:
            ev = ev.recorded(*learned)
            ev = ev.with_outbox(remove=satisfied(ev.outbox, sent, now, self.handlers.renders_state))
            ev = self.deps.audit_feed.owe(ev)  # a record a sink lacks: owed before the outbox can empty
            if not ev.outbox or not lease.held_in(ev):
                return ev  # done, or another process holds the lease now: leave it alone
            if transient or lost:
                return ev.updated(outbox_next_at=now + backoff(ev.outbox_attempts), outbox_leased=False)
            if gave_way is not None:  # due now, for whoever claims it next (this worker queued it again)
                return ev.updated(outbox_next_at=now, outbox_attempts=0, outbox_leased=False)
            if broken:  # only the broken audit channel is left: look again every AUDIT_RECHECK
                recheck = now + AUDIT_RECHECK * random.uniform(0.8, 1.2)
                return ev.updated(outbox_next_at=recheck, outbox_leased=False)
            # more became owed meanwhile: due now
            return ev.updated(outbox_next_at=now, outbox_attempts=0, outbox_leased=False)

        result = mutate(self.deps.store, event_id, record)
        if failure is not None and not transient:  # the broken channel logged its ERROR once (AuditChannels)
            log.info(
                "audit channel still broken: %s", failure, extra={"event_id": event_id, "action": "announce"}
            )
        elif failure is not None:
            log.warning(
                "delivery failed, will retry: %s",
                describe(failure),
                extra={
                    "event_id": event_id,
                    "action": "announce",
                    "outcome": "retry",
                    "attempt": lease.attempts,
                },
            )
        due_now = any(entry.due(self.deps.clock.now()) for entry in result.outbox)
        return result, failure is not None or lost or not due_now, gave_way

    def _send(self, entry: OutboxEntry, event: BreakGlassEvent) -> Fields:
        """Send one entry through its handler. A send to the audit channel that Slack refuses for good
        raises AuditChannelBroken, after joining the channel and sending again where that repairs it."""
        handler = self.handlers[entry.kind].send
        if entry.kind not in self.handlers.audit_channel_kinds or not event.audit_channel:
            return handler(self.deps, event)
        channel = event.audit_channel
        try:
            try:
                fields = handler(self.deps, event)
            except SlackApiError as exc:
                if slack_error(exc) != "not_in_channel" or not self._join(channel):
                    raise
                fields = handler(self.deps, event)
        except SlackApiError as exc:
            error = slack_error(exc)
            if error not in AUDIT_CHANNEL_ERRORS:
                raise
            self.deps.audit_channels.failed(channel, error)
            raise AuditChannelBroken(channel, error) from exc
        self.deps.audit_channels.worked(channel)
        return fields

    def _join(self, channel: str) -> bool:
        """Join a public audit channel the bot was removed from (`channels:join`). True if it is in now."""
        try:
            self.deps.client.conversations_join(channel=channel)
        except SLACK_ERRORS as exc:
            log.warning(
                "could not join audit channel %s again: %s",
                channel,
                describe(exc),
                extra={"action": "audit_channel", "outcome": "join_failed", "channel": channel},
            )
            return False
        log.warning(
            "the bot had been removed from audit channel %s; it joined it again",
            channel,
            extra={"action": "audit_channel", "outcome": "joined", "channel": channel},
        )
        return True


def next_entry(
    event: BreakGlassEvent,
    done: list[OutboxEntry],
    now: datetime,
    handlers: Registry,
    *,
    skip_audit: bool = False,
) -> OutboxEntry | None:
    """The next entry to send, due and not among `done` (sent or failed in this delivery): the root audit
    message first; the steps that need it wait while it is owed; with `skip_audit`, no audit-channel step."""
    pending = [e for e in event.outbox if e not in done and e.due(now)]
    if skip_audit:
        pending = [e for e in pending if e.kind not in handlers.audit_channel_kinds]
    first = [e for e in pending if e.kind is OutboxKind.AUDIT_POST]
    if event.audit_ts is None and event.owes(OutboxKind.AUDIT_POST):
        pending = [e for e in pending if e.kind not in handlers.needs_audit_root]
    return next(iter(first or pending), None)


def satisfied(
    outbox: tuple[OutboxEntry, ...],
    sent: list[tuple[OutboxEntry, int]],
    now: datetime,
    renders_state: Collection[OutboxKind],
) -> list[OutboxEntry]:
    """Entries of `outbox` that the sends satisfied: each sent entry, and for kinds that render the whole
    event, every entry of that kind due now and owed at or before the rendered version (never a later
    one, nor one owed for later)."""
    done = {entry for entry, _ in sent}
    for entry, rendered in sent:
        if entry.kind in renders_state:
            done |= {e for e in outbox if e.kind is entry.kind and e.version <= rendered and e.due(now)}
    return [e for e in outbox if e in done]
