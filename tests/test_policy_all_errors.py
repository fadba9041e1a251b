"""`check-policy` reports every problem at once: an invalid value (an unquoted account id) no longer hides
the whole-policy checks (access against the profiles, the fallback channel), which pydantic runs only
once every field is valid."""

from __future__ import annotations

import pytest

from bot.policy import PolicyError, parse_policy

ACCESS = """\
access:
  provider: identity-center
  instance_arn: arn:aws:sso:::instance/ssoins-0123456789abcdef
  identity_store_id: d-1234567890
"""
PS = "arn:aws:sso:::permissionSet/ssoins-0123456789abcdef/ps-0123456789abcdef"


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yml")
    return info.value.problems


def test_an_unquoted_account_hides_no_other_problem() -> None:
    found = problems(
        ACCESS
        + f"""\
audit_channel: C0AUDIT
fallback_channel: C0AUDIT
profiles:
  prod:
    aws: {{account: 123456789012, permission_set: {PS}}}
  dev: {{}}
  ops:
    aws: {{account: "123456789012", permission_set: "arn:aws:sso:::permissionSet/ssoins-fedcba9876543210/ps-1234567890abcdef"}}
"""
    )
    keys = [key for key, _ in found]
    assert keys == [
        "profiles.prod.aws.account",
        "profiles.dev",
        "profiles.ops.aws.permission_set",
        "fallback_channel",
    ], found
    assert "quote it" in found[0][1]
    assert "has no aws: block" in found[1][1]
    assert "not to access.instance_arn's" in found[2][1]


def test_a_block_set_aside_for_its_own_problem_is_not_reported_missing() -> None:
    found = problems(
        ACCESS + f"profiles:\n  prod:\n    aws: {{account: 123456789012, permission_set: {PS}}}\n"
    )
    assert [key for key, _ in found] == ["profiles.prod.aws.account"]
