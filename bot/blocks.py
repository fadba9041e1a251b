"""Every piece of Block Kit the bot sends: messages, modals, App Home. Built with slack_sdk's models.

User-supplied text (justification, incident, close reason, review notes, identities) goes through
`escape()` wherever it lands in mrkdwn, so nobody can ping `<!channel>` or fake a link through it.
Times are rendered with Slack date tokens so every reader sees their own local time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from bot import ids
from bot.durations import format_duration, human_duration
from store import BreakGlassEvent, ReasonCode, Status
from store.model import MAX_CLOSE_REASON, MAX_INCIDENT, MAX_JUSTIFICATION, MAX_REVIEW_NOTES, MIN_JUSTIFICATION

MAX_SECTION = 3000
_STATUS_LABEL = {Status.ACTIVE: "ACTIVE", Status.CLOSED: "CLOSED", Status.EXPIRED: "EXPIRED"}
_STATUS_EMOJI = {Status.ACTIVE: ":rotating_light:", Status.CLOSED: ":lock:", Status.EXPIRED: ":hourglass:"}
REASON_LABELS = {
    ReasonCode.INCIDENT: "Incident",
    ReasonCode.MAINTENANCE: "Maintenance",
    ReasonCode.SECURITY: "Security",
    ReasonCode.RECOVERY: "Recovery",
    ReasonCode.OTHER: "Other",
}
Blocks = list[dict[str, Any]]


# -- text helpers ---------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Escape the three characters Slack mrkdwn treats as control (&, <, >)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def quote(text: str) -> str:
    """Escaped text as a mrkdwn block quote (each line quoted, so text cannot break out of it)."""
    return "\n".join("&gt; " + line for line in escape(text).splitlines() or [""])


def user(user_id: str) -> str:
    return f"<@{user_id}>" if user_id[:1] in ("U", "W") and user_id.isalnum() else escape(user_id)


def invoker_of(event: BreakGlassEvent) -> str:
    """Who invoked `event`: a Slack mention, or for a foreign (Sentinel) event its invoker as plain
    text with where it came from (no Slack user to mention)."""
    if event.slack_user_id is None:
        return f"{escape(event.invoker)} (via {escape(event.source or 'another tool')})"
    return user(event.slack_user_id)


def group(group_id: str) -> str:
    return f"<!subteam^{group_id}>" if group_id.isalnum() else escape(group_id)


def date(value: datetime, fmt: str = "{date_short_pretty} {time}") -> str:
    """A Slack date token (reader's local time) with a UTC fallback for clients that cannot render it."""
    fallback = value.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(value.timestamp())}^{fmt}|{fallback}>"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(text: str) -> PlainTextObject:
    return PlainTextObject(text=text, emoji=True)


def _dump(blocks: list[Block]) -> Blocks:
    return [b.to_dict() for b in blocks]


def _mrkdwn_section(text: str, accessory: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if accessory is not None:
        block["accessory"] = accessory
    return block


def _mrkdwn_context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


_DIVIDER: dict[str, Any] = {"type": "divider"}


def justification_section(event: BreakGlassEvent) -> SectionBlock:
    return SectionBlock(
        text=MarkdownTextObject(text=_truncate("*Justification*\n" + quote(event.justification), MAX_SECTION))
    )


def reason_label(event: BreakGlassEvent) -> str:
    return REASON_LABELS[event.reason_code]


# -- buttons ----------------------------------------------------------------------------------------


def close_button(event: BreakGlassEvent) -> ButtonElement:
    return ButtonElement(
        text="Close",
        action_id=ids.ACTION_CLOSE,
        value=event.id,
        style="danger",
    )


def extend_button(event: BreakGlassEvent) -> ButtonElement:
    return ButtonElement(text="Extend", action_id=ids.ACTION_EXTEND, value=event.id)


def review_button(event: BreakGlassEvent) -> ButtonElement:
    return ButtonElement(text="Mark reviewed", action_id=ids.ACTION_REVIEW, value=event.id, style="primary")


# -- the audit message -------------------------------------------------------------------------------


def audit_header(event: BreakGlassEvent) -> str:
    return _truncate(f"Break-glass {event.profile}: {_STATUS_LABEL[event.status]}", 150)


def audit_text(event: BreakGlassEvent) -> str:
    """Notification fallback text (also escaped: it is rendered as mrkdwn in notifications)."""
    return escape(
        f"Break-glass {_STATUS_LABEL[event.status].lower()}: {event.invoker} on {event.profile} "
        f"({event.reason_code.value}), event {event.id}"
    )


def event_fields(event: BreakGlassEvent) -> list[MarkdownTextObject]:
    fields = [
        f"*Invoker*\n{invoker_of(event)}"
        + (
            f" ({escape(event.invoker)})"
            if event.slack_user_id is not None and event.invoker != event.slack_user_id
            else ""
        ),
        f"*Profile*\n`{escape(event.profile)}`",
        f"*Reason*\n{reason_label(event)}",
        f"*Duration*\n{human_duration(event.duration)}"
        + (f" + {human_duration(event.extended_by)} extended" if event.extensions else ""),
        f"*{'Expires' if event.status is Status.ACTIVE else 'Was due to expire'}*\n{date(event.expires_at)}",
        f"*Event id*\n`{event.id}`",
    ]
    if event.incident_link is not None:
        fields.append(f"*Incident*\n{incident_link(event)}")
    elif event.incident:
        fields.append(f"*Incident*\n{escape(_truncate(event.incident, 200))}")
    if event.oncall is not None:
        shown = {"yes": "yes", "no": "no", "unknown": ":warning: unknown (the incident tool was unreachable)"}
        fields.append(f"*On call*\n{shown[event.oncall]}")
    if event.status is not Status.ACTIVE and event.ended_at:
        fields.append(f"*Ended*\n{date(event.ended_at)}")
    return [MarkdownTextObject(text=f) for f in fields[:10]]


def audit_message(event: BreakGlassEvent) -> Blocks:
    blocks: list[Block] = [
        HeaderBlock(text=_plain(f"{_STATUS_EMOJI[event.status]} {audit_header(event)}")),
        SectionBlock(fields=event_fields(event)),
        justification_section(event),
    ]
    if event.escalated:
        blocks.append(
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text=":warning: *Escalated*: repeated break-glass use within the rate-limit window"
                    )
                ]
            )
        )
    if event.status is Status.CLOSED:
        blocks.append(
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text=_truncate(
                            f"Closed by {user(event.closed_by or '')} {date(event.ended_at or event.updated_at)}: "
                            f"{escape(event.closed_reason or '')}",
                            MAX_SECTION,
                        )
                    )
                ]
            )
        )
    elif event.status is Status.EXPIRED:
        blocks.append(
            ContextBlock(
                elements=[MarkdownTextObject(text=f"Expired {date(event.ended_at or event.expires_at)}")]
            )
        )
    if event.reviewed_at is not None:
        blocks.append(
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text=_truncate(
                            f":white_check_mark: Reviewed by {user(event.reviewed_by or '')} {date(event.reviewed_at)}: "
                            f"{escape(event.review_notes or '')}",
                            MAX_SECTION,
                        )
                    )
                ]
            )
        )
    if event.status is Status.ACTIVE:
        blocks.append(ActionsBlock(block_id=ids.BLOCK_EVENT_ACTIONS, elements=[close_button(event)]))
    elif event.reviewed_at is None:
        blocks.append(ActionsBlock(block_id=ids.BLOCK_EVENT_ACTIONS, elements=[review_button(event)]))
    return _dump(blocks)


# -- thread replies and DMs ---------------------------------------------------------------------------


def _section(text: str) -> Blocks:
    # plain dicts on the delivery path (slack_sdk's models cost more than the rest of the message here);
    # tests/test_blocks_plain.py checks them with slack_sdk's validators
    return [_mrkdwn_section(_truncate(text, MAX_SECTION))]


def thread_escalation(event: BreakGlassEvent, security: list[str], count_window: str) -> tuple[str, Blocks]:
    mentions = " ".join(group(g) if g.startswith("S") else user(g) for g in security) or "security"
    if event.extensions and event.extensions[-1].escalated:  # an extension crossed `escalate_after`
        did = f"has invoked or extended break-glass repeatedly within {count_window}"
        what = f"this event ({event.id}), just extended by {user(event.extensions[-1].by)},"
    else:
        did, what = f"has invoked break-glass repeatedly within {count_window}", f"this event ({event.id})"
    text = f":warning: {mentions}: escalation. {invoker_of(event)} {did}; {what} needs attention."
    return text, _section(text)


def thread_warning(event: BreakGlassEvent, remaining: timedelta) -> tuple[str, Blocks]:
    text = f":alarm_clock: Expires in {human_duration(remaining)} ({date(event.expires_at, '{time}')})."
    return text, _section(text)


def thread_closed(event: BreakGlassEvent) -> tuple[str, Blocks]:
    text = f":lock: Closed by {user(event.closed_by or '')}: {escape(event.closed_reason or '')}"
    return text, _section(text)


def thread_expired(event: BreakGlassEvent) -> tuple[str, Blocks]:
    text = f":hourglass: Expired {date(event.ended_at or event.expires_at)}; access ended."
    return text, _section(text)


def thread_reviewed(event: BreakGlassEvent) -> tuple[str, Blocks]:
    text = (
        f":white_check_mark: Reviewed by {user(event.reviewed_by or '')}: {escape(event.review_notes or '')}"
    )
    return text, _section(text)


def audit_edited(event: BreakGlassEvent) -> tuple[str, Blocks]:
    """Someone other than breakglass edited the audit message above (bot/slack/audit_edits.py)."""
    text = (
        ":warning: The audit message above was edited, and not by breakglass. It has been restored from "
        "the store: the store and the OCSF audit feed hold the record, not this channel's messages."
    )
    return text, _section(text)


# -- AWS access (bot/access): receipts, failures, drift ----------------------------------------------


def _took(delta: timedelta) -> str:
    seconds = max(delta.total_seconds(), 0.0)
    return f"{seconds:.1f} s" if seconds < 60 else human_duration(delta)


def _mentions(security: list[str]) -> str:
    return " ".join(group(g) if g.startswith("S") else user(g) for g in security) or "security"


def _assignment_line(access: EventAccess) -> str:
    return (
        f"account `{escape(access.account)}`, permission set `{escape(access.permission_set)}`, "
        f"identity-store user `{escape(access.user_id)}`"
        + (f" ({escape(access.email)})" if access.email else "")
    )


def access_granted(event: BreakGlassEvent) -> tuple[str, Blocks]:
    """The grant receipt (audit thread and DM): what was assigned, when, and how long it took."""
    access = event.access
    assert access is not None and access.granted_at is not None
    if access.pre_existing:
        text = (
            f":key: AWS access: {_assignment_line(access)} was already assigned before this event "
            "(standing access); breakglass assigned nothing and will not remove it."
        )
        return text, _section(text)
    aws_took = access.granted_at - (access.grant_requested_at or access.granted_at)
    text = (
        f":key: AWS access granted: {_assignment_line(access)}, assigned "
        f"{date(access.granted_at, '{date_short_pretty} {time_secs}')}, "
        f"{_took(access.granted_at - event.created_at)} after the invocation (AWS took {_took(aws_took)})."
        + (f" It succeeded after {access.failures} failed attempts." if access.failures else "")
    )
    return text, _section(text)


def access_revoked(event: BreakGlassEvent) -> tuple[str, Blocks]:
    """The revocation receipt (audit thread): assignment deleted at T, sessions issued before T denied at T'."""
    access = event.access
    assert access is not None and access.revoked_at is not None
    fmt = "{date_short_pretty} {time_secs}"
    if access.kept == "never-granted":
        text = ":unlock: AWS access: nothing to revoke (breakglass never assigned anything for this event)."
    elif access.kept == "pre-existing":
        text = (
            f":unlock: AWS access: {_assignment_line(access)} was standing access before this event; "
            "left in place, as it was found."
        )
    elif access.kept == "held-by-other-events":
        text = (
            f":unlock: AWS access: {_assignment_line(access)} is kept because another active break-glass "
            "event of this person holds it; it is revoked when the last one ends."
        )
    else:
        ended = access.revoked_at - (event.ended_at or access.revoked_at)
        text = (
            f":lock: AWS access revoked: {_assignment_line(access)}. Assignment deleted "
            f"{date(access.assignment_deleted_at or access.revoked_at, fmt)}; sessions issued before "
            f"{date(access.sessions_issued_before or access.revoked_at, fmt)} denied "
            f"{date(access.sessions_denied_at or access.revoked_at, fmt)} "
            f"({_took(ended)} after the event ended)."
            + (f" It succeeded after {access.failures} failed attempts." if access.failures else "")
        )
    return text, _section(text)


def access_failed(
    event: BreakGlassEvent, step: str, error: str, security: list[str], *, repeat: int = 0
) -> tuple[str, Blocks]:
    """A grant or revoke that failed (audit thread, mentioning security): the AWS error, and that it is
    retried. `repeat` > 0: a revoke still failing, alarmed again."""
    access = event.access
    assert access is not None
    if step == "revoke":
        head = ":rotating_light: AWS access NOT revoked" + (
            f" (still failing, alarm {repeat + 1})" if repeat else ""
        )
        tail = (
            "The person may still have access. breakglass keeps retrying and alarms again until it works; "
            "revoke it by hand in IAM Identity Center if it does not."
        )
    else:
        head = ":warning: AWS access could not be granted"
        tail = "breakglass keeps retrying until it works or the event ends."
    text = f"{head}: {_assignment_line(access)}. {_mentions(security)}: AWS said {quote(error)}\n{tail}"
    return text, _section(text)


def dm_access_failed(event: BreakGlassEvent, step: str, error: str) -> tuple[str, Blocks]:
    """The same failure as a DM (the invoker for a grant; each security member for a revoke)."""
    access = event.access
    assert access is not None
    if step == "revoke":
        text = (
            f":rotating_light: Revoking the AWS access of break-glass event `{event.id}` "
            f"({invoker_of(event)}, `{escape(event.profile)}`) is failing: {_assignment_line(access)}. "
            f"AWS said:\n{quote(error)}\nbreakglass keeps retrying; revoke it by hand if it does not work."
        )
    else:
        text = (
            f":warning: Your AWS access for break-glass event `{event.id}` (`{escape(event.profile)}`) could "
            f"not be granted yet. AWS said:\n{quote(error)}\nbreakglass keeps retrying and tells you when "
            "it works; security has been told."
        )
    return text, _section(text)


def access_drift(report: ReconcileReport, security: list[str]) -> tuple[str, Blocks]:
    """A reconcile pass that found something (audit channel, mentioning security)."""
    lines = []
    for drift in report.drift:
        what = (
            f"{escape(drift.principal_type.lower())} `{escape(drift.principal_id)}` on account "
            f"`{escape(drift.account)}`, permission set `{escape(drift.permission_set)}`"
        )
        if drift.removed:
            lines.append(f"• assignment made outside breakglass, removed (sessions denied): {what}")
        else:
            lines.append(
                f"• assignment made outside breakglass, NOT removed: {what}: {escape(drift.error or '')}"
            )
    for receipt in report.regranted:
        lines.append(f"• event `{escape(receipt.event_id)}`'s assignment had vanished; granted again")
    for item in report.missing:
        lines.append(f"• event `{escape(item.event_id)}`'s assignment has vanished and was not granted again")
    for error in report.errors:
        lines.append(f"• {escape(error)}")
    shown = lines[:20] + ([f"…and {len(lines) - 20} more"] if len(lines) > 20 else [])
    text = (
        f":mag: {_mentions(security)}: AWS access drift on the break-glass permission sets "
        f"({date(report.checked_at, '{date_short_pretty} {time_secs}')}):\n" + "\n".join(shown)
    )
    return text, _section(text)


def _with_close_button(text: str, event: BreakGlassEvent) -> Blocks:
    return [
        _mrkdwn_section(text),
        {"type": "actions", "block_id": ids.BLOCK_EVENT_ACTIONS, "elements": [close_button(event).to_dict()]},
    ]


def audit_broken_note(error: str | None) -> str:
    """What an invoker is told while the audit channel is known broken (empty when it is not)."""
    if error is None:
        return ""
    return (
        f" :warning: The security audit channel is broken (Slack: `{escape(error)}`), so security has been "
        "told directly by DM instead."
    )


def dm_invoked(event: BreakGlassEvent, *, audit_broken: str | None = None) -> tuple[str, Blocks]:
    announced = (
        "Every step is posted to the security audit channel."
        if audit_broken is None
        else audit_broken_note(audit_broken).strip()
    )
    text = (
        f":rotating_light: Break-glass access to `{escape(event.profile)}` is active until {date(event.expires_at)} "
        f"(event `{event.id}`{_for_incident(event)}). {announced} Close it as soon as you are done."
    )
    return text, _with_close_button(text, event)


def _for_incident(event: BreakGlassEvent) -> str:
    return f", incident {incident_link(event)}" if event.incident_link is not None else ""


def audit_fallback(event: BreakGlassEvent, channel: str, error: str) -> tuple[str, Blocks]:
    """The announcement an audit channel missed, sent to the fallback channel and to security by DM: the
    event's audit message as it is now (without its buttons), under a warning that names the channel."""
    warning = (
        f":rotating_light: *The break-glass audit channel <#{channel}> is broken* (Slack: `{escape(error)}`): "
        "breakglass cannot post there, so this announcement comes to you directly. Unarchive the channel or "
        "invite the bot back (or set another `audit_channel`); what it missed is posted there once it works."
    )
    body = [b for b in audit_message(event) if b.get("type") != "actions"]
    text = f"Audit channel broken. {audit_text(event)}"
    return text, [*_section(warning), *body]


def dm_warning(event: BreakGlassEvent, remaining: timedelta) -> tuple[str, Blocks]:
    text = (
        f":alarm_clock: Your break-glass access to `{escape(event.profile)}` expires in {human_duration(remaining)} "
        f"({date(event.expires_at, '{time}')}), event `{event.id}`."
    )
    return text, [
        _mrkdwn_section(text),
        {
            "type": "actions",
            "block_id": ids.BLOCK_EVENT_ACTIONS,
            "elements": [extend_button(event).to_dict(), close_button(event).to_dict()],
        },
    ]


def dm_warning_extended(event: BreakGlassEvent) -> tuple[str, Blocks]:
    """An expiry warning DM once the event was extended (WARN_DM_REFRESH): the new expiry, who extended it,
    its Extend and Close buttons kept (they act on the event as it is now)."""
    ext = event.extensions[-1]
    who = "you" if ext.by == event.slack_user_id else user(ext.by)
    text = (
        f":stopwatch: Your break-glass access to `{escape(event.profile)}` (event `{event.id}`) was extended by "
        f"{human_duration(ext.duration)} by {who}: it now expires {date(event.expires_at)}, not as this warning "
        "said. You will be warned again before then."
    )
    return text, [
        _mrkdwn_section(text),
        {
            "type": "actions",
            "block_id": ids.BLOCK_EVENT_ACTIONS,
            "elements": [extend_button(event).to_dict(), close_button(event).to_dict()],
        },
    ]


def thread_extended(event: BreakGlassEvent) -> tuple[str, Blocks]:
    ext = event.extensions[-1]
    text = (
        f":stopwatch: Extended by {human_duration(ext.duration)} by {user(ext.by)}: {escape(ext.reason)}\n"
        f"New expiry {date(event.expires_at)} ({human_duration(event.lifetime)} in all"
        + (", escalated: repeated break-glass use" if ext.escalated else "")
        + ")."
    )
    return text, _section(text)


def dm_extended(event: BreakGlassEvent) -> tuple[str, Blocks]:
    ext = event.extensions[-1]
    who = "You extended" if ext.by == event.slack_user_id else f"{user(ext.by)} extended"
    text = (
        f":stopwatch: {who} your break-glass access to `{escape(event.profile)}` (event `{event.id}`) by "
        f"{human_duration(ext.duration)}: it now expires {date(event.expires_at)}."
    )
    return text, _with_close_button(text, event)


def incident_link(event: BreakGlassEvent) -> str:
    """The linked incident: its reference as a link to the tool, its title, and what was checked."""
    link = event.incident_link
    assert link is not None
    ref = escape(_truncate(link.reference, 100))
    url = link.url or ""
    text = f"<{url}|{ref}>" if url.startswith("https://") and not any(c in url for c in "<>|") else ref
    if link.title:
        text += f" {escape(_truncate(link.title, 120))}"
    if not link.verified:
        text += " (:warning: unverified: the incident tool was unreachable)"
    return text


def dm_incident_resolved(event: BreakGlassEvent) -> tuple[str, Blocks]:
    link = event.incident_link
    ref = escape(link.reference) if link else "the incident"
    text = (
        f":white_check_mark: Incident {ref} resolved, and your break-glass access to `{escape(event.profile)}` "
        f"(event `{event.id}`) is still active until {date(event.expires_at, '{time}')}. Close it if you are done, "
        "or extend it if the work goes on."
    )
    return text, [
        _mrkdwn_section(text),
        {
            "type": "actions",
            "block_id": ids.BLOCK_EVENT_ACTIONS,
            "elements": [close_button(event).to_dict(), extend_button(event).to_dict()],
        },
    ]


def extended_now(event: BreakGlassEvent) -> str:
    ext = event.extensions[-1]
    return (
        f":stopwatch: Event `{event.id}` on `{escape(event.profile)}` extended by {human_duration(ext.duration)}: "
        f"it now expires {date(event.expires_at)}."
    )


def extend_modal(event: BreakGlassEvent, private_metadata: str, durations: list[timedelta]) -> dict[str, Any]:
    """The small Extend modal: the durations that still fit the profile's bounds, and a reason."""
    return View(
        type="modal",
        callback_id=ids.CALLBACK_EXTEND,
        title="Extend break-glass",
        submit="Extend",
        close="Cancel",
        private_metadata=private_metadata,
        blocks=[
            SectionBlock(text=MarkdownTextObject(text=event_line(event))),
            InputBlock(
                block_id=ids.EXTEND_DURATION,
                label="Extend by",
                element=StaticSelectElement(
                    action_id=ids.EXTEND_DURATION,
                    placeholder="Choose how much longer",
                    options=_options([(str(int(d.total_seconds())), human_duration(d)) for d in durations]),
                ),
            ),
            InputBlock(
                block_id=ids.EXTEND_REASON,
                label="Why is more time needed?",
                hint=f"{MIN_JUSTIFICATION}-{MAX_JUSTIFICATION} characters; shown to security.",
                element=PlainTextInputElement(
                    action_id=ids.EXTEND_REASON,
                    multiline=True,
                    min_length=MIN_JUSTIFICATION,
                    max_length=MAX_JUSTIFICATION,
                ),
            ),
        ],
    ).to_dict()


def dm_closed(event: BreakGlassEvent) -> tuple[str, Blocks]:
    text = (
        f":lock: Your break-glass access to `{escape(event.profile)}` (event `{event.id}`) was closed by "
        f"{user(event.closed_by or '')}: {escape(event.closed_reason or '')}"
    )
    return text, _section(text)


def dm_expired(event: BreakGlassEvent) -> tuple[str, Blocks]:
    text = (
        f":hourglass: Your break-glass access to `{escape(event.profile)}` (event `{event.id}`) has expired."
    )
    return text, _section(text)


def dm_ended(event: BreakGlassEvent) -> tuple[str, Blocks]:
    """The invoker's "access is active" DM once the event ended: says how, without its buttons."""
    how = (
        f"was closed by {user(event.closed_by or '')} {date(event.ended_at or event.updated_at)}"
        if event.status is Status.CLOSED
        else f"expired {date(event.ended_at or event.updated_at)}"
    )
    text = f":lock: Break-glass access to `{escape(event.profile)}` (event `{event.id}`) {how}. It is no longer active."
    return text, _section(text)


# -- ephemeral replies ---------------------------------------------------------------------------------


def event_line(event: BreakGlassEvent) -> str:
    when = (
        f"until {date(event.expires_at)}"
        if event.status is Status.ACTIVE
        else f"{event.status.value} {date(event.ended_at or event.updated_at)}"
    )
    who = invoker_of(event)
    return f"`{event.id}` {who} on `{escape(event.profile)}` ({event.reason_code.value}) {when}{_for_incident(event)}"


def granted(event: BreakGlassEvent, *, audit_broken: str | None = None) -> str:
    return (
        f":rotating_light: Break-glass access to `{escape(event.profile)}` granted until "
        f"{date(event.expires_at)} (event `{event.id}`). It is announced to security; "
        "close it when you are done." + audit_broken_note(audit_broken)
    )


def closed_now(event: BreakGlassEvent) -> str:
    """The closer's confirmation (slash command and Close modal)."""
    return f":lock: Closed event `{event.id}` on `{escape(event.profile)}`: <@{event.slack_user_id}>'s access has ended."


def already_ended(event: BreakGlassEvent) -> str:
    if event.closed_by:
        return (
            f"Event `{event.id}` was already closed by {user(event.closed_by)} "
            f"{date(event.ended_at or event.updated_at)}."
        )
    return f"Event `{event.id}` already {event.status.value} {date(event.ended_at or event.expires_at)}."


def event_list(title: str, events: list[BreakGlassEvent], empty: str) -> tuple[str, Blocks]:
    if not events:
        return empty, _section(empty)
    lines = [f"*{escape(title)}*"] + [event_line(e) for e in events[:40]]
    text = "\n".join(lines)
    return text, _section(text)


def event_status(event: BreakGlassEvent) -> tuple[str, Blocks]:
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(text=f"*{escape(audit_header(event))}*")),
        SectionBlock(fields=event_fields(event)),
        justification_section(event),
    ]
    if event.status is Status.CLOSED:
        blocks.append(
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text=_truncate(
                            f"Closed by {user(event.closed_by or '')}: {escape(event.closed_reason or '')}",
                            MAX_SECTION,
                        )
                    )
                ]
            )
        )
    return audit_text(event), _dump(blocks)


def message(text: str) -> tuple[str, Blocks]:
    """An ephemeral reply built from bot-authored mrkdwn (callers escape any user text they include)."""
    return text, _section(text)


# The one-line example shown in help and usage; it works as typed under the built-in policy (tested).
EXAMPLE = "/breakglass prod 1h incident incident=INC-4242 DB failover stuck, need to promote replica"

HELP = (
    "*Break-glass*: emergency access to an AWS profile, announced to security.\n"
    "`/breakglass` — open the form\n"
    "`/breakglass &lt;profile&gt; &lt;duration&gt; &lt;reason&gt; &lt;justification…&gt;` — invoke in one line "
    f"(`incident=&lt;ticket or URL&gt;` anywhere after the reason), e.g. `{EXAMPLE}`\n"
    "`/breakglass list` — active events (yours; everyone's for incident commanders and security)\n"
    "`/breakglass status &lt;id&gt;` — one event\n"
    "`/breakglass close &lt;id&gt; [reason…]` — end access now (without a reason: the close form)\n"
    "`/breakglass extend &lt;id&gt; &lt;duration&gt; &lt;reason…&gt;` — more time on active access\n"
    "`/breakglass history [profile]` — recent events (everyone's for incident commanders and security)\n"
    "`/breakglass review` — ended events awaiting review (security)\n"
    "`/breakglass help` — this message"
)


# -- modals ------------------------------------------------------------------------------------------------


def _options(pairs: list[tuple[str, str]]) -> list[Option]:
    return [Option(value=value, text=_truncate(label, 75)) for value, label in pairs]


def invoke_modal(
    profiles: list[tuple[str, str]],
    durations: list[timedelta],
    *,
    private_metadata: str = "",
    incident_hint: str = "Ticket id or URL",
    selected: str | None = None,
) -> dict[str, Any]:
    """The /breakglass modal. `profiles` are (name, label) the user may invoke; durations those offered
    (the chosen profile's when `selected` names one, which is then preselected)."""
    options = _options(profiles[:100])
    initial = next((o for o in options if o.value == selected), None)
    blocks: list[Block] = [
        InputBlock(
            block_id=ids.PROFILE,
            label="Profile",
            dispatch_action=True,  # choosing one updates the durations to its own (bot.slack.invoke_form)
            element=StaticSelectElement(
                action_id=ids.PROFILE, placeholder="Choose a profile", options=options, initial_option=initial
            ),
        ),
        InputBlock(
            block_id=ids.REASON,
            label="Reason",
            element=StaticSelectElement(
                action_id=ids.REASON,
                placeholder="Why do you need access?",
                options=_options([(r.value, REASON_LABELS[r]) for r in ReasonCode]),
            ),
        ),
        InputBlock(
            block_id=ids.JUSTIFICATION,
            label="Justification",
            hint="20 to 1000 characters: what is broken and what you will do. Security reads this.",
            element=PlainTextInputElement(
                action_id=ids.JUSTIFICATION,
                multiline=True,
                min_length=MIN_JUSTIFICATION,
                max_length=MAX_JUSTIFICATION,
            ),
        ),
        InputBlock(
            block_id=ids.DURATION,
            label="Duration",
            hint="Access ends automatically; close it earlier when you are done.",
            element=StaticSelectElement(
                action_id=ids.DURATION,
                placeholder="How long?",
                options=_options(
                    [(str(int(d.total_seconds())), format_duration(d)) for d in durations[:100]]
                ),
            ),
        ),
        InputBlock(
            block_id=ids.INCIDENT,
            label="Incident",
            optional=True,
            hint=f"{incident_hint} (required for some profiles).",
            element=PlainTextInputElement(action_id=ids.INCIDENT, max_length=MAX_INCIDENT),
        ),
    ]
    view = View(
        type="modal",
        callback_id=ids.CALLBACK_INVOKE,
        title="Break glass",
        submit="Get access",
        close="Cancel",
        private_metadata=private_metadata,
        blocks=blocks,
    )
    return view.to_dict()


def invoke_form_again(
    form: dict[str, Any], entered: dict[str, str | None], errors: dict[str, str]
) -> dict[str, Any]:
    """The invoke form `form` (an `invoke_modal`, not changed) as its person submitted it: what they entered
    as each field's initial value (a choice only while it is still offered), and each field's error in a
    context block right below it (block id `ids.FIELD_ERRORS[field]`; a `views.update` cannot set an
    input's error, only an ack's `response_action: errors` can). Errors are plain text, escaped here."""
    shown: list[dict[str, Any]] = []
    for block in form.get("blocks") or []:
        field = block.get("block_id")
        value = entered.get(field) if isinstance(field, str) else None
        element = block.get("element") or {}
        if value and block.get("type") == "input":
            element = dict(element)
            if element.get("type") == "static_select":
                option = next((o for o in element.get("options") or [] if o.get("value") == value), None)
                if option is not None:
                    element["initial_option"] = option
            elif element.get("type") == "plain_text_input":
                element["initial_value"] = value[: element.get("max_length") or MAX_SECTION]
            block = {**block, "element": element}
        shown.append(block)
        if isinstance(field, str) and field in errors and field in ids.FIELD_ERRORS:
            text = ":warning: " + escape(_truncate(errors[field], 500))
            shown.append(
                ContextBlock(
                    block_id=ids.FIELD_ERRORS[field], elements=[MarkdownTextObject(text=text)]
                ).to_dict()
            )
    return {**form, "blocks": shown}


def notice_modal(title: str, text: str) -> dict[str, Any]:
    """A read-only modal with one message (bot-authored mrkdwn; callers escape user text). Plain dicts:
    it answers a submission inside the ack (tests/test_blocks_plain.py checks it with slack_sdk)."""
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": title[:24], "emoji": True},
        "close": {"type": "plain_text", "text": "Close", "emoji": True},
        "blocks": _section(text),
    }


def no_profiles_modal() -> dict[str, Any]:
    return View(
        type="modal",
        title="Break glass",
        close="Close",
        blocks=[
            SectionBlock(
                text=MarkdownTextObject(
                    text="You are not allowed to invoke break-glass on any profile. Ask security if you think this is wrong."
                )
            )
        ],
    ).to_dict()


def _event_form(
    event: BreakGlassEvent,
    *,
    callback_id: str,
    title: str,
    submit: str,
    private_metadata: str,
    context: list[Block],
    field: str,
    label: str,
    max_length: int,
) -> dict[str, Any]:
    """A modal about one event with one required multiline input (block_id = action_id = `field`)."""
    return View(
        type="modal",
        callback_id=callback_id,
        title=title,
        submit=submit,
        close="Cancel",
        private_metadata=private_metadata,
        blocks=[
            SectionBlock(text=MarkdownTextObject(text=event_line(event))),
            *context,
            InputBlock(
                block_id=field,
                label=label,
                element=PlainTextInputElement(action_id=field, multiline=True, max_length=max_length),
            ),
        ],
    ).to_dict()


def close_modal(event: BreakGlassEvent, private_metadata: str) -> dict[str, Any]:
    return _event_form(
        event,
        callback_id=ids.CALLBACK_CLOSE,
        title="Close break-glass",
        submit="Close access",
        private_metadata=private_metadata,
        context=[],
        field=ids.CLOSE_REASON,
        label="Why is access no longer needed?",
        max_length=MAX_CLOSE_REASON,
    )


def _review_details(event: BreakGlassEvent) -> list[Block]:
    """What a reviewer needs besides the fields: how it ended (who closed it and why) and each extension."""
    lines = []
    if event.status is Status.CLOSED:
        lines.append(
            f"*Closed* by {user(event.closed_by or '')} {date(event.ended_at or event.updated_at)}: "
            f"{escape(event.closed_reason or '')}"
        )
    elif event.status is Status.EXPIRED:
        lines.append(f"*Expired* {date(event.ended_at or event.expires_at)}")
    for ext in event.extensions:
        lines.append(
            f"*Extended* by {human_duration(ext.duration)} by {user(ext.by)} {date(ext.at)}: {escape(ext.reason)}"
        )
    if event.escalated:
        lines.append(":warning: *Escalated*: repeated break-glass use within the rate-limit window")
    if not lines:
        return []
    return [SectionBlock(text=MarkdownTextObject(text=_truncate("\n".join(lines), MAX_SECTION)))]


def review_modal(
    event: BreakGlassEvent, private_metadata: str, activity: list[Block] | None = None
) -> dict[str, Any]:
    """`activity`: the digest's section (`review_activity_section`), if the profile has one."""
    return _event_form(
        event,
        callback_id=ids.CALLBACK_REVIEW,
        title="Review break-glass",
        submit="Mark reviewed",
        private_metadata=private_metadata,
        context=[
            SectionBlock(fields=event_fields(event)),
            justification_section(event),
            *_review_details(event),
            *(activity or []),
        ],
        field=ids.REVIEW_NOTES,
        label="Review notes",
        max_length=MAX_REVIEW_NOTES,
    )


# -- App Home ------------------------------------------------------------------------------------------------


def home(
    *,
    mine_active: list[BreakGlassEvent],
    mine_recent: list[BreakGlassEvent],
    all_active: list[BreakGlassEvent] | None,
    unreviewed: list[BreakGlassEvent] | None,
    can_review: bool,
) -> dict[str, Any]:
    """App Home, re-published after every change to one of the user's events (the post-ack path). Built as
    plain dicts: slack_sdk's models cost about 1 ms per publish here (bench section 3c). The same view
    as the models give, and tests validate it with slack_sdk's validators (tests/test_blocks.py, and the
    fake Slack validates every views.publish)."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Break glass", "emoji": True}},
        _mrkdwn_section("Emergency access to an AWS profile. Every step is announced to security."),
        {
            "type": "actions",
            "block_id": "home_actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Break glass", "emoji": True},
                    "action_id": ids.ACTION_OPEN_MODAL,
                    "style": "danger",
                    "value": "open",
                }
            ],
        },
        _DIVIDER,
        _mrkdwn_section("*Your active access*"),
    ]
    budget = 90  # stay under Slack's 100-block limit for views

    def add_events(
        events: list[BreakGlassEvent], button: str | None, empty: str, extendable: bool = False
    ) -> None:
        nonlocal budget
        if not events:
            blocks.append(_mrkdwn_context(empty))
            budget -= 1
            return
        for event in events:
            if budget <= 2:
                blocks.append(_mrkdwn_context("…more not shown; use `/breakglass list`"))
                return
            accessory = (
                close_button(event).to_dict()
                if button == "close"
                else review_button(event).to_dict()
                if button == "review"
                else None
            )
            blocks.append(_mrkdwn_section(event_line(event), accessory))
            budget -= 1
            if extendable:
                blocks.append(
                    {
                        "type": "actions",
                        "block_id": f"extend_{event.id}",
                        "elements": [extend_button(event).to_dict()],
                    }
                )
                budget -= 1

    add_events(mine_active, "close", "You hold no break-glass access.", extendable=True)
    blocks.append(_mrkdwn_section("*Your recent events*"))
    add_events(mine_recent, None, "No history yet.")
    if all_active is not None:
        blocks += [_DIVIDER, _mrkdwn_section("*All active access*")]
        add_events(all_active, "close", "Nobody holds break-glass access.")
    if unreviewed is not None:
        blocks += [_DIVIDER, _mrkdwn_section("*Awaiting review*")]
        add_events(unreviewed, "review" if can_review else None, "Nothing awaits review.")
    return {"type": "home", "blocks": blocks}


def review_reminder(events: list[BreakGlassEvent], age: timedelta) -> tuple[str, Blocks]:
    text = f":mag: {len(events)} break-glass event(s) ended more than {human_duration(age)} ago and still await review:"
    lines = [text] + [event_line(e) for e in events[:30]]
    if len(events) > 30:
        lines.append(f"…and {len(events) - 30} more (`/breakglass review`).")
    body = "\n".join(lines)
    return text, _section(body)


# == Activity digest (issue 15) ===============================================================================
# What the break-glass session did in AWS (bot.access.activity.ActivityDigest), for the audit thread and the
# review modal. Everything in a digest came from CloudTrail and is untrusted: every value is shown through
# `_ct()` (escaped, backticks neutralised, inside a code span) and every section stays within MAX_SECTION.

if TYPE_CHECKING:
    from bot.access.activity import ActivityDigest, CallRef
    from bot.access.base import ReconcileReport
    from store.model import EventAccess

DIGEST_MESSAGE_BLOCKS = 12  # the digest's share of a message (well under 50)
DIGEST_MODAL_BLOCKS = 8  # its share of the review modal (which has its own blocks, under 100 in all)
_DIGEST_LIST_LINES = 25  # sensitive/denied calls listed per section


def _ct(value: object, limit: int = 200) -> str:
    """Untrusted CloudTrail text as an inline code span: escaped, no backtick can end the span early."""
    text = _truncate(str(value).replace("`", "'").replace("\n", " "), limit)
    return f"`{escape(text)}`" if text else "`-`"


def _counts(counter: dict[str, int], dropped: int, limit: int = 8) -> str:
    items = list(counter.items())
    shown = ", ".join(f"{_ct(key, 80)} ×{n}" for key, n in items[:limit]) or "none"
    more = len(items) - limit + dropped if len(items) > limit else dropped
    return shown + (f" (+{more} more)" if more > 0 else "")


def _call_line(call: CallRef) -> str:
    what = f"*{escape(call.category)}* " if call.category else ""
    line = (
        f"• {date(call.time, '{time_secs}')} {what}{_ct(call.event_name, 80)} ({_ct(call.event_source, 60)})"
    )
    if call.region:
        line += f" {_ct(call.region, 30)}"
    if call.resource:
        line += f" on {_ct(call.resource, 160)}"
    if call.error_code:
        line += f" :no_entry: {_ct(call.error_code, 60)}"
    return line


def _line_sections(title: str, lines: list[str], dropped: int) -> list[Block]:
    """`lines` under a bold title, split into sections of at most MAX_SECTION characters."""
    if dropped:
        lines = [*lines, f"…and {dropped} more (see the stored digest and CloudTrail)"]
    sections: list[Block] = []
    chunk = f"*{title}*"
    for line in lines:
        line = _truncate(line, MAX_SECTION - 100)
        if len(chunk) + 1 + len(line) > MAX_SECTION:
            sections.append(SectionBlock(text=MarkdownTextObject(text=chunk)))
            chunk = line
        else:
            chunk += "\n" + line
    sections.append(SectionBlock(text=MarkdownTextObject(text=chunk)))
    return sections


def _digest_status(digest: ActivityDigest) -> str:
    status = digest.status.value
    if status == "complete":
        text = ":white_check_mark: complete"
    elif status == "partial":
        text = ":warning: partial"
    else:
        text = ":x: could not be gathered"
    if digest.capped and digest.cap_reason:
        text += f" (capped: {escape(digest.cap_reason)})"
    if digest.early:
        text += (
            " · :hourglass: gathered before CloudTrail's delivery delay had passed; it will be gathered again"
        )
    return text


def activity_digest_blocks(digest: ActivityDigest, *, max_blocks: int = DIGEST_MESSAGE_BLOCKS) -> list[Block]:
    """The digest as Block Kit objects (at most `max_blocks`), for a message or a modal."""
    who = ", ".join(_ct(i, 100) for i in digest.identities[:3])
    regions = ", ".join(_ct(r, 30) for r in digest.regions_queried[:10]) or "-"
    head = (
        f":mag: *AWS activity* of {who} in account {_ct(digest.account, 20)} ({regions})\n"
        f"{date(digest.window_start)} – {date(digest.window_end)}, gathered {date(digest.gathered_at)}: "
        f"{_digest_status(digest)}"
    )
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=_truncate(head, MAX_SECTION)))]
    failed = digest.status.value == "failed"
    if not failed:
        calls = f"*Calls*\n{digest.total_calls}: {digest.read_calls} read, {digest.write_calls} write" + (
            f", {digest.unknown_calls} unknown" if digest.unknown_calls else ""
        )
        fields = [
            calls,
            f"*Denied*\n{digest.denied_calls}" + (" :no_entry:" if digest.denied_calls else ""),
            f"*Sensitive changes*\n{digest.sensitive_calls}"
            + (" :warning:" if digest.sensitive_calls else ""),
            f"*Services*\n{_counts(digest.services, digest.services_dropped, 6)}",
            f"*Regions*\n{_counts(digest.regions, digest.regions_dropped, 6)}",
            f"*Source IPs*\n{_counts(digest.source_ips, digest.source_ips_dropped, 5)}",
            f"*User agents*\n{_counts(digest.user_agents, digest.user_agents_dropped, 3)}",
        ]
        blocks.append(SectionBlock(fields=[MarkdownTextObject(text=_truncate(f, 2000)) for f in fields]))
        if digest.sensitive:
            lines = [_call_line(c) for c in digest.sensitive[:_DIGEST_LIST_LINES]]
            dropped = digest.sensitive_calls - min(len(digest.sensitive), _DIGEST_LIST_LINES)
            blocks += _line_sections("Sensitive changes", lines, dropped)
        if digest.denied:
            lines = [_call_line(c) for c in digest.denied[:_DIGEST_LIST_LINES]]
            dropped = digest.denied_calls - min(len(digest.denied), _DIGEST_LIST_LINES)
            blocks += _line_sections("Denied calls", lines, dropped)
    if digest.errors:
        lines = [
            f"• {_ct(e.stage, 20)}"
            + (f" {_ct(e.region, 30)}" if e.region else "")
            + f": {_ct(e.code, 60)} {escape(_truncate(e.message, 300))}"
            + (" (will be retried)" if e.retryable else " (not retried: needs an operator)")
            for e in digest.errors
        ]
        blocks += _line_sections("What could not be gathered", lines, digest.errors_dropped)
    if digest.event_ids:
        shown = ", ".join(_ct(i, 64) for i in digest.event_ids[:12])
        more = len(digest.event_ids) - 12 + digest.event_ids_dropped
        note = f"CloudTrail event ids: {shown}" + (
            f" (+{more} more in the stored digest)" if more > 0 else ""
        )
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=_truncate(note, MAX_SECTION))]))
    if len(blocks) > max_blocks:
        rest = ContextBlock(elements=[MarkdownTextObject(text="…more in the stored digest")])
        blocks = [*blocks[: max_blocks - 1], rest]
    return blocks


def thread_activity(digest: ActivityDigest) -> tuple[str, Blocks]:
    """The audit-thread message with the digest (text is the notification fallback)."""
    status = digest.status.value
    if status == "failed":
        text = ":mag: AWS activity could not be gathered"
    else:
        text = (
            f":mag: AWS activity: {digest.total_calls} calls, {digest.write_calls} write, "
            f"{digest.denied_calls} denied, {digest.sensitive_calls} sensitive"
        )
    return text, _dump(activity_digest_blocks(digest, max_blocks=DIGEST_MESSAGE_BLOCKS))


def thread_activity_given_up(digest: ActivityDigest, failures: int) -> tuple[str, Blocks]:
    """The audit-thread note when the retries of a failing gather stop (review time still tries again)."""
    reasons = "; ".join(f"{e.code}" for e in digest.errors[:3]) or "unknown"
    text = (
        f":mag: AWS activity still could not be gathered after {failures} attempts "
        f"({_ct(reasons, 200)}); no more automatic retries: it is gathered again when the event is reviewed."
    )
    return text, _section(text)


def review_activity_section(digest: ActivityDigest | None) -> list[Block]:
    """The digest's part of the review modal (pass as extra context blocks), or a note when there is none."""
    if digest is None:
        return [
            ContextBlock(elements=[MarkdownTextObject(text=":mag: AWS activity has not been gathered yet.")])
        ]
    return [DividerBlock(), *activity_digest_blocks(digest, max_blocks=DIGEST_MODAL_BLOCKS - 1)]
