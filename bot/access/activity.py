"""The activity digest: what one break-glass session did in AWS, from CloudTrail's event history.

`gather(event, target, now)` assumes the profile's activity role in the target account (`sts.assume_role`),
reads `cloudtrail.lookup_events` for the person's session over the event's window (with margins), keeps only
the records whose `userIdentity` really is that person, and folds them into an `ActivityDigest`: counts,
read vs write, denied calls, the sensitive changes (each with time, event name, source and resource), the
services, regions, source IPs and user agents, and the raw CloudTrail event ids.

AWS conventions: clients are created like every other boto3 client, so `AWS_ENDPOINT_URL`,
`AWS_ENDPOINT_URL_STS` and `AWS_ENDPOINT_URL_CLOUDTRAIL` point them elsewhere (botocore reads these), and the
region is `AWS_REGION` or `AWS_DEFAULT_REGION` unless the target names its regions. LookupEvents is regional:
each region of the target is queried (global services such as IAM are recorded in us-east-1).

Limits: LookupEvents allows 2 requests per second per account and region; every request (first attempt or
retry) waits on a `RateLimiter` shared in the process per (account, region). The work per event is capped
(`GatherLimits`); a capped digest says so. The serialized digest is at most `MAX_DIGEST_BYTES` (lists are
truncated, with counts of what was dropped).

Fails soft: a missing role, a refused `AssumeRole`, throttling past the retries or a CloudTrail outage never
raise to the caller; the digest's `errors` say what could not be gathered and why, and `retryable` whether
trying again later can help. Everything in the digest that came from CloudTrail is untrusted text: it is
bounded here and escaped wherever it is shown (bot.blocks).
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from store import BreakGlassEvent
from store.dynamodb import aws_session
from store.timeutil import ensure_utc, parse_ts

DEFAULT_ACTIVITY_DELAY = timedelta(minutes=15)
MAX_DIGEST_BYTES = 16 * 1024
MAX_TEXT = 200  # any one string taken from CloudTrail
MAX_ERROR_TEXT = 300
LOOKUP_PAGE_SIZE = 50  # LookupEvents' maximum MaxResults
LOOKUP_RATE = 2  # requests per second per account and region (CloudTrail quota)
SESSION_NAME_PREFIX = "breakglass-activity-"

# Initial list bounds; `_fit` shrinks them further if the serialized digest is still too large.
MAX_SENSITIVE = 40
MAX_DENIED = 20
MAX_COUNTER_KEYS = 15
MAX_EVENT_IDS = 150
MAX_ERRORS = 10


# -- the target and the limits --------------------------------------------------------------------------


class ActivityTarget(BaseModel):
    """Where and whom to look for; built from the profile's `aws` block and the grant (phase 2).

    `role` is the activity role's ARN or name (a name is put in `account`). `identities` are the names the
    person's sessions carry: for Identity Center the role session name is the identity-store user name
    (often the email), so pass both the user name and the email when they differ; for the `none` provider
    the identity the policy maps. `role_prefix` (e.g. `AWSReservedSSO_BreakGlass_`) additionally requires the
    assumed role's name to start with it. `regions` empty means the SDK's region.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    account: str = Field(pattern=r"^\d{12}$")
    role: str | None = None
    identities: tuple[str, ...] = Field(min_length=1, max_length=5)
    regions: tuple[str, ...] = Field(default=(), max_length=20)
    external_id: str | None = None
    role_prefix: str | None = None
    sso_permission_set: str | None = None
    """With Identity Center: the name of the event's permission set. The assumed role must then be exactly
    the one provisioned from it, ``AWSReservedSSO_<name>_<16 hex digits>`` (a prefix alone would also take
    a permission set named ``<name>_Other``)."""
    partition: str = "aws"

    def role_arn(self) -> str | None:
        if not self.role:
            return None
        if self.role.startswith("arn:"):
            return self.role
        return f"arn:{self.partition}:iam::{self.account}:role/{self.role}"


@dataclass(frozen=True)
class GatherLimits:
    """The work one gather may do, and its time margins around the event's window."""

    max_pages: int = 20  # LookupEvents requests, all regions and identities together (≥ 10 s at 2/s)
    max_records: int = 1000  # records read (matching or not)
    attempts: int = 4  # per request, on throttling / 5xx / connection errors
    backoff: float = 1.0  # seconds, doubled per retry (with jitter), capped at 8 s
    margin_before: timedelta = timedelta(minutes=1)
    margin_after: timedelta = timedelta(minutes=5)


DEFAULT_LIMITS = GatherLimits()


# -- the rate limiter ---------------------------------------------------------------------------------------


class RateLimiter:
    """At most `rate` requests in any `per`-second window (plus a small safety margin), as the server sees
    them: a request holds its slot from before it is sent until its answer is back, and the window is
    counted from then. (Counting from the send would let a slow request and a fast one arrive closer
    together than the limit allows.)

    The clock and the sleep are injectable, so tests move time without sleeping."""

    def __init__(
        self,
        rate: int = LOOKUP_RATE,
        per: float = 1.0,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        margin: float = 0.05,
    ) -> None:
        self.rate = rate
        self.window = per + margin
        self._monotonic = monotonic
        self._sleep = sleep
        self._slots: list[list[float | None]] = []  # [when the answer came back], [None] while in flight
        self._cond = threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a slot around one request."""
        entry = self._reserve()
        try:
            yield
        finally:
            with self._cond:
                entry[0] = self._monotonic()
                self._cond.notify_all()

    def _reserve(self) -> list[float | None]:
        with self._cond:
            while True:
                now = self._monotonic()
                # (1 µs of tolerance: a float clock that has slept exactly the wait must count as past it)
                self._slots = [e for e in self._slots if e[0] is None or now - e[0] < self.window - 1e-6]
                if len(self._slots) < self.rate:
                    entry: list[float | None] = [None]
                    self._slots.append(entry)
                    return entry
                done = [e[0] for e in self._slots if e[0] is not None]
                if not done:  # every slot in flight: wait for an answer (bounded by the read timeout)
                    self._cond.wait(timeout=1.0)
                    continue
                self._cond.release()  # others may finish their requests while this one waits
                try:
                    self._sleep(min(done) + self.window - now)
                finally:
                    self._cond.acquire()


_LIMITERS: dict[tuple[str, str], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(account: str, region: str) -> RateLimiter:
    """The process-wide LookupEvents limiter of one account and region."""
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get((account, region))
        if limiter is None:
            limiter = _LIMITERS[(account, region)] = RateLimiter()
        return limiter


# -- the digest ------------------------------------------------------------------------------------------------


class DigestStatus(StrEnum):
    COMPLETE = "complete"  # every page of every region read, no error, not capped
    PARTIAL = "partial"  # something was read, but capped or an error stopped part of it
    FAILED = "failed"  # nothing could be read


class GatherError(BaseModel):
    """One thing that could not be gathered, and why."""

    model_config = ConfigDict(frozen=True)

    stage: str  # "config" | "assume_role" | "lookup_events"
    region: str | None = None
    code: str
    message: str = Field(max_length=MAX_ERROR_TEXT)
    retryable: bool


class CallRef(BaseModel):
    """One CloudTrail record worth listing (a denied or sensitive call)."""

    model_config = ConfigDict(frozen=True)

    time: datetime
    event_name: str
    event_source: str
    region: str = ""
    resource: str = ""
    error_code: str | None = None
    category: str | None = None  # sensitive calls: IAM, KMS, S3 policy, Organizations, CloudTrail, Open SG
    event_id: str = ""


class ActivityDigest(BaseModel):
    """What one break-glass session did, bounded to `MAX_DIGEST_BYTES` as JSON.

    Lists keep their first entries in time order; `*_dropped` count what was cut (for the counters, the
    number of distinct keys left out)."""

    model_config = ConfigDict(frozen=True)

    version: int = 1
    breakglass_event: str
    account: str
    identities: tuple[str, ...]
    regions_queried: tuple[str, ...] = ()
    gathered_at: datetime
    window_start: datetime
    window_end: datetime
    status: DigestStatus
    capped: bool = False
    cap_reason: str | None = None
    early: bool = False  # gathered before ended_at + activity_delay: CloudTrail may not have everything yet
    pages: int = 0
    records_read: int = 0
    records_excluded: int = 0  # read, but not this person's session (or outside the window)
    total_calls: int = 0
    read_calls: int = 0
    write_calls: int = 0
    unknown_calls: int = 0  # records without readOnly
    denied_calls: int = 0
    denied: list[CallRef] = []
    denied_dropped: int = 0
    sensitive_calls: int = 0
    sensitive: list[CallRef] = []
    sensitive_dropped: int = 0
    services: dict[str, int] = {}
    services_dropped: int = 0
    regions: dict[str, int] = {}
    regions_dropped: int = 0
    source_ips: dict[str, int] = {}
    source_ips_dropped: int = 0
    user_agents: dict[str, int] = {}
    user_agents_dropped: int = 0
    event_ids: list[str] = []
    event_ids_dropped: int = 0
    errors: list[GatherError] = []
    errors_dropped: int = 0

    @property
    def retryable(self) -> bool:
        """True when a later gather may get what this one could not (throttling, outage)."""
        return any(e.retryable for e in self.errors)

    @property
    def complete(self) -> bool:
        return self.status is DigestStatus.COMPLETE

    def size(self) -> int:
        return len(self.model_dump_json().encode())


def regather_due(event: BreakGlassEvent, activity_delay: timedelta = DEFAULT_ACTIVITY_DELAY) -> datetime:
    """When a gather sees everything CloudTrail will deliver for this event: ended_at + activity_delay."""
    end = event.ended_at or event.expires_at
    return end + activity_delay


def gathered_too_early(
    digest: ActivityDigest, event: BreakGlassEvent, activity_delay: timedelta = DEFAULT_ACTIVITY_DELAY
) -> bool:
    return digest.gathered_at < regather_due(event, activity_delay)


def needs_regather(
    digest: ActivityDigest | None,
    event: BreakGlassEvent,
    activity_delay: timedelta = DEFAULT_ACTIVITY_DELAY,
) -> bool:
    """Must the digest be gathered again? None yet, gathered before ended_at + activity_delay (CloudTrail
    delivers late), or it failed in a way a retry can fix. A digest that failed for good (no role, access
    denied) is not gathered again by itself: the operator must fix the role first."""
    if digest is None:
        return True
    return gathered_too_early(digest, event, activity_delay) or digest.retryable


# -- classification ------------------------------------------------------------------------------------------

_DENIED_RE = re.compile(r"^(Client\.)?(AccessDenied|Unauthorized)")
_S3_POLICY_EVENTS = frozenset(
    {
        "PutBucketPolicy",
        "DeleteBucketPolicy",
        "PutBucketAcl",
        "PutObjectAcl",
        "PutBucketPublicAccessBlock",
        "DeleteBucketPublicAccessBlock",
        "PutAccountPublicAccessBlock",
        "DeleteAccountPublicAccessBlock",
        "PutPublicAccessBlock",
        "DeletePublicAccessBlock",
        "PutBucketOwnershipControls",
    }
)
_CLOUDTRAIL_EVENTS = frozenset(
    {
        "StopLogging",
        "DeleteTrail",
        "UpdateTrail",
        "PutEventSelectors",
        "PutInsightSelectors",
        "DeleteEventDataStore",
        "UpdateEventDataStore",
        "StopEventDataStoreIngestion",
    }
)
_SG_INGRESS_EVENTS = frozenset({"AuthorizeSecurityGroupIngress", "ModifySecurityGroupRules"})
_WORLD = frozenset({"0.0.0.0/0", "::/0"})


def is_denied(error_code: str | None) -> bool:
    return bool(error_code and _DENIED_RE.match(error_code))


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def sensitive_category(record: dict[str, Any]) -> str | None:
    """Which kind of sensitive change a CloudTrail record is, or None."""
    source = str(record.get("eventSource") or "")
    name = str(record.get("eventName") or "")
    write = record.get("readOnly") is not True
    if source == "iam.amazonaws.com" and write:
        return "IAM"
    if source == "kms.amazonaws.com" and write:
        return "KMS"
    if source in ("s3.amazonaws.com", "s3-control.amazonaws.com") and name in _S3_POLICY_EVENTS:
        return "S3 policy"
    if source == "organizations.amazonaws.com" and write:
        return "Organizations"
    if source == "cloudtrail.amazonaws.com" and name in _CLOUDTRAIL_EVENTS:
        return "CloudTrail"
    if (
        source == "ec2.amazonaws.com"
        and name in _SG_INGRESS_EVENTS
        and any(s.strip() in _WORLD for s in _strings(record.get("requestParameters")))
    ):
        return "Open to the world"
    return None


# Resource names, most specific first, as they appear in requestParameters of the sensitive services.
_RESOURCE_KEYS = (
    "roleName",
    "userName",
    "groupName",
    "policyArn",
    "policyName",
    "instanceProfileName",
    "keyId",
    "aliasName",
    "bucketName",
    "groupId",
    "trailName",
    "name",
    "accountId",
    "targetId",
    "policyId",
)


def resource_of(record: dict[str, Any]) -> str:
    resources = record.get("resources")
    if isinstance(resources, list):
        arns = [str(r.get("ARN")) for r in resources if isinstance(r, dict) and r.get("ARN")]
        if arns:
            return clean(", ".join(arns))
    params = record.get("requestParameters")
    if isinstance(params, dict):
        found = [f"{k}={params[k]}" for k in _RESOURCE_KEYS if isinstance(params.get(k), str | int)]
        if found:
            return clean(", ".join(found[:2]))
        if params:
            return clean(json.dumps(params, ensure_ascii=False, separators=(",", ":"), sort_keys=True))
    return ""


# Bidi embeddings/overrides/isolates and marks would reorder what a reviewer sees; controls break lines.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean(value: Any, limit: int = MAX_TEXT) -> str:
    """Untrusted text from CloudTrail made safe to store and show: controls and bidi characters shown as
    visible `\\uXXXX`, whitespace runs collapsed, at most `limit` characters. (Escaping for mrkdwn is the
    renderer's job.)"""
    text = "" if value is None else str(value)
    out: list[str] = []
    for ch in text[: limit * 2]:
        if ch in "\t\r\n":
            out.append(" ")
        elif ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    result = re.sub(r" {2,}", " ", "".join(out)).strip()
    return result if len(result) <= limit else result[: limit - 1] + "…"


# -- matching the person --------------------------------------------------------------------------------------


SSO_ROLE_PREFIX = "AWSReservedSSO_"
"""Roles Identity Center provisions from a permission set are named ``AWSReservedSSO_<name>_<hash>``."""
_SSO_HASH = re.compile(r"[0-9a-f]{16}")


def is_sso_role(role: str, permission_set_name: str) -> bool:
    """Is ``role`` the role Identity Center provisioned from the permission set ``permission_set_name``?
    An empty name (a grant recorded before names were) accepts any Identity Center role."""
    if not role.startswith(SSO_ROLE_PREFIX):
        return False
    if not permission_set_name:
        return True
    head = SSO_ROLE_PREFIX + permission_set_name + "_"
    return role.startswith(head) and _SSO_HASH.fullmatch(role[len(head) :]) is not None


def is_persons_record(record: dict[str, Any], target: ActivityTarget) -> bool:
    """Is this CloudTrail record a call made in the person's session, in the target account?

    LookupEvents' `Username` is a name, not an identity: another role's session with the same name, or a
    session in another account, must not count. For an assumed role the ARN is
    `arn:<partition>:sts::<account>:assumed-role/<role>/<session>` and the principalId `<role id>:<session>`:
    both must name the person; the role must match `role_prefix` when set, and be the role provisioned from
    `sso_permission_set` when set (then IAM users never count)."""
    identity = record.get("userIdentity")
    if not isinstance(identity, dict):
        return False
    names = {n.casefold() for n in target.identities}
    kind = identity.get("type")
    if kind == "AssumedRole":
        arn = str(identity.get("arn") or "")
        parts = arn.split(":", 5)
        if len(parts) != 6 or parts[2] != "sts" or parts[4] != target.account:
            return False
        path = parts[5].split("/")
        if len(path) != 3 or path[0] != "assumed-role":
            return False
        role, session = path[1], path[2]
        principal = str(identity.get("principalId") or "")
        principal_session = principal.split(":", 1)[1] if ":" in principal else ""
        if session.casefold() not in names or principal_session.casefold() != session.casefold():
            return False
        if target.sso_permission_set is not None and not is_sso_role(role, target.sso_permission_set):
            return False
        return not target.role_prefix or role.startswith(target.role_prefix)
    if kind == "IAMUser" and not target.role_prefix and target.sso_permission_set is None:
        return (
            str(identity.get("accountId") or "") == target.account
            and str(identity.get("userName") or "").casefold() in names
        )
    return False


# -- gathering ------------------------------------------------------------------------------------------------

_RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestThrottled",
        "RequestThrottledException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "InternalServerException",
        "OperationNotPermittedException",
        "RequestTimeout",
        "RequestTimeoutException",
        "IDPCommunicationError",
    }
)


class _MalformedResponse(Exception):
    """An answer the SDK parsed into something without the fields every answer has."""


def _client_error(exc: ClientError) -> tuple[str, str, bool]:
    error = exc.response.get("Error", {}) or {}
    code = str(error.get("Code") or "Unknown")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    message = str(error.get("Message") or exc)
    return code, message, code in _RETRYABLE_CODES or status >= 500


def _describe(exc: Exception) -> tuple[str, str, bool]:
    """(code, message, retryable) of an AWS failure."""
    if isinstance(exc, ClientError):
        return _client_error(exc)
    if isinstance(exc, _MalformedResponse):
        return "MalformedResponse", str(exc), True
    name = type(exc).__name__
    # Connection problems and timeouts are worth retrying; credentials or parameter problems are not.
    # (botocore's ResponseParserError, an unparsable answer, says "further retries may succeed").
    retryable = any(word in name for word in ("Connect", "Timeout", "Connection", "HTTPClient", "Parser"))
    return name, str(exc), retryable


def sdk_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


_CLIENT_CONFIG = Config(
    retries={"total_max_attempts": 1},  # retries are ours: rate-limited and with an injectable sleep
    connect_timeout=5,
    read_timeout=15,
)
_STS_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10)


@dataclass
class _Gathering:
    """The state of one gather while it runs."""

    target: ActivityTarget
    limits: GatherLimits
    start: datetime
    end: datetime
    pages: int = 0
    records_read: int = 0
    excluded: int = 0
    capped: str | None = None
    seen: set[str] = field(default_factory=set)
    calls: list[dict[str, Any]] = field(default_factory=list)
    errors: list[GatherError] = field(default_factory=list)
    deadline: float | None = None  # monotonic(): no new request after it
    monotonic: Callable[[], float] = time.monotonic

    def cap_hit(self) -> bool:
        if self.capped is not None:
            return True
        if self.deadline is not None and self.monotonic() >= self.deadline:
            self.capped = f"stopped after {self.pages} LookupEvents pages: out of time for this attempt"
            self.errors.append(
                GatherError(
                    stage="lookup_events",
                    code="OutOfTime",
                    message="the time budget of one gather ran out; the rest is read on the next attempt",
                    retryable=True,
                )
            )
        elif self.pages >= self.limits.max_pages:
            self.capped = f"stopped after {self.pages} LookupEvents pages (cap {self.limits.max_pages})"
        elif self.records_read >= self.limits.max_records:
            self.capped = f"stopped after {self.records_read} records (cap {self.limits.max_records})"
        return self.capped is not None

    def take(self, raw_event: dict[str, Any]) -> None:
        self.records_read += 1
        try:
            record = json.loads(raw_event.get("CloudTrailEvent") or "{}")
        except ValueError:
            record = None
        if not isinstance(record, dict):
            self.excluded += 1
            return
        event_id = str(record.get("eventID") or raw_event.get("EventId") or "")
        if event_id and event_id in self.seen:
            return  # the same call found through another identity or region
        when = _event_time(record, raw_event)
        if when is None or not (self.start <= when <= self.end) or not is_persons_record(record, self.target):
            self.excluded += 1
            return
        if event_id:
            self.seen.add(event_id)
        record["_time"] = when
        self.calls.append(record)


def _event_time(record: dict[str, Any], raw_event: dict[str, Any]) -> datetime | None:
    value = record.get("eventTime")
    try:
        if isinstance(value, str):
            return parse_ts(value)
        fallback = raw_event.get("EventTime")
        return ensure_utc(fallback) if isinstance(fallback, datetime) else None
    except ValueError:
        return None


def _lookup_region(
    state: _Gathering,
    cloudtrail: Any,
    region: str,
    limiter: RateLimiter,
    sleep: Callable[[float], None],
) -> None:
    for identity in state.target.identities:
        token: str | None = None
        while True:
            if state.cap_hit():
                return
            params: dict[str, Any] = {
                "LookupAttributes": [{"AttributeKey": "Username", "AttributeValue": identity}],
                "StartTime": state.start,
                "EndTime": state.end,
                "MaxResults": LOOKUP_PAGE_SIZE,
            }
            if token:
                params["NextToken"] = token
            page = _call_with_retries(state, cloudtrail, params, region, limiter, sleep)
            if page is None:
                return  # the error is recorded; the other regions are still tried
            state.pages += 1
            for raw in page.get("Events") or []:
                state.take(raw)
            token = page.get("NextToken")
            if not token:
                break


def _call_with_retries(
    state: _Gathering,
    cloudtrail: Any,
    params: dict[str, Any],
    region: str,
    limiter: RateLimiter,
    sleep: Callable[[float], None],
) -> dict[str, Any] | None:
    limits = state.limits
    for attempt in range(1, limits.attempts + 1):
        try:
            with limiter.slot():
                page = dict(cloudtrail.lookup_events(**params))
            if not isinstance(page.get("Events"), list):
                # botocore reads an unparsable 200 as an empty answer: that is not "no activity".
                raise _MalformedResponse("LookupEvents answered without an Events list")
            return page
        except Exception as exc:  # noqa: BLE001 - every SDK failure goes in the digest, none to the caller
            code, message, retryable = _describe(exc)
            if retryable and attempt < limits.attempts:
                delay = min(8.0, limits.backoff * 2 ** (attempt - 1))
                sleep(delay * (0.5 + random.random() / 2))
                continue
            if retryable:
                message = f"gave up after {attempt} attempts: {message}"
            state.errors.append(
                GatherError(
                    stage="lookup_events",
                    region=region,
                    code=clean(code, 100),
                    message=clean(message, MAX_ERROR_TEXT),
                    retryable=retryable,
                )
            )
            return None
    return None  # pragma: no cover - the loop always returns


def gather(
    event: BreakGlassEvent,
    target: ActivityTarget,
    now: datetime,
    *,
    limits: GatherLimits = DEFAULT_LIMITS,
    activity_delay: timedelta = DEFAULT_ACTIVITY_DELAY,
    session: boto3.session.Session | None = None,
    limiters: Callable[[str, str], RateLimiter] = limiter_for,
    sleep: Callable[[float], None] = time.sleep,
    budget: float | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> ActivityDigest:
    """The activity digest of one break-glass event. Never raises for AWS failures (see the module doc).
    `budget`: seconds after which no new LookupEvents request starts (the digest is then partial, with a
    retryable error), so that a gather ends inside the delivery lease that runs it."""
    now = ensure_utc(now)
    ended = event.ended_at or min(event.expires_at, now)
    start = event.created_at - limits.margin_before
    end = min(ended + limits.margin_after, now)
    default_region = sdk_region()
    regions = target.regions or ((default_region,) if default_region else ())
    state = _Gathering(
        target=target,
        limits=limits,
        start=start,
        end=max(end, start),
        deadline=None if budget is None else monotonic() + budget,
        monotonic=monotonic,
    )
    base = {
        "breakglass_event": event.id,
        "account": target.account,
        "identities": tuple(clean(i) for i in target.identities),
        "regions_queried": tuple(clean(r, 40) for r in regions),
        "gathered_at": now,
        "window_start": start,
        "window_end": state.end,
        "early": now < regather_due(event, activity_delay),
    }

    role_arn = target.role_arn()
    if role_arn is None or not regions:
        what = "no activity_role is configured for this profile" if role_arn is None else "no AWS region"
        error = GatherError(stage="config", code="NotConfigured", message=what, retryable=False)
        return ActivityDigest(status=DigestStatus.FAILED, errors=[error], **base)

    session = session or aws_session()
    try:
        sts = session.client("sts", region_name=regions[0], config=_STS_CONFIG)
        params: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": (SESSION_NAME_PREFIX + event.id)[:64],
            "DurationSeconds": 900,
        }
        if target.external_id:
            params["ExternalId"] = target.external_id
        credentials = sts.assume_role(**params)["Credentials"]
    except Exception as exc:  # noqa: BLE001 - every SDK failure goes in the digest, none to the caller
        code, message, retryable = _describe(exc)
        error = GatherError(
            stage="assume_role",
            code=clean(code, 100),
            message=clean(f"{role_arn}: {message}", MAX_ERROR_TEXT),
            retryable=retryable,
        )
        return ActivityDigest(status=DigestStatus.FAILED, errors=[error], **base)

    for region in regions:
        try:
            cloudtrail = session.client(
                "cloudtrail",
                region_name=region,
                aws_access_key_id=credentials["AccessKeyId"],
                aws_secret_access_key=credentials["SecretAccessKey"],
                aws_session_token=credentials["SessionToken"],
                config=_CLIENT_CONFIG,
            )
        except Exception as exc:  # noqa: BLE001 - every SDK failure goes in the digest, none to the caller
            code, message, _ = _describe(exc)
            state.errors.append(
                GatherError(
                    stage="config",
                    region=clean(region, 40),
                    code=clean(code, 100),
                    message=clean(message, MAX_ERROR_TEXT),
                    retryable=False,
                )
            )
            continue
        _lookup_region(state, cloudtrail, region, limiters(target.account, region), sleep)
        if state.capped:
            break

    return _fit(_digest(state, base))


def _digest(state: _Gathering, base: dict[str, Any]) -> ActivityDigest:
    calls = sorted(state.calls, key=lambda r: r["_time"])
    denied: list[CallRef] = []
    sensitive: list[CallRef] = []
    services: Counter[str] = Counter()
    regions: Counter[str] = Counter()
    ips: Counter[str] = Counter()
    agents: Counter[str] = Counter()
    read = write = unknown = denied_count = sensitive_count = 0
    for record in calls:
        read_only = record.get("readOnly")
        if read_only is True or read_only == "true":
            read += 1
        elif read_only is False or read_only == "false":
            write += 1
        else:
            unknown += 1
        error_code = record.get("errorCode")
        category = sensitive_category(record)

        def ref(*, category: str | None = None, record: dict[str, Any] = record) -> CallRef:
            return CallRef(
                time=record["_time"],
                event_name=clean(record.get("eventName"), 100),
                event_source=clean(record.get("eventSource"), 100),
                region=clean(record.get("awsRegion"), 40),
                resource=resource_of(record),
                error_code=clean(record.get("errorCode"), 100) if record.get("errorCode") else None,
                category=category,
                event_id=clean(record.get("eventID"), 64),
            )

        if is_denied(str(error_code) if error_code else None):
            denied_count += 1
            if len(denied) < MAX_DENIED:
                denied.append(ref())
        if category:
            sensitive_count += 1
            if len(sensitive) < MAX_SENSITIVE:
                sensitive.append(ref(category=category))
        services[clean(record.get("eventSource"), 100)] += 1
        regions[clean(record.get("awsRegion"), 40)] += 1
        ips[clean(record.get("sourceIPAddress"), 100)] += 1
        agents[clean(record.get("userAgent"))] += 1

    if not state.errors and not state.capped:
        status = DigestStatus.COMPLETE
    elif state.pages == 0 and not state.capped:
        status = DigestStatus.FAILED
    else:
        status = DigestStatus.PARTIAL
    ids = [clean(r.get("eventID"), 64) for r in calls if r.get("eventID")]

    def top(counter: Counter[str]) -> tuple[dict[str, int], int]:
        kept = dict(counter.most_common(MAX_COUNTER_KEYS))
        return kept, len(counter) - len(kept)

    services_kept, services_dropped = top(services)
    regions_kept, regions_dropped = top(regions)
    ips_kept, ips_dropped = top(ips)
    agents_kept, agents_dropped = top(agents)
    return ActivityDigest(
        **base,
        status=status,
        capped=state.capped is not None,
        cap_reason=state.capped,
        pages=state.pages,
        records_read=state.records_read,
        records_excluded=state.excluded,
        total_calls=len(calls),
        read_calls=read,
        write_calls=write,
        unknown_calls=unknown,
        denied_calls=denied_count,
        denied=denied,
        denied_dropped=denied_count - len(denied),
        sensitive_calls=sensitive_count,
        sensitive=sensitive,
        sensitive_dropped=sensitive_count - len(sensitive),
        services=services_kept,
        services_dropped=services_dropped,
        regions=regions_kept,
        regions_dropped=regions_dropped,
        source_ips=ips_kept,
        source_ips_dropped=ips_dropped,
        user_agents=agents_kept,
        user_agents_dropped=agents_dropped,
        event_ids=ids[:MAX_EVENT_IDS],
        event_ids_dropped=max(0, len(ids) - MAX_EVENT_IDS),
        errors=state.errors[:MAX_ERRORS],
        errors_dropped=max(0, len(state.errors) - MAX_ERRORS),
    )


# The order in which lists give way when the digest is too large: least useful to a reviewer first.
_SHRINK_ORDER = (
    ("event_ids", "event_ids_dropped"),
    ("user_agents", "user_agents_dropped"),
    ("source_ips", "source_ips_dropped"),
    ("services", "services_dropped"),
    ("regions", "regions_dropped"),
    ("denied", "denied_dropped"),
    ("sensitive", "sensitive_dropped"),
    ("errors", "errors_dropped"),
)


def _fit(digest: ActivityDigest, limit: int = MAX_DIGEST_BYTES) -> ActivityDigest:
    """Shrink the digest's lists (halving, least useful first) until its JSON is at most `limit` bytes.

    Always terminates within the bound: with every list empty, what is left is scalars and strings that
    are each bounded (`clean`) — a few hundred bytes plus the identities and regions queried."""
    data = digest.model_dump()
    for name, dropped in _SHRINK_ORDER:
        while digest.size() > limit and data[name]:
            items = data[name]
            keep = len(items) // 2
            if isinstance(items, dict):
                data[name] = dict(list(items.items())[:keep])
            else:
                data[name] = items[:keep]
            data[dropped] += len(items) - keep
            digest = ActivityDigest.model_validate(data)
    return digest
