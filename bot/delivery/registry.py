"""The handler registry: which handler sends each outbox kind, checked complete.

A handler is `def handler(deps: DeliveryDeps, event: BreakGlassEvent) -> Fields`: it sends one owed step,
rendering the event as stored now, and returns event fields to record (usually `{}`; a field already set is
kept, a tuple field such as `dms` gains the new items: `BreakGlassEvent.recorded`); it raises on failure
(the step stays owed and is retried with backoff). Each subject module of `bot.delivery.handlers` exports a
`HANDLERS` table of `Step`s (and `TASK_HANDLERS` for owed tasks outside any event, store.tasks); `bot.delivery.handlers.registry()` joins them into one `Registry`, which refuses
a kind registered twice and any `OutboxKind` without a handler, and the engine is handed that registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.delivery.deps import DeliveryDeps
from store import BreakGlassEvent
from store.model import OutboxKind
from store.tasks import OwedTask, TaskKind

Fields = dict[str, Any]
Handler = Callable[[DeliveryDeps, BreakGlassEvent], Fields]
TaskHandler = Callable[[DeliveryDeps, OwedTask], None]


@dataclass(frozen=True)
class Step:
    """How one outbox kind is delivered."""

    send: Handler
    # Sent to the event's audit channel: a send Slack refuses for good there owes an audit fallback, and
    # (every kind but the root post itself) waits while the root audit message is owed.
    audit_channel: bool = False
    # Renders the whole event: one send at version V satisfies every entry of its kind owed at <= V.
    renders_state: bool = False


@dataclass(frozen=True)
class TaskStep:
    """How one kind of owed task outside any event (store.tasks) is delivered."""

    send: TaskHandler


class RegistryError(Exception):
    """The handler tables do not give every outbox kind exactly one handler."""


class Registry:
    def __init__(
        self,
        *tables: Mapping[OutboxKind, Step],
        tasks: Mapping[TaskKind, TaskStep],
        kinds: type[OutboxKind] = OutboxKind,
        task_kinds: type[TaskKind] = TaskKind,
    ) -> None:
        steps: dict[OutboxKind, Step] = {}
        for table in tables:
            twice = sorted(k.value for k in steps.keys() & table.keys())
            if twice:
                raise RegistryError(f"outbox kinds with two handlers: {', '.join(twice)}")
            steps |= table
        missing = sorted(k.value for k in kinds if k not in steps)
        missing += sorted(f"task {k.value}" for k in task_kinds if k not in tasks)
        if missing:
            raise RegistryError(f"outbox kinds without a handler: {', '.join(missing)}")
        self._steps = steps
        self.tasks: dict[TaskKind, TaskStep] = dict(tasks)
        self.audit_channel_kinds = frozenset(k for k, s in steps.items() if s.audit_channel)
        self.needs_audit_root = self.audit_channel_kinds - {OutboxKind.AUDIT_POST}
        self.renders_state = frozenset(k for k, s in steps.items() if s.renders_state)

    def __getitem__(self, kind: OutboxKind) -> Step:
        return self._steps[kind]

    def __contains__(self, kind: object) -> bool:
        return kind in self._steps

    def replace(self, kind: OutboxKind, send: Handler) -> Handler:
        """Swap the handler of `kind` (tests only: e.g. a slow send); returns the old one."""
        old = self._steps[kind]
        self._steps[kind] = Step(send, audit_channel=old.audit_channel, renders_state=old.renders_state)
        return old.send
