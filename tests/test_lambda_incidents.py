"""On Lambda, an incident typed in the invoke form is looked up in the lazy run, after the ack, and a refused
one gives the form back with the error under the incident field (bot.slack.refused_form), as on threaded
runtimes: signed requests through `bot.lambda_handler.handler`, the fake Slack Web API and the local
PagerDuty fake; each recorded lazy invocation is run as Lambda runs it (and again, as Lambda retries it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot import ids, lambda_handler
from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.slack.views import CHECKING_TITLE
from store.sqlite import SQLiteStore
from tests.fake_incidents import PD_TOKEN, FakePagerDuty, sample_pagerduty
from tests.test_incidents import PD_SECRET, field_error, pd_policy
from tests.test_lambda import JUSTIFICATION, build_runtime, sqlite_store
from tests.test_lambda_lazy_decide import OnLambda, audit_posts

__all__ = ["sqlite_store"]  # the fixture, imported


@pytest.fixture(autouse=True)
def _reset_module_cache() -> Iterator[None]:
    lambda_handler.reset()
    yield
    lambda_handler.reset()


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with sample_pagerduty() as fake:
        yield fake


@pytest.fixture
def on_lambda(
    fake: FakeSlack, sqlite_store: SQLiteStore, clock: ManualClock, pagerduty: FakePagerDuty
) -> OnLambda:
    runtime = build_runtime(
        fake,
        sqlite_store,
        pd_policy(),
        clock,
        pagerduty_api_token=PD_TOKEN,
        pagerduty_webhook_secret=PD_SECRET,
        pagerduty_api_url=pagerduty.url,
        pagerduty_from_email="breakglass@example.com",
    )
    w = OnLambda(fake, sqlite_store, clock, runtime)
    lambda_handler.install(runtime, lambda_client=w.lam)
    return w


def values(incident: str) -> dict[str, object]:
    return {
        ids.PROFILE: ("select", "prod"),
        ids.REASON: ("select", "incident"),
        ids.JUSTIFICATION: JUSTIFICATION,
        ids.DURATION: ("select", "1800"),
        ids.INCIDENT: incident,
    }


def test_an_unknown_incident_on_lambda_gives_the_form_back_then_a_good_one_is_granted_once(
    on_lambda: OnLambda, pagerduty: FakePagerDuty
) -> None:
    w = on_lambda
    view = w.open_invoke_form("U0001")

    asked = len(pagerduty.calls)  # the form's opening looked up who is on call
    sent = w.submit(view, values("PNOPE99"), "U0001")
    assert sent.before == [], [c.method for c in sent.before]  # nothing asked before the ack
    assert sent.title == CHECKING_TITLE
    assert pagerduty.calls[asked:] == []  # the incident tool neither: it is asked in the lazy run
    (lazy,) = sent.lazy
    w.run(lazy)
    held = w.fake.view(view["id"])
    assert held is not None and held["callback_id"] == ids.CALLBACK_INVOKE
    assert "PNOPE99" in field_error(held, ids.INCIDENT)
    assert w.store.list_by_invoker("U0001").items == []  # nothing stored
    w.run(lazy)  # Lambda retries it: still nothing stored, the form still shows the error
    assert w.store.list_by_invoker("U0001").items == []
    assert "PNOPE99" in field_error(w.fake.view(view["id"]) or {}, ids.INCIDENT)
    assert w.fake.invalid_calls == []

    # the restored form (the same view: the same request id) submitted again with a good incident
    sent = w.submit(w.fake.view(view["id"]) or {}, values("PINC001"), "U0001")
    assert sent.before == [], [c.method for c in sent.before]
    (lazy,) = sent.lazy
    w.run(lazy)
    (event,) = w.store.list_active()
    assert event.request_id == view["id"]
    assert event.incident_link is not None and event.incident_link.id == "PINC001"
    assert w.shown(view["id"])[-1] == "Access granted"
    assert audit_posts(w.fake, event.id) == 1
    w.run(lazy)  # retried: granted once
    assert [e.id for e in w.store.list_active()] == [event.id]
    assert audit_posts(w.fake, event.id) == 1
