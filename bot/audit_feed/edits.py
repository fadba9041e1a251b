"""Edits of the bot's own audit messages that the bot did not make.

Whoever holds the bot token can `chat.update` the bot's audit messages, and Slack then shows the edit as
the bot's own. So the bot remembers what it sent: after each post or update of an event's root audit
message, the fingerprint of that content goes into the event (`audit_rendered`, the latest few, in the
store). A `message_changed` event of that message (bot/slack/audit_edits.py) whose content has another
fingerprint was an edit the bot did not make: the event then owes a thread reply saying so and an update
that restores the message from the store.

The fingerprint covers the notification text and every text of the blocks (not the block ids or layout
fields that Slack fills in), so Slack's own normalizing never looks like an edit.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from store import BreakGlassEvent, Store, mutate

KEPT = 8  # fingerprints kept per event: a late message_changed of an earlier update is still recognized


def _texts(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["text"]] if isinstance(value.get("text"), str) else []
        return own + [t for k, v in sorted(value.items()) if k != "text" for t in _texts(v)]
    if isinstance(value, list):
        return [t for item in value for t in _texts(item)]
    return []


def fingerprint(text: str | None, blocks: Any) -> str:
    content = json.dumps([text or "", _texts(blocks or [])], ensure_ascii=False)
    return hashlib.sha256(content.encode()).hexdigest()[:32]


def remember(store: Store, event_id: str, text: str, blocks: Any) -> None:
    """Record that the bot sent this content as the event's root audit message."""
    mark = fingerprint(text, blocks)

    def change(ev: BreakGlassEvent) -> BreakGlassEvent | None:
        if ev.audit_rendered[-1:] == (mark,):
            return None
        kept = tuple(m for m in ev.audit_rendered if m != mark)[-(KEPT - 1) :]
        return ev.updated(audit_rendered=(*kept, mark))

    mutate(store, event_id, change)


def is_ours(event: BreakGlassEvent, text: str | None, blocks: Any) -> bool:
    return fingerprint(text, blocks) in event.audit_rendered
