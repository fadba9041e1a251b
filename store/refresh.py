"""What an extension owes besides the steps its writer asked for: the expiry warning DM already sent is
refreshed, so the holder's "expires in N minutes" message never keeps an expiry that no longer holds.

Decided here, on the event as stored at the moment of the extension's conditional write (never on a
caller's copy): every backend's `extend` (`store.base.TransitionStore.extend`) adds it in the same write as
the new expiry, so an extension from Slack, `breakglass-admin` or anywhere else owes it, and none can forget.
"""

from __future__ import annotations

from store.model import BreakGlassEvent, OutboxKind


def sent_warning(event: BreakGlassEvent) -> bool:
    """Has `event` an expiry warning DM to refresh: one recorded as sent (`dms`), or one still owed, which
    may be on its way at this moment (a send in flight is recorded after this write, showing the old expiry)."""
    return event.owes(OutboxKind.WARN_DM) or any(dm.kind == OutboxKind.WARN_DM.value for dm in event.dms)


def warning_refreshed(before: BreakGlassEvent, after: BreakGlassEvent) -> BreakGlassEvent:
    """`after` (the extension of `before`, as it is to be stored) owing WARN_DM_REFRESH when `before` has a
    warning DM (`sent_warning`) and the expiry moved; unchanged otherwise (no warning yet: nothing to
    refresh, and the warning owed again for the new expiry will show it)."""
    if before.expires_at == after.expires_at or not sent_warning(before):
        return after
    return after.with_outbox(OutboxKind.WARN_DM_REFRESH, version=before.version + 1)
