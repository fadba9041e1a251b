"""DynamoDB store: production backend shared by many replicas.

Table layout (compatible with Sentinel's break-glass table):
  partition key `id` (S); GSIs `gsi-invoker` (invoker, created_at), `gsi-status` (status, created_at),
  `gsi-profile` (profile, created_at), all projecting ALL attributes. Attribute names follow the seed:
  id, invoker, profile, reason_code, justification, duration (N, nanoseconds), status, created_at,
  updated_at, expires_at, ttl, closed_by, closed_reason, request_id. Timestamps are fixed-width UTC.
  Two sparse GSIs hold only the items that need attention: `gsi-outbox` (owed_pk, outbox_next_at) for
  owed Slack announcements and `gsi-review` (review_pk, ended_at) for ended events awaiting review.
  When an event owes announcements but has no outbox_next_at, the index key holds updated_at and
  `outbox_next_at_implicit` (BOOL) records that, so the event reads back unchanged.

Stacking guard: a second item, id "guard#<json [invoker, profile]>", written in the *same*
TransactWriteItems as the event, conditional on no guard existing or the guarded event being past its
expiry. It carries none of the GSI key attributes, so it never appears in an index. Close and expire
release it (conditionally on it still naming their event) in the same transaction as the status change.
The stacking check is therefore one conditional write, O(1) whatever the invoker's history.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

from store.base import (
    DEFAULT_PAGE_SIZE,
    HEARTBEAT_CLAIM,
    InvalidCursor,
    Page,
    check_limit,
    check_save,
    decode_cursor,
    encode_cursor,
)
from store.errors import (
    ConcurrentModification,
    EventNotFound,
    InvalidTransition,
    StackedAccess,
    StoreNotConfigured,
    StoreUnavailable,
)
from store.model import BreakGlassEvent, Status, is_event_id, with_version
from store.timeutil import format_ts, parse_ts

DEFAULT_RETENTION = timedelta(days=400)
GSI_INVOKER = "gsi-invoker"
GSI_STATUS = "gsi-status"
GSI_PROFILE = "gsi-profile"
GSI_OUTBOX = "gsi-outbox"
GSI_REVIEW = "gsi-review"
OWED = "owed"
UNREVIEWED = "unreviewed"
GUARD_PREFIX = "guard#"
CLAIM_PREFIX = "claim#"
# Set when the event owes announcements but has no outbox_next_at: the `gsi-outbox` sort key then holds
# updated_at, and this marker says so, so that reading the item back restores outbox_next_at = None.
IMPLICIT_NEXT_AT = "outbox_next_at_implicit"
_INDEX_ONLY = ("ttl", "owed_pk", "review_pk", IMPLICIT_NEXT_AT)

_NS = 1_000_000_000
_TIME_FIELDS = (
    "created_at",
    "updated_at",
    "expires_at",
    "ended_at",
    "outbox_next_at",
    "warned_at",
    "reviewed_at",
)
_WRITES = {"transact_write_items", "put_item", "update_item", "delete_item"}
_UNAVAILABLE_CODES = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionInProgressException",
    "LimitExceededException",
}
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def guard_id(invoker: str, profile: str) -> str:
    return GUARD_PREFIX + json.dumps([invoker, profile], separators=(",", ":"), ensure_ascii=False)


def to_item(event: BreakGlassEvent, *, retention: timedelta = DEFAULT_RETENTION) -> dict[str, Any]:
    """The event as a DynamoDB item (plain Python values; serialized by `_ser`)."""
    data = event.model_dump(mode="python", exclude_none=True)
    item: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TIME_FIELDS:
            item[key] = format_ts(value)
        elif key == "duration":
            # nanoseconds, like Go's time.Duration; integer arithmetic (float seconds lose microseconds)
            item[key] = (value // timedelta(microseconds=1)) * (_NS // 1_000_000)
        elif key in ("reason_code", "status"):
            item[key] = str(value.value)
        elif key == "outbox":
            if value:
                item[key] = list(value)
        else:
            item[key] = value
    # Audit records outlive the access: DynamoDB TTL deletes them only after the retention period.
    item["ttl"] = int((event.expires_at + retention).timestamp())
    if event.outbox:
        item["owed_pk"] = OWED
        if event.outbox_next_at is None:
            item["outbox_next_at"] = format_ts(event.updated_at)
            item[IMPLICIT_NEXT_AT] = True
    if event.status.ended and event.reviewed_at is None:
        item["review_pk"] = UNREVIEWED
    return item


def from_item(item: dict[str, Any]) -> BreakGlassEvent:
    data = {k: v for k, v in item.items() if k not in _INDEX_ONLY}
    if item.get(IMPLICIT_NEXT_AT):
        data.pop("outbox_next_at", None)
    for key in _TIME_FIELDS:
        if key in data:
            data[key] = parse_ts(data[key])
    data["duration"] = timedelta(microseconds=int(data["duration"]) // 1000)
    for key in ("version", "outbox_attempts"):
        if key in data:
            data[key] = int(data[key])
    if "outbox" in data:
        data["outbox"] = tuple(data["outbox"])
    return BreakGlassEvent.model_validate(data)


def _ser(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in item.items()}


def _de(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _cancellation_codes(exc: ClientError) -> list[str]:
    reasons = exc.response.get("CancellationReasons") or []
    return [str(r.get("Code") or "None") for r in reasons]


def make_client(region: str | None = None, endpoint_url: str | None = None) -> Any:
    """A DynamoDB client from the standard AWS environment (AWS_REGION, AWS_ENDPOINT_URL_DYNAMODB, keys)."""
    # DynamoDB answers in milliseconds; these bounds are for when it does not. Two attempts of at most
    # ~1 s each keep a failing write inside Slack's 3-second ack window, so the user is always told
    # (a timed-out write is reported as "may have been recorded", see StoreUnavailable.maybe_written).
    config = Config(
        retries={"mode": "standard", "max_attempts": 2},
        connect_timeout=1,
        read_timeout=1,
        max_pool_connections=50,
    )
    session = boto3.session.Session()
    region = region or aws_region(session)
    if not region:
        raise StoreNotConfigured(NO_REGION)
    return session.client("dynamodb", region_name=region, endpoint_url=endpoint_url, config=config)


NO_REGION = "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or region in the AWS profile), e.g. AWS_REGION=us-east-1"


def aws_region(session: Any = None) -> str | None:
    """The region as the AWS SDKs find it: AWS_REGION (set by Lambda; read by the newer SDKs and the
    AWS CLI, but not by botocore), then AWS_DEFAULT_REGION, then the profile's configuration."""
    return (
        os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or (session or boto3.session.Session()).region_name
    )


class DynamoDBStore:
    """`Store` on one DynamoDB table (see the module docstring for the layout)."""

    def __init__(
        self,
        table: str,
        *,
        client: Any | None = None,
        retention: timedelta = DEFAULT_RETENTION,
        conflict_attempts: int = 12,
    ) -> None:
        self.table = table
        self.client = client if client is not None else make_client()
        self.retention = retention
        self._conflict_attempts = conflict_attempts

    def __repr__(self) -> str:
        return f"DynamoDBStore({self.table!r})"

    # -- plumbing -----------------------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self.client, operation)(**kwargs)
            return result
        except ClientError as exc:
            code = _code(exc)
            if code in _UNAVAILABLE_CODES:
                raise StoreUnavailable(f"DynamoDB {operation} failed: {code}") from exc
            if code == "ResourceNotFoundException" and operation == "describe_table":
                raise StoreUnavailable(
                    f"DynamoDB table {self.table!r} not found: create it with `breakglass-admin create-table`"
                ) from exc
            # a missing table or index, or keys that do not match the table's: check the table's layout
            if code == "ResourceNotFoundException" or (
                code == "ValidationException" and ("index" in str(exc) or "schema" in str(exc))
            ):
                self._raise_layout_problem(exc)
            raise
        except BotoCoreError as exc:
            ambiguous = isinstance(exc, ReadTimeoutError) and operation in _WRITES
            raise StoreUnavailable(
                f"DynamoDB {operation} failed: {type(exc).__name__}", maybe_written=ambiguous
            ) from exc

    def _raise_layout_problem(self, exc: ClientError) -> None:
        """A missing table, or a table whose key schema or indexes are not breakglass's: say which."""
        problems = layout_problems(self._call("describe_table", TableName=self.table)["Table"])
        if problems:
            raise StoreNotConfigured(wrong_layout(self.table, problems)) from exc

    def _get_item(self, key: str) -> dict[str, Any] | None:
        result = self._call("get_item", TableName=self.table, Key={"id": {"S": key}}, ConsistentRead=True)
        item = result.get("Item")
        return _de(item) if item else None

    def _event_put(self, event: BreakGlassEvent) -> dict[str, Any]:
        return {"TableName": self.table, "Item": _ser(to_item(event, retention=self.retention))}

    def _guard_release(self, event: BreakGlassEvent) -> dict[str, Any]:
        return {
            "TableName": self.table,
            "Key": {"id": {"S": guard_id(event.invoker, event.profile)}},
            "UpdateExpression": "REMOVE active_event_id, active_expires_at",
            "ConditionExpression": "active_event_id = :id",
            "ExpressionAttributeValues": {":id": {"S": event.id}},
        }

    def _backoff(self, attempt: int) -> None:
        time.sleep(min(0.5, 0.01 * (2**attempt)) * random.random())  # jitter only, not security

    def close_store(self) -> None:
        return None

    def ping(self, *, write: bool = False) -> None:
        self._call("describe_table", TableName=self.table)
        if write:  # one small item with no index keys (in no GSI), expiring by itself
            now = datetime.now(UTC)
            item = {"id": HEARTBEAT_CLAIM, "kind": "heartbeat", "at": format_ts(now)}
            item["ttl"] = int((now + timedelta(days=1)).timestamp())
            self._call("put_item", TableName=self.table, Item=_ser(item))

    def claim(self, name: str, *, now: datetime, hold: timedelta) -> bool:
        # A lease item with no index keys (out of every GSI), kept as long as the lease plus retention.
        item = {"id": CLAIM_PREFIX + name, "kind": "claim", "until": format_ts(now + hold)}
        item["ttl"] = int((now + hold + self.retention).timestamp())
        try:
            self._call(
                "put_item",
                TableName=self.table,
                Item=_ser(item),
                ConditionExpression="attribute_not_exists(id) OR #u <= :now",
                ExpressionAttributeNames={"#u": "until"},
                ExpressionAttributeValues={":now": {"S": format_ts(now)}},
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # -- writes -------------------------------------------------------------------------------

    def create(self, event: BreakGlassEvent) -> BreakGlassEvent:
        if event.status is not Status.ACTIVE:
            raise InvalidTransition(event, "create", "only active events can be created")
        guard = {
            "id": guard_id(event.invoker, event.profile),
            "kind": "guard",
            "active_event_id": event.id,
            "active_expires_at": format_ts(event.expires_at),
            "last_event_id": event.id,
            "last_created_at": format_ts(event.created_at),
        }
        event_put = self._event_put(event)
        event_put["ConditionExpression"] = "attribute_not_exists(id)"
        guard_put = {
            "TableName": self.table,
            "Item": _ser(guard),
            "ConditionExpression": "attribute_not_exists(id) OR attribute_not_exists(active_event_id) "
            "OR active_expires_at <= :now",
            "ExpressionAttributeValues": {":now": {"S": format_ts(event.created_at)}},
        }
        for attempt in range(self._conflict_attempts):
            try:
                self._call("transact_write_items", TransactItems=[{"Put": event_put}, {"Put": guard_put}])
                return event
            except ClientError as exc:
                if _code(exc) != "TransactionCanceledException":
                    raise
                codes = _cancellation_codes(exc)
                if codes and codes[0] == "ConditionalCheckFailed":
                    if self._already_written(event):
                        return event  # botocore retried a transaction whose first attempt was applied
                    raise ConcurrentModification(event.id, "an event with this id already exists") from exc
                if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                    existing = self._guarding_event(guard["id"], event.created_at)
                    if existing is not None and existing.id == event.id:
                        return event  # likewise: the guard is ours
                    if existing is not None:
                        raise StackedAccess(existing) from exc
                    continue  # the guard was released in between: try again
                if "TransactionConflict" in codes:
                    self._backoff(attempt)
                    continue
                raise StoreUnavailable(f"DynamoDB transaction cancelled: {codes}") from exc
        raise StoreUnavailable("DynamoDB: too many conflicting transactions on this invoker and profile")

    def _already_written(self, event: BreakGlassEvent) -> bool:
        item = self._get_item(event.id)
        return item is not None and from_item(item) == event

    def _guarding_event(self, key: str, now: datetime) -> BreakGlassEvent | None:
        guard = self._get_item(key)
        if not guard or "active_event_id" not in guard:
            return None
        item = self._get_item(str(guard["active_event_id"]))
        if item is None:
            return None
        event = from_item(item)
        return event if event.is_effective(now) else None

    def get(self, event_id: str) -> BreakGlassEvent:
        # Only event ids are looked up: never a guard item, and no empty key (a ValidationException).
        if not is_event_id(event_id):
            raise EventNotFound(event_id)
        item = self._get_item(event_id)
        if item is None:
            raise EventNotFound(event_id)
        return from_item(item)

    def _conditional_put(self, old: BreakGlassEvent, new: BreakGlassEvent) -> dict[str, Any]:
        put = self._event_put(new)
        put["ConditionExpression"] = "#v = :v AND #s = :s"
        put["ExpressionAttributeNames"] = {"#v": "version", "#s": "status"}
        put["ExpressionAttributeValues"] = {":v": {"N": str(old.version)}, ":s": {"S": old.status.value}}
        return put

    def _transition(
        self, event_id: str, apply: Callable[[BreakGlassEvent], BreakGlassEvent]
    ) -> BreakGlassEvent:
        for attempt in range(self._conflict_attempts):
            current = self.get(event_id)
            # apply() raises InvalidTransition when the event is no longer active (or not due)
            new = with_version(apply(current), current.version + 1)
            put = self._conditional_put(current, new)
            try:
                self._call(
                    "transact_write_items",
                    TransactItems=[{"Put": put}, {"Update": self._guard_release(current)}],
                )
                return new
            except ClientError as exc:
                if _code(exc) != "TransactionCanceledException":
                    raise
                codes = _cancellation_codes(exc)
                if codes[:1] == ["ConditionalCheckFailed"] or "TransactionConflict" in codes:
                    self._backoff(attempt)
                    continue  # someone else changed the event: re-read (InvalidTransition if it ended)
                if codes[1:2] == ["ConditionalCheckFailed"]:
                    # The guard names a newer event (this one expired before being swept): leave it.
                    try:
                        self._call("put_item", **put)
                        return new
                    except ClientError as put_exc:
                        if _code(put_exc) != "ConditionalCheckFailedException":
                            raise
                        continue
                raise StoreUnavailable(f"DynamoDB transaction cancelled: {codes}") from exc
        raise ConcurrentModification(event_id, f"still conflicting after {self._conflict_attempts} attempts")

    def close(
        self, event_id: str, *, by: str, reason: str, now: datetime, outbox: Sequence[str] = ()
    ) -> BreakGlassEvent:
        return self._transition(
            event_id, lambda ev: ev.close(by=by, reason=reason, now=now).with_outbox(*outbox)
        )

    def expire(self, event_id: str, *, now: datetime, outbox: Sequence[str] = ()) -> BreakGlassEvent:
        return self._transition(event_id, lambda ev: ev.expire(now=now).with_outbox(*outbox))

    def save(self, event: BreakGlassEvent) -> BreakGlassEvent:
        # Read first: the fields behind the stacking guard (invoker, profile, created_at, expiry) must
        # not change here, or the guard would protect the wrong claim. The write stays conditional on
        # the version, so nothing can change between this read and the write.
        check_save(self.get(event.id), event)
        new = with_version(event, event.version + 1)
        try:
            self._call("put_item", **self._conditional_put(event, new))
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            if self._get_item(event.id) is None:
                raise EventNotFound(event.id) from exc
            raise ConcurrentModification(event.id) from exc
        return new

    # -- reads --------------------------------------------------------------------------------

    def _query_all(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        kwargs.setdefault("TableName", self.table)
        while True:
            result = self._call("query", **kwargs)
            yield from (_de(item) for item in result.get("Items", []))
            last = result.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    def _page(
        self,
        index: str,
        key_attr: str,
        key_value: str,
        sort_attr: str,
        limit: int,
        cursor: str | None,
        *,
        newest_first: bool = True,
    ) -> Page:
        check_limit(limit)
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": index,
            "KeyConditionExpression": "#k = :k",
            "ExpressionAttributeNames": {"#k": key_attr},
            "ExpressionAttributeValues": {":k": {"S": key_value}},
            "ScanIndexForward": not newest_first,
        }
        if cursor is not None:
            start = decode_cursor(cursor)
            if set(start) != {"id", key_attr, sort_attr} or not all(
                isinstance(v, str) for v in start.values()
            ):
                raise InvalidCursor(f"invalid pagination cursor {cursor!r}")
            kwargs["ExclusiveStartKey"] = {k: {"S": v} for k, v in start.items()}
        items: list[dict[str, Any]] = []
        while len(items) <= limit:
            kwargs["Limit"] = limit + 1 - len(items)
            result = self._call("query", **kwargs)
            items += [_de(i) for i in result.get("Items", [])]
            if not result.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = result["LastEvaluatedKey"]
        next_cursor = None
        if len(items) > limit:
            last = items[limit - 1]
            next_cursor = encode_cursor(
                {"id": last["id"], key_attr: last[key_attr], sort_attr: last[sort_attr]}
            )
        return Page(items=[from_item(i) for i in items[:limit]], cursor=next_cursor)

    def list_active(self) -> list[BreakGlassEvent]:
        items = self._query_all(
            IndexName=GSI_STATUS,
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": Status.ACTIVE.value}},
        )
        return [from_item(i) for i in items]

    def list_by_invoker(
        self, invoker: str, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page:
        return self._page(GSI_INVOKER, "invoker", invoker, "created_at", limit, cursor)

    def list_by_profile(
        self, profile: str, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page:
        return self._page(GSI_PROFILE, "profile", profile, "created_at", limit, cursor)

    def list_by_status(
        self, status: Status, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page:
        return self._page(GSI_STATUS, "status", Status(status).value, "created_at", limit, cursor)

    def list_unreviewed(self, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None) -> Page:
        return self._page(GSI_REVIEW, "review_pk", UNREVIEWED, "ended_at", limit, cursor, newest_first=False)

    def list_owed(self, *, now: datetime, limit: int = 100) -> list[BreakGlassEvent]:
        result = self._call(
            "query",
            TableName=self.table,
            IndexName=GSI_OUTBOX,
            KeyConditionExpression="owed_pk = :o AND outbox_next_at <= :now",
            ExpressionAttributeValues={":o": {"S": OWED}, ":now": {"S": format_ts(now)}},
            Limit=check_limit(limit),
        )
        return [from_item(_de(i)) for i in result.get("Items", [])]

    def _count(self, index: str, key_attr: str, key_value: str, since: datetime) -> int:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": index,
            "KeyConditionExpression": "#k = :k AND created_at >= :since",
            "ExpressionAttributeNames": {"#k": key_attr},
            "ExpressionAttributeValues": {":k": {"S": key_value}, ":since": {"S": format_ts(since)}},
            "Select": "COUNT",
        }
        total = 0
        while True:
            result = self._call("query", **kwargs)
            total += int(result.get("Count", 0))
            if not result.get("LastEvaluatedKey"):
                return total
            kwargs["ExclusiveStartKey"] = result["LastEvaluatedKey"]

    def count_by_invoker_since(self, invoker: str, since: datetime) -> int:
        return self._count(GSI_INVOKER, "invoker", invoker, since)

    def count_by_profile_since(self, profile: str, since: datetime) -> int:
        return self._count(GSI_PROFILE, "profile", profile, since)

    def last_by_invoker_and_profile(self, invoker: str, profile: str) -> BreakGlassEvent | None:
        guard = self._get_item(guard_id(invoker, profile))
        if not guard or "last_event_id" not in guard:
            return None
        item = self._get_item(str(guard["last_event_id"]))
        return from_item(item) if item else None


# -- table management ---------------------------------------------------------------------------

_INDEXES = {
    GSI_INVOKER: ("invoker", "created_at"),
    GSI_STATUS: ("status", "created_at"),
    GSI_PROFILE: ("profile", "created_at"),
    GSI_OUTBOX: ("owed_pk", "outbox_next_at"),
    GSI_REVIEW: ("review_pk", "ended_at"),
}


def table_definition(table: str) -> dict[str, Any]:
    attributes = sorted({"id"} | {a for pair in _INDEXES.values() for a in pair})
    return {
        "TableName": table,
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in attributes],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": name,
                "KeySchema": [
                    {"AttributeName": pk, "KeyType": "HASH"},
                    {"AttributeName": sk, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for name, (pk, sk) in _INDEXES.items()
        ],
        "BillingMode": "PAY_PER_REQUEST",
        "SSESpecification": {"Enabled": True},
    }


def _keys(key_schema: list[dict[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((k["AttributeName"], k["KeyType"]) for k in key_schema)


def layout_problems(description: dict[str, Any]) -> list[str]:
    """How a table (describe_table's "Table") differs from breakglass's layout; empty when it matches."""
    problems = []
    keys = _keys(description.get("KeySchema", []))
    if keys != (("id", "HASH"),):
        shown = ", ".join(f"{name} ({kind})" for name, kind in keys) or "none"
        problems.append(f"key schema is {shown}, expected id (HASH) only")
    indexes = {i["IndexName"]: _keys(i["KeySchema"]) for i in description.get("GlobalSecondaryIndexes", [])}
    for name, (pk, sk) in _INDEXES.items():
        if name not in indexes:
            problems.append(f"index {name} ({pk}, {sk}) is missing")
        elif indexes[name] != ((pk, "HASH"), (sk, "RANGE")):
            problems.append(f"index {name} has the wrong keys, expected {pk} (HASH), {sk} (RANGE)")
    return problems


def wrong_layout(table: str, problems: list[str]) -> str:
    return (
        f"DynamoDB table {table!r} exists but is not laid out for breakglass: "
        + "; ".join(problems)
        + ". Use another table name (or recreate this one with `breakglass-admin create-table`)"
    )


def create_table(client: Any, table: str, *, wait: bool = True, pitr: bool = True) -> list[str]:
    """Create the table (idempotent): keys, GSIs, on-demand billing, SSE, TTL on `ttl`, PITR.

    Returns a list of human-readable lines saying what was created and what already existed. An existing
    table with another layout raises StoreNotConfigured naming each difference, and is left unchanged.
    """
    report: list[str] = []
    try:
        client.create_table(**table_definition(table))
        report.append(f"created table {table} (on-demand, encrypted, GSIs: {', '.join(_INDEXES)})")
    except ClientError as exc:
        if _code(exc) != "ResourceInUseException":
            raise
        report.append(f"table {table} already exists")
    if wait:
        client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    problems = layout_problems(client.describe_table(TableName=table)["Table"])
    if problems:
        raise StoreNotConfigured(wrong_layout(table, problems) + "; nothing was changed")
    ttl = client.describe_time_to_live(TableName=table).get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") and ttl.get("AttributeName") == "ttl":
        report.append("TTL on `ttl` already enabled")
    else:
        client.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
        )
        report.append("enabled TTL on `ttl` (expiry + retention)")
    if pitr:
        backups = client.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
        status = backups.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus")
        if status == "ENABLED":
            report.append("point-in-time recovery already enabled")
        else:
            client.update_continuous_backups(
                TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
            )
            report.append("enabled point-in-time recovery")
    return report
