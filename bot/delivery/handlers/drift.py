"""AWS access drift: the periodic drift check (re-grant what vanished, remove what breakglass did not make) and
the cleanup of expired deny statements, run once per `access.reconcile_every` across replicas from the sweep
(`Scheduler.reconcile_access`), and the announcement of what it found to security in the audit channel.

The announcement is a *stored* owed task (`TaskKind.ACCESS_DRIFT`, store.tasks), owed by the check in the
store before anything is announced: a process that dies after repairing the drift and before announcing it
loses nothing, the next sweep in any process delivers it (`Pipeline.deliver_tasks`)."""

from __future__ import annotations

import json
import logging
from datetime import datetime

from bot import blocks
from bot.access import AccessError, ExpectedAssignment, ReconcileReport, Target
from bot.access.holders import assignment_of, target_of
from bot.delivery.deps import DeliveryDeps
from bot.delivery.errors import DeliveryFailed
from bot.delivery.handlers.access import REVOKE_PENDING_HORIZON, assignment_lock, describe
from bot.delivery.registry import TaskStep
from store import EventNotFound
from store.tasks import OwedTask, TaskKind

log = logging.getLogger(__name__)


def expected_assignments(deps: DeliveryDeps) -> list[ExpectedAssignment]:
    """What reconcile must find: active events' assignments (re-granted if vanished, unless standing access
    or not yet looked at), and ended events' whose revoke is still owed (left alone: the revoke deals)."""
    now = deps.clock.now()
    expected: dict[str, ExpectedAssignment] = {}
    for event in deps.store.list_active():
        if event.access is not None and event.access.revoked_at is None:
            expected[event.id] = ExpectedAssignment(
                event_id=event.id,
                assignment=assignment_of(event.access),
                pre_existing=event.access.pre_existing is not False,
            )
    for event in deps.store.list_owed(now=now + REVOKE_PENDING_HORIZON, limit=500):
        if event.id not in expected and event.access is not None and event.access.revoked_at is None:
            expected[event.id] = ExpectedAssignment(
                event_id=event.id, assignment=assignment_of(event.access), pre_existing=True
            )
    return list(expected.values())


def regrant_vanished(deps: DeliveryDeps, report: ReconcileReport) -> ReconcileReport:
    """Grant again what the drift check found vanished, each under its assignment's lock and only if the
    event, read again under that lock (after the listing), still owes it: an event closed and revoked while
    the check listed is never granted again (the check's first read of the events is stale by then)."""
    regranted = list(report.regranted)
    missing: list[ExpectedAssignment] = []
    errors = list(report.errors)
    for item in report.missing:
        try:
            event = deps.store.get(item.event_id)
        except EventNotFound:
            continue
        access = event.access
        if access is None or event.status.ended or access.revoked_at is not None:
            continue
        if assignment_of(access) != item.assignment:
            continue
        try:
            with assignment_lock(deps, access):
                event = deps.store.get(item.event_id)
                access = event.access
                if access is None or event.status.ended or access.revoked_at is not None:
                    continue
                regranted.append(
                    deps.access.grant(event.id, target_of(access), access.user_id, first_attempt=False)
                )
        except AccessError as exc:
            errors.append(f"re-granting {item.event_id}: {describe(exc)}")
            missing.append(item)
        except DeliveryFailed as exc:  # a grant or revoke holds the lock: the next check looks again
            errors.append(f"re-granting {item.event_id}: {exc}")
            missing.append(item)
    return report.model_copy(
        update={"regranted": tuple(regranted), "missing": tuple(missing), "errors": tuple(errors)}
    )


def managed_targets(deps: DeliveryDeps) -> list[Target]:
    return list(
        dict.fromkeys(
            Target(account=p.aws.account, permission_set=p.aws.permission_set)
            for p in deps.policy.profiles.values()
            if p.aws is not None
        )
    )


def reconcile(deps: DeliveryDeps, now: datetime) -> ReconcileReport | None:
    """One drift check and deny cleanup (the caller makes it once per period across replicas)."""
    targets = managed_targets(deps)
    if deps.access.name == "none" or not targets:
        return None
    report = deps.access.reconcile(
        targets, expected_assignments(deps), regrant=False, confirm=lambda: expected_assignments(deps)
    )
    report = regrant_vanished(deps, report)
    try:
        removed = deps.access.cleanup(targets, now)
        if removed:
            log.info("removed %d expired deny statements", removed, extra={"action": "cleanup"})
    except AccessError as exc:
        report = report.model_copy(update={"errors": (*report.errors, f"cleanup: {describe(exc)}")})
    return report


# -- the announcement, a stored owed task -------------------------------------------------------------------


def owe_announcement(deps: DeliveryDeps, name: str, report: ReconcileReport, channel: str | None) -> None:
    """Owe the announcement of what the check `name` found (owing the same check again keeps the first)."""
    payload = {"channel": channel, "report": report.model_dump(mode="json")}
    task = OwedTask(name=name, kind=TaskKind.ACCESS_DRIFT, payload=json.dumps(payload), due=deps.clock.now())
    deps.store.owe_task(task)


def findings(task: OwedTask) -> int:
    """How many findings an ACCESS_DRIFT task announces."""
    report = ReconcileReport.model_validate(json.loads(task.payload)["report"])
    return len(report.drift) + len(report.regranted) + len(report.missing) + len(report.errors)


def announce(deps: DeliveryDeps, task: OwedTask) -> None:
    """The ACCESS_DRIFT handler: the findings to security in the audit channel."""
    data = json.loads(task.payload)
    report = ReconcileReport.model_validate(data["report"])
    if data.get("channel"):
        text, body = blocks.access_drift(report, list(deps.policy.security))
        deps.client.chat_postMessage(channel=data["channel"], text=text, blocks=body)


TASK_HANDLERS: dict[TaskKind, TaskStep] = {
    TaskKind.ACCESS_DRIFT: TaskStep(announce),
}
