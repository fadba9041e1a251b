"""The DMs with buttons, and their end: the invoker's "access is active" DM (its channel and ts recorded on
the event as `dm_channel`/`dm_ts`), the expiry warning (Extend, Close) and every other DM with buttons sent
for the event (an extension's, an incident's resolution: recorded in `BreakGlassEvent.dms` by `record_dm`).
When the event ends, however it ends (Slack, `breakglass-admin`, the sweep, an incident tool), the one
`dm_ended` step updates each of them to say so, without its Close/Extend buttons. A warning or extension DM
still owed once the event has ended is not sent at all (it would offer buttons for access that is gone).

Handlers depend only on what a delivery hands them (the Web API client, the audit channels' health),
never on the delivery engine itself: they are registered in the pipeline's handler table with one line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from bot import blocks
from bot.delivery.errors import DeliveryFailed
from store import BreakGlassEvent
from store.model import OutboxKind, SentDM

if TYPE_CHECKING:
    from bot.pipeline import Pipeline

log = logging.getLogger(__name__)

# chat.update answers meaning this DM can never be updated (nothing left to do for it); any other failure,
# e.g. a DM channel that cannot be reached for now, leaves the step owed and retried
GONE = frozenset({"message_not_found", "cant_update_message"})


def record_dm(kind: OutboxKind, response: Any) -> dict[str, Any]:
    """The fields that record a sent DM (`BreakGlassEvent.dms`), to be updated when the event ends."""
    return {"dms": (SentDM(kind=kind.value, channel=str(response["channel"]), ts=str(response["ts"])),)}


def dm_invoked(pipeline: Pipeline, event: BreakGlassEvent) -> dict[str, Any]:
    if event.dm_ts:
        return {}  # already sent (recorded by an earlier attempt)
    if event.slack_user_id is None:
        raise DeliveryFailed("the event has no Slack user to send the DM to")
    text, body = blocks.dm_invoked(event, audit_broken=pipeline.audit_channels.error(event.audit_channel))
    response = pipeline.client.chat_postMessage(channel=event.slack_user_id, text=text, blocks=body)
    return {"dm_channel": response["channel"], "dm_ts": response["ts"]}


def dm_warning(pipeline: Pipeline, event: BreakGlassEvent) -> dict[str, Any]:
    if event.status.ended:
        return {}  # ended before its warning went out: nothing to warn about, no buttons to offer
    if not event.slack_user_id:
        raise DeliveryFailed("the event has no Slack user to message")
    text, body = blocks.dm_warning(event, pipeline.remaining(event))
    response = pipeline.client.chat_postMessage(channel=event.slack_user_id, text=text, blocks=body)
    return record_dm(OutboxKind.WARN_DM, response)


def dm_ended(pipeline: Pipeline, event: BreakGlassEvent) -> dict[str, Any]:
    """Every DM with buttons, updated to say the event ended (chat.update is idempotent: a retry after a
    partial failure updates the first ones again, harmlessly)."""
    if event.owes(OutboxKind.DM_INVOKED) and not event.dm_ts:  # stays owed, retried once the DM is sent
        raise DeliveryFailed("the invoker's DM has not been sent yet")
    sent = [(event.dm_channel, event.dm_ts)] if event.dm_channel and event.dm_ts else []
    sent += [(dm.channel, dm.ts) for dm in event.dms]
    text, body = blocks.dm_ended(event)
    for channel, ts in sent:
        try:
            pipeline.client.chat_update(channel=channel, ts=ts, text=text, blocks=body)
        except SlackApiError as exc:
            if exc.response.get("error") not in GONE:
                raise
            log.warning(
                "DM %s of event %s is gone, not updated (Slack: %s)",
                ts,
                event.id,
                exc.response.get("error"),
                extra={"event_id": event.id, "action": "dm_ended", "outcome": "gone"},
            )
    return {}


HANDLERS: dict[OutboxKind, Callable[[Pipeline, BreakGlassEvent], dict[str, Any]]] = {
    OutboxKind.DM_INVOKED: dm_invoked,
    OutboxKind.WARN_DM: dm_warning,
    OutboxKind.DM_ENDED: dm_ended,
}
