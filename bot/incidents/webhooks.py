"""Incident-tool webhooks: verified on the raw body before anything is parsed, replays ignored across
replicas (a claim in the store per delivery id), resolves handed to :class:`bot.incidents.links.IncidentLinks`.

* PagerDuty v3: ``X-PagerDuty-Signature: v1=<hex HMAC-SHA256 of the body>``, comma-separated during secret
  rotation (any one matching is enough); a replay is the same ``event.id``.
* incident.io (Svix): ``webhook-id``, ``webhook-timestamp`` (Unix seconds, within 5 minutes of now) and
  ``webhook-signature`` (space-separated ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``) with the
  ``whsec_<base64>`` secret; a replay is the same ``webhook-id``.

Unsigned, forged or stale → 401; unknown event types → 200, ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.incidents.base import IncidentError
from store import StoreError

if TYPE_CHECKING:
    from bot.incidents.links import IncidentLinks

log = logging.getLogger(__name__)

PATHS = {"/webhooks/pagerduty": "pagerduty", "/webhooks/incident-io": "incident-io"}
TOLERANCE = timedelta(minutes=5)
REPLAY_WINDOW = timedelta(days=3)  # PagerDuty and Svix retry for about a day
CLAIM_HOLD = timedelta(minutes=2)
MAX_BODY = 256 * 1024


@dataclass(frozen=True)
class Delivery:
    id: str
    event_type: str
    incident_id: str | None
    resolved: bool


class Unverified(Exception):
    pass


def verify_pagerduty(body: bytes, headers: dict[str, str], secret: str) -> None:
    header = headers.get("x-pagerduty-signature", "")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    given = [part.strip()[3:] for part in header.split(",") if part.strip().startswith("v1=")]
    if not any(hmac.compare_digest(expected, sig) for sig in given):
        raise Unverified("missing or wrong X-PagerDuty-Signature")


def svix_key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise Unverified("INCIDENT_IO_WEBHOOK_SECRET is not a whsec_<base64> secret") from None


def svix_signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify_svix(body: bytes, headers: dict[str, str], secret: str, now: datetime) -> None:
    msg_id, timestamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not msg_id or not timestamp.isdigit():
        raise Unverified("missing webhook-id or webhook-timestamp")
    if abs(now.timestamp() - int(timestamp)) > TOLERANCE.total_seconds():
        raise Unverified("webhook-timestamp is more than 5 minutes from now")
    expected = svix_signature(svix_key(secret), msg_id, timestamp, body)
    given = [p.split(",", 1)[1] for p in headers.get("webhook-signature", "").split() if p.startswith("v1,")]
    if not any(hmac.compare_digest(expected, sig) for sig in given):
        raise Unverified("missing or wrong webhook-signature")


def parse_pagerduty(payload: dict[str, Any]) -> Delivery:
    event = payload.get("event") or {}
    data = event.get("data") or {}
    event_type = str(event.get("event_type") or "")
    incident = data.get("id") if data.get("type") in ("incident", None) else None
    return Delivery(
        id=str(event.get("id") or ""),
        event_type=event_type,
        incident_id=incident if isinstance(incident, str) else None,
        resolved=event_type == "incident.resolved",
    )


def parse_incident_io(payload: dict[str, Any], msg_id: str) -> Delivery:
    from bot.incidents.incident_io import incident_of  # the provider's module: loaded by its first webhook

    event_type = str(payload.get("event_type") or "")
    body = payload.get(event_type) if event_type.startswith("public_incident.") else None
    raw = (body or {}).get("incident") if isinstance(body, dict) else None
    try:
        incident = incident_of(raw) if raw is not None else None
    except IncidentError:
        incident = None
    return Delivery(
        id=msg_id,
        event_type=event_type,
        incident_id=incident.id if incident else None,
        resolved=bool(incident and incident.resolved),
    )


class IncidentWebhooks:
    """``POST /webhooks/pagerduty`` and ``POST /webhooks/incident-io`` for every runtime: (status, body)."""

    def __init__(self, links: IncidentLinks, secrets: dict[str, str | None]) -> None:
        self.links = links
        self._secrets = secrets

    def handle(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        provider = PATHS.get(path.rstrip("/"))
        if provider is None or provider != self.links.provider.name:
            return 404, {"error": "not found"}
        if len(body) > MAX_BODY:
            return 413, {"error": "body too large"}
        headers = {k.lower(): v for k, v in headers.items()}
        secret = self._secrets.get(provider)
        now = self.links.clock.now()
        try:
            if not secret:
                raise Unverified("no webhook secret is configured for " + provider)
            if provider == "pagerduty":
                verify_pagerduty(body, headers, secret)
            else:
                verify_svix(body, headers, secret, now)
        except Unverified as exc:
            log.warning(
                "refused a %s webhook: %s", provider, exc, extra={"action": "webhook", "outcome": "refused"}
            )
            return 401, {"error": str(exc)}
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except ValueError:
            return 400, {"error": "body is not a JSON object"}
        if provider == "pagerduty":
            delivery = parse_pagerduty(payload)
        else:
            delivery = parse_incident_io(payload, headers.get("webhook-id", ""))
        if not delivery.resolved or delivery.incident_id is None:
            return 200, {"status": "ignored", "event_type": delivery.event_type}
        name = f"webhook:{provider}:{delivery.id or hashlib.sha256(body).hexdigest()}"
        store = self.links.store
        try:
            if not store.claim(name, now=now, hold=CLAIM_HOLD):
                return 200, {"status": "duplicate"}
            closed = self.links.incident_resolved(delivery.incident_id)
            store.finish_claim(name, until=now + REPLAY_WINDOW)
        except StoreError as exc:  # the tool retries a failed delivery; the claim's lease runs out first
            log.error(
                "incident webhook not processed: %s", exc, extra={"action": "webhook", "outcome": "error"}
            )
            return 503, {"error": "the store is unavailable; retry"}
        return 200, {"status": "ok", "events": closed}
