"""The tests' moto gives DynamoDB's guarantee that of two conditional writes on the same version exactly one
wins (tests/moto_atomic.py), for every moto in the run, not only for fixtures that ask for it."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest
from moto.dynamodb.models import table as moto_table
from moto.dynamodb.responses import DynamoHandler

from store import ConcurrentModification
from store.dynamodb import DynamoDBStore
from tests import moto_atomic
from tests.store_fixtures import make_event

pytest_plugins = ["tests.store_fixtures"]


def race_two_saves(store: DynamoDBStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two threads save the same version of one event; each condition is checked, then both threads meet
    before either writes (a barrier inside moto's condition evaluation), the interleaving DynamoDB never
    allows. Returns the outcome of each save."""
    event = store.create(make_event())
    barrier = threading.Barrier(2)
    real = moto_table.get_filter_expression

    def meeting(*args: Any, **kwargs: Any) -> Any:
        condition = real(*args, **kwargs)
        check = condition.expr

        def expr(item: Any) -> Any:
            passed = check(item)
            if threading.current_thread().name.startswith("save-"):
                with contextlib.suppress(threading.BrokenBarrierError):  # alone: moto kept the other out
                    barrier.wait(timeout=0.5)  # meets the other save only if moto let it in meanwhile
            return passed

        condition.expr = expr  # type: ignore[method-assign]
        return condition

    monkeypatch.setattr(moto_table, "get_filter_expression", meeting)
    outcomes: list[str] = []

    def save(note: str) -> None:
        try:
            store.save(event.updated(outbox_attempts=int(note[1:]) + 1))
            outcomes.append("won")
        except ConcurrentModification:
            outcomes.append("refused")

    threads = [threading.Thread(target=save, args=(f"n{i}",), name=f"save-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(outcomes)


def test_every_moto_in_the_run_is_atomic() -> None:
    assert moto_atomic.installed()  # by tests/conftest.py, before any fixture


def test_one_of_two_conditional_saves_wins(
    moto_dynamodb: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, table = moto_dynamodb
    assert race_two_saves(DynamoDBStore(table, client=client), monkeypatch) == ["refused", "won"]


def test_moto_alone_lets_both_win(moto_dynamodb: tuple[Any, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the lock exists: without it the same race lets both conditional saves win."""
    monkeypatch.setattr(DynamoHandler, "call_action", DynamoHandler.call_action.__wrapped__)  # type: ignore[attr-defined]
    client, table = moto_dynamodb
    assert race_two_saves(DynamoDBStore(table, client=client), monkeypatch) == ["won", "won"]
