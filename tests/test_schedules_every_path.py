"""Every change to an event's end owes its schedules step (#20's leftover): whoever makes it.

An event timed by one-time EventBridge Scheduler schedules (`timed_by="schedules"`, Lambda) owes
`EXPIRY_SCHEDULES` in the same write as each change of its end; the store adds it (`store.base.retimed`), so
Slack, `breakglass-admin close`/`extend`, an incident resolved in the incident tool and the sweep cannot
forget it. Checked three ways:

* the enumeration: every `Store` method is classified, and only `create`, `extend`, `close` and `expire`
  can change `status` or `expires_at` (`save` refuses both); on every backend each of them owes the step;
* each use-case path on a Lambda runtime with moto's Scheduler: the write owes the step, and the bot's next
  minute sweep leaves the schedules exactly as the stored event says (moved, or deleted);
* `breakglass-admin extend` and `close` on SQLite and DynamoDB (moto): the CLI announces, changes no AWS
  access, leaves the step owed, and the bot's sweep moves, then deletes, the schedules.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import admin, lambda_handler, schedules
from bot.app import BreakglassApp
from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from store import BreakGlassEvent, InvalidTransition, Status, Store
from store.base import EVENT_READS
from store.base import Store as StoreProtocol
from store.dynamodb import DynamoDBStore
from store.model import IncidentLink, OutboxKind
from store.sqlite import SQLiteStore
from tests import test_schedules
from tests.conftest import TEST_POLICY
from tests.harness import BOT_TOKEN, SIGNING_SECRET
from tests.store_fixtures import BACKENDS, HOUR, T0, make_event, open_test_store
from tests.test_schedules import (
    GROUP,
    JUSTIFICATION,
    FiredContext,
    at,
    invoke,
    lambda_runtime,
    schedule,
)

pytest_plugins = ["tests.store_fixtures"]

scheduler_api = test_schedules.scheduler_api  # the fixture: moto's in-process Scheduler with the group

# -- the enumeration ------------------------------------------------------------------------------------

# What each `Store` method does to events. A new method fails `test_every_store_method_is_classified` until
# it is placed here; one that can change an event's end belongs in END_CHANGES and must owe the step.
END_CHANGES = {"create", "extend", "close", "expire"}
KEEPS_THE_END = {"save"}  # refuses a change of status or expires_at (check_save)
READS = {
    *EVENT_READS,
    "list_tasks",
    "list_notices",
    "get_notice",
    "day_chain",
    "ping",
}
NO_EVENT = {  # claims, owed tasks, notices, the day chain, the connection: no event is written
    "claim",
    "renew_claim",
    "finish_claim",
    "owe_task",
    "finish_task",
    "add_notice",
    "update_notice",
    "link_day",
    "disconnect",
}


def test_every_store_method_is_classified() -> None:
    methods = {
        name for name, _ in inspect.getmembers(StoreProtocol, inspect.isfunction) if not name.startswith("_")
    }
    classified = END_CHANGES | KEEPS_THE_END | READS | NO_EVENT
    assert methods - classified == set(), "classify the new Store method(s) above"
    assert classified - methods == set()
    # and on the model, the only transitions that move the end are the ones those store methods apply
    moving = {"close", "expire", "extend"}
    event = make_event(now=T0)
    assert {name for name in moving if callable(getattr(event, name))} == moving


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_test_store(request.param, request, tmp_path) as opened:
        yield opened


def owed_schedules(event: BreakGlassEvent) -> list[int]:
    """The versions at which `event` owes its schedules step."""
    return [e.version for e in event.outbox if e.kind is OutboxKind.EXPIRY_SCHEDULES]


def test_each_change_of_the_end_owes_the_schedules_step_on_every_backend(store: Store) -> None:
    timed = store.create(make_event(now=T0, timed_by="schedules"))
    assert owed_schedules(timed) == [1]  # created: the schedules are made
    extended = store.extend(
        timed.id,
        by="operator:alice",
        duration=HOUR,
        reason=JUSTIFICATION,
        now=T0 + timedelta(minutes=5),
        seen=0,
        max_total=4 * HOUR,
        outbox=[OutboxKind.AUDIT_UPDATE],
    )
    # owed at the new version, after the steps the writer owed (the announcements come first)
    assert extended.owed_kinds[-1] is OutboxKind.EXPIRY_SCHEDULES and owed_schedules(extended) == [1, 2]
    assert store.get(timed.id) == extended

    # `save` can move neither the end nor the status: no path around the step
    for sneaked in ({"expires_at": extended.expires_at + HOUR}, {"status": Status.EXPIRED}):
        with pytest.raises(InvalidTransition):
            store.save(extended.model_copy(update=sneaked))  # (the model itself refuses it as well)
    warned = store.save(extended.updated(warned_at=T0 + timedelta(minutes=6)))
    assert owed_schedules(warned) == [1, 2]  # a save of other fields owes nothing new

    closed = store.close(
        timed.id,
        by="U0IC",
        reason="incident over",
        now=T0 + timedelta(minutes=7),
        outbox=[OutboxKind.ACCESS_REVOKE],
    )
    this_write = [e.kind for e in closed.outbox if e.version == closed.version]
    assert this_write == [OutboxKind.ACCESS_REVOKE, OutboxKind.EXPIRY_SCHEDULES]  # the revoke first
    assert owed_schedules(closed) == [1, 2, 4]

    other = store.create(make_event(invoker="bob@example.com", now=T0, timed_by="schedules"))
    expired = store.expire(other.id, now=T0 + 2 * HOUR)
    assert expired.status is Status.EXPIRED and owed_schedules(expired) == [1, 2]

    # an event the in-process scheduler times (gunicorn, Socket Mode) owes no such step
    plain = store.create(make_event(invoker="carol@example.com", now=T0))
    plain = store.extend(
        plain.id, by="U0CAROL", duration=HOUR, reason=JUSTIFICATION, now=T0, seen=0, max_total=4 * HOUR
    )
    assert owed_schedules(store.close(plain.id, by="U0CAROL", reason="done", now=T0)) == []


# -- every use-case path on a Lambda runtime with moto's Scheduler ----------------------------------------


def matches_schedules(client: Any, event: BreakGlassEvent, warn_before: timedelta) -> None:
    """The event's two schedules are what the event as stored says: none once it ended or warned, else
    in the whole minute whose window ends before the due time."""
    for step, due in schedules.due_times(event, warn_before).items():
        found = schedule(client, event.id, step)
        if due is None:
            assert found is None, step
        else:
            assert found is not None, step
            assert (
                at(found) + schedules.PRECISION + schedules.HEADROOM
                <= due
                < at(found) + 3 * schedules.PRECISION
            )


@pytest.fixture
def admin_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake: FakeSlack
) -> Callable[..., tuple[int, str]]:
    """`breakglass-admin` as an operator runs it: Slack settings and the bot's policy, no scheduler settings
    and no AWS access beyond the store (docs/iam-policy-admin.json). Returns a runner: (exit code, stderr)."""
    monkeypatch.chdir(tmp_path)  # no .env from the working tree
    policy_file = tmp_path / "policy.yml"
    policy_file.write_text(TEST_POLICY)
    for name, value in {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": fake.url,
        "BREAKGLASS_AUDIT_CHANNEL": "C0AUDIT",
        "BREAKGLASS_POLICY": str(policy_file),
        "SLACK_TEAM_ID": "T0001",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("SLACK_APP_TOKEN", "BREAKGLASS_SCHEDULER_TARGET_ARN", "BREAKGLASS_SCHEDULER_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)

    def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
        code = admin.main(list(argv))
        return code, capsys.readouterr().err

    return run


def store_url(store: Store) -> str:
    if isinstance(store, SQLiteStore):
        return f"sqlite:///{store.path}"
    assert isinstance(store, DynamoDBStore)
    return f"dynamodb://{store.table}"


def bot_sweep(clock: ManualClock) -> None:
    """The bot's next minute sweep on Lambda (EventBridge's minute rule), after any backoff ran out."""
    clock.set(max(clock.now(), datetime.now(UTC)) + timedelta(seconds=30))
    lambda_handler.sweep_handler({"source": "aws.events"}, FiredContext())


@pytest.fixture
def lambda_world(
    scheduler_api: Any, fake: FakeSlack, policy: Policy, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[BreakglassApp, Store, ManualClock]]:
    backend = getattr(request, "param", "sqlite")
    with open_test_store(backend, request, tmp_path) as opened:
        clock = ManualClock(datetime.now(UTC).replace(microsecond=0))  # the admin CLI reads the real clock
        lambda_handler.reset()
        yield lambda_runtime(fake, opened, policy, clock), opened, clock
        lambda_handler.reset()


Change = Callable[[BreakglassApp, Store, ManualClock, str], None]


def slack_extend(runtime: BreakglassApp, store: Store, clock: ManualClock, event_id: str) -> None:
    runtime.service.extend(event_id, by="U0001", duration="30m", reason=JUSTIFICATION)


def slack_close(runtime: BreakglassApp, store: Store, clock: ManualClock, event_id: str) -> None:
    assert runtime.service.close(event_id, by="U0001", reason="Workers are healthy again").closed_now


def commander_close(runtime: BreakglassApp, store: Store, clock: ManualClock, event_id: str) -> None:
    assert runtime.service.close(event_id, by="U0IC", reason="The incident is over").closed_now


def incident_resolved(runtime: BreakglassApp, store: Store, clock: ManualClock, event_id: str) -> None:
    links = runtime.service.incidents
    link = IncidentLink(provider=links.provider.name, id="P123", reference="INC-1")
    store.save(store.get(event_id).updated(incident_link=link))
    assert links.incident_resolved("P123") == 1  # the resolve webhook's (and the poll's) use case


def sweep_expiry(runtime: BreakglassApp, store: Store, clock: ManualClock, event_id: str) -> None:
    clock.set(store.get(event_id).expires_at)
    assert runtime.service.expire(event_id) is not None  # what the minute sweep and a fired schedule call


PATHS: dict[str, Change] = {
    "slack-extend": slack_extend,
    "slack-close": slack_close,
    "commander-close": commander_close,
    "incident-resolved": incident_resolved,
    "sweep-expiry": sweep_expiry,
}


@pytest.mark.parametrize("path", PATHS)
def test_every_path_that_changes_the_end_owes_the_step_and_the_bot_keeps_the_schedules(
    path: str, lambda_world: tuple[BreakglassApp, Store, ManualClock], scheduler_api: Any
) -> None:
    runtime, store, clock = lambda_world
    event_id = invoke(runtime)
    before = store.get(event_id)
    assert before.timed_by == "schedules" and before.outbox == ()
    matches_schedules(scheduler_api, before, runtime.service.policy.warn_before)

    PATHS[path](runtime, store, clock, event_id)
    changed = store.get(event_id)
    assert (changed.status, changed.expires_at) != (before.status, before.expires_at)
    assert changed.owes(OutboxKind.EXPIRY_SCHEDULES), f"{path} changed the end and owes no schedules step"

    runtime.pipeline.deliver(event_id)  # after the ack (Lambda's lazy listener)
    done = store.get(event_id)
    assert done.outbox == ()
    matches_schedules(scheduler_api, done, runtime.service.policy.warn_before)
    if done.status.ended:
        assert scheduler_api.list_schedules(GroupName=GROUP)["Schedules"] == []


# -- breakglass-admin extend and close ----------------------------------------------------------------------


@pytest.mark.parametrize("lambda_world", ["sqlite", "dynamodb-moto"], indirect=True)
def test_admin_extend_and_close_owe_the_step_and_the_bots_sweep_moves_then_deletes_the_schedules(
    lambda_world: tuple[BreakglassApp, Store, ManualClock],
    scheduler_api: Any,
    admin_env: Callable[..., tuple[int, str]],
    capsys: pytest.CaptureFixture[str],
    fake: FakeSlack,
) -> None:
    runtime, store, clock = lambda_world
    warn_before = runtime.service.policy.warn_before
    event_id = invoke(runtime)
    invoked = store.get(event_id)
    old_expiry = at(schedule(scheduler_api, event_id, "expire"))
    url = store_url(store)

    code, err = admin_env(
        capsys,
        "--store",
        url,
        "extend",
        event_id,
        "--duration",
        "30m",
        "--reason",
        JUSTIFICATION,
        "--operator",
        "alice",
    )
    assert code == 0, err
    extended = store.get(event_id)
    assert extended.expires_at == invoked.expires_at + timedelta(minutes=30)
    # announced at once; the schedules step owed in the same write, left for the bot (no AWS access here)
    assert extended.owed_kinds == (OutboxKind.EXPIRY_SCHEDULES,)
    assert "its next sweep does it" in err
    assert at(schedule(scheduler_api, event_id, "expire")) == old_expiry
    assert any("operator:alice" in m.get("text", "") for m in fake.thread("C0AUDIT", invoked.audit_ts or ""))

    bot_sweep(clock)
    moved = store.get(event_id)
    assert moved.outbox == () and moved.status is Status.ACTIVE
    assert at(schedule(scheduler_api, event_id, "expire")) == old_expiry + timedelta(minutes=30)
    matches_schedules(scheduler_api, moved, warn_before)
    assert len(scheduler_api.list_schedules(GroupName=GROUP)["Schedules"]) == 2  # moved, not added

    code, err = admin_env(
        capsys, "--store", url, "close", event_id, "--reason", "incident over", "--operator", "alice"
    )
    assert code == 0, err
    closed = store.get(event_id)
    assert closed.status is Status.CLOSED and closed.owed_kinds == (OutboxKind.EXPIRY_SCHEDULES,)
    assert len(scheduler_api.list_schedules(GroupName=GROUP)["Schedules"]) == 2  # not yet: the bot's to do

    bot_sweep(clock)
    assert store.get(event_id).outbox == ()
    assert (
        schedule(scheduler_api, event_id, "expire") is None
        and schedule(scheduler_api, event_id, "warn") is None
    )
    assert scheduler_api.list_schedules(GroupName=GROUP)["Schedules"] == []


@pytest.mark.parametrize("lambda_world", ["sqlite"], indirect=True)
def test_admin_without_slack_leaves_every_step_owed_for_the_bot(
    lambda_world: tuple[BreakglassApp, Store, ManualClock],
    scheduler_api: Any,
    admin_env: Callable[..., tuple[int, str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime, store, clock = lambda_world
    event_id = invoke(runtime)
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    code, err = admin_env(
        capsys, "--store", store_url(store), "close", event_id, "--reason", "done", "--operator", "bob"
    )
    assert code == 0, err
    closed = store.get(event_id)
    assert closed.owes(OutboxKind.EXPIRY_SCHEDULES) and closed.owes(OutboxKind.AUDIT_UPDATE)
    bot_sweep(clock)
    assert store.get(event_id).outbox == ()
    assert scheduler_api.list_schedules(GroupName=GROUP)["Schedules"] == []
