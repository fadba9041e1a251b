"""One pacing gate per Slack channel, shared by every delivery worker of the process.

Slack lets an app post about one message per second to a channel, with short bursts; past that it answers
HTTP 429 with `Retry-After` and asks the app to leave *the whole channel* alone until then. slack_sdk's
`RateLimitErrorRetryHandler` only sleeps the one request that got the 429, so four delivery workers posting
to the audit channel kept hitting it while the others were told to wait. Here:

* `ChannelGate` holds, per channel: a token bucket at Slack's published rate (`RATE`, `BURST`, a little
  under what Slack allows, so a burst of invocations causes few 429s; a post takes its token when its
  answer is back, no earlier than Slack counted it on arrival: `release`), the end of the last Retry-After
  Slack gave for it (`pause`), at most one post in flight (so no post leaves while a 429 is on its way
  back), and the posts waiting for it, in order: a root message (a post that is not a thread reply, i.e.
  a new invocation's audit message) before thread replies, then first come first served. Roots first holds
  across the delivery queue too (`attend`, bot/delivery/precedence.py): while a root is owed to a channel
  but still in the post-ack queue (or on its way from it), thread replies to that channel wait for it, and
  a delivery worker waiting with one gives way (`GaveWay`) when no other worker is free to take the root.
  A reply that has waited `patience` seconds goes in its turn like a root (never starved). A wait inside a
  delivery is bounded by the time its lease may still be held (`bot.delivery.lease`, renewed meanwhile
  by the `LeaseKeeper`); a wait that would outlast it raises `PacingTimeout` (the step stays owed and is
  retried after a backoff), and a lease lost during the wait raises `LeaseLost` before anything is sent.
* `PacedWebClient` is slack_sdk's `WebClient` with the gate in front of every paced method
  (`chat.postMessage`): it takes the channel's turn before the request and gives it back after.
* `PacedRateLimitRetryHandler` is the project's lease-bounded version of slack_sdk's 429 handler: a 429
  for a paced post pauses the channel for every worker for its Retry-After, and the retry waits for the
  end of that pause in the gate instead of sleeping on its own.

Across replicas the gate is per process: each replica honours every 429 it is given.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from slack_sdk import WebClient
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.slack_response import SlackResponse

from bot.clock import Clock
from bot.delivery.errors import DeliveryFailed, LeaseLost
from bot.delivery.lease import SEND_MARGIN, lease_lost, lease_time_left
from bot.delivery.precedence import GaveWay, WorkerTurn, current_turn
from bot.delivery.queue import DeliveryQueue
from bot.delivery.retry import LeaseBoundedRateLimitRetryHandler, retry_after

RATE = 0.95
"""Posts per second per channel (Slack publishes about 1): a little under it, as Slack measures on arrival."""
BURST = 3
"""Posts a channel may take at once after a quiet spell (Slack allows "short bursts", size unpublished)."""
PACED_METHODS = frozenset({"chat.postMessage"})
ROOT, THREAD = 0, 1  # the order waiting posts take their turn in
MAX_CHANNELS = 5_000  # channels remembered (the audit channels and every invoker's DM) before idle ones go
POLL = 1.0  # seconds: how often a waiting post looks again (its lease, the injectable clock)
PATIENCE = 30.0
"""Seconds a thread reply holds back for new invocations' root messages; then it goes in turn like a root."""


class PacingTimeout(DeliveryFailed):
    """The channel's turn would come after the delivery's lease may be held: the step stays owed."""


class _Ticket(NamedTuple):
    priority: int  # ROOT or THREAD
    since: float  # when it (a reply: across give-ways) first waited
    number: int  # arrival order


@dataclass
class _Channel:
    tokens: float
    updated: float
    paused_until: float = 0.0
    busy: bool = False  # a post to it is in flight
    waiting: list[_Ticket] = field(default_factory=list)


class PacingClock:
    """The gate's seconds: real monotonic time, moved on by the bot's injectable clock whenever that runs
    ahead (a test advancing its ManualClock past a Retry-After, `try` fast-forwarding), never backwards."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._started = (time.monotonic(), clock.now())
        self._high = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        real = time.monotonic() - self._started[0]
        injected = (self.clock.now() - self._started[1]).total_seconds()
        with self._lock:
            self._high = max(self._high, real, injected)
            return self._high


class ChannelGate:
    """Per-channel turns for Slack posts (see the module docstring). `now` is a monotonic clock in seconds
    (`PacingClock` follows the bot's injectable one); a waiting post looks again every `POLL` seconds, or
    at once on `wake()`."""

    def __init__(
        self,
        rate: float = RATE,
        burst: int = BURST,
        *,
        now: Callable[[], float] = time.monotonic,
        patience: float = PATIENCE,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.now = now
        self.patience = patience
        self.backlog: DeliveryQueue | None = None
        self._channels: dict[str, _Channel] = {}
        self._cond = threading.Condition()
        self._tickets = itertools.count()

    def __deepcopy__(self, memo: dict[int, Any]) -> ChannelGate:
        return self  # Bolt deep-copies a request's context (its client included): one gate per process

    def follow(self, clock: Clock) -> None:
        """Measure pauses and pacing on `clock` too (create_app passes the bot's injectable clock)."""
        self.now = PacingClock(clock)

    def attend(self, backlog: DeliveryQueue) -> None:
        """Hold thread replies back for the root messages `backlog` (the post-ack queue) still owes."""
        self.backlog = backlog
        backlog.watch(self.wake)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _channel(self, channel: str, now: float) -> _Channel:
        state = self._channels.get(channel)
        if state is None:
            if len(self._channels) >= MAX_CHANNELS:
                self._forget_idle(now)
            state = self._channels[channel] = _Channel(tokens=float(self.burst), updated=now)
        elif now > state.updated:
            state.tokens = min(float(self.burst), state.tokens + (now - state.updated) * self.rate)
            state.updated = now
        return state

    def _forget_idle(self, now: float) -> None:
        """Drop the channels a fresh entry would equal (nobody posting or waiting, no pause, bucket full)."""
        for name, state in list(self._channels.items()):
            full = state.tokens + (now - state.updated) * self.rate >= self.burst
            if not state.busy and not state.waiting and state.paused_until <= now and full:
                del self._channels[name]

    @contextmanager
    def turn(self, channel: str, priority: int = ROOT) -> Iterator[None]:
        """Wait for `channel`'s turn (bounded by the delivery's lease), hold it while the post is sent."""
        self.acquire(channel, priority)
        try:
            yield
        finally:
            self.release(channel)

    def acquire(self, channel: str, priority: int = ROOT) -> None:
        deadline = self._deadline()
        turn = current_turn()
        with self._cond:
            now = self.now()
            since = turn.since if priority == THREAD and turn and turn.since is not None else now
            ticket = _Ticket(priority, since, next(self._tickets))
            self._channel(channel, now).waiting.append(ticket)
            if turn is not None and turn.root == channel:
                # a root: from here on the gate orders it before the replies. A thread reply: its delivery
                # owes that channel no root any more (a reply follows its event's root, which was posted,
                # here or by another process that delivered the event first), and a root it still counted
                # as owed would hold back its own reply until the gate ran out of patience
                turn.root_in_gate(channel)
                self._cond.notify_all()
            try:
                while True:
                    now = self.now()
                    state = self._channel(channel, now)
                    if self._holds_back(ticket, channel, now):
                        if turn is not None and turn.may_give_way and self._gives_way(channel, turn):
                            raise GaveWay(channel, ticket.since)
                        wait = None  # until the owed root is in the gate (woken), or POLL
                    else:
                        wait = self._wait(state, ticket, now)
                    if wait == 0.0:
                        state.waiting.remove(ticket)
                        state.busy = True  # its token is taken when it is back (`release`)
                        if turn is not None:
                            turn.may_give_way = False  # this step has its turn: it never gives way now
                        return
                    if lease_lost():
                        raise LeaseLost("the delivery lease was lost while waiting for the channel's turn")
                    if deadline is not None and now + (wait or 0.0) > deadline:
                        raise PacingTimeout(f"channel {channel} is paced past what the delivery may hold")
                    self._cond.wait(min(wait, POLL) if wait else POLL)
            except BaseException:
                state = self._channels[channel]
                if ticket in state.waiting:
                    state.waiting.remove(ticket)
                    self._cond.notify_all()
                raise

    def _holds_back(self, ticket: _Ticket, channel: str, now: float) -> bool:
        """A thread reply that has not run out of patience waits while a root is owed to its channel but
        not yet in this gate (still in the post-ack queue, or on a worker on its way here)."""
        return (
            ticket.priority == THREAD
            and now - ticket.since < self.patience
            and self.backlog is not None
            and self.backlog.roots_owed(channel) > 0
        )

    def _gives_way(self, channel: str, turn: WorkerTurn) -> bool:
        assert self.backlog is not None
        if self.backlog.should_give_way(channel):
            turn.gave_way = True
            return True
        return False

    def _order(self, ticket: _Ticket, now: float) -> tuple[int, float, int]:
        """Roots first (and replies out of patience, by when they first waited), then replies, FIFO."""
        if ticket.priority == ROOT or now - ticket.since >= self.patience:
            return (ROOT, ticket.since, ticket.number)
        return (THREAD, ticket.since, ticket.number)

    def _deadline(self) -> float | None:
        """Inside a delivery: the latest time (gate seconds) a post may start, by the delivery's lease."""
        left = lease_time_left()
        return None if left is None else self.now() + left - SEND_MARGIN.total_seconds()

    def _wait(self, state: _Channel, ticket: _Ticket, now: float) -> float | None:
        """0: `ticket` may post now; else seconds until it may (None: until another post finishes)."""
        if state.busy or min(state.waiting, key=lambda t: self._order(t, now)) != ticket:
            return None
        if now < state.paused_until:
            return state.paused_until - now
        if state.tokens < 1.0:
            return (1.0 - state.tokens) / self.rate
        return 0.0

    def release(self, channel: str) -> None:
        """The post holding `channel`'s turn is back: it takes its token now, not when it was sent. Slack
        counts a post when it *arrives*, some time between the send and the answer (later under CPU load:
        the request is built, sent and parsed first), so counting each post at its answer, with one post in
        flight, keeps the gate's bucket at or below Slack's whatever that delay was: spacing between
        answers and sends is at least Slack's spacing between arrivals."""
        with self._cond:
            state = self._channel(channel, self.now())
            state.busy = False
            state.tokens -= 1.0
            self._cond.notify_all()

    def pause(self, channel: str, retry_after: float) -> None:
        """Slack answered 429 for `channel`: nobody posts to it for `retry_after` seconds (from now)."""
        with self._cond:
            now = self.now()
            state = self._channel(channel, now)
            state.paused_until = max(state.paused_until, now + retry_after)
            state.tokens = 1.0  # one post when the pause is over, then the bucket refills from there
            state.updated = state.paused_until
            self._cond.notify_all()

    def wait_out_pause(self, channel: str) -> None:
        """The post holding `channel`'s turn got a 429: wait until its pause is over (bounded by the lease)."""
        deadline = self._deadline()
        with self._cond:
            while True:
                now = self.now()
                state = self._channel(channel, now)
                wait = state.paused_until - now
                if wait <= 0:
                    return  # the retry is that one post: its token is taken when it is back (`release`)
                if lease_lost():
                    raise LeaseLost("the delivery lease was lost during Slack's Retry-After wait")
                if deadline is not None and now + wait > deadline:
                    raise PacingTimeout(f"channel {channel} is paused past what the delivery may hold")
                self._cond.wait(min(wait, POLL))

    def paused_for(self, channel: str) -> float:
        """Seconds `channel` is still paused for (0 if not)."""
        with self._cond:
            state = self._channels.get(channel)
            return max(0.0, state.paused_until - self.now()) if state else 0.0


# The paced post this thread is sending (for the 429 handler): (gate, channel).
_sending: contextvars.ContextVar[tuple[ChannelGate, str] | None] = contextvars.ContextVar(
    "breakglass_paced_post", default=None
)


class PacedWebClient(WebClient):
    """slack_sdk's WebClient with `gate` in front of each paced method (chat.postMessage), by channel."""

    def __init__(self, *args: Any, gate: ChannelGate | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate or ChannelGate()

    def api_call(self, api_method: str, **kwargs: Any) -> SlackResponse:
        if api_method not in PACED_METHODS:
            return super().api_call(api_method, **kwargs)
        args = {**(kwargs.get("params") or {}), **(kwargs.get("data") or {}), **(kwargs.get("json") or {})}
        channel = args.get("channel")
        if not isinstance(channel, str) or not channel:
            return super().api_call(api_method, **kwargs)
        priority = THREAD if args.get("thread_ts") else ROOT
        with self.gate.turn(channel, priority):
            token = _sending.set((self.gate, channel))
            try:
                return super().api_call(api_method, **kwargs)
            finally:
                _sending.reset(token)


class PacedRateLimitRetryHandler(LeaseBoundedRateLimitRetryHandler):
    """slack_sdk's 429 handler, bounded by the delivery's lease (`LeaseBoundedRateLimitRetryHandler`), and,
    for a paced post: the 429 pauses the channel for every worker for its Retry-After (even when the post
    is not retried), and the retry waits out that pause in the gate."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        sending = _sending.get()
        if sending is not None and response is not None and response.status_code == 429:
            gate, channel = sending
            gate.pause(channel, retry_after(response))
        return super()._can_retry(state=state, request=request, response=response, error=error)

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        sending = _sending.get()
        if sending is None:
            super().prepare_for_next_attempt(state=state, request=request, response=response, error=error)
            return
        gate, channel = sending
        state.next_attempt_requested = True
        gate.wait_out_pause(channel)  # the turn stays ours: nobody else posts to the channel meanwhile
        state.increment_current_attempt()
