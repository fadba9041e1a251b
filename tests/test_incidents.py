"""Incident tools end to end: signed Slack requests to the bot's real HTTP endpoint, signed webhooks to
`/webhooks/pagerduty` and `/webhooks/incident-io`, and local fakes of both tools' APIs (tests/fake_incidents.py)
that record calls and enforce the auth headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import ids
from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy, parse_policy
from store import Status
from store.sqlite import SQLiteStore
from tests.conftest import Bot, make_bot
from tests.fake_incidents import IIO_KEY, PD_TOKEN, FakeIncidentIo, FakePagerDuty, sample_pagerduty
from tests.harness import Response, http
from tests.test_flows_close import buttons, settled, wait_until

PD_SECRET = "pd-webhook-secret-abcdef0123456789"
IIO_SECRET = "whsec_" + base64.b64encode(b"incident-io-webhook-key-32-bytes").decode()
AUDIT = "C0AUDIT"

PD_POLICY = """
audit_channel: C0AUDIT
security: [S0SEC]
incidents: {provider: pagerduty, on_unreachable: %(on_unreachable)s, poll_every: 2m}
profiles:
  sandbox:
    durations: [15m, 30m, 1h]
  prod:
    durations: [30m, 1h]
    require_incident: true
    close_on_resolve: %(close_on_resolve)s
  oncall-only:
    durations: [30m]
    oncall: {escalation_policies: [PEP0001], require: true}
  oncall-noted:
    durations: [30m]
    oncall: {schedules: [PSCHED1], require: false}
"""


def pd_policy(on_unreachable: str = "allow", close_on_resolve: str = "true") -> Policy:
    text = PD_POLICY % {"on_unreachable": on_unreachable, "close_on_resolve": close_on_resolve}
    return parse_policy(text, "incidents.yml")


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with sample_pagerduty() as fake:
        yield fake


def pd_bot(
    fake: FakeSlack,
    store: SQLiteStore,
    clock: ManualClock,
    pd: FakePagerDuty,
    settings: dict[str, Any] | None = None,
    **policy: str,
) -> Bot:
    return make_bot(
        fake,
        store,
        pd_policy(**policy),
        clock,
        pagerduty_api_token=PD_TOKEN,
        pagerduty_webhook_secret=PD_SECRET,
        pagerduty_api_url=pd.url,
        pagerduty_from_email="breakglass@example.com",
        **(settings or {}),
    )


@pytest.fixture
def pdbot(fake: FakeSlack, store: SQLiteStore, clock: ManualClock, pagerduty: FakePagerDuty) -> Iterator[Bot]:
    bot = pd_bot(fake, store, clock, pagerduty)
    yield bot
    bot.runtime.scheduler.shutdown(wait=False)
    bot.server.stop()


def pd_webhook(
    bot: Bot,
    event_type: str,
    incident_id: str,
    *,
    event_id: str = "01EVT",
    secret: str = PD_SECRET,
    signature: str | None = None,
) -> Response:
    body = json.dumps(
        {
            "event": {
                "id": event_id,
                "event_type": event_type,
                "resource_type": "incident",
                "occurred_at": "2026-12-03T08:00:00.000Z",
                "data": {"id": incident_id, "type": "incident", "status": "resolved"},
            }
        }
    ).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    sig = signature if signature is not None else f"v1=0000,v1={digest}"  # rotation: any one may match
    return http(
        "POST",
        bot.server.url + "/webhooks/pagerduty",
        body,
        {"Content-Type": "application/json", "X-PagerDuty-Signature": sig},
    )


def incident_field_error(response: Response) -> str:
    """Why the incident was refused: the tool is asked after the ack (bot.invoker), so the refusal comes back
    in the same modal by `views.update`: the invoke form again, the error right below the incident field
    (bot.slack.refused_form)."""
    assert response.status == 200
    body = response.json
    assert body["response_action"] == "update", body
    assert response.headers.get("X-Answered-By") == "views.update"
    return field_error(body["view"], ids.INCIDENT)


def field_error(view: dict[str, Any], field: str) -> str:
    """The error shown right below `field` of the invoke form `view` (a context block)."""
    assert view["callback_id"] == ids.CALLBACK_INVOKE and view.get("submit"), view
    blocks = view["blocks"]
    below = blocks[[b.get("block_id") for b in blocks].index(field) + 1]
    assert below["type"] == "context" and below["block_id"] == ids.FIELD_ERRORS[field], view
    return str(below["elements"][0]["text"])


def audit_post(bot: Bot) -> dict[str, Any]:
    return bot.fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == AUDIT)[0].params


# -- link and validate ------------------------------------------------------------------------------


def test_valid_incident_is_linked_shown_and_noted(pdbot: Bot, pagerduty: FakePagerDuty) -> None:
    response = pdbot.slack.invoke(profile="prod", incident="https://acme.pagerduty.com/incidents/PINC001")
    assert response.json["response_action"] == "update", response.json
    (event,) = pdbot.store.list_active()
    event = settled(pdbot, event.id)
    link = event.incident_link
    assert link is not None and (link.id, link.reference, link.title) == (
        "PINC001",
        "#1234",
        "Checkout is down",
    )
    assert link.url == "https://acme.pagerduty.com/incidents/PINC001" and link.verified
    assert "<https://acme.pagerduty.com/incidents/PINC001|#1234> Checkout is down" in json.dumps(
        audit_post(pdbot)
    )
    # the timeline note, written as the configured PagerDuty user, names the event
    dm = pdbot.fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == "U0001")[0]
    assert (
        "incident <https://acme.pagerduty.com/incidents/PINC001|#1234> Checkout is down" in dm.params["text"]
    )
    assert pdbot.slack.event({"type": "app_home_opened", "user": "U0001", "tab": "home"}).status == 200
    pdbot.fake.wait_for(
        "views.publish",
        where=lambda c: (
            c.params.get("user_id") == "U0001" and "|#1234> Checkout is down" in json.dumps(c.params)
        ),
    )
    (note,) = pagerduty.notes
    assert note[0] == "PINC001" and note[1] == "breakglass@example.com" and event.id in note[2]
    assert all(c.headers["authorization"] == f"Token token={PD_TOKEN}" for c in pagerduty.calls)


@pytest.mark.parametrize("reference", ["1234", "#1234", "PINC001"])
def test_number_and_id_are_accepted(pdbot: Bot, reference: str) -> None:
    assert pdbot.slack.invoke(profile="prod", incident=reference).json["response_action"] == "update"
    (event,) = pdbot.store.list_active()
    assert event.incident_link is not None and event.incident_link.id == "PINC001"


def test_unknown_and_resolved_incidents_are_refused_and_nothing_stored(pdbot: Bot) -> None:
    assert "PagerDuty has no incident PNOPE99" in incident_field_error(
        pdbot.slack.invoke(profile="prod", incident="PNOPE99")
    )
    assert "is not a PagerDuty incident" in incident_field_error(
        pdbot.slack.invoke(profile="prod", incident="https://evil.example/incidents/PINC001")
    )
    assert "#1200 is already resolved" in incident_field_error(
        pdbot.slack.invoke(profile="prod", incident="PDONE01")
    )
    assert pdbot.store.list_active() == []
    assert pdbot.fake.calls_to("chat.postMessage") == []


def test_unreachable_tool_allowed_and_announced(pdbot: Bot, pagerduty: FakePagerDuty) -> None:
    pagerduty.down()
    assert pdbot.slack.invoke(profile="prod", incident="PINC001").json["response_action"] == "update"
    (event,) = pdbot.store.list_active()
    assert event.incident_link is not None and not event.incident_link.verified
    assert "unverified: the incident tool was unreachable" in json.dumps(audit_post(pdbot))
    settled(pdbot, event.id)
    assert pagerduty.notes == []  # no note on an incident nobody could verify


def test_unreachable_tool_refused_when_the_policy_says_so(
    fake: FakeSlack, store: SQLiteStore, clock: ManualClock, pagerduty: FakePagerDuty
) -> None:
    bot = pd_bot(fake, store, clock, pagerduty, on_unreachable="refuse")
    try:
        pagerduty.down()
        error = incident_field_error(bot.slack.invoke(profile="prod", incident="PINC001"))
        assert "PagerDuty answered HTTP 503" in error and "refuses unverified" in error
        assert store.list_active() == []
    finally:
        bot.server.stop()


def test_a_wrong_token_is_an_unreachable_tool_never_a_leaked_secret(
    fake: FakeSlack,
    store: SQLiteStore,
    clock: ManualClock,
    pagerduty: FakePagerDuty,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = make_bot(
        fake,
        store,
        pd_policy(on_unreachable="refuse"),
        clock,
        pagerduty_api_token="wrong-token-123",
        pagerduty_webhook_secret=PD_SECRET,
        pagerduty_api_url=pagerduty.url,
    )
    try:
        error = incident_field_error(bot.slack.invoke(profile="prod", incident="PINC001"))
        assert "refused breakglass's credentials (HTTP 401)" in error
        assert "wrong-token-123" not in error and "wrong-token-123" not in caplog.text
    finally:
        bot.server.stop()


# -- access ends with the incident --------------------------------------------------------------------


def test_resolve_webhook_closes_linked_events_through_the_pipeline(
    pdbot: Bot, pagerduty: FakePagerDuty
) -> None:
    pdbot.slack.invoke(profile="prod", incident="PINC001")
    pdbot.slack.invoke(user="U0002", profile="sandbox")  # not linked: untouched
    linked = next(e for e in pdbot.store.list_active() if e.incident_link)
    settled(pdbot, linked.id)
    response = pd_webhook(pdbot, "incident.resolved", "PINC001")
    assert response.status == 200 and response.json == {"status": "ok", "events": 1}
    closed = settled(pdbot, linked.id)
    assert closed.status is Status.CLOSED and closed.closed_by == "PagerDuty"
    assert closed.closed_reason == "incident #1234 resolved in PagerDuty"
    thread = [m["text"] for m in pdbot.fake.thread(AUDIT, closed.audit_ts or "")]
    assert any("Closed by PagerDuty" in t for t in thread)
    assert any("closed by PagerDuty" in m["text"] for m in pdbot.fake.channel_messages("U0001"))
    assert len(pagerduty.notes) == 2 and "ended: closed by PagerDuty" in pagerduty.notes[1][2]
    assert [e.profile for e in pdbot.store.list_active()] == ["sandbox"]


def test_forged_unsigned_and_replayed_webhooks(pdbot: Bot) -> None:
    pdbot.slack.invoke(profile="prod", incident="PINC001")
    assert pd_webhook(pdbot, "incident.resolved", "PINC001", secret="not-the-secret").status == 401
    assert pd_webhook(pdbot, "incident.resolved", "PINC001", signature="").status == 401
    assert pdbot.store.list_active()[0].status is Status.ACTIVE  # nothing was parsed, nothing closed
    assert pd_webhook(pdbot, "incident.resolved", "PINC001", event_id="E1").json["events"] == 1
    assert pd_webhook(pdbot, "incident.resolved", "PINC001", event_id="E1").json == {"status": "duplicate"}
    assert pd_webhook(pdbot, "incident.acknowledged", "PINC001", event_id="E2").json["status"] == "ignored"
    wrong = http(
        "POST", pdbot.server.url + "/webhooks/incident-io", b"{}", {"Content-Type": "application/json"}
    )
    assert wrong.status == 404  # the policy's tool is PagerDuty


def test_replay_protection_is_in_the_store(
    fake: FakeSlack, store: SQLiteStore, clock: ManualClock, pagerduty: FakePagerDuty
) -> None:
    """Two replicas on one store: the second one also sees the delivery as a replay."""
    first, second = pd_bot(fake, store, clock, pagerduty), pd_bot(fake, store, clock, pagerduty)
    try:
        first.slack.invoke(profile="prod", incident="PINC001")
        assert pd_webhook(first, "incident.resolved", "PINC001", event_id="E9").json["events"] == 1
        assert pd_webhook(second, "incident.resolved", "PINC001", event_id="E9").json == {
            "status": "duplicate"
        }
    finally:
        first.server.stop()
        second.server.stop()


def test_close_on_resolve_warn_dms_the_holder(
    fake: FakeSlack, store: SQLiteStore, clock: ManualClock, pagerduty: FakePagerDuty
) -> None:
    bot = pd_bot(fake, store, clock, pagerduty, close_on_resolve="warn")
    try:
        bot.slack.invoke(profile="prod", incident="PINC001")
        (event,) = store.list_active()
        settled(bot, event.id)
        assert pd_webhook(bot, "incident.resolved", "PINC001").json["events"] == 0
        stored = settled(bot, event.id)
        assert stored.status is Status.ACTIVE and stored.incident_link and stored.incident_link.resolved_at
        dm = wait_until(
            lambda: [m for m in fake.channel_messages("U0001") if "Incident #1234 resolved" in m["text"]],
            "the DM",
        )
        assert buttons(dm[0].get("blocks")) == [(ids.ACTION_CLOSE, event.id), (ids.ACTION_EXTEND, event.id)]
        # the holder closes it: that DM says so and loses its buttons too (issue 22)
        assert settled(bot, event.id).dms[-1].ts == dm[0]["ts"]
        bot.service.close(event.id, by="U0001", reason="Incident resolved, done")
        bot.runtime.pipeline.deliver(event.id)
        settled(bot, event.id)
        ended = fake.message(dm[0]["channel"], dm[0]["ts"])
        assert "was closed by" in ended["text"] and buttons(ended["blocks"]) == []
        assert fake.invalid_calls == []
    finally:
        bot.server.stop()


def test_the_sweep_poll_catches_a_lost_webhook(pdbot: Bot, pagerduty: FakePagerDuty) -> None:
    pdbot.slack.invoke(profile="prod", incident="PINC001")
    (event,) = pdbot.store.list_active()
    settled(pdbot, event.id)
    pagerduty.incidents["PINC001"]["status"] = "resolved"  # the webhook never arrives
    pdbot.clock.advance(timedelta(minutes=2))
    counts = pdbot.runtime.scheduler.sweep()
    assert counts["incidents"] == 1
    assert settled(pdbot, event.id).status is Status.CLOSED
    gets = pagerduty.calls_to("GET", "/incidents/PINC001")
    pdbot.runtime.scheduler.sweep()  # same poll slot: not asked again (once per poll_every across replicas)
    assert pagerduty.calls_to("GET", "/incidents/PINC001") == gets


# -- on call ------------------------------------------------------------------------------------------


def test_oncall_required(pdbot: Bot, pagerduty: FakePagerDuty) -> None:
    pagerduty.put_on_call("bob@example.com", policy="PEP0001")
    refused = pdbot.slack.invoke(profile="oncall-only", duration="1800")
    assert "on call now in PagerDuty, and you are not" in json.dumps(refused.json)
    assert pdbot.store.list_active() == []
    assert (
        pdbot.slack.invoke(user="U0002", profile="oncall-only", duration="1800").json["response_action"]
        == "update"
    )
    (event,) = pdbot.store.list_active()
    assert event.oncall == "yes"
    # asked once for the rule (when the first form opened); the second form's answer came from the cache
    (call,) = [
        c
        for c in pagerduty.calls_to("GET", "/oncalls")
        if c.query.get("escalation_policy_ids[]") == ["PEP0001"]
    ]
    assert call.query["include[]"] == ["users"]


def test_oncall_noted_not_required(pdbot: Bot, pagerduty: FakePagerDuty) -> None:
    pagerduty.put_on_call("bob@example.com", schedule="PSCHED1")
    assert pdbot.slack.invoke(profile="oncall-noted", duration="1800").json["response_action"] == "update"
    (event,) = pdbot.store.list_active()
    assert event.oncall == "no"
    assert "*On call*\\nno" in json.dumps(audit_post(pdbot))


def test_oncall_is_looked_up_when_the_modal_opens(pdbot: Bot, pagerduty: FakePagerDuty) -> None:
    pagerduty.put_on_call("alice@example.com", policy="PEP0001")
    assert pdbot.slack.command("").status == 200
    view = pdbot.fake.wait_for("views.open")[0].params["view"]
    assert "PagerDuty incident: id, number or URL (required for some profiles)." in json.dumps(view)
    wait_until(lambda: pagerduty.calls_to("GET", "/oncalls"), "the on-call prefetch")
    pdbot.idle()
    before = len(pagerduty.calls_to("GET", "/oncalls"))
    assert pdbot.slack.invoke(profile="oncall-only", duration="1800").json["response_action"] == "update"
    assert len(pagerduty.calls_to("GET", "/oncalls")) == before  # the submission used the cached answer


# -- incident.io ------------------------------------------------------------------------------------

IIO_POLICY = """
audit_channel: C0AUDIT
incidents: {provider: incident-io}
profiles:
  prod:
    durations: [30m]
    oncall: {schedules: [01SCHED], require: false}
"""


@pytest.fixture
def iiobot(fake: FakeSlack, tmp_path: Path, clock: ManualClock) -> Iterator[tuple[Bot, FakeIncidentIo]]:
    store = SQLiteStore(tmp_path / "iio.db")
    with FakeIncidentIo() as iio:
        iio.add_incident("01HINC0000000000000000000A", 12, "Payments degraded")
        iio.shifts["01SCHED"] = ["alice@example.com"]
        bot = make_bot(
            fake,
            store,
            parse_policy(IIO_POLICY, "iio.yml"),
            clock,
            incident_io_api_key=IIO_KEY,
            incident_io_webhook_secret=IIO_SECRET,
            incident_io_api_url=iio.url,
        )
        try:
            yield bot, iio  # type: ignore[misc]
        finally:
            bot.server.stop()
            store.disconnect()


def svix(
    bot: Bot,
    payload: dict[str, Any],
    *,
    msg_id: str = "msg_1",
    ts: int | None = None,
    key: bytes | None = None,
) -> Response:
    body = json.dumps(payload).encode()
    stamp = str(int(bot.clock.now().timestamp()) if ts is None else ts)
    secret = key or base64.b64decode(IIO_SECRET.removeprefix("whsec_"))
    sig = base64.b64encode(
        hmac.new(secret, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": f"v1,{base64.b64encode(b'x' * 32).decode()} v1,{sig}",
    }
    return http("POST", bot.server.url + "/webhooks/incident-io", body, headers)


def updated(iio: FakeIncidentIo, category: str) -> dict[str, Any]:
    incident = dict(iio.incidents["01HINC0000000000000000000A"])
    incident["incident_status"] = {"id": "01S", "name": category, "category": category}
    return {
        "event_type": "public_incident.incident_updated_v2",
        "public_incident.incident_updated_v2": {"incident": incident},
    }


def test_incident_io_link_oncall_and_signed_resolve(iiobot: tuple[Bot, FakeIncidentIo]) -> None:
    bot, iio = iiobot
    assert bot.slack.invoke(profile="prod", incident="INC-12").json["response_action"] == "update"
    (event,) = bot.store.list_active()
    assert (
        event.incident_link is not None
        and event.incident_link.reference == "INC-12"
        and event.oncall == "yes"
    )
    assert all(c.headers["authorization"] == f"Bearer {IIO_KEY}" for c in iio.calls)
    settled(bot, event.id)
    assert svix(bot, updated(iio, "active")).json["status"] == "ignored"  # still open
    assert (
        svix(bot, updated(iio, "closed"), ts=int(bot.clock.now().timestamp()) - 301, msg_id="m2").status
        == 401
    )  # stale
    assert svix(bot, updated(iio, "closed"), key=b"another-key", msg_id="m3").status == 401  # forged
    assert bot.store.get(event.id).status is Status.ACTIVE
    assert svix(bot, updated(iio, "closed"), msg_id="m4").json == {"status": "ok", "events": 1}
    assert svix(bot, updated(iio, "closed"), msg_id="m4").json == {"status": "duplicate"}
    closed = settled(bot, event.id)
    assert (
        closed.closed_by == "incident.io"
        and closed.closed_reason == "incident INC-12 resolved in incident.io"
    )


def test_oncall_unknown_when_the_tool_is_down(
    fake: FakeSlack, store: SQLiteStore, clock: ManualClock, pagerduty: FakePagerDuty
) -> None:
    """allow: the invocation goes through and the audit message says on-call is unknown; refuse: refused."""
    pagerduty.down()
    for on_unreachable in ("allow", "refuse"):
        bot = pd_bot(fake, store, clock, pagerduty, on_unreachable=on_unreachable)
        try:
            response = bot.slack.invoke(profile="oncall-only", duration="1800")
            if on_unreachable == "allow":
                assert response.json["response_action"] == "update"
                (event,) = store.list_active()
                assert event.oncall == "unknown"
                assert "unknown (the incident tool was unreachable)" in json.dumps(audit_post(bot))
                bot.service.close(event.id, by="U0001", reason="done with it")
            else:
                assert "could not be asked (PagerDuty answered HTTP 503)" in json.dumps(response.json)
                assert store.list_active() == []
        finally:
            bot.server.stop()


def test_fast_path_incident_is_validated_too(pdbot: Bot, pagerduty: FakePagerDuty) -> None:
    text = "prod 30m incident incident=PNOPE99 Checkout is down; restarting the payment workers"
    refused = pdbot.slack.command(text)
    assert refused.status == 200 and "PagerDuty has no incident PNOPE99" in refused.text
    assert pdbot.store.list_active() == []
    assert pdbot.slack.command(text.replace("PNOPE99", "1234")).status == 200
    (event,) = wait_until(pdbot.store.list_active, "the fast-path event")
    assert event.incident_link is not None and event.incident_link.id == "PINC001"


def test_an_extension_is_noted_on_the_incident(pdbot: Bot, pagerduty: FakePagerDuty) -> None:
    pdbot.slack.invoke(profile="prod", incident="PINC001")
    (event,) = pdbot.store.list_active()
    settled(pdbot, event.id)
    extended = pdbot.service.extend(
        event.id, by="U0001", duration="30m", reason="The failover needs more time"
    )
    pdbot.runtime.pipeline.deliver(event.id)
    settled(pdbot, event.id)
    assert [n[2].split(" break-glass")[0] for n in pagerduty.notes] == [
        f"breakglass: {event.invoker} took",
        f"breakglass: {event.invoker} extended",
    ]
    assert f"{extended.expires_at:%Y-%m-%d %H:%M} UTC" in pagerduty.notes[1][2]


def test_the_ocsf_feed_carries_the_link(pdbot: Bot) -> None:
    from bot.audit_feed.ocsf import event_records, verify_chain

    pdbot.slack.invoke(profile="prod", incident="PINC001")
    (event,) = pdbot.store.list_active()
    (record,) = event_records(pdbot.store.get(event.id))
    link = record["unmapped"]["breakglass"]["incident_link"]
    assert link == {
        "provider": "pagerduty",
        "id": "PINC001",
        "reference": "#1234",
        "url": "https://acme.pagerduty.com/incidents/PINC001",
        "verified": True,
    }
    assert verify_chain([record]) == []
