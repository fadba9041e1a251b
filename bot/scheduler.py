"""Warnings and expiry on time, exactly once, across restarts and replicas.

Two kinds of work run on an APScheduler BackgroundScheduler:
  * exact-time jobs per active event: a warning at `warn_at` and the expiry at `expires_at`;
  * a sweep every `sweep_interval` over *active events only* (cost independent of history) that does
    whatever is due and was missed (restarts, events created by other replicas), schedules exact-time
    jobs for events it has not seen, and retries owed Slack announcements (the outbox).
Every state change is a conditional store write: when several replicas race, exactly one wins and only
the winner announces.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from bot import blocks, revoke_deadline, schedules
from bot.access import AccessError
from bot.clock import Clock
from bot.delivery.engine import Pipeline
from bot.delivery.errors import SLACK_ERRORS
from bot.delivery.handlers import drift
from bot.errors import ValidationFailed
from bot.policy import Policy
from bot.service import BreakGlassService
from store import BreakGlassEvent, EventNotFound, StoreError, mutate
from store.model import OutboxKind
from store.tasks import TaskKind

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger(__name__)

REMINDER_JOB = "review-reminder"
SWEEP_JOB = "sweep"


class Timers:
    """The exact-time jobs of active events (APScheduler): a warning at `warn_at` and the expiry at
    `expires_at`. Built before the delivery engine, whose follow-ups (`on_event`) keep them in step with
    every stored change; the `Scheduler` starts it with the jobs to run."""

    def __init__(self, clock: Clock, warn_at: Callable[[BreakGlassEvent], datetime]) -> None:
        self.clock = clock
        self.warn_at = warn_at
        self._scheduler: BackgroundScheduler | None = None
        self._run_warning: Callable[[str], None] = lambda _event_id: None
        self._run_expiry: Callable[[str], None] = lambda _event_id: None

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.running

    def start(
        self,
        scheduler: BackgroundScheduler,
        *,
        run_warning: Callable[[str], None],
        run_expiry: Callable[[str], None],
    ) -> None:
        self._run_warning, self._run_expiry = run_warning, run_expiry
        self._scheduler = scheduler

    def stop(self) -> BackgroundScheduler | None:
        scheduler, self._scheduler = self._scheduler, None
        return scheduler

    def _wall(self, when: datetime) -> datetime:
        """Map a time on the injected clock to wall-clock time for APScheduler."""
        return datetime.now(UTC) + (when - self.clock.now())

    def track(self, event: BreakGlassEvent) -> None:
        """Schedule the warning and expiry of an active event, once (the sweep calls this for every
        active event: jobs that already exist are left alone)."""
        scheduler = self._scheduler
        if scheduler is None or not event.is_effective(self.clock.now()):
            return
        jobs = [(f"expire:{event.id}", self._run_expiry, event.expires_at)]
        if event.warned_at is None:
            jobs.append((f"warn:{event.id}", self._run_warning, self.warn_at(event)))
        for job_id, func, when in jobs:
            job = scheduler.get_job(job_id)
            if job is not None and job.next_run_time is not None:
                # re-timed (an extension): move the job; a job already at its time is left alone
                if abs((job.next_run_time - self._wall(when)).total_seconds()) > 1:
                    with contextlib.suppress(LookupError):
                        job.reschedule("date", run_date=self._wall(when))
                continue
            if job is None:
                from apscheduler.jobstores.base import ConflictingIdError

                with contextlib.suppress(ConflictingIdError):  # added by another thread meanwhile
                    scheduler.add_job(func, "date", run_date=self._wall(when), args=[event.id], id=job_id)

    def untrack(self, event: BreakGlassEvent) -> None:
        scheduler = self._scheduler
        if scheduler is None:
            return
        for job_id in (f"warn:{event.id}", f"expire:{event.id}"):
            job = scheduler.get_job(job_id)
            if job is not None:
                job.remove()

    def on_event(self, event: BreakGlassEvent) -> None:
        """Hook after any change: active events get jobs, ended ones lose them."""
        if event.status.ended:
            self.untrack(event)
        else:
            self.track(event)


class Scheduler:
    def __init__(
        self,
        *,
        service: BreakGlassService,
        pipeline: Pipeline,
        policy: Policy,
        clock: Clock,
        timers: Timers,
        default_audit_channel: str | None = None,
    ) -> None:
        self.timers = timers
        self.service = service
        self.pipeline = pipeline
        self.policy = policy
        self.clock = clock
        self.default_audit_channel = default_audit_channel
        self._lock = threading.Lock()
        self._sweep_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.timers.running

    @property
    def _scheduler(self) -> BackgroundScheduler | None:
        return self.timers._scheduler

    def start(self) -> None:
        """Start once (idempotent); schedules jobs for every active event, then sweeps periodically."""
        with self._lock:
            if self._scheduler is not None:
                return
            # APScheduler is imported here: Lambda (BREAKGLASS_SCHEDULER=off) sweeps without it
            from apscheduler.schedulers.background import BackgroundScheduler
            from apscheduler.triggers.cron import CronTrigger

            scheduler = BackgroundScheduler(
                timezone=UTC,
                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
                executors={"default": {"type": "threadpool", "max_workers": 8}},
            )
            scheduler.add_job(
                self.sweep,
                "interval",
                seconds=self.policy.sweep_interval.total_seconds(),
                id=SWEEP_JOB,
                next_run_time=datetime.now(UTC),
            )
            reminder = self.policy.review_reminder_time
            scheduler.add_job(
                self.remind_reviews,
                CronTrigger(hour=reminder.hour, minute=reminder.minute, timezone=UTC),
                id=REMINDER_JOB,
            )
            scheduler.start()
            self.timers.start(scheduler, run_warning=self.run_warning, run_expiry=self.run_expiry)
        log.info("scheduler started", extra={"action": "scheduler", "outcome": "started"})

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking new work; with wait=True, in-flight jobs finish first."""
        with self._lock:
            scheduler = self.timers.stop()
        if scheduler is not None:
            scheduler.shutdown(wait=wait)
            log.info("scheduler stopped", extra={"action": "scheduler", "outcome": "stopped"})

    # -- exact-time jobs ------------------------------------------------------------------------

    def track(self, event: BreakGlassEvent) -> None:
        self.timers.track(event)

    def untrack(self, event: BreakGlassEvent) -> None:
        self.timers.untrack(event)

    def on_event(self, event: BreakGlassEvent) -> None:
        self.timers.on_event(event)

    def _warn(self, event_id: str) -> bool:
        """Record the warning (once, across replicas) and hand it to the pipeline if this call won."""
        if self.service.warn(event_id) is None:
            return False
        self.pipeline.deliver(event_id)
        return True

    def _expire(self, event_id: str) -> bool:
        """Expire (once, across replicas) and hand it to the pipeline (which also drops its jobs) if this
        call won."""
        if self.service.expire(event_id) is None:
            return False
        self.pipeline.deliver(event_id)
        return True

    def fire(
        self, event_id: str, step: str, *, max_wait: float, sleep: Callable[[float], None] = time.sleep
    ) -> dict[str, int]:
        """One-time schedule `step` of `event_id` fired (Lambda, bot/schedules.py): wait (up to `max_wait`
        seconds) until the step is due by the event as stored, then warn or expire it at once and deliver.
        A schedule fired long before its step (moved since) or for an event that no longer owes the step
        does nothing. Returns counts like `sweep`."""
        counts = {"warned": 0, "expired": 0, "stale": 0}
        try:  # a store that fails raises: the invocation fails and Lambda retries it
            event = self.service.get(event_id)
        except (ValidationFailed, EventNotFound):
            log.warning("a schedule fired for unknown event %r", event_id[:40], extra={"action": "schedule"})
            counts["stale"] = 1
            return counts
        due = schedules.due_times(event, self.policy.warn_before)[step]
        if due is None or due - self.clock.now() > schedules.MAX_EARLY:
            counts["stale"] = 1  # ended, warned already, or moved later by an extension
            if due is not None and self.pipeline.deps.schedules is not None:
                self._resync(event_id)  # moved where the schedules were not (e.g. breakglass-admin extend)
            return counts
        wait = (due - self.clock.now()).total_seconds()
        if wait > max_wait:
            log.warning(
                "schedule fired %.0f s before its %s; waiting only %.0f s: the minute sweep does it",
                wait,
                step,
                max_wait,
                extra={"event_id": event_id, "action": step, "outcome": "early"},
            )
        while wait > 0 and max_wait > 0:
            step_wait = min(wait, max_wait)
            sleep(step_wait)
            max_wait -= step_wait
            wait = (due - self.clock.now()).total_seconds()
        if step == schedules.WARN:
            counts["warned"] = int(self._warn(event_id))
        else:
            counts["expired"] = int(self._expire(event_id))
        return counts

    def _resync(self, event_id: str) -> None:
        """Owe the event's schedules step again (they missed a change) and deliver it."""
        mutate(  # timed by schedules from now on (an event stored before `timed_by` existed)
            self.service.store,
            event_id,
            lambda ev: ev.updated(timed_by="schedules").with_outbox(OutboxKind.EXPIRY_SCHEDULES),
        )
        self.pipeline.deliver(event_id)

    def run_warning(self, event_id: str) -> None:
        try:
            self._warn(event_id)
        except StoreError as exc:
            log.warning("warning job failed, the sweep will retry: %s", exc, extra={"event_id": event_id})

    def run_expiry(self, event_id: str) -> None:
        try:
            self._expire(event_id)
        except StoreError as exc:
            log.warning("expiry job failed, the sweep will retry: %s", exc, extra={"event_id": event_id})

    # -- the sweep ---------------------------------------------------------------------------------

    def sweep(self) -> dict[str, int]:
        """Do everything due now; returns counts (for tests and logs). Never raises."""
        counts = {"active": 0, "warned": 0, "expired": 0, "owed": 0, "reminded": 0}
        if not self._sweep_lock.acquire(blocking=False):
            return counts  # a sweep is already running in this process
        try:
            now = self.clock.now()
            active = self.service.active()
            counts["active"] = len(active)
            for event in active:
                try:
                    if event.is_due(now):
                        counts["expired"] += self._expire(event.id)
                    elif event.warned_at is None and now >= self.service.warn_at(event):
                        counts["warned"] += self._warn(event.id)
                        self.track(event)
                    else:
                        self.track(event)
                except Exception as exc:  # noqa: BLE001 - one event's failure (any kind) never stops the others
                    counts["failed"] = counts.get("failed", 0) + 1
                    log.warning(
                        "sweep: event %s failed, will retry next interval: %s",
                        event.id,
                        f"{type(exc).__name__}: {exc}".splitlines()[0],
                        extra={"event_id": event.id, "action": "sweep", "outcome": "error"},
                    )
            counts["owed"] = self.pipeline.deliver_owed()
            counts["revokes_overdue"] = revoke_deadline.alarm_overdue(self.pipeline.deps, self.clock.now())
            counts["reminded"] = self.remind_if_due()  # also retries a reminder that failed earlier
            counts["drift"] = self.reconcile_access()
            counts["incidents"] = self.poll_incidents()
        except StoreError as exc:
            log.warning(
                "sweep failed, will retry next interval: %s",
                exc,
                extra={"action": "sweep", "outcome": "error"},
            )
        finally:
            self._sweep_lock.release()
        return counts

    # -- AWS access drift ---------------------------------------------------------------------------

    def reconcile_access(self) -> int:
        """The drift check and the cleanup of old deny statements (bot.delivery.handlers.drift), once per
        `access.reconcile_every` across replicas; what it finds is stored as an owed announcement to
        security in the audit channel, then delivered with every other owed task (one a crashed process
        left included). Returns how many findings were announced now."""
        if self.pipeline.access.name == "none":
            return 0
        channel = self.policy.audit_channel or self.default_audit_channel
        period = self.policy.access.reconcile_every
        now = self.clock.now()
        slot = int(now.timestamp() // period.total_seconds())

        def check() -> None:
            report = drift.reconcile(self.pipeline.deps, now)
            if report is not None and not report.clean:
                log.warning(
                    "AWS access drift: %d removed or not, %d re-granted, %d missing, %d errors",
                    len(report.drift),
                    len(report.regranted),
                    len(report.missing),
                    len(report.errors),
                    extra={"action": "reconcile", "outcome": "drift"},
                )
                drift.owe_announcement(self.pipeline.deps, f"access-drift:{slot}", report, channel)

        try:
            self.pipeline.deliver_task(f"access-reconcile:{slot}", check, done_for=period)
        except (StoreError, AccessError, *SLACK_ERRORS) as exc:
            log.warning("drift check failed, will retry: %s", exc, extra={"action": "reconcile"})
        try:
            announced = self.pipeline.deliver_tasks()
        except StoreError as exc:
            log.warning("drift announcement failed, will retry: %s", exc, extra={"action": "reconcile"})
            return 0
        return sum(drift.findings(t) for t in announced if t.kind is TaskKind.ACCESS_DRIFT)

    # -- incident tools ---------------------------------------------------------------------------------

    def poll_incidents(self) -> int:
        """Ask the incident tool about the incidents linked to active events, once per
        `incidents.poll_every` across replicas (a lost resolve webhook is caught here)."""
        links = self.service.incidents
        if not links.enabled:
            return 0
        period = self.policy.incidents.poll_every
        slot = int(self.clock.now().timestamp() // period.total_seconds())
        closed: list[int] = []
        try:
            self.pipeline.deliver_task(
                f"incident-poll:{slot}", lambda: closed.append(links.poll()), done_for=period
            )
        except StoreError as exc:
            log.warning("incident poll failed, will retry: %s", exc, extra={"action": "incident_poll"})
        return sum(closed)

    # -- review reminder ------------------------------------------------------------------------------

    def remind_if_due(self) -> int:
        """Post today's reminder once it is due and not yet posted (the sweep and Lambda's minute sweep call
        this, so a reminder that failed is retried until it is posted)."""
        if self.clock.now().time() < self.policy.review_reminder_time:
            return 0
        return self.remind_reviews()

    def remind_reviews(self) -> int:
        """Post the list of events unreviewed for longer than `review_reminder_after`, once a day across
        replicas, through the pipeline's owed-task path. Returns how many events it listed."""
        channel = self.policy.audit_channel or self.default_audit_channel
        if channel is None:
            return 0
        now = self.clock.now()
        cutoff = now - self.policy.review_reminder_after
        listed: list[int] = []

        def send() -> None:
            stale = [e for e in self.service.unreviewed(limit=200) if e.ended_at and e.ended_at <= cutoff]
            if stale:
                text, body = blocks.review_reminder(stale, self.policy.review_reminder_after)
                self.pipeline.client.chat_postMessage(channel=channel, text=text, blocks=body)
            listed.append(len(stale))

        try:
            self.pipeline.deliver_task(
                f"review-reminder:{now.date().isoformat()}", send, done_for=timedelta(hours=36)
            )
        except StoreError:  # a reminder failing must not stop the scheduler; the next sweep retries
            log.exception("review reminder failed", extra={"action": "review-reminder"})
        return listed[0] if listed else 0
