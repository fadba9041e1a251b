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

from bench.common import Row, moto_server, summary_ms


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
