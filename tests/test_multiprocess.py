"""Two real bot processes (gunicorn) on one store — one SQLite file, or one DynamoDB table on a moto
server — sharing one fake Slack: the invariants hold across processes."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from bot.localslack.webapi import FakeSlack
from store import Status, open_store
from store.dynamodb import create_table
from tests.harness import BOT_TOKEN, SlackSender
from tests.processes import BotProcess, free_port

POLICY = """
audit_channel: C0AUDIT
warn_before: 2s
sweep_interval: 1s
incident_commanders: [U0IC]
profiles:
  sandbox:
    durations: [4s, 1h]
"""
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",  # only AWS_REGION, as on Lambda
}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, dict[str, str]]:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}", {}
    moto = request.getfixturevalue("moto_url")
    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto)
    table = f"bg-{time.monotonic_ns()}"
    create_table(boto3.client("dynamodb", endpoint_url=moto, region_name="us-east-1"), table)
    return f"dynamodb://{table}", {**AWS, "AWS_ENDPOINT_URL_DYNAMODB": moto}


LIMITED_POLICY = (
    "audit_channel: C0AUDIT\n"
    "rate_limits:\n  window: 1h\n  per_user: 3\n  per_profile: 3\n  escalate_after: 2\n"
    "profiles:\n" + "".join(f"  p{i}:\n    durations: [1h]\n" for i in range(20))
)


@contextmanager
def bots_on(
    backend: tuple[str, dict[str, str]], tmp_path: Path, policy_text: str
) -> Iterator[tuple[list[BotProcess], FakeSlack, str]]:
    store_url, env = backend
    policy = tmp_path / "policy.yml"
    policy.write_text(policy_text)
    people = ("U0001", "U0002", "U0IC", *(f"U1{i:03d}" for i in range(20)))
    users = {user: {"email": f"{user.lower()}@example.com"} for user in people}
    with FakeSlack(token=BOT_TOKEN, users=users) as fake:
        bots = [
            BotProcess(tmp_path, fake.url, store_url, BREAKGLASS_POLICY=str(policy), **env) for _ in range(2)
        ]
        starters = [threading.Thread(target=b.start) for b in bots]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        try:
            yield bots, fake, store_url
        finally:
            for b in bots:
                b.kill()
                # shown only when the test fails: what each process did, for a failure seen once under load
                print(f"--- bot on port {b.port} ---\n{b.stderr()}")


@pytest.fixture
def two_bots(
    backend: tuple[str, dict[str, str]], tmp_path: Path
) -> Iterator[tuple[list[BotProcess], FakeSlack, str]]:
    with bots_on(backend, tmp_path, POLICY) as running:
        yield running


def test_concurrent_submissions_split_across_processes_make_one_event(two_bots) -> None:
    bots, fake, store_url = two_bots
    senders = [SlackSender(b.url, fake) for b in bots]

    def submit(i: int) -> dict:
        return senders[i % 2].invoke(user="U0001", profile="sandbox", duration="3600").json

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(submit, range(20)))
    granted = [r for r in results if r["response_action"] == "update"]
    refused = [r for r in results if r["response_action"] == "errors"]
    assert len(granted) == 1, results
    assert len(refused) == 19
    store = open_store(store_url)
    events = store.list_by_invoker("U0001").items
    assert len(events) == 1
    assert all(events[0].id in r["errors"]["profile"] for r in refused), refused
    fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == "C0AUDIT")
    time.sleep(0.5)
    assert (
        len([c for c in fake.calls_to("chat.postMessage") if c.ok and c.params.get("channel") == "C0AUDIT"])
        == 1
    )


def test_two_schedulers_one_warning_one_expiry_and_one_close(two_bots) -> None:
    bots, fake, store_url = two_bots
    sender = SlackSender(bots[0].url, fake)
    assert sender.invoke(user="U0001", profile="sandbox", duration="4").json["response_action"] == "update"
    assert sender.invoke(user="U0002", profile="sandbox", duration="3600").json["response_action"] == "update"
    store = open_store(store_url)
    short = store.list_by_invoker("U0001").items[0]
    long = store.list_by_invoker("U0002").items[0]
    # two people close the long event at once, one through each process
    closers = [SlackSender(b.url, fake) for b in bots]
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(
            pool.map(
                lambda pair: pair[0].command(f"close {long.id} all done here", user=pair[1]),
                [(closers[0], "U0002"), (closers[1], "U0IC")],
            )
        )
    fake.wait_for("chat.postMessage", where=lambda c: "has expired" in c.params.get("text", ""), timeout=10)
    time.sleep(2.5)  # two more sweeps on both processes: nothing more may be announced
    texts = [c.params.get("text", "") for c in fake.calls_to("chat.postMessage") if c.ok]
    assert sum("expires in" in t and short.id in t for t in texts) == 1, texts
    assert sum("has expired" in t for t in texts) == 1, texts
    assert sum(t.startswith(":lock: Closed by") for t in texts) == 1, texts
    closed = store.get(long.id)
    assert closed.status is Status.CLOSED
    assert store.get(short.id).status is Status.EXPIRED


def test_sigkill_after_store_write_then_restart_announces_once(two_bots) -> None:
    bots, fake, store_url = two_bots
    bots[1].kill()  # one process only for this test
    fake.set_down(True)
    sender = SlackSender(bots[0].url, fake)
    response = sender.invoke(user="U0001", profile="sandbox", duration="3600")
    assert response.json["response_action"] == "update"  # granted although Slack is down
    bots[0].kill()  # SIGKILL: no chance to deliver
    store = open_store(store_url)
    event = store.list_by_invoker("U0001").items[0]
    assert "audit_post" in store.get(event.id).owed_kinds
    fake.set_down(False)
    restarted = bots[0].start()
    fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == "C0AUDIT", timeout=15)
    fake.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == "U0001", timeout=15)
    time.sleep(2)
    posts = [c for c in fake.calls_to("chat.postMessage") if c.ok]
    assert len([c for c in posts if c.params.get("channel") == "C0AUDIT"]) == 1
    assert (
        len([c for c in posts if c.params.get("channel") == "U0001" and event.id in json.dumps(c.params)])
        == 1
    )
    assert store.get(event.id).outbox == ()
    assert restarted.terminate() == 0


def test_two_processes_sweeping_owed_deliveries_post_one_audit_message_each(two_bots) -> None:
    """Slack is down while three people invoke; when it comes back slowly, both processes' sweeps race
    for every owed delivery: the conditional lease claim lets one deliver each event, once."""
    bots, fake, store_url = two_bots
    fake.set_down(True)
    users = ("U0001", "U0002", "U0IC")
    for i, user in enumerate(users):
        sender = SlackSender(bots[i % 2].url, fake)
        assert (
            sender.invoke(user=user, profile="sandbox", duration="3600").json["response_action"] == "update"
        )
    fake.slow("chat.postMessage", 0.3, times=6)
    fake.set_down(False)
    for user in users:
        fake.wait_for(
            "chat.postMessage", where=lambda c, u=user: c.ok and c.params.get("channel") == u, timeout=20
        )
    # The DM needs no root message: a root post that failed while Slack came back is retried after its
    # backoff, so wait for the three roots themselves rather than take the DMs for them.
    deadline = time.monotonic() + 20
    while len(fake.channel_messages("C0AUDIT")) < len(users) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.5)  # more sweeps on both processes: nothing more may be posted
    store = open_store(store_url)
    roots = fake.channel_messages("C0AUDIT")
    assert sorted(m["metadata"]["event_payload"]["event_id"] for m in roots) == sorted(
        store.list_by_invoker(user).items[0].id for user in users
    )
    for user in users:
        assert store.list_by_invoker(user).items[0].outbox == ()


def test_rate_limits_hold_across_processes(backend: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    """Issue 12.1: 2 processes x 20 concurrent submissions never exceed per_user, per_profile or
    escalate_after (decided in the store's atomic create, not counted before it)."""
    with bots_on(backend, tmp_path, LIMITED_POLICY) as (bots, fake, store_url):
        senders = [SlackSender(b.url, fake) for b in bots]

        def burst(submit: Callable[[int], dict]) -> list[dict]:
            with ThreadPoolExecutor(max_workers=20) as pool:
                return list(pool.map(submit, range(20)))

        def refusals(results: list[dict]) -> list[str]:
            return [r["errors"]["profile"] for r in results if r["response_action"] == "errors"]

        # one person, 20 profiles at once: per_user 3
        results = burst(lambda i: senders[i % 2].invoke(user="U0001", profile=f"p{i}", duration="3600").json)
        store = open_store(store_url)
        mine = store.list_by_invoker("U0001", limit=100).items
        assert len(mine) == 3, results
        assert sorted(e.escalated for e in mine) == [False, True, True]  # the 2nd and 3rd in the window
        assert len(refusals(results)) == 17
        assert all("at most 3 break-glass events per person per 1 hour" in m for m in refusals(results))
        retry = re.compile(r"You may invoke again at \d{4}-\d\d-\d\d \d\d:\d\d UTC \(in ")
        assert all(retry.search(m) for m in refusals(results)), refusals(results)

        # 20 people, one profile at once: per_profile 3
        results = burst(
            lambda i: senders[i % 2].invoke(user=f"U1{i:03d}", profile="p19", duration="3600").json
        )
        on_profile = store.list_by_profile("p19", limit=100).items
        assert len(on_profile) == 3, results
        assert all("at most 3 break-glass events on 'p19' per 1 hour" in m for m in refusals(results))
        assert all("It may be invoked again at " in m for m in refusals(results))


def test_racing_extends_across_processes_one_wins_the_others_are_told(two_bots) -> None:
    """Six Extend modals opened on the same state (seen: 0), submitted at once through both processes:
    the store's conditional write on the event's version lets exactly one apply."""
    bots, fake, store_url = two_bots
    senders = [SlackSender(b.url, fake) for b in bots]
    assert (
        senders[0].invoke(user="U0001", profile="sandbox", duration="3600").json["response_action"]
        == "update"
    )
    store = open_store(store_url)
    event = store.list_by_invoker("U0001").items[0]
    meta = json.dumps({"event_id": event.id, "seen": 0})

    def submit(i: int) -> dict:
        return (
            senders[i % 2]
            .submit(
                "breakglass_extend",
                {
                    "extend_duration": ("select", "4"),
                    "extend_reason": "failover still running on the primary",
                },
                user=("U0001", "U0IC")[i % 2],
                private_metadata=meta,
            )
            .json
        )

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(submit, range(6)))
    won = [r for r in results if r["response_action"] == "update"]
    told = [r for r in results if r["response_action"] == "errors"]
    assert len(won) == 1 and len(told) == 5, results
    assert all("extended meanwhile" in r["errors"]["extend_duration"] for r in told), told
    extended = store.get(event.id)
    assert len(extended.extensions) == 1
    assert extended.expires_at == event.expires_at + (extended.extensions[0].duration)
    fake.wait_for("chat.postMessage", where=lambda c: "Extended by" in c.params.get("text", ""), timeout=10)
    time.sleep(1.5)  # more sweeps on both processes: nothing more may be announced
    texts = [c.params.get("text", "") for c in fake.calls_to("chat.postMessage") if c.ok]
    assert sum("Extended by" in t for t in texts) == 1, texts
