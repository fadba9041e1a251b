"""The `expiry_schedules` step: Lambda's one-time EventBridge Scheduler schedules (the warning and the
expiry of an event) made to match the event as stored now: created, moved, deleted (bot/schedules.py)."""

from __future__ import annotations

import logging

from botocore.exceptions import BotoCoreError, ClientError

from bot.delivery.deps import DeliveryDeps
from bot.delivery.errors import DeliveryFailed
from bot.delivery.registry import Fields, Step
from bot.schedules import error_code
from store import BreakGlassEvent
from store.model import OutboxKind

log = logging.getLogger("bot.schedules")


def sync_schedules(deps: DeliveryDeps, event: BreakGlassEvent) -> Fields:
    """Raises DeliveryFailed (the step stays owed and is retried) after one ERROR line when Scheduler fails."""
    schedules = deps.schedules
    if schedules is None and event.timed_by == "schedules" and deps.defer_schedules:
        raise DeliveryFailed("EventBridge Scheduler is the bot's to change: left owed for its sweep")
    if schedules is None:
        return {}  # owed where schedules were configured, delivered by a process without them: the sweep times it
    try:
        done = schedules.sync(event, deps.policy.warn_before, deps.clock.now())
    except (ClientError, BotoCoreError) as exc:  # AWS refused, or was not reached: retried
        code = error_code(exc) or type(exc).__name__
        log.error(
            "EventBridge Scheduler refused the schedules of event %s (%s): retried; until they exist the "
            "minute sweep warns and expires it, up to a minute late",
            event.id,
            code,
            extra={"event_id": event.id, "action": "expiry_schedules", "outcome": "retry"},
        )
        raise DeliveryFailed(f"EventBridge Scheduler: {code}") from exc
    log.info(
        "expiry schedules: %s",
        ", ".join(f"{step} {what}" for step, what in done.items()),
        extra={"event_id": event.id, "action": "expiry_schedules", "outcome": "ok"},
    )
    return {}


HANDLERS: dict[OutboxKind, Step] = {OutboxKind.EXPIRY_SCHEDULES: Step(sync_schedules)}
