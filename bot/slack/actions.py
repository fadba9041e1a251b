"""Buttons: Close and Mark reviewed (on the audit message, DMs and App Home), and App Home's Break glass.

Authorization is evaluated on the clicker (body.user.id), never on who the message was shown to.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App
from slack_sdk.errors import SlackApiError, SlackClientError

from bot import blocks, ids
from bot.slack.commands import CommandHandler
from bot.slack.context import Components, EventMetadata
from bot.slack.errors import user_message
from bot.slack.views import notice_view

log = logging.getLogger(__name__)


def tell(c: Components, body: dict[str, Any], text: str) -> None:
    """An ephemeral answer to whoever clicked: in the message's channel, or a small modal elsewhere."""
    user_id = body["user"]["id"]
    container = body.get("container") or {}
    try:
        if container.get("type") == "message" and container.get("channel_id"):
            c.client.chat_postEphemeral(channel=container["channel_id"], user=user_id, text=text)
        else:
            c.client.views_open(trigger_id=body.get("trigger_id", ""), view=notice_view("Break glass", text))
    except (SlackApiError, SlackClientError, OSError) as exc:
        log.warning("could not answer a button click: %s", type(exc).__name__, extra={"slack_user": user_id})


def _channel(body: dict[str, Any]) -> str | None:
    return (body.get("container") or {}).get("channel_id")


def register(app: App, c: Components, commands: CommandHandler) -> None:
    @app.action(ids.ACTION_CLOSE)
    def close_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        user_id = body["user"]["id"]
        try:
            event = c.service.check_close(user_id, str(action.get("value", "")))
            if event.status.ended:
                tell(c, body, CommandHandler.already_ended(event))
                return
            meta = EventMetadata(event_id=event.id, channel_id=_channel(body)).model_dump_json()
            c.client.views_open(trigger_id=body["trigger_id"], view=blocks.close_modal(event, meta))
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning(
                "could not open the close modal: %s", type(exc).__name__, extra={"slack_user": user_id}
            )
            tell(c, body, "Could not open the close form. Use `/breakglass close <id> <reason>` instead.")
        except Exception as exc:  # noqa: BLE001 - shown to the user, logged with a reference
            tell(c, body, ":no_entry: " + blocks.escape(user_message(exc)))

    @app.action(ids.ACTION_REVIEW)
    def review_clicked(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        user_id = body["user"]["id"]
        try:
            event = c.service.check_review(user_id, str(action.get("value", "")))
            if event.reviewed_at is not None:
                tell(
                    c,
                    body,
                    f"Event `{event.id}` was already reviewed by {blocks.user(event.reviewed_by or '')}.",
                )
                return
            meta = EventMetadata(event_id=event.id, channel_id=_channel(body)).model_dump_json()
            c.client.views_open(trigger_id=body["trigger_id"], view=blocks.review_modal(event, meta))
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning(
                "could not open the review modal: %s", type(exc).__name__, extra={"slack_user": user_id}
            )
            tell(c, body, "Could not open the review form; try again.")
        except Exception as exc:  # noqa: BLE001 - shown to the user, logged with a reference
            tell(c, body, ":no_entry: " + blocks.escape(user_message(exc)))

    @app.action(ids.ACTION_OPEN_MODAL)
    def open_clicked(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        commands.open_modal(body.get("trigger_id", ""), body["user"]["id"], None, None)
