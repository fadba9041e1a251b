"""Close and review submission acks with every Slack answer delayed 80 ms (issue 21 item 1; docs/benchmarks.md
section 8c). In-process: the bot's real HTTP endpoint (tests.conftest's BotServer) and the fake Slack, SQLite.
Each of N rounds invokes an event, clicks Close (an incident commander by user group) or Mark reviewed
(security) and submits the form the bot opened; only the submission is timed, Slack slowed for it alone.
Two cases: submitted within the directory's cache TTL, and after it expired (clock and cache past 60 s).

    python -m bench.form_acks [N]     (from a source tree; PYTHONPATH=<tree> to measure another one)"""

import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import tests.conftest as cf
from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from store.sqlite import SQLiteStore
from tests.test_flows_close import invoke, settled

LAT = 0.08


def run(expired: bool, n: int) -> dict[str, list[float]]:
    fake = FakeSlack(token=cf.BOT_TOKEN, users=cf.USERS, usergroups=cf.GROUPS).__enter__()
    tmp = tempfile.mkdtemp()
    store = SQLiteStore(Path(tmp) / "b.db")
    from datetime import UTC, datetime

    from bot.policy import parse_policy

    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    policy = parse_policy(cf.TEST_POLICY, "test-policy.yml")
    bot = cf.make_bot(fake, store, policy, clock, directory_ttl=0 if expired else 60)
    out: dict[str, list[float]] = {"close": [], "review": []}
    try:
        for _ in range(n):
            for kind in ("close", "review"):
                event = invoke(bot, user="U0001")
                if kind == "review":
                    bot.slack.command(f"close {event.id} replica promoted", user="U0001")
                    bot.idle()
                    settled(bot, event.id)
                user = "U0ONCALL" if kind == "close" else "U0SECA"
                before = len(fake.calls_to("views.open"))
                bot.slack.click(f"{kind}_event", event.id, user=user)
                (call,) = fake.wait_for("views.open", before + 1, timeout=10)[before:]
                bot.idle()
                view = call.params["view"]
                view_id = call.response["view"]["id"]
                if expired:
                    clock.advance(timedelta(seconds=61))  # past the cache's (and the metadata's) TTL
                field = "close_reason" if kind == "close" else "review_notes"
                fake.latency = LAT
                start = time.perf_counter()
                r = bot.slack.submit(
                    view["callback_id"],
                    {field: "replica promoted, checked"},
                    user=user,
                    private_metadata=view["private_metadata"],
                    view_id=view_id,
                    final=False,
                )
                out[kind].append((time.perf_counter() - start) * 1000)
                fake.latency = 0
                assert r.status == 200, r.text
                bot.idle()
    finally:
        bot.runtime.scheduler.shutdown(wait=False)
        bot.server.stop()
        fake.__exit__(None, None, None)
    return out


def q(v: list[float], p: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, round(p * (len(v) - 1)))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    for expired in (False, True):
        res = run(expired, n)
        for kind, v in res.items():
            print(
                f"{'cache expired' if expired else 'within TTL   '} {kind:6} n={len(v)} p50={statistics.median(v):6.1f} p90={q(v, 0.9):6.1f} max={max(v):6.1f} ms"
            )


if __name__ == "__main__":
    main()
