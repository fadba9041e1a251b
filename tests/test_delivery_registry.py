"""The delivery core's composition (bot/delivery/): every outbox kind has exactly one handler, the registry
refuses tables that leave one out or give one two, and a stopped engine leaves no thread behind."""

from __future__ import annotations

import threading
from enum import StrEnum

import pytest

from bot.delivery import handlers
from bot.delivery.handlers import (
    access,
    announcements,
    audit_feed,
    drift,
    evidence,
    extend,
    incidents,
    schedules,
    warn_refresh,
)
from bot.delivery.registry import Registry, RegistryError, Step
from store.model import OutboxKind
from store.tasks import TaskKind
from tests.conftest import Bot

TABLES = [
    announcements.HANDLERS,
    access.HANDLERS,
    evidence.HANDLERS,
    extend.HANDLERS,
    incidents.HANDLERS,
    schedules.HANDLERS,
    audit_feed.HANDLERS,
    warn_refresh.HANDLERS,
]


def test_every_outbox_kind_has_exactly_one_handler() -> None:
    registry = handlers.registry()
    assert all(kind in registry for kind in OutboxKind)
    assert sum(len(t) for t in TABLES) == len(OutboxKind)  # no kind in two tables
    assert set(registry.tasks) == set(TaskKind)


def test_a_kind_without_a_handler_is_refused() -> None:
    class MoreKinds(StrEnum):  # OutboxKind with a kind nobody handles yet
        AUDIT_POST = "audit_post"
        NEW_STEP = "new_step"

    with pytest.raises(RegistryError, match="without a handler: new_step"):
        Registry(*TABLES, tasks=drift.TASK_HANDLERS, kinds=MoreKinds)  # type: ignore[arg-type]
    without_dm = {k: v for k, v in announcements.HANDLERS.items() if k is not OutboxKind.DM_ENDED}
    tables = [without_dm, *TABLES[1:]]
    with pytest.raises(RegistryError, match="without a handler: dm_ended"):
        Registry(*tables, tasks=drift.TASK_HANDLERS)
    with pytest.raises(RegistryError, match="without a handler: task access_drift"):
        Registry(*TABLES, tasks={})


def test_a_kind_with_two_handlers_is_refused() -> None:
    twice = {OutboxKind.DM_ENDED: Step(lambda deps, event: {})}
    with pytest.raises(RegistryError, match="two handlers: dm_ended"):
        Registry(*TABLES, twice, tasks=drift.TASK_HANDLERS)


def test_the_registry_knows_which_kinds_go_to_the_audit_channel() -> None:
    registry = handlers.registry()
    assert OutboxKind.AUDIT_POST in registry.audit_channel_kinds
    assert OutboxKind.AUDIT_POST not in registry.needs_audit_root
    assert {OutboxKind.EXTEND_THREAD, OutboxKind.ACTIVITY_DIGEST} <= registry.needs_audit_root
    assert not {OutboxKind.DM_INVOKED, OutboxKind.ACCESS_REVOKE} & registry.audit_channel_kinds
    assert registry.renders_state == {
        OutboxKind.AUDIT_UPDATE,
        OutboxKind.AUDIT_FALLBACK,
        OutboxKind.ACTIVITY_DIGEST,
        OutboxKind.WARN_DM_REFRESH,
    }


def test_shutdown_stops_the_delivery_workers_and_the_lease_keeper(bot: Bot) -> None:
    pipeline = bot.runtime.pipeline
    renewals: list[int] = []

    def renew() -> bool:  # a lease held until shutdown
        renewals.append(1)
        return True

    pipeline.deps.leases.add("held", renew)
    assert pipeline.deps.leases.running
    bot.runtime.shutdown(5)
    assert not pipeline.deps.leases.running
    assert not any(t.is_alive() for t in pipeline._workers)
    count = len(renewals)
    threading.Event().wait(pipeline.deps.leases.every.total_seconds() + 0.5)
    assert len(renewals) == count  # nothing renews after shutdown
