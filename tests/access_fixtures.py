"""An IAM Identity Center world on moto server for the access-provider tests: an instance, a fresh
break-glass permission set and identity-store users per test, reached with only environment variables.

Test modules import World from here before pytest loads it as a plugin: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from bot.access import Assignment, Target
from bot.access.identity_center import IdentityCenterProvider
from bot.clock import ManualClock
from tests.store_fixtures import T0

ACCOUNT = "111122223333"


@dataclass
class World:
    """A provider on moto server plus the admin clients to set the scene and look at the result."""

    provider: IdentityCenterProvider
    sso: Any
    ids: Any
    instance_arn: str
    identity_store_id: str
    permission_set: str
    clock: ManualClock
    held: dict[Assignment, set[str]] = field(default_factory=dict)
    """What the fake caller answers for "which active events hold this assignment"."""

    @property
    def target(self) -> Target:
        return Target(account=ACCOUNT, permission_set=self.permission_set)

    def user(self, name: str) -> tuple[str, str]:
        """Create an identity-store user; returns (user id, email)."""
        email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
        response = self.ids.create_user(
            IdentityStoreId=self.identity_store_id,
            UserName=email,
            DisplayName=name,
            Name={"GivenName": name, "FamilyName": "Test"},
            Emails=[{"Value": email, "Primary": True}],
        )
        return response["UserId"], email

    def assigned_users(self, target: Target | None = None) -> list[tuple[str, str]]:
        target = target or self.target
        found = self.sso.list_account_assignments(
            InstanceArn=self.instance_arn, AccountId=target.account, PermissionSetArn=target.permission_set
        )["AccountAssignments"]
        return [(a["PrincipalType"], a["PrincipalId"]) for a in found]

    def assign(self, principal_id: str, principal_type: str = "USER") -> None:
        """An assignment made outside breakglass (standing access, or drift)."""
        self.sso.create_account_assignment(
            InstanceArn=self.instance_arn,
            TargetId=ACCOUNT,
            TargetType="AWS_ACCOUNT",
            PermissionSetArn=self.permission_set,
            PrincipalType=principal_type,
            PrincipalId=principal_id,
        )

    def inline_policy(self) -> str:
        return self.sso.get_inline_policy_for_permission_set(
            InstanceArn=self.instance_arn, PermissionSetArn=self.permission_set
        )["InlinePolicy"]

    def put_inline_policy(self, text: str) -> None:
        self.sso.put_inline_policy_to_permission_set(
            InstanceArn=self.instance_arn, PermissionSetArn=self.permission_set, InlinePolicy=text
        )


@pytest.fixture
def sso_env(aws_env: None, moto_server_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Only the SDK's environment variables point at moto server: region from AWS_REGION alone."""
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSO_ADMIN", moto_server_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_IDENTITYSTORE", moto_server_url)
    return moto_server_url


@pytest.fixture
def world(sso_env: str) -> Iterator[World]:
    admin = boto3.session.Session(region_name="eu-west-1")
    sso = admin.client("sso-admin", endpoint_url=sso_env)
    ids = admin.client("identitystore", endpoint_url=sso_env)
    instance = sso.list_instances()["Instances"][0]
    permission_set = sso.create_permission_set(
        InstanceArn=instance["InstanceArn"], Name=f"breakglass-{uuid.uuid4().hex[:8]}", SessionDuration="PT2H"
    )["PermissionSet"]["PermissionSetArn"]
    clock = ManualClock(T0)
    held: dict[Assignment, set[str]] = {}
    provider = IdentityCenterProvider(
        instance["InstanceArn"],
        instance["IdentityStoreId"],
        holders=lambda assignment: held.get(assignment, set()),
        clock=clock,
        sleep=clock.advance,
    )
    return World(
        provider=provider,
        sso=sso,
        ids=ids,
        instance_arn=instance["InstanceArn"],
        identity_store_id=instance["IdentityStoreId"],
        permission_set=permission_set,
        clock=clock,
        held=held,
    )
