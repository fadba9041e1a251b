"""The policy's AWS access contract: `access:` (provider, instance, identity store, periods) and each
profile's `aws:` target, validated with errors naming the key and the reason."""

import textwrap
from datetime import timedelta

import pytest

from bot.policy import AccessPolicy, AwsTarget, PolicyError, load_policy, parse_policy, summarize

INSTANCE = "arn:aws:sso:::instance/ssoins-0123456789abcdef"
PS = "arn:aws:sso:::permissionSet/ssoins-0123456789abcdef/ps-00000000000000aa"
OTHER_INSTANCE_PS = "arn:aws:sso:::permissionSet/ssoins-fedcba9876543210/ps-00000000000000aa"
ROLE = "arn:aws:iam::123456789012:role/breakglass-activity"

IDENTITY_CENTER = f"""\
access:
  provider: identity-center
  instance_arn: {INSTANCE}
  identity_store_id: d-0123456789
  reconcile_every: 10m
  activity_delay: 20m
profiles:
  prod:
    durations: [15m, 1h]
    aws:
      account: "123456789012"
      permission_set: {PS}
      activity_role: {ROLE}
  staging:
    aws: {{account: "000000000042", permission_set: {PS}}}
"""


def problems_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(textwrap.dedent(text), "policy.yaml")
    assert caught.value.path == "policy.yaml"
    return caught.value.problems


def test_identity_center_policy_parses() -> None:
    policy = parse_policy(IDENTITY_CENTER)
    assert policy.access == AccessPolicy(
        provider="identity-center",
        instance_arn=INSTANCE,
        identity_store_id="d-0123456789",
        reconcile_every=timedelta(minutes=10),
        activity_delay=timedelta(minutes=20),
    )
    assert policy.profiles["prod"].aws == AwsTarget(
        account="123456789012", permission_set=PS, activity_role=ROLE
    )
    assert policy.profiles["staging"].aws is not None
    assert policy.profiles["staging"].aws.account == "000000000042"  # leading zeros kept
    assert policy.profiles["staging"].aws.activity_role is None


def test_defaults_are_provider_none_and_documented_periods() -> None:
    policy = load_policy(None)
    assert policy.access.provider == "none"
    assert policy.access.reconcile_every == timedelta(minutes=5)
    assert policy.access.activity_delay == timedelta(minutes=15)
    assert all(p.aws is None for p in policy.profiles.values())
    assert "AWS access: provider none" in summarize(policy)
    # `access:` left empty means the defaults, like rate_limits
    assert parse_policy("access:\nprofiles: {p: {}}\n").access == AccessPolicy()


def test_provider_none_accepts_targets_without_the_instance() -> None:
    policy = parse_policy(f'profiles:\n  p:\n    aws: {{account: "123456789012", permission_set: {PS}}}\n')
    assert policy.access.provider == "none"
    assert policy.profiles["p"].aws is not None


def test_summary_shows_the_access_block_and_targets() -> None:
    text = summarize(parse_policy(IDENTITY_CENTER))
    assert f"AWS: account 123456789012, permission set {PS}" in text
    assert f"activity role: {ROLE}" in text
    assert f"AWS access: provider identity-center, instance {INSTANCE}, identity store d-0123456789" in text
    assert "drift check every 10 minutes" in text


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        (
            "access: {provider: sso}\nprofiles: {p: {}}\n",
            "access.provider",
            "must be one of 'none' or 'identity-center', not 'sso'",
        ),
        (
            "access: {provider: identity-center, identity_store_id: d-0123456789}\n"
            f"profiles: {{p: {{aws: {{account: '123456789012', permission_set: {PS}}}}}}}\n",
            "access.instance_arn",
            "is required with provider identity-center; find it with `aws sso-admin list-instances`",
        ),
        (
            f"access: {{provider: identity-center, instance_arn: {INSTANCE}}}\n"
            f"profiles: {{p: {{aws: {{account: '123456789012', permission_set: {PS}}}}}}}\n",
            "access.identity_store_id",
            "is required with provider identity-center; find it with `aws sso-admin list-instances`",
        ),
        (
            "access: {instance_arn: arn:aws:sso:::instance/ssoins-xyz}\nprofiles: {p: {}}\n",
            "access.instance_arn",
            "'arn:aws:sso:::instance/ssoins-xyz' is not an IAM Identity Center instance ARN, "
            "such as arn:aws:sso:::instance/ssoins-0123456789abcdef",
        ),
        (
            "access: {identity_store_id: store}\nprofiles: {p: {}}\n",
            "access.identity_store_id",
            "'store' is not an identity store id, such as d-0123456789",
        ),
        (
            "access: {reconcile_every: 10s}\nprofiles: {p: {}}\n",
            "access.reconcile_every",
            "must be at least 1m, got 10s",
        ),
        (
            "access: {activity_delay: 2d}\nprofiles: {p: {}}\n",
            "access.activity_delay",
            "must be at most 1d, got 2d",
        ),
        (
            "access: {reconcile: 5m}\nprofiles: {p: {}}\n",
            "access.reconcile",
            "unknown key; did you mean reconcile_every?",
        ),
        (
            f"profiles: {{p: {{aws: {{account: 123456789012, permission_set: {PS}}}}}}}\n",
            "profiles.p.aws.account",
            "must be a 12-digit AWS account id written as text (quote it), not 123456789012",
        ),
        (
            f"profiles: {{p: {{aws: {{account: '12345', permission_set: {PS}}}}}}}\n",
            "profiles.p.aws.account",
            "'12345' is not a 12-digit AWS account id, such as \"123456789012\"",
        ),
        (
            "profiles: {p: {aws: {account: '123456789012', permission_set: AdministratorAccess}}}\n",
            "profiles.p.aws.permission_set",
            "'AdministratorAccess' is not a permission set ARN, such as "
            "arn:aws:sso:::permissionSet/ssoins-0123456789abcdef/ps-0123456789abcdef",
        ),
        (
            "profiles: {p: {aws: {account: '123456789012'}}}\n",
            "profiles.p.aws.permission_set",
            "is required",
        ),
        (
            f"profiles: {{p: {{aws: {{account: '123456789012', permission_set: {PS}, "
            "activity_role: arn:aws:iam::1:user/x}}}\n",
            "profiles.p.aws.activity_role",
            "'arn:aws:iam::1:user/x' is not an IAM role ARN, such as "
            "arn:aws:iam::123456789012:role/breakglass-activity",
        ),
        (
            f"profiles: {{p: {{aws: {{account: '123456789012', permission_set: {PS}, role: x}}}}}}\n",
            "profiles.p.aws.role",
            "unknown key; expected one of: account, permission_set, activity_role, activity_external_id, activity_regions",
        ),
    ],
)
def test_bad_access_settings_name_the_key_and_reason(text: str, key: str, reason: str) -> None:
    assert (key, reason) in problems_of(text)


def test_identity_center_needs_a_target_on_every_profile() -> None:
    text = IDENTITY_CENTER + "  sandbox:\n    durations: [15m]\n  other: {}\n"
    assert problems_of(text) == [
        (
            "profiles.sandbox",
            "has no aws: block (account and permission_set); with provider identity-center every profile "
            "needs a target",
        ),
        (
            "profiles.other",
            "has no aws: block (account and permission_set); with provider identity-center every profile "
            "needs a target",
        ),
    ]


def test_permission_set_must_belong_to_the_instance() -> None:
    text = IDENTITY_CENTER.replace(f"permission_set: {PS}}}", f"permission_set: {OTHER_INSTANCE_PS}}}")
    assert problems_of(text) == [
        (
            "profiles.staging.aws.permission_set",
            "belongs to instance ssoins-fedcba9876543210, not to access.instance_arn's ssoins-0123456789abcdef",
        )
    ]


def test_check_policy_file_reports_access_problems(tmp_path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("access: {provider: identity-center}\nprofiles: {p: {}}\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith(f"invalid policy file {path}:")
    assert "access.instance_arn: is required with provider identity-center" in message
    assert "profiles.p: has no aws: block" in message
