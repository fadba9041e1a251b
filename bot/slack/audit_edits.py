"""`message_changed` events in the audit channels (subscriptions `message.channels`, `message.groups`):
an edit of an event's root audit message that the bot did not make (bot/audit_feed/edits.py) is said in the
message's thread and undone from the store: the event owes an `audit_edited_thread` reply and an
`audit_update`, in one store write, delivered by the pipeline. Every other message event is acknowledged and
ignored (a subscription to channel messages brings them all)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from slack_bolt import App, BoltContext

from bot.slack.context import ctx_of
from store import BreakGlassEvent, EventNotFound, StoreError, is_event_id, mutate
from store.model import OutboxKind

if TYPE_CHECKING:
    from bot.audit_feed.sinks import AuditFeed
    from bot.delivery.deps import NoFeed

log = logging.getLogger(__name__)

_EVENT_ID = re.compile(r"\bevent ([0-9a-f]{16})\b")


def event_id_of(message: dict[str, Any]) -> str | None:
    """The event a root audit message is about: its metadata, else its notification text."""
    payload = (message.get("metadata") or {}).get("event_payload") or {}
    found = payload.get("event_id")
    if isinstance(found, str) and is_event_id(found):
        return found
    match = _EVENT_ID.search(str(message.get("text") or ""))
    return match.group(1) if match else None


def message_changed(feed: AuditFeed | NoFeed, event: dict[str, Any], context: BoltContext) -> None:
    from bot.audit_feed.edits import fingerprint, is_ours  # not at import (a Lambda cold start)
    from bot.audit_feed.notices import edit_notice

    ctx = ctx_of(context)
    message = event.get("message") or {}
    previous = event.get("previous_message") or {}
    channel, ts = event.get("channel"), message.get("ts")
    event_id = event_id_of(previous) or event_id_of(message)
    if not (channel and ts and event_id):
        return
    try:
        stored = ctx.service.store.get(event_id)
    except EventNotFound:
        return
    # only the root audit message of that very event (the id in a text proves nothing by itself)
    if stored.audit_channel != channel or stored.audit_ts != ts:
        return
    if is_ours(stored, message.get("text"), message.get("blocks")):
        return
    log.error(
        "the audit message of event %s was edited, not by breakglass (by %s): restoring it",
        event_id,
        (message.get("edited") or {}).get("user") or "unknown",
        extra={"event_id": event_id, "action": "audit_edit", "outcome": "foreign", "channel": channel},
    )

    def owe(ev: BreakGlassEvent) -> BreakGlassEvent:
        return ev.with_outbox(OutboxKind.AUDIT_EDITED_THREAD, OutboxKind.AUDIT_UPDATE)

    try:
        changed = mutate(ctx.service.store, event_id, owe)
    except StoreError as exc:
        log.error("could not owe the audit edit notice: %s", exc, extra={"event_id": event_id})
        return
    feed.add_notices(  # the audit feed's record of it (nothing without sinks)
        [
            edit_notice(
                event_id=event_id,
                channel=channel,
                ts=ts,
                edited_by=str((message.get("edited") or {}).get("user") or "unknown"),
                content=fingerprint(message.get("text"), message.get("blocks")),
                now=ctx.clock.now(),
            )
        ]
    )
    ctx.deliver_after_ack(changed)


def ignore(event: dict[str, Any]) -> None:
    """Every other message event of a subscribed channel."""


def register(app: App, lazy: list[Callable[..., None]], feed: AuditFeed | NoFeed) -> None:
    def changed(event: dict[str, Any], context: BoltContext) -> None:
        message_changed(feed, event, context)

    app.event({"type": "message", "subtype": "message_changed"})(ack=changed, lazy=lazy)
    app.event("message")(ignore)
