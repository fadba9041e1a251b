"""The identity-center provider on the paths moto cannot produce, with botocore's Stubber: assignments
IN_PROGRESS then SUCCEEDED or FAILED, ConflictException and throttling retried with backoff on an injected
sleep, permission-set provisioning polled, timeouts, permanent errors; and the inline-policy merge."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from bot.access import (
    Assignment,
    PermanentAccessError,
    Target,
    TransientAccessError,
    UserNotInIdentityStore,
)
from bot.access.denies import ROLE_POLICY_LIMIT, DenyQuotaExceeded, quota_length
from bot.access.identity_center import (
    IdentityCenterProvider,
    merge_deny,
    parse_session_duration,
)
from bot.clock import ManualClock
from tests.store_fixtures import T0

INSTANCE = "arn:aws:sso:::instance/ssoins-0123456789abcdef"
PS = "arn:aws:sso:::permissionSet/ssoins-0123456789abcdef/ps-00000000000000aa"
TARGET = Target(account="111122223333", permission_set=PS)
USER = "9067d8b1-1111-2222-3333-444455556666"
ASSIGNMENT_PARAMS = {
    "InstanceArn": INSTANCE,
    "TargetId": TARGET.account,
    "TargetType": "AWS_ACCOUNT",
    "PermissionSetArn": PS,
    "PrincipalType": "USER",
    "PrincipalId": USER,
}
LIST_PARAMS = {"InstanceArn": INSTANCE, "AccountId": TARGET.account, "PermissionSetArn": PS}


class Stubbed:
    def __init__(self) -> None:
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        self.sso = session.client("sso-admin")
        self.ids = session.client("identitystore")
        self.sso_stub = Stubber(self.sso)
        self.ids_stub = Stubber(self.ids)
        self.clock = ManualClock(T0)
        self.sleeps: list[float] = []
        self.provider = IdentityCenterProvider(
            INSTANCE,
            "d-0123456789",
            sso_admin=self.sso,
            identitystore=self.ids,
            clock=self.clock,
            sleep=self.sleep,
            poll_interval=2.0,
            poll_timeout=timedelta(seconds=30),
        )

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)

    def ok(self, method: str, response: dict[str, Any], params: dict[str, Any] | None = None) -> None:
        response = {**response, "ResponseMetadata": {"RequestId": f"req-{method}", "HTTPStatusCode": 200}}
        self.sso_stub.add_response(method, response, params)

    def error(self, method: str, code: str, status: int = 400, message: str = "") -> None:
        self.sso_stub.add_client_error(
            method, service_error_code=code, service_message=message, http_status_code=status
        )

    def not_assigned(self) -> None:
        self.ok("list_account_assignments", {"AccountAssignments": []}, LIST_PARAMS)

    def assigned(self) -> None:
        self.ok(
            "list_account_assignments",
            {
                "AccountAssignments": [
                    {
                        "AccountId": TARGET.account,
                        "PermissionSetArn": PS,
                        "PrincipalType": "USER",
                        "PrincipalId": USER,
                    }
                ]
            },
            LIST_PARAMS,
        )


def creation(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "AccountAssignmentCreationStatus": {
            "Status": status,
            "RequestId": "c0000000-0000-4000-8000-000000000001",
            **extra,
        }
    }


def deletion(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "AccountAssignmentDeletionStatus": {
            "Status": status,
            "RequestId": "d0000000-0000-4000-8000-000000000002",
            **extra,
        }
    }


def provisioning(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "PermissionSetProvisioningStatus": {
            "Status": status,
            "RequestId": "e0000000-0000-4000-8000-000000000003",
            **extra,
        }
    }


@pytest.fixture
def stubbed() -> Iterator[Stubbed]:
    world = Stubbed()
    with world.sso_stub, world.ids_stub:
        yield world
        world.sso_stub.assert_no_pending_responses()
        world.ids_stub.assert_no_pending_responses()


def test_grant_polls_in_progress_until_succeeded(stubbed: Stubbed) -> None:
    stubbed.not_assigned()
    stubbed.ok("create_account_assignment", creation("IN_PROGRESS"), ASSIGNMENT_PARAMS)
    status_params = {
        "InstanceArn": INSTANCE,
        "AccountAssignmentCreationRequestId": "c0000000-0000-4000-8000-000000000001",
    }
    stubbed.ok("describe_account_assignment_creation_status", creation("IN_PROGRESS"), status_params)
    stubbed.ok("describe_account_assignment_creation_status", creation("SUCCEEDED"), status_params)
    stubbed.ok(
        "describe_permission_set",
        {"PermissionSet": {"Name": "BreakGlassAdmin"}},
        {"InstanceArn": INSTANCE, "PermissionSetArn": PS},
    )
    receipt = stubbed.provider.grant("ev1", TARGET, USER)
    assert stubbed.sleeps == [2.0, 2.0]
    assert receipt.took == timedelta(seconds=4)
    assert receipt.permission_set_name == "BreakGlassAdmin"  # the digest counts only its role's calls
    assert receipt.request_ids == (
        "req-list_account_assignments",
        "req-create_account_assignment",
        "req-describe_account_assignment_creation_status",
        "req-describe_account_assignment_creation_status",
        "req-describe_permission_set",
    )


def test_failed_assignment_is_permanent_with_the_failure_reason(stubbed: Stubbed) -> None:
    stubbed.not_assigned()
    stubbed.ok("create_account_assignment", creation("IN_PROGRESS"))
    stubbed.ok(
        "describe_account_assignment_creation_status",
        creation("FAILED", FailureReason="Received a 404 status error: No permission set"),
    )
    with pytest.raises(PermanentAccessError) as caught:
        stubbed.provider.grant("ev1", TARGET, USER)
    assert not caught.value.transient
    assert str(caught.value) == (
        "creating the account assignment failed: Received a 404 status error: No permission set"
    )
    assert caught.value.request_id == "c0000000-0000-4000-8000-000000000001"


def test_conflict_is_retried_with_backoff_then_succeeds(stubbed: Stubbed) -> None:
    stubbed.not_assigned()
    stubbed.error("create_account_assignment", "ConflictException", 409, "another operation is in progress")
    stubbed.error("create_account_assignment", "ConflictException", 409)
    stubbed.ok("create_account_assignment", creation("SUCCEEDED"), ASSIGNMENT_PARAMS)
    stubbed.error("describe_permission_set", "AccessDeniedException", 400)  # the grant stands without it
    receipt = stubbed.provider.grant("ev1", TARGET, USER)
    assert receipt.permission_set_name is None
    assert stubbed.sleeps == [0.5, 1.0]
    assert receipt.assignment == Assignment.of(TARGET, USER)


def test_throttling_that_never_ends_is_transient_after_the_attempts(stubbed: Stubbed) -> None:
    stubbed.not_assigned()
    for _ in range(6):
        stubbed.error("create_account_assignment", "ThrottlingException", 400, "Rate exceeded")
    with pytest.raises(TransientAccessError) as caught:
        stubbed.provider.grant("ev1", TARGET, USER)
    assert caught.value.transient
    assert caught.value.code == "ThrottlingException"
    assert "gave up after 6 attempts" in str(caught.value)
    assert stubbed.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_server_errors_are_transient(stubbed: Stubbed) -> None:
    stubbed.not_assigned()
    stubbed.error("create_account_assignment", "InternalServerException", 500)
    stubbed.ok("create_account_assignment", creation("SUCCEEDED"))
    stubbed.ok("describe_permission_set", {"PermissionSet": {"Name": "BreakGlassAdmin"}})
    stubbed.provider.grant("ev1", TARGET, USER)
    assert stubbed.sleeps == [0.5]


def test_access_denied_is_permanent_and_not_retried(stubbed: Stubbed) -> None:
    stubbed.error("list_account_assignments", "AccessDeniedException", 403, "not authorized")
    with pytest.raises(PermanentAccessError) as caught:
        stubbed.provider.grant("ev1", TARGET, USER)
    assert caught.value.code == "AccessDeniedException"
    assert stubbed.sleeps == []


def test_an_assignment_stuck_in_progress_times_out_as_transient(stubbed: Stubbed) -> None:
    stubbed.not_assigned()
    stubbed.ok("create_account_assignment", creation("IN_PROGRESS"))
    for _ in range(15):
        stubbed.ok("describe_account_assignment_creation_status", creation("IN_PROGRESS"))
    with pytest.raises(TransientAccessError, match="still in progress"):
        stubbed.provider.grant("ev1", TARGET, USER)
    assert sum(stubbed.sleeps) == 30


def test_revoke_polls_deletion_and_provisioning(stubbed: Stubbed) -> None:
    stubbed.assigned()
    stubbed.ok("delete_account_assignment", deletion("IN_PROGRESS"), ASSIGNMENT_PARAMS)
    stubbed.ok("describe_account_assignment_deletion_status", deletion("SUCCEEDED"))
    existing = {
        "Version": "2012-10-17",
        "Statement": {"Sid": "Keep", "Effect": "Allow", "Action": "s3:*", "Resource": "*"},
    }
    stubbed.ok("describe_permission_set", {"PermissionSet": {"SessionDuration": "PT1H"}})
    stubbed.ok("get_inline_policy_for_permission_set", {"InlinePolicy": json.dumps(existing)})
    stubbed.ok(
        "put_inline_policy_to_permission_set",
        {},
        {"InstanceArn": INSTANCE, "PermissionSetArn": PS, "InlinePolicy": ANY},
    )
    stubbed.ok(
        "provision_permission_set",
        provisioning("IN_PROGRESS"),
        {"InstanceArn": INSTANCE, "PermissionSetArn": PS, "TargetType": "ALL_PROVISIONED_ACCOUNTS"},
    )
    prov_params = {
        "InstanceArn": INSTANCE,
        "ProvisionPermissionSetRequestId": "e0000000-0000-4000-8000-000000000003",
    }
    stubbed.ok("describe_permission_set_provisioning_status", provisioning("IN_PROGRESS"), prov_params)
    stubbed.ok("describe_permission_set_provisioning_status", provisioning("SUCCEEDED"), prov_params)
    receipt = stubbed.provider.revoke("ev1", TARGET, USER)
    assert receipt.assignment_deleted_at == T0 + timedelta(seconds=2)
    assert receipt.sessions_issued_before == T0 + timedelta(seconds=2)
    assert receipt.sessions_denied_at == T0 + timedelta(seconds=6)  # two provisioning polls later
    assert receipt.took == timedelta(seconds=6)


def test_failed_provisioning_is_reported(stubbed: Stubbed) -> None:
    stubbed.not_assigned()  # already deleted by an earlier attempt: straight to the deny
    stubbed.ok("describe_permission_set", {"PermissionSet": {"SessionDuration": "PT1H"}})
    stubbed.ok("get_inline_policy_for_permission_set", {})
    stubbed.ok("put_inline_policy_to_permission_set", {})
    stubbed.ok("provision_permission_set", provisioning("IN_PROGRESS"))
    stubbed.ok(
        "describe_permission_set_provisioning_status",
        provisioning("FAILED", FailureReason="Account 111122223333 is suspended"),
    )
    with pytest.raises(
        PermanentAccessError, match="provisioning the permission set failed: Account 111122223333"
    ):
        stubbed.provider.revoke("ev1", TARGET, USER)


def test_unknown_email(stubbed: Stubbed) -> None:
    stubbed.ids_stub.add_client_error(
        "get_user_id", service_error_code="ResourceNotFoundException", http_status_code=404
    )
    with pytest.raises(UserNotInIdentityStore, match=r"carol@example\.com"):
        stubbed.provider.resolve_user("carol@example.com")


def test_reconcile_reports_an_unreadable_target(stubbed: Stubbed) -> None:
    stubbed.error("list_account_assignments", "ResourceNotFoundException", 404, "no such permission set")
    report = stubbed.provider.reconcile([TARGET], [])
    assert report.errors == (
        f"{TARGET.account} {PS}: list_account_assignments: ResourceNotFoundException: no such permission set",
    )
    assert not report.clean


def test_drift_that_cannot_be_removed_is_reported_not_hidden(stubbed: Stubbed) -> None:
    stubbed.ok(
        "list_account_assignments",
        {"AccountAssignments": [{"PrincipalType": "USER", "PrincipalId": "rogue"}]},
    )
    stubbed.error("delete_account_assignment", "AccessDeniedException", 403, "denied")
    report = stubbed.provider.reconcile([TARGET], [])
    (drift,) = report.drift
    assert (drift.principal_id, drift.removed) == ("rogue", False)
    assert drift.error == "delete_account_assignment: AccessDeniedException: denied"


# -- the inline policy ------------------------------------------------------------------------------


ACCOUNT = TARGET.account


def test_merge_into_an_empty_policy() -> None:
    policy = json.loads(merge_deny("", ACCOUNT, USER, T0))
    assert policy["Version"] == "2012-10-17"
    (statement,) = policy["Statement"]
    assert statement["Sid"] == "BreakglassRevoke0"
    assert statement["Condition"] == {
        "StringEquals": {"identitystore:UserId": USER, "aws:PrincipalAccount": ACCOUNT},
        "DateLessThan": {"aws:TokenIssueTime": "2026-03-01T12:00:00Z"},
    }


def test_merge_keeps_other_statements_and_never_moves_a_deny_earlier() -> None:
    other = {"Sid": "BreakglassRevokeOtherUser", "Effect": "Deny", "Action": "*", "Resource": "*"}
    later = merge_deny(
        json.dumps({"Version": "2012-10-17", "Statement": [other]}), ACCOUNT, USER, T0 + timedelta(hours=1)
    )
    earlier = merge_deny(later, ACCOUNT, USER, T0)
    statements = json.loads(earlier)["Statement"]
    assert statements[0] == other  # not in a shape breakglass writes: the operator's, kept
    assert len(statements) == 2
    assert statements[1]["Condition"]["DateLessThan"]["aws:TokenIssueTime"] == "2026-03-01T13:00:00Z"


def test_merge_refuses_to_pass_the_role_policy_quota_counting_the_operators_statements() -> None:
    """IAM counts 10,240 characters without whitespace; a policy past it is refused by AWS, so the revoke
    fails loudly (the pipeline announces it) instead of writing a deny that never takes effect."""
    big = {
        "Sid": "Big",
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": "x" * (ROLE_POLICY_LIMIT - 200),
    }
    text = json.dumps({"Version": "2012-10-17", "Statement": [big]}, indent=4)
    assert quota_length(text) < ROLE_POLICY_LIMIT
    with pytest.raises(DenyQuotaExceeded, match="over IAM's 10240-character quota") as raised:
        merge_deny(text, ACCOUNT, USER, T0)
    assert isinstance(raised.value, PermanentAccessError)
    assert "NOT denied" in raised.value.message


def test_whitespace_does_not_count_against_the_quota() -> None:
    spaced = {"Sid": "Spaced", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "a    " * 3000}
    text = json.dumps({"Version": "2012-10-17", "Statement": [spaced]}, indent=8)
    assert len(text) > ROLE_POLICY_LIMIT > quota_length(text) + 300
    merged = json.loads(merge_deny(text, ACCOUNT, USER, T0))
    assert merged["Statement"][0] == spaced


def test_merge_refuses_a_policy_that_is_not_json() -> None:
    with pytest.raises(PermanentAccessError, match="inline policy is not valid JSON"):
        merge_deny("{not json", ACCOUNT, USER, T0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT1H", timedelta(hours=1)),
        ("PT12H", timedelta(hours=12)),
        ("PT1H30M", timedelta(minutes=90)),
        ("PT900S", timedelta(minutes=15)),
        (None, timedelta(hours=1)),
    ],
)
def test_session_duration(text: str | None, expected: timedelta) -> None:
    assert parse_session_duration(text) == expected
