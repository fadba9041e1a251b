"""Notices reach the audit feed as soon as they are stored, not at the next sweep (issue 24's leftover):
`AuditFeed.add_notices` hands the new uids to `PromptNotices` (bot/delivery/prompt_notices.py), which
delivers them on the post-ack delivery queue (threaded runtimes) or in the same invocation's lazy delivery
run (Lambda), by the sweep's own claimed path: a sweep at the same moment, in this process or another, never
makes a notice sent twice, and the sweep stays the safety net for what fails.

No test here sleeps: the clock is injected, and the races are made deterministic by a sink that holds its
first send until the other side has run (threads), or raced by real processes on both stores."""

from __future__ import annotations

import json
import textwrap
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import lambda_handler
from bot.audit_feed.notices import refusal_notice
from bot.audit_feed.ocsf import Record
from bot.audit_feed.sinks import AuditFeed, SinkError, uid_of
from bot.clock import ManualClock
from bot.delivery.inflight import InFlight
from bot.delivery.prompt_notices import PromptNotices
from bot.delivery.queue import DeliveryQueue
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from store.model import OutboxKind
from store.sqlite import SQLiteStore
from tests.conftest import Bot
from tests.processes import race_workers
from tests.store_fixtures import BACKENDS, T0, make_event, open_test_store
from tests.test_audit_refusals import feed_bot, lines, refusals  # noqa: F401 - fixture: a bot with a file sink
from tests.test_flows_close import invoke
from tests.test_lambda import (
    FakeLambdaClient,
    LambdaContext,
    build_runtime,
    command_body,
    function_url_event,
    signed_headers,
)

pytest_plugins = ["tests.store_fixtures"]

JUSTIFICATION = "Investigating the production outage reported by on-call"


@pytest.fixture(params=BACKENDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with open_test_store(request.param, request, tmp_path) as opened:
        yield opened


class CountingSweeps:
    """Wraps a pipeline's sweep of owed deliveries (which also delivers notices) to count its runs."""

    def __init__(self, bot: Bot) -> None:
        self.runs = 0
        pipeline = bot.runtime.pipeline
        sweep = pipeline.deliver_owed

        def counted(limit: int = 100) -> int:
            self.runs += 1
            return sweep(limit)

        pipeline.deliver_owed = counted  # type: ignore[method-assign]


# -- threaded runtimes: signed requests to the bot's HTTP endpoint --------------------------------------


def test_a_refusal_reaches_the_feed_without_a_sweep(feed_bot: Bot, tmp_path: Path) -> None:  # noqa: F811
    bot = feed_bot
    sweeps = CountingSweeps(bot)
    invoke(bot)
    assert bot.slack.invoke(user="U0001").json["response_action"] == "errors"  # stacked
    bot.idle()  # the post-ack work: the delivery queue
    (record,) = refusals(tmp_path)
    assert record["unmapped"]["breakglass"]["refusal"] == "stacking" and record["status_id"] == 2
    assert bot.store.list_notices() == []  # every sink has it: nothing left for the sweep
    assert sweeps.runs == 0 and bot.runtime.scheduler.running is False
    bot.runtime.pipeline.deliver_owed()  # the sweep, afterwards: nothing sent twice
    assert len(refusals(tmp_path)) == 1


def test_a_sink_failing_at_once_leaves_the_notice_to_the_sweep(
    feed_bot: Bot,  # noqa: F811
    tmp_path: Path,
) -> None:
    bot = feed_bot
    invoke(bot)
    (sink,) = bot.runtime.pipeline.deps.audit_feed.sinks
    send = sink.send

    def down(records: Sequence[Record], *, retry: bool) -> set[str]:
        raise SinkError("disk full")

    sink.send = down  # type: ignore[method-assign]
    assert bot.slack.invoke(user="U0001").json["response_action"] == "errors"
    bot.idle()
    assert refusals(tmp_path) == [] and len(bot.store.list_notices()) == 1  # still owed
    sink.send = send  # type: ignore[method-assign]
    bot.runtime.pipeline.deliver_owed()  # the sweep is the safety net
    assert len(refusals(tmp_path)) == 1 and bot.store.list_notices() == []


# -- Lambda: the lazy delivery run of the same request ------------------------------------------------------


def test_on_lambda_a_refusal_reaches_the_feed_in_the_lazy_run_not_at_the_next_sweep(
    fake: FakeSlack, sqlite_store_lambda: SQLiteStore, policy: Policy, clock: ManualClock, tmp_path: Path
) -> None:
    runtime = build_runtime(
        fake, sqlite_store_lambda, policy, clock, breakglass_audit_feed=f"file:{tmp_path / 'audit.log'}"
    )
    lam = FakeLambdaClient()
    lambda_handler.install(runtime, lambda_client=lam)
    body = command_body(f"sandbox 15m maintenance {JUSTIFICATION}")
    # The fast path is decided in the lazy run (bot.slack.lazy_decide): the response stores nothing
    for attempt in range(2):  # granted, then refused: stacked
        response = lambda_handler.handler(function_url_event(body, signed_headers(body)), LambdaContext())
        assert response["statusCode"] == 200, response
        assert sqlite_store_lambda.list_notices() == []  # nothing decided before the answer
        assert len(lam.invocations) == attempt + 1  # each request's lazy run
        lazy = json.loads(lam.invocations[-1]["Payload"])
        assert lambda_handler.handler(lazy, LambdaContext())["statusCode"] == 200  # the lazy run, no sweep
    assert len(sqlite_store_lambda.list_active()) == 1
    # the refusal's notice was stored by the second lazy run's decision and sent by that same run
    (record,) = refusals(tmp_path)
    assert record["unmapped"]["breakglass"]["refusal"] == "stacking"
    assert sqlite_store_lambda.list_notices() == []


def test_on_lambda_a_notice_stored_by_the_lazy_run_itself_is_delivered_by_it(
    fake: FakeSlack, sqlite_store_lambda: SQLiteStore, policy: Policy, clock: ManualClock, tmp_path: Path
) -> None:
    """The audit channel found broken while the lazy run delivers the announcements: its notice is stored
    after that run's own notice delivery began, and still goes out before the run ends."""
    fake.add_channel("C0AUDIT", is_archived=True)
    runtime = build_runtime(
        fake, sqlite_store_lambda, policy, clock, breakglass_audit_feed=f"file:{tmp_path / 'audit.log'}"
    )
    lam = FakeLambdaClient()
    lambda_handler.install(runtime, lambda_client=lam)
    body = command_body(f"sandbox 15m maintenance {JUSTIFICATION}")
    assert (
        lambda_handler.handler(function_url_event(body, signed_headers(body)), LambdaContext())["statusCode"]
        == 200
    )
    lazy = json.loads(lam.invocations[-1]["Payload"])
    assert lambda_handler.handler(lazy, LambdaContext())["statusCode"] == 200
    steps = [r["unmapped"]["breakglass"]["step"] for r in lines(tmp_path)]
    assert "audit_channel_broken" in steps, steps
    assert sqlite_store_lambda.list_notices() == []


def test_on_lambda_a_notice_stored_by_the_minute_sweep_is_delivered_by_it(
    fake: FakeSlack, sqlite_store_lambda: SQLiteStore, policy: Policy, clock: ManualClock, tmp_path: Path
) -> None:
    fake.add_channel("C0AUDIT", is_archived=True)
    runtime = build_runtime(
        fake, sqlite_store_lambda, policy, clock, breakglass_audit_feed=f"file:{tmp_path / 'audit.log'}"
    )
    lambda_handler.install(runtime, lambda_client=FakeLambdaClient())
    sqlite_store_lambda.create(
        make_event(
            profile="sandbox",
            now=clock.now(),
            slack_user_id="U0001",
            audit_channel="C0AUDIT",
            outbox=(OutboxKind.AUDIT_POST,),
        )
    )
    lambda_handler.sweep_handler({"source": "aws.events", "detail-type": "Scheduled Event"}, None)
    steps = [r["unmapped"]["breakglass"]["step"] for r in lines(tmp_path)]
    assert "audit_channel_broken" in steps, steps
    assert sqlite_store_lambda.list_notices() == []


@pytest.fixture
def sqlite_store_lambda(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "lambda.db")
    yield store
    store.disconnect()


# -- the claim: a sweep and a prompt delivery at once send a notice once (both stores) --------------------


class HeldSink:
    """A sink whose first send waits until `release` (after signalling `entered`): the other side runs
    while this one is inside its send, holding the notice's claim."""

    name = "held"

    def __init__(self, *, hold: bool = True) -> None:
        self.sent: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self._first = hold

    def send(self, records: Sequence[Record], *, retry: bool) -> set[str]:
        if self._first:
            self._first = False
            self.entered.set()
            assert self.release.wait(30)
        self.sent.extend(uid_of(r) for r in records)
        return {uid_of(r) for r in records}

    def check(self) -> list[str]:
        return []


def _notice(n: int = 0) -> Any:
    return refusal_notice(
        now=T0 + timedelta(seconds=n),
        kind="stacking",
        slack_user_id="U0001",
        profile="prod",
        reason_code="incident",
        message="already holds an active event",
        request_id=f"req-{n}",
    )


@pytest.mark.parametrize("first", ["prompt", "sweep"])
def test_a_sweep_during_a_prompt_delivery_and_the_reverse_send_it_once(any_store: Any, first: str) -> None:
    sink = HeldSink()
    feed = AuditFeed(any_store, [sink])
    prompt = PromptNotices(feed, ManualClock(T0), DeliveryQueue(InFlight(), enabled=False))
    feed.on_stored = prompt.stored
    feed.add_notices([_notice()])
    results: dict[str, int] = {}

    def run(side: str) -> None:
        results[side] = prompt.flush() if side == "prompt" else feed.deliver_notices(T0)

    other = "sweep" if first == "prompt" else "prompt"
    holder = threading.Thread(target=run, args=(first,))
    holder.start()
    assert sink.entered.wait(30)  # `first` holds the notice's claim, inside its send
    run(other)  # the other side, at the same moment: the claim is taken, nothing is sent
    sink.release.set()
    holder.join(30)
    assert results == {first: 1, other: 0}
    assert sink.sent == [_notice().uid]
    assert feed.deliver_notices(T0 + timedelta(seconds=1)) == 0 and prompt.flush() == 0  # and never again
    assert sink.sent == [_notice().uid] and any_store.list_notices() == []


class RecordingQueue(DeliveryQueue):
    """The post-ack queue, recording what is put on it (run by the test, as a delivery worker would)."""

    def __init__(self) -> None:
        super().__init__(InFlight())
        self.work: list[Any] = []

    def put(self, work: Any) -> bool:
        self.work.append(work)
        return True


def test_notices_stored_while_a_prompt_delivery_is_queued_join_it(any_store: Any) -> None:
    sink = HeldSink(hold=False)
    queue = RecordingQueue()
    feed = AuditFeed(any_store, [sink])
    prompt = PromptNotices(feed, ManualClock(T0), queue)
    feed.on_stored = prompt.stored
    feed.add_notices([_notice(1)])
    feed.add_notices([_notice(2), _notice(1)])  # notice 1 again: stored once, not handed over again
    (work,) = queue.work  # one delivery queued for both
    func, args = work
    func(*args)  # what a delivery worker does
    assert sink.sent == [_notice(1).uid, _notice(2).uid]
    assert any_store.list_notices() == []
    feed.add_notices([_notice(3)])  # the queued delivery has started: a new one is queued
    assert len(queue.work) == 2


PROCESS = textwrap.dedent(
    """
    import json, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from tests.store_fixtures import dynamodb_client
    from bot.audit_feed.sinks import AuditFeed, uid_of
    from bot.clock import SystemClock
    from bot.delivery.inflight import InFlight
    from bot.delivery.prompt_notices import PromptNotices
    from bot.delivery.queue import DeliveryQueue
    from store.dynamodb import DynamoDBStore
    from store.sqlite import SQLiteStore

    kind, target, table, role, out, uids = sys.argv[1:7]
    store = SQLiteStore(target) if kind == "sqlite" else DynamoDBStore(table, client=dynamodb_client(target))

    class Lines:  # one sink (one name, so one `sent` mark) that each process writes to its own file
        name = "feed"
        def send(self, records, *, retry):
            with open(out, "a") as f:
                for r in records:
                    f.write(uid_of(r) + "\\n")
            return {uid_of(r) for r in records}
        def check(self):
            return []

    feed = AuditFeed(store, [Lines()])
    prompt = PromptNotices(feed, SystemClock(), DeliveryQueue(InFlight(), enabled=False))
    order = json.loads(uids)
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"
    if role == "sweep":
        done = feed.deliver_notices(datetime.now(UTC), limit=500)
    else:
        prompt.stored(order[::-1] if role == "prompt-reversed" else order)
        done = prompt.flush()
    print(done, flush=True)
    """
)


def _race_sweep_and_prompts(kind: str, target: str, table: str, store: Any, tmp_path: Path) -> None:
    notices = [_notice(n) for n in range(24)]
    for notice in notices:
        assert store.add_notice(notice)
    uids = json.dumps([n.uid for n in notices])
    roles = ["sweep", "prompt", "prompt-reversed"]
    argvs = [[kind, target, table, role, str(tmp_path / f"{role}.out"), uids] for role in roles]
    done = [int(last) for last in race_workers(PROCESS, argvs)]
    sent = [
        line
        for role in roles
        if (tmp_path / f"{role}.out").exists()
        for line in (tmp_path / f"{role}.out").read_text().split()
    ]
    assert sorted(sent) == sorted(n.uid for n in notices)  # each notice sent once, by one of the three
    assert sum(done) == len(notices)
    assert store.list_notices(limit=100) == []


def test_processes_sweeping_and_delivering_at_once_send_each_notice_once_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    store = SQLiteStore(path)
    try:
        _race_sweep_and_prompts("sqlite", str(path), "", store, tmp_path)
    finally:
        store.disconnect()


def test_processes_sweeping_and_delivering_at_once_send_each_notice_once_on_dynamodb(
    server_dynamodb: tuple[Any, str], moto_server_url: str, tmp_path: Path
) -> None:
    from store.dynamodb import DynamoDBStore

    client, table = server_dynamodb
    _race_sweep_and_prompts("dynamodb", moto_server_url, table, DynamoDBStore(table, client=client), tmp_path)
