"""The owed steps of an extension (`BreakGlassService.extend`): the audit thread's reply and the invoker's
DM. The root audit message is refreshed by the ordinary `audit_update` owed in the same write, and the
scheduler re-times the warning and the expiry from the engine's follow-ups (`Scheduler.on_event`). What an
extension owes is decided by the use case (`bot.service.extension_outbox`)."""

from __future__ import annotations

from bot import blocks
from bot.delivery.handlers.announcements import recorded_dm, thread
from bot.delivery.registry import Step
from store.model import OutboxKind

HANDLERS: dict[OutboxKind, Step] = {
    OutboxKind.EXTEND_THREAD: thread(lambda d, e: blocks.thread_extended(e)),
    # recorded, and updated without its Close button when the event ends (announcements.dm_ended)
    OutboxKind.EXTEND_DM: recorded_dm(OutboxKind.EXTEND_DM, lambda d, e: blocks.dm_extended(e)),
}
