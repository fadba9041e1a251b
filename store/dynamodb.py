"""DynamoDB store: production backend shared by many replicas.

Table layout (compatible with Sentinel's break-glass table):
  partition key `id` (S); GSIs `gsi-invoker` (invoker, created_at), `gsi-status` (status, created_at),
  `gsi-profile` (profile, created_at), all projecting ALL attributes. Attribute names follow the seed:
  id, invoker, profile, reason_code, justification, duration (N, nanoseconds), status, created_at,
  updated_at, expires_at, ttl, closed_by, closed_reason, request_id. Timestamps are fixed-width UTC.
  Two sparse GSIs hold only the items that need attention: `gsi-outbox` (owed_pk, outbox_next_at) for
  owed Slack announcements and `gsi-review` (review_pk, ended_at) for ended events awaiting review.
  When an event owes announcements but has no outbox_next_at, the index key holds updated_at and
  `outbox_next_at_implicit` (BOOL) records that, so the event reads back unchanged. When its entries are
  not due before a later time (`OutboxEntry.not_before`), the index key holds that time and the event's own
  outbox_next_at is kept in `outbox_attempt_at`.

Stacking guard: a second item, id "guard#<json [invoker, profile]>", written in the *same*
TransactWriteItems as the event, conditional on no guard existing or the guarded event being past its
expiry. It carries none of the GSI key attributes, so it never appears in an index. Close and expire
release it (conditionally on it still naming their event) in the same transaction as the status change.
The stacking check is therefore one conditional write, O(1) whatever the invoker's history.
A second guard, "guard#<json ["slack", slack user id, profile]>", holds the same claim per Slack user,
whatever identity the user is mapped to. Release records `last_ended_at`; with a cooldown, the guard's
condition also requires `last_ended_at <= created_at - cooldown` (the cooldown costs no read).

One event per request: with a `request_id` (a modal submission's view id, a slash command's trigger id), a
request item "request#<request_id>" naming the event is put in the same TransactWriteItems, conditional on
not existing; a replayed request is refused (`DuplicateRequest`) whatever its event's state. It expires with
the event's audit record (`ttl`).

Rate limits: window items "window#<json [kind, key]>" (kind invoker, slack or profile) hold the newest
creation times in the window and a version. `create` reads the ones the limits need in one strongly
consistent TransactGetItems, decides (`store.limits.decide`), and writes them back conditionally on
the version read in the same TransactWriteItems as the event and the guards: a concurrent create on
the same person or profile cancels it, and it is decided again. No GSI read decides a limit. An extension
is one more entry in the same window items: `extend` reads them, decides, and writes them back the same
way, in the one TransactWriteItems that also holds the event's conditional put (on its version and status)
and the guards' new expiry; a concurrent create or extend on the same person or profile cancels it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
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
    TransitionStore,
    check_limit,
    check_save,
    decode_cursor,
    encode_cursor,
    retimed,
)
from store.errors import (
    ConcurrentModification,
    DuplicateRequest,
    EventNotFound,
    InvalidTransition,
    StackedAccess,
    StoreNotConfigured,
    StoreUnavailable,
)
from store.limits import NO_LIMITS, Counting, Limits, check_cooldown, decide
from store.model import SENTINEL, BreakGlassEvent, Status, is_event_id, with_version
from store.notices import DayLink, DigestOf, Notice
from store.tasks import OwedTask, TaskKind
from store.timeutil import format_ts, parse_ts

log = logging.getLogger(__name__)

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
TASK_PREFIX = "task#"
TASKS = "task"  # the owed tasks' partition of gsi-outbox (events use OWED)
WINDOW_PREFIX = "window#"
REQUEST_PREFIX = "request#"
NOTICE_PREFIX = "notice#"
DAY_HEAD_PREFIX = "dayhead#"  # a day's chain head: seq and digest of its last link
DAY_LINK_PREFIX = "daylink#"  # "daylink#<day>#<seq, 8 digits>": one link
DAY_UID_PREFIX = "dayuid#"  # "dayuid#<uid>": the link of a record (its one place)
NOTICES = "notices"  # the `gsi-outbox` partition of owed notices (events are under OWED)
# Set when the event owes announcements but has no outbox_next_at: the `gsi-outbox` sort key then holds
# updated_at, and this marker says so, so that reading the item back restores outbox_next_at = None.
IMPLICIT_NEXT_AT = "outbox_next_at_implicit"
# The event's outbox_next_at when the `gsi-outbox` sort key holds a later time (its entries' not_before).
ATTEMPT_AT = "outbox_attempt_at"
_INDEX_ONLY = ("ttl", "owed_pk", "review_pk", IMPLICIT_NEXT_AT, ATTEMPT_AT)

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


def slack_guard_id(slack_user_id: str, profile: str) -> str:
    """The second stacking guard: keyed by the Slack user, whatever identity they are mapped to."""
    return GUARD_PREFIX + json.dumps(["slack", slack_user_id, profile], separators=(",", ":"))


def window_id(kind: str, key: str) -> str:
    """A rate-limit window item: the recent creation times of one person (invoker or Slack user) or profile."""
    return WINDOW_PREFIX + json.dumps([kind, key], separators=(",", ":"), ensure_ascii=False)


def _guard_ids(event: BreakGlassEvent) -> list[str]:
    """The stacking guards an event holds: per invoker and profile, and per Slack user and profile."""
    keys = [guard_id(event.invoker, event.profile)]
    if event.slack_user_id:
        keys.append(slack_guard_id(event.slack_user_id, event.profile))
    return keys


def _windows(event: BreakGlassEvent, limits: Limits) -> list[tuple[str, str, int]]:
    """The window items a new entry of `event` (its creation or an extension) counts in: (item id, what it
    counts, how many times it keeps), per invoker and Slack user, and per profile."""
    windows: list[tuple[str, str, int]] = []
    if limits.counts_person:
        windows.append((window_id("invoker", event.invoker), "person", limits.person_keep))
        if event.slack_user_id:
            windows.append((window_id("slack", event.slack_user_id), "person", limits.person_keep))
    if limits.counts_profile:
        windows.append((window_id("profile", event.profile), "profile", limits.per_profile or 0))
    return windows


def _times(item: dict[str, Any] | None) -> list[datetime]:
    return [parse_ts(str(t)) for t in (item or {}).get("times", [])]


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
        elif key == "incident_link":  # a map of strings and booleans (times as ISO 8601 UTC text)
            item[key] = (
                event.incident_link.model_dump(mode="json", exclude_none=True)
                if event.incident_link
                else None
            )
        elif key == "access":
            # a map of strings, booleans and integers (times as ISO 8601 UTC text)
            item[key] = event.access.model_dump(mode="json", exclude_none=True) if event.access else None
        elif key == "extensions":
            if value:
                item[key] = [
                    {
                        "at": format_ts(ext.at),
                        "by": ext.by,
                        "duration": (ext.duration // timedelta(microseconds=1)) * (_NS // 1_000_000),
                        "reason": ext.reason,
                        "escalated": ext.escalated,
                    }
                    | ({"warned_at": format_ts(ext.warned_at)} if ext.warned_at else {})
                    | ({"request_id": ext.request_id} if ext.request_id else {})
                    for ext in event.extensions
                ]
        elif key == "dms":
            if value:  # a list of maps of strings; absent when empty (older items have none either)
                item[key] = [dm.model_dump(mode="json") for dm in event.dms]
        elif key == "outbox":
            if value:
                item[key] = [
                    {"kind": str(entry.kind.value), "version": entry.version}
                    | ({"not_before": format_ts(entry.not_before)} if entry.not_before else {})
                    for entry in event.outbox
                ]
        else:
            item[key] = value
    # Audit records outlive the access: DynamoDB TTL deletes them only after the retention period.
    item["ttl"] = int((event.expires_at + retention).timestamp())
    if event.outbox:
        item["owed_pk"] = OWED
        due = event.outbox_due_at
        assert due is not None
        if event.outbox_next_at is None:
            item[IMPLICIT_NEXT_AT] = True
        elif due != event.outbox_next_at:
            item[ATTEMPT_AT] = format_ts(event.outbox_next_at)
        item["outbox_next_at"] = format_ts(due)
    if event.status.ended and event.reviewed_at is None:
        item["review_pk"] = UNREVIEWED
    return item


def from_item(item: dict[str, Any]) -> BreakGlassEvent:
    """The event an item holds. An item without `slack_user_id` was written by Sentinel (the seed's
    layout: no Slack fields, no version): it reads as a foreign event (`source="sentinel"`)."""
    data = {k: v for k, v in item.items() if k not in _INDEX_ONLY}
    if "slack_user_id" not in data:
        data.setdefault("source", SENTINEL)
    if item.get(IMPLICIT_NEXT_AT):
        data.pop("outbox_next_at", None)
    elif ATTEMPT_AT in item:
        data["outbox_next_at"] = item[ATTEMPT_AT]
    for key in _TIME_FIELDS:
        if key in data:
            data[key] = parse_ts(data[key])
    data["duration"] = timedelta(microseconds=int(data["duration"]) // 1000)
    for key in ("version", "outbox_attempts", "audit_fallback_version"):
        if key in data:
            data[key] = int(data[key])
    for key in ("outbox", "audit_fallback_sent", "audit_feed_sent", "audit_rendered"):
        if key in data:
            data[key] = tuple(data[key])
    if "outbox" in data:
        data["outbox"] = tuple(
            {**e, "not_before": parse_ts(e["not_before"])} if isinstance(e, dict) and "not_before" in e else e
            for e in data["outbox"]
        )
    if "extensions" in data:
        data["extensions"] = tuple(
            {
                **ext,
                "at": parse_ts(ext["at"]),
                "duration": timedelta(microseconds=int(ext["duration"]) // 1000),
            }
            | ({"warned_at": parse_ts(ext["warned_at"])} if ext.get("warned_at") else {})
            for ext in data["extensions"]
        )
    if "activity_failures" in data:
        data["activity_failures"] = int(data["activity_failures"])
    if "access" in data:
        data["access"] = {k: int(v) if isinstance(v, Decimal) else v for k, v in dict(data["access"]).items()}
    return BreakGlassEvent.model_validate(data)


def _day_link(item: dict[str, Any]) -> DayLink:
    return DayLink(
        day=str(item["day"]),
        seq=int(item["seq"]),
        uid=str(item["uid"]),
        previous=str(item["previous"]),
        digest=str(item["digest"]),
    )


def _notice(item: dict[str, Any]) -> Notice:
    return Notice(
        uid=str(item["id"]).removeprefix(NOTICE_PREFIX),
        at=parse_ts(str(item["at"])),
        body=str(item["body"]),
        sent=tuple(str(s) for s in item.get("sent", [])),
        owed="owed_pk" in item,
    )


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _ser(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in item.items()}


def _de(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _cancellation_codes(exc: ClientError) -> list[str]:
    reasons = exc.response.get("CancellationReasons") or []
    return [str(r.get("Code") or "None") for r in reasons]


def aws_session() -> Any:
    """The process's one boto3 session: boto3's default session, which `boto3.client(...)` (e.g. Bolt's Lambda
    lazy-listener runner) uses too. Building a session and its endpoint data costs tens of milliseconds, so
    every AWS client of the bot is made from this one (a Lambda cold start pays it once)."""
    session = boto3.DEFAULT_SESSION
    if session is None:
        boto3.setup_default_session()
        session = boto3.DEFAULT_SESSION
    return session


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
    session = aws_session()
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
        or (session or aws_session()).region_name
    )


class DynamoDBStore(TransitionStore):
    """`Store` on one DynamoDB table (see the module docstring for the layout)."""

    def __init__(
        self,
        table: str,
        *,
        client: Any | None = None,
        retention: timedelta = DEFAULT_RETENTION,
        conflict_attempts: int = 12,
        lazy: bool = False,
    ) -> None:
        self.table = table
        if client is None and not aws_region():  # a missing region still fails at start
            raise StoreNotConfigured(NO_REGION)
        self._client = client
        self._client_lock = threading.Lock()
        self._client_hooks: list[Callable[[Any], None]] = []
        if client is None and not lazy:
            self._client = make_client()
        self.retention = retention
        self._conflict_attempts = conflict_attempts
        self._unreadable: set[str] = set()

    def __repr__(self) -> str:
        return f"DynamoDBStore({self.table!r})"

    @property
    def client(self) -> Any:
        """The DynamoDB client; with `lazy=True` (Lambda) made on first use: a Lambda's first /breakglass (it
        opens a modal) makes no store call, so its cold start does not wait for the client (about 50 ms, mostly
        botocore's service model)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    made = make_client()
                    for hook in self._client_hooks:
                        hook(made)
                    self._client = made
        return self._client

    def on_client(self, hook: Callable[[Any], None]) -> None:
        """Call `hook(client)` with the DynamoDB client: now if it is made, else when it is."""
        with self._client_lock:
            if self._client is None:
                self._client_hooks.append(hook)
                return
        hook(self._client)

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

    def _readable(self, items: Iterable[dict[str, Any]]) -> list[BreakGlassEvent]:
        """The events among `items`; an item that cannot be read at all (damaged, or a layout nobody
        knows) is logged once per store with its key, and skipped: one bad item never hides the others."""
        events = []
        for item in items:
            try:
                events.append(from_item(item))
            except (ValueError, TypeError, KeyError) as exc:
                key = str(item.get("id", "?"))
                if key not in self._unreadable:
                    self._unreadable.add(key)
                    log.error(
                        "skipping unreadable item %r in table %s: %s",
                        key,
                        self.table,
                        _first_line(exc),
                        extra={"event_id": key, "action": "read", "outcome": "unreadable"},
                    )
        return events

    def _get_item(self, key: str) -> dict[str, Any] | None:
        result = self._call("get_item", TableName=self.table, Key={"id": {"S": key}}, ConsistentRead=True)
        item = result.get("Item")
        return _de(item) if item else None

    def _event_put(self, event: BreakGlassEvent) -> dict[str, Any]:
        return {"TableName": self.table, "Item": _ser(to_item(event, retention=self.retention))}

    def _guard_release(self, key: str, ended: BreakGlassEvent) -> dict[str, Any]:
        """Release the guard `key` held by `ended`, recording when it ended (the cooldown runs from it)."""
        assert ended.ended_at is not None
        return {
            "TableName": self.table,
            "Key": {"id": {"S": key}},
            "UpdateExpression": "REMOVE active_event_id, active_expires_at SET last_ended_at = :ended",
            "ConditionExpression": "active_event_id = :id",
            "ExpressionAttributeValues": {":id": {"S": ended.id}, ":ended": {"S": format_ts(ended.ended_at)}},
        }

    def _guard_extend(self, key: str, extended: BreakGlassEvent) -> dict[str, Any]:
        """Move the guard `key` held by `extended` to its new expiry (the claim lasts as long as the access)."""
        return {
            "TableName": self.table,
            "Key": {"id": {"S": key}},
            "UpdateExpression": "SET active_expires_at = :expires",
            "ConditionExpression": "active_event_id = :id",
            "ExpressionAttributeValues": {
                ":id": {"S": extended.id},
                ":expires": {"S": format_ts(extended.expires_at)},
            },
        }

    def _backoff(self, attempt: int) -> None:
        time.sleep(min(0.5, 0.01 * (2**attempt)) * random.random())  # jitter only, not security

    def disconnect(self) -> None:
        return None

    def ping(self, *, write: bool = False) -> None:
        self._call("describe_table", TableName=self.table)
        if write:  # one small item with no index keys (in no GSI), expiring by itself
            now = datetime.now(UTC)
            item: dict[str, Any] = {"id": HEARTBEAT_CLAIM, "kind": "heartbeat", "at": format_ts(now)}
            item["ttl"] = int((now + timedelta(days=1)).timestamp())
            self._call("put_item", TableName=self.table, Item=_ser(item))

    def claim(self, name: str, *, now: datetime, hold: timedelta) -> bool:
        # A lease item with no index keys (out of every GSI), kept as long as the lease plus retention.
        item: dict[str, Any] = {"id": CLAIM_PREFIX + name, "kind": "claim", "until": format_ts(now + hold)}
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

    def renew_claim(self, name: str, *, held: datetime, until: datetime) -> bool:
        item: dict[str, Any] = {"id": CLAIM_PREFIX + name, "kind": "claim", "until": format_ts(until)}
        item["ttl"] = int((until + self.retention).timestamp())
        try:
            self._call(
                "put_item",
                TableName=self.table,
                Item=_ser(item),
                ConditionExpression="#u = :held",
                ExpressionAttributeNames={"#u": "until"},
                ExpressionAttributeValues={":held": {"S": format_ts(held)}},
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def finish_claim(self, name: str, *, until: datetime) -> None:
        item: dict[str, Any] = {"id": CLAIM_PREFIX + name, "kind": "claim", "until": format_ts(until)}
        item["ttl"] = int((until + self.retention).timestamp())
        self._call("put_item", TableName=self.table, Item=_ser(item))

    def owe_task(self, task: OwedTask) -> None:
        # In gsi-outbox under its own partition key (never listed with the events), due as its sort key.
        item: dict[str, Any] = {
            "id": TASK_PREFIX + task.name,
            "kind": "task",
            "task_kind": task.kind.value,
            "payload": task.payload,
            "owed_pk": TASKS,
            "outbox_next_at": format_ts(task.due),
        }
        try:
            self._call(
                "put_item",
                TableName=self.table,
                Item=_ser(item),
                ConditionExpression="attribute_not_exists(id)",
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise

    def list_tasks(self, *, now: datetime, limit: int = 100) -> list[OwedTask]:
        result = self._call(
            "query",
            TableName=self.table,
            IndexName=GSI_OUTBOX,
            KeyConditionExpression="owed_pk = :t AND outbox_next_at <= :now",
            ExpressionAttributeValues={":t": {"S": TASKS}, ":now": {"S": format_ts(now)}},
            Limit=check_limit(limit),
        )
        return [
            OwedTask(
                name=item["id"].removeprefix(TASK_PREFIX),
                kind=TaskKind(item["task_kind"]),
                payload=item["payload"],
                due=parse_ts(item["outbox_next_at"]),
            )
            for item in (_de(i) for i in result.get("Items", []))
        ]

    def finish_task(self, name: str, *, now: datetime) -> None:
        # Rewritten without its index keys (out of gsi-outbox), kept for the retention: the bot's IAM policy
        # has no DeleteItem (it never deletes an item of the audit table).
        item: dict[str, Any] = {"id": TASK_PREFIX + name, "kind": "task", "done_at": format_ts(now)}
        item["ttl"] = int((now + self.retention).timestamp())
        self._call("put_item", TableName=self.table, Item=_ser(item))

    # -- notices (store/notices.py): items "notice#<uid>", owed ones in `gsi-outbox` under NOTICES ----

    def _notice_item(self, notice: Notice) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": NOTICE_PREFIX + notice.uid,
            "kind": "notice",
            "at": format_ts(notice.at),
            "body": notice.body,
            "sent": list(notice.sent),
            "ttl": int((notice.at + self.retention).timestamp()),
        }
        if notice.owed:
            item["owed_pk"] = NOTICES
            item["outbox_next_at"] = format_ts(notice.at)
        return item

    def add_notice(self, notice: Notice) -> bool:
        try:
            self._call(
                "put_item",
                TableName=self.table,
                Item=_ser(self._notice_item(notice)),
                ConditionExpression="attribute_not_exists(id)",
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def list_notices(self, *, limit: int = 100) -> list[Notice]:
        result = self._call(
            "query",
            TableName=self.table,
            IndexName=GSI_OUTBOX,
            KeyConditionExpression="owed_pk = :o",
            ExpressionAttributeValues={":o": {"S": NOTICES}},
            Limit=check_limit(limit),
        )
        return [_notice(_de(i)) for i in result.get("Items", [])]

    def get_notice(self, uid: str) -> Notice | None:
        item = self._get_item(NOTICE_PREFIX + uid)
        return _notice(item) if item else None

    def update_notice(self, notice: Notice) -> None:
        self._call(
            "put_item",
            TableName=self.table,
            Item=_ser(self._notice_item(notice)),
            ConditionExpression="attribute_exists(id)",
        )

    # -- the per-day chain (store/notices.py): head, link and uid items in one transaction ---------------

    def link_day(self, day: str, uid: str, digest_of: DigestOf) -> DayLink:
        for attempt in range(8):
            existing = self._get_item(DAY_UID_PREFIX + uid)
            if existing:
                return _day_link(existing)
            head = self._get_item(DAY_HEAD_PREFIX + day)
            seq, previous = (int(head["seq"]) + 1, str(head["digest"])) if head else (1, "")
            link = DayLink(day=day, seq=seq, uid=uid, previous=previous, digest=digest_of(seq, previous))
            ttl = int((datetime.fromisoformat(day).replace(tzinfo=UTC) + self.retention).timestamp())
            fields = {
                "day": day,
                "seq": seq,
                "uid": uid,
                "previous": previous,
                "digest": link.digest,
                "ttl": ttl,
            }
            head_put: dict[str, Any] = {
                "TableName": self.table,
                "Item": _ser({"id": DAY_HEAD_PREFIX + day, "kind": "dayhead", **fields}),
            }
            if head:
                head_put["ConditionExpression"] = "seq = :n"
                head_put["ExpressionAttributeValues"] = {":n": {"N": str(seq - 1)}}
            else:
                head_put["ConditionExpression"] = "attribute_not_exists(id)"
            items = [
                {"Put": head_put},
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": _ser(
                            {"id": f"{DAY_LINK_PREFIX}{day}#{seq:08d}", "kind": "daylink", **fields}
                        ),
                        "ConditionExpression": "attribute_not_exists(id)",
                    }
                },
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": _ser({"id": DAY_UID_PREFIX + uid, "kind": "dayuid", **fields}),
                        "ConditionExpression": "attribute_not_exists(id)",
                    }
                },
            ]
            try:
                self._call("transact_write_items", TransactItems=items)
                return link
            except ClientError as exc:
                if _code(exc) != "TransactionCanceledException":
                    raise
                self._backoff(attempt)  # the place was taken, or the record placed, meanwhile: look again
        raise StoreUnavailable(f"DynamoDB: too many concurrent appends to the chain of {day}")

    def day_chain(self, day: str) -> list[DayLink]:
        head = self._get_item(DAY_HEAD_PREFIX + day)
        links = []
        for seq in range(1, int(head["seq"]) + 1 if head else 1):
            item = self._get_item(f"{DAY_LINK_PREFIX}{day}#{seq:08d}")
            if item:
                links.append(_day_link(item))
        return links

    # -- writes -------------------------------------------------------------------------------

    def create(
        self,
        event: BreakGlassEvent,
        *,
        limits: Limits | None = None,
        escalate: Callable[[BreakGlassEvent], BreakGlassEvent] | None = None,
    ) -> BreakGlassEvent:
        if event.status is not Status.ACTIVE:
            raise InvalidTransition(event, "create", "only active events can be created")
        event = retimed(None, event)
        limits = limits or NO_LIMITS
        now = event.created_at
        guards = _guard_ids(event)
        windows = _windows(event, limits)
        for attempt in range(self._conflict_attempts):
            # The windows are read consistently, decided on here, and written back conditionally on
            # the version read, in the same transaction as the event: a concurrent create cancels it.
            read, escalated = self._decide_windows(event, limits, windows, now)
            final = event
            if escalated:
                final = escalate(event) if escalate is not None else event.updated(escalated=True)
            event_put = self._event_put(final)
            event_put["ConditionExpression"] = "attribute_not_exists(id)"
            items: list[dict[str, Any]] = [{"Put": event_put}]
            items += [{"Put": self._guard_put(key, final, limits)} for key in guards]
            items += [
                {"Put": self._window_put(key, read[key], now, limits, keep)} for key, _, keep in windows
            ]
            if final.request_id is not None:
                items.append({"Put": self._request_put(final)})
            try:
                self._call("transact_write_items", TransactItems=items)
                return final
            except ClientError as exc:
                if _code(exc) != "TransactionCanceledException":
                    raise
                codes = _cancellation_codes(exc)
                replayed = final.request_id is not None and codes and codes[-1] == "ConditionalCheckFailed"
                if replayed and self._replayed(final):
                    return final  # botocore retried a transaction whose first attempt was applied
                if codes and codes[0] == "ConditionalCheckFailed":
                    if self._already_written(final):
                        return final  # botocore retried a transaction whose first attempt was applied
                    raise ConcurrentModification(event.id, "an event with this id already exists") from exc
                failed_guards = [
                    key
                    for key, code in zip(guards, codes[1 : 1 + len(guards)], strict=False)
                    if code == "ConditionalCheckFailed"
                ]
                if failed_guards:
                    if any(self._refuse(key, final, limits) for key in failed_guards):
                        return final  # likewise: the guard is ours
                    continue  # the guard was released in between: try again
                if "ConditionalCheckFailed" in codes or "TransactionConflict" in codes:
                    self._backoff(attempt)  # a window changed since it was read: re-read and decide again
                    continue
                raise StoreUnavailable(f"DynamoDB transaction cancelled: {codes}") from exc
        raise StoreUnavailable("DynamoDB: too many conflicting transactions on this invoker and profile")

    def _request_put(self, event: BreakGlassEvent) -> dict[str, Any]:
        """The request item: the request created `event`, and no other event."""
        assert event.request_id is not None
        item = {
            "id": REQUEST_PREFIX + event.request_id,
            "kind": "request",
            "event_id": event.id,
            "ttl": int((event.expires_at + self.retention).timestamp()),  # as long as the event's record
        }
        return {
            "TableName": self.table,
            "Item": _ser(item),
            "ConditionExpression": "attribute_not_exists(id)",
        }

    def _replayed(self, event: BreakGlassEvent) -> bool:
        """The request item refused `event`: raise DuplicateRequest naming the event the request created,
        or True when that event is `event` itself (our own retried write)."""
        assert event.request_id is not None
        item = self._get_item(REQUEST_PREFIX + event.request_id)
        if item is None:
            return False  # not the request item that refused it (it expired meanwhile): decided elsewhere
        if item.get("event_id") == event.id:
            return True
        raise DuplicateRequest(event.request_id, str(item.get("event_id")))

    def _already_written(self, event: BreakGlassEvent) -> bool:
        item = self._get_item(event.id)
        return item is not None and from_item(item) == event

    def _guard_put(self, key: str, event: BreakGlassEvent, limits: Limits) -> dict[str, Any]:
        """The claim of `event` on one guard: refused while another effective event holds it, or while
        the last event on it (ended, or past its expiry but not yet swept) is cooling down."""
        guard = {
            "id": key,
            "kind": "guard",
            "active_event_id": event.id,
            "active_expires_at": format_ts(event.expires_at),
            "last_event_id": event.id,
            "last_created_at": format_ts(event.created_at),
        }
        condition = "attribute_not_exists(active_event_id) OR active_expires_at <= :cut"
        if limits.cooldown:
            condition = f"({condition}) AND (attribute_not_exists(last_ended_at) OR last_ended_at <= :cut)"
        return {
            "TableName": self.table,
            "Item": _ser(guard),
            "ConditionExpression": f"attribute_not_exists(id) OR ({condition})",
            "ExpressionAttributeValues": {":cut": {"S": format_ts(event.created_at - limits.cooldown)}},
        }

    def _decide_windows(
        self, event: BreakGlassEvent, limits: Limits, windows: list[tuple[str, str, int]], now: datetime
    ) -> tuple[dict[str, dict[str, Any] | None], bool]:
        """Read `windows` (one consistent TransactGetItems) and `decide` a new entry at `now` (a creation
        or an extension of `event`): the items read (their versions condition the write) and whether it is
        escalated. LimitReached when a window refuses it."""
        read = self._read_items([key for key, _, _ in windows])
        person = [_times(read[key]) for key, kind, _ in windows if kind == "person"]
        on_profile = [t for key, kind, _ in windows if kind == "profile" for t in _times(read[key])]
        return read, decide(limits, event.profile, now, person_times=person, profile_times=on_profile)

    def _window_put(
        self, key: str, current: dict[str, Any] | None, now: datetime, limits: Limits, keep: int
    ) -> dict[str, Any]:
        """The window item with a new entry at `now` added (a creation or an extension; newest `keep`
        times in the window), written only if nobody changed it since it was read."""
        times = [now] + [t for t in _times(current) if limits.in_window(t, now)]
        item = {
            "id": key,
            "kind": "window",
            "times": [format_ts(t) for t in sorted(times, reverse=True)[:keep]],
            "version": int(current["version"]) + 1 if current else 1,
            "ttl": int((now + limits.window + self.retention).timestamp()),
        }
        put: dict[str, Any] = {"TableName": self.table, "Item": _ser(item)}
        if current is None:
            put["ConditionExpression"] = "attribute_not_exists(id)"
        else:
            put["ConditionExpression"] = "#v = :v"
            put["ExpressionAttributeNames"] = {"#v": "version"}
            put["ExpressionAttributeValues"] = {":v": {"N": str(current["version"])}}
        return put

    def _read_items(self, keys: list[str]) -> dict[str, dict[str, Any] | None]:
        """Strongly consistent snapshot of `keys` (one TransactGetItems; nothing when there are none)."""
        if not keys:
            return {}
        result = self._call(
            "transact_get_items",
            TransactItems=[{"Get": {"TableName": self.table, "Key": {"id": {"S": k}}}} for k in keys],
        )
        responses = result.get("Responses", [])
        return {k: (_de(r["Item"]) if r.get("Item") else None) for k, r in zip(keys, responses, strict=True)}

    def _refuse(self, key: str, event: BreakGlassEvent, limits: Limits) -> bool:
        """A guard refused `event`: raise StackedAccess or LimitReached (cooldown) saying why. True when
        the guard already names `event` (our own retried write); False when it no longer refuses."""
        now = event.created_at
        guard = self._get_item(key)
        if not guard:
            return False
        active = guard.get("active_event_id")
        ends: list[datetime | None] = []
        if active:
            if active == event.id:
                return True
            item = self._get_item(str(active))
            existing = from_item(item) if item else None
            if existing is not None and existing.is_effective(now):
                raise StackedAccess(existing)
            ends.append(parse_ts(str(guard["active_expires_at"])))  # past its expiry, not yet swept
        if "last_ended_at" in guard:
            ends.append(parse_ts(str(guard["last_ended_at"])))
        check_cooldown(limits, event.profile, now, ends)
        return False

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
        if old.foreign and old.version == 1:
            # Sentinel's items carry no version: the bot's first write of one is conditional on it
            # still having none (nobody else wrote it as the bot) and on its status.
            put["ConditionExpression"] = "(#v = :v OR attribute_not_exists(#v)) AND #s = :s"
        return put

    def _transition(
        self,
        event_id: str,
        apply: Callable[[BreakGlassEvent], BreakGlassEvent],
        known: BreakGlassEvent | None = None,
        *,
        moves_claim: bool = False,
        counting: Counting | None = None,
    ) -> BreakGlassEvent:
        guard_write = self._guard_extend if moves_claim else self._guard_release
        superseded: set[str] = set()  # guards that name a newer event (this one expired unswept): left alone
        for attempt in range(self._conflict_attempts):
            # the caller's copy on the first attempt (the write is conditional on its version), then
            # re-read: a stale copy costs one failed conditional write instead of a read every time
            current = known if known is not None and known.id == event_id else self.get(event_id)
            known = None
            # apply() raises InvalidTransition when the event is no longer active (or not due)
            changed = apply(current)
            windows: list[tuple[str, str, int]] = []
            window_puts: list[dict[str, Any]] = []
            if counting is not None:  # an extension: one more entry in the windows, decided as for create
                windows = _windows(current, counting.limits)
                at = changed.extensions[-1].at
                read, escalated = self._decide_windows(current, counting.limits, windows, at)
                if escalated:
                    changed = counting.escalate(changed)
                window_puts = [
                    {"Put": self._window_put(key, read[key], at, counting.limits, keep)}
                    for key, _, keep in windows
                ]
            new = with_version(changed, current.version + 1)
            keys = [key for key in _guard_ids(current) if key not in superseded]
            items: list[dict[str, Any]] = [{"Put": self._conditional_put(current, new)}]
            items += [{"Update": guard_write(key, new)} for key in keys]
            items += window_puts
            try:
                self._call("transact_write_items", TransactItems=items)
                return new
            except ClientError as exc:
                if _code(exc) != "TransactionCanceledException":
                    raise
                codes = _cancellation_codes(exc)
                if codes[:1] == ["ConditionalCheckFailed"] or "TransactionConflict" in codes:
                    self._backoff(attempt)
                    continue  # someone else changed the event: re-read (InvalidTransition if it ended)
                failed = {k for k, c in zip(keys, codes[1:], strict=False) if c == "ConditionalCheckFailed"}
                if "ConditionalCheckFailed" in codes[1 + len(keys) :] and not failed:
                    self._backoff(attempt)  # a window changed since it was read: re-read and decide again
                    continue
                if failed and moves_claim:  # its claim was taken: it had run out before this write
                    raise InvalidTransition(
                        current, "extend", "it ran out and a newer event holds its claim"
                    ) from exc
                if failed:
                    superseded |= failed
                    continue
                raise StoreUnavailable(f"DynamoDB transaction cancelled: {codes}") from exc
        raise ConcurrentModification(event_id, f"still conflicting after {self._conflict_attempts} attempts")

    def save(self, event: BreakGlassEvent) -> BreakGlassEvent:
        # No read first: the write is conditional on the version, the status and the claim fields behind
        # the stacking guard (invoker, profile, created_at, expiry), so a save cannot move a claim. Only
        # when the condition fails is the item read, to say why.
        new = with_version(event, event.version + 1)
        put = self._conditional_put(event, new)
        put["ConditionExpression"] += " AND #i = :i AND #p = :p"
        put["ExpressionAttributeNames"].update({"#i": "invoker", "#p": "profile"})
        put["ExpressionAttributeValues"].update({":i": {"S": event.invoker}, ":p": {"S": event.profile}})
        if not (event.foreign and event.version == 1):  # Sentinel writes its times in Go's format
            put["ConditionExpression"] += " AND #c = :c AND #e = :e"
            put["ExpressionAttributeNames"].update({"#c": "created_at", "#e": "expires_at"})
            put["ExpressionAttributeValues"].update(
                {":c": {"S": format_ts(event.created_at)}, ":e": {"S": format_ts(event.expires_at)}}
            )
        try:
            self._call("put_item", **put)
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            item = self._get_item(event.id) if is_event_id(event.id) else None
            if item is None:
                raise EventNotFound(event.id) from exc
            check_save(from_item(item), event)  # InvalidTransition or ConcurrentModification
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
        return Page(items=self._readable(items[:limit]), cursor=next_cursor)

    def list_active(self) -> list[BreakGlassEvent]:
        items = self._query_all(
            IndexName=GSI_STATUS,
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": Status.ACTIVE.value}},
        )
        return self._readable(items)

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
        return self._readable(_de(i) for i in result.get("Items", []))

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


def create_table(
    client: Any,
    table: str,
    *,
    wait: bool = True,
    pitr: bool = True,
    update: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Create the table (idempotent): keys, GSIs, on-demand billing, SSE, TTL on `ttl`, PITR.

    Returns a list of human-readable lines saying what was created and what already existed. An existing
    table with another layout raises StoreNotConfigured naming each difference, and is left unchanged;
    except with `update=True` when the only differences are missing indexes (a table made by an older
    version): each is added, one at a time (DynamoDB builds one index per UpdateTable while the table keeps
    serving), waiting until it is ACTIVE. Nothing is ever deleted or rekeyed.
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
    description = client.describe_table(TableName=table)["Table"]
    problems = layout_problems(description)
    present = {i["IndexName"] for i in description.get("GlobalSecondaryIndexes", [])}
    missing = [name for name in _INDEXES if name not in present]
    only_missing = bool(missing) and len(problems) == len(missing)  # one problem line per missing index
    if only_missing and update:
        report += _add_indexes(client, table, missing, sleep=sleep)
    elif problems:
        hint = "; `create-table --update` adds the missing indexes" if only_missing else ""
        raise StoreNotConfigured(wrong_layout(table, problems) + "; nothing was changed" + hint)
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


INDEX_BUILD_TIMEOUT = 3600.0
"""Seconds `create-table --update` waits for one new index to become ACTIVE (large tables backfill slowly)."""


def _add_indexes(client: Any, table: str, names: list[str], *, sleep: Callable[[float], None]) -> list[str]:
    definition = table_definition(table)
    by_name = {i["IndexName"]: i for i in definition["GlobalSecondaryIndexes"]}
    report = []
    for name in names:
        index = by_name[name]
        used = {k["AttributeName"] for k in index["KeySchema"]}
        attributes = [a for a in definition["AttributeDefinitions"] if a["AttributeName"] in used]
        client.update_table(
            TableName=table,
            AttributeDefinitions=attributes,
            GlobalSecondaryIndexUpdates=[{"Create": index}],
        )
        waited = 0.0
        while True:
            described = client.describe_table(TableName=table)["Table"]
            status = {
                i["IndexName"]: i.get("IndexStatus") for i in described.get("GlobalSecondaryIndexes", [])
            }
            if status.get(name) == "ACTIVE":
                break
            if waited >= INDEX_BUILD_TIMEOUT:
                raise StoreNotConfigured(
                    f"index {name} of {table!r} is still {status.get(name)} after {waited:.0f} s: "
                    "run `create-table --update` again once it is ACTIVE"
                )
            sleep(5.0)
            waited += 5.0
        report.append(f"added index {name} ({', '.join(sorted(used))})")
    return report
