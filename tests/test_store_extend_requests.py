"""One extension per request: an extension carries the id of the Slack request that asked for it (a slash
command's trigger id, the extend form's view id), and the store refuses a second extension of the event by
that request (`DuplicateRequest`), in the extension's own conditional write, on every backend.

On Lambda `/breakglass extend` and the extend form are decided in a lazy invocation after the ack, and
Lambda may run that invocation again: without the request id a retried `/breakglass extend` (which reads
the number of extensions afresh) extended the event twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from store.errors import DuplicateRequest
from store.model import MAX_TOTAL
from tests.store_fixtures import BACKENDS, T0, make_event, open_test_store, run_concurrently

pytest_plugins = ["tests.store_fixtures"]

MINUTE = timedelta(minutes=1)
REASON = "The failover is still running, more time needed"


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with open_test_store(request.param, request, tmp_path) as opened:
        yield opened


def extend(store: Any, event_id: str, *, seen: int, request_id: str | None, at: int = 1) -> Any:
    return store.extend(
        event_id,
        by="alice@example.com",
        duration=15 * MINUTE,
        reason=REASON,
        now=T0 + at * MINUTE,
        seen=seen,
        max_total=MAX_TOTAL,
        request_id=request_id,
    )


def test_a_retried_request_extends_once(store: Any) -> None:
    event = store.create(make_event())
    first = extend(store, event.id, seen=0, request_id="1700000000.1.trigger")
    assert store.get(event.id).extensions[0].request_id == "1700000000.1.trigger"  # stored, read back
    # a retried `/breakglass extend` counts the extensions afresh (seen=1), a retried form keeps its 0:
    # both are refused as the same request, not applied (nor refused as ExtendedMeanwhile)
    for seen in (1, 0):
        with pytest.raises(DuplicateRequest) as refused:
            extend(store, event.id, seen=seen, request_id="1700000000.1.trigger", at=2)
        assert (refused.value.request_id, refused.value.event_id) == ("1700000000.1.trigger", event.id)
    stored = store.get(event.id)
    assert len(stored.extensions) == 1
    assert stored.expires_at == first.expires_at == event.expires_at + 15 * MINUTE
    # another request (and one without an id) still extends
    assert len(extend(store, event.id, seen=1, request_id="V0OTHER", at=3).extensions) == 2
    assert len(extend(store, event.id, seen=2, request_id=None, at=4).extensions) == 3


def test_racing_attempts_of_one_request_extend_once(store: Any) -> None:
    """Eight attempts of the same request at once (Lambda retrying a slow lazy run), each having read the
    event before any extension: one extends, the others are refused as that request."""
    event = store.create(make_event())
    results = run_concurrently(8, lambda i: extend(store, event.id, seen=0, request_id="V0RACED"))
    extended = [value for outcome, value in results if outcome == "ok"]
    refused = [value for outcome, value in results if outcome == "error"]
    assert len(extended) == 1, results
    assert all(isinstance(exc, DuplicateRequest) and exc.event_id == event.id for exc in refused), refused
    assert len(store.get(event.id).extensions) == 1
