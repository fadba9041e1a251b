"""Outbox handlers of the incident kinds (bot.delivery.handlers registers them):

* ``INCIDENT_NOTE``: a note on the linked incident's timeline when access is taken and when it ends, with
  the event id (PagerDuty incident notes; incident.io's API cannot write its timeline: nothing sent).
  An unreachable tool raises (a ConnectionError): the step stays owed and is retried with backoff.
* ``INCIDENT_RESOLVED_DM``: the holder is told the incident resolved (``close_on_resolve: warn``), with a
  Close button."""

from __future__ import annotations

import logging
from typing import Any

from bot import blocks
from bot.delivery.deps import DeliveryDeps
from bot.delivery.handlers.announcements import record_dm
from bot.delivery.registry import Step
from bot.incidents.base import IncidentNotFound
from store import BreakGlassEvent, Status
from store.model import OutboxKind

log = logging.getLogger(__name__)


def note_text(event: BreakGlassEvent) -> str:
    who = event.invoker
    if event.status is Status.ACTIVE:
        did = "extended" if event.extensions else "took"
        return (
            f"breakglass: {who} {did} break-glass access to {event.profile} until "
            f"{event.expires_at:%Y-%m-%d %H:%M} UTC (event {event.id})."
        )
    how = f"closed by {event.closed_by}" if event.status is Status.CLOSED else "expired"
    return f"breakglass: {who}'s break-glass access to {event.profile} ended: {how} (event {event.id})."


def post_note(deps: DeliveryDeps, event: BreakGlassEvent) -> dict[str, Any]:
    link = event.incident_link
    provider = deps.incidents
    if link is None or not link.verified or link.provider != provider.name:
        return {}
    try:
        provider.add_note(link.id, note_text(event))
    except IncidentNotFound as exc:  # deleted, or refused: retrying cannot help
        log.warning("incident note not written: %s", exc.message, extra={"event_id": event.id})
    return {}


def resolved_dm(deps: DeliveryDeps, event: BreakGlassEvent) -> dict[str, Any]:
    if event.slack_user_id is None or event.status is not Status.ACTIVE or event.incident_link is None:
        return {}
    text, body = blocks.dm_incident_resolved(event)
    response = deps.client.chat_postMessage(channel=event.slack_user_id, text=text, blocks=body)
    return record_dm(OutboxKind.INCIDENT_RESOLVED_DM, response)  # updated when the event ends


HANDLERS: dict[OutboxKind, Step] = {
    OutboxKind.INCIDENT_NOTE: Step(post_note),
    OutboxKind.INCIDENT_RESOLVED_DM: Step(resolved_dm),
}
