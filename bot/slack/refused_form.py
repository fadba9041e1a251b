"""An invocation decided after its ack (bot.slack.views) and refused for a reason that belongs to a field of
the form — the incident is unknown or already resolved, or the tool is unreachable and the policy refuses
unverified incidents — is shown next to that field, as an inline error is: the same view goes back to the
invoke form with everything the person entered kept, and the error right below the field.

The form given back is the form the person opened: the same callback id, the durations of the chosen
profile, and its `private_metadata` (who the person is) resolved after it is shown and put in by one
`views.update` guarded by its hash, as when the form opens (bot.slack.invoke_meta). Resubmitting it is a
new attempt with the same view id (the request id): the refused one stored nothing, so it is not taken
for a repeat. A refusal that belongs to no field (not on call, rate limits, the store) stays the
"Not granted" notice."""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError

from bot import blocks, ids, metrics
from bot.errors import BreakglassError
from bot.service import InvokeRequest
from bot.slack import commands, invoke_meta
from bot.slack.context import SlackContext
from bot.slack.errors import field_errors

log = logging.getLogger(__name__)


def show(ctx: SlackContext, view_id: str, request: InvokeRequest, exc: BaseException) -> bool:
    """Give the refused form back in view `view_id`, the error of `exc` under its field. False (nothing
    shown, nothing counted) when the refusal belongs to no field, or the form could not be shown: the
    caller then shows the notice as before (its DM when the modal was closed meanwhile)."""
    errors = field_errors(exc, ids.INVOKE_FIELDS)
    if errors is None or not view_id:
        return False
    try:
        form = form_again(ctx, request, errors)
    except BreakglassError as exc_profiles:  # e.g. Slack could not say which profiles they may invoke
        log.info("refused form not rebuilt: %s", type(exc_profiles).__name__)
        return False
    if form is None:
        return False
    try:
        shown = ctx.client.views_update(view_id=view_id, view=form)
    except (SlackApiError, SlackClientError, OSError) as exc_slack:  # e.g. the modal was closed meanwhile
        log.info(
            "refused form not shown: %s", type(exc_slack).__name__, extra={"slack_user": request.user_id}
        )
        return False
    metrics.refused(exc)  # shown to the user (the notice would have counted it)
    log.info(
        "invocation refused: form given back with the error under %s",
        ", ".join(errors),
        extra={"slack_user": request.user_id, "action": "invoke", "outcome": "field_error"},
    )
    invoke_meta.resolve_into(ctx, shown.get("view") or {}, request.user_id, form)
    return True


def form_again(ctx: SlackContext, request: InvokeRequest, errors: dict[str, str]) -> dict[str, Any] | None:
    """The invoke form `request` was submitted with, as it was filled in, `errors` under their fields; None
    when the person may invoke no profile now (the notice says why)."""
    profiles = tuple(ctx.service.profiles_for(request.user_id))
    if not profiles:
        return None
    typed = (request.profile or "").strip()
    chosen = ctx.policy.profile_name(typed) or typed
    form = commands.modal(ctx, profiles, chosen if chosen in profiles else None)
    entered = {
        ids.PROFILE: chosen,
        ids.REASON: request.reason,
        ids.JUSTIFICATION: request.justification,
        ids.DURATION: request.duration,
        ids.INCIDENT: request.incident,
    }
    return blocks.invoke_form_again(form, entered, errors)
