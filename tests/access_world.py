"""A bot whose policy grants real (moto server) IAM Identity Center access, for the end-to-end access tests:
a fresh permission set and identity store per test, the Slack test users registered in it by email, and the
AWS endpoint given to the bot by environment variables only.

Test modules import from here before pytest loads it as a plugin: PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID

from bot.access import Target
from bot.access.denies import DenyPolicy, iso
from bot.policy import Policy, parse_policy

ACCOUNT = "111122223333"
SLACK_USERS = {"U0001": "alice@example.com", "U0002": "bob@example.com", "U0IC": "ic@example.com"}


def access_policy_text(instance_arn: str, identity_store_id: str, permission_set: str, **extra: str) -> str:
    return f"""
audit_channel: C0AUDIT
warn_before: 15m
sweep_interval: 30s
incident_commanders: [U0IC]
security: [S0SEC]
access:
  provider: identity-center
  instance_arn: {instance_arn}
  identity_store_id: {identity_store_id}
  reconcile_every: {extra.get("reconcile_every", "5m")}
profiles:
  sandbox:
    durations: [{extra.get("durations", "15m, 30m, 1h")}]
    aws:
      account: "{ACCOUNT}"
      permission_set: {permission_set}
"""


@dataclass
class Aws:
    """The Identity Center of one test on moto server, with admin clients to set the scene and look."""

    sso: Any
    ids: Any
    url: str
    instance_arn: str
    identity_store_id: str
    permission_set: str
    users: dict[str, str]  # Slack user id -> identity-store user id

    @property
    def target(self) -> Target:
        return Target(account=ACCOUNT, permission_set=self.permission_set)

    @property
    def permission_set_name(self) -> str:
        return str(
            self.sso.describe_permission_set(
                InstanceArn=self.instance_arn, PermissionSetArn=self.permission_set
            )["PermissionSet"]["Name"]
        )

    def policy_text(self, **extra: str) -> str:
        return access_policy_text(self.instance_arn, self.identity_store_id, self.permission_set, **extra)

    def policy(self, **extra: str) -> Policy:
        return parse_policy(self.policy_text(**extra), "access-policy.yml")

    def assigned(self) -> list[str]:
        """The principals assigned to the break-glass permission set on the account."""
        found = self.sso.list_account_assignments(
            InstanceArn=self.instance_arn, AccountId=ACCOUNT, PermissionSetArn=self.permission_set
        )["AccountAssignments"]
        return sorted(a["PrincipalId"] for a in found)

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
        return str(
            self.sso.get_inline_policy_for_permission_set(
                InstanceArn=self.instance_arn, PermissionSetArn=self.permission_set
            )["InlinePolicy"]
        )

    def deny_of(self, slack_user: str, account: str = ACCOUNT) -> str | None:
        """The TokenIssueTime bound that denies this person's sessions in ``account``, if any."""
        bound = DenyPolicy.parse(self.inline_policy()).bound(account, self.users[slack_user])
        return iso(bound) if bound else None


def real_permission_set_arn(moto_arn: str) -> str:
    """moto names permission sets `arn:aws:sso:::instance/ssoins-…/ps-…`; AWS names them
    `arn:aws:sso:::permissionSet/ssoins-…/ps-…` (which the policy checks). Rename it inside the moto server,
    which runs in this process (tests.store_fixtures.moto_server_url), so the bot sees AWS's shape."""
    from moto.ssoadmin.models import ssoadmin_backends

    real = moto_arn.replace(":::instance/", ":::permissionSet/", 1)
    for backend in ssoadmin_backends[DEFAULT_ACCOUNT_ID].values():
        for permission_set in backend.permission_sets:
            if permission_set.permission_set_arn == moto_arn:
                permission_set.permission_set_arn = real
    return real


AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def aws_env_for(url: str) -> dict[str, str]:
    """What a bot needs to reach the moto server: the SDK's own environment variables, nothing else."""
    return {**AWS_ENV, "AWS_ENDPOINT_URL_SSO_ADMIN": url, "AWS_ENDPOINT_URL_IDENTITYSTORE": url}


@pytest.fixture
def aws(moto_server_url: str, monkeypatch: pytest.MonkeyPatch) -> Aws:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    for key, value in aws_env_for(moto_server_url).items():
        monkeypatch.setenv(key, value)
    admin = boto3.session.Session(region_name="us-east-1")
    sso = admin.client("sso-admin", endpoint_url=moto_server_url)
    ids = admin.client("identitystore", endpoint_url=moto_server_url)
    instance_arn = sso.list_instances()["Instances"][0]["InstanceArn"]
    created = sso.create_permission_set(
        InstanceArn=instance_arn, Name=f"breakglass-{uuid.uuid4().hex[:8]}", SessionDuration="PT1H"
    )["PermissionSet"]["PermissionSetArn"]
    permission_set = real_permission_set_arn(created)
    identity_store_id = "d-" + secrets.token_hex(5)  # a store of this test's own (moto keeps stores apart)
    users = {}
    for slack_user, email in SLACK_USERS.items():
        users[slack_user] = ids.create_user(
            IdentityStoreId=identity_store_id,
            UserName=email,
            DisplayName=email,
            Name={"GivenName": email, "FamilyName": "Test"},
            Emails=[{"Value": email, "Primary": True}],
        )["UserId"]
    return Aws(sso, ids, moto_server_url, instance_arn, identity_store_id, permission_set, users)
