"""Modal submissions: invoke, close, review. Errors come back inline (`response_action: errors`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from slack_bolt import Ack, App, BoltContext
from slack_sdk.errors import SlackApiError, SlackClientError

from bot import blocks, ids
from bot.invoker import Unresolved, covers
from bot.service import BreakGlassService, InvokeRequest
from bot.slack import invoke_meta, refused_form, roles_meta
from bot.slack.context import EventMetadata, SlackContext, ctx_of, parse_metadata
from bot.slack.errors import modal_errors, user_message
from bot.slack.lazy_decide import deciding, form_redo, invoke_once
from store import BreakGlassEvent, InvalidTransition

log = logging.getLogger(__name__)


def state_value(view: dict[str, Any], block_id: str) -> str | None:
    """The submitted value of an input block (plain text or static select), or None."""
    block = ((view.get("state") or {}).get("values") or {}).get(block_id) or {}
    element = block.get(block_id) or (next(iter(block.values())) if block else {})
    if not isinstance(element, dict):
        return None
    if element.get("type") == "static_select" or "selected_option" in element:
        option = element.get("selected_option") or {}
        return option.get("value") if isinstance(option, dict) else None
    value = element.get("value")
    return value if isinstance(value, str) else None


def invoke_submitted(ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext) -> None:
    """Decided from the submitted state and what the form's metadata knows about the person (bot.invoker):
    the store write is the only round trip before the ack. What the metadata does not cover is decided
    after the ack instead (`decide_after_ack`)."""
    ctx = ctx_of(context)
    request = submitted_request(ctx, body, view)
    if request.known is None:
        decide_after_ack(ctx, ack, view, request, "who you are")
        return
    try:
        answer_in_ack(ctx, ack, request)
    except Unresolved as exc:
        decide_after_ack(ctx, ack, view, request, CHECKING.get(exc.what, exc.what))


def submitted_request(ctx: SlackContext, body: dict[str, Any], view: dict[str, Any]) -> InvokeRequest:
    """The invocation a submission asks for, from the signed request alone (the ack and Lambda's redo)."""
    return InvokeRequest(
        user_id=body["user"]["id"],
        profile=state_value(view, ids.PROFILE),
        reason=state_value(view, ids.REASON),
        justification=state_value(view, ids.JUSTIFICATION),
        duration=state_value(view, ids.DURATION),
        incident=state_value(view, ids.INCIDENT),
        request_id=view.get("id"),
        known=invoke_meta.known_for(ctx, body, view),
    )


def redo_invoke(context: BoltContext, body: dict[str, Any], _respond: Any) -> None:
    """Lambda's lazy listener (bot.slack.lazy_decide): the same submission, decided again from its request.
    What the ack decided from the form's metadata (`invoker.covers`) is left alone; the rest is decided now,
    as `decide_after_ack` does on threaded runtimes. A retry stores nothing twice (the view id keys it)."""
    ctx = ctx_of(context)
    view = body.get("view") or {}
    request = submitted_request(ctx, body, view)
    if request.known is not None and covers(ctx.service, request):
        return
    _decide(ctx, str(view.get("id") or ""), replace(request, known=None))


def answer_in_ack(ctx: SlackContext, ack: Ack, request: InvokeRequest) -> None:
    """Decide, and answer in the ack: granted, or inline errors (nothing stored). Unresolved propagates."""
    try:
        event = ctx.service.invoke(request)
    except Unresolved:
        raise
    except Exception as exc:  # every failure becomes an inline error; nothing was granted  # noqa: BLE001 - shown to the user, logged with a reference
        ack(response_action="errors", errors=modal_errors(exc, ids.INVOKE_FIELDS))
        return
    ack(response_action="update", view=granted_modal(ctx, event))
    ctx.deliver_after_ack(event)


CHECKING = {"incident": "the incident", "on call": "whether you are on call"}
CHECKING_TITLE = "Checking…"  # the modal's title between the ack and the outcome


def granted_modal(ctx: SlackContext, event: BreakGlassEvent) -> dict[str, Any]:
    return blocks.notice_modal(
        "Access granted",
        blocks.granted(event, audit_broken=ctx.audit_channels.error(event.audit_channel)),
    )


def decide_after_ack(
    ctx: SlackContext, ack: Ack, view: dict[str, Any], request: InvokeRequest, checking: str
) -> None:
    """Answer at once ("Checking …" replaces the form), then decide with live lookups and show the outcome
    in the same modal (by `views.update`; a DM when the modal was closed meanwhile). Nothing was stored.

    On Lambda nothing runs after the response: the lazy listener `redo_invoke` decides it instead, from
    the same request, in a second invocation."""
    ack(
        response_action="update",
        view=blocks.notice_modal(CHECKING_TITLE, f":hourglass_flowing_sand: Checking {checking}…"),
    )
    if ctx.background is None:
        return
    ctx.call_after_ack(_decide, ctx, str(view.get("id") or ""), replace(request, known=None))


def _decide(ctx: SlackContext, view_id: str, request: InvokeRequest) -> None:
    event: BreakGlassEvent | None = None
    try:
        event = invoke_once(ctx, request)  # a retried decision (Lambda) gives the first one's answer
    except Exception as exc:  # noqa: BLE001 - shown to the user, logged with a reference
        if refused_form.show(ctx, view_id, request, exc):  # e.g. the incident: the form back, error under it
            return
        text = (
            ":x: "
            + blocks.escape(user_message(exc))
            + "\nNothing was granted: run `/breakglass` to try again."
        )
        outcome = blocks.notice_modal("Not granted", text)
    else:
        ctx.deliver_after_ack(event)  # its announcements do not wait for the modal
        outcome = granted_modal(ctx, event)
    try:
        ctx.client.views_update(view_id=view_id, view=outcome)
    except (SlackApiError, SlackClientError, OSError) as exc:
        log.info("invoke outcome not shown in the modal: %s", type(exc).__name__)
        if event is None:  # a grant is announced by its DM anyway
            try:
                ctx.client.chat_postMessage(channel=request.user_id, text=text)
            except (SlackApiError, SlackClientError, OSError):
                log.warning(
                    "could not tell the user their invocation failed", extra={"slack_user": request.user_id}
                )


def submit_event_form(
    ctx: SlackContext,
    ack: Ack | None,
    body: dict[str, Any],
    view: dict[str, Any],
    field: str,
    apply: Callable[[BreakGlassService, str, str, str], tuple[BreakGlassEvent, str | None]],
    done: Callable[[BreakGlassEvent], tuple[str, str]] | None = None,
    titles: tuple[str, str] = ("Not changed", "Done"),
) -> None:
    """A close or review modal: event id from private_metadata, one text field; `apply` returns the
    event and, when nothing was changed (it had already ended), what to tell the user instead.
    `done` gives the (title, text) of the confirmation that replaces the modal after a change. Decided
    from the roles its opening resolved, or after the ack (bot.slack.roles_meta; `titles`: of the outcome
    then, refused and done). `ack` None: Lambda's lazy run of the same request (roles_meta.submit)."""
    meta = parse_metadata(EventMetadata, view.get("private_metadata"))
    if not isinstance(meta, EventMetadata):
        if ack is None:  # answered in the ack
            return
        ack(response_action="errors", errors={field: "This form is damaged; close it and try again."})
        return
    event_id, text = meta.event_id, state_value(view, field) or ""

    def decide(service: BreakGlassService) -> tuple[BreakGlassEvent, dict[str, Any] | None, bool]:
        event, notice = apply(service, event_id, body["user"]["id"], text)
        if notice is not None:
            shown: dict[str, Any] | None = blocks.notice_modal("Already ended", notice)
        else:
            shown = blocks.notice_modal(*done(event)) if done is not None else None
        # e.g. it was just recorded as expired: announce that now
        return event, shown, notice is None or bool(event.outbox)

    roles_meta.submit(ctx, ack, body, view, meta.who, (field,), decide, *titles)


def close_event(
    service: BreakGlassService, event_id: str, user_id: str, reason: str
) -> tuple[BreakGlassEvent, str | None]:
    result = service.close(event_id, by=user_id, reason=reason)
    event = result.event
    again = (
        event.closed_by == user_id and event.closed_reason == reason.strip()
    )  # a retried lazy run (Lambda)
    return event, None if result.closed_now or again else blocks.already_ended(event)


def review_event(
    service: BreakGlassService, event_id: str, user_id: str, notes: str
) -> tuple[BreakGlassEvent, str | None]:
    try:
        return service.review(event_id, by=user_id, notes=notes), None
    except InvalidTransition as exc:  # this very review, made by a retried lazy run (Lambda): the same answer
        if exc.event.reviewed_by == user_id and exc.event.review_notes == notes.strip():
            return exc.event, None
        raise


def close_submitted(
    ack: Ack | None, body: dict[str, Any], view: dict[str, Any], context: BoltContext
) -> None:
    submit_event_form(
        ctx_of(context),
        ack,
        body,
        view,
        ids.CLOSE_REASON,
        close_event,
        lambda event: ("Access closed", blocks.closed_now(event)),
        ("Not closed", "Access closed"),
    )


def review_submitted(
    ack: Ack | None, body: dict[str, Any], view: dict[str, Any], context: BoltContext
) -> None:
    submit_event_form(
        ctx_of(context), ack, body, view, ids.REVIEW_NOTES, review_event, titles=("Not reviewed", "Reviewed")
    )


def register(app: App, lazy: list[Callable[..., None]]) -> None:
    app.view(ids.CALLBACK_INVOKE)(ack=invoke_submitted, lazy=deciding(redo_invoke, lazy))
    for callback_id, listener in (
        (ids.CALLBACK_CLOSE, close_submitted),
        (ids.CALLBACK_REVIEW, review_submitted),
    ):
        app.view(callback_id)(ack=listener, lazy=deciding(form_redo(listener), lazy))
