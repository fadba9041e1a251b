"""The invoke modal's `private_metadata` (Netflix Dispatch style, a pydantic model): who the person is,
resolved right after the modal opened (bot.invoker), so the submission is decided without a round trip.

Why after opening: `views.open` must use the trigger within 3 seconds, and the lookups (users.info,
user groups, the identity store, the on-call tool) can take longer when one of them is slow. So the modal
opens at once with the form, the lookups run, and one `views.update` (guarded by the opened view's hash)
puts their answers into the same view; Slack keeps what the person already typed, since the inputs keep
their block and action ids. If the person changes the profile first (its `views.update` wins the hash),
that update carries the answers instead (bot.slack.invoke_form).

Checked on submission, never trusted beyond it: the metadata must name the user Slack signed the
submission for and the view it came in, and be fresh (`KnownInvoker.fresh`); profile, reason, duration,
justification and incident always come from the submitted state. Anything else — missing, for another
user or view, stale, unreadable — is not used: the submission is then decided after its ack with live
lookups (bot.slack.views)."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from slack_sdk.errors import SlackApiError, SlackClientError

from bot import invoker
from bot.invoker import KnownInvoker
from bot.slack.context import SlackContext, parse_metadata

log = logging.getLogger(__name__)

MAX_METADATA = 3000  # Slack's limit on private_metadata


class InvokeMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    view_id: str
    known: KnownInvoker


def encode(view_id: str, known: KnownInvoker) -> str:
    """The metadata for `view_id`; "" when it would not fit (the submission then looks up after its ack)."""
    raw = InvokeMetadata(view_id=view_id, known=known).model_dump_json(exclude_defaults=True)
    return raw if len(raw) <= MAX_METADATA else ""


def known_for(ctx: SlackContext, body: dict[str, Any], view: dict[str, Any]) -> KnownInvoker | None:
    """What the submitted view's metadata knows about the person Slack signed `body` for, or None."""
    meta = parse_metadata(InvokeMetadata, view.get("private_metadata"))
    if not isinstance(meta, InvokeMetadata):
        return None
    user_id = (body.get("user") or {}).get("id")
    if meta.known.user_id != user_id or meta.view_id != view.get("id"):
        log.warning(
            "invoke form metadata is for another user or view: not used",
            extra={"slack_user": user_id, "action": "invoke", "outcome": "metadata_mismatch"},
        )
        return None
    return meta.known if meta.known.fresh(ctx.clock.now()) else None


def metadata_of(view: dict[str, Any], user_id: str) -> str:
    """The view's metadata, kept when it is this user's for this view (a form update carries it on)."""
    meta = parse_metadata(InvokeMetadata, view.get("private_metadata"))
    if isinstance(meta, InvokeMetadata) and meta.known.user_id == user_id and meta.view_id == view.get("id"):
        return str(view.get("private_metadata"))
    return ""


def resolve_into(ctx: SlackContext, opened: dict[str, Any], user_id: str, form: dict[str, Any]) -> None:
    """Right after `views.open` answered with `opened`: resolve the person, and put the answers into the
    opened view (`form` is the view it was opened with)."""
    view_id = str(opened.get("id") or "")
    if not view_id:
        return
    known = invoker.resolve(ctx.service, user_id)
    metadata = encode(view_id, known)
    if not metadata:
        return
    try:
        ctx.client.views_update(
            view_id=view_id, hash=opened.get("hash"), view={**form, "private_metadata": metadata}
        )
    except (SlackApiError, SlackClientError, OSError) as exc:
        # hash_conflict: the person changed the profile first, and that update carries the answers
        log.info("invoke form metadata not stored: %s", type(exc).__name__, extra={"slack_user": user_id})


def refreshed(ctx: SlackContext, view: dict[str, Any], user_id: str) -> str:
    """Metadata for a form being updated (profile chosen): the view's own, or resolved now."""
    kept = metadata_of(view, user_id)
    if kept or not view.get("id"):
        return kept
    return encode(str(view["id"]), invoker.resolve(ctx.service, user_id))
