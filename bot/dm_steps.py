"""The invoker's "access is active" DM: sent when the event is created (its channel and ts are recorded on
the event), and updated when the event ends, however it ends (Slack, `breakglass-admin`, the sweep, an
incident tool), to say so without its Close/Extend buttons.

Handlers depend only on what a delivery hands them (the Web API client, the audit channels' health),
never on the delivery engine itself: they are registered in the pipeline's handler table with one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot import blocks
from bot.delivery.errors import DeliveryFailed
from store import BreakGlassEvent
from store.model import OutboxKind

if TYPE_CHECKING:
    from bot.pipeline import Pipeline


def dm_invoked(pipeline: Pipeline, event: BreakGlassEvent) -> dict[str, Any]:
    if event.dm_ts:
        return {}  # already sent (recorded by an earlier attempt)
    if event.slack_user_id is None:
        raise DeliveryFailed("the event has no Slack user to send the DM to")
    text, body = blocks.dm_invoked(event, audit_broken=pipeline.audit_channels.error(event.audit_channel))
    response = pipeline.client.chat_postMessage(channel=event.slack_user_id, text=text, blocks=body)
    return {"dm_channel": response["channel"], "dm_ts": response["ts"]}


def dm_ended(pipeline: Pipeline, event: BreakGlassEvent) -> dict[str, Any]:
    if not event.dm_channel or not event.dm_ts:
        if event.owes(OutboxKind.DM_INVOKED):  # stays owed, retried once the DM is sent
            raise DeliveryFailed("the invoker's DM has not been sent yet")
        return {}  # never sent (e.g. an event from before DMs were recorded): nothing to update
    text, body = blocks.dm_ended(event)
    pipeline.client.chat_update(channel=event.dm_channel, ts=event.dm_ts, text=text, blocks=body)
    return {}


HANDLERS: dict[OutboxKind, Callable[[Pipeline, BreakGlassEvent], dict[str, Any]]] = {
    OutboxKind.DM_INVOKED: dm_invoked,
    OutboxKind.DM_ENDED: dm_ended,
}
