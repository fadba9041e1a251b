"""The activity digest (bot.access.activity) against a local fake CloudTrail/STS over HTTP (tests/fake_cloudtrail):
content of a realistic session, the person's records only, pagination, the 2 requests/second limit, caps,
every soft failure, re-gathering, the size bound, and the rendered Block Kit (escaped, within Slack's limits)."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto.server import ThreadedMotoServer

from bot import blocks
from bot.access import activity
from bot.access.activity import (
    MAX_DIGEST_BYTES,
    ActivityDigest,
    ActivityTarget,
    CallRef,
    DigestStatus,
    GatherError,
    GatherLimits,
    RateLimiter,
    gather,
    needs_regather,
)
from bot.localslack.webapi import MAX_MESSAGE_BLOCKS, MAX_VIEW_BLOCKS, validate_blocks, validate_view
from store import BreakGlassEvent
from tests.conftest import AWS_TEST_ENV
from tests.fake_cloudtrail import (
    ACCOUNT,
    GARBAGE,
    HOSTILE,
    FakeCloudTrail,
    bulk_records,
    identity_center_access,
    session_records,
    sso_record,
)
from tests.store_fixtures import T0, make_event

ALICE = "alice@example.com"
REGIONS = ("us-east-1", "eu-west-1")
TARGET = ActivityTarget(
    account=ACCOUNT,
    role="breakglass-activity",
    identities=(ALICE,),
    regions=REGIONS,
    external_id="breakglass-ext-id",
    role_prefix="AWSReservedSSO_BreakGlassAdmin_",
)
CLOSED = T0 + timedelta(minutes=20)
LATE = CLOSED + timedelta(minutes=16)  # after the 15-minute delivery delay


def closed_event() -> BreakGlassEvent:
    return make_event(invoker=ALICE, now=T0).close(by="U0IC", reason="incident over", now=CLOSED)


class FakeTime:
    """A monotonic clock and a sleep that moves it: the limiter and the fake server share it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += max(0.0, seconds)


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def limiters(clock: FakeTime) -> Callable[[str, str], RateLimiter]:
    """Per (account, region) limiters on the fake clock, shared within the test like the process registry."""
    made: dict[tuple[str, str], RateLimiter] = {}

    def get(account: str, region: str) -> RateLimiter:
        key = (account, region)
        if key not in made:
            made[key] = RateLimiter(monotonic=clock.monotonic, sleep=clock.sleep)
        return made[key]

    return get


@pytest.fixture
def fake(clock: FakeTime, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloudTrail]:
    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_REGION", raising=False)
    with FakeCloudTrail(clock=clock.monotonic) as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        yield server


def run(
    fake: FakeCloudTrail,
    clock: FakeTime,
    limiters: Callable[[str, str], RateLimiter],
    *,
    target: ActivityTarget = TARGET,
    now: Any = LATE,
    event: BreakGlassEvent | None = None,
    **kwargs: Any,
) -> ActivityDigest:
    return gather(event or closed_event(), target, now, limiters=limiters, sleep=clock.sleep, **kwargs)


def assert_rate(requests: list[Any], rate: int = 2, per: float = 1.0) -> None:
    """No `per`-second window holds more than `rate` requests of one account+region."""
    by_region: dict[str, list[float]] = {}
    for r in requests:
        by_region.setdefault(r.region, []).append(r.at)
    for times in by_region.values():
        times.sort()
        for i in range(len(times) - rate):
            assert times[i + rate] - times[i] >= per, (times[i : i + rate + 1], times)


# -- a realistic session ------------------------------------------------------------------------------------------


def test_digest_of_a_realistic_identity_center_session(
    fake: FakeCloudTrail, clock: FakeTime, limiters: Any
) -> None:
    hers = session_records(ALICE, T0)
    fake.add(*hers)
    # Not hers, although LookupEvents' Username finds some of them: bob's session; her session name in
    # another permission set's role; a principalId naming someone else; a call after the window.
    fake.add(*session_records("bob@example.com", T0))
    fake.add(
        sso_record(
            ALICE,
            T0 + timedelta(minutes=3),
            "iam.amazonaws.com",
            "CreateUser",
            read_only=False,
            role="AWSReservedSSO_ReadOnly_fedcba9876543210",
        )
    )
    spoofed = sso_record(
        ALICE, T0 + timedelta(minutes=5), "iam.amazonaws.com", "CreateAccessKey", read_only=False
    )
    spoofed["userIdentity"]["principalId"] = "AROA3EXAMPLEROLEID0001:mallory@example.com"
    fake.add(spoofed)
    fake.add(
        sso_record(ALICE, CLOSED + timedelta(minutes=30), "iam.amazonaws.com", "DeleteRole", read_only=False)
    )

    event = closed_event()
    digest = run(fake, clock, limiters, event=event)

    assert digest.status is DigestStatus.COMPLETE and digest.complete
    assert not digest.capped and not digest.early and not digest.errors and not digest.retryable
    assert digest.breakglass_event == event.id
    assert digest.window_start == T0 - timedelta(minutes=1)
    assert digest.window_end == CLOSED + timedelta(minutes=5)
    assert digest.total_calls == 13
    assert (digest.read_calls, digest.write_calls, digest.unknown_calls) == (4, 9, 0)
    assert digest.records_excluded == 2  # the other role and the spoofed principal (bob is not looked up)
    assert digest.denied_calls == 3
    assert [(c.event_name, c.error_code) for c in digest.denied] == [
        ("ScheduleKeyDeletion", "AccessDenied"),
        ("StopLogging", "AccessDenied"),
        ("RunInstances", "Client.UnauthorizedOperation"),
    ]
    assert [(c.category, c.event_name) for c in digest.sensitive] == [
        ("IAM", "AttachRolePolicy"),
        ("S3 policy", "PutBucketPolicy"),
        ("Open to the world", "AuthorizeSecurityGroupIngress"),
        ("KMS", "ScheduleKeyDeletion"),
        ("CloudTrail", "StopLogging"),
    ]
    assert digest.sensitive_calls == 5
    iam = digest.sensitive[0]
    assert iam.time == T0 + timedelta(minutes=6) and iam.event_source == "iam.amazonaws.com"
    assert "roleName=<!channel> ops-admin" in iam.resource  # stored as is; escaped when shown
    assert digest.sensitive[1].resource == "arn:aws:s3:::orders-exports"
    assert digest.sensitive[2].resource == "groupId=sg-0a1b2c3d4e5f67890"  # the 10.0.0.0/8 rule is not listed
    assert digest.services["ec2.amazonaws.com"] == 4 and digest.services["iam.amazonaws.com"] == 1
    assert digest.regions == {"eu-west-1": 7, "us-east-1": 6}
    assert digest.source_ips == {"203.0.113.7": 11, "198.51.100.23": 2}
    assert sum(digest.user_agents.values()) == 13
    assert all("\u202e" not in agent for agent in digest.user_agents)  # bidi shown as a visible \u202e
    assert any("\\u202e" in agent for agent in digest.user_agents)
    # The raw ids, in time order, so an auditor can find the originals.
    assert digest.event_ids == [r["eventID"] for r in hers]


def test_assumes_the_activity_role_and_queries_with_its_credentials(
    fake: FakeCloudTrail, clock: FakeTime, limiters: Any
) -> None:
    fake.add(*session_records(ALICE, T0))
    event = closed_event()
    run(fake, clock, limiters, event=event)
    (assume,) = fake.requests("sts")
    assert assume.params["RoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/breakglass-activity"
    assert assume.params["ExternalId"] == "breakglass-ext-id"
    assert assume.params["RoleSessionName"] == f"breakglass-activity-{event.id}"
    lookups = fake.requests()
    assert {r.access_key for r in lookups} == set(fake.issued_keys)  # signed with the assumed role's keys
    assert {r.region for r in lookups} == set(REGIONS)  # LookupEvents is regional: each region is asked
    for r in lookups:
        assert r.params["LookupAttributes"] == [{"AttributeKey": "Username", "AttributeValue": ALICE}]
        assert r.params["StartTime"] == (T0 - timedelta(minutes=1)).timestamp()
        assert r.params["EndTime"] == (CLOSED + timedelta(minutes=5)).timestamp()


def test_sdk_region_and_endpoint_from_the_environment(
    fake: FakeCloudTrail, clock: FakeTime, limiters: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No regions in the target: AWS_REGION (over AWS_DEFAULT_REGION); the endpoint from AWS_ENDPOINT_URL
    alone also works (botocore's generic variable)."""
    fake.add(*session_records(ALICE, T0))
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL_CLOUDTRAIL")
    monkeypatch.delenv("AWS_ENDPOINT_URL_STS")
    monkeypatch.setenv("AWS_ENDPOINT_URL", fake.url)
    digest = run(fake, clock, limiters, target=TARGET.model_copy(update={"regions": ()}))
    assert digest.regions_queried == ("eu-west-1",)
    assert digest.regions == {"eu-west-1": 7}
    assert {r.region for r in fake.requests()} == {"eu-west-1"}


def test_sts_from_moto_server(
    fake: FakeCloudTrail, clock: FakeTime, limiters: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same code against moto's STS (as in the access provider's tests) and the fake CloudTrail."""
    fake.add(*session_records(ALICE, T0))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"http://{host}:{port}")
        digest = run(fake, clock, limiters)
    finally:
        server.stop()
    assert digest.complete and digest.total_calls == 13
    assert fake.requests("sts") == []
    assert all(r.access_key.startswith("ASIA") for r in fake.requests())


def test_iam_user_identity_for_the_none_provider(
    fake: FakeCloudTrail, clock: FakeTime, limiters: Any
) -> None:
    record = sso_record(
        "ops-breakglass", T0 + timedelta(minutes=2), "iam.amazonaws.com", "CreateRole", read_only=False
    )
    record["userIdentity"] = {
        "type": "IAMUser",
        "principalId": "AIDAEXAMPLE",
        "arn": f"arn:aws:iam::{ACCOUNT}:user/ops-breakglass",
        "accountId": ACCOUNT,
        "userName": "ops-breakglass",
    }
    fake.add(record)
    target = ActivityTarget(
        account=ACCOUNT, role="breakglass-activity", identities=("ops-breakglass",), regions=("us-east-1",)
    )
    digest = run(fake, clock, limiters, target=target)
    assert digest.total_calls == 1 and digest.sensitive[0].category == "IAM"


def test_identity_center_user_name_and_email_both_looked_up(
    fake: FakeCloudTrail, clock: FakeTime, limiters: Any
) -> None:
    """Whether the session name is the user name or the email depends on the identity store: both are asked,
    a call found twice counts once."""
    fake.add(*session_records("alice", T0)[:3], *session_records(ALICE, T0)[:2])
    target = TARGET.model_copy(update={"identities": ("alice", ALICE), "regions": ("us-east-1", "eu-west-1")})
    digest = run(fake, clock, limiters, target=target)
    assert digest.total_calls == 5
    assert {r.params["LookupAttributes"][0]["AttributeValue"] for r in fake.requests()} == {"alice", ALICE}


# -- pagination, rate limit, caps ---------------------------------------------------------------------------------------


def test_pagination_follows_next_token(fake: FakeCloudTrail, clock: FakeTime, limiters: Any) -> None:
    fake.add(*bulk_records(ALICE, T0, 120))
    digest = run(fake, clock, limiters, target=TARGET.model_copy(update={"regions": ("us-east-1",)}))
    assert digest.complete and digest.total_calls == 120 and digest.pages == 3
    tokens = [r.params.get("NextToken") for r in fake.requests()]
    assert tokens[0] is None and all(tokens[1:]) and len(set(tokens)) == 3


def test_rate_limit_two_per_second_per_account_and_region(
    fake: FakeCloudTrail, clock: FakeTime, limiters: Any
) -> None:
    fake.add(*bulk_records(ALICE, T0, 400), *bulk_records(ALICE, T0, 150, region="eu-west-1"))
    digest = run(fake, clock, limiters)
    assert digest.complete and digest.total_calls == 550
    requests = fake.requests()
    assert len(requests) == 8 + 3
    assert_rate(requests)
    assert clock.sleeps  # it did wait (on the fake clock)
    # A second gather right after, for the same account and region, shares the limiter.
    run(fake, clock, limiters)
    assert_rate(fake.requests())


def test_rate_limit_holds_across_threads(fake: FakeCloudTrail, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three gathers at once in one process share the (account, region) limiter. On the real clock: a fake
    clock shared by threads would let one thread's sleep move the others' request times."""
    fake.clock = time.monotonic
    fake.add(*bulk_records(ALICE, T0, 60))
    monkeypatch.setattr(activity, "_LIMITERS", {})
    target = TARGET.model_copy(update={"regions": ("us-east-1",)})
    digests: list[ActivityDigest] = []
    threads = [
        threading.Thread(target=lambda: digests.append(gather(closed_event(), target, LATE)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [d.total_calls for d in digests] == [60, 60, 60]
    assert len(fake.requests()) == 6
    assert_rate(fake.requests())


def test_rate_limiter_on_the_real_clock(fake: FakeCloudTrail, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default limiter (real monotonic clock and sleep) against request times the server records."""
    fake.clock = time.monotonic
    fake.add(*bulk_records(ALICE, T0, 200))
    target = TARGET.model_copy(update={"regions": ("us-east-1",)})
    monkeypatch.setattr(activity, "_LIMITERS", {})
    digest = gather(closed_event(), target, LATE)
    assert digest.complete and len(fake.requests()) == 4
    assert_rate(fake.requests())
    assert activity.limiter_for(ACCOUNT, "us-east-1") is activity.limiter_for(ACCOUNT, "us-east-1")


def test_page_cap(fake: FakeCloudTrail, clock: FakeTime, limiters: Any) -> None:
    fake.add(*bulk_records(ALICE, T0, 300))
    digest = run(fake, clock, limiters, limits=GatherLimits(max_pages=2))
    assert digest.capped and digest.status is DigestStatus.PARTIAL and not digest.retryable
    assert digest.cap_reason == "stopped after 2 LookupEvents pages (cap 2)"
    assert digest.total_calls == 100 and len(fake.requests()) == 2
    assert {r.region for r in fake.requests()} == {"us-east-1"}  # the cap is per event, not per region


def test_record_cap(fake: FakeCloudTrail, clock: FakeTime, limiters: Any) -> None:
    fake.add(*bulk_records(ALICE, T0, 300))
    digest = run(fake, clock, limiters, limits=GatherLimits(max_records=120))
    assert digest.capped and digest.cap_reason == "stopped after 150 records (cap 120)"
    assert digest.records_read == 150


def test_time_budget_stops_new_requests_and_is_retryable(
    fake: FakeCloudTrail, clock: FakeTime, limiters: Any
) -> None:
    """A gather inside a delivery lease starts no request once its budget is spent (checked before each
    request waits for the rate limiter: at 2 per second the fifth is decided at 1.05 s, the sixth at 2.1 s,
    past the 1.5 s budget), and says that the rest is read on the next attempt."""
    fake.add(*bulk_records(ALICE, T0, 300))
    digest = run(fake, clock, limiters, budget=1.5, monotonic=clock.monotonic)
    assert len(fake.requests()) == 5 and digest.pages == 5
    assert digest.capped and digest.status is DigestStatus.PARTIAL and digest.retryable
    assert [e.code for e in digest.errors] == ["OutOfTime"]
    assert "out of time" in (digest.cap_reason or "")


# -- soft failures -------------------------------------------------------------------------------------------------------


def test_no_activity_role(fake: FakeCloudTrail, clock: FakeTime, limiters: Any) -> None:
    digest = run(fake, clock, limiters, target=TARGET.model_copy(update={"role": None}))
    assert digest.status is DigestStatus.FAILED and not digest.retryable
    (error,) = digest.errors
    assert (error.stage, error.code) == ("config", "NotConfigured")
    assert "activity_role" in error.message
    assert fake.requests("sts") == [] and fake.requests() == []


def test_assume_role_access_denied(fake: FakeCloudTrail, clock: FakeTime, limiters: Any) -> None:
    fake.fail("sts", "AccessDenied", status=403, message="not authorized to perform sts:AssumeRole")
    digest = run(fake, clock, limiters)
    assert digest.status is DigestStatus.FAILED and not digest.retryable
    (error,) = digest.errors
    assert (error.stage, error.code) == ("assume_role", "AccessDenied")
    assert "breakglass-activity" in error.message and "sts:AssumeRole" in error.message
    assert fake.requests() == []
    assert not needs_regather(digest, closed_event())  # needs an operator, not a retry loop


def test_throttling_retried_then_succeeds(fake: FakeCloudTrail, clock: FakeTime, limiters: Any) -> None:
    fake.add(*session_records(ALICE, T0))
    fake.fail("cloudtrail", "ThrottlingException", times=2)
    digest = run(fake, clock, limiters)
    assert digest.complete and digest.total_calls == 13
    assert [r.status for r in fake.requests()][:3] == [400, 400, 200]
    assert_rate(fake.requests())  # retries wait on the limiter too


def test_throttling_past_retries(fake: FakeCloudTrail, clock: FakeTime, limiters: Any) -> None:
    fake.add(*session_records(ALICE, T0))
    fake.fail("cloudtrail", "ThrottlingException", times=4)
    digest = run(fake, clock, limiters, limits=GatherLimits(attempts=4))
    assert digest.status is DigestStatus.PARTIAL and digest.retryable  # eu-west-1 was still read
    (error,) = digest.errors
    assert (error.stage, error.region, error.code) == ("lookup_events", "us-east-1", "ThrottlingException")
    assert error.message.startswith("gave up after 4 attempts")
    assert digest.regions == {"eu-west-1": 7}
    backoffs = [s for s in clock.sleeps if s >= 0.5]
    assert len(backoffs) >= 3  # exponential backoff between the 4 attempts, on the injected sleep
    assert needs_regather(digest, closed_event())


def test_cloudtrail_outage(fake: FakeCloudTrail, clock: FakeTime, limiters: Any) -> None:
    fake.set_down(True)
    digest = run(fake, clock, limiters, limits=GatherLimits(attempts=2))
    assert digest.status is DigestStatus.FAILED and digest.retryable
    assert {(e.region, e.code) for e in digest.errors} == {
        ("us-east-1", "ServiceUnavailableException"),
        ("eu-west-1", "ServiceUnavailableException"),
    }
    assert len(fake.requests()) == 4


def test_internal_error_500_is_retryable(fake: FakeCloudTrail, clock: FakeTime, limiters: Any) -> None:
    fake.fail("cloudtrail", "InternalFailure", status=500, times=10)
    digest = run(
        fake,
        clock,
        limiters,
        target=TARGET.model_copy(update={"regions": ("us-east-1",)}),
        limits=GatherLimits(attempts=2),
    )
    assert digest.retryable and digest.errors[0].code == "InternalFailure"


def test_access_denied_on_lookup_is_not_retried(fake: FakeCloudTrail, clock: FakeTime, limiters: Any) -> None:
    fake.fail("cloudtrail", "AccessDeniedException", times=2)
    digest = run(fake, clock, limiters)
    assert digest.status is DigestStatus.FAILED and not digest.retryable
    assert len(fake.requests()) == 2  # one per region, no retries


def test_unreachable_endpoint(clock: FakeTime, limiters: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    digest = gather(closed_event(), TARGET, LATE, limiters=limiters, sleep=clock.sleep)
    assert digest.status is DigestStatus.FAILED and digest.retryable
    assert digest.errors[0].stage == "assume_role" and digest.errors[0].code == "EndpointConnectionError"


def test_malformed_records_are_excluded_not_fatal(
    fake: FakeCloudTrail, clock: FakeTime, limiters: Any
) -> None:
    good = session_records(ALICE, T0)[:2]
    bad = sso_record(ALICE, T0 + timedelta(minutes=3), "ec2.amazonaws.com", "DescribeVpcs", read_only=None)
    bad["eventTime"] = "2026-03-01T12:03:00Z"
    bad["userIdentity"]["arn"] = "not-an-arn/" + ALICE
    fake.add(*good, bad)
    digest = run(fake, clock, limiters)
    assert digest.complete and digest.total_calls == 2 and digest.records_excluded == 1


# -- re-gathering ------------------------------------------------------------------------------------------------------------


def test_gathered_too_early_is_gathered_again(fake: FakeCloudTrail, clock: FakeTime, limiters: Any) -> None:
    fake.add(*session_records(ALICE, T0))
    event = closed_event()
    early = run(fake, clock, limiters, event=event, now=CLOSED + timedelta(minutes=2))
    assert early.early and early.complete
    assert early.window_end == CLOSED + timedelta(minutes=2)  # never asks about the future
    assert needs_regather(early, event)
    assert not needs_regather(early, event, activity_delay=timedelta(minutes=1))
    assert activity.regather_due(event) == CLOSED + timedelta(minutes=15)
    late = run(fake, clock, limiters, event=event, now=CLOSED + timedelta(minutes=15))
    assert not late.early and not needs_regather(late, event)
    assert needs_regather(None, event)


# -- classification and size -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "name", "read_only", "params", "expected"),
    [
        ("iam.amazonaws.com", "ListRoles", True, None, None),
        ("iam.amazonaws.com", "PutRolePolicy", False, {"roleName": "r"}, "IAM"),
        ("kms.amazonaws.com", "Decrypt", True, None, None),
        ("kms.amazonaws.com", "DisableKey", False, {"keyId": "k"}, "KMS"),
        ("s3.amazonaws.com", "PutBucketAcl", False, {"bucketName": "b"}, "S3 policy"),
        ("s3.amazonaws.com", "DeleteBucketPublicAccessBlock", False, {"bucketName": "b"}, "S3 policy"),
        ("s3.amazonaws.com", "CreateBucket", False, {"bucketName": "b"}, None),
        ("organizations.amazonaws.com", "LeaveOrganization", False, None, "Organizations"),
        ("cloudtrail.amazonaws.com", "DeleteTrail", False, {"name": "t"}, "CloudTrail"),
        ("cloudtrail.amazonaws.com", "UpdateTrail", False, {"name": "t"}, "CloudTrail"),
        ("cloudtrail.amazonaws.com", "PutEventSelectors", False, {"trailName": "t"}, "CloudTrail"),
        ("cloudtrail.amazonaws.com", "LookupEvents", True, None, None),
        (
            "ec2.amazonaws.com",
            "AuthorizeSecurityGroupIngress",
            False,
            {"ipPermissions": {"items": [{"ipv6Ranges": {"items": [{"cidrIpv6": "::/0"}]}}]}},
            "Open to the world",
        ),
        (
            "ec2.amazonaws.com",
            "AuthorizeSecurityGroupIngress",
            False,
            {"ipPermissions": {"items": [{"ipRanges": {"items": [{"cidrIp": "192.0.2.0/24"}]}}]}},
            None,
        ),
        ("ec2.amazonaws.com", "AuthorizeSecurityGroupEgress", False, {"cidrIp": "0.0.0.0/0"}, None),
    ],
)
def test_sensitive_category(
    source: str, name: str, read_only: bool, params: Any, expected: str | None
) -> None:
    record = sso_record(ALICE, T0, source, name, read_only=read_only, request=params)
    assert activity.sensitive_category(record) == expected


@pytest.mark.parametrize(
    ("code", "denied"),
    [
        ("AccessDenied", True),
        ("AccessDeniedException", True),
        ("UnauthorizedOperation", True),
        ("Client.UnauthorizedOperation", True),
        ("UnauthorizedException", True),
        ("ThrottlingException", False),
        ("NoSuchBucket", False),
        (None, False),
    ],
)
def test_denied_error_codes(code: str | None, denied: bool) -> None:
    assert activity.is_denied(code) is denied


def test_clean_bounds_and_neutralises_untrusted_text() -> None:
    text = activity.clean("a\u202eb\u2066c\x00d\ne\u200bf" + "x" * 500)
    assert len(text) == activity.MAX_TEXT and text.endswith("…")
    assert text.startswith("a\\u202eb\\u2066c\\u0000d e\\u200bf")


def huge_session() -> list[dict[str, Any]]:
    """1,500 sensitive, denied, hostile calls from many IPs and user agents."""
    records = []
    for i in range(1500):
        records.append(
            sso_record(
                ALICE,
                T0 + timedelta(seconds=i),
                "iam.amazonaws.com",
                "AttachRolePolicy",
                read_only=False,
                request={"roleName": f"{i}-{HOSTILE}", "policyArn": HOSTILE},
                error_code="AccessDenied" if i % 2 else None,
                ip=f"198.51.{i % 250}.{i % 200}",
                agent=f"agent-{i} {HOSTILE}",
            )
        )
    return records


def test_digest_size_is_bounded(fake: FakeCloudTrail, clock: FakeTime, limiters: Any) -> None:
    fake.add(*huge_session())
    target = TARGET.model_copy(update={"regions": ("us-east-1",)})
    digest = run(fake, clock, limiters, target=target, limits=GatherLimits(max_pages=40, max_records=2000))
    assert digest.total_calls == 1500 and digest.sensitive_calls == 1500 and digest.denied_calls == 750
    assert digest.size() <= MAX_DIGEST_BYTES
    assert len(digest.sensitive) + digest.sensitive_dropped == 1500
    assert len(digest.denied) + digest.denied_dropped == 750
    assert len(digest.event_ids) + digest.event_ids_dropped == 1500
    assert digest.sensitive, "the sensitive calls give way last"
    assert all(len(c.resource) <= activity.MAX_TEXT for c in digest.sensitive)
    # Round trip: what is stored is what is shown.
    assert ActivityDigest.model_validate_json(digest.model_dump_json()) == digest


# -- rendering -----------------------------------------------------------------------------------------------------------------

_INJECTIONS = ("<!channel>", "<!here>", "<https://evil", "\u202e", "\u2066")


def _texts(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "text" and isinstance(value, str):
                yield value
            else:
                yield from _texts(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _texts(value)


def assert_safe(rendered: Any) -> None:
    for text in _texts(rendered):
        for bad in _INJECTIONS:
            assert bad not in text, (bad, text[:300])
        assert len(text) <= blocks.MAX_SECTION


def test_audit_thread_message_escapes_and_validates(
    fake: FakeCloudTrail, clock: FakeTime, limiters: Any
) -> None:
    fake.add(*session_records(ALICE, T0))
    digest = run(fake, clock, limiters)
    text, rendered = blocks.thread_activity(digest)
    assert validate_blocks(rendered) == []
    assert len(rendered) <= MAX_MESSAGE_BLOCKS
    assert_safe(rendered)
    assert "13 calls, 9 write, 3 denied, 5 sensitive" in text
    body = "\n".join(_texts(rendered))
    for name in (
        "AttachRolePolicy",
        "PutBucketPolicy",
        "AuthorizeSecurityGroupIngress",
        "ScheduleKeyDeletion",
        "StopLogging",
    ):
        assert name in body
    assert "&lt;!channel&gt; ops-admin" in body
    assert "&lt;https://evil.example|click&gt;" in body
    assert digest.event_ids[0] in body


def test_huge_digest_renders_within_limits(fake: FakeCloudTrail, clock: FakeTime, limiters: Any) -> None:
    fake.add(*huge_session())
    digest = run(fake, clock, limiters, limits=GatherLimits(max_pages=40, max_records=2000))
    _, rendered = blocks.thread_activity(digest)
    assert validate_blocks(rendered) == []
    assert len(rendered) <= blocks.DIGEST_MESSAGE_BLOCKS
    assert_safe(rendered)
    assert "more" in "\n".join(_texts(rendered))


def test_review_modal_section(fake: FakeCloudTrail, clock: FakeTime, limiters: Any) -> None:
    fake.add(*huge_session())
    digest = run(fake, clock, limiters, limits=GatherLimits(max_pages=40, max_records=2000))
    event = closed_event()
    view = blocks.review_modal(event, "meta")
    section = blocks._dump(blocks.review_activity_section(digest))
    assert len(section) <= blocks.DIGEST_MODAL_BLOCKS
    view["blocks"][2:2] = section  # where phase 2 puts it: after the justification, before the notes input
    assert validate_view(view) == []
    assert len(view["blocks"]) <= MAX_VIEW_BLOCKS
    assert_safe(section)
    empty = blocks._dump(blocks.review_activity_section(None))
    assert "not been gathered" in empty[0]["elements"][0]["text"]


@pytest.mark.parametrize("failure", ["no-role", "denied", "outage"])
def test_failures_render_what_could_not_be_gathered(
    failure: str, fake: FakeCloudTrail, clock: FakeTime, limiters: Any
) -> None:
    target = TARGET
    if failure == "no-role":
        target = TARGET.model_copy(update={"role": None})
    elif failure == "denied":
        fake.fail("sts", "AccessDenied", status=403, message="<!channel> not authorized")
    else:
        fake.set_down(True)
    digest = run(fake, clock, limiters, target=target, limits=GatherLimits(attempts=1))
    text, rendered = blocks.thread_activity(digest)
    assert validate_blocks(rendered) == []
    assert_safe(rendered)
    body = "\n".join(_texts(rendered))
    assert "could not be gathered" in text
    assert "What could not be gathered" in body
    assert ("will be retried" in body) is (failure == "outage")


@pytest.mark.parametrize(("service", "status"), [("sts", 403), ("cloudtrail", 502), ("cloudtrail", 200)])
def test_unparsable_answers_never_raise(
    service: str, status: int, fake: FakeCloudTrail, clock: FakeTime, limiters: Any
) -> None:
    fake.add(*session_records(ALICE, T0))
    fake.fail(service, GARBAGE, status=status, times=10)
    digest = run(fake, clock, limiters, limits=GatherLimits(attempts=2))
    # Never "complete, 0 calls": botocore reads an unparsable 200 as an empty answer.
    assert digest.status is DigestStatus.FAILED and digest.retryable
    expected = {
        ("sts", 403): ("assume_role", "ResponseParserError"),
        ("cloudtrail", 502): ("lookup_events", "502"),
        ("cloudtrail", 200): ("lookup_events", "MalformedResponse"),
    }[(service, status)]
    assert {(e.stage, e.code) for e in digest.errors} == {expected}


def test_sample_document_is_up_to_date() -> None:
    """docs/activity-digest.md is what tests/activity_sample.py prints (regenerate it when this fails)."""
    from pathlib import Path

    from tests import activity_sample

    doc = Path(__file__).resolve().parent.parent / "docs" / "activity-digest.md"
    assert doc.read_text() == activity_sample.document()


_hostile_text = st.one_of(
    st.text(max_size=400),
    st.sampled_from(
        ["<!channel>", "<!here|here>", "<https://evil.example|click>", "&amp;", "`", "```", "\u202e"]
    ),
).map(activity.clean)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(_hostile_text, min_size=8, max_size=8), count=st.integers(0, 60))
def test_any_cloudtrail_text_renders_escaped_and_valid(texts: list[str], count: int) -> None:
    """Whatever CloudTrail hands back (after `clean`, as stored), the rendered digest is valid Block Kit and
    nothing in it can ping, link or reorder text."""
    call = CallRef(
        time=T0,
        event_name=texts[0],
        event_source=texts[1],
        region=texts[2],
        resource=texts[3],
        error_code=texts[4] or None,
        category="IAM",
        event_id=texts[5],
    )
    digest = ActivityDigest(
        breakglass_event="5a3c9e0d2b7f4a61",
        account=ACCOUNT,
        identities=(texts[6] or "x",),
        regions_queried=(texts[2],),
        gathered_at=LATE,
        window_start=T0,
        window_end=CLOSED,
        status=DigestStatus.PARTIAL,
        capped=True,
        cap_reason=texts[7],
        total_calls=count,
        sensitive_calls=count,
        sensitive=[call] * count,
        denied_calls=count,
        denied=[call] * count,
        services={texts[1]: 1, texts[0] + "s": 2},
        source_ips={texts[7]: count},
        user_agents={texts[3]: 1},
        event_ids=[texts[5]] * count,
        errors=[
            GatherError(
                stage="lookup_events", region=texts[2], code=texts[4], message=texts[3], retryable=True
            )
        ],
    )
    _, rendered = blocks.thread_activity(digest)
    assert validate_blocks(rendered) == []
    assert len(rendered) <= blocks.DIGEST_MESSAGE_BLOCKS
    for text in _texts(rendered):
        assert len(text) <= blocks.MAX_SECTION
        assert "\u202e" not in text
        # Every "<" left is one of ours (date tokens); everything else came escaped.
        assert re.sub(r"<!date\^\d+\^[^|>]*\|[^>]*>", "", text).count("<") == 0, text[:400]


def test_rate_limiter_allows_two_per_second_then_waits() -> None:
    clock = FakeTime()
    limiter = RateLimiter(monotonic=clock.monotonic, sleep=clock.sleep)
    starts = []
    for _ in range(5):
        with limiter.slot():
            starts.append(clock.now - 1000.0)
            clock.now += 0.2  # the request takes 200 ms: the window counts from its answer
    assert starts == pytest.approx([0, 0.2, 1.25, 1.45, 2.5])


def test_active_event_window_ends_now(fake: FakeCloudTrail, clock: FakeTime, limiters: Any) -> None:
    """Gathered while still active (e.g. a review opened early): the window ends now, and it is early."""
    fake.add(*session_records(ALICE, T0))
    event = make_event(invoker=ALICE, now=T0)
    now = T0 + timedelta(minutes=8, seconds=30)
    digest = run(fake, clock, limiters, event=event, now=now)
    assert digest.window_end == now and digest.early
    assert digest.total_calls == 7  # calls up to 12:08
    assert needs_regather(digest, event)


# -- evidence bound to the person and the role ---------------------------------------------------------------


def ic_event(email: str = ALICE) -> BreakGlassEvent:
    access = identity_center_access(email)
    event = make_event(invoker="U0001", profile="sandbox", now=T0, slack_user_id="U0001", access=access)
    return event.close(by="U0IC", reason="incident over", now=CLOSED)


def ic_target(event: BreakGlassEvent) -> ActivityTarget:
    """The target the digest handler builds (bot.evidence), for an identity-center event."""
    from bot.evidence import activity_target, session_names
    from bot.policy import parse_policy
    from tests.test_activity_flow import POLICY

    target = activity_target(parse_policy(POLICY, "p.yml"), event, session_names(event))
    assert target is not None
    return target


def test_a_session_named_like_the_invoker_in_another_role_never_counts(
    fake: FakeCloudTrail, clock: FakeTime, limiters: Any
) -> None:
    """Anyone who can assume some role in the account can name the session `alice@example.com` and plant
    calls: only the role provisioned from the event's permission set (its name stored at grant) counts,
    not a look-alike permission set (`BreakGlassAdmin_Evil`), not an IAM user named like her."""
    fake.add(*session_records(ALICE, T0))  # her 13 calls
    planted = [
        sso_record(
            ALICE,
            T0 + timedelta(minutes=4),
            "iam.amazonaws.com",
            "CreateAccessKey",
            read_only=False,
            role=role,
        )
        for role in ("ops-automation", "AWSReservedSSO_BreakGlassAdmin_Evil_0123456789abcdef")
    ]
    user = sso_record(
        ALICE, T0 + timedelta(minutes=4), "iam.amazonaws.com", "CreateAccessKey", read_only=False
    )
    user["userIdentity"] = {"type": "IAMUser", "accountId": ACCOUNT, "userName": ALICE, "arn": "x"}
    fake.add(*planted, user)
    event = ic_event()
    target = ic_target(event)
    assert target.sso_permission_set == "BreakGlassAdmin"
    digest = run(fake, clock, limiters, target=target, event=event)
    assert digest.status is DigestStatus.COMPLETE
    assert digest.total_calls == 13
    assert "CreateAccessKey" not in {c.event_name for c in digest.sensitive}
    assert digest.records_excluded == 3


def test_changing_the_slack_email_after_the_event_cannot_empty_the_digest(
    fake: FakeCloudTrail, clock: FakeTime, limiters: Any
) -> None:
    """Session names come from the identity stored with the event at invoke time, never from the Slack
    profile at gather time (no Slack lookup happens at all)."""
    fake.add(*session_records(ALICE, T0))
    event = ic_event(email=ALICE)
    target = ic_target(event)
    assert target.identities == ("U0001", ALICE)
    digest = run(fake, clock, limiters, target=target, event=event)
    assert digest.total_calls == 13 and digest.complete
