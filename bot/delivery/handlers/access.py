"""The AWS access steps: the grant and the revoke are owed outbox entries (`ACCESS_GRANT`, `ACCESS_REVOKE`),
delivered by the one delivery engine (bot/delivery/engine.py) like every announcement, so they are retried
with backoff, leased, and survive restarts and replicas. Their receipts are owed announcements too.

* **grant** (owed by the invocation): under the assignment's lock, look at AWS first and record, durably and
  before creating anything, whether the assignment was already there (``pre_existing``: someone's standing
  access, which the revoke must leave alone); then create it and record the receipt. A retry after a crash
  anywhere in between finds the record and takes an existing assignment as its own. Retried until it works
  or the event ends. A grant right after a revoke of the same assignment pulls that revoke's deny back to the
  grant's time (the deny reaches a clock-skew margin past the revoke, which must not catch the new sessions).
* **revoke** (owed by the close or expiry, before the announcements): under the same lock, delete the
  assignment unless it was standing access or another active event holds it, and deny the person's
  sessions issued before the revoke. Retried until it works.
* **failures**: the first failure of an episode is announced in the audit thread (mentioning security)
  and to the invoker (grant) or to every security member (revoke), with the AWS error; a revoke that keeps
  failing alarms again at growing intervals, never silently.

The assignment lock (`Store.claim`, one name per account, permission set and person) serialises the grant
and the revoke of one assignment across processes: a person's new event right after their old one closed
never races the old revoke (the new grant either sees the old assignment gone, or the old revoke sees the
new event holding it). The periodic drift check and the removal of expired deny statements are in
bot/delivery/handlers/drift.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from bot import blocks, metrics
from bot.access import AccessError, Assignment, GrantReceipt
from bot.access.holders import assignment_of, same, target_of
from bot.delivery.deps import DeliveryDeps
from bot.delivery.errors import SLACK_ERRORS, DeliveryFailed
from bot.delivery.handlers.announcements import dm, thread
from bot.delivery.lease import LEASE, Lease, claim_renewal
from bot.delivery.registry import Fields, Step
from store import BreakGlassEvent, mutate
from store.model import EventAccess, OutboxKind

log = logging.getLogger(__name__)

LOCK_HOLD = LEASE
"""How long an assignment's lock lasts past its last renewal (a holder that dies lets it run out)."""
ALARM_FIRST = timedelta(minutes=5)
ALARM_MAX = timedelta(hours=2)
REVOKE_PENDING_HORIZON = timedelta(days=1)


def made_by_breakglass(deps: DeliveryDeps, assignment: Assignment, exclude: str) -> list[str]:
    """Events other than `exclude` that created `assignment` and have not revoked it yet: active ones, and
    ended ones whose revoke is still owed (a person's new event right after their old one closed)."""
    now = deps.clock.now()
    candidates = {e.id: e for e in deps.store.list_active()}
    candidates |= {e.id: e for e in deps.store.list_owed(now=now + REVOKE_PENDING_HORIZON, limit=500)}
    return [
        e.id
        for e in candidates.values()
        if e.id != exclude
        and same(e.access, assignment)
        and e.access is not None
        and e.access.pre_existing is False
        and e.access.revoked_at is None
    ]


@contextmanager
def assignment_lock(deps: DeliveryDeps, access: EventAccess) -> Iterator[None]:
    """Hold the assignment's lock across processes, or fail the step (it is retried after a backoff). The
    lock is short (`LOCK_HOLD`) and renewed while the step works, AWS calls and polling included."""
    name = f"access-lock:{access.account}:{access.permission_set}:{access.user_id}"
    now = deps.clock.now()
    if not deps.store.claim(name, now=now, hold=LOCK_HOLD):
        raise DeliveryFailed("another grant or revoke of this AWS assignment is in progress")
    lease = Lease(until=now + LOCK_HOLD, attempts=0)
    try:
        with deps.leases.keeping(lease, claim_renewal(deps.store, deps.clock, name, lease)):
            yield
    finally:
        deps.store.finish_claim(name, until=deps.clock.now())


def _update_access(deps: DeliveryDeps, event_id: str, *owe: OutboxKind, **changes: Any) -> BreakGlassEvent:
    def change(ev: BreakGlassEvent) -> BreakGlassEvent:
        assert ev.access is not None
        updated = ev.updated(access=ev.access.model_copy(update=changes))
        return updated.with_outbox(*owe) if owe else updated

    return mutate(deps.store, event_id, change)


def _reread(deps: DeliveryDeps, event: BreakGlassEvent) -> BreakGlassEvent:
    """The event as stored now that the lock is ours, with what this delivery sent but has not recorded
    yet (the audit message's location)."""
    fresh = deps.store.get(event.id)
    if fresh.audit_ts is None and event.audit_ts is not None:
        fresh = fresh.updated(audit_channel=event.audit_channel, audit_ts=event.audit_ts)
    return fresh


def describe(exc: AccessError) -> str:
    return exc.message + (f" (AWS request id {exc.request_id})" if exc.request_id else "")


def grant_access(deps: DeliveryDeps, event: BreakGlassEvent) -> Fields:
    access = event.access
    if access is None or access.granted_at is not None or event.status.ended:
        return {}  # nothing to grant, done already, or ended first (its revoke cleans up what was made)
    with assignment_lock(deps, access):
        event = _reread(deps, event)
        access = event.access
        if access is None or access.granted_at is not None or event.status.ended:
            return {}
        try:
            if access.pre_existing is None:
                # Look before creating, and record what was seen before anything is created.
                assigned = deps.access.is_assigned(target_of(access), access.user_id)
                pre_existing = assigned and not made_by_breakglass(
                    deps, assignment_of(access), exclude=event.id
                )
                access = _update_access(deps, event.id, pre_existing=pre_existing).access
                assert access is not None
                event = event.updated(access=access)
            if access.pre_existing:
                now = deps.clock.now()
                receipt = GrantReceipt(
                    provider=deps.access.name,
                    event_id=event.id,
                    assignment=assignment_of(access),
                    requested_at=now,
                    completed_at=now,
                    pre_existing=True,
                )
            else:
                receipt = deps.access.grant(event.id, target_of(access), access.user_id, first_attempt=False)
            if not access.pre_existing:
                # A deny of this person on this account may reach past now (an old event's clock-skew margin,
                # or a merge to a later bound to fit IAM's quota): never into the new sessions.
                deps.access.allow_sessions_from(target_of(access), access.user_id, receipt.completed_at)
        except AccessError as exc:
            _failed(deps, event, "grant", exc)
            raise _delivery_failed("grant", exc) from exc
    _update_access(
        deps,
        event.id,
        OutboxKind.GRANT_RECEIPT_THREAD,
        OutboxKind.GRANT_RECEIPT_DM,
        grant_requested_at=receipt.requested_at,
        granted_at=receipt.completed_at,
        permission_set_name=receipt.permission_set_name or access.permission_set_name,
        failure=None,
    )
    log.info(
        "AWS access granted",
        extra={
            "event_id": event.id,
            "action": "grant",
            "outcome": "ok",
            "took": receipt.took.total_seconds(),
        },
    )
    return {}


def revoke_access(deps: DeliveryDeps, event: BreakGlassEvent) -> Fields:
    access = event.access
    if access is None or access.revoked_at is not None:
        return {}
    with assignment_lock(deps, access):
        event = _reread(deps, event)
        access = event.access
        if access is None or access.revoked_at is not None:
            return {}
        now = deps.clock.now()
        changes: dict[str, Any]
        if access.pre_existing is None:
            # The grant never looked at AWS, so it created nothing: there is nothing of ours to remove.
            changes = {"revoke_requested_at": now, "revoked_at": now, "kept": "never-granted"}
        else:
            try:
                receipt = deps.access.revoke(
                    event.id, target_of(access), access.user_id, pre_existing=access.pre_existing
                )
            except AccessError as exc:
                _failed(deps, event, "revoke", exc)
                raise _delivery_failed("revoke", exc) from exc
            changes = {
                "revoke_requested_at": receipt.requested_at,
                "revoked_at": receipt.completed_at,
                "assignment_deleted_at": receipt.assignment_deleted_at,
                "sessions_issued_before": receipt.sessions_issued_before,
                "sessions_denied_at": receipt.sessions_denied_at,
                "kept": receipt.kept,
            }
    _update_access(
        deps, event.id, OutboxKind.REVOKE_RECEIPT_THREAD, failure=None, next_alarm_at=None, **changes
    )
    if changes.get("revoked_at") is not None and changes.get("kept") != "never-granted":
        metrics.revoked(event, changes["revoked_at"])
    log.info(
        "AWS access revoked",
        extra={"event_id": event.id, "action": "revoke", "outcome": changes.get("kept") or "ok"},
    )
    return {}


def _delivery_failed(step: str, exc: AccessError) -> Exception:
    return DeliveryFailed(f"AWS access {step} failed: {describe(exc)}")


def _failed(deps: DeliveryDeps, event: BreakGlassEvent, step: str, exc: AccessError) -> None:
    """Announce a failure: once per episode (the first failure after a success), and for a revoke again at
    growing intervals while it keeps failing. Announced before it is recorded, so a crash in between
    announces twice rather than never."""
    access = event.access
    assert access is not None
    now = deps.clock.now()
    error = describe(exc)
    new_episode = access.failure is None
    alarm_due = step == "revoke" and access.next_alarm_at is not None and now >= access.next_alarm_at
    log.warning(
        "AWS access %s failed: %s",
        step,
        error,
        extra={"event_id": event.id, "action": step, "outcome": "retry", "attempt": access.failures + 1},
    )
    metrics.access_failed(step)
    changes: dict[str, Any] = {"failure": error[:2000], "failures": access.failures + 1}
    if new_episode or alarm_due:
        repeat = access.alarms if (step == "revoke" and not new_episode) else 0
        announce_failure(deps, event, step, error, repeat=repeat)
        if step == "revoke":
            alarms = repeat + 1
            changes |= {
                "alarms": alarms,
                "next_alarm_at": now + min(ALARM_FIRST * 3 ** (alarms - 1), ALARM_MAX),
            }
    _update_access(deps, event.id, **changes)


def announce_failure(
    deps: DeliveryDeps, event: BreakGlassEvent, step: str, error: str, *, repeat: int
) -> None:
    security = list(deps.policy.security)
    sends: list[dict[str, Any]] = []
    if event.audit_channel and event.audit_ts:
        text, body = blocks.access_failed(event, step, error, security, repeat=repeat)
        sends.append(
            {"channel": event.audit_channel, "thread_ts": event.audit_ts, "text": text, "blocks": body}
        )
    text, body = blocks.dm_access_failed(event, step, error)
    recipients: list[str] = [event.slack_user_id] if event.slack_user_id else []
    if step == "revoke":
        try:
            recipients = sorted(deps.directory.members(deps.policy.security))
        except Exception:  # a directory failure must not stop the thread alarm (security is mentioned there)
            log.exception("could not list security members to alarm", extra={"event_id": event.id})
            recipients = []
    sends += [{"channel": r, "text": text, "blocks": body} for r in recipients if r]
    send: dict[str, Any]
    for send in sends:
        try:
            deps.client.chat_postMessage(**send)
        except SLACK_ERRORS as exc:  # one unreachable recipient must not silence the others
            log.warning("could not announce an AWS access failure to %s: %s", send["channel"], exc)


HANDLERS: dict[OutboxKind, Step] = {
    OutboxKind.ACCESS_GRANT: Step(grant_access),
    OutboxKind.ACCESS_REVOKE: Step(revoke_access),
    OutboxKind.GRANT_RECEIPT_THREAD: thread(lambda d, e: blocks.access_granted(e)),
    OutboxKind.GRANT_RECEIPT_DM: dm(lambda d, e: blocks.access_granted(e)),
    OutboxKind.REVOKE_RECEIPT_THREAD: thread(lambda d, e: blocks.access_revoked(e)),
}
