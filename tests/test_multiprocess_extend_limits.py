"""Extensions and invocations racing for the last place in a rate-limit window, across two real bot
processes (gunicorn) on one store (one SQLite file, or one DynamoDB table on a moto server) sharing one
fake Slack (issue 22): the store decides each in its atomic write, so the limit is never exceeded."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from store import open_store
from tests.harness import SlackSender
from tests.test_multiprocess import backend, bots_on, moto_url  # noqa: F401 - fixtures

POLICY = (
    "audit_channel: C0AUDIT\n"
    "security: [U0002]\n"
    "rate_limits:\n  window: 1h\n  per_user: 3\n  escalate_after: 2\n"
    "profiles:\n" + "".join(f"  p{i}:\n    durations: [15m, 1h]\n" for i in range(10))
)
REASON = "failover still running on the primary"


def test_racing_extends_and_invocations_never_exceed_per_user(
    backend: tuple[str, dict[str, str]],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """U0001 holds two events (2 of 3 places); at once, through both processes: 3 Extend submissions of
    each event and 6 invocations of other profiles. Exactly one of the 12 takes the last place; the others
    are told which limit (or that the event was extended meanwhile), and only the winner is announced."""
    with bots_on(backend, tmp_path, POLICY) as (bots, fake, store_url):
        senders = [SlackSender(b.url, fake) for b in bots]
        for profile in ("p0", "p1"):
            granted = senders[0].invoke(user="U0001", profile=profile, duration="3600").json
            assert granted["response_action"] == "update", granted
        store = open_store(store_url)
        held = {e.profile: e for e in store.list_by_invoker("U0001").items}
        deadline = time.monotonic() + 15
        while any(store.get(e.id).outbox for e in held.values()):  # both announced (p1 escalated)
            assert time.monotonic() < deadline, "the two invocations were not announced"
            time.sleep(0.05)
        posts_before = len([c for c in fake.calls_to("chat.postMessage") if c.ok])

        def submit(i: int) -> tuple[str, dict]:
            sender = senders[i % 2]
            if i < 6:
                event = held["p0" if i < 3 else "p1"]
                body = sender.submit(
                    "breakglass_extend",
                    {"extend_duration": ("select", "900"), "extend_reason": REASON},
                    user="U0001",
                    private_metadata=json.dumps({"event_id": event.id, "seen": 0}),
                ).json
                return "extend", body
            return "invoke", sender.invoke(user="U0001", profile=f"p{i - 4}", duration="3600").json

        with ThreadPoolExecutor(max_workers=12) as pool:
            results = list(pool.map(submit, range(12)))
        won = [r for r in results if r[1]["response_action"] == "update"]
        told = [r for r in results if r[1]["response_action"] == "errors"]
        assert len(won) == 1 and len(told) == 11, results
        messages = [next(iter(body["errors"].values())) for _, body in told]
        limited = [m for m in messages if "Rate limit: at most 3 break-glass" in m]
        assert all(m in limited or "extended meanwhile" in m for m in messages), messages
        assert len(limited) >= 6  # every invocation but a winning one, and every extension not raced out

        mine = store.list_by_invoker("U0001", limit=100).items
        assert len(mine) + sum(len(e.extensions) for e in mine) == 3, mine
        winner = next(e for e in mine if e.extensions or e.profile not in held)
        assert winner.escalated  # the 3rd entry in the window (escalate_after 2)

        # only the winner is announced: one thread reply or root message for it, and its escalation
        fake.wait_for(
            "chat.postMessage", 2, where=lambda c: "escalation" in c.params.get("text", ""), timeout=15
        )
        time.sleep(1.5)  # more sweeps on both processes: nothing more may be announced
        texts = [c.params.get("text", "") for c in fake.calls_to("chat.postMessage") if c.ok][posts_before:]
        assert sum("Extended by" in t for t in texts) == (1 if won[0][0] == "extend" else 0), texts
        assert sum("escalation" in t for t in texts) == 1, texts
