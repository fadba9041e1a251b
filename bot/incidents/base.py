"""The incident-provider contract: the incident as breakglass sees it, typed errors, the protocol, and
the small JSON-over-HTTPS client both tools' providers share (stdlib only; short timeouts, because an
invocation is checked inside Slack's 3-second answer)."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT = 1.5
"""Seconds an incident or on-call lookup may take inside an invocation (Slack waits 3 s for the answer)."""
NOTE_TIMEOUT = 10.0
"""Seconds a timeline note may take (it is an owed step, after the answer)."""


class Incident(BaseModel):
    """One incident of the tool, as looked up."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    provider: str
    id: str
    reference: str
    """What people call it: PagerDuty's incident number (#1234), incident.io's reference (INC-123)."""
    title: str
    url: str | None = None
    resolved: bool = False


class IncidentError(Exception):
    """An incident-tool call failed; ``message`` never contains a token."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class IncidentNotFound(IncidentError):
    """The tool has no such incident (or the reference is not one of its forms)."""


class IncidentUnreachable(IncidentError, ConnectionError):
    """The tool could not be asked (network, timeout, 5xx, 429, refused credentials). A ConnectionError,
    so an owed step that needs the tool is retried with backoff like any other unreachable service."""


class IncidentProvider(Protocol):
    name: str
    """``none``, ``pagerduty`` or ``incident-io`` (also the closer recorded when a resolve ends access)."""
    label: str
    """How people write the tool's name (PagerDuty, incident.io)."""

    def lookup(self, reference: str) -> Incident:
        """The incident a person typed: the tool's id, number or URL. Raises IncidentNotFound or
        IncidentUnreachable."""
        ...

    def get(self, incident_id: str) -> Incident:
        """The incident by its stored id (the sweep's poll)."""
        ...

    def oncall_emails(self, schedules: Iterable[str], escalation_policies: Iterable[str]) -> frozenset[str]:
        """Lower-cased email addresses of everyone on call now on any of them."""
        ...

    def add_note(self, incident_id: str, text: str) -> bool:
        """Write `text` on the incident's timeline; False when the tool's API has no way to."""
        ...


class JsonApi:
    """JSON requests to one tool's API with its auth header; errors become IncidentError subclasses."""

    def __init__(self, base_url: str, headers: dict[str, str], *, label: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = headers
        self.label = label

    def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = LOOKUP_TIMEOUT,
    ) -> dict[str, Any]:
        url = self.base_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        all_headers = {"Accept": "application/json", **self._headers, **(headers or {})}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=all_headers)  # noqa: S310 - http(s) only (bot.config)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:  # noqa: S310 - configured https URL
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise IncidentNotFound(f"{self.label} has no such resource ({path})") from None
            if exc.code in (401, 403):
                raise IncidentUnreachable(
                    f"{self.label} refused breakglass's credentials (HTTP {exc.code}): check the API token"
                ) from None
            if exc.code in (400, 422):
                raise IncidentNotFound(f"{self.label} refused the request (HTTP {exc.code})") from None
            raise IncidentUnreachable(f"{self.label} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise IncidentUnreachable(f"{self.label} could not be reached ({reason})") from None
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            raise IncidentUnreachable(f"{self.label} answered something that is not JSON") from None
        if not isinstance(parsed, dict):
            raise IncidentUnreachable(f"{self.label} answered an unexpected shape")
        return parsed

    def incident(self, path: str, incident_id: str, parse: Callable[[Any], Incident]) -> Incident:
        """``GET path`` → ``{"incident": {...}}`` parsed (both tools answer that shape); a 404 names the id."""
        try:
            data = self.request("GET", path)
        except IncidentNotFound:
            raise IncidentNotFound(f"{self.label} has no incident {incident_id}") from None
        return parse(data.get("incident"))


class TtlCache:
    """A small thread-safe cache of answers for `ttl` seconds (on-call lookups)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._items: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or self._clock() - item[0] >= self.ttl:
                return None
            return item[1]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            if len(self._items) > 1000:
                self._items.clear()
            self._items[key] = (self._clock(), value)
