"""IAM's role policy quota for the denies that end revoked sessions (bot.access.denies): merging, expiry,
the loud failure when the operator's statements leave no room, and `check-policy --aws`'s warning."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from bot import cli
from bot.access.denies import (
    LOW_ROOM,
    ROLE_POLICY_LIMIT,
    Deny,
    DenyPolicy,
    DenyQuotaExceeded,
    not_denied,
    quota_length,
    room_left,
)
from tests.access_world import Aws
from tests.store_fixtures import T0

pytest_plugins = ["tests.store_fixtures", "tests.access_world"]

A, B = "111122223333", "444455556666"


def people(n: int) -> list[str]:
    return [f"{i:08x}-0000-4000-8000-000000000000" for i in range(n)]


def test_merging_moves_only_people_without_an_assignment_and_only_later() -> None:
    policy = DenyPolicy.parse("")
    users = people(120)
    for i, user in enumerate(users):
        policy.add(A, user, T0 + timedelta(seconds=30 * i))
    live = set(users[::10])  # granted again: their bound must not move
    text = policy.fit(movable=lambda account, user: user not in live)
    assert quota_length(text) <= ROLE_POLICY_LIMIT
    wanted = [Deny(A, u, T0 + timedelta(seconds=30 * i)) for i, u in enumerate(users)]
    assert not_denied(text, wanted) == []
    final = DenyPolicy.parse(text)
    for i, user in enumerate(users):
        if user in live:
            assert final.bound(A, user) == T0 + timedelta(seconds=30 * i)
    assert final.bound(B, users[0]) is None  # another account is never touched


def test_expired_denies_are_dropped_before_anything_is_merged() -> None:
    policy = DenyPolicy.parse("")
    policy.add(A, "old", T0)
    policy.add(A, "new", T0 + timedelta(minutes=30))
    assert policy.drop_expired(T0 + timedelta(hours=1), timedelta(hours=1)) == 1
    assert list(policy.entries) == [(A, "new")]


def test_an_unscoped_deny_written_before_scoping_still_counts_and_is_kept() -> None:
    legacy = {
        "Sid": "BreakglassRevokeabc",
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {
            "StringEquals": {"identitystore:UserId": "abc"},
            "DateLessThan": {"aws:TokenIssueTime": "2026-03-01T12:00:00Z"},
        },
    }
    policy = DenyPolicy.parse(json.dumps({"Version": "2012-10-17", "Statement": [legacy]}))
    assert policy.bound(A, "abc") == policy.bound(B, "abc") == T0
    policy.add(A, "def", T0)
    (kept, _) = json.loads(policy.fit(movable=lambda _a, _u: True))["Statement"]
    assert kept["Condition"] == legacy["Condition"]


def test_no_room_is_a_loud_failure_never_a_partial_deny() -> None:
    operator = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "x" * (ROLE_POLICY_LIMIT - 600)}
    policy = DenyPolicy.parse(json.dumps({"Version": "2012-10-17", "Statement": [operator]}))
    for i, user in enumerate(people(20)):
        policy.add(A, user, T0 + timedelta(seconds=i))
    with pytest.raises(DenyQuotaExceeded, match="NOT denied"):
        policy.fit(movable=lambda _a, _u: True)


def test_check_policy_warns_when_the_operators_statements_leave_too_little_room(
    aws: Aws, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(aws.policy_text())
    assert cli.main(["check-policy", str(path), "--aws"]) == 0
    assert "warning" not in capsys.readouterr().err  # no inline policy: all the room is left

    big = {"Sid": "Big", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "r" * 7_000}
    text = json.dumps({"Version": "2012-10-17", "Statement": [big]})
    aws.sso.put_inline_policy_to_permission_set(
        InstanceArn=aws.instance_arn, PermissionSetArn=aws.permission_set, InlinePolicy=text
    )
    assert room_left(text) < LOW_ROOM
    assert cli.main(["check-policy", str(path), "--aws"]) == 0
    err = capsys.readouterr().err
    assert (
        f"warning: the inline policy of {aws.permission_set} leaves {room_left(text)} of IAM's 10240" in err
    )
