"""Evidence for reviews, the use-case rules: where an event's activity digest (bot.access.activity) is looked
for and when it is owed. It is delivered through the outbox like every other side effect, by its handler in
bot/delivery/handlers/evidence.py; its Block Kit is in bot/blocks.py.

When it is owed (only for profiles whose `aws:` block names an `activity_role`; other profiles get nothing):
  * when the event ends (close, expiry: `ending_outbox`), for `ended_at + access.activity_delay`, when
    CloudTrail has delivered the session's records;
  * at review time (`regather_for_review`: the review form is opened, or the review is recorded), at once,
    when the stored digest needs it (`needs_regather`: none yet, gathered early, or a retryable failure);
  * after an early gather, again for `ended_at + activity_delay`; after a retryable failure (throttling, an
    outage, the time budget), again after a backoff (1 min doubling to 1 h, at most `MAX_FAILURES` in a row).

What its handler does (`deliver_digest`): gathers (within the delivery lease), posts the digest to the audit thread,
then stores it with the event (the newest; a failed gather never replaces a digest that holds records).
A failing gather is announced once per episode (the first failure after a success): the thread says what
could not be gathered and why; the retries stay quiet until one succeeds, which posts the digest.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from bot.access import activity
from bot.access.activity import ActivityDigest, ActivityTarget
from bot.policy import Policy
from store import BreakGlassEvent
from store.model import Deferred, OutboxKind

log = logging.getLogger(__name__)

KIND = OutboxKind.ACTIVITY_DIGEST
MAX_FAILURES = 12  # retryable failures in a row before the pipeline stops retrying (review time still does)
RETRY_BASE = timedelta(minutes=1)
RETRY_MAX = timedelta(hours=1)


def activity_target(
    policy: Policy, event: BreakGlassEvent, identities: tuple[str, ...] = ()
) -> ActivityTarget | None:
    """Where to look for the event's activity, or None when its profile has no `activity_role`.

    The person's sessions carry the identity the policy maps (the invoker) — for the `none` provider the
    name the sessions are expected under — and `identities` (`session_names`: for Identity Center the email
    of the Slack profile, which the identity-store user name usually is)."""
    profile = policy.profile(event.profile)
    aws = profile.aws if profile is not None else None
    if aws is None or not aws.activity_role:
        return None
    return ActivityTarget(
        account=aws.account,
        role=aws.activity_role,
        identities=identities or (event.invoker,),
        regions=tuple(aws.activity_regions),
        external_id=aws.activity_external_id,
        sso_permission_set=sso_permission_set(event),
    )


def sso_permission_set(event: BreakGlassEvent) -> str | None:
    """The Identity Center permission set name the event's sessions ran under ("" when its grant did not
    record one: any Identity Center role, never another kind), or None for other providers."""
    if event.access is None or event.access.provider != "identity-center":
        return None
    return event.access.permission_set_name or ""


def session_names(event: BreakGlassEvent) -> tuple[str, ...]:
    """The role session names the person's sessions carry: the invoker, and with the identity-center
    provider the email the identity-store user was found by at invoke time (stored with the event), never
    the Slack profile's email now: changing it after the event must not empty the digest."""
    names = [event.invoker]
    if event.access is not None and event.access.email and event.access.email.strip():
        names.append(event.access.email.strip())
    unique: dict[str, str] = {}
    for name in names:
        unique.setdefault(name.casefold(), name)
    return tuple(unique.values())[:5]


def stored_digest(event: BreakGlassEvent) -> ActivityDigest | None:
    if not event.activity:
        return None
    try:
        return ActivityDigest.model_validate_json(event.activity)
    except ValueError:
        log.warning("stored activity digest is unreadable", extra={"event_id": event.id, "action": "digest"})
        return None


def ending_outbox(policy: Policy, event: BreakGlassEvent, now: datetime) -> list[Deferred]:
    """What an event's close or expiry at `now` owes for its digest."""
    if activity_target(policy, event) is None:
        return []
    return [Deferred(KIND, now + policy.access.activity_delay)]


def regather_for_review(policy: Policy, event: BreakGlassEvent, now: datetime) -> BreakGlassEvent | None:
    """`event` owing a gather now, if review time calls for one (see the module doc); None if not."""
    if not event.status.ended or activity_target(policy, event) is None:
        return None
    delay = policy.access.activity_delay
    digest = stored_digest(event)
    if not activity.needs_regather(digest, event, delay):
        return None
    if any(e.kind is KIND and e.due(now) for e in event.outbox):
        return None  # a gather is due already
    if digest is not None and not digest.retryable and now < activity.regather_due(event, delay):
        return None  # an early digest: the gather after CloudTrail's delay is owed already
    return event.with_outbox(KIND)


def retry_delay(failures: int) -> timedelta:
    base = min(RETRY_MAX, RETRY_BASE * 2 ** max(0, failures - 1))
    return base * random.uniform(0.8, 1.2)  # jitter, not security
