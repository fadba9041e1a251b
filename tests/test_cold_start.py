"""Lambda's cold start does only what the first request needs (issue 21.3; timed in bench/coldstart.py).

A fresh interpreter imports the Lambda handler the way Lambda's init phase does (AWS_LAMBDA_FUNCTION_NAME
set, so the runtime is built at import, here on DynamoDB): the modules the first request does not need
(CloudTrail evidence, Identity Center, the admin CLI, the incident tools' clients, the OCSF feed, APScheduler)
stay unloaded, every AWS client comes from one boto3 session, and nothing is sent over the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot import ids
from bot.localslack.webapi import FakeSlack
from tests.harness import SIGNING_SECRET

ROOT = Path(__file__).resolve().parent.parent

HEAVY = (
    "bot.access.activity",  # CloudTrail LookupEvents
    "bot.evidence",
    "bot.access.identity_center",
    "bot.admin",
    "bot.incidents.pagerduty",
    "bot.incidents.incident_io",
    "bot.audit_feed",  # OCSF
    "apscheduler",  # Lambda sweeps on an EventBridge schedule instead
    "difflib",  # only for "did you mean" in a policy error or an unknown subcommand
)

# pydantic models the init and the first /breakglass do not validate: built on first use (defer_build)
DEFERRED = (
    "store.model:BreakGlassEvent",
    "store.model:EventAccess",
    "store.model:Extension",
    "store.model:IncidentLink",
    "store.model:OutboxEntry",
    "store.notices:Notice",
    "store.notices:DayLink",
    "store.tasks:OwedTask",
    "bot.access.base:Target",
    "bot.access.base:Assignment",
    "bot.access.base:GrantReceipt",
    "bot.access.base:RevocationReceipt",
    "bot.access.base:AccessState",
    "bot.incidents.base:Incident",
    "bot.slack.context:EventMetadata",
    "bot.slack.extend:ExtendMetadata",
)

PROBE = """
import json, socket, sys
import boto3.session

sessions = []
init = boto3.session.Session.__init__
def counting(self, *args, **kwargs):
    sessions.append(1)
    init(self, *args, **kwargs)
boto3.session.Session.__init__ = counting

clients = []
client = boto3.session.Session.client
def making(self, service, *args, **kwargs):
    clients.append(service)
    return client(self, service, *args, **kwargs)
boto3.session.Session.client = making

connects = []
connect = socket.socket.connect
def recording(self, address):
    connects.append(repr(address))
    return connect(self, address)
socket.socket.connect = recording

import bot.lambda_handler as handler

assert handler._runtime is not None, "the runtime is built in the init phase"
heavy = sorted(m for m in sys.modules if m.startswith(tuple(json.loads(sys.argv[1]))))
built = []
for name in json.loads(sys.argv[2]):
    module, _, model = name.partition(":")
    if getattr(sys.modules[module], model).__pydantic_complete__:
        built.append(name)
found = {"heavy": heavy, "built": built, "sessions": len(sessions), "clients": clients, "connects": connects}
if len(sys.argv) > 3:  # then the first request, a signed event read from stdin
    class Context:
        function_name = "breakglass"
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:breakglass"
        aws_request_id = "r-1"

        @staticmethod
        def get_remaining_time_in_millis():
            return 30_000

    del clients[:]
    answer = handler.handler(json.loads(sys.stdin.read()), Context())
    found |= {"status": answer["statusCode"], "request_clients": clients}
print(json.dumps(found))
"""


def _lambda_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "BREAKGLASS_", "AWS_"))}
    env |= {
        "PYTHONPATH": str(ROOT),
        "AWS_LAMBDA_FUNCTION_NAME": "breakglass",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        # nothing listens there: a call at init would be recorded (and fail)
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "SLACK_BOT_TOKEN": "xoxb-test-token",
        "SLACK_SIGNING_SECRET": "test-signing-secret-0123456789abcdef",
        "SLACK_API_URL": "http://127.0.0.1:9/api/",
        "SLACK_TEAM_ID": "T0001",
        "BREAKGLASS_STORE": "dynamodb://breakglass-events",
        "BREAKGLASS_AUDIT_CHANNEL": "C0AUDIT",
        "BREAKGLASS_SCHEDULER": "off",
        "LOG_LEVEL": "ERROR",
    }
    return env


def _probe(env: dict[str, str], event: dict[str, object] | None = None) -> dict[str, object]:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            json.dumps(HEAVY),
            json.dumps(DEFERRED),
            *(["request"] if event else []),
        ],
        env=env,
        input=json.dumps(event) if event else "",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_lambda_init_loads_only_what_the_first_request_needs() -> None:
    found = _probe(_lambda_env())
    assert found["heavy"] == []
    assert found["built"] == [], "models the first request does not validate are built on first use"
    assert found["sessions"] <= 1, "one boto3 session (boto3's default) for every AWS client"
    assert found["clients"] == [], (
        "the first /breakglass makes no store call: the DynamoDB client waits for one"
    )
    assert found["connects"] == [], "no network call at init"


def test_lambda_first_breakglass_makes_no_aws_client(fake: FakeSlack) -> None:
    """A cold start's first `/breakglass` only opens the form: no store call and no lazy delivery run, so no
    boto3 client (not even the Lambda client of Bolt's self-invocation) is made in that request."""
    from tests.test_lambda import command_body, function_url_event, signed_headers

    env = _lambda_env() | {"SLACK_API_URL": fake.url, "SLACK_SIGNING_SECRET": SIGNING_SECRET}
    body = command_body("")
    found = _probe(env, function_url_event(body, signed_headers(body, SIGNING_SECRET)))
    assert found["request_clients"] == []
    assert found["status"] == 200
    assert [c.params["view"]["callback_id"] for c in fake.calls_to("views.open")] == [ids.CALLBACK_INVOKE]


def test_lazy_dynamodb_client_is_made_once_on_first_use_with_its_hooks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from store import dynamodb

    made: list[object] = []

    def make_client() -> object:
        made.append(object())
        return made[-1]

    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setattr(dynamodb, "make_client", make_client)
    store = dynamodb.DynamoDBStore("t", lazy=True)
    hooked: list[object] = []
    store.on_client(hooked.append)
    assert made == [] and hooked == []
    assert store.client is store.client is made[0]
    assert hooked == made  # e.g. the skew monitor's after-call hook (bot/app.py)
    store.on_client(hooked.append)  # a hook added later sees the client at once
    assert hooked == [made[0], made[0]] and len(made) == 1

    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setattr(dynamodb, "aws_region", lambda session=None: None)
    with pytest.raises(dynamodb.StoreNotConfigured):  # a missing region still fails at start
        dynamodb.DynamoDBStore("t", lazy=True)
