"""The grant and the revoke survive a SIGKILL: real `breakglass-bot http` processes on one store (SQLite file or
DynamoDB on moto server), IAM Identity Center on moto server, one fake Slack. A process killed after the
change was stored and before its AWS step was done leaves the step owed; the next process does it."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bot.localslack.webapi import FakeSlack
from store import Status, open_store
from store.model import OutboxKind
from tests.access_world import SLACK_USERS, Aws, aws_env_for
from tests.harness import BOT_TOKEN, SlackSender
from tests.processes import BotProcess
from tests.test_multiprocess import backend, moto_url  # noqa: F401 - fixtures: both stores

pytest_plugins = ["tests.store_fixtures", "tests.access_world"]

T = TypeVar("T")


def eventually(check: Callable[[], T], what: str, timeout: float = 90.0) -> T:
    """Poll real processes; the bound is generous because the whole suite shares 2 cores (30 s flaked)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class _Denied(BaseHTTPRequestHandler):
    """An sso-admin endpoint that refuses everything (AccessDeniedException), at once."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"__type": "AccessDeniedException", "message": "denied by the test"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("x-amzn-RequestId", "req-denied")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def denying_aws() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Denied)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


class HoldingSsoAdmin:
    """sso-admin in front of moto: every call is passed on, except `operation` (e.g.
    `CreateAccountAssignment`), which is held unanswered (and never passed on) until the test ends, so a
    process is killed or stuck inside that AWS call, with AWS not having done it, however loaded the machine
    is. `reached` is set when the first one arrives."""

    def __init__(self, upstream: str, operation: str) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        holder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("X-Amz-Target", "").endswith(f".{operation}"):
                    holder.reached.set()
                    holder.release.wait(120)
                    return  # no answer: the connection is closed
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in {"host", "content-length"}
                }
                request = urllib.request.Request(
                    upstream + self.path, data=body, headers=headers, method="POST"
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, payload, reply = response.status, response.read(), dict(response.headers)
                except urllib.error.HTTPError as exc:
                    status, payload, reply = exc.code, exc.read(), dict(exc.headers)
                self.send_response(status)
                for key, value in reply.items():
                    if key.lower() not in {
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "server",
                        "date",
                    }:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> HoldingSsoAdmin:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def processes_on(
    stores: tuple[str, dict[str, str]], aws: Aws, tmp_path: Path, policy_text: str, *, start: bool = True
) -> Iterator[tuple[Callable[..., BotProcess], FakeSlack, Any]]:
    """A fake Slack, the store and `bot(sso_admin=None)`, which makes a `breakglass-bot http` process on
    them (started unless `start` is False); every process is SIGKILLed at the end."""
    store_url, env = stores
    policy = tmp_path / "policy.yml"
    policy.write_text(policy_text)
    users = {user: {"email": email} for user, email in SLACK_USERS.items()}
    made: list[BotProcess] = []
    with FakeSlack(token=BOT_TOKEN, users=users) as fake:

        def bot(sso_admin: str | None = None) -> BotProcess:
            aws_env = aws_env_for(aws.url) | ({"AWS_ENDPOINT_URL_SSO_ADMIN": sso_admin} if sso_admin else {})
            process = BotProcess(
                tmp_path, fake.url, store_url, BREAKGLASS_POLICY=str(policy), **(env | aws_env)
            )
            made.append(process)
            return process.start() if start else process

        try:
            yield bot, fake, open_store(store_url)
        finally:
            for process in made:
                process.kill_all()


@pytest.fixture
def world(
    backend: tuple[str, dict[str, str]],  # noqa: F811
    aws: Aws,
    tmp_path: Path,
) -> Iterator[tuple[Callable[..., BotProcess], FakeSlack, Any]]:
    policy = aws.policy_text().replace("sweep_interval: 30s", "sweep_interval: 1s")
    with processes_on(backend, aws, tmp_path, policy) as running:
        yield running


def test_the_grant_survives_a_sigkill_before_aws_did_it(world, aws: Aws) -> None:
    """The first process is killed inside its grant's AWS call, which AWS never received (held unanswered by
    HoldingSsoAdmin): the grant stays owed, and the next process, once the lease has run out, grants once.
    (It used to make the audit post fail and kill after the first delivery began, hoping to be before the
    grant: but the grant does not wait for Slack, so a kill that came late under load found it done.)"""
    bot, fake, store = world
    with HoldingSsoAdmin(aws.url, "CreateAccountAssignment") as holding:
        first = bot(sso_admin=holding.url)
        response = SlackSender(first.url, fake).invoke(user="U0001", profile="sandbox", duration="3600")
        assert response.json["response_action"] == "update"
        (event,) = store.list_by_invoker("U0001").items
        assert holding.reached.wait(60), "the grant's CreateAccountAssignment"
        first.kill()  # SIGKILL inside the AWS call: the grant is still owed, and AWS has not done it
        assert store.get(event.id).owes(OutboxKind.ACCESS_GRANT)
        assert aws.assigned() == []
        bot()
        eventually(lambda: aws.assigned() == [aws.users["U0001"]], "the grant by the restarted process")
        eventually(lambda: not store.get(event.id).outbox, "every owed step")
    texts = [c.params.get("text", "") for c in fake.calls_to("chat.postMessage") if c.ok]
    assert sum("AWS access granted" in t for t in texts) == 2  # thread and DM, once each
    assert sum(t.startswith("Break-glass active") for t in texts) == 1  # the audit message, once


def test_the_revoke_survives_a_sigkill_before_its_aws_call_succeeded(
    world, aws: Aws, denying_aws: str
) -> None:
    bot, fake, store = world
    granting = bot()
    sender = SlackSender(granting.url, fake)
    assert sender.invoke(user="U0001", profile="sandbox", duration="3600").json["response_action"] == "update"
    (event,) = store.list_by_invoker("U0001").items
    eventually(lambda: not store.get(event.id).outbox, "the grant and its announcements")
    assert aws.assigned() == [aws.users["U0001"]]
    granting.kill()

    closing = bot(sso_admin=denying_aws)  # this process cannot reach Identity Center
    close = SlackSender(closing.url, fake).submit(
        "breakglass_close",
        {"close_reason": "Replica promoted, done"},
        user="U0001",
        private_metadata=json.dumps({"event_id": event.id}),
    )
    assert close.status == 200
    eventually(lambda: (store.get(event.id).access.failures or 0) >= 1, "the failed revoke")
    closing.kill()  # SIGKILL: closed in the store, the revoke still owed, AWS unchanged
    stored = store.get(event.id)
    assert stored.status is Status.CLOSED and stored.owes(OutboxKind.ACCESS_REVOKE)
    assert aws.assigned() == [aws.users["U0001"]]
    alarms = [
        c for c in fake.calls_to("chat.postMessage") if c.ok and "NOT revoked" in c.params.get("text", "")
    ]
    assert alarms and "AccessDeniedException" in alarms[0].params["text"]

    bot()
    eventually(lambda: aws.assigned() == [], "the revoke by the restarted process")
    eventually(lambda: store.get(event.id).access.revoked_at is not None, "the recorded revocation")
    assert aws.deny_of("U0001") is not None
    eventually(
        lambda: any(
            "AWS access revoked" in c.params.get("text", "") for c in fake.calls_to("chat.postMessage")
        ),
        "the revocation receipt",
    )
