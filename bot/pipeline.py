"""The delivery pipeline: everything that happens after a change is stored, from one place.

Every writer of a change (Slack listeners, the scheduler's warning and expiry, the sweep, `breakglass-admin
close`, Lambda's lazy listener and minute sweep) records the owed steps in the event's outbox in the *same*
store write as the change, then hands the event id to `Pipeline.deliver(event_id)` (or, right after a Slack
ack, `Pipeline.after_ack(event_id)`, which queues that same call). Delivery reads top to bottom:

  1. claim: a conditional write takes the event's delivery lease (`outbox_next_at = now + LEASE`); a lost
     claim means another process holds it. (A new invocation is created already holding its lease, see
     `hold_new`, so the hot path needs no extra write.) The lease is short (seconds) and renewed by this
     process's `LeaseKeeper` while the delivery works (bot/delivery/lease.py), so a dead holder's lease
     runs out within `LEASE` and the next sweep takes its steps over.
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

The audit channel can break for good (archived, deleted, the bot removed from it): Slack then answers a
send to it with one of `AUDIT_CHANNEL_ERRORS`, which is not retried as if transient. Where the bot can
repair it (`not_in_channel` on a public channel) it joins (`conversations.join`) and sends again. Otherwise
(`_audit_channel_broken`) the event owes an `audit_fallback` at once: the event's audit message, sent to the
policy's `fallback_channel` and as a DM to every security member, saying the channel is broken. The audit
steps themselves stay owed and are tried again every `AUDIT_RECHECK`: once the channel works, the missed root
message (rendering the event as it is now) and its thread replies are posted there, so the channel ends up
complete. `AuditChannels` remembers broken channels in this process: one ERROR line per episode, one INFO
on recovery, and the `audit_channel` check of `/healthz` (not critical: restarting cannot fix it).

Every entry is sent independently: a failed entry is skipped for the rest of the delivery (and retried
with the rest after the backoff), and only the steps that need the root audit message (thread replies and
updates) wait for it. A failing audit post never holds back the invoker's DM, and a failing DM never holds
back the audit post.

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

import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot import access_steps, blocks, dm_steps, evidence, extend_steps
from bot.access import AccessProvider, NoneProvider
from bot.clock import Clock
from bot.delivery.errors import SLACK_ERRORS, AuditChannelBroken, DeliveryFailed, LeaseLost
from bot.delivery.lease import (
    LEASE,
    SEND_MARGIN,
    Lease,
    LeaseKeeper,
    bounded_by,
    current,
    lease_lost,
    lease_time_left,
)
from bot.directory import Directory
from bot.durations import format_duration
from bot.errors import DirectoryUnavailable
from bot.health import CheckResult
from bot.incidents import IncidentProvider, NoIncidents
from bot.incidents import notes as incident_notes
from bot.policy import Policy
from store import BreakGlassEvent, ConcurrentModification, EventNotFound, Store, StoreError, mutate
from store.model import OutboxEntry, OutboxKind

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(minutes=5)
MAX_SENDS = 50  # per delivery; the rest waits for the next one
METADATA_EVENT_TYPE = "breakglass_event"
HISTORY_LOOKBACK = 200  # messages of the audit channel searched for a root message of unknown outcome

Fields = dict[str, Any]
Handler = Callable[["Pipeline", BreakGlassEvent], Fields]
# Kinds whose message renders the whole event: one send at version V satisfies every entry owed at <= V
# (and due: an entry owed for later is kept). The activity digest: one gather satisfies every gather due.
RENDERS_STATE = frozenset({OutboxKind.AUDIT_UPDATE, OutboxKind.AUDIT_FALLBACK, OutboxKind.ACTIVITY_DIGEST})
# Kinds sent to the event's audit channel, and those of them that need its root message (its ts).
AUDIT_CHANNEL_KINDS = frozenset(
    {
        OutboxKind.AUDIT_POST,
        OutboxKind.AUDIT_UPDATE,
        OutboxKind.ESCALATION,
        OutboxKind.WARN_THREAD,
        OutboxKind.CLOSE_THREAD,
        OutboxKind.EXPIRE_THREAD,
        OutboxKind.REVIEW_THREAD,
        OutboxKind.GRANT_RECEIPT_THREAD,
        OutboxKind.REVOKE_RECEIPT_THREAD,
        OutboxKind.ACTIVITY_DIGEST,
    }
    | extend_steps.AUDIT_CHANNEL_KINDS
)
NEEDS_AUDIT_ROOT = AUDIT_CHANNEL_KINDS - {OutboxKind.AUDIT_POST}
# Slack's answers (chat.postMessage, chat.update, conversations.history) that say the channel itself refuses
# the bot, for good: retrying the same call cannot succeed until someone changes the channel.
AUDIT_CHANNEL_ERRORS = frozenset(
    {
        "channel_not_found",  # deleted, or private and the bot is not in it
        "not_in_channel",  # the bot was removed (a public channel is joined again, then posted to)
        "is_archived",
        "restricted_action",  # posting restricted by the workspace's settings
        "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel",
        "restricted_action_non_threadable_channel",
        "team_access_not_granted",  # a shared channel the workspace lost access to
        "ekm_access_denied",
    }
)
# Per recipient of an audit fallback: answers that mean this recipient can never receive it.
UNREACHABLE_RECIPIENT = AUDIT_CHANNEL_ERRORS | {"user_not_found", "user_disabled", "cannot_dm_bot"}
AUDIT_RECHECK = MAX_BACKOFF  # how often a broken audit channel is tried again


class AuditChannels:
    """Audit channels this process found broken: one ERROR line when a channel breaks (not one per retry),
    one INFO line when a send to it works again, and the `audit_channel` check of `/healthz`."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._broken: dict[str, tuple[str, datetime]] = {}  # channel -> (Slack's error, since)
        self._lock = threading.Lock()

    def failed(self, channel: str, error: str) -> None:
        with self._lock:
            new = channel not in self._broken
            if new or self._broken[channel][0] != error:
                self._broken[channel] = (error, self._broken.get(channel, (error, self.clock.now()))[1])
        if new:
            log.error(
                "audit channel %s is broken (Slack: %s): announcements go to the fallback channel and "
                "security by DM until it works again",
                channel,
                error,
                extra={"action": "audit_channel", "outcome": "broken", "channel": channel},
            )

    def worked(self, channel: str) -> None:
        with self._lock:
            was = self._broken.pop(channel, None)
        if was is not None:
            log.info(
                "audit channel %s works again (broken since %s: %s); missed announcements are posted there",
                channel,
                was[1].isoformat(),
                was[0],
                extra={"action": "audit_channel", "outcome": "recovered", "channel": channel},
            )

    def error(self, channel: str | None) -> str | None:
        """Slack's error if `channel` is known broken, else None."""
        with self._lock:
            broken = self._broken.get(channel or "")
        return broken[0] if broken else None

    def check(self) -> CheckResult:
        with self._lock:
            broken = dict(self._broken)
        if not broken:
            return CheckResult(True)
        return CheckResult(
            False,
            critical=False,  # restarting cannot fix an archived channel: 200 "degraded", alert on it
            detail={
                "broken": {
                    channel: {"error": error, "since": since.isoformat()}
                    for channel, (error, since) in sorted(broken.items())
                }
            },
        )


def backoff(attempts: int) -> timedelta:
    """2 s, 4 s, 8 s … capped at 5 minutes, with ±20 % jitter."""
    base = min(MAX_BACKOFF.total_seconds(), 2.0 ** max(1, attempts))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


class LeaseBoundedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler, except that inside a delivery it never sleeps past what the delivery may
    still hold its lease for (`MAX_HOLD`, minus SEND_MARGIN): such a 429 fails the send, which stays owed and
    is retried after a backoff. The lease is renewed during the sleep; if it is lost meanwhile (the store
    refused a renewal, another process took over), the retry is not sent (`LeaseLost`)."""

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
        time_left = lease_time_left()
        if time_left is None or response is None:
            return True
        retry_after = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), ["1"])
        try:
            wait = float(retry_after[0] if isinstance(retry_after, list) else retry_after) + 1
        except ValueError:
            wait = 2.0
        return wait < time_left - SEND_MARGIN.total_seconds()

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        super().prepare_for_next_attempt(state=state, request=request, response=response, error=error)
        if lease_lost():
            raise LeaseLost("the delivery lease was lost during Slack's Retry-After wait")


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
        if current.get() is not None and request.url.endswith("chat.postMessage"):
            return False
        return super()._can_retry(state=state, request=request, response=response, error=error)


class InFlight:
    """Counts post-ack work still running (deliveries, `SlackContext.after_response`), so shutdown (and
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


class Pipeline:
    def __init__(
        self,
        *,
        store: Store,
        client: WebClient,
        policy: Policy,
        clock: Clock,
        directory: Directory | None = None,
        post_ack_threads: bool = True,
        workers: int = 4,
        access: AccessProvider | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.policy = policy
        self.clock = clock
        # AWS access (the ACCESS_* kinds, bot/access_steps.py): who grants and revokes it.
        self.access: AccessProvider = access or NoneProvider(clock)
        self.incidents: IncidentProvider = NoIncidents()  # the incident tool (bot/incidents/notes.py)
        self.directory = directory or Directory(client)
        self.audit_channels = AuditChannels(clock)
        self.leases = LeaseKeeper()  # renews every lease this process holds (deliveries, assignment locks)
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
        self.leases.add(lease, self._renewal(event.id, lease))  # renewed while it waits for a worker
        return event.updated(outbox_next_at=lease.until, outbox_attempts=lease.attempts, outbox_leased=True)

    def after_ack(self, event_id: str) -> None:
        """Deliver `event_id` after Slack has its answer: queued, not awaited (`inflight.wait_idle`).
        If the queue is lost (crash), nothing is: the steps are owed in the store and the sweep delivers."""
        if not self.post_ack_threads:
            return  # Lambda: the lazy listener delivers (module docstring)
        self._queue(self._deliver_queued, event_id)  # shutting down: the next process's sweep delivers

    def _queue(self, work: Callable[..., None], *args: Any) -> bool:
        """Run `work(*args)` on the delivery workers, counted in flight until it returns."""
        self.inflight.enter()
        try:
            self._workers.submit(work, *args)
        except RuntimeError:  # shutting down
            self.inflight.exit()
            return False
        return True

    def deliver(self, event_id: str, *, queue_follow_ups: bool = False) -> BreakGlassEvent | None:
        """Deliver what `event_id` owes, then run the follow-ups. Returns the event as stored afterwards
        (None if it does not exist). Never sends without holding the lease; never raises for Slack.
        `queue_follow_ups` (post-ack deliveries): the follow-ups go to the back of the delivery queue, so
        under a burst every queued audit message is sent before the App Home refreshes."""
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
        if not (queue_follow_ups and self._queue(self._follow_up, event, True)):
            self._follow_up(event)
        return event

    def _follow_up(self, event: BreakGlassEvent, queued: bool = False) -> None:
        try:
            for follow_up in self.follow_ups:
                try:
                    follow_up(event)
                except Exception:  # a follow-up (e.g. an App Home refresh) must never break delivery
                    log.exception("follow-up after delivery failed", extra={"event_id": event.id})
        finally:
            if queued:
                self.inflight.exit()

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
            with bounded_by(lease, self.clock), self.leases.keeping(lease, self.claim_renewal(name, lease)):
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
            self.deliver(event_id, queue_follow_ups=True)
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
            return ev.updated(outbox_next_at=lease.until, outbox_attempts=lease.attempts, outbox_leased=True)

        try:
            mutate(self.store, event_id, claim, attempts=3)
        except (_NothingToDo, ConcurrentModification, EventNotFound):
            return None
        return taken[0] if taken else None

    def _renewal(self, event_id: str, lease: Lease) -> Callable[[], bool]:
        """The heartbeat of a delivery lease: extend it by LEASE if the stored event still shows it (a
        conditional write), else mark it lost. False: stop renewing (lost, past MAX_HOLD, never created)."""

        def renew() -> bool:
            now = self.clock.now()
            if lease.lost or now >= lease.deadline:
                return False
            until = now + LEASE
            lease.expect(until)

            def change(ev: BreakGlassEvent) -> BreakGlassEvent:
                if not lease.held_in(ev):
                    raise _NothingToDo
                return ev.updated(outbox_next_at=until)

            try:
                mutate(self.store, event_id, change, attempts=3)
            except _NothingToDo:
                lease.lose()
                return False
            except EventNotFound:  # `hold_new`: the event may not be stored yet (or its creation failed)
                return now < lease.until
            lease.renewed(until)
            return True

        return renew

    def claim_renewal(self, name: str, lease: Lease) -> Callable[[], bool]:
        """The heartbeat of a named claim (`Store.claim`) held with `lease`: extend it while it is ours."""

        def renew() -> bool:
            now = self.clock.now()
            if lease.lost or now >= lease.deadline:
                return False
            until = now + LEASE
            if not self.store.renew_claim(name, held=lease.until, until=until):
                lease.lose()
                return False
            lease.renewed(until)
            return True

        return renew

    def _send_owed(self, event_id: str, lease: Lease) -> tuple[BreakGlassEvent | None, bool]:
        """Send owed entries one by one, re-reading before each, while the lease is ours; then record.
        Returns (event, done): done is False when more became owed meanwhile and is due now."""
        sent: list[tuple[OutboxEntry, int]] = []  # (entry, version of the event it rendered)
        failed: list[OutboxEntry] = []  # skipped for the rest of this delivery, retried after the backoff
        learned: list[Fields] = []  # what each send returned, recorded with it (BreakGlassEvent.recorded)
        failure: Exception | None = None  # the first failure (for the log)
        transient = False  # a failure other than a broken audit channel: exponential backoff
        broken = False  # the audit channel refused a send for good: its other steps are not tried now
        lost = False
        with bounded_by(lease, self.clock), self.leases.keeping(lease, self._renewal(event_id, lease)):
            for _ in range(MAX_SENDS):
                try:
                    event = self.store.get(event_id)
                except EventNotFound:
                    return None, True
                left = lease.expires_in(self.clock.now())
                if not lease.held_in(event) or left < SEND_MARGIN.total_seconds():
                    lost = True  # someone else took over (or we ran out of time): stop sending
                    break
                event = event.recorded(*learned)
                entry = _next(event, [e for e, _ in sent] + failed, self.clock.now(), skip_audit=broken)
                if entry is None:
                    break
                try:
                    learned.append(self._send(entry, event))
                except AuditChannelBroken as exc:
                    failure, broken = failure or exc, True
                    failed.append(entry)
                    self._owe_fallback(event_id, lease)
                except (*SLACK_ERRORS, DeliveryFailed, DirectoryUnavailable) as exc:
                    failure, transient = failure or exc, True
                    failed.append(entry)
                else:
                    sent.append((entry, event.version))
        if lost and not sent:  # nothing sent: a fresh claim decides (it fails while someone else holds it)
            log.info("delivery lease lost, stopping", extra={"event_id": event_id, "action": "deliver"})
            return None, False
        now = self.clock.now()

        def record(ev: BreakGlassEvent) -> BreakGlassEvent:
            ev = ev.recorded(*learned)
            ev = ev.with_outbox(remove=_satisfied(ev.outbox, sent, now))
            if not ev.outbox or not lease.held_in(ev):
                return ev  # done, or another process holds the lease now: leave it alone
            if transient or lost:
                return ev.updated(outbox_next_at=now + backoff(ev.outbox_attempts), outbox_leased=False)
            if broken:  # only the broken audit channel is left: look again every AUDIT_RECHECK
                recheck = now + AUDIT_RECHECK * random.uniform(0.8, 1.2)
                return ev.updated(outbox_next_at=recheck, outbox_leased=False)
            # more became owed meanwhile: due now
            return ev.updated(outbox_next_at=now, outbox_attempts=0, outbox_leased=False)

        result = mutate(self.store, event_id, record)
        if failure is not None and not transient:  # the broken channel logged its ERROR once (AuditChannels)
            log.info(
                "audit channel still broken: %s", failure, extra={"event_id": event_id, "action": "announce"}
            )
        elif failure is not None:
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

    def _send(self, entry: OutboxEntry, event: BreakGlassEvent) -> Fields:
        """Send one entry through its handler. A send to the audit channel that Slack refuses for good
        raises AuditChannelBroken, after joining the channel and sending again where that repairs it."""
        handler = HANDLERS[entry.kind]
        if entry.kind not in AUDIT_CHANNEL_KINDS or not event.audit_channel:
            return handler(self, event)
        channel = event.audit_channel
        try:
            try:
                fields = handler(self, event)
            except SlackApiError as exc:
                if _slack_error(exc) != "not_in_channel" or not self._join(channel):
                    raise
                fields = handler(self, event)
        except SlackApiError as exc:
            error = _slack_error(exc)
            if error not in AUDIT_CHANNEL_ERRORS:
                raise
            self.audit_channels.failed(channel, error)
            raise AuditChannelBroken(channel, error) from exc
        self.audit_channels.worked(channel)
        return fields

    def _join(self, channel: str) -> bool:
        """Join a public audit channel the bot was removed from (`channels:join`). True if it is in now."""
        try:
            self.client.conversations_join(channel=channel)
        except SLACK_ERRORS as exc:
            log.warning(
                "could not join audit channel %s again: %s",
                channel,
                _describe(exc),
                extra={"action": "audit_channel", "outcome": "join_failed", "channel": channel},
            )
            return False
        log.warning(
            "the bot had been removed from audit channel %s; it joined it again",
            channel,
            extra={"action": "audit_channel", "outcome": "joined", "channel": channel},
        )
        return True

    def _owe_fallback(self, event_id: str, lease: Lease) -> None:
        """The audit channel is broken: owe an `audit_fallback` for the audit steps not yet announced
        another way (none again for the same steps at the next recheck; again after a new change)."""

        def change(ev: BreakGlassEvent) -> BreakGlassEvent | None:
            missed = max((e.version for e in ev.outbox if e.kind in AUDIT_CHANNEL_KINDS), default=0)
            if missed <= ev.audit_fallback_version or not lease.held_in(ev):
                return None
            return ev.with_outbox(OutboxKind.AUDIT_FALLBACK, version=missed).updated(
                audit_fallback_version=missed, audit_fallback_sent=()
            )

        try:
            mutate(self.store, event_id, change)
        except StoreError as exc:  # not owed now: the next recheck owes it (nothing was marked announced)
            log.warning("could not owe the audit fallback: %s", exc, extra={"event_id": event_id})

    def fallback_recipients(self) -> list[str]:
        """Where an audit fallback goes: the fallback channel, then every security member (by DM)."""
        members = sorted(self.directory.members(self.policy.security))
        return [c for c in [self.policy.fallback_channel] if c] + members

    def record_fallback_sent(self, event_id: str, recipient: str, version: int) -> None:
        """Record at once that `recipient` has the fallback of `version` (a retry never sends it twice)."""

        def change(ev: BreakGlassEvent) -> BreakGlassEvent | None:
            if ev.audit_fallback_version != version or recipient in ev.audit_fallback_sent:
                return None
            return ev.updated(audit_fallback_sent=(*ev.audit_fallback_sent, recipient))

        mutate(self.store, event_id, change)

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


def _next(
    event: BreakGlassEvent, done: list[OutboxEntry], now: datetime, *, skip_audit: bool = False
) -> OutboxEntry | None:
    """The next entry to send, due and not among `done` (sent or failed in this delivery): the root audit
    message first; the steps that need it wait while it is owed; with `skip_audit`, no audit-channel step."""
    pending = [e for e in event.outbox if e not in done and e.due(now)]
    if skip_audit:
        pending = [e for e in pending if e.kind not in AUDIT_CHANNEL_KINDS]
    first = [e for e in pending if e.kind is OutboxKind.AUDIT_POST]
    if event.audit_ts is None and event.owes(OutboxKind.AUDIT_POST):
        pending = [e for e in pending if e.kind not in NEEDS_AUDIT_ROOT]
    return next(iter(first or pending), None)


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


def _slack_error(exc: SlackApiError) -> str | None:
    return exc.response.get("error") if exc.response is not None else None


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
        if not event.slack_user_id:
            raise DeliveryFailed("the event has no Slack user to message")
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


def post_audit_fallback(pipeline: Pipeline, event: BreakGlassEvent) -> Fields:
    """The audit channel is broken: the event's audit message, saying so, to the fallback channel and to
    every security member by DM; each recipient is recorded as it is sent (never sent twice)."""
    error = pipeline.audit_channels.error(event.audit_channel) or "unknown"
    text, body = blocks.audit_fallback(event, event.audit_channel or "", error)
    recipients = pipeline.fallback_recipients()
    if not recipients:
        log.error(
            "audit channel %s is broken and nobody else can be told: set fallback_channel or security",
            event.audit_channel,
            extra={"event_id": event.id, "action": "audit_fallback", "outcome": "nobody"},
        )
    for recipient in recipients:
        if recipient in event.audit_fallback_sent:
            continue
        try:
            pipeline.client.chat_postMessage(channel=recipient, text=text, blocks=body)
        except SlackApiError as exc:
            if _slack_error(exc) not in UNREACHABLE_RECIPIENT:
                raise
            log.error(
                "audit fallback cannot reach %s (Slack: %s)",
                recipient,
                _slack_error(exc),
                extra={"event_id": event.id, "action": "audit_fallback", "outcome": "unreachable"},
            )
        pipeline.record_fallback_sent(event.id, recipient, event.audit_fallback_version)
    return {}


HANDLERS: dict[OutboxKind, Handler] = {
    OutboxKind.AUDIT_POST: post_audit_message,
    OutboxKind.AUDIT_UPDATE: update_audit_message,
    OutboxKind.ESCALATION: thread_reply(
        lambda p, e: blocks.thread_escalation(
            e, list(p.policy.security), format_duration(p.policy.rate_limits.window)
        )
    ),
    OutboxKind.WARN_THREAD: thread_reply(lambda p, e: blocks.thread_warning(e, p.remaining(e))),
    OutboxKind.CLOSE_THREAD: thread_reply(lambda p, e: blocks.thread_closed(e)),
    OutboxKind.CLOSE_DM: direct_message(lambda p, e: blocks.dm_closed(e)),
    OutboxKind.EXPIRE_THREAD: thread_reply(lambda p, e: blocks.thread_expired(e)),
    OutboxKind.EXPIRE_DM: direct_message(lambda p, e: blocks.dm_expired(e)),
    OutboxKind.REVIEW_THREAD: thread_reply(lambda p, e: blocks.thread_reviewed(e)),
    # AWS access (bot/access_steps.py): the grant and the revoke, then their receipts
    OutboxKind.ACCESS_GRANT: access_steps.grant_access,
    OutboxKind.ACCESS_REVOKE: access_steps.revoke_access,
    OutboxKind.GRANT_RECEIPT_THREAD: thread_reply(lambda p, e: blocks.access_granted(e)),
    OutboxKind.GRANT_RECEIPT_DM: direct_message(lambda p, e: blocks.access_granted(e)),
    OutboxKind.REVOKE_RECEIPT_THREAD: thread_reply(lambda p, e: blocks.access_revoked(e)),
    OutboxKind.ACTIVITY_DIGEST: evidence.deliver_digest,
    OutboxKind.AUDIT_FALLBACK: post_audit_fallback,
    OutboxKind.INCIDENT_NOTE: incident_notes.post_note,
    OutboxKind.INCIDENT_RESOLVED_DM: incident_notes.resolved_dm,
    **extend_steps.HANDLERS,  # an extension's thread reply and DM (bot/extend_steps.py)
    **dm_steps.HANDLERS,  # the DMs with buttons (active, warning), recorded, and updated at the end
}
assert set(HANDLERS) == set(OutboxKind), "every outbox kind needs a handler"
