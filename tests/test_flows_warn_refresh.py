"""The expiry warning DM refreshed after an extension (issue 22's leftover): the holder's "expires in N
minutes" DM, with its Extend and Close buttons, is updated to say it was extended and when it now expires.

At the depth of each part: the store owes WARN_DM_REFRESH in the extension's own write exactly when a
warning DM was sent (or is on its way), on every backend; the pipeline's handler updates the recorded DM
(channel and ts), is retried when Slack fails and updates it once; and end to end, signed requests to the
bot's HTTP endpoint and the fake Slack Web API: warn, extend from the DM, the DM updated, warned again before
the new expiry, extended again, both warnings updated (SQLite and DynamoDB)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from store import BreakGlassEvent, Status
from store.model import OutboxKind, SentDM
from tests.conftest import Bot
from tests.store_fixtures import BACKENDS, HOUR, T0, make_event, open_test_store
from tests.test_flows_close import action_ids, invoke, reply_text, settled
from tests.test_flows_dm_ended import REASON, _warned_and_extended, ddb_bot  # noqa: F401 - fixture

pytest_plugins = ["tests.store_fixtures"]

WARNING = SentDM(kind="warn_dm", channel="D0ALICE", ts="1772366400.000100")
EXTENSION = SentDM(kind="extend_dm", channel="D0ALICE", ts="1772366500.000200")


@pytest.fixture(params=BACKENDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with open_test_store(request.param, request, tmp_path) as opened:
        yield opened


# -- the store: owed in the extension's write, only when there is a warning DM ---------------------------


def _extend(store: Any, event: BreakGlassEvent, minutes: int = 50) -> BreakGlassEvent:
    return store.extend(
        event.id,
        by="UALICE",
        duration=timedelta(minutes=30),
        reason=REASON,
        now=T0 + timedelta(minutes=minutes),
        seen=len(store.get(event.id).extensions),
        max_total=4 * HOUR,
        outbox=[OutboxKind.AUDIT_UPDATE, OutboxKind.EXTEND_DM],
    )


def test_an_extension_before_any_warning_owes_no_refresh(any_store: Any) -> None:
    store = any_store
    event = store.create(make_event())
    extended = _extend(store, event)
    assert extended.owed_kinds == (OutboxKind.AUDIT_UPDATE, OutboxKind.EXTEND_DM)
    # an extension DM is not a warning: a second extension still owes no refresh
    store.save(extended.updated(dms=(EXTENSION,), outbox=()))
    again = _extend(store, event, minutes=55)
    assert OutboxKind.WARN_DM_REFRESH not in again.owed_kinds
    assert store.get(event.id) == again


def test_an_extension_after_the_warning_dm_owes_its_refresh_in_the_same_write(any_store: Any) -> None:
    store = any_store
    event = store.create(make_event())
    warned = store.save(event.updated(warned_at=T0 + timedelta(minutes=45), dms=(WARNING,)))
    extended = _extend(store, warned)
    assert extended.owed_kinds == (OutboxKind.AUDIT_UPDATE, OutboxKind.EXTEND_DM, OutboxKind.WARN_DM_REFRESH)
    refresh = [e for e in extended.outbox if e.kind is OutboxKind.WARN_DM_REFRESH]
    assert refresh[0].version == extended.version  # the write that moved the expiry owes it
    assert extended.expires_at == event.expires_at + timedelta(minutes=30)
    assert store.get(event.id) == extended
    # the warning of the new stretch is owed again (the scheduler warns before the new expiry)
    assert extended.warned_at is None and extended.extensions[-1].warned_at == warned.warned_at


def test_an_extension_while_the_warning_dm_is_owed_owes_the_refresh_too(any_store: Any) -> None:
    store = any_store
    """A warning owed may be in flight: sent before this write with the old expiry, recorded after it.
    The refresh owed after it then updates it (once it is recorded; if it is sent later, it shows the new
    expiry anyway)."""
    event = store.create(make_event())
    warning = event.updated(warned_at=T0 + timedelta(minutes=45)).with_outbox(OutboxKind.WARN_DM)
    warned = store.save(warning)
    extended = _extend(store, warned)
    assert extended.owed_kinds == (
        OutboxKind.WARN_DM,
        OutboxKind.AUDIT_UPDATE,
        OutboxKind.EXTEND_DM,
        OutboxKind.WARN_DM_REFRESH,
    )


def test_a_refused_extension_owes_nothing(any_store: Any) -> None:
    store = any_store
    from store import InvalidTransition

    event = store.create(make_event())
    warned = store.save(event.updated(dms=(WARNING,)))
    with pytest.raises(InvalidTransition):
        store.extend(
            event.id,
            by="UALICE",
            duration=timedelta(hours=5),
            reason=REASON,
            now=T0 + timedelta(minutes=50),
            seen=0,
            max_total=4 * HOUR,
        )
    assert store.get(event.id) == warned and warned.outbox == ()


# -- the pipeline: the handler updates the recorded DM, retried when Slack fails, once --------------------


def _warned(bot: Bot) -> tuple[BreakGlassEvent, dict[str, Any]]:
    event = invoke(bot)
    bot.clock.set(bot.service.warn_at(event) + timedelta(seconds=1))
    bot.runtime.scheduler.sweep()
    warned = settled(bot, event.id)
    warning = bot.fake.channel_messages("U0001")[-1]
    assert "expires in" in warning["text"]
    assert [(d.kind, d.channel, d.ts) for d in warned.dms] == [("warn_dm", warning["channel"], warning["ts"])]
    return warned, warning


def _refreshes(bot: Bot, warning: dict[str, Any]) -> list[Any]:
    return [
        c
        for c in bot.fake.calls_to("chat.update")
        if c.params.get("ts") == warning["ts"] and "not as this warning said" in c.params["text"]
    ]


def test_the_handler_updates_the_warning_dm_where_it_was_recorded(bot: Bot) -> None:
    warned, warning = _warned(bot)
    bot.service.extend(warned.id, by="U0001", duration="900", reason=REASON)
    bot.runtime.pipeline.deliver(warned.id)
    extended = settled(bot, warned.id)
    (update,) = _refreshes(bot, warning)
    assert update.ok and update.params["channel"] == warning["channel"]
    assert update.params["ts"] == warning["ts"]
    message = bot.fake.message(warning["channel"], warning["ts"])
    assert f"<!date^{int(extended.expires_at.timestamp())}^" in message["text"]
    assert "extended by 15 minutes by you" in message["text"]
    assert action_ids(message["blocks"]) == ["extend_event", "close_event"]  # still active: buttons kept
    assert bot.fake.invalid_calls == []


def test_slack_failing_the_update_leaves_it_owed_and_the_retry_updates_it_once(bot: Bot) -> None:
    warned, warning = _warned(bot)
    bot.fake.fail("chat.update", error="internal_error", channel=warning["channel"])
    bot.service.extend(warned.id, by="U0001", duration="900", reason=REASON)
    bot.runtime.pipeline.deliver(warned.id)
    owed = bot.store.get(warned.id)
    assert owed.owed_kinds == (OutboxKind.WARN_DM_REFRESH,)  # the rest was delivered; this one stays owed
    assert [c.ok for c in _refreshes(bot, warning)] == [False]
    assert "expires in" in bot.fake.message(warning["channel"], warning["ts"])["text"]
    bot.clock.advance(timedelta(seconds=30))  # past the backoff: the sweep retries it
    bot.runtime.pipeline.deliver_owed()
    settled(bot, warned.id)
    assert [c.ok for c in _refreshes(bot, warning)] == [False, True]
    for _ in range(2):  # delivered: never sent again
        bot.clock.advance(timedelta(seconds=30))
        bot.runtime.pipeline.deliver_owed()
    assert [c.ok for c in _refreshes(bot, warning)] == [False, True]
    assert "not as this warning said" in bot.fake.message(warning["channel"], warning["ts"])["text"]


def test_an_extension_while_the_warning_dm_is_being_sent_still_refreshes_it(bot: Bot) -> None:
    """The race the store's rule is for: the warning DM is posted with the old expiry, the extension is
    stored before that send is recorded (so no warning DM is recorded yet), then the send is recorded.
    The refresh owed by the extension follows in the same delivery and updates it."""
    event = invoke(bot)
    registry = bot.runtime.pipeline.handlers
    send = registry[OutboxKind.WARN_DM].send
    extended_meanwhile: list[BreakGlassEvent] = []

    def send_then_extended(deps: Any, ev: BreakGlassEvent) -> dict[str, Any]:
        fields = send(deps, ev)  # posted, showing the expiry before the extension
        if not extended_meanwhile:
            extended_meanwhile.append(bot.service.extend(ev.id, by="U0001", duration="900", reason=REASON))
        return fields

    registry.replace(OutboxKind.WARN_DM, send_then_extended)
    bot.clock.set(bot.service.warn_at(event) + timedelta(seconds=1))
    bot.runtime.scheduler.sweep()
    extended = settled(bot, event.id)
    (ext,) = extended_meanwhile
    assert ext.dms == () and ext.owes(OutboxKind.WARN_DM)  # the store could not know the DM was out
    warning = next(m for m in bot.fake.channel_messages("U0001") if m["ts"] == extended.dms[0].ts)
    assert extended.dms[0].kind == "warn_dm"
    (posted,) = [c for c in bot.fake.calls_to("chat.postMessage") if "expires in" in c.params["text"]]
    assert f"^{int(event.expires_at.timestamp())}^" in posted.params["text"]  # the old expiry, as posted
    (update,) = _refreshes(bot, warning)
    assert update.ok and f"<!date^{int(extended.expires_at.timestamp())}^" in warning["text"]
    assert bot.fake.invalid_calls == []


def test_two_extensions_before_the_delivery_both_show_the_last(bot: Bot) -> None:
    """Each send renders the event as stored now: no update shows the first extension's expiry."""
    warned, warning = _warned(bot)
    bot.service.extend(warned.id, by="U0001", duration="900", reason=REASON)
    bot.service.extend(warned.id, by="U0IC", duration="900", reason=REASON)
    bot.runtime.pipeline.deliver(warned.id)
    extended = settled(bot, warned.id)
    updates = _refreshes(bot, warning)
    assert updates and all(c.ok for c in updates)
    for update in updates:
        assert f"<!date^{int(extended.expires_at.timestamp())}^" in update.params["text"]
        assert "by <@U0IC>" in update.params["text"]


def test_a_refresh_still_owed_when_the_event_ends_sends_nothing(bot: Bot) -> None:
    warned, warning = _warned(bot)
    bot.service.extend(warned.id, by="U0001", duration="900", reason=REASON)
    bot.service.close(warned.id, by="U0001", reason="Replica promoted, done")
    bot.runtime.pipeline.deliver(warned.id)
    ended = settled(bot, warned.id)
    assert ended.status is Status.CLOSED
    assert _refreshes(bot, warning) == []  # the end's update (no buttons) is the only one
    message = bot.fake.message(warning["channel"], warning["ts"])
    assert "It is no longer active" in message["text"] and action_ids(message["blocks"]) == []


# -- end to end: signed requests, the fake Slack Web API ---------------------------------------------------


def _end_to_end(bot: Bot) -> None:
    extended, warning, notice = _warned_and_extended(bot)  # warn, Extend button, the Extend modal
    (update,) = _refreshes(bot, warning)
    assert update.ok
    first = bot.fake.message(warning["channel"], warning["ts"])
    assert f"<!date^{int(extended.expires_at.timestamp())}^" in first["text"]
    assert "expires in" not in first["text"]
    assert action_ids(first["blocks"]) == ["extend_event", "close_event"]

    # a new warning is due before the new expiry, and comes
    assert extended.warned_at is None
    warn_at = bot.service.warn_at(extended)
    assert extended.created_at < warn_at < extended.expires_at
    bot.clock.set(warn_at + timedelta(seconds=1))
    bot.runtime.scheduler.sweep()
    warned_again = settled(bot, extended.id)
    second = bot.fake.channel_messages("U0001")[-1]
    assert "expires in" in second["text"] and warned_again.status is Status.ACTIVE
    assert [d.kind for d in warned_again.dms] == ["warn_dm", "extend_dm", "warn_dm"]

    # extended again (the slash command, by an incident commander): both warnings show the last expiry
    text = reply_text(bot.slack.command(f"extend {extended.id} 15m {REASON}", user="U0IC"))
    assert "extended by 15 minutes" in text, text
    again = settled(bot, extended.id)
    assert again.expires_at == extended.expires_at + timedelta(minutes=15)
    for posted in (warning, second):
        message = bot.fake.message(posted["channel"], posted["ts"])
        assert f"<!date^{int(again.expires_at.timestamp())}^" in message["text"], message["text"]
        assert "by <@U0IC>" in message["text"]
    assert len(_refreshes(bot, warning)) == 2 and len(_refreshes(bot, second)) == 1
    # the extension DM is not a warning: it is not refreshed (it says what that extension did)
    assert not [c for c in bot.fake.calls_to("chat.update") if c.params.get("ts") == notice["ts"]]
    assert bot.fake.invalid_calls == []


def test_warn_extend_the_warning_dm_is_updated(bot: Bot) -> None:
    _end_to_end(bot)


def test_warn_extend_the_warning_dm_is_updated_on_dynamodb(ddb_bot: Bot) -> None:  # noqa: F811
    _end_to_end(ddb_bot)
