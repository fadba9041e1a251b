"""The pretend incident tool of the local simulation (`breakglass-bot try`): every reference names an
open incident until the page resolves it, which then goes through the same resolve path as a webhook."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from bot.incidents.base import Incident, IncidentNotFound


class LocalIncidents:
    name = "local"
    label = "the simulated incident tool"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.resolved: set[str] = set()
        self.notes: list[tuple[str, str]] = []  # (incident id, text)

    @staticmethod
    def key(reference: str) -> str:
        key = reference.strip().upper()
        if not key or len(key) > 64 or any(c.isspace() for c in key):
            raise IncidentNotFound(f"{reference!r} is not an incident reference (e.g. INC-42)")
        return key

    def lookup(self, reference: str) -> Incident:
        return self.get(self.key(reference))

    def get(self, incident_id: str) -> Incident:
        with self._lock:
            resolved = incident_id in self.resolved
        return Incident(
            provider=self.name,
            id=incident_id,
            reference=incident_id,
            title=f"Simulated incident {incident_id}",
            resolved=resolved,
        )

    def resolve(self, reference: str) -> str:
        key = self.key(reference)
        with self._lock:
            self.resolved.add(key)
        return key

    def oncall_emails(self, schedules: Iterable[str], escalation_policies: Iterable[str]) -> frozenset[str]:
        return frozenset()

    def add_note(self, incident_id: str, text: str) -> bool:
        with self._lock:
            self.notes.append((incident_id, text))
        return True
