"""Every listener of the real app acks with no Slack round trip before it (bot.slack.roles_meta, bot.invoker).

The listeners are read from Bolt's own list of the app (`App._listeners`): each must have a driver here,
so a new listener without one fails `test_every_registered_listener_is_driven`. Each driver sends signed
requests to the bot's real HTTP endpoint, with every fake Slack answer delayed by SLOW and nothing cached
(`directory_ttl=0`, as once the cache has expired). While a request is in flight, the work the bot does
after its ack (`call_after_ack`, `deliver_after_ack`) is held back until the ack has arrived, so whatever
the fake Slack received before the response came back was asked *before the ack*: it must be nothing, and
the ack must come back before SLOW. Then the held work runs, and each case checks its outcome.

`test_the_check_fails_with_the_old_pre_ack_role_lookup` puts the old behaviour back (the form submissions
deciding with the live directory before the ack) and shows this check catches it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from bot import known_roles
from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from bot.slack import actions, audit_edits, commands, extend, home, invoke_form, views
from bot.slack.views import CHECKING_TITLE
from store import BreakGlassEvent
from store.sqlite import SQLiteStore
from tests.conftest import Bot, make_bot
from tests.harness import Response, view_id_of
from tests.test_flows_close import AUDIT, invoke, settled

SLOW = 1.5
JUSTIFICATION = "Database failover is stuck; promoting the replica by hand"

# Bolt's registered listeners, by the function each runs (its ack function).
NAMES: dict[Callable[..., Any], str] = {
    commands.slash_command: "/breakglass",
    views.invoke_submitted: "invoke submission",
    views.close_submitted: "close submission",
    views.review_submitted: "review submission",
    extend.extend_submitted: "extend submission",
    actions.close_clicked: "Close button",
    actions.review_clicked: "Mark reviewed button",
    actions.open_clicked: "Break glass button",
    extend.extend_clicked: "Extend button",
    invoke_form.profile_chosen: "profile select",
    home.home_opened: "app_home_opened",
    audit_edits.ignore: "message",
}
LOCAL_NAMES = {"bot.slack.audit_edits.register.<locals>.changed": "message_changed"}


def listener_name(listener: Any) -> str:
    fn = listener.ack_function
    fn = getattr(fn, "__wrapped__", fn)
    return NAMES.get(fn) or LOCAL_NAMES.get(
        f"{fn.__module__}.{fn.__qualname__}", f"{fn.__module__}.{fn.__qualname__}"
    )


class Held(Executor):
    """An executor that holds what is submitted while `holding`, and hands it to `inner` on `release()`."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.holding = False
        self.held: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self.lock:
            if self.holding:
                self.held.append((fn, args))
                return Future()
        return self.inner.submit(fn, *args, **kwargs)

    def release(self) -> None:
        with self.lock:
            self.holding, held = False, self.held
            self.held = []
        for fn, args in held:
            self.inner.submit(fn, *args)


@dataclass
class World:
    bot: Bot
    background: Held
    ran: list[str] = field(default_factory=list)
    deliveries: list[BreakGlassEvent] = field(default_factory=list)

    def ack(self, case: str, send: Callable[[], Response], listener: str) -> Response:
        """Send with Slack slowed by SLOW and the after-ack work held: the ack, checked."""
        bot = self.bot
        bot.idle()
        seen = len(bot.fake.calls)
        self.ran.clear()
        bot.fake.latency = SLOW
        self.background.holding = True
        start = time.monotonic()
        try:
            response = send()
        finally:
            latency = time.monotonic() - start
            bot.fake.latency = 0.0
            before = [c.method for c in bot.fake.calls[seen:]]
            held, self.deliveries = self.deliveries, []
            self.background.release()
            for event in held:
                bot.runtime.context.queue.deliver_after_ack(event.id)
        assert response.status == 200, f"{case}: {response.status} {response.text}"
        assert before == [], f"{case}: Slack received {before} before the ack"
        assert latency < SLOW, f"{case}: the ack took {latency:.2f}s"
        assert self.ran == [listener], f"{case}: ran {self.ran}, not {listener!r}"
        bot.idle()
        return response


@pytest.fixture
def world(fake: FakeSlack, store: SQLiteStore, policy: Policy, clock: ManualClock) -> Iterator[World]:
    bot = make_bot(fake, store, policy, clock, directory_ttl=0)
    context = bot.runtime.context
    assert context.background is not None
    w = World(bot, Held(context.background))
    context.background = w.background

    def deliver_later(event: BreakGlassEvent) -> None:
        if w.background.holding:
            w.deliveries.append(event)
        else:
            context.queue.deliver_after_ack(event.id)

    context.deliver_after_ack = deliver_later  # type: ignore[method-assign]
    for listener in bot.runtime.bolt._listeners:  # record which listener ran
        name, fn = listener_name(listener), listener.ack_function

        def recorded(*args: Any, __fn: Any = fn, __name: str = name, **kwargs: Any) -> Any:
            w.ran.append(__name)
            return __fn(*args, **kwargs)

        recorded.__wrapped__ = fn  # type: ignore[attr-defined]
        listener.ack_function = recorded
    yield w
    bot.runtime.scheduler.shutdown(wait=False)
    bot.server.stop()


# -- the forms, opened as Slack would open them (their metadata then carries who opened them) ---------------


def opened_form(bot: Bot, action: str, event_id: str, user: str, **click: Any) -> dict[str, Any]:
    """Click `action` on `event_id` as `user` and return the form the bot opened."""
    before = len(bot.fake.calls_to("views.open"))
    bot.slack.click(action, event_id, user=user, **click)
    (call,) = bot.fake.wait_for("views.open", before + 1, timeout=10)[before:]
    bot.idle()
    view: dict[str, Any] = call.params["view"]
    assert view.get("callback_id"), json.dumps(view)
    return view


def submit_form(
    bot: Bot, view: dict[str, Any], values: dict[str, Any], user: str, *, metadata: str | None = None
) -> Callable[[], Response]:
    return lambda: bot.slack.submit(
        view["callback_id"],
        values,
        user=user,
        private_metadata=view["private_metadata"] if metadata is None else metadata,
        view_id=view_id_of(bot.fake, view),
        final=False,
    )


def title(response: Response) -> str:
    return str(response.json["view"]["title"]["text"])


def outcome(bot: Bot, response: Response, view_id: str | None) -> str:
    """The title the submission ended with: in the ack, or shown after "Checking…"."""
    if not response.body:
        return ""
    if title(response) != CHECKING_TITLE:
        return title(response)
    *_, call = bot.fake.wait_for(
        "views.update",
        where=lambda c: (
            c.params.get("view_id") == view_id and c.params["view"]["title"]["text"] != CHECKING_TITLE
        ),
        timeout=10,
    )
    return str(call.params["view"]["title"]["text"])


def ended(bot: Bot, user: str = "U0001") -> BreakGlassEvent:
    event = invoke(bot, user=user)
    bot.slack.command(f"close {event.id} replica promoted", user=user)
    bot.idle()
    return settled(bot, event.id)


# -- the drivers: one per listener, each a list of cases --------------------------------------------------


def drive_command(w: World) -> None:
    bot = w.bot
    event = invoke(bot, user="U0001")
    other = invoke(bot, user="U0002")
    for text, user in [
        ("", "U0001"),
        ("sandbox", "U0001"),
        ("help", "U0001"),
        ("nonsense", "U0001"),
        ("list", "U0ONCALL"),
        (f"status {event.id}", "U0002"),
        ("history", "U0SECA"),
        ("review", "U0SECA"),
        (f"close {other.id}", "U0IC"),
        (f"extend {event.id} 15m {JUSTIFICATION}", "U0ONCALL"),
        (f"close {other.id} replica promoted", "U0ONCALL"),
        (f"sandbox 30m incident {JUSTIFICATION}", "U0SRE"),
    ]:
        w.ack(f"/breakglass {text}", lambda t=text, u=user: bot.slack.raw_command(t, u), "/breakglass")  # type: ignore[misc]
    assert bot.store.get(other.id).status.ended  # closed after its ack
    assert len(bot.store.get(event.id).extensions) == 1
    assert any(e.slack_user_id == "U0SRE" for e in bot.store.list_active())


def drive_invoke_submission(w: World) -> None:
    bot = w.bot
    for user, fresh in [("U0001", True), ("U0002", False)]:
        view_id, metadata = bot.slack.open_form(user, timeout=10)
        bot.idle()
        assert view_id and metadata
        response = w.ack(
            f"invoke submission ({'fresh' if fresh else 'no'} metadata)",
            lambda v=view_id, m=metadata if fresh else "", u=user: bot.slack.submit(  # type: ignore[misc]
                "breakglass_invoke",
                {
                    "profile": ("select", "sandbox"),
                    "reason": ("select", "incident"),
                    "justification": JUSTIFICATION,
                    "duration": ("select", "1800"),
                    "incident": None,
                },
                user=u,
                private_metadata=m,
                view_id=v,
                final=False,
            ),
            "invoke submission",
        )
        assert title(response) == ("Access granted" if fresh else CHECKING_TITLE)
        assert outcome(bot, response, view_id) == "Access granted"


def drive_close_submission(w: World) -> None:
    bot = w.bot
    for closer, holder, with_who in [
        ("U0001", "U0001", True),
        ("U0ONCALL", "U0002", True),
        ("U0IC", "U0SRE", False),
    ]:
        event = invoke(bot, user=holder)
        view = opened_form(bot, "close_event", event.id, closer)
        view_id = view_id_of(bot.fake, view)
        metadata = None if with_who else json.dumps({"event_id": event.id})
        response = w.ack(
            f"close submission by {closer}",
            submit_form(bot, view, {"close_reason": "replica promoted"}, closer, metadata=metadata),
            "close submission",
        )
        assert title(response) == ("Access closed" if with_who else CHECKING_TITLE)
        assert outcome(bot, response, view_id) == "Access closed"
        assert bot.store.get(event.id).closed_by == closer


def drive_review_submission(w: World) -> None:
    bot = w.bot
    for with_who in (True, False):
        event = ended(bot)
        view = opened_form(bot, "review_event", event.id, "U0SECA")
        view_id = view_id_of(bot.fake, view)
        metadata = None if with_who else json.dumps({"event_id": event.id})
        response = w.ack(
            f"review submission ({'with' if with_who else 'without'} who)",
            submit_form(bot, view, {"review_notes": "Checked CloudTrail: fine"}, "U0SECA", metadata=metadata),
            "review submission",
        )
        if with_who:
            assert response.body == b""  # the form closes: decided in the ack
        else:
            assert outcome(bot, response, view_id) == "Reviewed"
        assert bot.store.get(event.id).reviewed_by == "U0SECA"


def drive_extend_submission(w: World) -> None:
    bot = w.bot
    for extender, holder in [("U0001", "U0001"), ("U0ONCALL", "U0002")]:
        event = invoke(bot, user=holder)
        view = opened_form(bot, "extend_event", event.id, extender, channel="D" + holder[1:])
        response = w.ack(
            f"extend submission by {extender}",
            submit_form(
                bot, view, {"extend_duration": ("select", "900"), "extend_reason": JUSTIFICATION}, extender
            ),
            "extend submission",
        )
        assert title(response) == "Access extended"
        assert len(bot.store.get(event.id).extensions) == 1


def drive_buttons(w: World) -> None:
    bot = w.bot
    event = invoke(bot, user="U0001")
    done = ended(bot, user="U0002")
    for case, action, value, user, listener, click in [
        ("Close (audit message)", "close_event", event.id, "U0IC", "Close button", {}),
        ("Close (App Home)", "close_event", event.id, "U0001", "Close button", {"container_type": "view"}),
        ("Close (refused)", "close_event", event.id, "U0002", "Close button", {}),
        ("Extend (DM)", "extend_event", event.id, "U0001", "Extend button", {"channel": "D0001"}),
        ("Mark reviewed", "review_event", done.id, "U0SECA", "Mark reviewed button", {}),
        (
            "Break glass (App Home)",
            "open_breakglass",
            "open",
            "U0001",
            "Break glass button",
            {"container_type": "view"},
        ),
    ]:
        opens = len(bot.fake.calls_to("views.open"))
        w.ack(case, lambda a=action, v=value, u=user, c=click: bot.slack.click(a, v, user=u, **c), listener)  # type: ignore[misc]
        if case != "Close (refused)":
            assert len(bot.fake.calls_to("views.open")) > opens, case  # the form opened after the ack


def drive_profile_select(w: World) -> None:
    bot = w.bot
    view_id, _ = bot.slack.open_form("U0001", timeout=10)
    bot.idle()
    view = bot.fake.views[str(view_id)]
    payload = {
        "type": "block_actions",
        "user": {"id": "U0001", "username": "u0001", "name": "u0001", "team_id": "T0001"},
        "api_app_id": "A0001",
        "token": "deprecated",
        "container": {"type": "view", "view_id": view_id},
        "trigger_id": "1.2.profile",
        "team": {"id": "T0001", "domain": "example"},
        "view": view,
        "actions": [
            {
                "action_id": "profile",
                "block_id": "profile",
                "type": "static_select",
                "selected_option": {"text": {"type": "plain_text", "text": "prod"}, "value": "prod"},
                "action_ts": str(time.time()),
            }
        ],
    }
    w.ack("profile select", lambda: bot.slack.interactive(payload), "profile select")


def drive_events(w: World) -> None:
    bot = w.bot
    event = invoke(bot, user="U0001")
    w.ack(
        "app_home_opened",
        lambda: bot.slack.event(
            {"type": "app_home_opened", "user": "U0001", "channel": "D0001", "tab": "home"}
        ),
        "app_home_opened",
    )
    root = bot.fake.message(AUDIT, str(event.audit_ts))
    edited = {**root, "text": "nothing to see here", "blocks": [], "edited": {"user": "U0002"}}
    w.ack(
        "message_changed (a foreign edit of an audit message)",
        lambda: bot.slack.event(
            {
                "type": "message",
                "subtype": "message_changed",
                "channel": AUDIT,
                "message": edited,
                "previous_message": root,
                "ts": "1700000999.000100",
            }
        ),
        "message_changed",
    )
    w.ack(
        "message",
        lambda: bot.slack.event(
            {"type": "message", "channel": AUDIT, "user": "U0002", "text": "hello", "ts": "1700000999.000200"}
        ),
        "message",
    )


DRIVERS: dict[str, Callable[[World], None]] = {
    "/breakglass": drive_command,
    "invoke submission": drive_invoke_submission,
    "close submission": drive_close_submission,
    "review submission": drive_review_submission,
    "extend submission": drive_extend_submission,
    "Close button": drive_buttons,
    "Mark reviewed button": drive_buttons,
    "Break glass button": drive_buttons,
    "Extend button": drive_buttons,
    "profile select": drive_profile_select,
    "app_home_opened": drive_events,
    "message_changed": drive_events,
    "message": drive_events,
}


def test_every_registered_listener_is_driven(world: World) -> None:
    registered = sorted(listener_name(listener) for listener in world.bot.runtime.bolt._listeners)
    assert sorted(set(registered)) == sorted(DRIVERS), "a listener without a driver here (or a stale driver)"
    assert len(registered) == len(set(registered))


@pytest.mark.parametrize(
    "driver", sorted({id(d): d for d in DRIVERS.values()}.values(), key=lambda d: d.__name__)
)
def test_no_round_trip_before_any_ack(world: World, driver: Callable[[World], None]) -> None:
    driver(world)


def test_the_check_fails_with_the_old_pre_ack_role_lookup(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old code: the form submissions decided with the live directory before their ack."""
    monkeypatch.setattr(known_roles, "known_service", lambda service, user_id, known: service)
    with pytest.raises(AssertionError, match=r"received \['usergroups.users.list'.*before the ack"):
        drive_close_submission(world)


@pytest.mark.parametrize("case", ["another user", "another view", "stale"])
def test_roles_not_for_this_submission_are_not_used(world: World, case: str) -> None:
    """The opener's roles decide only the submission of the user Slack signed, of that view, while fresh:
    anything else is decided after the ack with live lookups (and refused when those refuse)."""
    bot = world.bot
    event = invoke(bot, user="U0001")
    view = opened_form(bot, "close_event", event.id, "U0ONCALL")  # an incident commander (user group)
    assert json.loads(view["private_metadata"])["who"]["groups"]["S0ONCALL"] is True
    view_id, user = view_id_of(bot.fake, view), "U0ONCALL"
    if case == "another user":  # U0ONCALL's roles in a submission Slack signed for U0002
        user = "U0002"
    elif case == "another view":  # the same metadata in a view the bot did not give it to
        view_id = bot.fake.record_view({**view, "external_id": "bg-other"})["id"]
    else:
        bot.clock.advance(timedelta(seconds=1))  # older than the directory's cache (0 s here)
    response = world.ack(
        case,
        lambda: bot.slack.submit(
            "breakglass_close",
            {"close_reason": "replica promoted"},
            user=user,
            private_metadata=view["private_metadata"],
            view_id=view_id,
            final=False,
        ),
        "close submission",
    )
    assert title(response) == CHECKING_TITLE  # nothing stored before the live decision
    if case == "another user":
        assert outcome(bot, response, view_id) == "Not closed"
        assert not bot.store.get(event.id).status.ended
    else:
        assert outcome(bot, response, view_id) == "Access closed"
        assert bot.store.get(event.id).closed_by == "U0ONCALL"
