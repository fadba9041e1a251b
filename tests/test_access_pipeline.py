"""AWS access end to end: signed Slack requests to the bot's real HTTP endpoint, the delivery pipeline, and
IAM Identity Center on a moto server reached through the SDK's environment variables only.

Invoke → the assignment exists and its receipt is in the thread and the DM; close and expiry → the
assignment is gone, the person's earlier sessions are denied and the revocation receipt is in the thread;
a rogue assignment is removed and announced; overlapping events never revoke each other; a person with no
identity-store user is refused before anything is stored."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bot import lambda_handler
from bot.access.identity_center import IdentityCenterProvider
from bot.clock import ManualClock
from bot.delivery.lease import LEASE
from bot.localslack.webapi import FakeSlack
from bot.service import InvokeRequest
from store import Status
from store.model import EventAccess, OutboxKind
from store.sqlite import SQLiteStore
from tests.access_world import ACCOUNT, Aws
from tests.conftest import Bot, make_bot
from tests.test_flows_close import settled, submit_close
from tests.test_lambda import (
    JUSTIFICATION,
    FakeLambdaClient,
    LambdaContext,
    build_runtime,
    command_body,
    function_url_event,
    signed_headers,
)

pytest_plugins = ["tests.store_fixtures", "tests.access_world"]

SANDBOX_30M = {"profile": "sandbox", "duration": "1800"}


@pytest.fixture
def access_bot(aws: Aws, fake: FakeSlack, store: SQLiteStore, clock: ManualClock) -> Iterator[Bot]:
    bot = make_bot(fake, store, aws.policy(), clock)
    yield bot
    bot.runtime.scheduler.shutdown(wait=False)
    bot.server.stop()


def texts(bot: Bot, channel: str, thread_ts: str | None = None) -> list[str]:
    return [
        c.params.get("text", "")
        for c in bot.fake.calls_to("chat.postMessage")
        if c.ok
        and c.params.get("channel") == channel
        and (thread_ts is None or c.params.get("thread_ts") == thread_ts)
    ]


def invoke(bot: Bot, user: str = "U0001", **fields: Any) -> str:
    before = {e.id for e in bot.store.list_by_invoker(user, limit=100).items}
    response = bot.slack.invoke(user=user, **(fields or SANDBOX_30M))
    assert response.status == 200 and response.json["response_action"] == "update", response.json
    (new,) = [e.id for e in bot.store.list_by_invoker(user, limit=100).items if e.id not in before]
    return new


def test_invoke_grants_the_assignment_with_a_receipt_in_the_thread_and_the_dm(
    access_bot: Bot, aws: Aws
) -> None:
    event_id = invoke(access_bot)
    event = settled(access_bot, event_id)
    assert aws.assigned() == [aws.users["U0001"]]
    assert event.access is not None and event.access.permission_set_name  # read at grant: binds the digest
    assert aws.permission_set_name == event.access.permission_set_name
    assert event.access == EventAccess(
        provider="identity-center",
        account="111122223333",
        permission_set=aws.permission_set,
        user_id=aws.users["U0001"],
        email="alice@example.com",
        permission_set_name=event.access.permission_set_name,
        pre_existing=False,
        grant_requested_at=access_bot.clock.now(),
        granted_at=access_bot.clock.now(),
    )
    (receipt,) = [t for t in texts(access_bot, "C0AUDIT", event.audit_ts) if "AWS access granted" in t]
    assert aws.users["U0001"] in receipt and aws.permission_set in receipt and "111122223333" in receipt
    assert "after the invocation (AWS took 0.0 s)" in receipt
    assert any("AWS access granted" in t for t in texts(access_bot, "U0001"))


def test_close_deletes_the_assignment_and_denies_earlier_sessions(access_bot: Bot, aws: Aws) -> None:
    event_id = invoke(access_bot)
    settled(access_bot, event_id)
    access_bot.clock.advance(timedelta(minutes=10))
    assert submit_close(access_bot, event_id, "Replica promoted, done").status == 200
    event = settled(access_bot, event_id)
    assert event.status is Status.CLOSED
    assert aws.assigned() == []
    closed_at = access_bot.clock.now()
    # the deny reaches the clock-skew bound past the revoke (bot.skew.SKEW_BOUND)
    deny_until = (closed_at + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert aws.deny_of("U0001") == deny_until
    assert event.access is not None
    assert event.access.assignment_deleted_at == closed_at
    assert event.access.sessions_denied_at == closed_at
    assert event.access.kept is None
    (receipt,) = [t for t in texts(access_bot, "C0AUDIT", event.audit_ts) if "AWS access revoked" in t]
    assert "Assignment deleted" in receipt and "denied" in receipt
    # the revoke came before the close announcements in the owed order
    assert event.outbox == ()


def test_expiry_revokes_within_one_sweep(access_bot: Bot, aws: Aws) -> None:
    event_id = invoke(access_bot)
    settled(access_bot, event_id)
    assert aws.assigned() == [aws.users["U0001"]]
    access_bot.clock.advance(timedelta(minutes=31))
    counts = access_bot.runtime.scheduler.sweep()
    assert counts["expired"] == 1
    event = access_bot.store.get(event_id)
    assert event.status is Status.EXPIRED
    assert aws.assigned() == []
    assert aws.deny_of("U0001") is not None
    assert event.access is not None and event.access.revoked_at == access_bot.clock.now()
    assert any("AWS access revoked" in t for t in texts(access_bot, "C0AUDIT", event.audit_ts))


def test_a_rogue_assignment_is_removed_and_announced_to_security(access_bot: Bot, aws: Aws) -> None:
    event_id = invoke(access_bot)
    settled(access_bot, event_id)
    aws.assign(aws.users["U0002"])  # someone assigned bob by hand, outside breakglass
    aws.assign("g-rogue-group", principal_type="GROUP")
    assert access_bot.runtime.scheduler.sweep()["drift"] == 2
    assert aws.assigned() == [aws.users["U0001"]]  # alice's active event keeps hers
    (drift,) = [t for t in texts(access_bot, "C0AUDIT") if "AWS access drift" in t]
    assert "<!subteam^S0SEC>" in drift
    assert aws.users["U0002"] in drift and "g-rogue-group" in drift and "removed" in drift
    assert aws.deny_of("U0002") is not None  # the rogue user's sessions are denied too
    # once per period across replicas: a second sweep in the same period does not check again
    aws.assign(aws.users["U0002"])
    assert access_bot.runtime.scheduler.sweep()["drift"] == 0
    access_bot.clock.advance(timedelta(minutes=5))
    assert access_bot.runtime.scheduler.sweep()["drift"] == 1
    assert aws.assigned() == [aws.users["U0001"]]


def test_a_drift_announcement_survives_the_process_that_found_it(
    access_bot: Bot, aws: Aws, fake: FakeSlack, tmp_path: Path, clock: ManualClock
) -> None:
    """The drift check repairs, then owes its announcement in the store: Slack refuses the post, the
    process goes away (its memory with it), and another process's sweep announces it, once."""
    event_id = invoke(access_bot)
    settled(access_bot, event_id)
    aws.assign(aws.users["U0002"])
    fake.fail("chat.postMessage", error="fatal_error", channel="C0AUDIT")
    assert access_bot.runtime.scheduler.sweep()["drift"] == 0  # repaired, not announced
    assert aws.assigned() == [aws.users["U0001"]]
    assert not [t for t in texts(access_bot, "C0AUDIT") if "AWS access drift" in t]
    access_bot.server.stop()  # the process that found it is gone
    clock.advance(int(LEASE.total_seconds()) + 1)  # its claim on the failed post runs out

    second = make_bot(fake, SQLiteStore(tmp_path / "breakglass.db"), aws.policy(), clock)
    try:
        assert second.runtime.scheduler.sweep()["drift"] == 1  # the check itself is not run again
        assert second.runtime.scheduler.sweep()["drift"] == 0
    finally:
        second.server.stop()
    (drift,) = [t for t in texts(second, "C0AUDIT") if "AWS access drift" in t]
    assert aws.users["U0002"] in drift and "removed" in drift


def test_a_vanished_assignment_of_an_active_event_is_granted_again(access_bot: Bot, aws: Aws) -> None:
    event_id = invoke(access_bot)
    settled(access_bot, event_id)
    aws.sso.delete_account_assignment(
        InstanceArn=aws.instance_arn,
        TargetId="111122223333",
        TargetType="AWS_ACCOUNT",
        PermissionSetArn=aws.permission_set,
        PrincipalType="USER",
        PrincipalId=aws.users["U0001"],
    )
    assert access_bot.runtime.scheduler.sweep()["drift"] == 1
    assert aws.assigned() == [aws.users["U0001"]]
    assert any(f"{event_id}`'s assignment had vanished" in t for t in texts(access_bot, "C0AUDIT"))


def test_an_unknown_email_is_refused_before_anything_is_stored(
    aws: Aws, fake: FakeSlack, store: SQLiteStore, clock: ManualClock
) -> None:
    fake.add_user("U0NEW", email="newcomer@example.com")
    bot = make_bot(fake, store, aws.policy(), clock)
    try:
        response = bot.slack.invoke(user="U0NEW", **SANDBOX_30M)
        assert response.json["response_action"] == "errors"
        message = " ".join(response.json["errors"].values())
        assert (
            "No user with the email address newcomer@example.com exists in the AWS identity store" in message
        )
        assert aws.identity_store_id in message
        assert store.list_by_invoker("U0NEW").items == []
        assert aws.assigned() == []
    finally:
        bot.runtime.scheduler.shutdown(wait=False)
        bot.server.stop()


def test_two_people_on_one_permission_set_never_revoke_each_other(access_bot: Bot, aws: Aws) -> None:
    alice = invoke(access_bot, "U0001")
    bob = invoke(access_bot, "U0002")
    settled(access_bot, alice)
    settled(access_bot, bob)
    assert aws.assigned() == sorted([aws.users["U0001"], aws.users["U0002"]])
    submit_close(access_bot, alice, "Done with the failover", user="U0001")
    settled(access_bot, alice)
    assert aws.assigned() == [aws.users["U0002"]]
    assert aws.deny_of("U0002") is None


def test_a_new_event_right_after_the_old_one_closed_keeps_its_access(access_bot: Bot, aws: Aws) -> None:
    """The old event's revoke is still owed when the new event's grant runs (both orders)."""
    service, pipeline = access_bot.service, access_bot.runtime.pipeline
    first = invoke(access_bot)
    settled(access_bot, first)
    # Close the first without delivering (as if its revoke were still in flight), invoke again.
    service.close(first, by="U0001", reason="Closing before a second try")
    second = invoke(access_bot)
    access_bot.idle()  # delivered after the ack: the new grant sees the old assignment, made by breakglass
    new = access_bot.store.get(second)
    assert new.access is not None and new.access.pre_existing is False and new.access.granted_at
    pipeline.deliver(first)  # the old revoke sees the new event holding the assignment: keeps it
    old = access_bot.store.get(first)
    assert old.access is not None and old.access.kept == "held-by-other-events"
    assert aws.assigned() == [aws.users["U0001"]]
    assert any("kept because another active" in t for t in texts(access_bot, "C0AUDIT", old.audit_ts))
    submit_close(access_bot, second, "Now really done here", user="U0001")
    done = settled(access_bot, second)
    assert done.access is not None and done.access.kept is None, done.access
    assert aws.assigned() == []


def test_a_revoke_delivered_before_the_new_grant_leaves_the_new_grant_its_access(
    access_bot: Bot, aws: Aws
) -> None:
    service, pipeline = access_bot.service, access_bot.runtime.pipeline
    first = invoke(access_bot)
    settled(access_bot, first)
    service.close(first, by="U0001", reason="Closing before a second try")
    # stored, not delivered yet (the service alone: no post-ack delivery)
    second = service.invoke(
        InvokeRequest(
            user_id="U0001",
            profile="sandbox",
            reason="incident",
            justification="Second attempt at the failover, same runbook",
            duration="1800",
        )
    ).id
    pipeline.deliver(first)  # the new event has not looked at AWS yet: the old revoke deletes
    assert aws.assigned() == []
    # the old deny reaches 30 s (the clock-skew margin) past the revoke, into the new event's sessions
    revoked_at = access_bot.clock.now()
    assert aws.deny_of("U0001") == (revoked_at + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    access_bot.clock.advance(timedelta(seconds=5))
    pipeline.deliver(second)  # the new grant finds nothing and assigns afresh
    assert aws.assigned() == [aws.users["U0001"]]
    # ... so the new grant pulls it back to its own time: only sessions from before the new grant stay denied
    assert aws.deny_of("U0001") == access_bot.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    new = access_bot.store.get(second)
    assert new.access is not None and new.access.pre_existing is False


def test_standing_access_is_recorded_and_left_alone(access_bot: Bot, aws: Aws) -> None:
    aws.assign(aws.users["U0001"])  # alice had this assignment before breakglass
    event_id = invoke(access_bot)
    event = settled(access_bot, event_id)
    assert event.access is not None and event.access.pre_existing is True
    assert any("standing access" in t for t in texts(access_bot, "C0AUDIT", event.audit_ts))
    submit_close(access_bot, event_id, "Did not need it after all")
    event = settled(access_bot, event_id)
    assert aws.assigned() == [aws.users["U0001"]]
    assert aws.deny_of("U0001") is None
    assert event.access is not None and event.access.kept == "pre-existing"


def test_the_assignment_lock_makes_a_concurrent_step_wait(access_bot: Bot, aws: Aws) -> None:
    """Another process holding the assignment's lock: the grant stays owed and is retried after it."""
    store, clock = access_bot.store, access_bot.clock
    user = aws.users["U0001"]
    lock = f"access-lock:111122223333:{aws.permission_set}:{user}"
    assert store.claim(lock, now=clock.now(), hold=LEASE)
    event_id = invoke(access_bot)
    access_bot.idle()
    assert store.get(event_id).owes(OutboxKind.ACCESS_GRANT)
    assert aws.assigned() == []
    clock.advance(LEASE)  # the other holder's lock runs out (or it finishes)
    access_bot.runtime.scheduler.sweep()
    assert aws.assigned() == [user]
    assert not store.get(event_id).outbox


def test_the_provider_is_built_from_the_policy_and_the_sdk_environment(access_bot: Bot, aws: Aws) -> None:
    provider = access_bot.runtime.pipeline.access
    assert isinstance(provider, IdentityCenterProvider)
    assert provider.sso.meta.endpoint_url == aws.url
    assert access_bot.service.access is provider


# -- failures: announced once per episode, retried; a failing revoke alarms security again and again -----


class FlakySso:
    """The real sso-admin client, except that the named operations answer AWS errors while listed."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.failing: dict[str, list[str]] = {}  # operation -> error codes still to answer, in order

    def fail(self, operation: str, *codes: str) -> None:
        self.failing[operation] = list(codes)

    def __getattr__(self, name: str) -> Any:
        codes = self.failing.get(name)
        if not codes:
            return getattr(self.real, name)

        def failing(**_: Any) -> Any:
            code = codes[0] if len(codes) == 1 else codes.pop(0)  # the last code repeats until healed
            raise ClientError(
                {
                    "Error": {"Code": code, "Message": f"{code} injected by the test"},
                    "ResponseMetadata": {"RequestId": "req-0001", "HTTPStatusCode": 400},
                },
                name,
            )

        return failing

    def heal(self) -> None:
        self.failing.clear()


@pytest.fixture
def flaky(access_bot: Bot) -> FlakySso:
    provider = access_bot.runtime.pipeline.access
    assert isinstance(provider, IdentityCenterProvider)
    provider.sso = FlakySso(provider.sso)
    provider.sleep = lambda _seconds: None  # the provider's own retries, without waiting
    return provider.sso


def retry_later(bot: Bot, after: timedelta = timedelta(minutes=1)) -> None:
    bot.clock.advance(after)
    bot.runtime.scheduler.sweep()


def test_a_permanent_grant_failure_is_announced_once_and_retried_until_it_works(
    access_bot: Bot, aws: Aws, flaky: FlakySso
) -> None:
    flaky.fail("create_account_assignment", "AccessDeniedException")
    event_id = invoke(access_bot)
    access_bot.idle()
    event = access_bot.store.get(event_id)
    assert event.owes(OutboxKind.ACCESS_GRANT) and aws.assigned() == []
    assert event.access is not None and "AccessDeniedException" in (event.access.failure or "")
    (alert,) = [t for t in texts(access_bot, "C0AUDIT", event.audit_ts) if "could not be granted" in t]
    assert "<!subteam^S0SEC>" in alert and "AccessDeniedException" in alert and "req-0001" in alert
    assert sum("could not be granted yet" in t for t in texts(access_bot, "U0001")) == 1
    retry_later(access_bot)  # still failing: retried, not announced again
    assert access_bot.store.get(event_id).access.failures == 2  # type: ignore[union-attr]
    assert sum("could not be granted" in t for t in texts(access_bot, "C0AUDIT")) == 1
    flaky.heal()
    retry_later(access_bot)
    assert aws.assigned() == [aws.users["U0001"]]
    (receipt,) = [t for t in texts(access_bot, "C0AUDIT", event.audit_ts) if "AWS access granted" in t]
    assert "after 2 failed attempts" in receipt
    assert not access_bot.store.get(event_id).outbox


def test_transient_errors_are_retried_without_announcing(access_bot: Bot, aws: Aws, flaky: FlakySso) -> None:
    real = flaky.real.create_account_assignment
    calls = {"n": 0}

    def throttled_twice(**params: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise ClientError(
                {"Error": {"Code": "ThrottlingException"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
                "CreateAccountAssignment",
            )
        return real(**params)

    flaky.real = _Override(flaky.real, create_account_assignment=throttled_twice)
    event_id = invoke(access_bot)
    event = settled(access_bot, event_id)
    assert calls["n"] == 3 and aws.assigned() == [aws.users["U0001"]]
    assert event.access is not None and event.access.failures == 0
    assert not [t for t in texts(access_bot, "C0AUDIT") if "could not be granted" in t]


class _Override:
    def __init__(self, real: Any, **methods: Any) -> None:
        self.real, self.methods = real, methods

    def __getattr__(self, name: str) -> Any:
        return self.methods.get(name) or getattr(self.real, name)


def test_a_failing_revoke_alarms_security_loudly_and_repeatedly(
    access_bot: Bot, aws: Aws, flaky: FlakySso
) -> None:
    event_id = invoke(access_bot)
    settled(access_bot, event_id)
    flaky.fail("delete_account_assignment", "AccessDeniedException")
    submit_close(access_bot, event_id, "Replica promoted, done")
    access_bot.idle()
    event = access_bot.store.get(event_id)
    assert event.owes(OutboxKind.ACCESS_REVOKE) and aws.assigned() == [aws.users["U0001"]]

    def alarms() -> tuple[int, int]:
        thread = [t for t in texts(access_bot, "C0AUDIT", event.audit_ts) if "NOT revoked" in t]
        dms = [t for t in texts(access_bot, "U0SECA") if "is failing" in t]
        return len(thread), len(dms)

    assert alarms() == (1, 1)
    retry_later(access_bot)  # retried, alarm not yet due again
    assert alarms() == (1, 1)
    retry_later(access_bot, timedelta(minutes=5))  # 5 minutes after the first alarm: again
    assert alarms() == (2, 2)
    assert any("alarm 2" in t for t in texts(access_bot, "C0AUDIT", event.audit_ts))
    retry_later(access_bot, timedelta(minutes=5))  # the next one waits 15 minutes
    assert alarms() == (2, 2)
    retry_later(access_bot, timedelta(minutes=11))
    assert alarms() == (3, 3)
    flaky.heal()
    retry_later(access_bot)
    assert aws.assigned() == []
    assert aws.deny_of("U0001") is not None
    done = access_bot.store.get(event_id)
    assert not done.outbox and done.access is not None and done.access.revoked_at is not None
    assert any("AWS access revoked" in t for t in texts(access_bot, "C0AUDIT", event.audit_ts))


def test_in_lambda_the_lazy_listener_grants_and_the_minute_sweep_revokes(
    aws: Aws, fake: FakeSlack, store: SQLiteStore, clock: ManualClock
) -> None:
    lam = FakeLambdaClient()
    lambda_handler.install(build_runtime(fake, store, aws.policy(), clock), lambda_client=lam)
    try:
        body = command_body(f"sandbox 30m maintenance {JUSTIFICATION}")
        response = lambda_handler.handler(function_url_event(body, signed_headers(body)), LambdaContext())
        assert response["statusCode"] == 200, response
        assert store.list_active() == [] and aws.assigned() == []  # acked first: decided in the lazy run
        (invocation,) = lam.invocations
        assert lambda_handler.handler(json.loads(invocation["Payload"]), LambdaContext())["statusCode"] == 200
        (event,) = store.list_active()
        assert event.access is not None  # the grant it owed, delivered in the same run
        assert aws.assigned() == [aws.users["U0001"]]
        assert store.get(event.id).outbox == ()

        clock.advance(timedelta(minutes=31))
        counts = lambda_handler.sweep_handler({}, LambdaContext())
        assert counts["expired"] == 1
        assert aws.assigned() == [] and aws.deny_of("U0001") is not None
        expired = store.get(event.id)
        assert expired.status is Status.EXPIRED and expired.outbox == ()
        assert expired.access is not None and expired.access.revoked_at == clock.now()
    finally:
        lambda_handler.reset()


def test_an_unreachable_identity_store_refuses_and_stores_nothing(access_bot: Bot, aws: Aws) -> None:
    provider = access_bot.runtime.pipeline.access
    assert isinstance(provider, IdentityCenterProvider)
    provider.ids = FlakySso(provider.ids)
    provider.ids.fail("get_user_id", "ThrottlingException")
    provider.sleep = lambda _seconds: None
    response = access_bot.slack.invoke(user="U0001", **SANDBOX_30M)
    # not found out when the form opened (a transient failure is not an answer): asked again after the
    # submission's ack, still failing, so the modal shows why nothing was granted
    assert response.headers.get("X-Answered-By") == "views.update"
    assert response.json["view"]["title"]["text"] == "Not granted"
    message = json.dumps(response.json["view"]["blocks"])
    assert "Could not look you up in the AWS identity store" in message and "ThrottlingException" in message
    assert access_bot.store.list_by_invoker("U0001").items == []


def test_what_the_grant_saw_is_recorded_before_it_creates_so_a_retry_owns_its_assignment(
    access_bot: Bot, aws: Aws, flaky: FlakySso
) -> None:
    """An attempt that created the assignment but died before recording it (here: AWS answers an error
    after doing it): the retry finds the assignment and, having recorded that it was absent before, takes
    it as its own, so the revoke removes it (it is not mistaken for standing access)."""
    flaky.fail("create_account_assignment", "AccessDeniedException")
    event_id = invoke(access_bot)
    access_bot.idle()
    event = access_bot.store.get(event_id)
    assert event.access is not None and event.access.pre_existing is False and event.access.granted_at is None
    aws.assign(aws.users["U0001"])  # what the failed attempt did after all
    flaky.heal()
    retry_later(access_bot)
    event = access_bot.store.get(event_id)
    assert event.access is not None and event.access.pre_existing is False and event.access.granted_at
    submit_close(access_bot, event_id, "Replica promoted, done")
    settled(access_bot, event_id)
    assert aws.assigned() == []


def test_a_grant_pulls_back_a_deny_merged_later_than_its_own_revoke(access_bot: Bot, aws: Aws) -> None:
    """To fit IAM's quota, a person's deny can be merged to a later bound than their own revoke (another
    person's). Their next grant must pull it back, though their stored receipt says the deny ended earlier."""
    from bot.access.denies import DenyPolicy

    first = invoke(access_bot)
    settled(access_bot, first)
    submit_close(access_bot, first, "Done with the first attempt")
    old = settled(access_bot, first)
    assert old.access is not None and old.access.sessions_issued_before is not None
    merged = DenyPolicy.parse(aws.inline_policy())
    later = access_bot.clock.now() + timedelta(minutes=3)
    merged.add(ACCOUNT, aws.users["U0001"], later)  # as a merge with a later revoke's group would
    aws.sso.put_inline_policy_to_permission_set(
        InstanceArn=aws.instance_arn, PermissionSetArn=aws.permission_set, InlinePolicy=merged.render()
    )
    access_bot.clock.advance(timedelta(minutes=1))
    second = invoke(access_bot)
    settled(access_bot, second)
    assert old.access.sessions_issued_before < access_bot.clock.now() < later
    assert aws.deny_of("U0001") == access_bot.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_drift_check_never_grants_again_an_event_closed_while_it_listed(
    access_bot: Bot, aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check reads the events (active), then lists the target slowly; meanwhile the event is closed
    and revoked. Re-granting from the first read would give the closed event its access back until the next
    check: the re-grant reads the event again under the assignment lock, after the listing."""
    event_id = invoke(access_bot)
    settled(access_bot, event_id)
    aws.sso.delete_account_assignment(  # vanished behind breakglass's back: the check will want it back
        InstanceArn=aws.instance_arn,
        TargetId=ACCOUNT,
        TargetType="AWS_ACCOUNT",
        PermissionSetArn=aws.permission_set,
        PrincipalType="USER",
        PrincipalId=aws.users["U0001"],
    )
    provider = access_bot.runtime.pipeline.access
    assert isinstance(provider, IdentityCenterProvider)
    real_list = provider._list_assignments
    closed_during_listing = []

    def slow_listing(target: Any, request_ids: list[str]) -> list[dict[str, Any]]:
        listed = real_list(target, request_ids)
        if not closed_during_listing:  # while this listing is "in flight", the event ends and is revoked
            closed_during_listing.append(True)
            access_bot.service.close(event_id, by="U0001", reason="Incident over, closing")
            access_bot.runtime.pipeline.deliver(event_id)
            assert access_bot.store.get(event_id).access.revoked_at is not None
        return listed

    monkeypatch.setattr(provider, "_list_assignments", slow_listing)
    access_bot.runtime.scheduler.sweep()
    assert closed_during_listing
    assert access_bot.store.get(event_id).status is Status.CLOSED
    assert aws.assigned() == []  # not granted again
    assert not any(f"{event_id}`'s assignment had vanished" in t for t in texts(access_bot, "C0AUDIT"))


def test_a_revoke_nobody_attempts_past_its_deadline_alarms_once_and_degrades_health(
    access_bot: Bot, aws: Aws, caplog: pytest.LogCaptureFixture
) -> None:
    """A revoke that never fails but never runs (here: its assignment lock held by a dead holder) used to
    be silent. Past its deadline (ended + sweep interval + 10 s) it alarms: the thread and every security
    member, one ERROR line, and /healthz degraded until the revoke is done."""
    from bot.revoke_deadline import REVOKE_DEADLINE
    from tests.test_audit_channel import health

    event_id = invoke(access_bot)
    event = settled(access_bot, event_id)
    assert event.access is not None
    lock = f"access-lock:{ACCOUNT}:{aws.permission_set}:{event.access.user_id}"
    assert access_bot.store.claim(lock, now=access_bot.clock.now(), hold=timedelta(minutes=10))
    submit_close(access_bot, event_id, "Replica promoted, done")
    access_bot.idle()
    assert access_bot.store.get(event_id).owes(OutboxKind.ACCESS_REVOKE)

    def alarms() -> tuple[int, int]:
        thread = [t for t in texts(access_bot, "C0AUDIT", event.audit_ts) if "NOT revoked" in t]
        dms = [t for t in texts(access_bot, "U0SECA") if "is failing" in t]
        return len(thread), len(dms)

    access_bot.clock.advance(timedelta(seconds=30))  # within the deadline: nothing yet
    assert access_bot.runtime.scheduler.sweep()["revokes_overdue"] == 0
    assert alarms() == (0, 0) and health(access_bot)[1]["status"] == "ok"

    access_bot.clock.advance(REVOKE_DEADLINE + timedelta(seconds=1))
    with caplog.at_level(logging.ERROR):
        assert access_bot.runtime.scheduler.sweep()["revokes_overdue"] == 1
    assert alarms() == (1, 1)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "AWS access revoke overdue: the revoke is still not done 1 s after its deadline; the assignment "
        "may still exist and the sessions are not denied"
    ]
    status, body = health(access_bot)
    assert status == 200 and body["status"] == "degraded"
    assert body["checks"]["revocations"]["overdue_revokes"] == [event_id]
    assert access_bot.runtime.scheduler.sweep()["revokes_overdue"] == 0  # once per event
    assert alarms() == (1, 1)

    access_bot.store.finish_claim(lock, until=access_bot.clock.now())  # the lock frees: the revoke runs
    retry_later(access_bot, timedelta(minutes=2))
    assert access_bot.store.get(event_id).access.revoked_at is not None
    assert aws.assigned() == []
