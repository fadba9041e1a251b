"""Issue 12 (trust): bidirectional controls in user text, separation of duties in reviews, injective
identities, requests verified before they are parsed, and what /healthz reports. Over the real HTTP
endpoint with signed requests wherever a request is involved."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from store.model import BIDI_CONTROLS, validate_free_text, validate_incident, validate_justification
from tests.conftest import Bot
from tests.test_flows_close import ephemerals, invoke, reply_text, settled
from tests.test_flows_review_home import submit_review

VALID = "Database failover is stuck; promoting the replica by hand"

# -- bidirectional controls ---------------------------------------------------------------------------


def test_the_refused_bidi_controls_are_exactly_the_embeddings_overrides_and_isolates() -> None:
    assert sorted(ord(c) for c in BIDI_CONTROLS) == [
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    ]


@pytest.mark.parametrize("char", sorted(BIDI_CONTROLS))
def test_bidi_controls_are_refused_in_every_user_field(char: str) -> None:
    code = f"U+{ord(char):04X}"
    checks = [
        lambda: validate_justification(VALID + char + "moc.live"),
        lambda: validate_incident("INC-1" + char),
        lambda: validate_free_text("done" + char, what="close reason", max_length=500),
        lambda: validate_free_text("ok" + char, what="review notes", max_length=2000),
    ]
    for check in checks:
        with pytest.raises(ValueError, match="bidirectional text control") as info:
            check()
        assert code in str(info.value)


def test_stored_events_cannot_carry_bidi_controls() -> None:
    from datetime import UTC, datetime, timedelta

    from store import BreakGlassEvent

    with pytest.raises(ValidationError, match="U\\+202E"):
        BreakGlassEvent.new(
            invoker="U1",
            slack_user_id="U1",
            profile="sandbox",
            reason_code="incident",
            justification=VALID + "\u202e",
            duration=timedelta(hours=1),
            now=datetime.now(UTC),
        )


def test_direction_marks_are_kept_for_right_to_left_writers() -> None:
    text = "\u05e9\u05dc\u05d5\u05dd \u200fעדכון בסיס הנתונים נתקע\u200e INC-7 \u061c"
    assert validate_justification(text) == text


def test_a_bidi_override_in_the_modal_is_an_inline_error_and_records_nothing(bot: Bot) -> None:
    body = bot.slack.invoke(justification="Rotating keys after the leak \u202egnp.exe\u202c ok").json
    assert body["response_action"] == "errors"
    assert "bidirectional text control (U+202E)" in body["errors"]["justification"]
    assert bot.store.list_active() == []


# -- separation of duties --------------------------------------------------------------------------------


def _ended_by_security_member(bot: Bot) -> str:
    event = invoke(bot, user="U0SECA")
    assert "Closed event" in reply_text(
        bot.slack.command(f"close {event.id} replica promoted", user="U0SECA")
    )
    return settled(bot, event.id).id


def test_a_security_member_cannot_review_their_own_event_and_is_told_who_can(bot: Bot) -> None:
    bot.fake.add_user("U0SECB", email="carol@example.com", name="carol")
    bot.fake.set_usergroup("S0SEC", ["U0SECA", "U0SECB"])
    event_id = _ended_by_security_member(bot)
    before = bot.store.get(event_id)

    bot.slack.click("review_event", event_id, user="U0SECA")
    text = ephemerals(bot, "U0SECA")[0]
    assert "cannot review it" in text and "separation of duties" in text
    assert "carol (U0SECB)" in text
    assert bot.fake.calls_to("views.open") == []

    body = submit_review(bot, event_id, "looks fine to me", user="U0SECA").json  # a hand-made submission
    assert body["response_action"] == "errors"
    assert "carol (U0SECB)" in body["errors"]["review_notes"]
    assert bot.store.get(event_id) == before
    assert [e.id for e in bot.service.unreviewed()] == [event_id]

    # the other security member may
    assert submit_review(bot, event_id, "checked the trail, fine", user="U0SECB").body == b""
    assert bot.store.get(event_id).reviewed_by == "U0SECB"


def test_a_lone_security_member_is_told_to_add_a_second_one(bot: Bot) -> None:
    event_id = _ended_by_security_member(bot)
    body = submit_review(bot, event_id, "looks fine to me", user="U0SECA").json
    assert "Nobody else is in security" in body["errors"]["review_notes"]
    assert "S0SEC" in body["errors"]["review_notes"]
    assert bot.store.get(event_id).reviewed_at is None
