"""The outbox handlers, one module per subject, each exporting a `HANDLERS` table (`OutboxKind -> Step`):

* `announcements`: the root audit message, its update and thread replies, the invoker's DMs, the fallback;
* `access`: the AWS grant and revoke, their receipts and failure alarms;
* `evidence`: the activity digest;
* `extend`: an extension's thread reply and DM;
* `warn_refresh`: the expiry warning DM updated after an extension;
* `incidents`: the incident tool's timeline note, the "incident resolved" DM;
* `audit_feed`: the event's OCSF records to the audit feed's sinks;
* `drift`: the announcement of what the drift check found (and the drift check itself);
* `schedules`: Lambda's one-time warning and expiry schedules (bot/schedules.py).

Handlers depend on `bot.delivery.deps.DeliveryDeps`, never on the engine. A new kind: a handler in its own
module and one line below; `registry()` refuses a kind without a handler or with two.
"""

from __future__ import annotations

from bot.delivery.handlers import (
    access,
    announcements,
    audit_feed,
    drift,
    evidence,
    extend,
    incidents,
    schedules,
    warn_refresh,
)
from bot.delivery.registry import Registry


def registry() -> Registry:
    """Every outbox kind's handler, checked complete (the engine is handed this)."""
    return Registry(
        announcements.HANDLERS,
        access.HANDLERS,
        evidence.HANDLERS,
        extend.HANDLERS,
        warn_refresh.HANDLERS,  # the warning DM refreshed after an extension
        incidents.HANDLERS,
        schedules.HANDLERS,  # Lambda's one-time expiry schedules
        audit_feed.HANDLERS,  # the OCSF audit feed's sinks (bot/audit_feed/sinks.py)
        tasks=drift.TASK_HANDLERS,
    )
