"""The identity-center provider end to end on moto server, configured by environment variables only:
grant, revoke with the session deny, standing access, overlapping events, cleanup and drift repair."""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot.access import Assignment, ExpectedAssignment, UserNotInIdentityStore, make_provider
from bot.access.denies import ROLE_POLICY_LIMIT, Deny, DenyPolicy, denies_of, not_denied, quota_length
from bot.access.identity_center import IdentityCenterProvider
from bot.policy import AccessPolicy
from tests.access_fixtures import ACCOUNT, World
from tests.store_fixtures import T0

pytest_plugins = ["tests.store_fixtures", "tests.access_fixtures"]

OPERATOR_STATEMENT = {"Sid": "OperatorReadOnly", "Effect": "Allow", "Action": "s3:Get*", "Resource": "*"}


def statements(world: World) -> list[dict]:
    text = world.inline_policy()
    return json.loads(text)["Statement"] if text else []


def denied(world: World) -> list[tuple[str, str]]:
    """(account, user id) of every deny entry on the permission set."""
    return [(d.account, d.user_id) for d in denies_of(world.inline_policy())]


def test_clients_follow_the_sdk_environment(sso_env: str) -> None:
    provider = make_provider(
        AccessPolicy(
            provider="identity-center",
            instance_arn="arn:aws:sso:::instance/ssoins-0123456789abcdef",
            identity_store_id="d-0123456789",
        )
    )
    assert isinstance(provider, IdentityCenterProvider)
    assert provider.sso.meta.endpoint_url == sso_env
    assert provider.ids.meta.endpoint_url == sso_env
    assert provider.sso.meta.region_name == provider.ids.meta.region_name == "eu-west-1"  # AWS_REGION
    assert provider.sso.meta.config.retries["total_max_attempts"] == 1  # retries are the provider's


def test_resolve_user_by_email(world: World) -> None:
    user_id, email = world.user("alice")
    assert world.provider.resolve_user(email) == user_id


def test_unknown_email_is_a_typed_error_saying_so(world: World) -> None:
    with pytest.raises(UserNotInIdentityStore) as caught:
        world.provider.resolve_user("nobody@example.com")
    assert caught.value.email == "nobody@example.com"
    assert not caught.value.transient
    assert "No user with the email address nobody@example.com exists in the AWS identity store " in str(
        caught.value
    )
    assert world.identity_store_id in str(caught.value)


def test_grant_assigns_and_returns_a_receipt(world: World) -> None:
    user_id, _ = world.user("alice")
    receipt = world.provider.grant("ev1", world.target, user_id)
    assert world.assigned_users() == [("USER", user_id)]
    assert receipt.provider == "identity-center"
    assert receipt.assignment == Assignment(
        account=ACCOUNT, permission_set=world.permission_set, user_id=user_id
    )
    assert receipt.requested_at == receipt.completed_at == T0  # moto answers SUCCEEDED at once
    assert receipt.took == timedelta(0)
    assert receipt.pre_existing is False
    # ListAccountAssignments, CreateAccountAssignment, DescribePermissionSet (its name binds the digest)
    assert len(receipt.request_ids) == 3
    assert receipt.permission_set_name is not None and receipt.permission_set_name.startswith("breakglass-")
    # A retried grant (after a crash) finds its assignment and does not create a second one.
    again = world.provider.grant("ev1", world.target, user_id, first_attempt=False)
    assert again.pre_existing is False
    assert world.assigned_users() == [("USER", user_id)]


def test_revoke_deletes_and_denies_sessions_issued_before(world: World) -> None:
    user_id, _ = world.user("alice")
    world.put_inline_policy(json.dumps({"Version": "2012-10-17", "Statement": [OPERATOR_STATEMENT]}))
    world.provider.grant("ev1", world.target, user_id)
    world.clock.advance(timedelta(minutes=30))
    receipt = world.provider.revoke("ev1", world.target, user_id)
    assert world.assigned_users() == []
    revoked_at = T0 + timedelta(minutes=30)
    assert receipt.assignment_deleted_at == receipt.sessions_issued_before == revoked_at
    assert receipt.sessions_denied_at == revoked_at
    assert receipt.kept is None
    assert statements(world) == [
        OPERATOR_STATEMENT,  # never dropped
        {
            "Sid": "BreakglassRevoke0",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"identitystore:UserId": user_id, "aws:PrincipalAccount": ACCOUNT},
                "DateLessThan": {"aws:TokenIssueTime": "2026-03-01T12:30:00Z"},
            },
        },
    ]
    state = world.provider.inspect(world.target, user_id)
    assert state.assigned is False
    assert state.denied_sessions_issued_before == revoked_at


def test_revoke_again_is_safe_and_moves_the_deny_later_only(world: World) -> None:
    user_id, _ = world.user("alice")
    world.provider.grant("ev1", world.target, user_id)
    world.provider.revoke("ev1", world.target, user_id)
    world.clock.advance(timedelta(minutes=5))
    second = world.provider.revoke("ev1", world.target, user_id)  # a retry after a crash
    assert second.assignment_deleted_at == T0 + timedelta(minutes=5)
    (deny,) = statements(world)
    assert deny["Condition"]["DateLessThan"]["aws:TokenIssueTime"] == "2026-03-01T12:05:00Z"


def test_standing_access_is_recorded_and_never_removed(world: World) -> None:
    user_id, _ = world.user("standing")
    world.assign(user_id)  # assigned before breakglass
    receipt = world.provider.grant("ev1", world.target, user_id)
    assert receipt.pre_existing is True
    revoked = world.provider.revoke("ev1", world.target, user_id, pre_existing=receipt.pre_existing)
    assert revoked.kept == "pre-existing"
    assert revoked.assignment_deleted_at is None and revoked.sessions_denied_at is None
    assert world.assigned_users() == [("USER", user_id)]
    assert statements(world) == []  # their sessions are not cut either


def test_an_assignment_held_by_another_active_event_is_not_pre_existing(world: World) -> None:
    user_id, _ = world.user("alice")
    world.provider.grant("old", world.target, user_id)
    world.held[Assignment.of(world.target, user_id)] = {"old"}
    assert world.provider.grant("new", world.target, user_id).pre_existing is False


def test_different_people_on_one_permission_set_do_not_revoke_each_other(world: World) -> None:
    alice, _ = world.user("alice")
    bob, _ = world.user("bob")
    world.provider.grant("ev-alice", world.target, alice)
    world.provider.grant("ev-bob", world.target, bob)
    world.provider.revoke("ev-alice", world.target, alice)
    assert world.assigned_users() == [("USER", bob)]
    assert denied(world) == [(ACCOUNT, alice)]


def test_another_active_event_on_the_same_assignment_keeps_it(world: World) -> None:
    """A new event right after the old one closed, or two profiles on one account and permission set:
    revoking one event leaves the assignment the other still holds, and does not cut its sessions."""
    user_id, _ = world.user("alice")
    assignment = Assignment.of(world.target, user_id)
    world.provider.grant("old", world.target, user_id)
    world.held[assignment] = {"old", "new"}
    world.provider.grant("new", world.target, user_id)
    receipt = world.provider.revoke("old", world.target, user_id)
    assert receipt.kept == "held-by-other-events"
    assert receipt.other_holders == ("new",)
    assert world.assigned_users() == [("USER", user_id)]
    assert statements(world) == []
    world.held[assignment] = {"new"}  # the caller's store: only "new" is active now
    final = world.provider.revoke("new", world.target, user_id)
    assert final.kept is None
    assert world.assigned_users() == []


def test_cleanup_removes_the_deny_after_the_session_duration(world: World) -> None:
    alice, _ = world.user("alice")
    bob, _ = world.user("bob")
    world.put_inline_policy(json.dumps({"Version": "2012-10-17", "Statement": [OPERATOR_STATEMENT]}))
    for event, user in (("ev-a", alice), ("ev-b", bob)):
        world.provider.grant(event, world.target, user)
    world.provider.revoke("ev-a", world.target, alice)  # at T0
    world.clock.advance(timedelta(hours=1))
    world.provider.revoke("ev-b", world.target, bob)  # at T0 + 1h
    # The permission set's sessions last 2 hours (PT2H).
    assert world.provider.cleanup([world.target], T0 + timedelta(hours=1, minutes=59)) == 0
    assert world.provider.cleanup([world.target, world.target], T0 + timedelta(hours=2)) == 1
    assert statements(world)[0] == OPERATOR_STATEMENT
    assert denied(world) == [(ACCOUNT, bob)]
    assert world.provider.cleanup([world.target], T0 + timedelta(hours=3)) == 1
    assert statements(world) == [OPERATOR_STATEMENT]


def test_cleanup_of_the_last_statement_deletes_the_inline_policy(world: World) -> None:
    user_id, _ = world.user("alice")
    world.provider.grant("ev1", world.target, user_id)
    world.provider.revoke("ev1", world.target, user_id)
    assert world.provider.cleanup([world.target], T0 + timedelta(hours=2)) == 1
    assert world.inline_policy() == ""


def test_reconcile_removes_drift_and_regrants_vanished_assignments(world: World) -> None:
    alice, _ = world.user("alice")
    rogue, _ = world.user("rogue")
    world.provider.grant("ev-alice", world.target, alice)
    expected = [ExpectedAssignment(event_id="ev-alice", assignment=Assignment.of(world.target, alice))]
    assert world.provider.reconcile([world.target], expected).clean

    world.assign(rogue)  # made in the console, outside breakglass
    world.assign("group-1234", principal_type="GROUP")
    report = world.provider.reconcile([world.target], expected)
    assert {(d.principal_type, d.principal_id, d.removed) for d in report.drift} == {
        ("USER", rogue, True),
        ("GROUP", "group-1234", True),
    }
    assert world.assigned_users() == [("USER", alice)]
    assert denied(world) == [(ACCOUNT, rogue)]  # the rogue's sessions end too

    world.sso.delete_account_assignment(  # alice's assignment vanishes behind breakglass's back
        InstanceArn=world.instance_arn,
        TargetId=ACCOUNT,
        TargetType="AWS_ACCOUNT",
        PermissionSetArn=world.permission_set,
        PrincipalType="USER",
        PrincipalId=alice,
    )
    reported = world.provider.reconcile([world.target], expected, regrant=False)
    assert reported.missing == tuple(expected) and not reported.regranted
    repaired = world.provider.reconcile([world.target], expected)
    assert [r.event_id for r in repaired.regranted] == ["ev-alice"]
    assert world.assigned_users() == [("USER", alice)]


def test_reconcile_never_takes_a_grant_made_after_it_read_the_events_for_drift(world: World) -> None:
    """The drift check reads the active events, then lists the target; a new event stored and granted in
    between looks like a rogue assignment unless the events are read again before anything is removed."""
    alice, _ = world.user("alice")
    newcomer, _ = world.user("newcomer")
    rogue, _ = world.user("rogue")
    world.provider.grant("ev-alice", world.target, alice)
    read_before = [ExpectedAssignment(event_id="ev-alice", assignment=Assignment.of(world.target, alice))]
    world.provider.grant("ev-new", world.target, newcomer)  # stored and granted after that read
    world.assign(rogue)
    read_again = [
        *read_before,
        ExpectedAssignment(event_id="ev-new", assignment=Assignment.of(world.target, newcomer)),
    ]
    report = world.provider.reconcile([world.target], read_before, confirm=lambda: read_again)
    assert [(d.principal_id, d.removed) for d in report.drift] == [(rogue, True)]
    assert sorted(world.assigned_users()) == sorted([("USER", alice), ("USER", newcomer)])


def test_reconcile_keeps_standing_access_of_active_events(world: World) -> None:
    user_id, _ = world.user("standing")
    world.assign(user_id)
    receipt = world.provider.grant("ev1", world.target, user_id)
    expected = [ExpectedAssignment(event_id="ev1", assignment=receipt.assignment, pre_existing=True)]
    report = world.provider.reconcile([world.target], expected)
    assert report.clean and report.targets_checked == 1
    assert world.assigned_users() == [("USER", user_id)]


ACCOUNT_B = "444455556666"


def test_a_revoke_denies_only_the_revoked_accounts_sessions(world: World) -> None:
    """One person, two profiles sharing the permission set on two accounts: closing prod-a must not cut the
    sessions of their still-active prod-b event (the permission set's inline policy serves both accounts)."""
    alice, _ = world.user("alice")
    prod_a = world.target
    prod_b = prod_a.model_copy(update={"account": ACCOUNT_B})
    world.provider.grant("ev-a", prod_a, alice)
    world.provider.grant("ev-b", prod_b, alice)
    world.clock.advance(timedelta(minutes=10))
    world.provider.revoke("ev-a", prod_a, alice)
    assert world.assigned_users(prod_a) == [] and world.assigned_users(prod_b) == [("USER", alice)]
    ((deny),) = [s for s in statements(world) if s["Effect"] == "Deny"]
    assert deny["Condition"]["StringEquals"] == {
        "identitystore:UserId": alice,
        "aws:PrincipalAccount": ACCOUNT,
    }
    assert world.provider.inspect(prod_a, alice).denied_sessions_issued_before == T0 + timedelta(minutes=10)
    assert world.provider.inspect(prod_b, alice).denied_sessions_issued_before is None
    world.clock.advance(timedelta(minutes=10))
    world.provider.revoke("ev-b", prod_b, alice)
    assert denies_of(world.inline_policy()) == [
        Deny(account=ACCOUNT, user_id=alice, issued_before=T0 + timedelta(minutes=10)),
        Deny(account=ACCOUNT_B, user_id=alice, issued_before=T0 + timedelta(minutes=20)),
    ]


def test_200_revokes_in_one_session_duration_stay_denied_within_the_quota(world: World) -> None:
    """60 people on two accounts take and lose access 200 times inside one session duration (2 h), up to 8
    of them holding access at once, next to an operator's statement of ~2,000 characters: after every revoke the written policy stays within IAM's
    10,240 non-whitespace characters, every revoked session stays denied in its account, and nobody's live
    access (granted again after a revoke) is denied by a merged statement."""
    rng = random.Random(20)
    operator = {**OPERATOR_STATEMENT, "Resource": [f"arn:aws:s3:::bucket-{i:04d}/*" for i in range(70)]}
    world.put_inline_policy(json.dumps({"Version": "2012-10-17", "Statement": [operator]}, indent=2))
    assert 1_900 < quota_length(json.dumps(operator)) < 2_300
    people = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(60)]
    accounts = [ACCOUNT, ACCOUNT_B]
    live: dict[tuple[str, str], datetime] = {}  # (account, person) -> granted at
    revoked: list[Deny] = []
    merged_at_least_once = False
    while len(revoked) < 200:
        world.clock.advance(timedelta(seconds=15))
        if len(live) >= 8 or (live and rng.random() < 0.5):
            account, person = rng.choice(sorted(live))
        else:
            account, person = rng.choice(accounts), rng.choice(people)
        target = world.target.model_copy(update={"account": account})
        if (account, person) in live:
            receipt = world.provider.revoke(f"ev-{len(revoked)}", target, person)
            assert receipt.sessions_issued_before is not None
            revoked.append(Deny(account, person, receipt.sessions_issued_before))
            del live[(account, person)]
            text = world.inline_policy()
            assert quota_length(text) <= ROLE_POLICY_LIMIT
            assert not_denied(text, revoked) == []
            exact = len({(d.account, d.user_id) for d in revoked})
            merged_at_least_once |= (
                sum(1 for s in json.loads(text)["Statement"] if s["Effect"] == "Deny") < exact
            )
        else:
            granted = world.provider.grant(f"ev-{person}-{account}", target, person)
            world.provider.allow_sessions_from(target, person, granted.completed_at)
            live[(account, person)] = granted.completed_at
        policy = DenyPolicy.parse(world.inline_policy())
        for (acct, who), granted_at in live.items():
            bound = policy.bound(acct, who)
            assert bound is None or bound <= granted_at, "a live session would be denied"
    assert world.clock.now() - T0 < timedelta(hours=2)  # all inside one session duration
    assert merged_at_least_once
    assert operator in statements(world)


def test_concurrent_revokes_on_one_permission_set_never_drop_each_others_deny(
    world: World, tmp_path: Path
) -> None:
    """Two replicas revoke two people on one permission set at once: each reads the inline policy, adds its
    deny and writes. Without one writer at a time the later write drops the earlier deny (that person's
    sessions stay alive); with the store's policy lock the second writer waits, or fails and is retried."""
    from bot.access.base import TransientAccessError
    from bot.access.policy_lock import StorePolicyLock
    from store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "locks.db")
    alice, _ = world.user("alice")
    bob, _ = world.user("bob")

    def replica() -> IdentityCenterProvider:
        return IdentityCenterProvider(
            world.instance_arn,
            world.identity_store_id,
            clock=world.clock,
            sleep=world.clock.advance,
            policy_lock=StorePolicyLock(store, world.clock, wait=0.3, poll=0.05),
        )

    first, second = replica(), replica()
    real_read = first._read_policy
    raced: list[str] = []

    def read_then_race(permission_set: str, request_ids: list[str]) -> str:
        text = real_read(permission_set, request_ids)
        if not raced:  # between the first replica's read and its write, the second revokes bob
            try:
                second.revoke("ev-bob", world.target, bob)
                raced.append("written")
            except TransientAccessError:
                raced.append("waited")
        return text

    first._read_policy = read_then_race  # type: ignore[method-assign]
    first.revoke("ev-alice", world.target, alice)
    assert raced == ["waited"]
    second.revoke("ev-bob", world.target, bob)  # the pipeline's retry
    assert denied(world) == sorted([(ACCOUNT, alice), (ACCOUNT, bob)])
    store.disconnect()
