"""One event per request across real processes: the same signed view submission, replayed 20 times at once
to two bot processes (gunicorn) on one store, each copy naming another profile so that nothing stacks,
creates one event, on one SQLite file and on one DynamoDB table on a moto server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from store import open_store
from tests.harness import SlackSender
from tests.test_multiprocess import backend, bots_on, moto_url  # noqa: F401 - fixtures

POLICY = "audit_channel: C0AUDIT\nprofiles:\n" + "".join(f"  p{i}:\n    durations: [1h]\n" for i in range(20))
GOOD = "Database failover is stuck; promoting the replica by hand"


def test_a_view_submission_replayed_across_processes_makes_one_event(
    backend: tuple[str, dict[str, str]],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    with bots_on(backend, tmp_path, POLICY) as (bots, fake, store_url):
        senders = [SlackSender(b.url, fake) for b in bots]
        view_id, metadata = senders[0].open_form("U0001")  # the captured submission carries its metadata
        assert view_id and metadata

        def submit(i: int) -> dict:
            values = {
                "profile": ("select", f"p{i}"),
                "reason": ("select", "incident"),
                "justification": GOOD,
                "duration": ("select", "3600"),
                "incident": None,
            }
            return (
                senders[i % 2]
                .submit("breakglass_invoke", values, user="U0001", view_id=view_id, private_metadata=metadata)
                .json
            )

        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(submit, range(20)))
        granted = [r for r in results if r["response_action"] == "update"]
        refused = [r for r in results if r["response_action"] == "errors"]
        assert len(granted) == 1, results
        assert len(refused) == 19
        assert all("already submitted" in r["errors"]["profile"] for r in refused), refused
        store = open_store(store_url)
        try:
            assert len(store.list_by_invoker("U0001").items) == 1
        finally:
            store.disconnect()
