"""Local HTTP fakes of PagerDuty's REST API v2 and incident.io's API v2, shaped by their public
documentation: they record every call, refuse a request without the right auth header (401, as the real
APIs do) and can be made unreachable (503) for the outage tests."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PD_TOKEN = "pd-test-token-0123456789"
PD_ACCEPT = "application/vnd.pagerduty+json;version=2"
IIO_KEY = "iio-test-key-0123456789"


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)  # when received


@dataclass
class _State:
    calls: list[Call] = field(default_factory=list)
    down: bool = False
    delay: float = 0.0  # seconds every answer waits (a slow tool)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _FakeApi:
    """One fake API on 127.0.0.1: subclasses answer `route(call)` with (status, body)."""

    def __init__(self) -> None:
        self.state = _State()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                call = Call(
                    self.command,
                    parsed.path,
                    urllib.parse.parse_qs(parsed.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    json.loads(raw) if raw else None,
                )
                with fake.state.lock:
                    fake.state.calls.append(call)
                if fake.state.delay:
                    time.sleep(fake.state.delay)
                if fake.state.down:
                    status, body = 503, {"error": "service unavailable"}
                elif not fake.authorized(call):
                    status, body = 401, fake.unauthorized()
                else:
                    status, body = fake.route(call)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    @property
    def calls(self) -> list[Call]:
        with self.state.lock:
            return list(self.state.calls)

    def calls_to(self, method: str, pattern: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and re.fullmatch(pattern, c.path)]

    def down(self, value: bool = True) -> None:
        self.state.down = value

    def slow(self, delay: float) -> None:
        """Every answer from now on waits `delay` seconds (0: answer at once again)."""
        self.state.delay = delay

    def __enter__(self) -> _FakeApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def authorized(self, call: Call) -> bool:
        raise NotImplementedError

    def unauthorized(self) -> Any:
        raise NotImplementedError

    def route(self, call: Call) -> tuple[int, Any]:
        raise NotImplementedError


class FakePagerDuty(_FakeApi):
    """`GET /incidents/{id or number}`, `GET /oncalls`, `POST /incidents/{id}/notes` (needs `From`)."""

    def __init__(self) -> None:
        super().__init__()
        self.incidents: dict[str, dict[str, Any]] = {}
        self.oncalls: list[
            dict[str, Any]
        ] = []  # {"user": {...}, "schedule": {"id"}, "escalation_policy": {"id"}}
        self.notes: list[tuple[str, str, str]] = []  # (incident id, From, content)

    def add_incident(self, id: str, number: int, title: str, status: str = "triggered") -> dict[str, Any]:
        incident = {
            "id": id,
            "type": "incident",
            "incident_number": number,
            "title": title,
            "summary": f"[#{number}] {title}",
            "status": status,
            "html_url": f"https://acme.pagerduty.com/incidents/{id}",
        }
        self.incidents[id] = incident
        return incident

    def put_on_call(self, email: str, *, schedule: str | None = None, policy: str = "PEP0001") -> None:
        self.oncalls.append(
            {
                "user": {"id": "PU" + str(len(self.oncalls)), "type": "user", "email": email},
                "schedule": {"id": schedule, "type": "schedule_reference"} if schedule else None,
                "escalation_policy": {"id": policy, "type": "escalation_policy_reference"},
                "escalation_level": 1,
            }
        )

    def authorized(self, call: Call) -> bool:
        return (
            call.headers.get("authorization") == f"Token token={PD_TOKEN}"
            and call.headers.get("accept") == PD_ACCEPT
        )

    def unauthorized(self) -> Any:
        return {"error": {"message": "Authentication failed", "code": 2006}}

    def _find(self, key: str) -> dict[str, Any] | None:
        if key in self.incidents:
            return self.incidents[key]
        return next((i for i in self.incidents.values() if str(i["incident_number"]) == key), None)

    def route(self, call: Call) -> tuple[int, Any]:
        not_found = (404, {"error": {"message": "Not Found", "code": 2100}})
        if call.method == "GET" and (m := re.fullmatch(r"/incidents/([^/]+)", call.path)):
            incident = self._find(m.group(1))
            return (200, {"incident": incident}) if incident else not_found
        if call.method == "POST" and (m := re.fullmatch(r"/incidents/([^/]+)/notes", call.path)):
            incident = self._find(m.group(1))
            if incident is None:
                return not_found
            if not call.headers.get("from"):
                return 400, {"error": {"message": "Invalid Input Provided", "code": 2001, "errors": ["From"]}}
            content = ((call.body or {}).get("note") or {}).get("content")
            self.notes.append((incident["id"], call.headers["from"], content))
            return 201, {"note": {"id": f"PN{len(self.notes)}", "content": content}}
        if call.method == "GET" and call.path == "/oncalls":
            schedules = set(call.query.get("schedule_ids[]", []))
            policies = set(call.query.get("escalation_policy_ids[]", []))
            found = [
                o
                for o in self.oncalls
                if (o["schedule"] and o["schedule"]["id"] in schedules)
                or o["escalation_policy"]["id"] in policies
            ]
            return 200, {"oncalls": found, "limit": 100, "offset": 0, "more": False, "total": None}
        return not_found


class FakeIncidentIo(_FakeApi):
    """`GET /v2/incidents/{id or numeric reference}`, `GET /v2/schedules/{id}`."""

    def __init__(self) -> None:
        super().__init__()
        self.incidents: dict[str, dict[str, Any]] = {}
        self.shifts: dict[str, list[str]] = {}  # schedule id -> emails on call now

    def add_incident(self, id: str, number: int, name: str, category: str = "active") -> dict[str, Any]:
        incident = {
            "id": id,
            "reference": f"INC-{number}",
            "name": name,
            "permalink": f"https://app.incident.io/acme/incidents/{number}",
            "incident_status": {"id": "01S", "name": category.title(), "category": category},
        }
        self.incidents[id] = incident
        return incident

    def authorized(self, call: Call) -> bool:
        return call.headers.get("authorization") == f"Bearer {IIO_KEY}"

    def unauthorized(self) -> Any:
        return {"type": "authentication_error", "status": 401, "errors": [{"message": "Unauthenticated"}]}

    def route(self, call: Call) -> tuple[int, Any]:
        not_found = (404, {"type": "not_found", "status": 404, "errors": [{"message": "Not found"}]})
        if call.method == "GET" and (m := re.fullmatch(r"/v2/incidents/([^/]+)", call.path)):
            key = m.group(1)
            incident = self.incidents.get(key) or next(
                (i for i in self.incidents.values() if i["reference"] == f"INC-{key}"), None
            )
            return (200, {"incident": incident}) if incident else not_found
        if call.method == "GET" and (m := re.fullmatch(r"/v2/schedules/([^/]+)", call.path)):
            emails = self.shifts.get(m.group(1))
            if emails is None:
                return not_found
            shifts = [{"user": {"id": f"U{n}", "email": e, "name": e}} for n, e in enumerate(emails)]
            return 200, {"schedule": {"id": m.group(1), "name": "Primary", "current_shifts": shifts}}
        return not_found


@contextmanager
def sample_pagerduty() -> Iterator[FakePagerDuty]:
    """A local PagerDuty with an open incident (PINC001, #1234) and a resolved one (PDONE01, #1200)."""
    with FakePagerDuty() as fake:
        fake.add_incident("PINC001", 1234, "Checkout is down")
        fake.add_incident("PDONE01", 1200, "Old outage", status="resolved")
        yield fake
