"""Buttons: Close and Mark reviewed (on the audit message, DMs and App Home), and App Home's Break glass.

Authorization is evaluated on the clicker (body.user.id), never on who the message was shown to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, BoltContext
from slack_sdk.errors import SlackApiError, SlackClientError

from bot import blocks, ids
from bot.known_roles import KnownRoles
from bot.slack import commands, roles_meta
from bot.slack.context import EventMetadata, SlackContext, ctx_of
from bot.slack.errors import user_message
from store import BreakGlassEvent, StoreError

log = logging.getLogger(__name__)


def tell(ctx: SlackContext, body: dict[str, Any], text: str) -> None:
    """An ephemeral answer to whoever clicked: in the message's channel, or a small modal elsewhere."""
    user_id = body["user"]["id"]
    container = body.get("container") or {}
    try:
        if container.get("type") == "message" and container.get("channel_id"):
            ctx.client.chat_postEphemeral(channel=container["channel_id"], user=user_id, text=text)
        else:
            ctx.client.views_open(
                trigger_id=body.get("trigger_id", ""), view=blocks.notice_modal("Break glass", text)
            )
    except (SlackApiError, SlackClientError, OSError) as exc:
        log.warning("could not answer a button click: %s", type(exc).__name__, extra={"slack_user": user_id})


def open_form(
    ctx: SlackContext,
    body: dict[str, Any],
    action: dict[str, Any],
    check: Callable[[str, str], BreakGlassEvent],
    done: Callable[[BreakGlassEvent], str | None],
    modal: Callable[[BreakGlassEvent, KnownRoles], dict[str, Any]],
    fallback: str,
) -> BreakGlassEvent | None:
    """A Close or Mark reviewed click: authorize the clicker, then open the form (or say why not), carrying
    the clicker's roles (`modal(event, who)` puts `who` in its metadata; bot.slack.roles_meta).
    Returns the event when its form was opened."""
    user_id = body["user"]["id"]
    try:
        event = check(user_id, str(action.get("value", "")))
        answer = done(event)
        if answer is not None:
            tell(ctx, body, answer)
            return None
        who = roles_meta.opened(ctx, user_id)
        ctx.client.views_open(trigger_id=body["trigger_id"], view=roles_meta.bind(modal(event, who), who))
        return event
    except (SlackApiError, SlackClientError, OSError) as exc:
        log.warning("could not open a form: %s", type(exc).__name__, extra={"slack_user": user_id})
        tell(ctx, body, fallback)
    except Exception as exc:  # noqa: BLE001 - shown to the user, logged with a reference
        tell(ctx, body, ":no_entry: " + blocks.escape(user_message(exc)))
    return None


def form_metadata(event: BreakGlassEvent, who: KnownRoles) -> str:
    """The close and review forms' private_metadata: the event, and who opened it."""
    return EventMetadata(event_id=event.id, who=who).model_dump_json(exclude_none=True)


def form_button(
    check: Callable[[SlackContext, str, str], BreakGlassEvent],
    done: Callable[[SlackContext, BreakGlassEvent], str | None],
    modal: Callable[[SlackContext, BreakGlassEvent, KnownRoles], dict[str, Any]],
    fallback: str,
) -> Callable[..., None]:
    """The listener of a button that opens a form about one event (Close, Extend): ack, then `open_form`."""

    def clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any], context: BoltContext) -> None:
        ctx = ctx_of(context)
        ack()
        ctx.call_after_ack(
            open_form,
            ctx,
            body,
            action,
            lambda user_id, event_id: check(ctx, user_id, event_id),
            lambda event: done(ctx, event),
            lambda event, who: modal(ctx, event, who),
            fallback,
        )

    return clicked


close_clicked = form_button(
    lambda ctx, user_id, event_id: ctx.service.check_close(user_id, event_id),
    lambda _ctx, e: blocks.already_ended(e) if e.status.ended else None,
    lambda _ctx, e, who: blocks.close_modal(e, form_metadata(e, who)),
    "Could not open the close form. Use `/breakglass close &lt;id&gt; &lt;reason&gt;` instead.",
)


def review_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any], context: BoltContext) -> None:
    ctx = ctx_of(context)
    ack()
    ctx.call_after_ack(open_review, ctx, body, action)


def open_review(ctx: SlackContext, body: dict[str, Any], action: dict[str, Any]) -> None:
    opened = open_form(
        ctx,
        body,
        action,
        ctx.service.check_review,
        lambda e: (
            f"Event `{e.id}` was already reviewed by {blocks.user(e.reviewed_by or '')}."
            if e.reviewed_at is not None
            else None
        ),
        lambda e, who: blocks.review_modal(e, form_metadata(e, who), review_activity(ctx, e)),
        "Could not open the review form; try again.",
    )
    if opened is None:
        return
    try:  # the reviewer is looking: gather the activity again now if the stored digest needs it
        owed = ctx.service.request_evidence(opened.id)
    except StoreError as exc:
        log.warning("could not owe an activity digest: %s", exc, extra={"event_id": opened.id})
        return
    if owed is not None:
        ctx.deliver_after_ack(owed)


def open_clicked(ack: Ack, body: dict[str, Any], context: BoltContext) -> None:
    ctx = ctx_of(context)
    ack()
    ctx.call_after_ack(commands.open_modal, ctx, body.get("trigger_id", ""), body["user"]["id"], None)


def register(app: App) -> None:
    app.action(ids.ACTION_CLOSE)(close_clicked)
    app.action(ids.ACTION_REVIEW)(review_clicked)
    app.action(ids.ACTION_OPEN_MODAL)(open_clicked)


def review_activity(ctx: SlackContext, event: BreakGlassEvent) -> list[blocks.Block]:
    """The digest's part of the review form (nothing for a profile without an activity role)."""
    from bot import evidence  # CloudTrail evidence: imported when a review form opens, not at start-up

    if evidence.activity_target(ctx.policy, event) is None:
        return []
    return blocks.review_activity_section(evidence.stored_digest(event))
