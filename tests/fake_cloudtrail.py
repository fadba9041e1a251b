"""A local fake of CloudTrail's LookupEvents (and STS AssumeRole) over HTTP, for the activity digest.

moto does not implement `LookupEvents`, so this serves the JSON 1.1 protocol
(`X-Amz-Target: com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents`) the way CloudTrail
does: newest first, at most `MaxResults` (≤ 50) per page, an opaque `NextToken`, one `LookupAttributes`
entry honoured (Username, EventName, EventSource, EventId, ReadOnly, AccessKeyId, ResourceName), `StartTime`
and `EndTime` inclusive, the region taken from the request's SigV4 credential scope. STS `AssumeRole` (query
protocol) answers with fresh temporary credentials, so a test can check that LookupEvents was signed with
them. Every request is recorded with the time of `clock` (injectable: a test can move time without sleeping)
and failures can be injected (ThrottlingException, 500s, AccessDenied on AssumeRole, an outage).

Point boto3 at it with `AWS_ENDPOINT_URL_CLOUDTRAIL` / `AWS_ENDPOINT_URL_STS` (see `FakeCloudTrail.env`).
The `sso_record` / `session_records` helpers build realistic CloudTrail records of an Identity Center session
(`AWSReservedSSO_*` assumed-role ARNs), hostile strings included.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape as xml_escape

GARBAGE = "!garbage"  # fail(service, GARBAGE): an answer the SDK cannot parse
LOOKUP_TARGET = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"
_CREDENTIAL_RE = re.compile(r"Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")
_ATTRIBUTE_KEYS = {
    "Username",
    "EventName",
    "EventSource",
    "EventId",
    "ReadOnly",
    "AccessKeyId",
    "ResourceName",
    "ResourceType",
}


@dataclass
class Request:
    at: float  # clock() when the request arrived
    service: str  # "cloudtrail" | "sts"
    region: str
    access_key: str
    params: dict[str, Any]
    status: int = 200


@dataclass
class _Failure:
    status: int
    code: str
    message: str
    times: int


@dataclass
class FakeState:
    records: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    failures: dict[str, list[_Failure]] = field(default_factory=dict)
    issued_keys: list[str] = field(default_factory=list)
    down: bool = False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeCloudTrail

    def handle_error(self, request: Any, client_address: Any) -> None:  # keep test output clean
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeCloudTrail:
    """The fake server. Use as a context manager; `url` is its endpoint."""

    def __init__(
        self, records: list[dict[str, Any]] | None = None, *, clock: Callable[[], float] = time.monotonic
    ):
        self.clock = clock
        self.state = FakeState(records=list(records or []))
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeCloudTrail:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self, *, sts: bool = True) -> dict[str, str]:
        values = {"AWS_ENDPOINT_URL_CLOUDTRAIL": self.url}
        if sts:
            values["AWS_ENDPOINT_URL_STS"] = self.url
        return values

    # -- test controls -------------------------------------------------------------------------------

    def add(self, *records: dict[str, Any]) -> None:
        with self._lock:
            self.state.records.extend(records)

    def fail(
        self, service: str, code: str, *, status: int = 400, times: int = 1, message: str = "injected"
    ) -> None:
        """The next `times` requests to `service` ("cloudtrail" or "sts") fail with `code` (GARBAGE: an
        unparsable body)."""
        with self._lock:
            self.state.failures.setdefault(service, []).append(_Failure(status, code, message, times))

    def set_down(self, down: bool) -> None:
        """An outage: every CloudTrail request answers 503 until set back."""
        with self._lock:
            self.state.down = down

    def requests(self, service: str = "cloudtrail") -> list[Request]:
        with self._lock:
            return [r for r in self.state.requests if r.service == service]

    @property
    def issued_keys(self) -> list[str]:
        with self._lock:
            return list(self.state.issued_keys)

    # -- HTTP -----------------------------------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        match = _CREDENTIAL_RE.search(handler.headers.get("Authorization") or "")
        access_key, region, _service = match.groups() if match else ("", "", "")
        target = handler.headers.get("X-Amz-Target") or ""
        if target:
            params = json.loads(body or b"{}")
            request = Request(self.clock(), "cloudtrail", region, access_key, params)
            status, payload = self._cloudtrail(target, params, region, request)
            self._record(request, status)
            body_out = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self._send(handler, status, body_out, "application/x-amz-json-1.1")
        else:
            params = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            request = Request(self.clock(), "sts", region, access_key, params)
            status, text = self._sts(params, request)
            self._record(request, status)
            self._send(handler, status, text.encode(), "text/xml")

    def _record(self, request: Request, status: int) -> None:
        # Before the answer is sent: a client that has its answer finds its request recorded.
        request.status = status
        with self._lock:
            self.state.requests.append(request)

    @staticmethod
    def _send(handler: _Handler, status: int, body: bytes, content_type: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        handler.end_headers()
        handler.wfile.write(body)

    def _take_failure(self, service: str) -> _Failure | None:
        with self._lock:
            queue = self.state.failures.get(service) or []
            if not queue:
                return None
            failure = queue[0]
            failure.times -= 1
            if failure.times <= 0:
                queue.pop(0)
            return failure

    # -- CloudTrail -----------------------------------------------------------------------------------------

    def _cloudtrail(
        self, target: str, params: dict[str, Any], region: str, request: Request
    ) -> tuple[int, dict[str, Any]]:
        if self.state.down:
            return 503, {"__type": "ServiceUnavailableException", "message": "CloudTrail is unavailable"}
        failure = self._take_failure("cloudtrail")
        if failure and failure.code == GARBAGE:
            return failure.status, "{not json"  # type: ignore[return-value]
        if failure:
            return failure.status, {"__type": failure.code, "message": failure.message}
        if target != LOOKUP_TARGET:
            return 400, {"__type": "UnknownOperationException", "message": target}
        attributes = params.get("LookupAttributes") or []
        if len(attributes) > 1:
            return 400, {"__type": "InvalidLookupAttributesException", "message": "one attribute only"}
        if attributes and attributes[0].get("AttributeKey") not in _ATTRIBUTE_KEYS:
            return 400, {"__type": "InvalidLookupAttributesException", "message": "unknown key"}
        max_results = int(params.get("MaxResults") or 50)
        if not 1 <= max_results <= 50:
            return 400, {"__type": "InvalidMaxResultsException", "message": "1..50"}
        start = params.get("StartTime")
        end = params.get("EndTime")
        with self._lock:
            matching = [
                r
                for r in self.state.records
                if r.get("awsRegion") == region
                and (start is None or _epoch(r) >= float(start))
                and (end is None or _epoch(r) <= float(end))
                and (not attributes or _has_attribute(r, attributes[0]))
            ]
        matching.sort(key=_epoch, reverse=True)  # newest first, as CloudTrail answers
        query = json.dumps([attributes, start, end, region], sort_keys=True)
        offset = 0
        if params.get("NextToken"):
            try:
                decoded = json.loads(base64.b64decode(params["NextToken"]))
                if decoded["q"] != query:
                    raise ValueError("token of another query")
                offset = int(decoded["o"])
            except (ValueError, KeyError):
                return 400, {"__type": "InvalidNextTokenException", "message": "invalid token"}
        page = matching[offset : offset + max_results]
        payload: dict[str, Any] = {"Events": [_lookup_event(r) for r in page]}
        if offset + max_results < len(matching):
            token = json.dumps({"q": query, "o": offset + max_results})
            payload["NextToken"] = base64.b64encode(token.encode()).decode()
        return 200, payload

    # -- STS ------------------------------------------------------------------------------------------------

    def _sts(self, params: dict[str, str], request: Request) -> tuple[int, str]:
        failure = self._take_failure("sts")
        if failure and failure.code == GARBAGE:
            return failure.status, "<<<this is not XML"
        if failure:
            return failure.status, (
                '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
                f"<Code>{xml_escape(failure.code)}</Code><Message>{xml_escape(failure.message)}</Message></Error>"
                "<RequestId>r</RequestId></ErrorResponse>"
            )
        if params.get("Action") != "AssumeRole":
            return 400, "<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>"
        key = "ASIAFAKE" + uuid.uuid4().hex[:12].upper()
        with self._lock:
            self.state.issued_keys.append(key)
        expiry = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        role = params.get("RoleArn", "")
        session = params.get("RoleSessionName", "")
        return 200, (
            '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>'
            f"<Credentials><AccessKeyId>{key}</AccessKeyId><SecretAccessKey>secret</SecretAccessKey>"
            f"<SessionToken>token-{key}</SessionToken><Expiration>{expiry}</Expiration></Credentials>"
            f"<AssumedRoleUser><Arn>{role}/{session}</Arn><AssumedRoleId>AROAFAKE:{session}</AssumedRoleId>"
            "</AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>r</RequestId>"
            "</ResponseMetadata></AssumeRoleResponse>"
        )


def _epoch(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["eventTime"].replace("Z", "+00:00")).timestamp()


def _username(record: dict[str, Any]) -> str:
    """What event history shows as the user name: the session name of an assumed role."""
    identity = record.get("userIdentity") or {}
    if identity.get("type") == "AssumedRole":
        return str(identity.get("arn", "")).rsplit("/", 1)[-1]
    return str(identity.get("userName") or "")


def _resources(record: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {"ResourceType": r.get("type", ""), "ResourceName": r.get("ARN", "")}
        for r in record.get("resources") or []
    ]


def _has_attribute(record: dict[str, Any], attribute: dict[str, str]) -> bool:
    key, value = attribute.get("AttributeKey"), attribute.get("AttributeValue")
    if key == "Username":
        return _username(record) == value
    if key == "EventName":
        return record.get("eventName") == value
    if key == "EventSource":
        return record.get("eventSource") == value
    if key == "EventId":
        return record.get("eventID") == value
    if key == "ReadOnly":
        return str(record.get("readOnly")).lower() == str(value).lower()
    if key == "AccessKeyId":
        return (record.get("userIdentity") or {}).get("accessKeyId") == value
    if key == "ResourceName":
        return any(r["ResourceName"] == value for r in _resources(record))
    return any(r["ResourceType"] == value for r in _resources(record))


def _lookup_event(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "EventId": record["eventID"],
        "EventName": record["eventName"],
        "ReadOnly": str(record.get("readOnly", "")).lower(),
        "AccessKeyId": (record.get("userIdentity") or {}).get("accessKeyId", ""),
        "EventTime": _epoch(record),
        "EventSource": record["eventSource"],
        "Username": _username(record),
        "Resources": _resources(record),
        "CloudTrailEvent": json.dumps(record),
    }


# -- realistic records ------------------------------------------------------------------------------------------

ACCOUNT = "123456789012"
SSO_ROLE = "AWSReservedSSO_BreakGlassAdmin_0123456789abcdef"
SSO_PERMISSION_SET = "arn:aws:sso:::permissionSet/ssoins-0123456789abcdef/ps-0123456789abcdef"


def identity_center_access(email: str = "alice@example.com", name: str | None = "BreakGlassAdmin") -> Any:
    """What an identity-center grant stores with an event in ACCOUNT: the email the user was found by at
    invoke time and the permission set's name (its role is SSO_ROLE)."""
    from store.model import EventAccess

    return EventAccess(
        provider="identity-center",
        account=ACCOUNT,
        permission_set=SSO_PERMISSION_SET,
        user_id="9067d8b1-1111-2222-3333-444455556666",
        email=email,
        permission_set_name=name,
        pre_existing=False,
    )


HOSTILE = "<!channel> <https://evil.example|click> & \u202eevil\u202c " + "x" * 3000


def sso_record(
    user: str,
    when: datetime,
    source: str,
    name: str,
    *,
    read_only: bool | None,
    region: str = "us-east-1",
    account: str = ACCOUNT,
    role: str = SSO_ROLE,
    request: dict[str, Any] | None = None,
    error_code: str | None = None,
    resources: list[dict[str, str]] | None = None,
    ip: str = "203.0.113.7",
    agent: str = "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64",
) -> dict[str, Any]:
    """One CloudTrail record of a call in an Identity Center session (role session name = `user`)."""
    record: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": f"AROA3EXAMPLEROLEID0001:{user}",
            "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{user}",
            "accountId": account,
            "accessKeyId": "ASIA3EXAMPLESESSION1",
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": "AROA3EXAMPLEROLEID0001",
                    "arn": f"arn:aws:iam::{account}:role/aws-reserved/sso.amazonaws.com/{role}",
                    "accountId": account,
                    "userName": role,
                },
                "attributes": {
                    "creationDate": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "mfaAuthenticated": "false",
                },
            },
        },
        "eventTime": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": source,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": ip,
        "userAgent": agent,
        "requestParameters": request,
        "responseElements": None,
        "requestID": str(uuid.uuid4()),
        "eventID": str(uuid.uuid4()),
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account,
        "eventCategory": "Management",
    }
    if read_only is not None:
        record["readOnly"] = read_only
    if error_code:
        record["errorCode"] = error_code
        record["errorMessage"] = f"User: arn:aws:sts::{account}:assumed-role/{role}/{user} is not authorized"
    if resources:
        record["resources"] = resources
    return record


def session_records(user: str, start: datetime) -> list[dict[str, Any]]:
    """A realistic incident session of `user`: reads, writes, sensitive changes, denied calls, hostile text."""

    def at(minutes: float) -> datetime:
        return start + timedelta(minutes=minutes)

    return [
        sso_record(user, at(1), "sts.amazonaws.com", "GetCallerIdentity", read_only=True),
        sso_record(user, at(2), "ec2.amazonaws.com", "DescribeInstances", read_only=True, region="eu-west-1"),
        sso_record(
            user, at(2.5), "rds.amazonaws.com", "DescribeDBInstances", read_only=True, region="eu-west-1"
        ),
        sso_record(
            user,
            at(4),
            "rds.amazonaws.com",
            "RebootDBInstance",
            read_only=False,
            region="eu-west-1",
            request={"dBInstanceIdentifier": "orders-primary\u202etxt.exe", "forceFailover": True},
        ),
        sso_record(
            user,
            at(6),
            "iam.amazonaws.com",
            "AttachRolePolicy",
            read_only=False,
            request={
                "roleName": "<!channel> ops-admin",
                "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess",
            },
        ),
        sso_record(
            user,
            at(7),
            "s3.amazonaws.com",
            "PutBucketPolicy",
            read_only=False,
            request={
                "bucketName": "orders-exports",
                "bucketPolicy": {"Statement": [{"Effect": "Allow", "Principal": "*", "Sid": HOSTILE}]},
                "Host": "orders-exports.s3.amazonaws.com",
            },
            resources=[{"type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::orders-exports"}],
            agent="[S3Console/0.4, aws-internal/3 <https://evil.example|click>]",
            ip="198.51.100.23",
        ),
        sso_record(
            user,
            at(8),
            "ec2.amazonaws.com",
            "AuthorizeSecurityGroupIngress",
            read_only=False,
            region="eu-west-1",
            request={
                "groupId": "sg-0a1b2c3d4e5f67890",
                "ipPermissions": {
                    "items": [
                        {
                            "ipProtocol": "tcp",
                            "fromPort": 22,
                            "toPort": 22,
                            "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0", "description": "tmp & <b>"}]},
                        }
                    ]
                },
            },
        ),
        sso_record(
            user,
            at(9),
            "ec2.amazonaws.com",
            "AuthorizeSecurityGroupIngress",
            read_only=False,
            region="eu-west-1",
            request={
                "groupId": "sg-0fedcba9876543210",
                "ipPermissions": {"items": [{"ipRanges": {"items": [{"cidrIp": "10.0.0.0/8"}]}}]},
            },
        ),
        sso_record(
            user,
            at(10),
            "kms.amazonaws.com",
            "ScheduleKeyDeletion",
            read_only=False,
            request={"keyId": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
            error_code="AccessDenied",
        ),
        sso_record(
            user,
            at(11),
            "cloudtrail.amazonaws.com",
            "StopLogging",
            read_only=False,
            request={"name": "org-trail"},
            error_code="AccessDenied",
        ),
        sso_record(
            user,
            at(12),
            "ec2.amazonaws.com",
            "RunInstances",
            read_only=False,
            region="eu-west-1",
            error_code="Client.UnauthorizedOperation",
            request={"instanceType": "p5.48xlarge", "userData": "<sensitiveDataRemoved>"},
        ),
        sso_record(
            user,
            at(13),
            "lambda.amazonaws.com",
            "UpdateFunctionConfiguration20150331v2",
            read_only=False,
            region="eu-west-1",
            request={"functionName": "orders-api", "environment": {"variables": {"A": "x&y"}}},
            agent="Mozilla/5.0 \u202e (console) <!here>",
            ip="198.51.100.23",
        ),
        sso_record(user, at(14), "s3.amazonaws.com", "ListBuckets", read_only=True),
    ]


def bulk_records(
    user: str, start: datetime, count: int, *, region: str = "us-east-1"
) -> Iterator[dict[str, Any]]:
    """`count` read calls a second apart (for pagination and caps)."""
    for i in range(count):
        yield sso_record(
            user,
            start + timedelta(seconds=i),
            "ec2.amazonaws.com",
            "DescribeInstances",
            read_only=True,
            region=region,
        )
