"""An incident refused after the submission's ack is shown next to the incident field: the same modal goes
back to the invoke form (views.update) with everything the person entered kept, and resubmitting it with a
good incident grants, once. Signed requests to the bot's real HTTP endpoint, the local Slack Web API
validating every view, the local PagerDuty (tests/fake_incidents.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bot import ids, metrics
from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.slack.invoke_meta import InvokeMetadata
from store.sqlite import SQLiteStore
from tests.conftest import Bot
from tests.fake_incidents import FakePagerDuty, sample_pagerduty
from tests.harness import Response
from tests.test_audit_refusals import refusals
from tests.test_flows_close import settled, wait_until
from tests.test_incidents import AUDIT, field_error, incident_field_error, pd_bot
from tests.test_metrics import METRICS_TOKEN, samples, scrape

JUSTIFICATION = "Checkout is down; restarting the payment workers by hand"


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with sample_pagerduty() as fake:
        yield fake


@contextmanager
def running(
    fake: FakeSlack,
    store: SQLiteStore,
    clock: ManualClock,
    pagerduty: FakePagerDuty,
    settings: dict[str, Any] | None = None,
    **policy: str,
) -> Iterator[Bot]:
    bot = pd_bot(fake, store, clock, pagerduty, settings, **policy)
    try:
        yield bot
    finally:
        bot.runtime.scheduler.shutdown(wait=False)
        bot.server.stop()


@pytest.fixture
def pdbot(fake: FakeSlack, store: SQLiteStore, clock: ManualClock, pagerduty: FakePagerDuty) -> Iterator[Bot]:
    with running(fake, store, clock, pagerduty) as bot:
        yield bot


@pytest.fixture
def refusing(
    fake: FakeSlack, store: SQLiteStore, clock: ManualClock, pagerduty: FakePagerDuty
) -> Iterator[Bot]:
    """A bot whose policy refuses unverified incidents (`on_unreachable: refuse`)."""
    with running(fake, store, clock, pagerduty, on_unreachable="refuse") as bot:
        yield bot


def submit(bot: Bot, view_id: str | None, metadata: str, incident: str | None, **values: Any) -> Response:
    """The invoke form submitted as U0001: prod for 30 minutes unless `values` say otherwise."""
    return bot.slack.submit(
        ids.CALLBACK_INVOKE,
        {
            ids.PROFILE: ("select", values.get("profile", "prod")),
            ids.REASON: ("select", values.get("reason", "incident")),
            ids.JUSTIFICATION: values.get("justification", JUSTIFICATION),
            ids.DURATION: ("select", values.get("duration", "1800")),
            ids.INCIDENT: incident,
        },
        private_metadata=metadata,
        view_id=view_id,
    )


def element(view: dict[str, Any], field: str) -> dict[str, Any]:
    (block,) = [b for b in view["blocks"] if b.get("block_id") == field]
    assert block["type"] == "input"
    found: dict[str, Any] = block["element"]
    return found


def metadata_put_in(bot: Bot, view_id: str, after: float) -> str:
    """The private_metadata the bot put into the form it gave back (who the person is), once it has."""
    (call,) = bot.fake.wait_for(
        "views.update",
        where=lambda c: (
            c.at > after
            and c.params.get("view_id") == view_id
            and bool((c.params.get("view") or {}).get("private_metadata"))
        ),
    )
    return str(call.params["view"]["private_metadata"])


def refused_then_granted(bot: Bot, pagerduty: FakePagerDuty, incident: str, expected: str) -> None:
    """Open the form, submit it with `incident` (refused after the ack), see the form back with every value
    kept and `expected` under the incident field, nothing stored; resubmit it with a good incident."""
    view_id, metadata = bot.slack.open_form("U0001")
    assert view_id is not None and metadata
    sent = time.monotonic()
    response = submit(bot, view_id, metadata, incident)
    error = incident_field_error(response)
    assert expected in error, error
    view = response.json["view"]

    # the form as it was filled in: the prod profile chosen, so only its durations are offered
    assert element(view, ids.PROFILE)["initial_option"]["value"] == "prod"
    assert element(view, ids.REASON)["initial_option"]["value"] == "incident"
    assert element(view, ids.JUSTIFICATION)["initial_value"] == JUSTIFICATION
    duration = element(view, ids.DURATION)
    assert duration["initial_option"]["value"] == "1800"
    assert [o["value"] for o in duration["options"]] == ["1800", "3600"]
    assert element(view, ids.INCIDENT)["initial_value"] == incident
    assert [b["block_id"] for b in view["blocks"] if b["type"] == "context"] == [
        ids.FIELD_ERRORS[ids.INCIDENT]
    ]
    assert view["title"]["text"] == "Break glass" and view["submit"]["text"] == "Get access"

    # nothing stored, nothing announced; the view Slack holds is the form (valid Block Kit)
    assert bot.store.list_active() == [] and bot.store.list_by_invoker("U0001").items == []
    assert bot.fake.calls_to("chat.postMessage") == []
    assert bot.fake.invalid_calls == []

    # who the person is goes back into the form, as when it opened: its next submission needs no lookup
    again = metadata_put_in(bot, view_id, sent)
    meta = InvokeMetadata.model_validate_json(again)
    assert meta.view_id == view_id and meta.known.user_id == "U0001"
    held = bot.fake.view(view_id)
    assert held is not None and held["callback_id"] == ids.CALLBACK_INVOKE
    assert held["private_metadata"] == again
    assert field_error(held, ids.INCIDENT) == error  # the error stays under the field

    # the same view (the same request id) submitted again with a good incident: granted, once
    pagerduty.down(False)
    granted = submit(bot, view_id, again, "PINC001")
    assert granted.json["view"]["title"]["text"] == "Access granted", granted.json
    (event,) = bot.store.list_active()
    assert event.request_id == view_id
    assert event.incident_link is not None and event.incident_link.id == "PINC001"
    settled(bot, event.id)
    audit = [c for c in bot.fake.calls_to("chat.postMessage") if c.params.get("channel") == AUDIT]
    assert len(audit) == 1
    assert bot.fake.invalid_calls == []


def test_unknown_incident_gives_the_form_back_with_the_error_under_the_field(
    pdbot: Bot, pagerduty: FakePagerDuty
) -> None:
    refused_then_granted(pdbot, pagerduty, "PNOPE99", "PagerDuty has no incident PNOPE99")


def test_resolved_incident_gives_the_form_back_with_the_error_under_the_field(
    pdbot: Bot, pagerduty: FakePagerDuty
) -> None:
    refused_then_granted(pdbot, pagerduty, "PDONE01", "#1200 is already resolved")


def test_unreachable_tool_refused_by_the_policy_gives_the_form_back(
    refusing: Bot, pagerduty: FakePagerDuty
) -> None:
    pagerduty.down()
    refused_then_granted(refusing, pagerduty, "PINC001", "refuses unverified incidents")


def test_the_error_under_the_field_is_escaped(pdbot: Bot) -> None:
    view_id, metadata = pdbot.slack.open_form("U0001")
    error = incident_field_error(submit(pdbot, view_id, metadata, "<!channel>&x"))
    assert "&lt;!channel&gt;&amp;x" in error and "<!channel>" not in error
    # the field keeps what was typed (plain text, not mrkdwn)
    assert element(pdbot.fake.view(view_id) or {}, ids.INCIDENT)["initial_value"] == "<!channel>&x"
    assert pdbot.store.list_active() == []


def test_every_field_refused_after_the_ack_is_shown_under_its_own(pdbot: Bot) -> None:
    """A bare submission (no form opened first: who the person is is looked up after the ack) whose fields
    are wrong comes back the same way: each error under its field, the rest kept."""
    sent = time.monotonic()
    response = submit(pdbot, None, "", None, reason=None, justification="too short")
    view = response.json["view"]
    assert response.headers.get("X-Answered-By") == "views.update", response.json
    assert "at least 20" in field_error(view, ids.JUSTIFICATION)
    assert "Choose a reason" in field_error(view, ids.REASON)
    assert "requires an incident" in field_error(view, ids.INCIDENT)
    assert element(view, ids.JUSTIFICATION)["initial_value"] == "too short"
    assert "initial_option" not in element(view, ids.REASON)
    assert element(view, ids.PROFILE)["initial_option"]["value"] == "prod"
    assert pdbot.store.list_active() == []
    view_id = next(c.params["view_id"] for c in pdbot.fake.calls_to("views.update") if c.at > sent)
    metadata_put_in(pdbot, view_id, sent)
    assert pdbot.fake.invalid_calls == []


def test_a_refusal_of_no_field_stays_a_notice(pdbot: Bot, pagerduty: FakePagerDuty) -> None:
    """Not on call is about the person, not the form: the "Not granted" notice, as before."""
    view_id, _ = pdbot.slack.open_form("U0001")  # submitted without what it resolved: decided after the ack
    response = submit(pdbot, view_id, "", None, profile="oncall-only", duration="1800")
    view = response.json["view"]
    assert view["title"]["text"] == "Not granted", view
    assert "you are not" in json.dumps(view["blocks"])
    assert not any(b["type"] == "input" for b in view["blocks"])
    assert pdbot.store.list_active() == []


def test_a_modal_closed_meanwhile_gets_the_error_by_dm(pdbot: Bot) -> None:
    view_id, metadata = pdbot.slack.open_form("U0001")
    assert view_id is not None
    pdbot.fake.fail("views.update", times=2, error="not_found")  # the person closed the modal
    response = submit(pdbot, view_id, metadata, "PNOPE99")
    assert response.headers.get("X-Answered-By") == "views.update (refused by Slack)"
    (dm,) = pdbot.fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == "U0001")
    assert "PagerDuty has no incident PNOPE99" in dm.params["text"]
    assert "Nothing was granted" in dm.params["text"]
    assert pdbot.store.list_active() == []


def test_fast_path_refusal_is_a_clear_ephemeral_reply(pdbot: Bot) -> None:
    text = f"prod 30m incident incident=PDONE01 {JUSTIFICATION}"
    assert pdbot.slack.command(text).status == 200
    (reply,) = pdbot.fake.wait_for("response_url", where=lambda c: "already resolved" in json.dumps(c.params))
    assert reply.params.get("response_type") == "ephemeral"
    assert reply.params["text"].startswith(":x: PagerDuty incident #1200 is already resolved")
    assert "Usage" not in reply.params["text"]  # a well-formed command: the incident alone is wrong
    assert pdbot.store.list_active() == []
    assert pdbot.fake.calls_to("views.update") == [] and pdbot.fake.calls_to("chat.postMessage") == []
    assert pdbot.slack.command(text.replace("PDONE01", "PINC001")).status == 200
    (event,) = wait_until(pdbot.store.list_active, "the fast-path event")
    assert event.incident_link is not None and event.incident_link.id == "PINC001"


def test_each_refusal_is_counted_once(
    fake: FakeSlack,
    store: SQLiteStore,
    clock: ManualClock,
    pagerduty: FakePagerDuty,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`GET /metrics`: the form given back counts its refusal once, as the notice or DM it replaces did."""
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    with running(fake, store, clock, pagerduty, {"breakglass_metrics_token": METRICS_TOKEN}) as bot:
        endpoint = bot.server.server.get_app().metrics  # type: ignore[attr-defined]
        view_id, metadata = bot.slack.open_form("U0001")
        incident_field_error(submit(bot, view_id, metadata, "PNOPE99"))  # the form back
        view_id, metadata = bot.slack.open_form("U0001")
        fake.fail("views.update", times=2, error="not_found")
        submit(bot, view_id, metadata, "PDONE01")  # by DM: the modal was closed
        fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == "U0001")
        values = samples(scrape(bot)[1])
        metrics.RECORDER.detach(endpoint.sink)
    assert values[("breakglass_refusals_total", (("reason", "incident_refused"),))] == 2


def test_each_refused_attempt_of_one_form_reaches_the_audit_feed(
    fake: FakeSlack, store: SQLiteStore, clock: ManualClock, pagerduty: FakePagerDuty, tmp_path: Path
) -> None:
    """The form given back is submitted again with the same view id: a second refused attempt is its own
    refusal in the feed (a retry of the same submission by Slack still records one)."""
    feed = {"breakglass_audit_feed": f"file:{tmp_path / 'audit.log'}"}
    with running(fake, store, clock, pagerduty, feed) as bot:
        view_id, metadata = bot.slack.open_form("U0001")
        sent = time.monotonic()
        assert "PNOPE99" in incident_field_error(submit(bot, view_id, metadata, "PNOPE99"))
        again = metadata_put_in(bot, view_id, sent)
        clock.advance(1)
        assert "PNOPE98" in incident_field_error(submit(bot, view_id, again, "PNOPE98"))
        # each refusal's notice is sent to the feed as soon as it is stored (bot.delivery.prompt_notices)
        sent_records = wait_until(lambda: len(refusals(tmp_path)) >= 2 and refusals(tmp_path), "two refusals")
        texts = sorted(json.dumps(r) for r in sent_records)
        assert len(texts) == 2 and any("PNOPE99" in t for t in texts) and any("PNOPE98" in t for t in texts)
        wait_until(
            lambda: store.list_notices() == [], "no notice left owed"
        )  # marked sent after the sink took it
        assert store.list_active() == []
