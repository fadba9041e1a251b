"""Writes docs/activity-digest.md: a sample activity digest as a reviewer sees it, gathered by the real code
(`bot.access.activity.gather`) from the local fake CloudTrail (tests/fake_cloudtrail.py) and rendered by
`bot.blocks.thread_activity`.

Regenerate:  .venv/bin/python -m tests.activity_sample > docs/activity-digest.md
(tests/test_activity.py checks that the checked-in file is what this prints.)
"""

from __future__ import annotations

import html
import os
import re
import uuid
from datetime import timedelta
from typing import Any
from unittest import mock

from bot import blocks
from bot.access.activity import MAX_DIGEST_BYTES, ActivityTarget, RateLimiter, gather
from store import BreakGlassEvent
from tests.fake_cloudtrail import ACCOUNT, FakeCloudTrail, session_records, sso_record
from tests.store_fixtures import T0, make_event

ALICE = "alice@example.com"
_DATE = re.compile(r"<!date\^\d+\^[^|>]*\|([^>]*)>")


def sample_records() -> list[dict[str, Any]]:
    records = session_records(ALICE, T0) + session_records("bob@example.com", T0)[:3]
    records.append(
        sso_record(
            ALICE,
            T0 + timedelta(minutes=5),
            "iam.amazonaws.com",
            "CreateUser",
            read_only=False,
            role="AWSReservedSSO_ReadOnly_fedcba9876543210",
        )
    )
    for i, record in enumerate(records, start=1):  # deterministic ids, so the output is reproducible
        record["eventID"] = str(uuid.UUID(int=0x5EED_0000 + i))
        record["requestID"] = str(uuid.UUID(int=0xAB_0000 + i))
    return records


def sample() -> tuple[BreakGlassEvent, Any]:
    event = make_event(invoker=ALICE, now=T0, id="5a3c9e0d2b7f4a61").close(
        by="U0IC", reason="incident over", now=T0 + timedelta(minutes=20)
    )
    target = ActivityTarget(
        account=ACCOUNT,
        role="breakglass-activity",
        identities=(ALICE,),
        regions=("us-east-1", "eu-west-1"),
        role_prefix="AWSReservedSSO_BreakGlassAdmin_",
    )
    now = T0 + timedelta(minutes=36)
    env = {
        "AWS_ACCESS_KEY_ID": "sample",
        "AWS_SECRET_ACCESS_KEY": "sample",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with FakeCloudTrail(sample_records()) as fake, mock.patch.dict(os.environ, {**env, **fake.env()}):
        digest = gather(
            event,
            target,
            now,
            limiters=lambda a, r: RateLimiter(rate=1000, sleep=lambda s: None),
            sleep=lambda s: None,
        )
    return event, digest


def as_seen(rendered: list[dict[str, Any]]) -> str:
    """Block Kit as a Slack client shows it: date tokens as their (UTC) fallback, entities decoded."""
    lines: list[str] = []

    def show(text: str) -> str:
        return html.unescape(_DATE.sub(lambda m: m.group(1), text))

    for block in rendered:
        if block.get("text"):
            lines.append(show(block["text"]["text"]))
        for field in block.get("fields") or []:
            lines.append(show(field["text"]).replace("\n", ": ", 1))
        for element in block.get("elements") or []:
            if element.get("text"):
                lines.append(show(element["text"]))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def document() -> str:
    event, digest = sample()
    text, rendered = blocks.thread_activity(digest)
    stored = digest.model_dump_json(indent=2)
    return f"""# The activity digest: a sample

What the reviewer of break-glass event `{event.id}` sees: alice@example.com held the `prod-admin` profile
(Identity Center permission set `BreakGlassAdmin`) for 20 minutes; 36 minutes after it started, breakglass
assumed the account's activity role (`deploy/activity-role.yaml`) and read CloudTrail's event history
(`LookupEvents`, 2 requests per second per account and region) in `us-east-1` and `eu-west-1`, for her
session only: calls of another person, and calls of her user name in another permission set's role, are
left out (`records_excluded`).

Generated from the records of `tests/fake_cloudtrail.py` (hostile strings included: `<!channel>`, a fake
link, `&`, bidi overrides, a 3,000-character policy statement id) by the real code. Regenerate with

    .venv/bin/python -m tests.activity_sample > docs/activity-digest.md

## In the audit thread

Notification text: `{html.unescape(text)}`

Rendered (Slack shows the UTC times in each reader's local time; everything taken from CloudTrail is in
code spans, escaped, so `<!channel>` is text, not a ping; bidi characters are shown as `\\u202e`):

```text
{as_seen(rendered)}```

The review modal shows the same blocks (at most {blocks.DIGEST_MODAL_BLOCKS}) between the justification and
the review notes.

## What is stored with the event

The digest as JSON (at most {MAX_DIGEST_BYTES:,} bytes: lists are cut, least useful first, with counts of
what was dropped; this one is {digest.size():,} bytes). `event_ids` are CloudTrail's own ids, for finding
the full records (`aws cloudtrail lookup-events --lookup-attributes AttributeKey=EventId,AttributeValue=…`).

```json
{stored}
```

## When something cannot be gathered

No role configured, `AccessDenied` on `AssumeRole`, throttling past the retries or a CloudTrail outage do
not block the review: the digest says what could not be gathered, why, and whether it is retried, e.g.

```text
{as_seen(blocks.thread_activity(_failed_sample(event))[1])}```
"""


def _failed_sample(event: BreakGlassEvent) -> Any:
    from bot.access.activity import ActivityDigest, DigestStatus, GatherError

    return ActivityDigest(
        breakglass_event=event.id,
        account=ACCOUNT,
        identities=(ALICE,),
        regions_queried=("us-east-1",),
        gathered_at=T0 + timedelta(minutes=36),
        window_start=T0 - timedelta(minutes=1),
        window_end=T0 + timedelta(minutes=25),
        status=DigestStatus.FAILED,
        errors=[
            GatherError(
                stage="assume_role",
                code="AccessDenied",
                message=(
                    f"arn:aws:iam::{ACCOUNT}:role/breakglass-activity: User: arn:aws:sts::999999999999:"
                    "assumed-role/breakglass-bot/i-0abc is not authorized to perform: sts:AssumeRole"
                ),
                retryable=False,
            )
        ],
    )


if __name__ == "__main__":
    print(document(), end="")
