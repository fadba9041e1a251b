"""The announcements: the root audit message (posted once, found again after an unknown outcome, updated as
the event changes), its thread replies, the invoker's DMs (each DM with buttons recorded when sent, and
updated by the one `dm_ended` step when the event ends however it ends), and the audit fallback (the audit channel is broken: the event's audit
message to the fallback channel and every security member by DM, each recipient recorded as it is sent)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from slack_sdk.errors import SlackApiError

from bot import blocks
from bot.delivery.deps import DeliveryDeps
from bot.delivery.errors import UNREACHABLE_RECIPIENT, DeliveryFailed, slack_error
from bot.delivery.registry import Fields, Handler, Step
from bot.durations import format_duration
from store import BreakGlassEvent, mutate
from store.model import OutboxKind, SentDM

log = logging.getLogger(__name__)

METADATA_EVENT_TYPE = "breakglass_event"
HISTORY_LOOKBACK = 200  # messages of the audit channel searched for a root message of unknown outcome

Build = Callable[[DeliveryDeps, BreakGlassEvent], tuple[str, blocks.Blocks]]


def audit_location(event: BreakGlassEvent) -> tuple[str, str]:
    """The root audit message's channel and ts; a step that needs it fails (stays owed) until it is posted."""
    if not event.audit_channel or not event.audit_ts:
        raise DeliveryFailed("the audit message has not been posted yet")
    return event.audit_channel, event.audit_ts


def find_audit_message(deps: DeliveryDeps, event: BreakGlassEvent) -> Fields | None:
    """The root audit message of `event` if an earlier attempt posted it (found by its metadata)."""
    assert event.audit_channel
    response = deps.client.conversations_history(
        channel=event.audit_channel,
        oldest=f"{event.created_at.timestamp() - 60:.6f}",
        limit=HISTORY_LOOKBACK,
        include_all_metadata=True,
    )
    for message in response.get("messages") or []:
        metadata = message.get("metadata") or {}
        payload = metadata.get("event_payload") or {}
        if metadata.get("event_type") == METADATA_EVENT_TYPE and payload.get("event_id") == event.id:
            return {"audit_channel": event.audit_channel, "audit_ts": message["ts"]}
    return None


def remaining(deps: DeliveryDeps, event: BreakGlassEvent) -> timedelta:
    """Time left on the access, rounded to whole minutes from one minute up (for warnings)."""
    left = max(event.expires_at - deps.clock.now(), timedelta(0))
    if left >= timedelta(minutes=1):
        return timedelta(seconds=round(left.total_seconds() / 60) * 60)
    return left


def post_audit_message(deps: DeliveryDeps, event: BreakGlassEvent) -> Fields:
    if event.audit_ts:
        return {}  # already posted (recorded by an earlier attempt)
    if not event.audit_channel:
        raise DeliveryFailed("no audit channel configured")
    if event.outbox_attempts > 1:  # an earlier attempt may have posted it without recording it
        found = find_audit_message(deps, event)
        if found is not None:
            return found
    text, body = blocks.audit_text(event), blocks.audit_message(event)
    response = deps.client.chat_postMessage(
        channel=event.audit_channel,
        text=text,
        blocks=body,
        metadata={"event_type": METADATA_EVENT_TYPE, "event_payload": {"event_id": event.id}},
    )
    remember_sent(deps, event, text, body)  # what the bot sent (edits by others show)
    return {"audit_channel": response["channel"], "audit_ts": response["ts"]}


def remember_sent(deps: DeliveryDeps, event: BreakGlassEvent, text: str, body: blocks.Blocks) -> None:
    """The fingerprint of what the bot sends as the root audit message (bot/audit_feed/edits.py)."""
    from bot.audit_feed.edits import remember  # not at import: a Lambda cold start does without it

    remember(deps.store, event.id, text, body)


def update_audit_message(deps: DeliveryDeps, event: BreakGlassEvent) -> Fields:
    channel, ts = audit_location(event)
    text, body = blocks.audit_text(event), blocks.audit_message(event)
    remember_sent(deps, event, text, body)  # before: its message_changed may come first
    deps.client.chat_update(channel=channel, ts=ts, text=text, blocks=body)
    return {}


def direct_message(build: Build) -> Handler:
    """A handler that DMs the invoker what `build` renders."""

    def send(deps: DeliveryDeps, event: BreakGlassEvent) -> Fields:
        text, body = build(deps, event)
        if not event.slack_user_id:
            raise DeliveryFailed("the event has no Slack user to message")
        deps.client.chat_postMessage(channel=event.slack_user_id, text=text, blocks=body)
        return {}

    return send


def thread_reply(build: Build) -> Handler:
    """A handler that replies in the root audit message's thread with what `build` renders."""

    def send(deps: DeliveryDeps, event: BreakGlassEvent) -> Fields:
        channel, ts = audit_location(event)
        text, body = build(deps, event)
        deps.client.chat_postMessage(channel=channel, thread_ts=ts, text=text, blocks=body)
        return {}

    return send


def recorded_dm(kind: OutboxKind, build: Build) -> Step:
    """The `Step` of a DM to the invoker with buttons (Extend, Close): recorded on the event when sent
    (`BreakGlassEvent.dms`) so that `dm_ended` updates it. Still owed once the event has ended, it is not
    sent (it would offer buttons for access that is gone)."""

    def send(deps: DeliveryDeps, event: BreakGlassEvent) -> Fields:
        if event.status.ended:
            return {}
        if not event.slack_user_id:
            raise DeliveryFailed("the event has no Slack user to message")
        text, body = build(deps, event)
        response = deps.client.chat_postMessage(channel=event.slack_user_id, text=text, blocks=body)
        return record_dm(kind, response)

    return Step(send)


def record_dm(kind: OutboxKind, response: Any) -> Fields:
    """The fields that record a sent DM with buttons (`BreakGlassEvent.dms`), updated when the event ends."""
    return {"dms": (SentDM(kind=kind.value, channel=str(response["channel"]), ts=str(response["ts"])),)}


def thread(build: Build) -> Step:
    """The `Step` of a thread reply in the audit channel."""
    return Step(thread_reply(build), audit_channel=True)


def dm(build: Build) -> Step:
    """The `Step` of a DM to the invoker."""
    return Step(direct_message(build))


# -- the audit fallback --------------------------------------------------------------------------------


def fallback_recipients(deps: DeliveryDeps) -> list[str]:
    """Where an audit fallback goes: the fallback channel, then every security member (by DM)."""
    members = sorted(deps.directory.members(deps.policy.security))
    return [c for c in [deps.policy.fallback_channel] if c] + members


def record_fallback_sent(deps: DeliveryDeps, event_id: str, recipient: str, version: int) -> None:
    """Record at once that `recipient` has the fallback of `version` (a retry never sends it twice)."""

    def change(ev: BreakGlassEvent) -> BreakGlassEvent | None:
        if ev.audit_fallback_version != version or recipient in ev.audit_fallback_sent:
            return None
        return ev.updated(audit_fallback_sent=(*ev.audit_fallback_sent, recipient))

    mutate(deps.store, event_id, change)


def post_audit_fallback(deps: DeliveryDeps, event: BreakGlassEvent) -> Fields:
    """The audit channel is broken: the event's audit message, saying so, to the fallback channel and to
    every security member by DM; each recipient is recorded as it is sent (never sent twice)."""
    error = deps.audit_channels.error(event.audit_channel) or "unknown"
    text, body = blocks.audit_fallback(event, event.audit_channel or "", error)
    recipients = fallback_recipients(deps)
    if not recipients:
        log.error(
            "audit channel %s is broken and nobody else can be told: set fallback_channel or security",
            event.audit_channel,
            extra={"event_id": event.id, "action": "audit_fallback", "outcome": "nobody"},
        )
    for recipient in recipients:
        if recipient in event.audit_fallback_sent:
            continue
        try:
            deps.client.chat_postMessage(channel=recipient, text=text, blocks=body)
        except SlackApiError as exc:
            if slack_error(exc) not in UNREACHABLE_RECIPIENT:
                raise
            log.error(
                "audit fallback cannot reach %s (Slack: %s)",
                recipient,
                slack_error(exc),
                extra={"event_id": event.id, "action": "audit_fallback", "outcome": "unreachable"},
            )
        record_fallback_sent(deps, event.id, recipient, event.audit_fallback_version)
    return {}


# -- the invoker's "access is active" DM, and the end of every DM with buttons ------------------------------

# chat.update answers meaning this DM can never be updated (nothing left to do for it); any other failure,
# e.g. a DM channel that cannot be reached for now, leaves the step owed and retried
GONE = frozenset({"message_not_found", "cant_update_message"})


def dm_invoked(deps: DeliveryDeps, event: BreakGlassEvent) -> Fields:
    if event.dm_ts:
        return {}  # already sent (recorded by an earlier attempt)
    if event.slack_user_id is None:
        raise DeliveryFailed("the event has no Slack user to send the DM to")
    text, body = blocks.dm_invoked(event, audit_broken=deps.audit_channels.error(event.audit_channel))
    response = deps.client.chat_postMessage(channel=event.slack_user_id, text=text, blocks=body)
    return {"dm_channel": response["channel"], "dm_ts": response["ts"]}


def dm_ended(deps: DeliveryDeps, event: BreakGlassEvent) -> Fields:
    """Every DM with buttons (the "access is active" DM, warnings, extensions, an incident's resolution),
    updated to say the event ended, without buttons. chat.update is idempotent: a retry after a partial
    failure updates the first ones again, harmlessly."""
    if event.owes(OutboxKind.DM_INVOKED) and not event.dm_ts:  # stays owed, retried once the DM is sent
        raise DeliveryFailed("the invoker's DM has not been sent yet")
    sent = [(event.dm_channel, event.dm_ts)] if event.dm_channel and event.dm_ts else []
    sent += [(dm.channel, dm.ts) for dm in event.dms]  # none recorded (e.g. older events): nothing to do
    update_dms(deps, event, sent, blocks.dm_ended(event), action="dm_ended")
    return {}


def update_dms(
    deps: DeliveryDeps,
    event: BreakGlassEvent,
    dms: list[tuple[str, str]],
    message: tuple[str, blocks.Blocks],
    *,
    action: str,
) -> None:
    """chat.update each of the DMs (channel, ts) of `event` to `message`. One Slack can never update (GONE)
    is logged and skipped; any other failure raises (the step stays owed; a retry updates the first ones
    again, harmlessly: chat.update is idempotent)."""
    text, body = message
    for channel, ts in dms:
        try:
            deps.client.chat_update(channel=channel, ts=ts, text=text, blocks=body)
        except SlackApiError as exc:
            if slack_error(exc) not in GONE:
                raise
            log.warning(
                "DM %s of event %s is gone, not updated (Slack: %s)",
                ts,
                event.id,
                slack_error(exc),
                extra={"event_id": event.id, "action": action, "outcome": "gone"},
            )


HANDLERS: dict[OutboxKind, Step] = {
    OutboxKind.AUDIT_POST: Step(post_audit_message, audit_channel=True),
    OutboxKind.AUDIT_UPDATE: Step(update_audit_message, audit_channel=True, renders_state=True),
    OutboxKind.ESCALATION: thread(
        lambda d, e: blocks.thread_escalation(
            e, list(d.policy.security), format_duration(d.policy.rate_limits.window)
        )
    ),
    OutboxKind.WARN_THREAD: thread(lambda d, e: blocks.thread_warning(e, remaining(d, e))),
    OutboxKind.WARN_DM: recorded_dm(OutboxKind.WARN_DM, lambda d, e: blocks.dm_warning(e, remaining(d, e))),
    OutboxKind.CLOSE_THREAD: thread(lambda d, e: blocks.thread_closed(e)),
    OutboxKind.CLOSE_DM: dm(lambda d, e: blocks.dm_closed(e)),
    OutboxKind.EXPIRE_THREAD: thread(lambda d, e: blocks.thread_expired(e)),
    OutboxKind.EXPIRE_DM: dm(lambda d, e: blocks.dm_expired(e)),
    OutboxKind.REVIEW_THREAD: thread(lambda d, e: blocks.thread_reviewed(e)),
    # an edit of the root audit message the bot did not make (bot/slack/audit_edits.py)
    OutboxKind.AUDIT_EDITED_THREAD: thread(lambda d, e: blocks.audit_edited(e)),
    OutboxKind.AUDIT_FALLBACK: Step(post_audit_fallback, renders_state=True),
    OutboxKind.DM_INVOKED: Step(dm_invoked),
    OutboxKind.DM_ENDED: Step(dm_ended),
}
