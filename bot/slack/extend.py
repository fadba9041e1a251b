"""Extend: the `extend_event` button (expiry-warning DM, App Home) opening the Extend modal, its
submission, and `/breakglass extend EVENT_ID DURATION REASON…`. Authorization is on the clicker."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from slack_bolt import Ack, App, BoltContext

from bot import blocks, ids
from bot.errors import ValidationFailed
from bot.known_roles import KnownRoles
from bot.service import BreakGlassService
from bot.slack import commands, roles_meta
from bot.slack.actions import form_button
from bot.slack.context import SlackContext, ctx_of, parse_metadata
from bot.slack.lazy_decide import deciding, form_redo
from bot.slack.views import state_value
from store import BreakGlassEvent

log = logging.getLogger(__name__)

USAGE = "Usage: `/breakglass extend <event id> <duration> <reason…>`, e.g. `/breakglass extend 3f2a0c1b2d4e5f60 30m failover still running`"
FIELDS = (ids.EXTEND_DURATION, ids.EXTEND_REASON)


class ExtendMetadata(BaseModel):
    """private_metadata of the Extend modal: the event, and how many extensions the clicker saw (so two
    racing extends never both apply: the store refuses the second, ExtendedMeanwhile)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    event_id: str
    seen: int = Field(ge=0)
    who: KnownRoles | None = None  # the opener's roles, resolved as it opened (bot.slack.roles_meta)


def _not_extendable(ctx: SlackContext, event: BreakGlassEvent) -> str | None:
    if event.status.ended:
        return blocks.already_ended(event)
    if not ctx.service.extend_durations(event):
        return ":no_entry: " + blocks.escape(ctx.service.why_not_extend(event, event.duration, []))
    return None


extend_clicked = form_button(
    lambda ctx, user_id, event_id: ctx.service.check_extend(user_id, event_id),
    _not_extendable,
    lambda ctx, e, who: blocks.extend_modal(
        e,
        ExtendMetadata(event_id=e.id, seen=len(e.extensions), who=who).model_dump_json(exclude_none=True),
        ctx.service.extend_durations(e),
    ),
    "Could not open the extend form. Use `/breakglass extend &lt;id&gt; &lt;duration&gt; &lt;reason&gt;` instead.",
)


def extend_submitted(
    ack: Ack | None, body: dict[str, Any], view: dict[str, Any], context: BoltContext
) -> None:
    ctx = ctx_of(context)
    meta = parse_metadata(ExtendMetadata, view.get("private_metadata"))
    if not isinstance(meta, ExtendMetadata):
        if ack is None:  # Lambda's lazy run: answered in the ack
            return
        ack(
            response_action="errors",
            errors={ids.EXTEND_REASON: "This form is damaged; close it and try again."},
        )
        return
    duration = state_value(view, ids.EXTEND_DURATION) or ""
    reason = state_value(view, ids.EXTEND_REASON) or ""

    def decide(service: BreakGlassService) -> tuple[BreakGlassEvent, dict[str, Any] | None, bool]:
        event = service.extend(
            meta.event_id,
            by=body["user"]["id"],
            duration=duration,
            reason=reason,
            seen=meta.seen,
            request_id=view.get("id") or None,  # a retried lazy run (Lambda) never extends twice
        )
        return event, blocks.notice_modal("Access extended", blocks.extended_now(event)), True

    roles_meta.submit(ctx, ack, body, view, meta.who, FIELDS, decide, "Not extended", "Access extended")


def command(
    ctx: SlackContext, user_id: str, args: list[str], request_id: str | None
) -> tuple[tuple[str, blocks.Blocks], BreakGlassEvent | None]:
    """`/breakglass extend EVENT_ID DURATION REASON…`; `request_id`: the command's trigger id (a retried
    lazy run on Lambda gives the same answer and extends once)."""
    if len(args) < 3:
        raise ValidationFailed({"usage": USAGE})
    event = ctx.service.extend(
        args[0], by=user_id, duration=args[1], reason=" ".join(args[2:]), request_id=request_id
    )
    return blocks.message(blocks.extended_now(event)), event


def register(app: App, lazy: list[Callable[..., None]]) -> None:
    commands.SUBCOMMAND_HANDLERS["extend"] = command
    app.action(ids.ACTION_EXTEND)(extend_clicked)
    app.view(ids.CALLBACK_EXTEND)(ack=extend_submitted, lazy=deciding(form_redo(extend_submitted), lazy))
