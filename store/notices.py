"""Notices: audit-feed facts that belong to no stored event (a refused invocation), each owed to the
feed's sinks until every sink has it.

A notice is stored once under its uid (`add_notice` never overwrites: a retried refusal stays one notice),
listed while owed (`list_notices`, oldest first), and updated as sinks accept it (`update_notice`: `sent`
names the sinks that have it; `owed` False takes it out of the listing). The delivery (bot/audit_feed)
holds a named claim per notice while it sends, so replicas never send one concurrently.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from store.timeutil import ensure_utc

NOTICE_UID_RE = r"^[a-z_]+:[0-9a-f]{16,64}$"


class Notice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    uid: str = Field(pattern=NOTICE_UID_RE)
    at: datetime
    body: str = Field(min_length=2, max_length=16 * 1024)  # the fact, as JSON text
    sent: tuple[str, ...] = ()
    owed: bool = True

    def model_post_init(self, __context: object) -> None:
        object.__setattr__(self, "at", ensure_utc(self.at))
