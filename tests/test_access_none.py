"""The default `none` access provider: the stored event is the grant; AWS is never called."""

from datetime import timedelta

import pytest

from bot.access import AccessProvider, NoneProvider, Target, make_provider
from bot.clock import ManualClock
from bot.policy import AccessPolicy, load_policy
from tests.store_fixtures import T0

TARGET = Target(
    account="123456789012", permission_set="arn:aws:sso:::permissionSet/ssoins-0123456789abcdef/ps-0"
)


def test_the_built_in_policy_chooses_the_none_provider() -> None:
    provider = make_provider(load_policy(None).access)
    assert isinstance(provider, NoneProvider)
    assert provider.name == "none"


@pytest.fixture
def provider() -> AccessProvider:
    return NoneProvider(clock=ManualClock(T0))


def test_grant_and_revoke_change_nothing_and_say_so(
    provider: AccessProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No credentials, no endpoint: any AWS call would fail.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert provider.resolve_user("alice@example.com") is None
    grant = provider.grant("ev1", TARGET, None)
    assert (grant.provider, grant.event_id, grant.assignment, grant.pre_existing) == (
        "none",
        "ev1",
        None,
        False,
    )
    assert grant.took == timedelta(0) and grant.request_ids == ()
    revoke = provider.revoke("ev1", TARGET, None)
    assert (
        revoke.assignment is None
        and revoke.assignment_deleted_at is None
        and revoke.sessions_denied_at is None
    )
    assert provider.inspect(TARGET, "user") is None
    report = provider.reconcile([TARGET], [])
    assert report.clean and report.targets_checked == 0 and report.checked_at == T0
    assert provider.cleanup([TARGET], T0) == 0


def test_identity_center_policy_builds_the_identity_center_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    access = AccessPolicy(
        provider="identity-center",
        instance_arn="arn:aws:sso:::instance/ssoins-0123456789abcdef",
        identity_store_id="d-0123456789",
    )
    provider = make_provider(access, holders=lambda a: {"ev9"})
    assert provider.name == "identity-center"
    assert provider.instance_arn == access.instance_arn  # type: ignore[attr-defined]
    assert provider.identity_store_id == "d-0123456789"  # type: ignore[attr-defined]
