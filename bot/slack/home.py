"""App Home: a Break glass button, your access and history; for incident commanders and security, all
active access and the review queue. Re-published whenever one of your events changes."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App
from slack_sdk.errors import SlackApiError, SlackClientError

from bot import blocks
from bot.errors import BreakglassError
from bot.slack.context import Components
from store import BreakGlassEvent, StoreError

log = logging.getLogger(__name__)


def render(c: Components, user_id: str) -> dict[str, Any]:
    service = c.service
    roles = service.roles(user_id)
    now = c.clock.now()
    active = [e for e in service.store.list_active() if e.is_effective(now)]
    mine = [e for e in active if e.slack_user_id == user_id]
    recent = [e for e in service.history(user_id, limit=10) if e.status.ended]
    return blocks.home(
        mine_active=mine,
        mine_recent=recent,
        all_active=active if roles.can_see_all else None,
        unreviewed=service.unreviewed(limit=20) if roles.can_see_all else None,
        can_review=roles.security,
    )


def publish(c: Components, user_id: str) -> None:
    try:
        c.client.views_publish(user_id=user_id, view=render(c, user_id))
    except (SlackApiError, SlackClientError, OSError, StoreError, BreakglassError) as exc:
        log.warning("could not publish App Home: %s", type(exc).__name__, extra={"slack_user": user_id})


def refresh_for(c: Components):
    def hook(event: BreakGlassEvent) -> None:
        publish(c, event.slack_user_id)

    return hook


def register(app: App, c: Components) -> None:
    @app.event("app_home_opened")
    def home_opened(event: dict[str, Any]) -> None:
        if event.get("tab", "home") == "home":
            publish(c, event["user"])
