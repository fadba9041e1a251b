"""App Home: a Break glass button, your access and history; for incident commanders and security, all
active access and the review queue. Re-published whenever one of your events changes."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App, BoltContext
from slack_sdk.errors import SlackApiError, SlackClientError

from bot import blocks
from bot.errors import BreakglassError
from bot.slack.context import SlackContext, ctx_of
from store import BreakGlassEvent, StoreError
from store.model import MAX_DURATION

log = logging.getLogger(__name__)


def render(ctx: SlackContext, user_id: str) -> dict[str, Any]:
    service = ctx.service
    roles = service.roles(user_id)
    mine, recent = own_events(ctx, user_id)
    all_active = None
    if roles.can_see_all:
        all_active = service.all_effective()
    return blocks.home(
        mine_active=mine,
        mine_recent=recent,
        all_active=all_active,
        unreviewed=service.unreviewed(limit=20) if roles.can_see_all else None,
        can_review=roles.security,
    )


def own_events(
    ctx: SlackContext, user_id: str, recent_limit: int = 10
) -> tuple[list[BreakGlassEvent], list[BreakGlassEvent]]:
    """The user's effective events and recent ended ones, reading only their newest events: anything still
    effective was created within the 4-hour cap, so paging stops there (cost independent of others' events)."""
    now = ctx.clock.now()
    invoker = ctx.service.identity(user_id)
    horizon = now - MAX_DURATION
    active: list[BreakGlassEvent] = []
    recent: list[BreakGlassEvent] = []
    cursor: str | None = None
    while True:
        page = ctx.service.events_of(invoker, limit=20, cursor=cursor)
        for event in page.items:
            if event.is_effective(now):
                active.append(event)
            elif len(recent) < recent_limit:
                recent.append(event)
        cursor = page.cursor
        if cursor is None or not page.items or page.items[-1].created_at < horizon:
            return active, recent


def publish(ctx: SlackContext, user_id: str) -> None:
    try:
        ctx.client.views_publish(user_id=user_id, view=render(ctx, user_id))
    except (SlackApiError, SlackClientError, OSError, StoreError, BreakglassError) as exc:
        log.warning("could not publish App Home: %s", type(exc).__name__, extra={"slack_user": user_id})


def refresh_for(ctx: SlackContext):
    def hook(event: BreakGlassEvent) -> None:
        if event.slack_user_id is not None:  # a foreign (Sentinel) event has no Slack user's Home
            publish(ctx, event.slack_user_id)

    return hook


def home_opened(event: dict[str, Any], context: BoltContext) -> None:
    if event.get("tab", "home") == "home":
        ctx = ctx_of(context)
        ctx.call_after_ack(publish, ctx, event["user"])


def register(app: App) -> None:
    app.event("app_home_opened")(home_opened)
