"""Notices: audit-feed facts that belong to no stored event (a refused invocation), each owed to the
feed's sinks until every sink has it.

A notice is stored once under its uid (`add_notice` never overwrites: a retried refusal stays one notice),
listed while owed (`list_notices`, oldest first), and updated as sinks accept it (`update_notice`: `sent`
names the sinks that have it; `owed` False takes it out of the listing). The delivery (bot/audit_feed)
holds a named claim per notice while it sends, so replicas never send one concurrently.

The per-day chain: every audit-feed record (an event's or a notice's) gets a place in its day's chain
before any sink is sent it: `link_day(day, uid, digest_of)` appends it, atomically on both stores (a
conditional write on the day's head, so two replicas never take the same place), or returns the place it
already has (a retry sends the same bytes). `digest_of(seq, previous)` is the digest of the record as it
will be sent in that place; `day_chain(day)` lists a day's links in order, for verify-audit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from store.timeutil import ensure_utc

NOTICE_UID_RE = r"^[a-z_]+:[0-9a-f]{16,64}$"


class Notice(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    uid: str = Field(pattern=NOTICE_UID_RE)
    at: datetime
    body: str = Field(min_length=2, max_length=16 * 1024)  # the fact, as JSON text
    sent: tuple[str, ...] = ()
    owed: bool = True

    def model_post_init(self, __context: object) -> None:
        object.__setattr__(self, "at", ensure_utc(self.at))


class DayLink(BaseModel):
    """A record's place in its day's chain: `seq` from 1, `previous` the digest of the record before it
    ("" for the first), `digest` its own."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    seq: int = Field(ge=1)
    uid: str = Field(min_length=1, max_length=128)
    previous: str
    digest: str = Field(min_length=1)


DigestOf = Callable[[int, str], str]
