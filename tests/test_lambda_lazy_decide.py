"""On Lambda too, a decision that needs a lookup runs after the ack (bot.slack.lazy_decide).

Every request goes through `bot.lambda_handler.handler` as Lambda runs it, signed, against the fake Slack
Web API; Bolt's `LambdaLazyListenerRunner` self-invokes through a recording Lambda client, and each
recorded payload is then run as Lambda would run it — and run again, as Lambda retries an asynchronous
invocation. Whatever the fake Slack received while the handler ran was asked before the response (Lambda
answers when the handler returns): for every deciding listener it must be nothing.

Covered: the invoke form submitted when its metadata no longer covers it (and when it does), the close,
review and extend forms submitted without fresh roles (and with them), `/breakglass extend`, and a
deciding request of every kind (`test_no_slack_call_before_any_deciding_ack_on_lambda`)."""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from bot import lambda_handler
from bot.app import BreakglassApp
from bot.clock import ManualClock
from bot.localslack.webapi import Call, FakeSlack
from bot.policy import Policy
from bot.slack.lazy_decide import LAZY_DECIDE_NAME
from bot.slack.views import CHECKING_TITLE
from store import BreakGlassEvent
from store.sqlite import SQLiteStore
from tests.harness import click_payload, submission_payload, without_who
from tests.test_lambda import (
    JUSTIFICATION,
    FakeLambdaClient,
    LambdaContext,
    build_runtime,
    command_body,
    function_url_event,
    signed_headers,
    sqlite_store,
)

__all__ = ["sqlite_store"]  # the fixture, imported

INVOKE_VALUES = {
    "profile": ("select", "sandbox"),
    "reason": ("select", "incident"),
    "justification": JUSTIFICATION,
    "duration": ("select", "1800"),
    "incident": None,
}
STALE_ROLES = timedelta(minutes=2)  # older than the directory's cache (60 s): the form's roles count no more
STALE_IDENTITY = timedelta(minutes=16)  # older than bot.invoker.IDENTITY_MAX_AGE (15 min)


@pytest.fixture(autouse=True)
def _reset_module_cache() -> Iterator[None]:
    lambda_handler.reset()
    yield
    lambda_handler.reset()


@dataclass
class Sent:
    response: dict[str, Any]
    before: list[Call]  # what the fake Slack received while the handler ran: before the response
    lazy: list[dict[str, Any]]  # the lazy invocations it started (their payloads)

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.response["body"]) if self.response["body"] else {}

    @property
    def title(self) -> str:
        return str(self.body["view"]["title"]["text"])


@dataclass
class OnLambda:
    fake: FakeSlack
    store: SQLiteStore
    clock: ManualClock
    runtime: BreakglassApp
    lam: FakeLambdaClient = field(default_factory=FakeLambdaClient)
    n: int = 0

    def send(self, body: str) -> Sent:
        seen, started = len(self.fake.calls), len(self.lam.invocations)
        response = lambda_handler.handler(function_url_event(body, signed_headers(body)), LambdaContext())
        assert response["statusCode"] == 200, response
        return Sent(
            response,
            self.fake.calls[seen:],
            [json.loads(i["Payload"]) for i in self.lam.invocations[started:]],
        )

    def run(self, lazy: dict[str, Any]) -> None:
        """Run a lazy invocation as Lambda does (again: as Lambda retries it)."""
        assert lazy["headers"]["x-slack-bolt-lazy-function-name"] == LAZY_DECIDE_NAME
        started = len(self.lam.invocations)
        assert lambda_handler.handler(lazy, LambdaContext())["statusCode"] == 200
        assert len(self.lam.invocations) == started  # a lazy run starts no other

    def trigger(self) -> str:
        self.n += 1
        return f"1700000000.{self.n}.lazy"

    def command(self, text: str, user: str = "U0001") -> Sent:
        form = dict(urllib.parse.parse_qsl(command_body(text, user, self.fake.response_url(f"r{self.n}"))))
        form["trigger_id"] = self.trigger()
        return self.send(urllib.parse.urlencode(form))

    def interactive(self, payload: dict[str, Any]) -> Sent:
        return self.send(urllib.parse.urlencode({"payload": json.dumps(payload)}))

    def click(self, action_id: str, event_id: str, user: str, channel: str = "C0AUDIT") -> dict[str, Any]:
        """Click a button; returns the form it opened (on Lambda: before the click's response)."""
        opened = len(self.fake.calls_to("views.open"))
        self.interactive(
            click_payload(
                action_id,
                event_id,
                user=user,
                channel=channel,
                message_ts="1700000000.000100",
                container_type="message",
                trigger_id=self.trigger(),
                response_url=self.fake.response_url("click"),
            )
        )
        (call,) = self.fake.calls_to("views.open")[opened:]
        return dict(self.fake.views[call.response["view"]["id"]])

    def open_invoke_form(self, user: str = "U0001") -> dict[str, Any]:
        opened = len(self.fake.calls_to("views.open"))
        self.command("", user)
        (call,) = self.fake.calls_to("views.open")[opened:]
        view = dict(self.fake.views[call.response["view"]["id"]])
        assert view["private_metadata"], "the form carries who opened it"
        return view

    def submit(
        self, view: dict[str, Any], values: dict[str, Any], user: str, metadata: str | None = None
    ) -> Sent:
        return self.interactive(
            submission_payload(
                view["callback_id"],
                values,
                user=user,
                private_metadata=view["private_metadata"] if metadata is None else metadata,
                view_id=view["id"],
                external_id=str(view.get("external_id") or ""),
                trigger_id=self.trigger(),
            )
        )

    def shown(self, view_id: str) -> list[str]:
        """The titles shown in the modal by views.update after its ack, in order."""
        return [
            str(c.params["view"]["title"]["text"])
            for c in self.fake.calls_to("views.update")
            if c.params.get("view_id") == view_id
            and c.params["view"].get("callback_id") is None  # a notice, not the form's own metadata update
        ]

    def event(self, user: str = "U0001") -> BreakGlassEvent:
        """An active event of `user`, taken with the fast path on Lambda and announced."""
        sent = self.command(f"sandbox 1h incident {JUSTIFICATION}", user)
        (lazy,) = sent.lazy
        self.run(lazy)
        (event,) = [e for e in self.store.list_active() if e.slack_user_id == user]
        return self.store.get(event.id)


@pytest.fixture
def on_lambda(fake: FakeSlack, sqlite_store: SQLiteStore, policy: Policy, clock: ManualClock) -> OnLambda:
    w = OnLambda(fake, sqlite_store, clock, build_runtime(fake, sqlite_store, policy, clock))
    lambda_handler.install(w.runtime, lambda_client=w.lam)
    return w


def audit_posts(fake: FakeSlack, event_id: str) -> int:
    return sum(
        event_id in json.dumps(c.params)
        for c in fake.calls_to("chat.postMessage")
        if c.params.get("channel") == "C0AUDIT" and not c.params.get("thread_ts")
    )


def retried_changes_nothing(w: OnLambda, lazy: dict[str, Any], event: BreakGlassEvent, view_id: str) -> None:
    """Run `lazy` again (Lambda retrying it): nothing stored or announced again, the same answer shown."""
    version, replies, shown = (
        w.store.get(event.id).version,
        thread_posts(w.fake, event.audit_ts),
        w.shown(view_id),
    )
    w.run(lazy)
    assert w.store.get(event.id).version == version
    assert thread_posts(w.fake, event.audit_ts) == replies
    assert w.shown(view_id) == [*shown, shown[-1]]


def thread_posts(fake: FakeSlack, ts: str | None) -> list[dict[str, Any]]:
    return [c.params for c in fake.calls_to("chat.postMessage") if ts and c.params.get("thread_ts") == ts]


# -- the invoke form ----------------------------------------------------------------------------------------


def test_an_uncovered_invoke_submission_acks_first_and_its_lazy_run_grants_once(on_lambda: OnLambda) -> None:
    w = on_lambda
    view = w.open_invoke_form("U0001")
    w.clock.advance(STALE_IDENTITY)  # what the form knows about U0001 no longer counts: looked up live

    sent = w.submit(view, INVOKE_VALUES, "U0001")

    assert sent.before == [], [c.method for c in sent.before]  # no Slack call before the ack
    assert sent.title == CHECKING_TITLE
    assert w.store.list_active() == []  # nothing decided yet
    (lazy,) = sent.lazy
    w.run(lazy)
    (event,) = w.store.list_active()
    assert event.request_id == view["id"]
    assert w.shown(view["id"]) == ["Access granted"]
    assert audit_posts(w.fake, event.id) == 1
    assert w.store.get(event.id).outbox == ()  # delivered in the lazy run
    updates = len(w.fake.calls_to("views.update"))

    w.run(lazy)  # Lambda retries the lazy invocation: the first answer again, nothing stored or sent twice
    assert [e.id for e in w.store.list_active()] == [event.id]
    assert w.shown(view["id"]) == ["Access granted", "Access granted"]
    assert audit_posts(w.fake, event.id) == 1
    assert len(w.fake.calls_to("views.update")) == updates + 1


def test_a_covered_invoke_submission_is_granted_in_the_ack_and_its_lazy_run_only_delivers(
    on_lambda: OnLambda,
) -> None:
    w = on_lambda
    view = w.open_invoke_form("U0001")

    sent = w.submit(view, INVOKE_VALUES, "U0001")

    assert sent.before == [], [c.method for c in sent.before]
    assert sent.title == "Access granted"  # decided from the form's metadata: the store write, then the ack
    (event,) = w.store.list_active()
    (lazy,) = sent.lazy
    w.run(lazy)
    w.run(lazy)
    assert w.shown(view["id"]) == []  # the ack's answer stands: the lazy run decided nothing again
    assert [e.id for e in w.store.list_active()] == [event.id]
    assert audit_posts(w.fake, event.id) == 1


# -- the close, review and extend forms ---------------------------------------------------------------------


def test_a_close_form_without_fresh_roles_is_closed_by_its_lazy_run_once(on_lambda: OnLambda) -> None:
    w = on_lambda
    event = w.event("U0002")
    view = w.click("close_event", event.id, "U0ONCALL")  # an incident commander through S0ONCALL

    sent = w.submit(view, {"close_reason": "replica promoted"}, "U0ONCALL", without_metadata(view))

    assert sent.before == [], [c.method for c in sent.before]
    assert sent.title == CHECKING_TITLE
    assert w.store.get(event.id).status.ended is False
    (lazy,) = sent.lazy
    w.run(lazy)
    closed = w.store.get(event.id)
    assert (closed.status.ended, closed.closed_by) == (True, "U0ONCALL")
    assert w.shown(view["id"]) == ["Access closed"]
    assert closed.outbox == ()
    retried_changes_nothing(w, lazy, event, view["id"])  # Lambda retries it: the same answer


def test_a_close_form_with_its_roles_is_closed_in_the_ack(on_lambda: OnLambda) -> None:
    w = on_lambda
    event = w.event("U0002")
    view = w.click("close_event", event.id, "U0ONCALL")

    sent = w.submit(view, {"close_reason": "replica promoted"}, "U0ONCALL")

    assert sent.before == [], [c.method for c in sent.before]
    assert sent.title == "Access closed"
    closed = w.store.get(event.id)
    assert closed.closed_by == "U0ONCALL"
    (lazy,) = sent.lazy
    w.run(lazy)  # delivers; decides nothing again
    delivered = w.store.get(event.id)
    assert delivered.outbox == ()
    replies = thread_posts(w.fake, event.audit_ts)
    assert replies  # the close, in the audit thread
    w.run(lazy)
    assert w.shown(view["id"]) == []  # the ack's answer stands
    assert w.store.get(event.id).version == delivered.version
    assert thread_posts(w.fake, event.audit_ts) == replies


def test_a_review_form_without_fresh_roles_is_reviewed_by_its_lazy_run_once(on_lambda: OnLambda) -> None:
    w = on_lambda
    event = w.event("U0001")
    (lazy,) = w.command(f"close {event.id} replica promoted", "U0001").lazy
    w.run(lazy)
    assert w.store.get(event.id).status.ended
    view = w.click("review_event", event.id, "U0SECA")  # security through S0SEC

    sent = w.submit(view, {"review_notes": "Checked CloudTrail: fine"}, "U0SECA", without_metadata(view))

    assert sent.before == [], [c.method for c in sent.before]
    assert sent.title == CHECKING_TITLE
    assert w.store.get(event.id).reviewed_by is None
    (lazy,) = sent.lazy
    w.run(lazy)
    reviewed = w.store.get(event.id)
    assert reviewed.reviewed_by == "U0SECA"
    assert w.shown(view["id"]) == ["Reviewed"]
    retried_changes_nothing(w, lazy, event, view["id"])  # Lambda retries it: the same answer


def without_metadata(view: dict[str, Any]) -> str:
    return json.dumps(without_who(view["private_metadata"]))


def test_an_extend_form_without_fresh_roles_is_extended_by_its_lazy_run_once(on_lambda: OnLambda) -> None:
    w = on_lambda
    event = w.event("U0002")
    view = w.click("extend_event", event.id, "U0ONCALL", channel="D0002")
    w.clock.advance(STALE_ROLES)

    sent = w.submit(view, {"extend_duration": ("select", "900"), "extend_reason": JUSTIFICATION}, "U0ONCALL")

    assert sent.before == [], [c.method for c in sent.before]
    assert sent.title == CHECKING_TITLE
    assert w.store.get(event.id).extensions == ()
    (lazy,) = sent.lazy
    w.run(lazy)
    extended = w.store.get(event.id)
    assert [x.request_id for x in extended.extensions] == [view["id"]]
    assert extended.expires_at == event.expires_at + timedelta(minutes=15)
    assert w.shown(view["id"]) == ["Access extended"]
    retried_changes_nothing(w, lazy, event, view["id"])  # Lambda retries it: the same answer


def test_a_retried_lazy_extend_command_extends_once(on_lambda: OnLambda) -> None:
    w = on_lambda
    event = w.event("U0001")

    sent = w.command(f"extend {event.id} 15m {JUSTIFICATION}", "U0001")

    assert sent.before == [], [c.method for c in sent.before]
    assert sent.response["body"] == ""  # an empty ack: decided in the lazy run
    assert w.store.get(event.id).extensions == ()
    (lazy,) = sent.lazy
    w.run(lazy)
    extended = w.store.get(event.id)
    assert len(extended.extensions) == 1
    assert extended.expires_at == event.expires_at + timedelta(minutes=15)
    replies = thread_posts(w.fake, event.audit_ts)
    (first,) = [c for c in w.fake.calls_to("response_url") if "extended" in json.dumps(c.params).lower()]

    w.run(lazy)  # Lambda retries it: it reads one extension now, and still extends nothing more
    again = w.store.get(event.id)
    assert (len(again.extensions), again.expires_at, again.version) == (
        1,
        extended.expires_at,
        extended.version,
    )
    assert thread_posts(w.fake, event.audit_ts) == replies
    *_, last = w.fake.calls_to("response_url")
    assert last.params["text"] == first.params["text"]  # the same answer


def test_a_retried_lazy_close_command_closes_once(on_lambda: OnLambda) -> None:
    w = on_lambda
    event = w.event("U0002")

    sent = w.command(f"close {event.id} replica promoted", "U0ONCALL")

    assert sent.before == [] and sent.response["body"] == ""
    (lazy,) = sent.lazy
    w.run(lazy)
    closed = w.store.get(event.id)
    assert closed.closed_by == "U0ONCALL" and closed.outbox == ()
    replies = thread_posts(w.fake, event.audit_ts)
    w.run(lazy)  # retried: a close of an ended event changes nothing
    assert w.store.get(event.id).version == closed.version
    assert thread_posts(w.fake, event.audit_ts) == replies


def test_a_lazy_run_logs_no_warning(on_lambda: OnLambda, caplog: pytest.LogCaptureFixture) -> None:
    """Bolt copies a request's context for its lazy listeners: the bot's own context is shared, not
    copied (Bolt warned "Skipped setting 'breakglass' to a copied request…" on every such request)."""
    w = on_lambda
    with caplog.at_level(logging.WARNING):
        w.event("U0001")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- every deciding request: nothing asked of Slack before its response --------------------------------------


def test_no_slack_call_before_any_deciding_ack_on_lambda(on_lambda: OnLambda) -> None:
    """Each deciding listener on Lambda, in the cases that need a lookup (and the slash subcommands):
    nothing reaches Slack before the response, and the lazy run then decides. (A command or button that
    only opens a form opens it before its response on Lambda, by design: no second invocation for it.)"""
    w = on_lambda
    held = w.event("U0001")
    other = w.event("U0002")
    deciding = {  # Bolt's own list of the app's listeners: those that decide in a lazy run
        id(listener): listener
        for listener in w.runtime.bolt._listeners
        if [f.__name__ for f in listener.lazy_functions] == [LAZY_DECIDE_NAME]
    }
    driven: set[int] = set()
    for key, listener in deciding.items():  # record which of them the requests below reach

        def recorded(*args: Any, __fn: Any = listener.ack_function, __key: int = key, **kwargs: Any) -> Any:
            driven.add(__key)
            return __fn(*args, **kwargs)

        listener.ack_function = recorded

    def check(case: str, sent: Sent) -> None:
        assert sent.before == [], f"{case}: Slack received {[c.method for c in sent.before]} before the ack"
        if sent.body.get("response_action") == "update":
            assert sent.title == CHECKING_TITLE, case
        (lazy,) = sent.lazy
        w.run(lazy)

    for text, user in [
        ("help", "U0001"),
        ("nonsense", "U0001"),
        ("list", "U0ONCALL"),
        (f"status {held.id}", "U0002"),
        ("history", "U0SECA"),
        ("review", "U0SECA"),
        (f"extend {held.id} 15m {JUSTIFICATION}", "U0ONCALL"),
        (f"close {other.id} replica promoted", "U0ONCALL"),
        (f"sandbox 30m incident {JUSTIFICATION}", "U0SRE"),
    ]:
        check(f"/breakglass {text}", w.command(text, user))
    invoke_form = w.open_invoke_form("U0IC")
    close_form = w.click("close_event", held.id, "U0ONCALL")
    extend_form = w.click("extend_event", held.id, "U0ONCALL", channel="D0001")
    w.clock.advance(STALE_IDENTITY)  # every form's metadata is stale now: each is decided after its ack
    check("invoke form", w.submit(invoke_form, INVOKE_VALUES, "U0IC"))
    check(
        "extend form",
        w.submit(
            extend_form, {"extend_duration": ("select", "900"), "extend_reason": JUSTIFICATION}, "U0ONCALL"
        ),
    )
    check("close form", w.submit(close_form, {"close_reason": "done here"}, "U0ONCALL"))
    assert w.store.get(other.id).closed_by == "U0ONCALL"
    assert w.store.get(held.id).closed_by == "U0ONCALL"
    assert len(w.store.get(held.id).extensions) == 2
    assert {e.slack_user_id for e in w.store.list_active()} == {"U0SRE", "U0IC"}
    ended_one = w.store.get(other.id)
    review_form = w.click("review_event", ended_one.id, "U0SECA")
    w.clock.advance(STALE_ROLES)
    check("review form", w.submit(review_form, {"review_notes": "Checked CloudTrail: fine"}, "U0SECA"))
    assert w.store.get(other.id).reviewed_by == "U0SECA"
    undriven = [deciding[k].ack_function for k in deciding.keys() - driven]
    assert len(deciding) == 5 and not undriven, f"deciding listeners not driven here: {undriven}"
