"""`identity: email_local_part` keeps the part before the @: with two allowed domains, alice@a.example and
alice@b.example would be one invoker again (one's events, stacking and budget shared with the other). The
policy refuses more than one domain in that mode, at load, naming both addresses and the way out."""

from __future__ import annotations

import pytest

from bot.policy import PolicyError, parse_policy
from tests.conftest import TEST_POLICY


def test_email_local_part_with_two_domains_is_refused_at_load() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(
            TEST_POLICY + "identity: email_local_part\nemail_domains: [a.example, b.example]\n", "p.yml"
        )
    [(field, message)] = info.value.problems
    assert field == "email_domains"
    assert "alice@a.example and alice@b.example would be one invoker" in message
    assert "identity: email" in message


def test_the_same_domain_twice_is_one_domain() -> None:
    policy = parse_policy(
        TEST_POLICY + "identity: email_local_part\nemail_domains: [example.com, Example.COM]\n", "p.yml"
    )
    assert policy.email_domains == ("example.com",)


def test_identity_email_may_allow_several_domains() -> None:
    policy = parse_policy(TEST_POLICY + "identity: email\nemail_domains: [a.example, b.example]\n", "p.yml")
    assert policy.email_domains == ("a.example", "b.example")
