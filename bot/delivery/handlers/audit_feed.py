"""The audit feed's outbox step: the event's OCSF records to every sink that lacks them
(bot/audit_feed/sinks.py does the sending and the recording; a failed sink stays owed)."""

from __future__ import annotations

from bot.delivery.deps import DeliveryDeps
from bot.delivery.errors import DeliveryFailed
from bot.delivery.registry import Fields, Step
from store import BreakGlassEvent
from store.model import OutboxKind


def send_records(deps: DeliveryDeps, event: BreakGlassEvent) -> Fields:
    from bot.audit_feed.sinks import AuditFeed, FeedFailed, deliver  # only where a feed is configured

    if not isinstance(deps.audit_feed, AuditFeed):
        return {}  # owed before the feed's sinks were removed from the settings: nothing to send
    try:
        return deliver(deps.audit_feed, event)
    except FeedFailed as exc:
        raise DeliveryFailed(str(exc)) from exc


HANDLERS: dict[OutboxKind, Step] = {OutboxKind.AUDIT_FEED: Step(send_records)}
