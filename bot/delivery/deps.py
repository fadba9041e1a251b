"""`DeliveryDeps`: everything an outbox handler may use. Handlers get this, never the engine: a handler
sends one owed step (a Slack message, an AWS grant) and records what it learned; claiming, leasing,
re-reading, backoff and the order of steps are the engine's (bot/delivery/engine.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from slack_sdk import WebClient

from bot.access import AccessProvider
from bot.clock import Clock
from bot.delivery.audit_channels import AuditChannels
from bot.delivery.lease import LeaseKeeper
from bot.directory import Directory
from bot.incidents import IncidentProvider, NoIncidents
from bot.policy import Policy
from store import Store

if TYPE_CHECKING:
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
