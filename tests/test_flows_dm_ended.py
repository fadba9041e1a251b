"""The invoker's "access is active" DM once the event ends: however it ends (the Close modal by the invoker
or by someone else, `breakglass-admin close`, the scheduler's sweep), the DM is updated (chat.update) to
say it ended, without its Close/Extend buttons. Over the real HTTP endpoint and the fake Slack Web API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from store import BreakGlassEvent, Status
from store.model import OutboxKind
from tests.conftest import Bot, dynamodb_bot
from tests.test_flows_close import (
    action_ids,
    dm_texts,
    ephemerals,
    expire,
    invoke,
    settled,
    submit_close,
    wait_until,
)


def _close_by(user: str) -> Callable[[Bot, BreakGlassEvent], BreakGlassEvent]:
    def close(bot: Bot, event: BreakGlassEvent) -> BreakGlassEvent:
        assert submit_close(bot, event.id, "Replica promoted, done", user=user).status == 200
        return settled(bot, event.id)

    return close


def _close_as_operator(bot: Bot, event: BreakGlassEvent) -> BreakGlassEvent:
    """What `breakglass-admin close` does: the use case as an operator, then the one pipeline."""
    bot.runtime.service.close(event.id, by="operator:alice", reason="Replica promoted, done", operator=True)
    bot.runtime.pipeline.deliver(event.id)
    return settled(bot, event.id)


ENDINGS = {
    "closed by the invoker": _close_by("U0001"),
    "closed by an incident commander": _close_by("U0IC"),
    "closed by an operator": _close_as_operator,
    "expired by the sweep": expire,
}


def _active_dm(bot: Bot) -> dict:
    """The invoker's first DM (the "access is active" one) as posted."""
    first = bot.fake.channel_messages("U0001")[0]
    assert "is active until" in first["text"] and "close_event" in action_ids(first["blocks"])
    return first


@pytest.fixture
def ddb_bot(
    fake: FakeSlack, policy: Policy, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bot]:
    with dynamodb_bot(fake, policy, clock, monkeypatch, "dm-ended") as bot:
        yield bot


@pytest.mark.parametrize("how", list(ENDINGS))
def test_the_active_dm_says_the_event_ended_and_loses_its_buttons(bot: Bot, how: str) -> None:
    _ends_and_updates_the_dm(bot, how)


@pytest.mark.parametrize("how", ["closed by an incident commander", "expired by the sweep"])
def test_the_active_dm_is_updated_on_dynamodb_too(ddb_bot: Bot, how: str) -> None:
    _ends_and_updates_the_dm(ddb_bot, how)


def _ends_and_updates_the_dm(bot: Bot, how: str) -> None:
    event = invoke(bot)
    posted = _active_dm(bot)
    # the DM's location is recorded on the event when it is sent
    assert (event.dm_channel, event.dm_ts) == (posted["channel"], posted["ts"])

    ended = ENDINGS[how](bot, event)
    assert ended.status in (Status.CLOSED, Status.EXPIRED) and ended.outbox == ()

    updates = [c for c in bot.fake.calls_to("chat.update") if c.params.get("ts") == event.dm_ts]
    assert len(updates) == 1 and updates[0].ok
    assert updates[0].params["channel"] == event.dm_channel
    message = bot.fake.message(posted["channel"], posted["ts"])
    assert "is active until" not in message["text"] and event.id in message["text"]
    assert ("expired" if ended.status is Status.EXPIRED else "was closed by") in message["text"]
    assert action_ids(message["blocks"]) == []  # no Close, no Extend
    assert bot.fake.invalid_calls == []


def test_an_ended_event_whose_dm_is_still_owed_updates_it_once_sent(bot: Bot) -> None:
    """The end's update waits for the DM it updates: while the DM is still owed (Slack refused it), the
    update stays owed too; once the DM is sent, the update follows, so no DM keeps its buttons."""
    bot.fake.fail("chat.postMessage", error="fatal_error", channel="U0001")
    response = bot.slack.invoke(user="U0001")
    assert response.status == 200
    event = bot.store.list_by_invoker("U0001", limit=1).items[0]

    def dm_still_owed() -> BreakGlassEvent | None:
        ev = bot.store.get(event.id)
        return ev if ev.audit_ts and ev.owes(OutboxKind.DM_INVOKED) and not ev.outbox_leased else None

    wait_until(dm_still_owed, "the first delivery, with the DM failed")
    assert dm_texts(bot, "U0001") == []
    bot.runtime.service.close(event.id, by="U0IC", reason="Incident over, closing it")
    bot.clock.advance(timedelta(minutes=10))  # past the backoff: the sweep delivers what stays owed
    bot.runtime.pipeline.deliver_owed()
    ended = settled(bot, event.id)
    assert ended.dm_ts is not None
    message = bot.fake.message(ended.dm_channel or "", ended.dm_ts)
    assert "was closed by" in message["text"] and action_ids(message["blocks"]) == []
    assert bot.fake.invalid_calls == []


# -- the warning DM and the extension DM (issue 22): updated at the end too, through the same step ----------

REASON = "failover still running on the primary"


def _warned_and_extended(bot: Bot) -> tuple[BreakGlassEvent, dict, dict]:
    """Invoke, let the expiry warning go out, extend from its Extend button: (event, warning DM, extension DM)."""
    event = invoke(bot)
    bot.clock.set(bot.service.warn_at(event) + timedelta(seconds=1))
    bot.runtime.scheduler.sweep()
    settled(bot, event.id)
    warning = bot.fake.channel_messages("U0001")[-1]
    assert "expires in" in warning["text"] and "extend_event" in action_ids(warning["blocks"])
    bot.slack.click("extend_event", event.id, user="U0001", channel=warning["channel"])
    (opened,) = bot.fake.wait_for(
        "views.open", where=lambda c: c.params["view"].get("callback_id") == "breakglass_extend"
    )
    view = opened.params["view"]
    response = bot.slack.submit(
        "breakglass_extend",
        {"extend_duration": ("select", "900"), "extend_reason": REASON},
        user="U0001",
        private_metadata=view["private_metadata"],
    )
    assert response.json["response_action"] == "update", response.json
    extended = settled(bot, event.id)
    notice = bot.fake.channel_messages("U0001")[-1]
    assert "You extended" in notice["text"] and "close_event" in action_ids(notice["blocks"])
    # both are recorded on the event, oldest first, with the kind that sent them
    assert [(d.kind, d.channel, d.ts) for d in extended.dms] == [
        ("warn_dm", warning["channel"], warning["ts"]),
        ("extend_dm", notice["channel"], notice["ts"]),
    ]
    return extended, warning, notice


def _dms_ended(bot: Bot, ended: BreakGlassEvent, *messages: dict, every: bool = True) -> None:
    """Each DM was updated once (chat.update) to say the event ended (a warning DM was also refreshed once
    by the extension, before: test_flows_warn_refresh.py), says it, and has no buttons; (`every`) no DM to
    the invoker keeps a button; every Block Kit sent was valid."""
    for posted in messages:
        updates = [c for c in bot.fake.calls_to("chat.update") if c.params.get("ts") == posted["ts"]]
        ends = [c for c in updates if "It is no longer active" in c.params["text"]]
        assert len(ends) == 1 and ends[0].ok and updates[-1] is ends[0], updates
        assert len(updates) == (2 if "expires in" in posted["text"] else 1), updates
        message = bot.fake.message(posted["channel"], posted["ts"])
        assert ended.id in message["text"] and "It is no longer active" in message["text"]
        assert ("expired" if ended.status is Status.EXPIRED else "was closed by") in message["text"]
        assert action_ids(message["blocks"]) == []
    assert not every or all(action_ids(m["blocks"]) == [] for m in bot.fake.channel_messages("U0001")), [
        m["text"] for m in bot.fake.channel_messages("U0001")
    ]
    assert bot.fake.invalid_calls == []


def _stale_buttons_change_nothing(bot: Bot, ended: BreakGlassEvent, warning: dict) -> None:
    """The warning's Extend and Close, clicked after the end (e.g. from a client that had not refreshed):
    each answers that the event already ended, and nothing is changed, opened or announced."""
    posts, opened = len(bot.fake.calls_to("chat.postMessage")), len(bot.fake.calls_to("views.open"))
    for action in ("extend_event", "close_event"):
        bot.slack.click(action, ended.id, user="U0001", channel=warning["channel"], message_ts=warning["ts"])
    answers = ephemerals(bot, "U0001", 2)
    word = "expired" if ended.status is Status.EXPIRED else "already closed"
    assert all(word in a and ended.id in a for a in answers), answers
    bot.idle()
    assert bot.store.get(ended.id) == ended
    assert len(bot.fake.calls_to("chat.postMessage")) == posts
    assert len(bot.fake.calls_to("views.open")) == opened


@pytest.mark.parametrize("how", list(ENDINGS))
def test_the_warning_and_extension_dms_end_too(bot: Bot, how: str) -> None:
    extended, warning, notice = _warned_and_extended(bot)
    ended = ENDINGS[how](bot, extended)
    assert ended.status in (Status.CLOSED, Status.EXPIRED) and ended.outbox == ()
    _dms_ended(bot, ended, bot.fake.channel_messages("U0001")[0], warning, notice)
    _stale_buttons_change_nothing(bot, ended, warning)


@pytest.mark.parametrize("how", ["closed by an incident commander", "expired by the sweep"])
def test_the_warning_and_extension_dms_end_on_dynamodb_too(ddb_bot: Bot, how: str) -> None:
    extended, warning, notice = _warned_and_extended(ddb_bot)
    ended = ENDINGS[how](ddb_bot, extended)
    _dms_ended(ddb_bot, ended, warning, notice)
    _stale_buttons_change_nothing(ddb_bot, ended, warning)


def test_a_warning_owed_when_the_event_ends_is_not_sent(bot: Bot) -> None:
    """The warning was owed (recorded by the scheduler) but the event was closed before it went out: no
    warning DM with buttons for access that is gone; the active DM is updated as usual."""
    event = invoke(bot)
    bot.clock.set(bot.service.warn_at(event) + timedelta(seconds=1))
    assert bot.runtime.service.warn(event.id) is not None  # owed, not delivered yet
    bot.runtime.service.close(event.id, by="U0IC", reason="Incident over, closing it")
    bot.runtime.pipeline.deliver(event.id)
    ended = settled(bot, event.id)
    assert ended.dms == ()
    assert not any("expires in" in t for t in dm_texts(bot, "U0001"))
    assert all(action_ids(m["blocks"]) == [] for m in bot.fake.channel_messages("U0001"))


def test_a_dm_that_can_no_longer_be_updated_does_not_hold_back_the_others(bot: Bot) -> None:
    extended, warning, notice = _warned_and_extended(bot)
    active = bot.fake.channel_messages("U0001")[0]
    bot.fake.fail("chat.update", error="message_not_found", channel=active["channel"])  # the first update
    ended = _close_by("U0IC")(bot, extended)
    assert ended.outbox == ()  # not retried for ever: that message is gone
    _dms_ended(bot, ended, warning, notice, every=False)
