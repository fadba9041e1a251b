"""The per-channel pacing gate (bot/slack_pacing.py), on an injected monotonic clock: its turns, its
Retry-After pauses shared by every thread, root messages before thread replies, and the delivery's lease
bounding every wait. The same gate against the fake Slack's real per-channel limit: tests/test_slack_limits.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from bot.clock import ManualClock
from bot.delivery.errors import LeaseLost
from bot.delivery.inflight import InFlight
from bot.delivery.lease import LEASE, Lease, bounded_by
from bot.delivery.queue import ROOTS_FIRST_FOR, Delivery, DeliveryQueue
from bot.slack_pacing import PATIENCE, ROOT, THREAD, ChannelGate, PacingTimeout


class Ticker:
    """A monotonic clock that moves only when told; each move wakes the gate's waiters."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.gates: list[ChannelGate] = []

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
        for gate in self.gates:
            gate.wake()


def gate_on(ticker: Ticker, rate: float = 1.0, burst: int = 2) -> ChannelGate:
    gate = ChannelGate(rate, burst, now=ticker)
    ticker.gates.append(gate)
    return gate


def settle(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (real time) until the waiting threads have reacted to the last move of the clock."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "threads did not settle"
        time.sleep(0.005)


class Poster:
    """Threads that each take one turn on a channel and record (name, the ticker's time) when they get it."""

    def __init__(self, gate: ChannelGate, ticker: Ticker) -> None:
        self.gate = gate
        self.ticker = ticker
        self.got: list[tuple[str, float]] = []
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def post(
        self, name: str, channel: str = "C1", priority: int = ROOT, hold: threading.Event | None = None
    ) -> None:
        def run() -> None:
            try:
                with self.gate.turn(channel, priority):
                    with self._lock:
                        self.got.append((name, self.ticker()))
                    if hold is not None:
                        hold.wait(5)
            except BaseException as exc:  # recorded for the test to look at
                with self._lock:
                    self.errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def waiting(self, channel: str = "C1") -> int:
        with self.gate._cond:
            state = self.gate._channels.get(channel)
            return len(state.waiting) if state else 0

    def join(self) -> None:
        for thread in self.threads:
            thread.join(5)


def test_a_burst_then_one_post_per_interval() -> None:
    ticker = Ticker()
    gate = gate_on(ticker, rate=1.0, burst=2)
    posts = Poster(gate, ticker)
    for i in range(4):
        posts.post(f"p{i}")
    settle(lambda: len(posts.got) == 2 and posts.waiting() == 2)
    assert [at for _, at in posts.got] == [1000.0, 1000.0]  # the burst
    ticker.advance(0.5)
    time.sleep(0.05)
    assert len(posts.got) == 2  # no token yet
    ticker.advance(0.5)
    settle(lambda: len(posts.got) == 3)
    ticker.advance(1.0)
    settle(lambda: len(posts.got) == 4)
    posts.join()
    assert [at for _, at in posts.got] == [1000.0, 1000.0, 1001.0, 1002.0]
    assert posts.errors == []


def test_a_429_pauses_the_channel_for_every_thread_and_only_that_channel() -> None:
    ticker = Ticker()
    gate = gate_on(ticker, rate=1.0, burst=5)
    gate.pause("C1", 3.0)  # one worker's post got 429 + Retry-After: 3
    posts = Poster(gate, ticker)
    for i in range(3):
        posts.post(f"c1-{i}")
    posts.post("dm", channel="D1")
    settle(lambda: [n for n, _ in posts.got] == ["dm"] and posts.waiting() == 3)
    ticker.advance(2.9)
    time.sleep(0.05)
    assert [n for n, _ in posts.got] == ["dm"], "nobody posts to the channel before Retry-After runs out"
    ticker.advance(0.1)
    settle(lambda: len(posts.got) == 2)
    assert posts.got[1] == ("c1-0", 1003.0)
    # the bucket refills from the end of the pause: then one per second
    ticker.advance(1.0)
    settle(lambda: len(posts.got) == 3)
    ticker.advance(1.0)
    settle(lambda: len(posts.got) == 4)
    posts.join()
    assert [at for _, at in posts.got[1:]] == [1003.0, 1004.0, 1005.0]
    assert gate.paused_for("C1") == 0.0


def test_one_post_in_flight_per_channel() -> None:
    """While a post is on its way (its 429 may be coming back), the next one to the channel waits."""
    ticker = Ticker()
    gate = gate_on(ticker, rate=1.0, burst=4)
    posts = Poster(gate, ticker)
    release = threading.Event()
    posts.post("first", hold=release)
    settle(lambda: len(posts.got) == 1)
    posts.post("second")
    settle(lambda: posts.waiting() == 1)
    time.sleep(0.05)
    assert len(posts.got) == 1
    release.set()
    settle(lambda: len(posts.got) == 2)
    posts.join()


def test_a_post_counts_against_the_channel_when_its_answer_is_back_not_when_it_was_sent() -> None:
    """Slack counts a post when it arrives, which may be well after the send began (under CPU load the
    request is built, sent and parsed first): the first posts of a burst sent at once but slow to arrive,
    then the next one sent on time, arrived too close together and got a 429 (the burst test under load).
    Counted when its answer is back (no earlier than its arrival), the spacing Slack sees is never short."""
    ticker = Ticker()
    gate = gate_on(ticker, rate=1.0, burst=1)
    posts = Poster(gate, ticker)
    answer = threading.Event()
    posts.post("slow", hold=answer)  # sent at 1000, its request reaches Slack late
    settle(lambda: len(posts.got) == 1)
    posts.post("next")
    settle(lambda: posts.waiting() == 1)
    ticker.advance(0.4)  # the answer comes back 0.4 s after the send (it arrived somewhere in between)
    answer.set()
    settle(lambda: not gate._channels["C1"].busy)
    ticker.advance(0.6)  # one interval after the send, but not after the answer
    time.sleep(0.05)
    assert [n for n, _ in posts.got] == ["slow"], "the next post waits one interval from the answer"
    ticker.advance(0.4)
    settle(lambda: len(posts.got) == 2)
    posts.join()
    assert posts.got == [("slow", 1000.0), ("next", 1001.4)]
    assert posts.errors == []


def test_root_messages_take_their_turn_before_thread_replies() -> None:
    ticker = Ticker()
    gate = gate_on(ticker, rate=1.0, burst=1)
    posts = Poster(gate, ticker)
    release = threading.Event()
    posts.post("busy", hold=release)  # the channel's turn is taken while the others arrive
    settle(lambda: len(posts.got) == 1)
    posts.post("reply-old-1", priority=THREAD)
    settle(lambda: posts.waiting() == 1)
    posts.post("reply-old-2", priority=THREAD)
    settle(lambda: posts.waiting() == 2)
    posts.post("root-new-1", priority=ROOT)
    settle(lambda: posts.waiting() == 3)
    posts.post("root-new-2", priority=ROOT)
    settle(lambda: posts.waiting() == 4)
    release.set()  # its answer is back at 1000: it counts against the channel from then
    settle(lambda: not gate._channels["C1"].busy)
    for expected in range(2, 6):
        ticker.advance(1.0)
        settle(lambda n=expected: len(posts.got) == n)
    posts.join()
    assert [n for n, _ in posts.got] == ["busy", "root-new-1", "root-new-2", "reply-old-1", "reply-old-2"]


def _lease(clock: ManualClock, left: timedelta) -> Lease:
    """A delivery lease that may be held for `left` more (MAX_HOLD counted from its claim)."""
    now = clock.now()
    return Lease(until=now + LEASE, attempts=1, deadline=now + left)


def test_a_wait_longer_than_the_lease_may_be_held_fails_the_send_before_it_starts() -> None:
    ticker, clock = Ticker(), ManualClock(datetime(2026, 12, 3, 12, tzinfo=UTC))
    gate = gate_on(ticker)
    gate.pause("C1", 30.0)
    with bounded_by(_lease(clock, timedelta(seconds=20)), clock), pytest.raises(PacingTimeout):
        gate.acquire("C1")
    assert gate._channels["C1"].waiting == [] and not gate._channels["C1"].busy
    # within the lease it waits, and is sent when the pause is over
    gate.pause("C2", 5.0)
    posts = Poster(gate, ticker)
    lease = _lease(clock, timedelta(seconds=60))

    def deliver() -> None:
        with bounded_by(lease, clock), gate.turn("C2"):
            posts.got.append(("sent", ticker()))

    worker = threading.Thread(target=deliver, daemon=True)
    worker.start()
    settle(lambda: posts.waiting("C2") == 1)
    ticker.advance(5.0)
    worker.join(5)
    assert posts.got == [("sent", 1005.0)]


def test_a_lease_lost_during_the_wait_stops_the_send() -> None:
    ticker, clock = Ticker(), ManualClock(datetime(2026, 12, 3, 12, tzinfo=UTC))
    gate = gate_on(ticker)
    gate.pause("C1", 10.0)
    lease = _lease(clock, timedelta(minutes=2))
    failed: list[BaseException] = []

    def deliver() -> None:
        try:
            with bounded_by(lease, clock):
                gate.acquire("C1")
        except BaseException as exc:
            failed.append(exc)

    worker = threading.Thread(target=deliver, daemon=True)
    worker.start()
    settle(lambda: bool(gate._channels["C1"].waiting))
    lease.lose()  # another process took the delivery over
    ticker.advance(0.0)
    worker.join(5)
    assert len(failed) == 1 and isinstance(failed[0], LeaseLost)
    assert gate._channels["C1"].waiting == []


def test_idle_channels_are_forgotten_and_paused_ones_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot import slack_pacing

    monkeypatch.setattr(slack_pacing, "MAX_CHANNELS", 3)
    ticker = Ticker()
    gate = gate_on(ticker, rate=1.0, burst=2)
    for channel in ("D1", "D2"):
        with gate.turn(channel):
            pass
    gate.pause("C0AUDIT", 60.0)
    ticker.advance(5.0)  # D1 and D2 are full again
    with gate.turn("D3"):
        pass
    assert set(gate._channels) == {"C0AUDIT", "D3"}
    assert gate.paused_for("C0AUDIT") == 55.0


# -- roots first across the post-ack queue (bot/delivery/queue.py, bot/delivery/precedence.py) ------------


def attended_gate(patience: float) -> tuple[Ticker, ChannelGate, DeliveryQueue]:
    """A gate on a ticker that holds thread replies back for the roots a post-ack queue owes."""
    ticker = Ticker()
    gate = ChannelGate(1.0, 5, now=ticker, patience=patience)
    ticker.gates.append(gate)
    queue = DeliveryQueue(InFlight())
    gate.attend(queue)
    return ticker, gate, queue


def test_a_reply_waits_for_a_root_still_in_the_queue_but_not_past_its_patience() -> None:
    """A root owed to C1 but still in the post-ack queue holds back a thread reply (from the sweep, no
    worker) however free the channel is; after `patience` seconds the reply goes anyway (never starved)."""
    ticker, gate, queue = attended_gate(patience=10.0)
    queue.put(Delivery("new", root="C1"))
    posts = Poster(gate, ticker)
    posts.post("reply-old", priority=THREAD)
    posts.post("dm", channel="D1", priority=THREAD)  # another channel: not held back
    settle(lambda: [n for n, _ in posts.got] == ["dm"] and posts.waiting() == 1)
    ticker.advance(9.0)
    time.sleep(0.05)
    assert [n for n, _ in posts.got] == ["dm"], "held back while the root is owed"
    ticker.advance(1.0)
    settle(lambda: len(posts.got) == 2)
    assert posts.got[1] == ("reply-old", 1010.0)
    posts.join()
    assert posts.errors == []
    assert queue.roots_owed("C1") == 1 and queue.should_give_way("C1")  # no worker is there to take it


def test_a_worker_gives_way_only_when_no_other_worker_is_free_for_the_root() -> None:
    from bot.delivery.precedence import GaveWay, WorkerTurn, may_give_way, working

    _, gate, queue = attended_gate(patience=PATIENCE)
    queue.put(Delivery("new", root="C1"))
    with working(WorkerTurn(queue)) as turn, may_give_way(True), pytest.raises(GaveWay):
        gate.acquire("C1", THREAD)
    assert turn.gave_way and gate._channels["C1"].waiting == []
    assert not queue.should_give_way("C1"), "the worker that gave way is counted as coming back"
    work = queue.get(returning=True)
    assert work == Delivery("new", root="C1")
    assert queue.roots_owed("C1") == 1, "taken, not yet in the gate: replies still wait"
    with working(WorkerTurn(queue, root="C1")), gate.turn("C1", ROOT):
        assert queue.roots_owed("C1") == 0
    with working(WorkerTurn(queue)), may_give_way(True), gate.turn("C1", THREAD):
        assert not gate.paused_for("C1")  # nothing owed: the reply takes its turn


def test_a_delivery_queued_for_a_root_another_process_posted_is_not_held_back_by_it() -> None:
    """A delivery queued owing C1's root (the event as this process saw it) finds the root posted by another
    process that delivered the event first, so it sends a thread reply: that root no longer counts as owed.
    It used to: the reply was held back by its own delivery's root, in the gate until its patience ran out
    (30 s; two bots on one DynamoDB store missed a close's thread reply under CPU load)."""
    from bot.delivery.precedence import WorkerTurn, may_give_way, working

    ticker, gate, queue = attended_gate(patience=30.0)
    queue.put(Delivery("ev", root="C1"))
    work = queue.get()
    assert isinstance(work, Delivery) and work.root == "C1" and queue.roots_owed("C1") == 1
    got: list[float] = []

    def deliver() -> None:
        with working(WorkerTurn(queue, root=work.root)), may_give_way(True), gate.turn("C1", THREAD):
            got.append(ticker())

    worker = threading.Thread(target=deliver, daemon=True)
    worker.start()
    worker.join(3)
    assert got == [1000.0], "the reply took its turn at once, not after the gate's patience"
    assert queue.roots_owed("C1") == 0


def test_roots_go_first_in_the_queue_but_never_starve_the_rest() -> None:
    """Deliveries owing a root are taken before other work, until the oldest other work has waited
    `ROOTS_FIRST_FOR`: then it is taken next, however many roots are still queued (a stream of
    invocations never holds back a close's DM or a delivery that gave way for good)."""

    ticker = Ticker()
    queue = DeliveryQueue(InFlight(), now=ticker)
    queue.put(Delivery("closed-old"))
    for i in range(3):
        queue.put(Delivery(f"new-{i}", root="C1"))
    assert queue.get() == Delivery("new-0", root="C1")
    ticker.advance(ROOTS_FIRST_FOR - 0.1)
    assert queue.get() == Delivery("new-1", root="C1")
    ticker.advance(0.1)
    assert queue.get() == Delivery("closed-old"), "waited ROOTS_FIRST_FOR behind the roots: taken next"
    assert queue.get() == Delivery("new-2", root="C1")
    queue.close(workers=1)
    queue.put(Delivery("after-close", root="C1"))  # refused
    assert queue.get() is None
