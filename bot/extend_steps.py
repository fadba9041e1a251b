"""The owed steps of an extension (`BreakGlassService.extend`): the audit thread's reply and the invoker's
DM. The root audit message is refreshed by the ordinary `audit_update` owed in the same write, and the
scheduler re-times the warning and the expiry from the pipeline's follow-ups (`Scheduler.on_event`).

Handlers depend only on what a delivery hands them (the Web API client and the audit location), never on
the delivery engine itself: they are registered in the pipeline's handler table with one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot import blocks, dm_steps
from bot.delivery.errors import DeliveryFailed
from store import BreakGlassEvent
from store.model import OutboxKind

if TYPE_CHECKING:
    from bot.pipeline import Pipeline

# What an extension owes, in order, in the same store write as the new expiry. A runtime that keeps its
# own timers for the warning and the expiry (e.g. one-time schedules on Lambda) adds its re-timing step
# here: an extension owes exactly what a new expiry needs.
EXTENSION_OUTBOX: tuple[OutboxKind, ...] = (OutboxKind.AUDIT_UPDATE, OutboxKind.EXTEND_THREAD)
EXTENSION_DM = OutboxKind.EXTEND_DM

AUDIT_CHANNEL_KINDS = frozenset({OutboxKind.EXTEND_THREAD})


def extension_outbox(event: BreakGlassEvent, by: str) -> list[OutboxKind]:
    """The steps an extension of `event` by `by` owes (the invoker's DM always: their timer moved)."""
    owed = list(EXTENSION_OUTBOX)
    if not event.foreign:
        owed.append(EXTENSION_DM)
    return owed


def thread_extended(pipeline: Pipeline, event: BreakGlassEvent) -> dict[str, Any]:
    channel, ts = pipeline.audit_location(event)
    text, body = blocks.thread_extended(event)
    pipeline.client.chat_postMessage(channel=channel, thread_ts=ts, text=text, blocks=body)
    return {}


def dm_extended(pipeline: Pipeline, event: BreakGlassEvent) -> dict[str, Any]:
    if event.status.ended:
        return {}  # ended before this DM went out: no Close button for access that is gone
    text, body = blocks.dm_extended(event)
    if not event.slack_user_id:
        raise DeliveryFailed("the event has no Slack user to message")
    response = pipeline.client.chat_postMessage(channel=event.slack_user_id, text=text, blocks=body)
    return dm_steps.record_dm(OutboxKind.EXTEND_DM, response)  # updated when the event ends


HANDLERS: dict[OutboxKind, Callable[[Pipeline, BreakGlassEvent], dict[str, Any]]] = {
    OutboxKind.EXTEND_THREAD: thread_extended,
    OutboxKind.EXTEND_DM: dm_extended,
}
