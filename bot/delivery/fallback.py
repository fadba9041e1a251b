"""The audit fallback, the engine's side: when Slack refuses a send to the audit channel for good, the event
owes an `audit_fallback` at once (its handler, `announcements.post_audit_fallback`, sends the event's audit
message to the policy's `fallback_channel` and to every security member by DM). The audit steps themselves
stay owed and are tried again every `AUDIT_RECHECK`, so the channel ends up complete once it works."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import timedelta

from bot.delivery.lease import Lease
from store import BreakGlassEvent, Store, StoreError, mutate
from store.model import OutboxKind

log = logging.getLogger(__name__)

AUDIT_RECHECK = timedelta(minutes=5)  # how often a broken audit channel is tried again


def owe_fallback(store: Store, event_id: str, lease: Lease, audit_kinds: Collection[OutboxKind]) -> None:
    """The audit channel is broken: owe an `audit_fallback` for the audit steps not yet announced
    another way (none again for the same steps at the next recheck; again after a new change)."""

    def change(ev: BreakGlassEvent) -> BreakGlassEvent | None:
        missed = max((e.version for e in ev.outbox if e.kind in audit_kinds), default=0)
        if missed <= ev.audit_fallback_version or not lease.held_in(ev):
            return None
        return ev.with_outbox(OutboxKind.AUDIT_FALLBACK, version=missed).updated(
            audit_fallback_version=missed, audit_fallback_sent=()
        )

    try:
        mutate(store, event_id, change)
    except StoreError as exc:  # not owed now: the next recheck owes it (nothing was marked announced)
        log.warning("could not owe the audit fallback: %s", exc, extra={"event_id": event_id})
