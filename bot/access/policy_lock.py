"""One writer at a time for a permission set's inline policy, across processes and replicas.

A revoke reads the inline policy, adds its deny and writes it back; two revokes of *different* people on one
permission set (each holding only its own assignment's lock) would otherwise race, and the later write would
drop the earlier revoke's deny: that person's sessions would stay alive. The provider takes this lock around
each read-modify-write (:class:`~bot.access.identity_center.IdentityCenterProvider`'s ``policy_lock``).

:class:`StorePolicyLock` is a named lease in the store (``Store.claim``, atomic on SQLite and DynamoDB): a
holder that dies lets it run out after ``hold``. A writer waits up to ``wait`` for it, then fails the step
with a :class:`~bot.access.base.TransientAccessError` (retried by the pipeline like any AWS trouble).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import timedelta
from typing import Protocol

from bot.access.base import TransientAccessError
from bot.clock import Clock

PolicyLock = Callable[[str], AbstractContextManager[None]]
"""``lock(permission_set_arn)``: a context manager held while the permission set's inline policy is
read, changed and written."""


def no_policy_lock(_permission_set: str) -> AbstractContextManager[None]:
    """For one process with one writer (tests of the provider alone)."""
    return nullcontext()


class Claims(Protocol):
    def claim(self, name: str, *, now: object, hold: timedelta) -> bool: ...

    def finish_claim(self, name: str, *, until: object) -> None: ...


class StorePolicyLock:
    """The policy lock as a lease in the store (see the module docstring)."""

    def __init__(
        self,
        store: Claims,
        clock: Clock,
        *,
        hold: timedelta = timedelta(minutes=2),
        wait: float = 30.0,
        poll: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.clock = clock
        self.hold = hold
        self.wait = wait
        self.poll = poll
        self.sleep = sleep
        self.monotonic = monotonic

    @contextmanager
    def __call__(self, permission_set: str) -> Iterator[None]:
        name = f"access-policy-lock:{permission_set}"
        give_up = self.monotonic() + self.wait
        while not self.store.claim(name, now=self.clock.now(), hold=self.hold):
            if self.monotonic() >= give_up:
                raise TransientAccessError(
                    f"another revoke is writing the inline policy of {permission_set} (waited {self.wait:.0f} s)"
                )
            self.sleep(self.poll)
        try:
            yield
        finally:
            self.store.finish_claim(name, until=self.clock.now())
