"""Incident tools: what an event's incident field links to (see README, "Incident tools").

The policy's ``incidents.provider`` chooses one (:func:`make_incident_provider`): ``none`` (free text),
``pagerduty`` (:class:`~bot.incidents.pagerduty.PagerDutyProvider`) or ``incident-io``
(:class:`~bot.incidents.incident_io.IncidentIoProvider`). Tokens, webhook secrets and API URLs come from
the environment (bot.config); none of them is ever logged. :mod:`bot.incidents.links` is what the use cases
call, :mod:`bot.incidents.webhooks` the endpoints, :mod:`bot.delivery.handlers.incidents` the outbox handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.incidents.base import (
    Incident,
    IncidentError,
    IncidentNotFound,
    IncidentProvider,
    IncidentUnreachable,
)
from bot.incidents.none import NoIncidents
from bot.incidents.policy import IncidentsPolicy, OncallRule

if TYPE_CHECKING:
    from bot.config import Settings

__all__ = [
    "Incident",
    "IncidentError",
    "IncidentNotFound",
    "IncidentProvider",
    "IncidentUnreachable",
    "IncidentsPolicy",
    "NoIncidents",
    "OncallRule",
    "make_incident_provider",
    "missing_settings",
]


def missing_settings(policy: IncidentsPolicy, settings: Settings) -> list[str]:
    """What the chosen provider needs from the environment but lacks (for ConfigError)."""
    if policy.provider == "pagerduty":
        need = [("PAGERDUTY_API_TOKEN", settings.pagerduty_api_token)]
        need.append(("PAGERDUTY_WEBHOOK_SECRET", settings.pagerduty_webhook_secret))
    elif policy.provider == "incident-io":
        need = [("INCIDENT_IO_API_KEY", settings.incident_io_api_key)]
        need.append(("INCIDENT_IO_WEBHOOK_SECRET", settings.incident_io_webhook_secret))
    else:
        return []
    return [
        f"{name} is not set, and the policy's incidents.provider is {policy.provider} (see README, Incident tools)"
        for name, value in need
        if value is None or not value.get_secret_value()
    ]


def make_incident_provider(policy: IncidentsPolicy, settings: Settings) -> IncidentProvider:
    if policy.provider == "pagerduty":
        from bot.incidents.pagerduty import PagerDutyProvider

        assert settings.pagerduty_api_token is not None
        return PagerDutyProvider(
            settings.pagerduty_api_token.get_secret_value(),
            api_url=settings.pagerduty_api_url,
            from_email=settings.pagerduty_from_email,
        )
    if policy.provider == "incident-io":
        from bot.incidents.incident_io import IncidentIoProvider

        assert settings.incident_io_api_key is not None
        return IncidentIoProvider(
            settings.incident_io_api_key.get_secret_value(), api_url=settings.incident_io_api_url
        )
    return NoIncidents()


def webhook_secrets(settings: Settings) -> dict[str, str | None]:
    return {
        "pagerduty": settings.pagerduty_webhook_secret.get_secret_value()
        if settings.pagerduty_webhook_secret
        else None,
        "incident-io": settings.incident_io_webhook_secret.get_secret_value()
        if settings.incident_io_webhook_secret
        else None,
    }
