"""The invoke modal follows the chosen profile: its profile select dispatches a block action (the input's
`dispatch_action`), answered with `views.update` offering that profile's durations only."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext
from slack_sdk.errors import SlackApiError, SlackClientError

from bot import ids
from bot.errors import BreakglassError
from bot.slack import commands, invoke_meta
from bot.slack.context import SlackContext, ctx_of

log = logging.getLogger(__name__)


def profile_chosen(ack: Ack, body: dict[str, Any], action: dict[str, Any], context: BoltContext) -> None:
    ctx = ctx_of(context)
    ack()
    ctx.call_after_ack(follow_profile, ctx, body, action)


def follow_profile(ctx: SlackContext, body: dict[str, Any], action: dict[str, Any]) -> None:
    view = body.get("view") or {}
    user_id = body["user"]["id"]
    chosen = str((action.get("selected_option") or {}).get("value") or "")
    try:
        profiles = ctx.service.profiles_for(user_id)
        if chosen not in profiles or not view.get("id"):
            return  # not one the user may invoke: the submission says why
        form = commands.modal(ctx, tuple(profiles), chosen)
        metadata = invoke_meta.refreshed(ctx, view, user_id)  # who the person is, carried on
        ctx.client.views_update(
            view_id=view["id"], hash=view.get("hash"), view={**form, "private_metadata": metadata}
        )
    except (SlackApiError, SlackClientError, OSError, BreakglassError) as exc:
        # e.g. hash_conflict (the user changed the form meanwhile): the server checks the duration anyway
        log.info("invoke form not updated for the chosen profile: %s", type(exc).__name__)


def register(app: App) -> None:
    app.action(ids.PROFILE)(profile_chosen)
