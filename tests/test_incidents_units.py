"""Incident tools, unit level: references each tool accepts, the policy's cross-checks, the settings
(required with a provider, redacted as secrets), the stored link on DynamoDB, and the webhook verifiers."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from bot.config import Settings
from bot.incidents import IncidentsPolicy, missing_settings
from bot.incidents.incident_io import parse_reference as iio_ref
from bot.incidents.pagerduty import parse_reference as pd_ref
from bot.incidents.webhooks import Unverified, verify_pagerduty, verify_svix
from bot.policy import PolicyError, parse_policy
from store.dynamodb import _de, _ser, from_item, to_item
from store.model import BreakGlassEvent, IncidentLink


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("PT4KHLK", "PT4KHLK"),
        ("1234", "1234"),
        ("#1234", "1234"),
        ("https://acme.pagerduty.com/incidents/Q1W2E3R4T5", "Q1W2E3R4T5"),
        ("https://acme.pagerduty.com/incidents/PT4KHLK?foo=1", "PT4KHLK"),
        ("https://evil.example/incidents/PT4KHLK", None),
        ("../oncalls", None),
        ("pt4khlk", None),
    ],
)
def test_pagerduty_references(text: str, key: str | None) -> None:
    assert pd_ref(text) == key


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("INC-123", "123"),
        ("inc-7", "7"),
        ("123", "123"),
        ("https://app.incident.io/acme/incidents/123", "123"),
        ("01HZX3AB5CDEF6GH7JK8MN9PQR", "01HZX3AB5CDEF6GH7JK8MN9PQR"),
        ("https://app.incident.io.evil/acme/incidents/1", None),
        ("INC-12/../x", None),
    ],
)
def test_incident_io_references(text: str, key: str | None) -> None:
    assert iio_ref(text) == key


def test_policy_cross_checks() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("profiles: {p: {oncall: {schedules: [S1]}}}", "p.yml")
    assert ("profiles.p.oncall", "needs incidents.provider pagerduty or incident-io") in info.value.problems
    with pytest.raises(PolicyError) as info:
        parse_policy("incidents: {provider: pagerduty}\nprofiles: {p: {oncall: {require: true}}}", "p.yml")
    assert any("at least one schedule or escalation policy" in r for _, r in info.value.problems)
    with pytest.raises(PolicyError) as info:
        parse_policy("incidents: {provider: pagerduty, poll_every: 10s}\nprofiles: {p: {}}", "p.yml")
    assert any(k == "incidents.poll_every" for k, _ in info.value.problems)
    policy = parse_policy(
        "incidents: {provider: incident-io}\nprofiles: {p: {close_on_resolve: warn}}", "p.yml"
    )
    assert policy.profiles["p"].close_on_resolve == "warn" and policy.incidents.on_unreachable == "allow"


def test_settings_required_with_a_provider_and_redacted() -> None:
    empty = Settings(_env_file=None)  # type: ignore[call-arg]
    assert [p.split(" ")[0] for p in missing_settings(IncidentsPolicy(provider="pagerduty"), empty)] == [
        "PAGERDUTY_API_TOKEN",
        "PAGERDUTY_WEBHOOK_SECRET",
    ]
    assert missing_settings(IncidentsPolicy(), empty) == []
    full = Settings(
        _env_file=None,  # type: ignore[call-arg]
        incident_io_api_key="iio-secret-key",
        incident_io_webhook_secret="whsec_c2VjcmV0",
        pagerduty_api_token="pd-secret-token",
        pagerduty_webhook_secret="pd-webhook-secret",
    )
    assert missing_settings(IncidentsPolicy(provider="incident-io"), full) == []
    assert {"iio-secret-key", "whsec_c2VjcmV0", "pd-secret-token", "pd-webhook-secret"} <= set(full.secrets())
    assert "pd-secret-token" not in repr(full)
    with pytest.raises(ValueError, match="http"):
        Settings(_env_file=None, pagerduty_api_url="ftp://x")  # type: ignore[call-arg]


def test_dynamodb_keeps_the_link() -> None:
    now = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    event = BreakGlassEvent.new(
        invoker="U0001",
        slack_user_id="U0001",
        profile="prod",
        reason_code="incident",
        justification="Checkout is down; restarting the payment workers",
        duration=timedelta(minutes=30),
        now=now,
        oncall="unknown",
        incident_link=IncidentLink(
            provider="pagerduty", id="PINC001", reference="#1234", title="Down", url=None, resolved_at=now
        ),
    )
    assert from_item(_de(_ser(to_item(event)))) == event


def test_pagerduty_signature_any_of_several() -> None:
    body = b'{"event": {}}'
    good = "v1=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    verify_pagerduty(body, {"x-pagerduty-signature": f"v1=abc, {good}"}, "s3cret")
    for header in ("", "v1=abc", good.replace("v1=", "v0=")):
        with pytest.raises(Unverified):
            verify_pagerduty(body, {"x-pagerduty-signature": header}, "s3cret")
    with pytest.raises(Unverified):
        verify_pagerduty(body + b" ", {"x-pagerduty-signature": good}, "s3cret")


def test_svix_window_is_five_minutes_both_ways() -> None:
    key = b"0123456789abcdef0123456789abcdef"
    secret = "whsec_" + base64.b64encode(key).decode()
    now = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)

    def headers(ts: int) -> dict[str, str]:
        sig = base64.b64encode(hmac.new(key, f"m1.{ts}.".encode() + b"{}", hashlib.sha256).digest()).decode()
        return {"webhook-id": "m1", "webhook-timestamp": str(ts), "webhook-signature": f"v1,{sig}"}

    stamp = int(now.timestamp())
    verify_svix(b"{}", headers(stamp - 299), secret, now)
    verify_svix(b"{}", headers(stamp + 299), secret, now)
    for ts in (stamp - 301, stamp + 301):
        with pytest.raises(Unverified, match="5 minutes"):
            verify_svix(b"{}", headers(ts), secret, now)
    with pytest.raises(Unverified):
        verify_svix(b"{}", {**headers(stamp), "webhook-id": "m2"}, secret, now)


def test_policy_summary_says_what_the_incident_tool_does() -> None:
    from bot.policy import summarize

    text = summarize(
        parse_policy(
            "incidents: {provider: pagerduty, on_unreachable: refuse}\n"
            "profiles: {p: {close_on_resolve: warn, oncall: {escalation_policies: [PEP1], require: false}}}",
            "p.yml",
        )
    )
    assert "Incident tool: pagerduty; when unreachable: refuse; linked incidents polled every 3m" in text
    assert "    when the incident resolves: DM the holder\n    on call (PEP1): noted" in text
    assert "Incident tool" not in summarize(parse_policy("profiles: {p: {}}", "p.yml"))
