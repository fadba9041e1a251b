"""Incident resolve webhooks with every Slack answer delayed 80 ms (issue 23; docs/benchmarks.md section 8e).

In-process: the bot's real HTTP endpoint (tests.conftest's BotServer), the fake Slack and the fake PagerDuty
(tests/fake_incidents.py), SQLite. Each of N rounds invokes an event on `prod` linked to a fresh incident
(untimed, announced), then times one signed `incident.resolved` webhook: its HTTP answer (signature checked,
delivery claimed, the linked event closed in the store), the "Closed by PagerDuty" reply in the audit thread,
the holder's DM, the note on the incident's timeline, and the event settled (nothing owed). Also timed: a
forged webhook's 401 and a replay's 200 `duplicate`.

    python -m bench.incident_webhooks [N]     (from a source tree; PYTHONPATH=<tree> to measure another one)"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import tests.conftest as cf
from bench.common import pct
from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from store import Status
from store.sqlite import SQLiteStore
from tests.fake_incidents import FakePagerDuty
from tests.test_flows_close import settled, wait_until
from tests.test_incidents import AUDIT, pd_bot, pd_webhook

LAT = 0.08


def run(n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {
        k: []
        for k in ("webhook answered", "audit thread", "DM", "incident note", "settled", "forged", "replay")
    }
    with FakeSlack(token=cf.BOT_TOKEN, users=cf.USERS, usergroups=cf.GROUPS) as fake, FakePagerDuty() as pd:
        store = SQLiteStore(Path(tempfile.mkdtemp()) / "b.db")
        clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
        bot = pd_bot(fake, store, clock, pd)
        try:
            for i in range(n):
                incident = f"PBENCH{i:03d}"
                pd.add_incident(incident, 5000 + i, f"Outage {i}")
                bot.slack.invoke(profile="prod", incident=incident)
                event = wait_until(
                    lambda inc=incident: next(
                        (e for e in store.list_active() if e.incident_link and e.incident_link.id == inc),
                        None,
                    ),
                    "the linked event",
                )
                event = settled(bot, event.id)
                notes = len(pd.notes)
                dm = fake.dm_channel(event.invoker)
                fake.latency = LAT
                start = time.perf_counter()
                response = pd_webhook(bot, "incident.resolved", incident, event_id=f"E{i}")
                out["webhook answered"].append(time.perf_counter() - start)
                assert response.status == 200 and response.json["events"] == 1, response.text
                assert store.get(event.id).status is Status.CLOSED  # stored before the answer
                fake.wait_for(
                    "chat.postMessage",
                    where=lambda c, ts=event.audit_ts: (
                        c.params.get("channel") == AUDIT
                        and c.params.get("thread_ts") == ts
                        and "Closed by PagerDuty" in c.params.get("text", "")
                    ),
                    timeout=10,
                )
                out["audit thread"].append(time.perf_counter() - start)
                fake.wait_for(
                    "chat.postMessage",
                    where=lambda c, eid=event.id, to=(dm, event.invoker): (
                        c.params.get("channel") in to
                        and "closed by PagerDuty" in c.params.get("text", "")
                        and eid in c.params.get("text", "")
                    ),
                    timeout=10,
                )
                out["DM"].append(time.perf_counter() - start)
                wait_until(lambda k=notes: len(pd.notes) > k, "the incident note", timeout=10)
                out["incident note"].append(time.perf_counter() - start)
                settled(bot, event.id)
                out["settled"].append(time.perf_counter() - start)
                start = time.perf_counter()
                assert pd_webhook(bot, "incident.resolved", incident, secret="forged").status == 401
                out["forged"].append(time.perf_counter() - start)
                start = time.perf_counter()
                again = pd_webhook(bot, "incident.resolved", incident, event_id=f"E{i}")
                out["replay"].append(time.perf_counter() - start)
                assert again.json == {"status": "duplicate"}, again.text
                fake.latency = 0
                bot.idle()
        finally:
            bot.runtime.scheduler.shutdown(wait=False)
            bot.server.stop()
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    for what, v in run(n).items():
        ms = [x * 1000 for x in v]
        print(
            f"{what:16} n={len(ms)} p50={statistics.median(ms):7.1f} p90={pct(ms, 90):7.1f} max={max(ms):7.1f} ms"
        )


if __name__ == "__main__":
    main()
