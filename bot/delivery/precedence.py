"""Roots before thread replies across the whole delivery path (issue 21.2): what a delivery worker tells the
pacing gate about the work it is doing, and how a worker gives way.

The post-ack queue (bot/delivery/queue.py) takes deliveries that owe a root audit message first and counts
the roots owed per audit channel; the pacing gate (bot/slack_pacing.py) holds back thread replies to a
channel while a root is owed there. A worker waiting in the gate with an older event's thread reply, when a
root is queued for that channel and no worker is free to take it, *gives way*: the gate raises `GaveWay`
before anything is sent, the engine records what the delivery sent so far, releases the lease with the
rest due now and queues the event again (behind the root), and the worker goes back to the queue, which
hands it the root. Nothing is lost (the step stays owed in the store) and nothing is sent twice (a step
gives way only before its first post: `WorkerTurn.may_give_way` is on only while the engine sends a step
that needs the root message, a thread reply, and off once that step has taken a turn in the gate).

No thread reply waits forever: the gate lets a reply that has waited `ChannelGate.patience` seconds (since
it first waited, across give-ways: `since`) go in its turn like a root.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from bot.delivery.errors import DeliveryFailed
from bot.delivery.queue import DeliveryQueue


class GaveWay(DeliveryFailed):
    """A worker's thread reply gave way to a queued root message: the step stays owed, queued again."""

    def __init__(self, channel: str, since: float) -> None:
        super().__init__(f"a thread reply to {channel} gave way to a new invocation's root message")
        self.channel = channel
        self.since = since


@dataclass
class WorkerTurn:
    """One queued delivery on a delivery worker, as the pacing gate sees it."""

    queue: DeliveryQueue
    root: str | None = None  # the audit channel of the root it owes, until that post is in the gate
    since: float | None = None  # when its thread reply first waited (gate seconds), across give-ways
    may_give_way: bool = False  # the engine is sending a thread-reply step that has not posted yet
    gave_way: bool = False  # it did: the worker comes back to the queue for the root (`get(returning=)`)

    def root_in_gate(self, channel: str) -> None:
        """The post `channel`'s gate just queued is this delivery's root, or a thread reply to `channel` (so
        the root was posted already, maybe by another process), or the delivery ended without one."""
        if self.root is not None and self.root == channel:
            self.root = None
            self.queue.root_reached_gate(channel, wake=False)  # the gate notifies its own waiters

    def finish(self) -> None:
        if self.root is not None:
            channel, self.root = self.root, None
            self.queue.root_reached_gate(channel)


_turn: contextvars.ContextVar[WorkerTurn | None] = contextvars.ContextVar(
    "breakglass_worker_turn", default=None
)


def current_turn() -> WorkerTurn | None:
    """The queued delivery this thread works on (None: not a delivery worker, e.g. the sweep)."""
    return _turn.get()


@contextmanager
def working(turn: WorkerTurn) -> Iterator[WorkerTurn]:
    """A delivery worker delivers `turn`'s work; its owed root stops counting when it ends, posted or not."""
    token = _turn.set(turn)
    try:
        yield turn
    finally:
        _turn.reset(token)
        turn.finish()


@contextmanager
def may_give_way(allowed: bool) -> Iterator[None]:
    """Around one step's send: with `allowed`, the step may give way until it first takes a gate turn."""
    turn = _turn.get()
    if turn is None or not allowed:
        yield
        return
    turn.may_give_way = True
    try:
        yield
    finally:
        turn.may_give_way = False
