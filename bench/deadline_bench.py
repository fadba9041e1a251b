"""Section 7: the revocation deadline you can see. From the moment an event is due (its `expires_at`) to its
AWS assignment deleted and its sessions denied, on moto server's IAM Identity Center, on two runtimes:

* **7a gunicorn**: the real `breakglass-bot http` process (SQLite store, the fake Slack, the in-process
  scheduler's exact-time expiry jobs), events invoked with signed Slack requests;
* **7b Lambda**: the Lambda runtime (`create_app(lazy_delivery=True)`, DynamoDB on the same moto server) with
  one-time EventBridge Scheduler schedules on moto (bot/schedules.py). EventBridge Scheduler itself is
  simulated: each stored expiry schedule is read back from moto and fired at its `at()` time plus a random
  offset inside Scheduler's documented 60-second window, by invoking `bot.lambda_handler.sweep_handler` with the
  schedule's own Input, as Scheduler would (one thread per invocation; no minute sweep runs).

The times are the ones the bot records on the event (`assignment_deleted_at`, `sessions_denied_at`, set when
AWS answered), checked against moto's own state (no assignment left, a deny for every person). moto answers
every asynchronous request SUCCEEDED at once: AWS's propagation time is not in these numbers.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import Row, bot_settings, moto_server, summary_ms

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto server's request lines

TARGET = 10.0  # seconds from due to assignment deleted and sessions denied
SECTION = "7 revocation deadline"

POLICY = """
audit_channel: C0AUDIT
security: [U0SEC]
warn_before: 30s
sweep_interval: 15s
access:
  provider: identity-center
  instance_arn: {instance_arn}
  identity_store_id: {identity_store_id}
profiles:
  sandbox:
    durations: [{duration}]
    aws:
      account: "111122223333"
      permission_set: {permission_set}
"""


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {os.cpu_count()} CPUs"


class _World:
    """Identity Center on the moto server: a break-glass permission set and one identity-store user per
    Slack user (each Slack user's email)."""

    def __init__(self, url: str, users: dict[str, dict[str, str]]) -> None:
        import boto3

        from tests.access_world import real_permission_set_arn

        os.environ["AWS_ENDPOINT_URL_SSO_ADMIN"] = url
        os.environ["AWS_ENDPOINT_URL_IDENTITYSTORE"] = url
        self.sso = boto3.client("sso-admin")
        ids = boto3.client("identitystore")
        self.instance_arn = self.sso.list_instances()["Instances"][0]["InstanceArn"]
        self.permission_set = real_permission_set_arn(
            self.sso.create_permission_set(
                InstanceArn=self.instance_arn,
                Name=f"bg-deadline-{uuid.uuid4().hex[:6]}",
                SessionDuration="PT1H",
            )["PermissionSet"]["PermissionSetArn"]
        )
        self.identity_store_id = "d-" + secrets.token_hex(5)
        for info in users.values():
            ids.create_user(
                IdentityStoreId=self.identity_store_id,
                UserName=info["email"],
                DisplayName=info["email"],
                Name={"GivenName": "B", "FamilyName": "Ench"},
                Emails=[{"Value": info["email"], "Primary": True}],
            )

    def policy_text(self, duration: str) -> str:
        return POLICY.format(
            instance_arn=self.instance_arn,
            identity_store_id=self.identity_store_id,
            permission_set=self.permission_set,
            duration=duration,
        )

    def assigned(self) -> int:
        return len(
            self.sso.list_account_assignments(
                InstanceArn=self.instance_arn, AccountId="111122223333", PermissionSetArn=self.permission_set
            )["AccountAssignments"]
        )

    def denied(self, user_ids: list[str]) -> bool:
        policy = self.sso.get_inline_policy_for_permission_set(
            InstanceArn=self.instance_arn, PermissionSetArn=self.permission_set
        )["InlinePolicy"]
        return all(user in policy for user in user_ids)


def _rows(label: str, events: list[Any], world: _World, load: str, expected: int) -> list[Row]:
    deleted, denied, missing = [], [], 0
    for event in events:
        access = event.access
        if access is None or access.assignment_deleted_at is None or access.sessions_denied_at is None:
            missing += 1
            continue
        deleted.append((access.assignment_deleted_at - event.expires_at).total_seconds())
        denied.append((access.sessions_denied_at - event.expires_at).total_seconds())
    users = [e.access.user_id for e in events if e.access is not None]
    checked = (
        f"{len(events)} of {expected} events expired, {missing} not revoked; moto: "
        f"{world.assigned()} assignments left, every person denied: {world.denied(users)}"
    )
    worst = max(denied + deleted, default=float("inf"))
    verdict = "ok" if missing == 0 and len(events) == expected and worst <= TARGET else "MISS"
    return [
        Row(
            SECTION,
            f"{label}: due → assignment deleted",
            summary_ms(deleted),
            f"max <= {TARGET:.0f} s",
            verdict,
        ),
        Row(
            SECTION, f"{label}: due → sessions denied", summary_ms(denied), f"max <= {TARGET:.0f} s", verdict
        ),
        Row(SECTION, f"{label}: checked", checked),
        Row(SECTION, f"{label}: machine", load),
    ]


def run_gunicorn(rows: list[Row], count: int = 20, duration_s: int = 60) -> None:
    """7a: `breakglass-bot http` (gunicorn, in-process scheduler), events invoked over signed requests."""
    from bot.localslack.webapi import FakeSlack
    from store.model import Status
    from store.sqlite import SQLiteStore
    from tests.harness import BOT_TOKEN, SlackSender
    from tests.processes import BotProcess

    users = {f"U{4000 + i}": {"email": f"g{i}-{uuid.uuid4().hex[:6]}@example.com"} for i in range(count)}
    with (
        moto_server() as url,
        tempfile.TemporaryDirectory() as tmp,
        FakeSlack(token=BOT_TOKEN, users=users) as fake,
    ):
        try:
            world = _World(url, users)
            policy = Path(tmp) / "policy.yml"
            policy.write_text(world.policy_text(f"{duration_s}s"))  # e.g. 60s
            db = Path(tmp) / "deadline.db"
            bot = BotProcess(
                Path(tmp),
                fake.url,
                f"sqlite:///{db}",
                BREAKGLASS_POLICY=str(policy),
                SLACK_TEAM_ID="T0001",
                AWS_ENDPOINT_URL_SSO_ADMIN=url,
                AWS_ENDPOINT_URL_IDENTITYSTORE=url,
                AWS_ACCESS_KEY_ID="testing",
                AWS_SECRET_ACCESS_KEY="testing",
                AWS_REGION="us-east-1",
                LOG_LEVEL="WARNING",
            ).start(timeout=60)
            try:
                sender = SlackSender(bot.url, fake)
                for user in users:  # one after another, a quarter second apart: due times spread over 5 s
                    response = sender.invoke(user=user, profile="sandbox", duration=str(duration_s))
                    assert response.status == 200, response.body
                    time.sleep(0.25)
                store = SQLiteStore(db)

                def expired() -> list[Any]:
                    return list(store.list_by_status(Status.EXPIRED, limit=count + 10).items)

                deadline = time.monotonic() + duration_s + 60
                while time.monotonic() < deadline:
                    if sum(1 for e in expired() if e.access and e.access.revoked_at) >= count:
                        break
                    time.sleep(1)
                load = _load()
                events = expired()
                rows += _rows("gunicorn (in-process scheduler)", events, world, load, count)
                store.disconnect()
            finally:
                bot.terminate()
        finally:
            os.environ.pop("AWS_ENDPOINT_URL_SSO_ADMIN", None)
            os.environ.pop("AWS_ENDPOINT_URL_IDENTITYSTORE", None)


def run_lambda(rows: list[Row], count: int = 20, duration_s: int = 180) -> None:
    """7b: the Lambda runtime with one-time schedules on moto; Scheduler's firing simulated from the stored
    schedules (see the module docstring)."""
    import boto3

    from bot import lambda_handler, schedules
    from bot.app import create_app, make_slack_client
    from bot.clock import SystemClock
    from bot.localslack.webapi import FakeSlack
    from bot.policy import parse_policy
    from bot.service import InvokeRequest
    from store.dynamodb import DynamoDBStore, create_table
    from tests.harness import BOT_TOKEN

    users = {f"U{5000 + i}": {"email": f"l{i}-{uuid.uuid4().hex[:6]}@example.com"} for i in range(count)}
    group = "breakglass-expiry"
    with moto_server() as url, FakeSlack(token=BOT_TOKEN, users=users) as fake:
        os.environ["AWS_ENDPOINT_URL_SCHEDULER"] = url
        try:
            world = _World(url, users)
            boto3.client("scheduler").create_schedule_group(Name=group)
            dynamodb = boto3.client("dynamodb", endpoint_url=url)
            table = f"deadline-{uuid.uuid4().hex[:6]}"
            create_table(dynamodb, table)
            settings = bot_settings(
                fake.url,
                slack_team_id="T0001",
                breakglass_scheduler_target_arn="arn:aws:lambda:us-east-1:123456789012:function:bg-sweep",
                breakglass_scheduler_role_arn="arn:aws:iam::123456789012:role/bg-scheduler",
                breakglass_scheduler_group=group,
            )
            store = DynamoDBStore(table, client=dynamodb)
            runtime = create_app(
                settings,
                store,
                make_slack_client(settings, timeout=5),
                policy=parse_policy(world.policy_text(f"{duration_s}s"), "bench-deadline.yml"),
                clock=SystemClock(),
                lazy_delivery=True,
            )
            lambda_handler.install(runtime, lambda_client=object())
            ids = []
            for user in users:
                event = runtime.service.invoke(
                    InvokeRequest(
                        user_id=user,
                        profile="sandbox",
                        reason="incident",
                        justification="Benchmarking the revocation deadline on Lambda",
                        duration=str(duration_s),
                    )
                )
                runtime.pipeline.deliver(event.id)  # the lazy listener's delivery: grant, schedules
                ids.append(event.id)
                time.sleep(0.25)
            client = runtime.pipeline.deps.schedules.client  # type: ignore[union-attr]

            early: list[float] = []  # how long before the due time each invocation came (what it waited)

            def fire(event_id: str) -> None:
                found = client.get_schedule(Name=schedules.schedule_name(event_id, "expire"), GroupName=group)
                at = datetime.fromisoformat(found["ScheduleExpression"][3:-1]).replace(tzinfo=UTC)
                when = at + timedelta(seconds=random.uniform(0, 59.9))  # Scheduler: within the minute
                early.append((store.get(event_id).expires_at - when).total_seconds())
                time.sleep(max(0.0, (when - datetime.now(UTC)).total_seconds()))
                lambda_handler.sweep_handler(json.loads(found["Target"]["Input"]), None)

            threads = [threading.Thread(target=fire, args=(event_id,)) for event_id in ids]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(duration_s + 120)
            load = _load()
            events = [store.get(event_id) for event_id in ids]
            rows += _rows(
                "Lambda (one-time schedules)", [e for e in events if e.status.ended], world, load, count
            )
            rows.append(
                Row(
                    SECTION,
                    "Lambda: schedule invoked before the due time (the wait)",
                    f"min {min(early):.1f} / max {max(early):.1f} s (n={len(early)})",
                )
            )
            left = len(client.list_schedules(GroupName=group)["Schedules"])
            rows.append(Row(SECTION, "Lambda: schedules left after the expiries", str(left)))
            runtime.shutdown(5)
        finally:
            lambda_handler.reset()
            for name in (
                "AWS_ENDPOINT_URL_SCHEDULER",
                "AWS_ENDPOINT_URL_SSO_ADMIN",
                "AWS_ENDPOINT_URL_IDENTITYSTORE",
            ):
                os.environ.pop(name, None)


def run(rows: list[Row], count: int = 20) -> None:
    run_gunicorn(rows, count=count)
    run_lambda(rows, count=count)
