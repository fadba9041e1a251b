"""The expiry warning DM refreshed after an extension (WARN_DM_REFRESH, owed by the store's `extend` when
a warning DM was sent: store/refresh.py): every warning DM recorded on the event (`BreakGlassEvent.dms`)
is updated (chat.update) to say it was extended and when it now expires, its Extend and Close buttons kept.

It renders the event as stored now (`renders_state`: a send recorded at version V satisfies every refresh
owed at <= V; two quick extensions never leave a DM showing the first one's expiry). Once the event has ended it sends nothing: `dm_ended` updates
the same DMs without buttons. A DM Slack can never update (deleted) is logged and skipped; any other failure
leaves the step owed and retried. chat.update is idempotent: a retry after a partial failure shows the same
text again in the DMs already updated, never a second message."""

from __future__ import annotations

from bot import blocks
from bot.delivery.deps import DeliveryDeps
from bot.delivery.handlers.announcements import update_dms
from bot.delivery.registry import Fields, Step
from store import BreakGlassEvent
from store.model import OutboxKind


def refresh_warnings(deps: DeliveryDeps, event: BreakGlassEvent) -> Fields:
    if event.status.ended or not event.extensions:
        return {}
    warnings = [dm for dm in event.dms if dm.kind == OutboxKind.WARN_DM.value]
    if not warnings:  # the warning owed at the extension was not sent: when it is, it shows the new expiry
        return {}
    located = [(dm.channel, dm.ts) for dm in warnings]
    update_dms(deps, event, located, blocks.dm_warning_extended(event), action="warn_dm_refresh")
    return {}


HANDLERS: dict[OutboxKind, Step] = {
    OutboxKind.WARN_DM_REFRESH: Step(refresh_warnings, renders_state=True),
}
