"""No Slack, AWS or incident-tool round trip before an ack (bot.invoker, bot.slack.invoke_meta).

Each test makes the outside slow — every Slack Web API answer (and response_url) waits SLOW seconds, the
identity store or PagerDuty too — with nothing cached (`directory_ttl=0`: as once the cache has expired),
and sends signed requests to the bot's real HTTP endpoint. The ack must come back well before SLOW, and
no lookup (users.info, user groups, the identity store, on-call) may have been received before it: the
ack waits on none. What the ack cannot decide is decided after it, and shown in the modal or through
the command's response_url."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from bot.clock import ManualClock
from bot.incidents.base import TtlCache
from bot.invoker import IDENTITY_MAX_AGE
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from bot.slack.views import CHECKING_TITLE
from store.sqlite import SQLiteStore
from tests.conftest import Bot, make_bot
from tests.fake_incidents import PD_TOKEN, FakePagerDuty
from tests.harness import Response
from tests.test_incidents import PD_SECRET, pd_policy

SLOW = 1.5
LOOKUPS = {"users.info", "usergroups.users.list", "auth.test", "users.lookupByEmail"}
JUSTIFICATION = "Database failover is stuck; promoting the replica by hand"


@pytest.fixture
def cold(fake: FakeSlack, store: SQLiteStore, policy: Policy, clock: ManualClock) -> Iterator[Bot]:
    bot = make_bot(fake, store, policy, clock, directory_ttl=0)
    yield bot
    bot.runtime.scheduler.shutdown(wait=False)
    bot.server.stop()


def acked(bot: Bot, send: Callable[[], Response], *, lookups_after: bool = False) -> tuple[Response, float]:
    """Send with every Slack answer slowed by SLOW; the response (the ack) and its latency. It must come
    back before SLOW: had it waited on any lookup, it would have taken longer. Where the request owes no
    lookup at all (decided from what the form's opening learned), none may even have been received
    before the ack; `lookups_after`: the request is decided after its ack, whose lookups may start while
    the ack is on its way."""
    bot.fake.slow(None, SLOW, times=5)
    start = time.monotonic()
    response = send()
    latency = time.monotonic() - start
    assert response.status == 200, response.text
    assert latency < SLOW, f"the ack took {latency:.2f}s: it waited on a round trip"
    if not lookups_after:
        before = [
            c.method for c in bot.fake.calls if start <= c.at <= start + latency and c.method in LOOKUPS
        ]
        assert before == [], f"looked up {before} before the ack"
    return response, latency


def test_the_modal_submission_acks_with_the_store_write_only(cold: Bot) -> None:
    """Resolved when the form opened (a group member: prod needs S0SRE), decided from private_metadata."""
    view_id, metadata = cold.slack.open_form("U0SRE")
    assert view_id and metadata
    known = json.loads(metadata)["known"]
    assert known["user_id"] == "U0SRE" and "prod" in known["profiles"] and known["identity"] == "U0SRE"
    response, _ = acked(
        cold, lambda: _submit_as(cold, "U0SRE", metadata, view_id, profile="prod", incident="INC-42")
    )
    assert response.json["view"]["title"]["text"] == "Access granted"  # stored before the ack
    (event,) = cold.store.list_active()
    assert event.slack_user_id == "U0SRE" and event.profile == "prod" and event.invoker == "U0SRE"


def test_the_form_opens_at_once_and_learns_who_you_are_after(cold: Bot) -> None:
    """views.open does not wait for the lookups; one views.update, after it, carries their answers."""
    cold.fake.slow("users.info", SLOW)
    view_id, metadata = cold.slack.open_form("U0001", timeout=SLOW * 3)
    (opened,) = cold.fake.calls_to("views.open")
    infos = cold.fake.calls_to("users.info")  # (nothing cached: one per lookup)
    (update,) = cold.fake.calls_to("views.update")
    assert infos and opened.at < min(c.at for c in infos) and max(c.at for c in infos) < update.at
    assert update.params["view_id"] == view_id and update.params["hash"] == opened.response["view"]["hash"]
    assert json.loads(metadata)["known"]["user_id"] == "U0001"


def outcome(bot: Bot, view_id: str | None, after: float) -> dict[str, Any]:
    """The view the bot put in place of "Checking…" once it had decided after the ack."""
    (call,) = bot.fake.wait_for(
        "views.update",
        where=lambda c: (
            c.at > after
            and c.params["view_id"] == view_id
            and c.params["view"]["title"]["text"] != CHECKING_TITLE
        ),
        timeout=SLOW * 6,
    )
    view: dict[str, Any] = call.params["view"]
    return view


def _submit_as(bot: Bot, user: str, metadata: str, view_id: str | None, **values: Any) -> Response:
    return bot.slack.submit(
        "breakglass_invoke",
        {
            "profile": ("select", values.get("profile", "sandbox")),
            "reason": ("select", "incident"),
            "justification": JUSTIFICATION,
            "duration": ("select", "1800"),
            "incident": values.get("incident"),
        },
        user=user,
        private_metadata=metadata,
        view_id=view_id,
        final=False,
    )


@pytest.mark.parametrize("case", ["missing", "another user", "another view", "stale", "damaged"])
def test_metadata_not_for_this_submission_is_not_used_and_decided_after_the_ack(cold: Bot, case: str) -> None:
    view_id, metadata = cold.slack.open_form("U0001")
    assert view_id and metadata
    user = "U0001"
    if case == "missing":
        metadata = ""
    elif case == "another user":  # U0001's answers in a submission Slack signed for U0002
        user = "U0002"
    elif case == "another view":
        view_id = "VOTHER00001"
    elif case == "stale":
        cold.clock.advance(IDENTITY_MAX_AGE + timedelta(seconds=1))
    else:
        metadata = metadata[:-5]
    submitted = time.monotonic()
    response, _ = acked(cold, lambda: _submit_as(cold, user, metadata, view_id), lookups_after=True)
    assert response.json["view"]["title"]["text"] == CHECKING_TITLE  # nothing stored yet
    cold.idle()
    if case != "another view":  # (a view the fake does not know cannot be updated)
        assert outcome(cold, view_id, submitted)["title"]["text"] == "Access granted"
    (event,) = cold.store.list_active()
    assert event.slack_user_id == user and event.invoker == user  # from Slack's signed user, looked up live


def test_a_refusal_known_at_opening_is_inline_without_a_round_trip(
    fake: FakeSlack, store: SQLiteStore, policy: Policy, clock: ManualClock
) -> None:
    """A guest (the policy refuses guests) is refused inline, from what the opening learned."""
    fake.add_user("U0GUEST", email="guest@example.com", is_restricted=True)
    bot = make_bot(fake, store, policy, clock, directory_ttl=0)
    try:
        view_id, metadata = bot.slack.open_form("U0GUEST")
        assert json.loads(metadata)["known"]["refused"]
        response, _ = acked(bot, lambda: _submit_as(bot, "U0GUEST", metadata, view_id))
        assert response.json["response_action"] == "errors"
        assert "guests cannot use breakglass" in json.dumps(response.json["errors"])
        assert store.list_active() == []
    finally:
        bot.server.stop()


def test_the_fast_path_acks_first_and_answers_through_response_url(cold: Bot) -> None:
    name = "fast-U0001"
    response, _ = acked(
        cold,
        lambda: cold.slack.raw_command(
            f"sandbox 30m incident {JUSTIFICATION}", response_url=cold.fake.response_url(name)
        ),
        lookups_after=True,
    )
    assert response.body == b""  # an empty ack: the answer follows
    (reply,) = cold.fake.wait_for("response_url", where=lambda c: c.params["name"] == name, timeout=SLOW * 6)
    assert "sandbox" in reply.params["text"] and reply.params["response_type"] == "ephemeral"
    (event,) = cold.store.list_active()
    assert event.id in json.dumps(reply.params)


def test_subcommands_that_read_slack_ack_first(cold: Bot) -> None:
    """`list` asks Slack whether the user is an incident commander (user groups): after the ack."""
    name = "list-U0001"
    response, _ = acked(
        cold,
        lambda: cold.slack.raw_command("list", response_url=cold.fake.response_url(name)),
        lookups_after=True,
    )
    assert response.body == b""
    (reply,) = cold.fake.wait_for("response_url", where=lambda c: c.params["name"] == name, timeout=SLOW * 6)
    assert "No active break-glass access" in json.dumps(reply.params)


# -- on call (PagerDuty) --------------------------------------------------------------------------------


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as api:
        api.add_incident("PINC001", 1234, "Checkout is down")
        yield api  # type: ignore[misc]


@pytest.fixture
def pd(fake: FakeSlack, store: SQLiteStore, clock: ManualClock, pagerduty: FakePagerDuty) -> Iterator[Bot]:
    bot = make_bot(
        fake,
        store,
        pd_policy(),
        clock,
        directory_ttl=0,
        pagerduty_api_token=PD_TOKEN,
        pagerduty_webhook_secret=PD_SECRET,
        pagerduty_api_url=pagerduty.url,
    )
    yield bot
    bot.runtime.scheduler.shutdown(wait=False)
    bot.server.stop()


def _pd_acked(
    bot: Bot, pagerduty: FakePagerDuty, send: Callable[[], Response], *, lookups_after: bool = False
) -> Response:
    """`acked`, with PagerDuty slowed by SLOW too."""
    pagerduty.slow(SLOW)
    start = time.monotonic()
    response, latency = acked(bot, send, lookups_after=lookups_after)
    if not lookups_after:
        asked = [c.path for c in pagerduty.calls if start <= c.at <= start + latency]
        assert asked == [], f"asked PagerDuty {asked} before the ack"
    pagerduty.slow(0)
    return response


def test_oncall_required_is_decided_from_the_answer_at_opening(pd: Bot, pagerduty: FakePagerDuty) -> None:
    pagerduty.put_on_call("alice@example.com", policy="PEP0001")
    view_id, metadata = pd.slack.open_form("U0001")
    assert json.loads(metadata)["known"]["oncall"]["oncall-only"] == "yes"
    pd.runtime.service.incidents.oncall_cache = TtlCache(0)  # nothing cached: a lookup would ask PagerDuty
    response = _pd_acked(
        pd, pagerduty, lambda: _submit_as(pd, "U0001", metadata, view_id, profile="oncall-only")
    )
    assert response.json["view"]["title"]["text"] == "Access granted"
    (event,) = pd.store.list_active()
    assert event.oncall == "yes"


def test_oncall_not_known_at_submit_is_asked_after_the_ack(pd: Bot, pagerduty: FakePagerDuty) -> None:
    """The answer at opening is older than the policy's oncall_cache: asked again after the ack; the
    person went off call meanwhile, so the modal says so and nothing is stored."""
    pagerduty.put_on_call("alice@example.com", policy="PEP0001")
    view_id, metadata = pd.slack.open_form("U0001")
    pagerduty.oncalls.clear()
    pd.clock.advance(pd.runtime.context.policy.incidents.oncall_cache + timedelta(seconds=1))
    pd.runtime.service.incidents.oncall_cache = TtlCache(0)
    submitted = time.monotonic()
    response = _pd_acked(
        pd,
        pagerduty,
        lambda: _submit_as(pd, "U0001", metadata, view_id, profile="oncall-only"),
        lookups_after=True,
    )
    assert response.json["view"]["title"]["text"] == CHECKING_TITLE
    shown = outcome(pd, view_id, submitted)
    assert shown["title"]["text"] == "Not granted"
    assert "on call now in PagerDuty, and you are not" in json.dumps(shown)
    assert pd.store.list_active() == []


def test_an_incident_is_looked_up_after_the_ack(pd: Bot, pagerduty: FakePagerDuty) -> None:
    view_id, metadata = pd.slack.open_form("U0001")
    response = _pd_acked(
        pd,
        pagerduty,
        lambda: _submit_as(pd, "U0001", metadata, view_id, profile="prod", incident="PINC001"),
        lookups_after=True,
    )
    assert response.json["view"]["title"]["text"] == CHECKING_TITLE
    assert "the incident" in json.dumps(response.json["view"])
    pd.fake.wait_for(
        "views.update",
        where=lambda c: (
            c.params["view_id"] == view_id and c.params["view"]["title"]["text"] == "Access granted"
        ),
        timeout=SLOW * 6,
    )
    (event,) = pd.store.list_active()
    assert event.incident_link is not None and event.incident_link.id == "PINC001"
