"""`DeliveryDeps`: everything an outbox handler may use. Handlers get this, never the engine: a handler
sends one owed step (a Slack message, an AWS grant) and records what it learned; claiming, leasing,
re-reading, backoff and the order of steps are the engine's (bot/delivery/engine.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from slack_sdk import WebClient

from bot.access import AccessProvider
from bot.clock import Clock
from bot.delivery.audit_channels import AuditChannels
from bot.delivery.lease import LeaseKeeper
from bot.directory import Directory
from bot.incidents import IncidentProvider, NoIncidents
from bot.policy import Policy
from store import BreakGlassEvent, Notice, Store

if TYPE_CHECKING:
    from bot.access import ReconcileReport
    from bot.audit_feed.sinks import AuditFeed
    from bot.schedules import ExpirySchedules


@dataclass
class DeliveryDeps:
    store: Store
    client: WebClient  # the Web API client (its retry handlers are bounded by the delivery's lease)
    policy: Policy
    clock: Clock
    access: AccessProvider  # AWS access: grants and revokes (bot/delivery/handlers/access.py)
    directory: Directory
    audit_channels: AuditChannels
    incidents: IncidentProvider = field(default_factory=NoIncidents)  # the incident tool's timeline notes
    leases: LeaseKeeper = field(
        default_factory=LeaseKeeper
    )  # renews locks a handler holds (assignment locks)
    # Keyword arguments for bot.access.activity.gather (tests inject its sleep and rate limiters).
    activity_options: dict[str, Any] = field(default_factory=dict)
    schedules: ExpirySchedules | None = None  # Lambda's one-time expiry schedules (bot/schedules.py)
    # Not the bot (`breakglass-admin`, which changes no AWS access): an event timed by schedules keeps its
    # schedules step owed for the bot's sweep (a bot process without `schedules`: the minute sweep times it)
    defer_schedules: bool = False
    # The OCSF audit feed (bot/audit_feed/sinks.py): set by bot.app when BREAKGLASS_AUDIT_FEED names sinks;
    # else `NoFeed`, so that bot.audit_feed is never imported (a Lambda cold start loads only what it needs)
    audit_feed: AuditFeed | NoFeed = field(default_factory=lambda: NoFeed())


class NoFeed:
    """The audit feed when it has no sinks: nothing is ever owed to it."""

    sinks: tuple[()] = ()

    def owe(self, event: BreakGlassEvent) -> BreakGlassEvent:
        return event

    def deliver_notices(self, now: datetime, *, limit: int = 100) -> int:
        return 0

    def repaired(self, report: ReconcileReport | None) -> None:
        return None

    def add_notices(self, notices: Iterable[Notice]) -> None:
        return None
