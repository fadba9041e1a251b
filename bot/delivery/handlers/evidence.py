"""The activity digest's handler (`ACTIVITY_DIGEST`): gather the event's CloudTrail activity within the delivery
lease, post the digest to the audit thread, store it with the event, and owe the next gather when one is
due. When a digest is owed, and where its activity is looked for, are the use-case rules of bot/evidence.py."""

from __future__ import annotations

import logging
from typing import Any

from bot import blocks
from bot.delivery.deps import DeliveryDeps
from bot.delivery.handlers.announcements import audit_location
from bot.delivery.lease import lease_time_left
from bot.delivery.registry import Step
from store import BreakGlassEvent, mutate
from store.model import Deferred, OutboxKind

log = logging.getLogger(__name__)

MAX_BUDGET = 60.0  # seconds of LookupEvents requests per gather
BUDGET_MARGIN = 25.0  # seconds kept free on the delivery lease (one slow request, the post, the store write)
DELIVERY_ATTEMPTS = 3  # LookupEvents attempts per request (GatherLimits.attempts)


def deliver_digest(deps: DeliveryDeps, event: BreakGlassEvent) -> dict[str, Any]:
    """The ACTIVITY_DIGEST handler: gather, post to the audit thread, store (see the module doc)."""
    # CloudTrail (bot.access.activity) and the evidence rules: imported by the first digest, not at start-up
    from bot.access import activity
    from bot.access.activity import DigestStatus, GatherLimits
    from bot.evidence import KIND, MAX_FAILURES, activity_target, retry_delay, session_names, stored_digest

    if activity_target(deps.policy, event) is None:
        return {}  # the profile has no activity role (any more): nothing to gather
    channel, ts = audit_location(event)  # before any AWS work: the thread must exist
    target = activity_target(deps.policy, event, session_names(event))
    assert target is not None
    now = deps.clock.now()
    delay = deps.policy.access.activity_delay
    left = lease_time_left()
    budget = None if left is None else max(5.0, min(MAX_BUDGET, left - BUDGET_MARGIN))
    options: dict[str, Any] = {"limits": GatherLimits(attempts=DELIVERY_ATTEMPTS), **deps.activity_options}
    digest = activity.gather(event, target, now, activity_delay=delay, budget=budget, **options)

    failing = digest.status is DigestStatus.FAILED or digest.retryable
    failures = event.activity_failures + 1 if failing else 0
    previous = stored_digest(event)
    keep_previous = (
        digest.status is DigestStatus.FAILED
        and previous is not None
        and previous.status is not DigestStatus.FAILED
    )
    owe: list[Deferred] = []
    if digest.retryable and failures < MAX_FAILURES:
        owe.append(Deferred(KIND, now + retry_delay(failures)))
    due = activity.regather_due(event, delay)
    if digest.early and not any(
        e.kind is KIND and e.not_before and e.not_before >= due for e in event.outbox
    ):
        owe.append(Deferred(KIND, due))

    if not failing or event.activity_failures == 0:  # a digest, or the first failure of an episode
        text, body = blocks.thread_activity(digest)
        deps.client.chat_postMessage(channel=channel, thread_ts=ts, text=text, blocks=body)
    elif digest.retryable and failures == MAX_FAILURES:
        text, body = blocks.thread_activity_given_up(digest, failures)
        deps.client.chat_postMessage(channel=channel, thread_ts=ts, text=text, blocks=body)

    stored = event.activity if keep_previous else digest.model_dump_json()

    def record(ev: BreakGlassEvent) -> BreakGlassEvent:
        ev = ev.updated(activity=stored, activity_failures=failures)
        return ev.with_outbox(*owe) if owe else ev

    mutate(deps.store, event.id, record)
    log.info(
        "activity digest %s",
        digest.status.value,
        extra={
            "event_id": event.id,
            "action": "digest",
            "outcome": "retry" if digest.retryable else digest.status.value,
            "attempt": failures,
        },
    )
    return {}


HANDLERS: dict[OutboxKind, Step] = {
    OutboxKind.ACTIVITY_DIGEST: Step(deliver_digest, audit_channel=True, renders_state=True),
}
