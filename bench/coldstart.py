"""Section 7c: Lambda cold start, the bot against a bare Bolt Lambda app (bench/bare_lambda.py), side by side.

Each sample is a fresh Python process (`python bench/coldstart.py child bot|bare`) that imports the Lambda
handler module, as Lambda's init phase does (AWS_LAMBDA_FUNCTION_NAME is set, so bot/lambda_handler.py
builds its runtime at import), then answers one signed `/breakglass` (a Function URL event, payload 2.0).
DynamoDB and Lambda (Bolt's lazy-listener self-invocation) are a moto server in the parent process, Slack
is the local fake Web API: nothing the child imports is loaded in the parent's favour. The code both apps
import has bytecode (`precompile`), as a Lambda package built by `make lambda-package` has. Reported separately:
interpreter start (spawn -> first line of the child), init (importing the handler), the first request,
and the total (spawn -> response). The bot and bare Bolt alternate sample by sample, so both see the same
machine load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECTION = "7c cold start"
TARGET_RATIO = 2.0
TABLE = "breakglass-coldstart"
FUNCTION = "breakglass-coldstart"


# -- the child: one cold start --------------------------------------------------------------------------


def _child(kind: str, spawned: float) -> None:
    started = time.time()
    event = json.loads(sys.stdin.read())

    class Context:  # what Bolt's Lambda adapter reads from the Lambda context
        function_name = FUNCTION
        invoked_function_arn = os.environ["BENCH_FUNCTION_ARN"]
        aws_request_id = "r-1"

        @staticmethod
        def get_remaining_time_in_millis() -> int:
            return 30_000

    if kind.startswith("bot"):
        from bot.lambda_handler import handler
    else:
        from bench.bare_lambda import handler  # type: ignore[assignment]
    initialised = time.time()
    answer = handler(event, Context())
    answered = time.time()
    heavy = sorted(
        m
        for m in sys.modules
        if m.startswith(("bot.access.activity", "bot.access.identity_center", "bot.admin", "bot.audit_feed"))
    )
    print(
        json.dumps(
            {
                "start": started - spawned,
                "init": initialised - started,
                "request": answered - initialised,
                "total": answered - spawned,
                "status": answer.get("statusCode"),
                "modules": len(sys.modules),
                "heavy": heavy,
            }
        )
    )


# -- the parent ------------------------------------------------------------------------------------------


def _signed_command(secret: str) -> dict[str, Any]:
    from tests.harness import TEAM
    from tests.test_lambda import command_body, function_url_event, signed_headers

    body = command_body("", user="U0001")
    event: dict[str, Any] = function_url_event(body, signed_headers(body, secret))
    assert TEAM["id"] in body
    return event


def _lambda_function(endpoint: str) -> str:
    """A function on moto for Bolt's lazy-listener self-invocation to call (moto answers 202)."""
    import io
    import zipfile

    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint)
    role = iam.create_role(RoleName="coldstart", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("h.py", "def h(event, context):\n    return None\n")
    lam = boto3.client("lambda", endpoint_url=endpoint)
    made = lam.create_function(
        FunctionName=FUNCTION,
        Runtime="python3.12",
        Role=role,
        Handler="h.h",
        Code={"ZipFile": code.getvalue()},
    )
    return str(made["FunctionArn"])


def precompile(root: Path) -> None:
    """Bytecode for the code the children import from `root`, as the site-packages of both apps have it
    (pip compiles at install) and as `make lambda-package` ships it (Lambda's code directory is read-only,
    so nothing is cached there at run time). Without this, PYTHONDONTWRITEBYTECODE (set in some shells and
    CI images) would have every child compile the bot's own modules from source, and the bare app's one
    small module: a cost of where the bench runs, not of the bot. Timestamp-checked .pyc files, the
    default, so an edited source is compiled again."""
    import compileall

    for package in ("bot", "store", "bench"):
        if not compileall.compile_dir(root / package, quiet=1):
            raise RuntimeError(f"could not compile {root / package}")


def sample(kind: str, env: dict[str, str], event: dict[str, Any], root: Path = ROOT) -> dict[str, Any]:
    """One cold start of `kind` ("bot", "bare" or "bot before": the bot from the checkout `root`)."""
    env = {**env, "PYTHONPATH": str(root)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "child", kind]
    spawned = time.time()
    done = subprocess.run(
        [*cmd, repr(spawned)], input=json.dumps(event), env=env, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"cold start of {kind} failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["status"] != 200:
        raise RuntimeError(f"cold start of {kind} answered {result['status']}: {done.stderr[-2000:]}")
    return result


def measure(samples: int = 7, compare: str | None = None) -> dict[str, list[dict[str, Any]]]:
    import logging

    from bench.common import moto_server
    from bot.localslack.webapi import FakeSlack
    from store.dynamodb import create_table, make_client
    from tests.harness import BOT_TOKEN, SIGNING_SECRET

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    users = {"U0001": {"email": "u0001@example.com", "name": "u0001"}}
    with moto_server() as endpoint, FakeSlack(token=BOT_TOKEN, users=users) as fake:
        create_table(make_client(endpoint_url=endpoint), TABLE)
        arn = _lambda_function(endpoint)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "BREAKGLASS_", "AWS_"))},
            "PYTHONPATH": str(ROOT),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_LAMBDA_FUNCTION_NAME": FUNCTION,
            "BENCH_FUNCTION_ARN": arn,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.url,
            "SLACK_TEAM_ID": "T0001",
            "BREAKGLASS_STORE": f"dynamodb://{TABLE}",
            "BREAKGLASS_AUDIT_CHANNEL": "C0AUDIT",
            "BREAKGLASS_SCHEDULER": "off",
            "LOG_LEVEL": "WARNING",
        }
        roots = {"bot": ROOT, "bare": ROOT, **({"bot before": Path(compare).resolve()} if compare else {})}
        results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in roots}
        for root in set(roots.values()):
            precompile(root)
        for kind, root in roots.items():  # warm-up: the page cache, not measured
            sample(kind, env, _signed_command(SIGNING_SECRET), root)
        kinds = list(roots)
        for i in range(samples):
            for kind in kinds[i % len(kinds) :] + kinds[: i % len(kinds)]:  # who goes first rotates
                results[kind].append(sample(kind, env, _signed_command(SIGNING_SECRET), roots[kind]))
    return results


def run(rows: list[Any], samples: int = 7, compare: str | None = None) -> None:
    """`compare` (or BENCH_COMPARE=DIR): also the bot from another checkout, in the same rotation."""
    import statistics

    from bench.common import Row

    load = Path("/proc/loadavg").read_text().split()[:3]
    results = measure(samples, compare or os.environ.get("BENCH_COMPARE"))
    load_end = Path("/proc/loadavg").read_text().split()[:3]

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind]) * 1000

    def spread(kind: str, key: str) -> str:
        values = [r[key] * 1000 for r in results[kind]]
        return f"{statistics.median(values):.0f} ({min(values):.0f}–{max(values):.0f})"

    names = {"bare": "bare Bolt Lambda app", "bot": "bot", "bot before": "bot before"}
    for kind, name in ((k, names[k]) for k in results):
        rows.append(
            Row(
                SECTION,
                f"{name}: total ms, median (min–max) of {samples}",
                spread(kind, "total")
                + f"; interpreter start {spread(kind, 'start')}, init {spread(kind, 'init')}, "
                f"first request {spread(kind, 'request')}; {results[kind][0]['modules']} modules",
            )
        )
    for kind in (k for k in results if k != "bare"):
        ratio = med(kind, "total") / med("bare", "total")
        verdict = "ok" if ratio <= TARGET_RATIO else "MISS"
        rows.append(
            Row(SECTION, f"{kind} total / bare Bolt", f"{ratio:.2f}x", f"<= {TARGET_RATIO}x", verdict)
        )
    heavy = sorted({m for r in results["bot"] for m in r["heavy"]})
    rows.append(Row(SECTION, "heavy modules loaded by the first /breakglass", ", ".join(heavy) or "none"))
    rows.append(
        Row(SECTION, "machine load (1/5/15 min) at start, end", f"{' '.join(load)}; {' '.join(load_end)}")
    )


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "child":
        _child(sys.argv[2], float(sys.argv[3]))
    else:
        from bench.__main__ import print_table

        out: list[Any] = []
        run(out, samples=int(sys.argv[1]) if len(sys.argv) > 1 else 7)
        print_table(out)
