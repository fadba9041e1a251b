"""The DMs recorded on an event (`BreakGlassEvent.dms`, issue 22): how a delivery records what its sends
learned (`BreakGlassEvent.recorded`), and the field on every backend (stored, read back, absent on rows
written before it existed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from store.model import SentDM
from tests.store_fixtures import BACKENDS, make_event, open_test_store

pytest_plugins = ["tests.store_fixtures"]

WARNING = SentDM(kind="warn_dm", channel="D0001", ts="1700000100.000100")
EXTENSION = SentDM(kind="extend_dm", channel="D0001", ts="1700000200.000200")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with open_test_store(request.param, request, tmp_path) as opened:
        yield opened


def test_recorded_sets_a_field_once_and_appends_to_a_list() -> None:
    event = make_event()
    first = event.recorded({"dm_channel": "D0001", "dm_ts": "1.1"}, {"dms": (WARNING,)})
    assert (first.dm_channel, first.dm_ts, first.dms) == ("D0001", "1.1", (WARNING,))
    # a field already set is never overwritten (a retried send finds it); a list gains what it lacks
    second = first.recorded({"dm_ts": "9.9"}, {"dms": (WARNING, EXTENSION)}, {"dms": (EXTENSION,)})
    assert (second.dm_ts, second.dms) == ("1.1", (WARNING, EXTENSION))
    assert event.recorded() is event and event.recorded({}) is event


def test_a_sent_dm_from_a_newer_version_still_loads() -> None:
    loaded = SentDM.model_validate({"kind": "some_future_dm", "channel": "D1", "ts": "1.2", "thread": "x"})
    assert (loaded.kind, loaded.channel, loaded.ts) == ("some_future_dm", "D1", "1.2")


def test_dms_are_stored_and_read_back_on_every_backend(store: Any) -> None:
    event = store.create(make_event())
    assert store.get(event.id).dms == ()  # rows without the field (all of them before) read as none
    saved = store.save(event.updated(dms=(WARNING, EXTENSION)))
    assert store.get(event.id) == saved and saved.dms == (WARNING, EXTENSION)
