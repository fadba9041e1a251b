"""Lambda acks with every Slack answer delayed 80 ms (issue 21 item 1; docs/benchmarks.md section 8d).

In-process: `bot.lambda_handler.handler` as Lambda runs it (a Function URL event, signed), the fake Slack,
SQLite, nothing cached (a directory with TTL 0, as once the cache expired). Timed: the handler call, i.e.
what Slack waits for. Bolt's asynchronous self-invocation goes to a recording client that answers at once
(a real `lambda:Invoke` with `InvocationType=Event` adds its own round trip, not measured here).
Four cases, N samples each: a close form submitted without the roles its opening resolved (an incident
commander by user group), `/breakglass extend` by that commander, an invoke form submitted without its
metadata, and the one-line fast path.

    python -m bench.lambda_acks [N]     (from a source tree; PYTHONPATH=<tree> to measure another one)"""

import json
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tests.conftest as cf
from bot import lambda_handler
from bot.app import create_app, make_slack_client
from bot.clock import ManualClock
from bot.directory import Directory
from bot.localslack.webapi import FakeSlack
from bot.policy import parse_policy
from store.sqlite import SQLiteStore
from tests.harness import TEAM
from tests.store_fixtures import make_event
from tests.test_lambda import (
    FakeLambdaClient,
    LambdaContext,
    command_body,
    function_url_event,
    signed_headers,
)

LAT = 0.08
JUSTIFICATION = "Restarting the stuck payment workers after the deploy"


def submitted(callback_id: str, fields: dict[str, str], user: str, metadata: str, view_id: str) -> str:
    """A view_submission's form body: `fields` block id -> value (a select's value when it ends in "*")."""
    values = {
        k.rstrip("*"): {
            k.rstrip("*"): {"type": "static_select", "selected_option": {"value": v}}
            if k.endswith("*")
            else {"type": "plain_text_input", "value": v}
        }
        for k, v in fields.items()
    }
    view = {
        "id": view_id,
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": metadata,
        "state": {"values": values},
    }
    payload = {
        "type": "view_submission",
        "team": TEAM,
        "user": {"id": user, "team_id": TEAM["id"]},
        "view": view,
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


def run(n: int) -> dict[str, list[float]]:
    with FakeSlack(token=cf.BOT_TOKEN, users=cf.USERS, usergroups=cf.GROUPS) as fake:
        store = SQLiteStore(Path(tempfile.mkdtemp()) / "b.db")
        clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
        settings = cf.settings_for(fake)
        client = make_slack_client(settings, timeout=5)
        runtime = create_app(
            settings,
            store,
            client,
            policy=parse_policy(cf.TEST_POLICY, "test-policy.yml"),
            clock=clock,
            lazy_delivery=True,
            directory=Directory(client, ttl=0, team_id="T0001"),
        )
        lambda_handler.install(runtime, lambda_client=FakeLambdaClient())

        def held(i: int) -> str:
            event = make_event(
                invoker=f"holder{i}@example.com",
                profile="sandbox",
                now=clock.now(),
                slack_user_id="U0002",
                audit_channel="C0AUDIT",
            )
            return str(store.create(event).id)

        cases: dict[str, Callable[[int], str]] = {
            "close form, no roles in it": lambda i: submitted(
                "breakglass_close",
                {"close_reason": "replica promoted"},
                "U0ONCALL",
                json.dumps({"event_id": held(i)}),
                f"VC{i}",
            ),
            "/breakglass extend": lambda i: command_body(
                f"extend {held(i)} 15m {JUSTIFICATION}", user="U0ONCALL"
            ),
            "invoke form, no metadata": lambda i: submitted(
                "breakglass_invoke",
                {
                    "profile*": "sandbox",
                    "reason*": "incident",
                    "justification": JUSTIFICATION,
                    "duration*": "1800",
                },
                "U0001",
                "",
                f"VI{i}",
            ),
            "/breakglass fast path": lambda _i: command_body(
                f"sandbox 30m incident {JUSTIFICATION}", user="U0001"
            ),
        }
        out: dict[str, list[float]] = {}
        for name, body_of in cases.items():
            out[name] = []
            for i in range(n):
                for active in store.list_active():  # each sample from scratch (nothing stacked)
                    store.close(active.id, by="bench", reason="bench reset", now=clock.now())
                body = body_of(i)
                fake.latency = LAT
                start = time.perf_counter()
                response: dict[str, Any] = lambda_handler.handler(
                    function_url_event(body, signed_headers(body)), LambdaContext()
                )
                out[name].append((time.perf_counter() - start) * 1000)
                fake.latency = 0.0
                assert response["statusCode"] == 200, response
        lambda_handler.reset()
        return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    for name, samples in run(n).items():
        samples.sort()
        p90 = samples[int(0.9 * (len(samples) - 1))]
        print(f"{name:28s} p50 {statistics.median(samples):6.1f}  p90 {p90:6.1f}  max {samples[-1]:6.1f} ms")


if __name__ == "__main__":
    main()
