"""The ``none`` incident provider: the incident field is free text, nothing is looked up."""

from __future__ import annotations

from collections.abc import Iterable

from bot.incidents.base import Incident, IncidentNotFound


class NoIncidents:
    name = "none"
    label = "no incident tool"

    def lookup(self, reference: str) -> Incident:
        raise IncidentNotFound("no incident tool is configured")

    def get(self, incident_id: str) -> Incident:
        raise IncidentNotFound("no incident tool is configured")

    def oncall_emails(self, schedules: Iterable[str], escalation_policies: Iterable[str]) -> frozenset[str]:
        return frozenset()

    def add_note(self, incident_id: str, text: str) -> bool:
        return False
