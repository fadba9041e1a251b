"""Exact-time warnings and expiry on Lambda (bot/schedules.py): each event's one-time EventBridge Scheduler
schedules are created at invoke, moved by an extension, deleted at the end, all through the outbox, and the
sweep function, invoked with a schedule's payload, warns or expires the event at its time.

On moto's `scheduler` API: in-process (`mock_aws`) for the schedule life cycle, and the ThreadedMotoServer
(reached through `AWS_ENDPOINT_URL_SCHEDULER` only) with IAM Identity Center for the revoke at the exact
time and for a Scheduler that cannot be reached."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from bot import lambda_handler, schedules
from bot.app import BreakglassApp
from bot.clock import ManualClock
from bot.config import ConfigError, load_settings
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from bot.service import InvokeRequest
from store import Status
from store.model import OutboxKind
from store.sqlite import SQLiteStore
from tests.access_world import Aws
from tests.conftest import AWS_TEST_ENV
from tests.processes import free_port
from tests.test_lambda import build_runtime

pytest_plugins = ["tests.store_fixtures", "tests.access_world"]

SWEEP_ARN = "arn:aws:lambda:us-east-1:123456789012:function:breakglass-sweep"
ROLE_ARN = "arn:aws:iam::123456789012:role/breakglass-scheduler"
GROUP = "breakglass-expiry"
SCHEDULE_SETTINGS = {
    "breakglass_scheduler_target_arn": SWEEP_ARN,
    "breakglass_scheduler_role_arn": ROLE_ARN,
    "breakglass_scheduler_group": GROUP,
}
T0 = datetime(2026, 12, 3, 12, 0, 20, tzinfo=UTC)  # 20 s past a whole minute
JUSTIFICATION = "Restarting the stuck payment workers after the deploy"


@dataclass
class FiredContext:
    """What Lambda hands the sweep function: the time the invocation has left."""

    left_ms: int = 200_000

    def get_remaining_time_in_millis(self) -> int:
        return self.left_ms


@pytest.fixture(autouse=True)
def _reset_module_cache() -> Iterator[None]:
    lambda_handler.reset()
    yield
    lambda_handler.reset()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "schedules.db")
    yield store
    store.disconnect()


@pytest.fixture
def t0_clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def scheduler_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's in-process Scheduler with the schedule group made (as the SAM template does)."""
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        client = boto3.client("scheduler", region_name="us-east-1")
        client.create_schedule_group(Name=GROUP)
        yield client


def lambda_runtime(
    fake: FakeSlack, store: SQLiteStore, policy: Policy, clock: ManualClock, **settings: object
) -> BreakglassApp:
    runtime = build_runtime(fake, store, policy, clock, **{**SCHEDULE_SETTINGS, **settings})
    lambda_handler.install(runtime, lambda_client=object())
    return runtime


def invoke(runtime: BreakglassApp, duration: str = "1h", user: str = "U0001") -> str:
    event = runtime.service.invoke(
        InvokeRequest(
            user_id=user, profile="sandbox", reason="incident", justification=JUSTIFICATION, duration=duration
        )
    )
    runtime.pipeline.deliver(
        event.id
    )  # what the lazy listener (Lambda) or a worker thread does after the ack
    return event.id


def schedule(client: Any, event_id: str, step: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = client.get_schedule(
            Name=schedules.schedule_name(event_id, step), GroupName=GROUP
        )
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ResourceNotFoundException"
        return None
    return found


def at(found: dict[str, Any] | None) -> datetime:
    """The time of a stored `at(...)` schedule, in UTC."""
    assert found is not None and found["ScheduleExpressionTimezone"] == "UTC"
    expression = found["ScheduleExpression"]
    assert expression.startswith("at(") and expression.endswith(")")
    return datetime.fromisoformat(expression[3:-1]).replace(tzinfo=UTC)


def fire(client: Any, event_id: str, step: str, clock: ManualClock, *, late: float = 0.0) -> dict[str, int]:
    """EventBridge Scheduler firing the stored schedule: at its `at()` time (plus `late`, inside its 60-second
    window), the sweep function invoked with the schedule's own Input."""
    found = schedule(client, event_id, step)
    assert found is not None
    clock.set(max(clock.now(), at(found) + timedelta(seconds=late)))
    return lambda_handler.sweep_handler(json.loads(found["Target"]["Input"]), FiredContext())


def test_invoke_creates_two_one_time_schedules_at_the_right_utc_times(
    scheduler_api: Any, fake: FakeSlack, sqlite_store: SQLiteStore, policy: Policy, t0_clock: ManualClock
) -> None:
    runtime = lambda_runtime(fake, sqlite_store, policy, t0_clock)
    event_id = invoke(runtime)
    event = sqlite_store.get(event_id)
    assert event.outbox == ()  # the schedules step was owed with the invocation, and delivered
    assert event.expires_at == T0 + timedelta(hours=1)

    expire, warn = schedule(scheduler_api, event_id, "expire"), schedule(scheduler_api, event_id, "warn")
    # The whole minute whose 60-second window (Scheduler's precision) ends 10 s or more before the due time:
    # expiry 13:00:20 -> at(12:59:00); warning 15 min before it, 12:45:20 -> at(12:44:00).
    assert expire is not None and expire["ScheduleExpression"] == "at(2026-12-03T12:59:00)"
    assert warn is not None and warn["ScheduleExpression"] == "at(2026-12-03T12:44:00)"
    for found, step in ((expire, "expire"), (warn, "warn")):
        assert found["ScheduleExpressionTimezone"] == "UTC"
        assert found["ActionAfterCompletion"] == "DELETE"
        assert found["FlexibleTimeWindow"] == {"Mode": "OFF"}
        assert found["Target"]["Arn"] == SWEEP_ARN and found["Target"]["RoleArn"] == ROLE_ARN
        assert json.loads(found["Target"]["Input"]) == {
            "breakglass_schedule": {"event_id": event_id, "step": step}
        }
        due = event.expires_at - (timedelta(minutes=15) if step == "warn" else timedelta(0))
        assert at(found) + schedules.PRECISION <= due  # invoked before the due time, whenever in its window


def test_extend_moves_both_schedules_and_close_deletes_them(
    scheduler_api: Any, fake: FakeSlack, sqlite_store: SQLiteStore, policy: Policy, t0_clock: ManualClock
) -> None:
    runtime = lambda_runtime(fake, sqlite_store, policy, t0_clock)
    event_id = invoke(runtime)
    t0_clock.advance(timedelta(minutes=10))
    extended = runtime.service.extend(event_id, by="U0001", duration="30m", reason=JUSTIFICATION)
    assert extended.owes(OutboxKind.EXPIRY_SCHEDULES)  # in the same write as the new expiry
    runtime.pipeline.deliver_owed()
    assert extended.expires_at == T0 + timedelta(hours=1, minutes=30)
    assert at(schedule(scheduler_api, event_id, "expire")) == datetime(2026, 12, 3, 13, 29, tzinfo=UTC)
    assert at(schedule(scheduler_api, event_id, "warn")) == datetime(2026, 12, 3, 13, 14, tzinfo=UTC)
    assert len(scheduler_api.list_schedules(GroupName=GROUP)["Schedules"]) == 2  # moved, not added

    t0_clock.advance(timedelta(minutes=5))
    assert runtime.service.close(event_id, by="U0001", reason="Workers are healthy again").closed_now
    runtime.pipeline.deliver_owed()
    assert schedule(scheduler_api, event_id, "expire") is None
    assert schedule(scheduler_api, event_id, "warn") is None
    assert sqlite_store.get(event_id).outbox == ()


def test_the_warning_and_the_expiry_fire_at_their_time_and_a_sent_warning_is_scheduled_again(
    scheduler_api: Any,
    fake: FakeSlack,
    sqlite_store: SQLiteStore,
    policy: Policy,
    t0_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lambda_handler, "sleep", t0_clock.advance)  # the wait for the due time, on the clock
    runtime = lambda_runtime(fake, sqlite_store, policy, t0_clock)
    event_id = invoke(runtime)
    warn_at = T0 + timedelta(minutes=45)

    counts = fire(scheduler_api, event_id, "warn", t0_clock, late=30)  # 12:44:30, inside its window
    assert counts == {"warned": 1, "expired": 0, "stale": 0}
    warned = sqlite_store.get(event_id)
    assert warned.warned_at == warn_at  # waited for the due time, then warned at once
    assert warned.outbox == ()
    scheduler_api.delete_schedule(
        Name=schedules.schedule_name(event_id, "warn"), GroupName=GROUP
    )  # as AWS does

    # An extension after the warning owes a new warning: scheduled before the new expiry.
    extended = runtime.service.extend(event_id, by="U0001", duration="30m", reason=JUSTIFICATION)
    runtime.pipeline.deliver_owed()
    new_warn = at(schedule(scheduler_api, event_id, "warn"))
    assert t0_clock.now() < new_warn and new_warn + schedules.PRECISION <= extended.expires_at - timedelta(
        minutes=15
    )
    assert at(schedule(scheduler_api, event_id, "expire")) + schedules.PRECISION <= extended.expires_at

    # The expiry schedule fires at the start of its window: the sweep waits, then expires on the second.
    counts = fire(scheduler_api, event_id, "expire", t0_clock)
    assert counts == {"warned": 0, "expired": 1, "stale": 0}
    expired = sqlite_store.get(event_id)
    assert expired.status is Status.EXPIRED and expired.ended_at == extended.expires_at
    assert expired.outbox == ()  # announced, and both schedules deleted
    assert scheduler_api.list_schedules(GroupName=GROUP)["Schedules"] == []
    assert any("expired" in m.get("text", "") for m in fake.channel_messages("U0001"))


def test_a_stale_or_forged_firing_changes_nothing(
    scheduler_api: Any,
    fake: FakeSlack,
    sqlite_store: SQLiteStore,
    policy: Policy,
    t0_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(lambda_handler, "sleep", waits.append)
    runtime = lambda_runtime(fake, sqlite_store, policy, t0_clock)
    event_id = invoke(runtime)
    old_expiry = schedule(scheduler_api, event_id, "expire")
    assert old_expiry is not None
    # Extended where the schedules step was not owed (an event stored before `timed_by`, by a bot that owed
    # it only from Slack): nothing moved them.
    plain = sqlite_store.save(sqlite_store.get(event_id).updated(timed_by=None))
    assert plain.timed_by is None
    runtime.service.extend(event_id, by="U0001", duration="1h", reason=JUSTIFICATION)
    assert not sqlite_store.get(event_id).owes(OutboxKind.EXPIRY_SCHEDULES)
    runtime.pipeline.deliver(event_id)
    assert at(schedule(scheduler_api, event_id, "expire")) == at(old_expiry)  # not moved

    # The old expiry schedule fires before it was moved: the stored expiry is an hour later, nothing happens.
    t0_clock.set(at(old_expiry))
    payload = json.loads(old_expiry["Target"]["Input"])
    assert lambda_handler.sweep_handler(payload, FiredContext()) == {"warned": 0, "expired": 0, "stale": 1}
    # Anyone able to invoke the function cannot expire early, nor name another step or event.
    assert lambda_handler.sweep_handler(schedules.payload(event_id, "expire"), FiredContext())["expired"] == 0
    assert lambda_handler.sweep_handler(schedules.payload("0" * 16, "expire"), FiredContext())["stale"] == 1
    assert lambda_handler.sweep_handler(schedules.payload("not-an-id", "warn"), FiredContext())["stale"] == 1
    assert schedules.parse_payload({"breakglass_schedule": {"event_id": event_id, "step": "close"}}) is None
    assert waits == []
    assert sqlite_store.get(event_id).status is Status.ACTIVE
    # The stale firing owed the schedules step again: the expiry schedule is at the new time now, and the
    # event is timed by schedules from now on.
    assert at(schedule(scheduler_api, event_id, "expire")) == datetime(2026, 12, 3, 13, 59, tzinfo=UTC)
    assert sqlite_store.get(event_id).timed_by == "schedules"

    # A fired schedule may wait only the time the invocation has left (minus a margin for the revoke).
    t0_clock.set(sqlite_store.get(event_id).expires_at - timedelta(seconds=100))
    counts = lambda_handler.sweep_handler(payload, FiredContext(left_ms=60_000))
    assert counts == {"warned": 0, "expired": 0, "stale": 0} and waits == [30.0]
    assert sqlite_store.get(event_id).status is Status.ACTIVE  # the minute sweep expires it


def test_without_settings_or_outside_lambda_nothing_is_owed(
    scheduler_api: Any, fake: FakeSlack, sqlite_store: SQLiteStore, policy: Policy, t0_clock: ManualClock
) -> None:
    lambda_only = build_runtime(fake, sqlite_store, policy, t0_clock)  # Lambda, not configured
    assert lambda_only.pipeline.deps.schedules is None and lambda_only.service.timed_by is None
    event_id = invoke(lambda_only)
    assert scheduler_api.list_schedules(GroupName=GROUP)["Schedules"] == []
    assert not sqlite_store.get(event_id).owes(OutboxKind.EXPIRY_SCHEDULES)

    from bot.app import create_app, make_slack_client
    from tests.conftest import settings_for

    settings = settings_for(fake, **SCHEDULE_SETTINGS)  # gunicorn / Socket Mode: the in-process scheduler
    http = create_app(settings, sqlite_store, make_slack_client(settings), policy=policy, clock=t0_clock)
    assert http.pipeline.deps.schedules is None and http.service.timed_by is None


def test_settings_need_both_arns_well_formed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BREAKGLASS_SCHEDULER_TARGET_ARN", SWEEP_ARN)
    with pytest.raises(ConfigError, match="BREAKGLASS_SCHEDULER_ROLE_ARN is not set"):
        load_settings(need_slack=False, env_file=None)
    monkeypatch.setenv("BREAKGLASS_SCHEDULER_ROLE_ARN", "breakglass-scheduler")
    monkeypatch.setenv("BREAKGLASS_SCHEDULER_TARGET_ARN", "arn:aws:sqs:us-east-1:123456789012:queue")
    with pytest.raises(ConfigError) as raised:
        load_settings(need_slack=False, env_file=None)
    assert len(raised.value.problems) == 2
    monkeypatch.setenv("BREAKGLASS_SCHEDULER_ROLE_ARN", ROLE_ARN)
    monkeypatch.setenv("BREAKGLASS_SCHEDULER_TARGET_ARN", SWEEP_ARN)
    settings = load_settings(need_slack=False, env_file=None)
    configured = schedules.configured(settings)
    assert configured is not None and configured.settings == schedules.ScheduleSettings(SWEEP_ARN, ROLE_ARN)


def test_fire_at_always_comes_first_and_never_in_the_past() -> None:
    now = datetime(2026, 12, 3, 12, 0, 20, tzinfo=UTC)
    for seconds in (0, 1, 9, 10, 11, 20, 59, 60, 61, 119, 120, 3600, 3659):
        due = datetime(2026, 12, 3, 12, 10, tzinfo=UTC) + timedelta(seconds=seconds)
        when = schedules.fire_at(due, now)
        assert when.second == 0 and when.microsecond == 0
        assert when + schedules.PRECISION + schedules.HEADROOM <= due  # a cold start fits before the due time
        assert due < when + 2 * schedules.PRECISION + schedules.HEADROOM  # and the wait is under 2 min 10 s
    # due within two minutes: the next whole minute (late by at most the precision, like the minute sweep)
    assert schedules.fire_at(now + timedelta(seconds=50), now) == datetime(2026, 12, 3, 12, 1, tzinfo=UTC)


# -- on moto server, through AWS_ENDPOINT_URL_SCHEDULER, with IAM Identity Center --------------------------


@pytest.fixture
def server_scheduler(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SCHEDULER", aws.url)
    client = boto3.session.Session(region_name="us-east-1").client("scheduler", endpoint_url=aws.url)
    try:
        client.create_schedule_group(Name=GROUP)
    except ClientError as exc:  # one moto server per test session may hold it already
        assert exc.response["Error"]["Code"] == "ConflictException"
    return client


def test_on_moto_server_the_expiry_schedule_revokes_at_the_exact_time(
    aws: Aws,
    server_scheduler: Any,
    fake: FakeSlack,
    sqlite_store: SQLiteStore,
    t0_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lambda_handler, "sleep", t0_clock.advance)
    runtime = lambda_runtime(fake, sqlite_store, aws.policy(), t0_clock)
    event_id = invoke(runtime, duration="30m")
    assert aws.assigned() == [aws.users["U0001"]]
    expiry = schedule(server_scheduler, event_id, "expire")
    assert at(expiry) == datetime(2026, 12, 3, 12, 29, tzinfo=UTC)  # 12:30:20 due

    counts = fire(server_scheduler, event_id, "expire", t0_clock, late=59)  # the end of its window
    assert counts["expired"] == 1
    expired = sqlite_store.get(event_id)
    assert expired.status is Status.EXPIRED and expired.ended_at == T0 + timedelta(minutes=30)
    assert aws.assigned() == [] and aws.deny_of("U0001") is not None
    assert expired.access is not None and expired.access.sessions_denied_at is not None
    assert expired.access.sessions_denied_at - expired.expires_at <= timedelta(seconds=10)
    assert schedule(server_scheduler, event_id, "expire") is None
    assert schedule(server_scheduler, event_id, "warn") is None


def test_a_scheduler_that_fails_never_holds_back_the_record_and_is_retried(
    aws: Aws,
    server_scheduler: Any,
    fake: FakeSlack,
    sqlite_store: SQLiteStore,
    t0_clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SCHEDULER", f"http://127.0.0.1:{free_port()}")  # nobody listens
    runtime = lambda_runtime(fake, sqlite_store, aws.policy(), t0_clock)
    with caplog.at_level(logging.ERROR, logger="bot.schedules"):
        event_id = invoke(runtime)
    event = sqlite_store.get(event_id)
    assert [e.kind for e in event.outbox] == [OutboxKind.EXPIRY_SCHEDULES]  # only it is still owed
    assert event.audit_ts is not None and aws.assigned() == [aws.users["U0001"]]
    assert event.outbox_next_at is not None and event.outbox_next_at > t0_clock.now()  # backoff
    (line,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "EventBridge Scheduler refused the schedules" in line.getMessage()
    assert line.__dict__["action"] == "expiry_schedules" and line.__dict__["outcome"] == "retry"

    # Scheduler answers again: the next delivery (after the backoff) makes both schedules.
    monkeypatch.setenv("AWS_ENDPOINT_URL_SCHEDULER", aws.url)
    runtime.pipeline.deps.schedules = schedules.configured(runtime.settings)
    t0_clock.advance(timedelta(minutes=1))
    runtime.pipeline.deliver_owed()
    assert sqlite_store.get(event_id).outbox == ()
    assert at(schedule(server_scheduler, event_id, "expire")) == datetime(2026, 12, 3, 12, 59, tzinfo=UTC)
    assert schedule(server_scheduler, event_id, "warn") is not None


# -- gunicorn / Socket Mode: the in-process scheduler's exact-time job, the same deadline ------------------


def test_in_process_the_exact_time_job_revokes_within_the_deadline(
    aws: Aws, fake: FakeSlack, sqlite_store: SQLiteStore
) -> None:
    """No schedules outside Lambda: the embedded scheduler's `date` job expires the event at its time (real
    time, moved two seconds ahead), and the revoke follows in the same delivery."""
    from bot.app import create_app, make_slack_client
    from bot.clock import OffsetClock
    from tests.conftest import settings_for

    clock = OffsetClock()
    settings = settings_for(fake)
    runtime = create_app(
        settings, sqlite_store, make_slack_client(settings, timeout=5), policy=aws.policy(), clock=clock
    )
    assert runtime.pipeline.deps.schedules is None
    runtime.scheduler.start()
    try:
        event = sqlite_store.get(invoke(runtime, duration="900"))
        assert aws.assigned() == [aws.users["U0001"]]
        clock.advance(event.expires_at - clock.now() - timedelta(seconds=2))
        runtime.scheduler.track(event)  # as the next sweep does: the job moves to the new wall-clock time
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = sqlite_store.get(event.id)
            if done.access is not None and done.access.sessions_denied_at is not None:
                break
            time.sleep(0.1)
        assert done.status is Status.EXPIRED and done.ended_at is not None
        assert done.ended_at - done.expires_at < timedelta(seconds=2)  # the job, not a sweep 30 s later
        assert done.access is not None and done.access.assignment_deleted_at is not None
        assert done.access.sessions_denied_at is not None
        assert done.access.sessions_denied_at - done.expires_at <= timedelta(seconds=10)
        assert aws.assigned() == [] and aws.deny_of("U0001") is not None
    finally:
        runtime.shutdown(5)
