"""Identity modes, group membership (cached briefly, refreshed), and the daily review reminder."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from slack_sdk import WebClient

from bot.clock import ManualClock
from bot.directory import Directory
from bot.errors import DirectoryUnavailable
from bot.localslack.webapi import FakeSlack
from bot.policy import parse_policy
from store.sqlite import SQLiteStore
from tests.conftest import TEST_POLICY, make_bot
from tests.harness import BOT_TOKEN


@pytest.mark.parametrize(
    ("mode", "expected"), [("email", "alice@example.com"), ("email_local_part", "alice")]
)
def test_identity_from_slack_profile(
    fake: FakeSlack, tmp_path: Path, clock: ManualClock, mode: str, expected: str
) -> None:
    policy = parse_policy(TEST_POLICY + f"identity: {mode}\nemail_domains: [example.com]\n", "p.yml")
    bot = make_bot(fake, SQLiteStore(tmp_path / "id.db"), policy, clock)
    try:
        assert bot.slack.invoke(user="U0001").json["response_action"] == "update"
        event = bot.store.list_active()[0]
        assert event.invoker == expected
        assert event.slack_user_id == "U0001"
        # stacking is per identity
        assert bot.slack.invoke(user="U0001").json["response_action"] == "errors"
    finally:
        bot.server.stop()


def test_identity_without_email_is_a_clear_error(fake: FakeSlack, tmp_path: Path, clock: ManualClock) -> None:
    fake.add_user("U0NOMAIL", name="nomail")
    policy = parse_policy(TEST_POLICY + "identity: email\n", "p.yml")
    bot = make_bot(fake, SQLiteStore(tmp_path / "id.db"), policy, clock)
    try:
        body = bot.slack.invoke(user="U0NOMAIL").json
        assert body["response_action"] == "errors"
        assert "email" in body["errors"]["profile"]
        assert bot.store.list_active() == []
    finally:
        bot.server.stop()


def test_group_membership_is_cached_then_refreshed(fake: FakeSlack) -> None:
    now = [0.0]
    directory = Directory(WebClient(token=BOT_TOKEN, base_url=fake.url), ttl=60, monotonic=lambda: now[0])
    assert directory.is_member("U0SRE", ["S0SRE"])
    fake.set_usergroup("S0SRE", ["U0002"])
    now[0] = 59
    assert directory.is_member("U0SRE", ["S0SRE"])  # cached
    now[0] = 61
    assert not directory.is_member("U0SRE", ["S0SRE"])  # refreshed
    assert directory.is_member("U0002", ["S0SRE"])
    assert len(fake.calls_to("usergroups.users.list")) == 2


def test_membership_uses_stale_cache_when_slack_fails_and_errors_without_one(fake: FakeSlack) -> None:
    now = [0.0]
    directory = Directory(WebClient(token=BOT_TOKEN, base_url=fake.url), ttl=60, monotonic=lambda: now[0])
    assert directory.is_member("U0SRE", ["S0SRE"])
    now[0] = 120
    fake.fail("usergroups.users.list", times=5, error="fatal_error")
    assert directory.is_member("U0SRE", ["S0SRE"])  # stale but known
    with pytest.raises(DirectoryUnavailable):
        directory.is_member("U0SECA", ["S0SEC"])  # never known: a clear error, not a silent "no"


def test_user_id_principals_need_no_slack_call(fake: FakeSlack) -> None:
    directory = Directory(WebClient(token=BOT_TOKEN, base_url=fake.url))
    assert directory.is_member("U0IC", ["U0IC", "S0ONCALL"])
    assert fake.calls_to("usergroups.users.list") == []


def test_daily_review_reminder_lists_old_unreviewed_events(
    fake: FakeSlack, tmp_path: Path, clock: ManualClock
) -> None:
    policy = parse_policy(TEST_POLICY + "review_reminder_after: 24h\n", "p.yml")
    bot = make_bot(fake, SQLiteStore(tmp_path / "r.db"), policy, clock)
    try:
        bot.slack.invoke(user="U0001")
        bot.slack.invoke(user="U0002")
        bot.idle()
        old, new = sorted(bot.store.list_active(), key=lambda e: e.slack_user_id)
        bot.service.close(old.id, by="U0001", reason="finished")
        clock.advance(timedelta(hours=20))
        bot.service.close(new.id, by="U0002", reason="finished too")
        clock.advance(timedelta(hours=5))
        assert bot.runtime.scheduler.remind_reviews() == 1
        reminder = [
            c for c in fake.calls_to("chat.postMessage") if "await review" in c.params.get("text", "")
        ]
        assert len(reminder) == 1
        body = str(reminder[0].params["blocks"])
        assert old.id in body
        assert new.id not in body
        assert bot.runtime.scheduler.remind_reviews() == 0  # once a day, however many schedulers fire
        assert (
            len([c for c in fake.calls_to("chat.postMessage") if "await review" in c.params.get("text", "")])
            == 1
        )
        bot.service.review(old.id, by="U0SECA", notes="checked CloudTrail, all fine")
        clock.advance(timedelta(days=1))
        assert bot.runtime.scheduler.remind_reviews() == 1  # the next day: only the newer one is left
        latest = [c for c in fake.calls_to("chat.postMessage") if "await review" in c.params.get("text", "")][
            -1
        ]
        assert new.id in str(latest.params["blocks"])
        assert old.id not in str(latest.params["blocks"])
    finally:
        bot.server.stop()


def test_reminder_for_cron_less_runtimes_waits_for_its_time(fake: FakeSlack, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    clock = ManualClock(datetime(2026, 11, 25, 8, 59, tzinfo=UTC))
    policy = parse_policy(TEST_POLICY + "review_reminder_after: 1h\nreview_reminder_time: '09:00'\n", "p.yml")
    bot = make_bot(fake, SQLiteStore(tmp_path / "r.db"), policy, clock)
    try:
        bot.slack.invoke(user="U0001")
        bot.idle()
        (event,) = bot.store.list_active()
        clock.set(datetime(2026, 11, 25, 7, 0, tzinfo=UTC))
        bot.service.close(event.id, by="U0001", reason="finished")
        clock.set(datetime(2026, 11, 25, 8, 59, tzinfo=UTC))
        assert bot.runtime.scheduler.remind_if_due() == 0  # before 09:00 UTC
        clock.set(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
        assert bot.runtime.scheduler.remind_if_due() == 1
        clock.set(datetime(2026, 11, 25, 9, 1, tzinfo=UTC))
        assert bot.runtime.scheduler.remind_if_due() == 0  # once that day
    finally:
        bot.server.stop()
