"""Exact-time warnings and expiry on Lambda: one-time EventBridge Scheduler schedules, kept by the outbox.

Lambda runs no in-process scheduler, so without this an expiry waits for the minute sweep (up to 60 s late).
With `BREAKGLASS_SCHEDULER_TARGET_ARN` and `BREAKGLASS_SCHEDULER_ROLE_ARN` set on Lambda (bot/app.py), new
events are stored `timed_by="schedules"`, and every write that changes *when* such an event's warning or
expiry is due (invoke, extend) or ends it (close, expiry), whoever makes it, also owes an `expiry_schedules`
step (`OutboxKind.EXPIRY_SCHEDULES`), added by the store itself (`store.base.retimed`). Its handler
(bot/delivery/handlers/schedules.py, `ExpirySchedules.sync` here) renders
the event as stored *now* onto two schedules named after the event (`breakglass-<event id>-warn`,
`-expire`), so any number of such steps, retried in any order, converge:

* an effective event: its expiry schedule, and its warning schedule while the warning is owed, are created
  (`ConflictException`: it exists, so it is updated: an extension *moves* it; an extension after the warning
  was sent owes a new warning, `warned_at` is cleared, so a new warning schedule is created before the new
  expiry);
* an ended event, or a warning already sent: the schedule is deleted (`ResourceNotFoundException`: done).

A failed call raises `DeliveryFailed` after one ERROR line: the step stays owed and the pipeline retries it
with backoff (the stored change and its announcements are never held back by it), while the minute sweep
still expires the event on its own.

Timing. EventBridge Scheduler invokes a target "with 60 second precision": `at(1:00:00)` runs between
1:00:00 and 1:00:59 (Scheduler user guide, "Schedule types"). So each schedule is set to the whole minute
that *ends* 10 s or more before the due time (`fire_at`), and the sweep function, invoked with the schedule's
payload (`payload`), waits until the due time and then warns or expires the event at once
(`bot.scheduler.Scheduler.fire`): the warning or expiry happens at the due time plus the time to write it,
never up to a minute late. A payload only names the event and the step: the times come from the store, so
a stray or forged invocation can never make anything happen early.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from bot.config import Settings
from store import BreakGlassEvent

log = logging.getLogger(__name__)

WARN = "warn"
EXPIRE = "expire"
STEPS = (WARN, EXPIRE)
PAYLOAD_KEY = "breakglass_schedule"
PRECISION = timedelta(minutes=1)
"""EventBridge Scheduler invokes a target within this long after a schedule's time."""
HEADROOM = timedelta(seconds=10)
"""How long before the due time the invocation window ends at the latest: room for a cold start."""
MAX_EARLY = 2 * PRECISION + HEADROOM + timedelta(seconds=20)
"""A fired schedule this long or longer before its step's due time is stale (the event was extended and its
schedule not yet moved): it does nothing, the moved schedule fires later."""


def warn_time(event: BreakGlassEvent, warn_before: timedelta) -> datetime:
    """When the expiry warning is due: `warn_before` ahead, but never in the first half of the current
    stretch (an extension re-times the warning before its new expiry)."""
    return event.expires_at - min(warn_before, (event.expires_at - event.segment_start) / 2)


def due_times(event: BreakGlassEvent, warn_before: timedelta) -> dict[str, datetime | None]:
    """What each step's schedule should be for `event` as stored: its due time, or None (no schedule)."""
    if event.status.ended:
        return {WARN: None, EXPIRE: None}
    warn = None if event.warned_at is not None or event.foreign else warn_time(event, warn_before)
    return {WARN: warn, EXPIRE: event.expires_at}


def fire_at(due: datetime, now: datetime) -> datetime:
    """The schedule time for a step due at `due`: the whole minute whose 60-second window ends at least
    `HEADROOM` before `due`, so the invocation (even into a cold container) always comes first and the sweep
    waits for the due time. When that minute has passed already (a step due within two minutes, a retried
    delivery) the next whole minute: that is late by at most `PRECISION`, like the minute sweep, and the
    sweep still expires the event meanwhile."""
    at = _floor_minute(due - PRECISION - HEADROOM)
    if at < now:
        at = _floor_minute(now) + PRECISION
    return at


def _floor_minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def at_expression(when: datetime) -> str:
    return f"at({when:%Y-%m-%dT%H:%M:%S})"


def schedule_name(event_id: str, step: str) -> str:
    """`breakglass-<16 hex>-warn|expire`: within Scheduler's 64 characters of `[0-9a-zA-Z-_.]`."""
    return f"breakglass-{event_id}-{step}"


def payload(event_id: str, step: str) -> dict[str, Any]:
    """The sweep function's input when a schedule fires (`parse_payload` reads it)."""
    return {PAYLOAD_KEY: {"event_id": event_id, "step": step}}


def parse_payload(event: Any) -> tuple[str, str] | None:
    """(event id, step) if `event` is a schedule's payload, else None (the minute sweep's event)."""
    if not isinstance(event, dict) or not isinstance(event.get(PAYLOAD_KEY), dict):
        return None
    body = event[PAYLOAD_KEY]
    event_id, step = body.get("event_id"), body.get("step")
    if not isinstance(event_id, str) or step not in STEPS:
        return None
    return event_id, step


@dataclass(frozen=True)
class ScheduleSettings:
    """Where schedules go and what they invoke: the sweep function, with a role Scheduler assumes."""

    target_arn: str  # the sweep Lambda function
    role_arn: str  # assumed by scheduler.amazonaws.com; may lambda:InvokeFunction on the target only
    group: str = "breakglass"


def configured(settings: Settings) -> ExpirySchedules | None:
    """The schedules the settings configure (both ARNs set; `check_settings` refuses one alone), or None."""
    target, role = settings.breakglass_scheduler_target_arn, settings.breakglass_scheduler_role_arn
    if not target or not role:
        return None
    return ExpirySchedules(ScheduleSettings(target, role, settings.breakglass_scheduler_group))


def make_client() -> Any:
    """A Scheduler client from the standard AWS environment (AWS_REGION, AWS_ENDPOINT_URL_SCHEDULER or
    AWS_ENDPOINT_URL, credentials): botocore reads the endpoint variables itself."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10)
    region = os.environ.get("AWS_REGION") or None
    return boto3.session.Session().client("scheduler", region_name=region, config=config)


class ExpirySchedules:
    """Creates, moves and deletes the one-time schedules of events (idempotent, named by event and step)."""

    def __init__(self, settings: ScheduleSettings, client: Any = None) -> None:
        self.settings = settings
        self._client = client

    @property
    def client(self) -> Any:
        """Made on first use (not in a cold start that never needs it)."""
        if self._client is None:
            self._client = make_client()
        return self._client

    def put(self, event_id: str, step: str, when: datetime) -> None:
        """The step's schedule at `when`: created, or moved if it exists (re-created if it vanished)."""
        request = self._request(event_id, step, when)
        try:
            self.client.create_schedule(ActionAfterCompletion="DELETE", **request)
            return
        except ClientError as exc:
            if error_code(exc) != "ConflictException":
                raise
        try:
            self.client.update_schedule(ActionAfterCompletion="DELETE", **request)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            # it fired and deleted itself between the two calls: make it again
            self.client.create_schedule(ActionAfterCompletion="DELETE", **request)

    def delete(self, event_id: str, step: str) -> None:
        try:
            self.client.delete_schedule(Name=schedule_name(event_id, step), GroupName=self.settings.group)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":  # gone already (fired, or never made): done
                raise

    def _request(self, event_id: str, step: str, when: datetime) -> dict[str, Any]:
        return {
            "Name": schedule_name(event_id, step),
            "GroupName": self.settings.group,
            "ScheduleExpression": at_expression(when),
            "ScheduleExpressionTimezone": "UTC",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": {
                "Arn": self.settings.target_arn,
                "RoleArn": self.settings.role_arn,
                "Input": json.dumps(payload(event_id, step)),
                # a late invocation still expires at once; after an hour the minute sweep has long done it
                "RetryPolicy": {"MaximumEventAgeInSeconds": 3600, "MaximumRetryAttempts": 20},
            },
            "Description": f"breakglass event {event_id}: {step}",
        }

    def sync(self, event: BreakGlassEvent, warn_before: timedelta, now: datetime) -> dict[str, str]:
        """Make both schedules of `event` what the event as stored says; returns what each one is now."""
        done: dict[str, str] = {}
        for step, due in due_times(event, warn_before).items():
            if due is None:
                self.delete(event.id, step)
                done[step] = "deleted"
            else:
                when = fire_at(due, now)
                self.put(event.id, step, when)
                done[step] = at_expression(when)
        return done


def error_code(exc: Exception) -> str | None:
    if not isinstance(exc, ClientError):
        return None
    code = exc.response.get("Error", {}).get("Code")
    return str(code) if code is not None else None
