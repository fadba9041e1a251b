"""incident.io (API v2): incidents by id, reference (INC-123) or URL; on-call from schedules' current
shifts. Auth: ``Authorization: Bearer <INCIDENT_IO_API_KEY>``.

incident.io's public API has no endpoint that writes an incident's timeline, so :meth:`add_note` says so
(returns False) and the link lives in breakglass's audit message instead."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from bot.incidents.base import Incident, IncidentNotFound, IncidentUnreachable, JsonApi

DEFAULT_API_URL = "https://api.incident.io"
# Status categories of an incident that is over (incident_status.category).
ENDED = frozenset({"closed", "post-incident", "canceled", "declined", "merged"})
_URL_RE = re.compile(
    r"^https://app\.incident\.io/[A-Za-z0-9_-]+/incidents/([A-Za-z0-9-]{1,40})/?(?:[?#].*)?$"
)
_REF_RE = re.compile(r"^(?:INC-)?([0-9]{1,12})$", re.IGNORECASE)
_ID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")  # a ULID


def parse_reference(text: str) -> str | None:
    """What to ask incident.io for: its id (a ULID), a reference (INC-123, 123: the API's incident
    endpoint takes the numeric part) or an incident URL. None: not an incident.io reference."""
    text = text.strip()
    if m := _URL_RE.match(text):
        text = m.group(1)
    if m := _REF_RE.match(text):
        return m.group(1)
    if _ID_RE.match(text.upper()):
        return text.upper()
    return None


class IncidentIoProvider:
    name = "incident-io"
    label = "incident.io"

    def __init__(self, api_key: str, *, api_url: str = DEFAULT_API_URL) -> None:
        self.api = JsonApi(api_url, {"Authorization": f"Bearer {api_key}"}, label=self.label)

    def lookup(self, reference: str) -> Incident:
        key = parse_reference(reference)
        if key is None:
            raise IncidentNotFound(
                f"{reference!r} is not an incident.io incident: give its reference (INC-123) or URL"
            )
        return self.get(key)

    def get(self, incident_id: str) -> Incident:
        return self.api.incident(f"/v2/incidents/{incident_id}", incident_id, incident_of)

    def oncall_emails(self, schedules: Iterable[str], escalation_policies: Iterable[str]) -> frozenset[str]:
        emails: set[str] = set()
        for schedule in schedules:
            data = self.api.request("GET", f"/v2/schedules/{schedule}")
            for shift in (data.get("schedule") or {}).get("current_shifts") or []:
                email = ((shift or {}).get("user") or {}).get("email")
                if isinstance(email, str) and email:
                    emails.add(email.lower())
        return frozenset(emails)

    def add_note(self, incident_id: str, text: str) -> bool:
        return False


def incident_of(raw: Any) -> Incident:
    """An incident object of the API (also the one in a webhook's payload)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise IncidentUnreachable("incident.io answered an incident without an id")
    category = (raw.get("incident_status") or {}).get("category")
    return Incident(
        provider="incident-io",
        id=raw["id"],
        reference=str(raw.get("reference") or raw["id"]),
        title=str(raw.get("name") or raw["id"])[:200],
        url=raw.get("permalink") if isinstance(raw.get("permalink"), str) else None,
        resolved=category in ENDED,
    )
