"""DynamoDB executes each conditional write and each TransactWriteItems atomically and in isolation: of two
writers conditioned on the same version exactly one wins. moto does not: `put_item` reads the item, evaluates
the condition, then stores, so two threads can both pass the check, and a transaction mutates the live table
item by item and "rolls back" by restoring a copy taken when it started, which can also erase writes other
threads committed meanwhile.

`install()` makes moto handle one DynamoDB request at a time in this process, for every moto a test or a
benchmark starts (the in-process mock shared by threads, and `ThreadedMotoServer` answering several
processes), not only for the fixtures that asked for it. It used to be an opt-in fixture; the bots of
`tests/conftest.py`'s `dynamodb_bot` ran without it, and two sweeps both "won" the same delivery lease and
posted one audit message twice (tests/test_audit_channel.py, about 1 run in 12 under load). The store's own
code still runs fully concurrently; only moto's handling of one request is made indivisible, as DynamoDB's is.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from moto.dynamodb.responses import DynamoHandler

LOCK = threading.RLock()
_MARK = "__breakglass_atomic__"


def install() -> None:
    """Serialise moto's DynamoDB requests in this process (idempotent)."""
    original = DynamoHandler.call_action
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def call_action(self: DynamoHandler) -> Any:
        with LOCK:
            return original(self)

    setattr(call_action, _MARK, True)
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


def installed() -> bool:
    return bool(getattr(DynamoHandler.call_action, _MARK, False))
