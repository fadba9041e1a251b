"""Section 6: the identity-center access provider on moto server: AWS requests and wall time per grant, per
revoke (assignment deleted + sessions denied: the time from close to "sessions denied" as the bot sees it)
and per reconcile pass. Requests are counted with a `before-call` hook on the provider's botocore clients.

moto answers every asynchronous request SUCCEEDED at once, so these are the bot's own costs (request count,
serialisation, the inline-policy merge) plus one local HTTP round trip per request, not AWS's propagation
time; a status poll adds one request per `poll_interval` (1 s) while AWS says IN_PROGRESS.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from typing import Any

from bench.common import Row, bot_settings, moto_server, summary_ms


def _describe(counter: Counter[str], runs: int) -> str:
    total = sum(counter.values()) / runs
    parts = ", ".join(f"{name} {count / runs:g}" for name, count in sorted(counter.items()))
    return f"{total:g} requests ({parts})"


def run(rows: list[Row], count: int = 50) -> None:
    import boto3

    from bot.access import Assignment, ExpectedAssignment, Target
    from bot.access.identity_center import IdentityCenterProvider

    with moto_server() as url:
        os.environ["AWS_ENDPOINT_URL_SSO_ADMIN"] = url
        os.environ["AWS_ENDPOINT_URL_IDENTITYSTORE"] = url
        try:
            admin_sso = boto3.client("sso-admin")
            admin_ids = boto3.client("identitystore")
            instance = admin_sso.list_instances()["Instances"][0]
            permission_set = admin_sso.create_permission_set(
                InstanceArn=instance["InstanceArn"], Name="breakglass-bench", SessionDuration="PT1H"
            )["PermissionSet"]["PermissionSetArn"]
            # An operator statement the revoke must keep (a realistic inline policy to merge into).
            admin_sso.put_inline_policy_to_permission_set(
                InstanceArn=instance["InstanceArn"],
                PermissionSetArn=permission_set,
                InlinePolicy='{"Version":"2012-10-17","Statement":[{"Sid":"Ops","Effect":"Allow",'
                '"Action":"s3:GetObject","Resource":"*"}]}',
            )
            provider = IdentityCenterProvider(instance["InstanceArn"], instance["IdentityStoreId"])
            counters = {"resolve": Counter[str](), "grant": Counter[str](), "revoke": Counter[str]()}
            current: list[Counter[str]] = [counters["resolve"]]

            def before_call(model: Any, **_: Any) -> None:
                current[0][model.name] += 1

            for client in (provider.sso, provider.ids):
                client.meta.events.register("before-call.*.*", before_call)

            target = Target(account="111122223333", permission_set=permission_set)
            times: dict[str, list[float]] = {"resolve": [], "grant": [], "revoke": []}
            expected: list[ExpectedAssignment] = []
            for i in range(count):
                email = f"bench-{i}-{uuid.uuid4().hex[:6]}@example.com"
                admin_ids.create_user(
                    IdentityStoreId=instance["IdentityStoreId"],
                    UserName=email,
                    DisplayName=email,
                    Name={"GivenName": "B", "FamilyName": "Ench"},
                    Emails=[{"Value": email, "Primary": True}],
                )
                for step in ("resolve", "grant", "revoke"):
                    current[0] = counters[step]
                    started = time.perf_counter()
                    if step == "resolve":
                        user_id = provider.resolve_user(email)
                    elif step == "grant":
                        provider.grant(f"ev{i}", target, user_id)
                    else:
                        provider.revoke(f"ev{i}", target, user_id)
                    times[step].append(time.perf_counter() - started)
                expected.append(
                    ExpectedAssignment(event_id=f"ev{i}", assignment=Assignment.of(target, user_id))
                )
            for step in ("resolve", "grant", "revoke"):
                rows.append(
                    Row("6", f"identity-center {step}: AWS requests", _describe(counters[step], count))
                )
                rows.append(Row("6", f"identity-center {step}: wall time", summary_ms(times[step])))

            # Reconcile: re-grant all `count` (vanished since their revoke), then a clean pass.
            counter: Counter[str] = Counter()
            current[0] = counter
            started = time.perf_counter()
            report = provider.reconcile([target], expected)
            regrant_s = time.perf_counter() - started
            assert len(report.regranted) == count, report
            rows.append(
                Row(
                    "6",
                    f"reconcile re-granting {count} vanished assignments",
                    f"{regrant_s * 1000:.0f} ms, {_describe(counter, 1)}",
                )
            )
            counter.clear()
            started = time.perf_counter()
            assert provider.reconcile([target], expected).clean
            rows.append(
                Row(
                    "6",
                    f"reconcile, clean, 1 target with {count} assignments",
                    f"{(time.perf_counter() - started) * 1000:.1f} ms, {_describe(counter, 1)}",
                )
            )
        finally:
            os.environ.pop("AWS_ENDPOINT_URL_SSO_ADMIN", None)
            os.environ.pop("AWS_ENDPOINT_URL_IDENTITYSTORE", None)


PIPELINE_POLICY = """
audit_channel: C0AUDIT
security: [U0SEC]
access:
  provider: identity-center
  instance_arn: {instance_arn}
  identity_store_id: {identity_store_id}
profiles:
  sandbox:
    durations: [1h]
    aws:
      account: "111122223333"
      permission_set: {permission_set}
"""


def run_pipeline(rows: list[Row], count: int = 50) -> None:
    """Through the bot: invoke and close each of `count` people's events with the real use cases and the
    delivery pipeline (SQLite store, fake Slack, moto Identity Center, the system clock). Reports, as the
    bot records it, invocation → access granted and close → sessions denied (the receipts' times), and the
    AWS requests per grant and per revoke step."""
    import secrets
    import tempfile
    from datetime import timedelta
    from pathlib import Path

    import boto3

    from bot.app import create_app, make_slack_client
    from bot.clock import SystemClock
    from bot.localslack.webapi import FakeSlack
    from bot.policy import parse_policy
    from bot.service import InvokeRequest
    from store.sqlite import SQLiteStore
    from tests.access_world import real_permission_set_arn
    from tests.harness import BOT_TOKEN

    users = {f"U{3000 + i}": {"email": f"p{i}-{uuid.uuid4().hex[:6]}@example.com"} for i in range(count)}
    with (
        moto_server() as url,
        tempfile.TemporaryDirectory() as tmp,
        FakeSlack(token=BOT_TOKEN, users=users) as fake,
    ):
        os.environ["AWS_ENDPOINT_URL_SSO_ADMIN"] = url
        os.environ["AWS_ENDPOINT_URL_IDENTITYSTORE"] = url
        try:
            admin_sso = boto3.client("sso-admin")
            admin_ids = boto3.client("identitystore")
            instance_arn = admin_sso.list_instances()["Instances"][0]["InstanceArn"]
            permission_set = real_permission_set_arn(
                admin_sso.create_permission_set(
                    InstanceArn=instance_arn, Name="breakglass-pipeline", SessionDuration="PT1H"
                )["PermissionSet"]["PermissionSetArn"]
            )
            store_id = "d-" + secrets.token_hex(5)
            for info in users.values():
                admin_ids.create_user(
                    IdentityStoreId=store_id,
                    UserName=info["email"],
                    DisplayName=info["email"],
                    Name={"GivenName": "B", "FamilyName": "Ench"},
                    Emails=[{"Value": info["email"], "Primary": True}],
                )
            policy = parse_policy(
                PIPELINE_POLICY.format(
                    instance_arn=instance_arn, identity_store_id=store_id, permission_set=permission_set
                ),
                "bench-access-policy.yml",
            )
            settings = bot_settings(fake.url, slack_team_id="T0001")
            store = SQLiteStore(Path(tmp) / "access.db")
            runtime = create_app(
                settings, store, make_slack_client(settings, timeout=5), policy=policy, clock=SystemClock()
            )
            provider = runtime.pipeline.access
            counters = {"grant": Counter[str](), "revoke": Counter[str]()}
            current: list[Counter[str]] = [counters["grant"]]

            def before_call(model: Any, **_: Any) -> None:
                current[0][model.name] += 1

            for client in (provider.sso, provider.ids):  # type: ignore[attr-defined]
                client.meta.events.register("before-call.*.*", before_call)
            granted: list[float] = []
            denied: list[float] = []
            for user in users:
                current[0] = Counter()  # the identity-store lookup at invoke is counted apart
                event = runtime.service.invoke(
                    InvokeRequest(
                        user_id=user,
                        profile="sandbox",
                        reason="incident",
                        justification="Benchmarking the grant and revoke pipeline",
                        duration="1h",
                    )
                )
                current[0] = counters["grant"]
                event = runtime.pipeline.deliver(event.id) or event
                assert event.access is not None and event.access.granted_at is not None, event
                granted.append((event.access.granted_at - event.created_at).total_seconds())
                runtime.service.close(event.id, by=user, reason="bench done")
                current[0] = counters["revoke"]
                event = runtime.pipeline.deliver(event.id) or event
                assert event.access is not None and event.access.sessions_denied_at is not None, event
                assert event.ended_at is not None
                denied.append((event.access.sessions_denied_at - event.ended_at).total_seconds())
            runtime.shutdown(5)
            store.disconnect()
            assert timedelta(seconds=max(denied)) < timedelta(minutes=1)
            rows.append(Row("6", "pipeline: invocation → access granted", summary_ms(granted)))
            rows.append(Row("6", "pipeline: grant step AWS requests", _describe(counters["grant"], count)))
            rows.append(Row("6", "pipeline: close → sessions denied", summary_ms(denied)))
            rows.append(Row("6", "pipeline: revoke step AWS requests", _describe(counters["revoke"], count)))
        finally:
            os.environ.pop("AWS_ENDPOINT_URL_SSO_ADMIN", None)
            os.environ.pop("AWS_ENDPOINT_URL_IDENTITYSTORE", None)
