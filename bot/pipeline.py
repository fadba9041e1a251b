"""The delivery pipeline: everything that happens after a change is stored, from one place.

Every writer of a change (Slack listeners, the scheduler's warning and expiry, the sweep, `breakglass-admin
close`, Lambda's lazy listener and minute sweep) records the owed steps in the event's outbox in the *same*
store write as the change, then hands the event id to `Pipeline.deliver(event_id)` (or, right after a Slack
ack, `Pipeline.after_ack(event_id)`, which queues that same call). Delivery reads top to bottom:

  1. claim: a conditional write takes the event's delivery lease (`outbox_next_at = now + LEASE`); a lost
     claim means another process holds it. (A new invocation is created already holding its lease, see
     `hold_new`, so the hot path needs no extra write.)
  2. re-read, then send the first owed entry, through its handler in `HANDLERS`, rendering the event as
     stored *now* — never an in-memory copy. Before each send the lease must still be ours with at least
     `SEND_MARGIN` left; Slack's 429 retries inside a send are bounded by the lease left
     (`LeaseBoundedRateLimitRetryHandler`). A delivery that finds its lease gone stops.
  3. record: one conditional read-modify-write removes exactly the entries sent (kind and version; an
     `audit_update` rendered at version V satisfies every `audit_update` owed at <= V, never a later one)
     and, on failure, sets an exponential backoff; the sweep (`deliver_owed`) retries what stays owed.
  4. follow-ups: refresh the invoker's App Home and (re)track the event in the scheduler (`follow_ups`).

A root audit message carries Slack message metadata (`breakglass_event`, with the event id). Before
re-posting a root message after an unknown outcome (a connection dropped after Slack accepted it) the
pipeline looks for it in the audit channel's recent history and records it instead of posting twice.

Post-ack: one mechanism, `after_ack`, which queues `deliver` on a few worker threads. On Lambda a process
cannot run threads after returning its response, so there `after_ack` does nothing and a Bolt lazy listener
(run by Bolt in a second invocation) calls `deliver_owed`, which calls the same `deliver`.

Adding an outbox kind (e.g. an AWS access grant or revoke, an activity digest, an audit-channel fallback):
  1. add a member to `store.model.OutboxKind`;
  2. write `def handler(pipeline: Pipeline, event: BreakGlassEvent) -> Fields` (send it; return event fields
     to record, usually `{}`; raise on failure: it stays owed and is retried with backoff) and register it in
     `HANDLERS` below;
  3. have the use case owe it: `event.with_outbox(OutboxKind.NEW_KIND)` in the write that makes it owed
     (`Deferred(kind, not_before)` owes it for later: the entry is not sent, and the stores do not list
     the event as owed, before that time; the other entries are sent meanwhile).
"""

from __future__ import annotations

import contextvars
import logging
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot import blocks, evidence
from bot.clock import Clock
from bot.durations import format_duration
from bot.policy import Policy
from store import BreakGlassEvent, ConcurrentModification, EventNotFound, Store, StoreError, mutate
from store.model import OutboxEntry, OutboxKind

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)
# Never start a send with less than this left on the lease: a send (client timeout 10 s, connection and
# 5xx retries of a few seconds) then always ends inside the lease.
SEND_MARGIN = timedelta(seconds=45)
MAX_BACKOFF = timedelta(minutes=5)
MAX_SENDS = 50  # per delivery; the rest waits for the next one
SLACK_ERRORS = (SlackApiError, SlackClientError, OSError)
METADATA_EVENT_TYPE = "breakglass_event"
HISTORY_LOOKBACK = 200  # messages of the audit channel searched for a root message of unknown outcome

Fields = dict[str, Any]
Handler = Callable[["Pipeline", BreakGlassEvent], Fields]
# Kinds whose message renders the whole event: one send at version V satisfies every entry owed at <= V
# (and due: an entry owed for later is kept). The activity digest: one gather satisfies every gather due.
RENDERS_STATE = frozenset({OutboxKind.AUDIT_UPDATE, OutboxKind.ACTIVITY_DIGEST})


class DeliveryFailed(Exception):
    pass


@dataclass(frozen=True)
class Lease:
    """A delivery lease as written in the store: it is ours while the stored event still shows it."""

    until: datetime
    attempts: int

    def held_in(self, event: BreakGlassEvent) -> bool:
        return event.outbox_next_at == self.until and event.outbox_attempts == self.attempts


def backoff(attempts: int) -> timedelta:
    """2 s, 4 s, 8 s … capped at 5 minutes, with ±20 % jitter."""
    base = min(MAX_BACKOFF.total_seconds(), 2.0 ** max(1, attempts))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


# The lease time left (seconds) of the delivery running in this thread, for the retry handler below.
_time_left: contextvars.ContextVar[Callable[[], float] | None] = contextvars.ContextVar(
    "breakglass_lease_time_left", default=None
)


def lease_time_left() -> float | None:
    """Seconds left on the lease of the delivery running in this thread (None outside a delivery)."""
    time_left = _time_left.get()
    return None if time_left is None else time_left()


class LeaseBoundedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler, except that inside a delivery it never sleeps past the delivery's lease
    (minus SEND_MARGIN): such a 429 fails the send, which stays owed and is retried after a backoff."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        time_left = _time_left.get()
        if time_left is None or response is None:
            return True
        retry_after = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), ["1"])
        try:
            wait = float(retry_after[0] if isinstance(retry_after, list) else retry_after) + 1
        except ValueError:
            wait = 2.0
        return wait < time_left() - SEND_MARGIN.total_seconds()


class DeliveryConnectionErrorRetryHandler(ConnectionErrorRetryHandler):
    """slack_sdk's connection-error handler, except that inside a delivery it never re-sends a
    chat.postMessage: the first request may have been accepted before the connection dropped, so
    the post stays owed and the next attempt first looks for it (root audit message: by its metadata)."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if _time_left.get() is not None and request.url.endswith("chat.postMessage"):
            return False
        return super()._can_retry(state=state, request=request, response=response, error=error)


class InFlight:
    """Counts post-ack deliveries still running, so shutdown (and tests) can wait for them."""

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


class Pipeline:
    def __init__(
        self,
        *,
        store: Store,
        client: WebClient,
        policy: Policy,
        clock: Clock,
        post_ack_threads: bool = True,
        workers: int = 4,
    ) -> None:
        self.store = store
        self.client = client
        self.policy = policy
        self.clock = clock
        # Run after every delivery with the event as stored (App Home refresh, scheduler tracking).
        self.follow_ups: list[Callable[[BreakGlassEvent], None]] = []
        self.post_ack_threads = post_ack_threads
        self.inflight = InFlight()
        self._workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="delivery")
        self._held: dict[str, Lease] = {}  # new events created holding their lease, not yet delivered
        self._held_lock = threading.Lock()
        # Keyword arguments for bot.access.activity.gather (tests inject its sleep and rate limiters).
        self.activity_options: dict[str, Any] = {}

    # -- entry points -------------------------------------------------------------------------

    def hold_new(self, event: BreakGlassEvent) -> BreakGlassEvent:
        """A new event, about to be created, holding its delivery lease (for `after_ack` in this process)."""
        if not self.post_ack_threads:
            return event  # Lambda: the lazy listener claims it like the sweep does
        lease = Lease(until=event.created_at + LEASE, attempts=event.outbox_attempts + 1)
        with self._held_lock:
            if len(self._held) > 10_000:  # creations that failed (e.g. stacked access) are never delivered
                self._held.clear()
            self._held[event.id] = lease
        return event.updated(outbox_next_at=lease.until, outbox_attempts=lease.attempts)

    def after_ack(self, event_id: str) -> None:
        """Deliver `event_id` after Slack has its answer: queued, not awaited (`inflight.wait_idle`).
        If the queue is lost (crash), nothing is: the steps are owed in the store and the sweep delivers."""
        if not self.post_ack_threads:
            return  # Lambda: the lazy listener delivers (module docstring)
        self.inflight.enter()
        try:
            self._workers.submit(self._deliver_queued, event_id)
        except RuntimeError:  # shutting down: the sweep of the next process delivers
            self.inflight.exit()

    def deliver(self, event_id: str) -> BreakGlassEvent | None:
        """Deliver what `event_id` owes, then run the follow-ups. Returns the event as stored afterwards
        (None if it does not exist). Never sends without holding the lease; never raises for Slack."""
        with self._held_lock:
            lease = self._held.pop(event_id, None)
        event: BreakGlassEvent | None = None
        for _ in range(4):
            lease = lease or self._claim(event_id)
            if lease is None:
                break  # nothing owed now, or another process holds the lease
            event, done = self._send_owed(event_id, lease)
            lease = None
            if done:
                break
        if event is None:  # nothing was delivered here: follow-ups still see the change as stored
            try:
                event = self.store.get(event_id)
            except EventNotFound:
                return None
        for follow_up in self.follow_ups:
            try:
                follow_up(event)
            except Exception:  # a follow-up (e.g. an App Home refresh) must never break delivery
                log.exception("follow-up after delivery failed", extra={"event_id": event_id})
        return event

    def deliver_owed(self, limit: int = 100) -> int:
        """Retry every owed delivery that is due (the sweep and Lambda's lazy listener). Returns events tried."""
        owed = self.store.list_owed(now=self.clock.now(), limit=limit)
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
        now = self.clock.now()
        if not self.store.claim(name, now=now, hold=LEASE):
            return False  # done already, or another replica is on it
        lease = Lease(until=now + LEASE, attempts=0)
        try:
            with self._bounded_by(lease):
                send()
        except SLACK_ERRORS as exc:
            log.warning("task %s failed, will retry: %s", name, _describe(exc), extra={"action": name})
            return False
        self.store.finish_claim(name, until=now + done_for)
        return True

    def shutdown(self, timeout: float = 20.0) -> None:
        self.inflight.wait_idle(timeout)
        self._workers.shutdown(wait=True)

    # -- the steps ----------------------------------------------------------------------------------

    def _deliver_queued(self, event_id: str) -> None:
        try:
            self.deliver(event_id)
        except Exception:
            log.exception("post-ack delivery failed; the sweep will retry", extra={"event_id": event_id})
        finally:
            self.inflight.exit()

    def _claim(self, event_id: str) -> Lease | None:
        """Take the lease with a conditional write, if anything is owed and nobody holds it."""
        now = self.clock.now()
        taken: list[Lease] = []

        def claim(ev: BreakGlassEvent) -> BreakGlassEvent:
            if not any(entry.due(now) for entry in ev.outbox) or (
                ev.outbox_next_at is not None and ev.outbox_next_at > now and ev.outbox_attempts > 0
            ):
                raise _NothingToDo
            lease = Lease(until=now + LEASE, attempts=ev.outbox_attempts + 1)
            taken[:] = [lease]
            return ev.updated(outbox_next_at=lease.until, outbox_attempts=lease.attempts)

        try:
            mutate(self.store, event_id, claim, attempts=3)
        except (_NothingToDo, ConcurrentModification, EventNotFound):
            return None
        return taken[0] if taken else None

    def _time_left(self, lease: Lease) -> float:
        return (lease.until - self.clock.now()).total_seconds()

    @contextmanager
    def _bounded_by(self, lease: Lease) -> Iterator[None]:
        token = _time_left.set(lambda: self._time_left(lease))
        try:
            yield
        finally:
            _time_left.reset(token)

    def _send_owed(self, event_id: str, lease: Lease) -> tuple[BreakGlassEvent | None, bool]:
        """Send owed entries one by one, re-reading before each, while the lease is ours; then record.
        Returns (event, done): done is False when more became owed meanwhile and is due now."""
        sent: list[tuple[OutboxEntry, int]] = []  # (entry, version of the event it rendered)
        fields: Fields = {}
        failure: Exception | None = None
        lost = False
        with self._bounded_by(lease):
            for _ in range(MAX_SENDS):
                try:
                    event = self.store.get(event_id)
                except EventNotFound:
                    return None, True
                if not lease.held_in(event) or self._time_left(lease) < SEND_MARGIN.total_seconds():
                    lost = True  # someone else took over (or we ran out of time): stop sending
                    break
                event = event.updated(**{k: v for k, v in fields.items() if getattr(event, k) is None})
                entry = _next(event, [e for e, _ in sent], self.clock.now())
                if entry is None:
                    break
                try:
                    fields |= HANDLERS[entry.kind](self, event)
                except (*SLACK_ERRORS, DeliveryFailed) as exc:
                    failure = exc
                    break
                sent.append((entry, event.version))
        if lost and not sent:  # nothing sent: a fresh claim decides (it fails while someone else holds it)
            log.info("delivery lease lost, stopping", extra={"event_id": event_id, "action": "deliver"})
            return None, False
        now = self.clock.now()

        def record(ev: BreakGlassEvent) -> BreakGlassEvent:
            ev = ev.updated(**{k: v for k, v in fields.items() if getattr(ev, k) is None})
            ev = ev.with_outbox(remove=_satisfied(ev.outbox, sent, now))
            if not ev.outbox or not lease.held_in(ev):
                return ev  # done, or another process holds the lease now: leave it alone
            if failure is not None or lost:
                return ev.updated(outbox_next_at=now + backoff(ev.outbox_attempts))
            return ev.updated(outbox_next_at=now, outbox_attempts=0)  # more became owed meanwhile: due now

        result = mutate(self.store, event_id, record)
        if failure is not None:
            log.warning(
                "delivery failed, will retry: %s",
                _describe(failure),
                extra={
                    "event_id": event_id,
                    "action": "announce",
                    "outcome": "retry",
                    "attempt": lease.attempts,
                },
            )
        due_now = any(entry.due(self.clock.now()) for entry in result.outbox)
        return result, failure is not None or lost or not due_now

    # -- helpers for handlers --------------------------------------------------------------------------

    def audit_location(self, event: BreakGlassEvent) -> tuple[str, str]:
        if not event.audit_channel or not event.audit_ts:
            raise DeliveryFailed("the audit message has not been posted yet")
        return event.audit_channel, event.audit_ts

    def find_audit_message(self, event: BreakGlassEvent) -> Fields | None:
        """The root audit message of `event` if an earlier attempt posted it (found by its metadata)."""
        assert event.audit_channel
        response = self.client.conversations_history(
            channel=event.audit_channel,
            oldest=f"{event.created_at.timestamp() - 60:.6f}",
            limit=HISTORY_LOOKBACK,
            include_all_metadata=True,
        )
        for message in response.get("messages") or []:
            metadata = message.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if metadata.get("event_type") == METADATA_EVENT_TYPE and payload.get("event_id") == event.id:
                return {"audit_channel": event.audit_channel, "audit_ts": message["ts"]}
        return None

    def remaining(self, event: BreakGlassEvent) -> timedelta:
        """Time left on the access, rounded to whole minutes from one minute up (for warnings)."""
        left = max(event.expires_at - self.clock.now(), timedelta(0))
        if left >= timedelta(minutes=1):
            return timedelta(seconds=round(left.total_seconds() / 60) * 60)
        return left


class _NothingToDo(Exception):
    pass


def _next(event: BreakGlassEvent, sent: list[OutboxEntry], now: datetime) -> OutboxEntry | None:
    """The next entry to send (due, not sent yet): the root audit message first (thread replies need its ts)."""
    pending = [e for e in event.outbox if e not in sent and e.due(now)]
    first = [e for e in pending if e.kind is OutboxKind.AUDIT_POST]
    return (first or pending or [None])[0]


def _satisfied(
    outbox: tuple[OutboxEntry, ...], sent: list[tuple[OutboxEntry, int]], now: datetime
) -> list[OutboxEntry]:
    """Entries of `outbox` that the sends satisfied: each sent entry, and for kinds that render the whole
    event, every entry of that kind due now and owed at or before the rendered version (never a later
    one, nor one owed for later)."""
    done = {entry for entry, _ in sent}
    for entry, rendered in sent:
        if entry.kind in RENDERS_STATE:
            done |= {e for e in outbox if e.kind is entry.kind and e.version <= rendered and e.due(now)}
    return [e for e in outbox if e in done]


def _describe(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return f"Slack answered {exc.response.status_code} {exc.response.get('error')}"
    return type(exc).__name__ + (f": {exc}" if isinstance(exc, DeliveryFailed) else "")


# -- handlers: what each kind sends ------------------------------------------------------------------


def post_audit_message(pipeline: Pipeline, event: BreakGlassEvent) -> Fields:
    if event.audit_ts:
        return {}  # already posted (recorded by an earlier attempt)
    if not event.audit_channel:
        raise DeliveryFailed("no audit channel configured")
    if event.outbox_attempts > 1:  # an earlier attempt may have posted it without recording it
        found = pipeline.find_audit_message(event)
        if found is not None:
            return found
    response = pipeline.client.chat_postMessage(
        channel=event.audit_channel,
        text=blocks.audit_text(event),
        blocks=blocks.audit_message(event),
        metadata={"event_type": METADATA_EVENT_TYPE, "event_payload": {"event_id": event.id}},
    )
    return {"audit_channel": response["channel"], "audit_ts": response["ts"]}


def update_audit_message(pipeline: Pipeline, event: BreakGlassEvent) -> Fields:
    channel, ts = pipeline.audit_location(event)
    pipeline.client.chat_update(
        channel=channel, ts=ts, text=blocks.audit_text(event), blocks=blocks.audit_message(event)
    )
    return {}


def direct_message(build: Callable[[Pipeline, BreakGlassEvent], tuple[str, blocks.Blocks]]) -> Handler:
    def send(pipeline: Pipeline, event: BreakGlassEvent) -> Fields:
        text, body = build(pipeline, event)
        pipeline.client.chat_postMessage(channel=event.slack_user_id, text=text, blocks=body)
        return {}

    return send


def thread_reply(build: Callable[[Pipeline, BreakGlassEvent], tuple[str, blocks.Blocks]]) -> Handler:
    def send(pipeline: Pipeline, event: BreakGlassEvent) -> Fields:
        channel, ts = pipeline.audit_location(event)
        text, body = build(pipeline, event)
        pipeline.client.chat_postMessage(channel=channel, thread_ts=ts, text=text, blocks=body)
        return {}

    return send


HANDLERS: dict[OutboxKind, Handler] = {
    OutboxKind.AUDIT_POST: post_audit_message,
    OutboxKind.AUDIT_UPDATE: update_audit_message,
    OutboxKind.DM_INVOKED: direct_message(lambda p, e: blocks.dm_invoked(e)),
    OutboxKind.ESCALATION: thread_reply(
        lambda p, e: blocks.thread_escalation(
            e, list(p.policy.security), format_duration(p.policy.rate_limits.window)
        )
    ),
    OutboxKind.WARN_THREAD: thread_reply(lambda p, e: blocks.thread_warning(e, p.remaining(e))),
    OutboxKind.WARN_DM: direct_message(lambda p, e: blocks.dm_warning(e, p.remaining(e))),
    OutboxKind.CLOSE_THREAD: thread_reply(lambda p, e: blocks.thread_closed(e)),
    OutboxKind.CLOSE_DM: direct_message(lambda p, e: blocks.dm_closed(e)),
    OutboxKind.EXPIRE_THREAD: thread_reply(lambda p, e: blocks.thread_expired(e)),
    OutboxKind.EXPIRE_DM: direct_message(lambda p, e: blocks.dm_expired(e)),
    OutboxKind.REVIEW_THREAD: thread_reply(lambda p, e: blocks.thread_reviewed(e)),
    OutboxKind.ACTIVITY_DIGEST: evidence.deliver_digest,
}
assert set(HANDLERS) == set(OutboxKind), "every outbox kind needs a handler"
