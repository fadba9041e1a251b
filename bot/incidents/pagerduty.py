"""PagerDuty (REST API v2): incidents by id, number or URL; on-call by schedule and escalation policy;
incident notes on the timeline. Auth: ``Authorization: Token token=<PAGERDUTY_API_TOKEN>``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from bot.incidents.base import (
    NOTE_TIMEOUT,
    Incident,
    IncidentNotFound,
    IncidentUnreachable,
    JsonApi,
)

DEFAULT_API_URL = "https://api.pagerduty.com"
ACCEPT = "application/vnd.pagerduty+json;version=2"
_URL_RE = re.compile(r"^https://[A-Za-z0-9-]+\.pagerduty\.com/incidents/([A-Za-z0-9]{2,32})/?(?:[?#].*)?$")
_ID_RE = re.compile(r"^[A-Z0-9]{6,20}$")
MAX_ONCALL_PAGES = 3  # 300 on-call entries: ample for the schedules and escalation policies a profile names
_NUMBER_RE = re.compile(r"^#?([0-9]{1,12})$")


def parse_reference(text: str) -> str | None:
    """The path segment to ask PagerDuty for: an incident id (PT4KHLK), a number (1234, #1234; PagerDuty's
    incident endpoint takes either) or an incident URL. None: not a PagerDuty incident reference."""
    text = text.strip()
    if m := _URL_RE.match(text):
        return m.group(1)
    if m := _NUMBER_RE.match(text):
        return m.group(1)
    if _ID_RE.match(text) and not text.isdigit():
        return text
    return None


class PagerDutyProvider:
    name = "pagerduty"
    label = "PagerDuty"

    def __init__(self, token: str, *, api_url: str = DEFAULT_API_URL, from_email: str | None = None) -> None:
        self.api = JsonApi(
            api_url, {"Authorization": f"Token token={token}", "Accept": ACCEPT}, label=self.label
        )
        self.from_email = from_email

    def lookup(self, reference: str) -> Incident:
        key = parse_reference(reference)
        if key is None:
            raise IncidentNotFound(
                f"{reference!r} is not a PagerDuty incident: give its id (PT4KHLK), number (1234) or URL"
            )
        return self.get(key)

    def get(self, incident_id: str) -> Incident:
        return self.api.incident(f"/incidents/{incident_id}", incident_id, _incident)

    def oncall_emails(self, schedules: Iterable[str], escalation_policies: Iterable[str]) -> frozenset[str]:
        query = [("schedule_ids[]", s) for s in schedules]
        query += [("escalation_policy_ids[]", e) for e in escalation_policies]
        query += [("include[]", "users"), ("limit", "100")]
        emails: set[str] = set()
        offset = 0
        for _ in range(MAX_ONCALL_PAGES):  # bounded: this can run inside Slack's 3-second answer
            data = self.api.request("GET", "/oncalls", query=[*query, ("offset", str(offset))])
            for entry in data.get("oncalls") or []:
                email = ((entry or {}).get("user") or {}).get("email")
                if isinstance(email, str) and email:
                    emails.add(email.lower())
            if not data.get("more"):
                break
            offset += len(data.get("oncalls") or []) or 100
        return frozenset(emails)

    def add_note(self, incident_id: str, text: str) -> bool:
        if not self.from_email:
            return False
        self.api.request(
            "POST",
            f"/incidents/{incident_id}/notes",
            body={"note": {"content": text}},
            headers={"From": self.from_email},
            timeout=NOTE_TIMEOUT,
        )
        return True


def _incident(raw: Any) -> Incident:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise IncidentUnreachable("PagerDuty answered an incident without an id")
    number = raw.get("incident_number")
    return Incident(
        provider="pagerduty",
        id=raw["id"],
        reference=f"#{number}" if number is not None else raw["id"],
        title=str(raw.get("title") or raw.get("summary") or raw["id"])[:200],
        url=raw.get("html_url") if isinstance(raw.get("html_url"), str) else None,
        resolved=raw.get("status") == "resolved",
    )
