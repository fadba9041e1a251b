"""bot.invoker: what a `KnownInvoker` (resolved when the form opened) decides, and what it leaves to a live
lookup after the ack (`Unresolved`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot import invoker
from bot.errors import AwsAccessRefused, NotAuthorized
from bot.invoker import IDENTITY_MAX_AGE, KnownInvoker, Unresolved

AT = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def known(**fields: object) -> KnownInvoker:
    return KnownInvoker.model_validate({"user_id": "U0001", "at": AT, **fields})


def test_fresh_for_its_age_and_a_replica_clock_a_little_ahead() -> None:
    answer = known()
    assert answer.fresh(AT + IDENTITY_MAX_AGE)
    assert not answer.fresh(AT + IDENTITY_MAX_AGE + timedelta(seconds=1))
    assert answer.fresh(AT - timedelta(seconds=30))  # resolved by a replica whose clock runs ahead
    assert not answer.fresh(AT - timedelta(minutes=5))


def test_what_is_not_known_is_unresolved_never_a_guess() -> None:
    empty = known()
    for decide in (
        lambda: invoker.may_invoke(empty, "sandbox"),
        lambda: invoker.identity(empty),
        lambda: invoker.aws_user(empty),
    ):
        with pytest.raises(Unresolved):
            decide()
    # Slack answered, but the identity store could not be asked: still unresolved
    with pytest.raises(Unresolved):
        invoker.aws_user(known(identity="U0001", email="a@example.com", email_checked=True))


def test_known_answers_decide_as_a_live_lookup_would() -> None:
    answer = known(
        profiles=("sandbox",),
        identity="alice@example.com",
        email="alice@example.com",
        email_checked=True,
        aws_checked=True,
        aws_user="aws-user-1",
    )
    assert invoker.may_invoke(answer, "sandbox") and not invoker.may_invoke(answer, "prod")
    assert invoker.identity(answer) == "alice@example.com"
    assert invoker.aws_user(answer) == ("alice@example.com", "aws-user-1")
    with pytest.raises(NotAuthorized, match="guests"):
        invoker.identity(known(refused="Slack guests cannot use breakglass"))
    with pytest.raises(AwsAccessRefused, match="no email address"):
        invoker.aws_user(known(identity="U0001", email_checked=True))
    with pytest.raises(AwsAccessRefused, match="not in the identity store"):
        invoker.aws_user(
            known(
                identity="U0001",
                email="a@example.com",
                email_checked=True,
                aws_refused="not in the identity store",
            )
        )


def test_the_metadata_fits_slack_and_round_trips() -> None:
    from bot.slack.invoke_meta import InvokeMetadata, encode

    answer = known(profiles=("sandbox", "prod"), identity="U0001", oncall={"prod": "yes"})
    raw = encode("V0001", answer)
    assert 0 < len(raw) <= 3000
    assert InvokeMetadata.model_validate_json(raw).known == answer
    huge = known(profiles=tuple(f"profile-{i}" for i in range(400)))
    assert encode("V0001", huge) == ""  # too big for private_metadata: decided after the ack instead
