"""DynamoDB-specific promises: item layout, the stacking guard, request counts, table setup, failures."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from store.dynamodb import (
    _INDEXES,
    DEFAULT_RETENTION,
    GUARD_PREFIX,
    DynamoDBStore,
    create_table,
    guard_id,
    to_item,
)
from store.errors import InvalidTransition, StackedAccess, StoreUnavailable
from store.model import Status
from store.timeutil import TIMESTAMP_WIDTH, format_ts
from tests.store_fixtures import HOUR, T0, dynamodb_client, make_event

pytest_plugins = ["tests.store_fixtures"]

MINUTE = timedelta(minutes=1)
TIME_ATTRIBUTES = ("created_at", "updated_at", "expires_at", "ended_at")


@pytest.fixture
def ddb(moto_dynamodb: tuple[Any, str]) -> DynamoDBStore:
    client, table = moto_dynamodb
    return DynamoDBStore(table, client=client)


def raw_item(store: DynamoDBStore, key: str) -> dict[str, Any]:
    result = store.client.get_item(TableName=store.table, Key={"id": {"S": key}}, ConsistentRead=True)
    return dict(result.get("Item", {}))


def scan_ids(store: DynamoDBStore, index: str | None = None) -> list[str]:
    kwargs: dict[str, Any] = {"TableName": store.table}
    if index:
        kwargs["IndexName"] = index
    ids: list[str] = []
    while True:
        result = store.client.scan(**kwargs)
        ids += [item["id"]["S"] for item in result.get("Items", [])]
        if "LastEvaluatedKey" not in result:
            return ids
        kwargs["ExclusiveStartKey"] = result["LastEvaluatedKey"]


class CallCounter:
    """Counts DynamoDB API operations sent by a client (botocore `before-call` hook)."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        client.meta.events.register("before-call.dynamodb", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def reset(self) -> None:
        self.calls.clear()

    @property
    def total(self) -> int:
        return sum(self.calls.values())


# -- item layout -------------------------------------------------------------------------------


def test_item_layout_uses_seed_names_and_types(ddb: DynamoDBStore) -> None:
    event = ddb.create(make_event(duration=timedelta(minutes=90), incident="INC-7", request_id="r-1"))
    item = raw_item(ddb, event.id)

    assert item["id"] == {"S": event.id}
    assert item["invoker"] == {"S": "alice@example.com"}
    assert item["profile"] == {"S": "prod-admin"}
    assert item["status"] == {"S": "active"}
    assert item["reason_code"] == {"S": "incident"}
    assert item["justification"] == {"S": event.justification}
    assert item["incident"] == {"S": "INC-7"}
    assert item["request_id"] == {"S": "r-1"}
    assert item["duration"] == {"N": str(90 * 60 * 10**9)}  # nanoseconds, like Go's time.Duration
    for name in ("created_at", "updated_at", "expires_at"):
        value = item[name]["S"]
        assert len(value) == TIMESTAMP_WIDTH
        assert value.endswith("Z")
    assert item["created_at"] == {"S": "2026-03-01T12:00:00.000000Z"}
    assert item["expires_at"] == {"S": "2026-03-01T13:30:00.000000Z"}
    assert "ended_at" not in item
    assert "closed_by" not in item
    assert "owed_pk" not in item
    assert "review_pk" not in item

    closed = ddb.close(event.id, by="bob", reason="done", now=T0 + MINUTE)
    item = raw_item(ddb, event.id)
    assert item["status"] == {"S": "closed"}
    assert item["closed_by"] == {"S": "bob"}
    assert item["closed_reason"] == {"S": "done"}
    assert item["ended_at"] == {"S": format_ts(closed.ended_at)}
    assert item["review_pk"] == {"S": "unreviewed"}


def test_duration_nanoseconds_are_exact(ddb: DynamoDBStore) -> None:
    event = make_event(duration=timedelta(microseconds=261327))
    assert to_item(event)["duration"] == 261327 * 1000
    ddb.create(event)
    assert raw_item(ddb, event.id)["duration"] == {"N": "261327000"}


def test_ttl_is_expiry_plus_default_retention(ddb: DynamoDBStore) -> None:
    event = ddb.create(make_event())
    item = raw_item(ddb, event.id)
    ttl = int(item["ttl"]["N"])
    assert timedelta(days=400) == DEFAULT_RETENTION
    assert ttl == int((event.expires_at + timedelta(days=400)).timestamp())
    assert ttl != int(event.expires_at.timestamp())
    ddb.close(event.id, by="bob", reason="done", now=T0 + MINUTE)
    assert int(raw_item(ddb, event.id)["ttl"]["N"]) == ttl  # records outlive the access


def test_ttl_retention_is_configurable(moto_dynamodb: tuple[Any, str]) -> None:
    client, table = moto_dynamodb
    store = DynamoDBStore(table, client=client, retention=timedelta(days=30))
    event = store.create(make_event())
    assert int(raw_item(store, event.id)["ttl"]["N"]) == int(
        (event.expires_at + timedelta(days=30)).timestamp()
    )


def test_outbox_index_attributes(ddb: DynamoDBStore) -> None:
    event = ddb.create(make_event().with_outbox("audit_post"))
    item = raw_item(ddb, event.id)
    assert item["owed_pk"] == {"S": "owed"}
    assert item["outbox"] == {"L": [{"M": {"kind": {"S": "audit_post"}, "version": {"N": "2"}}}]}
    assert item["outbox_next_at"] == {"S": format_ts(event.updated_at)}  # the index sort key
    assert ddb.get(event.id).outbox_next_at is None  # ... but not the event's own value

    cleared = ddb.save(event.with_outbox(remove=event.outbox))
    item = raw_item(ddb, cleared.id)
    assert "owed_pk" not in item
    assert "outbox_next_at" not in item
    assert "outbox" not in item


# -- the stacking guard ------------------------------------------------------------------------


def test_guard_item_carries_no_index_attributes(ddb: DynamoDBStore) -> None:
    event = ddb.create(make_event().with_outbox("audit_post"))
    guard = raw_item(ddb, guard_id(event.invoker, event.profile))
    assert guard["id"]["S"].startswith(GUARD_PREFIX)
    assert guard["active_event_id"] == {"S": event.id}
    index_keys = {attribute for pair in _INDEXES.values() for attribute in pair}
    assert {"invoker", "status", "profile", "created_at", "ended_at"} <= index_keys
    assert not index_keys & set(guard), sorted(index_keys & set(guard))

    ddb.close(event.id, by="bob", reason="done", now=T0 + MINUTE, outbox=("close_thread",))
    guard = raw_item(ddb, guard_id(event.invoker, event.profile))
    assert "active_event_id" not in guard  # released in the same transaction as the close
    assert not index_keys & set(guard)


def test_guard_never_appears_in_any_listing_or_index(ddb: DynamoDBStore) -> None:
    first = ddb.create(make_event().with_outbox("audit_post"))
    ddb.close(first.id, by="bob", reason="done", now=T0 + MINUTE, outbox=("close_thread",))
    ddb.create(make_event(now=T0 + 2 * MINUTE).with_outbox("audit_post"))
    ddb.create(make_event(profile="other"))
    assert any(key.startswith(GUARD_PREFIX) for key in scan_ids(ddb))

    for index in _INDEXES:
        assert not [key for key in scan_ids(ddb, index) if key.startswith(GUARD_PREFIX)], index
    listed = [
        *ddb.list_active(),
        *ddb.list_by_invoker("alice@example.com").items,
        *ddb.list_by_profile("prod-admin").items,
        *ddb.list_by_status(Status.ACTIVE).items,
        *ddb.list_by_status(Status.CLOSED).items,
        *ddb.list_owed(now=T0 + HOUR),
        *ddb.list_unreviewed().items,
    ]
    assert listed
    assert all(not e.id.startswith(GUARD_PREFIX) for e in listed)
    assert ddb.count_by_invoker_since("alice@example.com", T0 - HOUR) == 3
    assert ddb.count_by_profile_since("prod-admin", T0 - HOUR) == 2


def test_create_is_one_transaction_and_no_query(ddb: DynamoDBStore) -> None:
    counter = CallCounter(ddb.client)
    ddb.create(make_event())
    assert counter.calls == Counter({"TransactWriteItems": 1})

    counter.reset()
    with pytest.raises(StackedAccess):
        ddb.create(make_event(now=T0 + MINUTE))
    assert counter.calls["TransactWriteItems"] == 1
    assert counter.calls["Query"] == 0
    assert counter.calls["Scan"] == 0


def test_close_is_one_transaction_with_its_outbox(ddb: DynamoDBStore) -> None:
    event = ddb.create(make_event())
    counter = CallCounter(ddb.client)
    closed = ddb.close(event.id, by="bob", reason="done", now=T0 + MINUTE, outbox=("close_thread",))
    assert counter.calls == Counter({"GetItem": 1, "TransactWriteItems": 1})
    item = raw_item(ddb, event.id)
    assert item["status"] == {"S": "closed"}
    assert item["outbox"] == {
        "L": [{"M": {"kind": {"S": "close_thread"}, "version": {"N": str(closed.version)}}}]
    }
    assert item["owed_pk"] == {"S": "owed"}
    assert item["version"] == {"N": str(closed.version)}


def _insert_history(store: DynamoDBStore, count: int) -> None:
    """`count` ended events for alice on the profile, written directly (fast, no guard involved)."""
    requests = []
    for n in range(count):
        event = make_event(now=T0 - timedelta(days=1) - n * HOUR, duration=MINUTE)
        ended = event.close(by="alice", reason="done", now=event.created_at + MINUTE)
        requests.append({"PutRequest": {"Item": store._event_put(ended)["Item"]}})
    for start in range(0, len(requests), 25):
        store.client.batch_write_item(RequestItems={store.table: requests[start : start + 25]})


def _create_costs(store: DynamoDBStore) -> tuple[Counter[str], Counter[str]]:
    counter = CallCounter(store.client)
    store.create(make_event())
    success = Counter(counter.calls)
    counter.reset()
    with pytest.raises(StackedAccess):
        store.create(make_event(now=T0 + MINUTE))
    return success, Counter(counter.calls)


def test_stacking_check_cost_does_not_depend_on_history(moto_dynamodb: tuple[Any, str]) -> None:
    client, table = moto_dynamodb
    fresh = DynamoDBStore(table, client=client)
    without_history = _create_costs(fresh)

    other_table = table + "-history"
    create_table(client, other_table)
    try:
        busy = DynamoDBStore(other_table, client=client)
        _insert_history(busy, 200)
        assert busy.count_by_invoker_since("alice@example.com", T0 - timedelta(days=30)) == 200
        with_history = _create_costs(busy)
    finally:
        client.delete_table(TableName=other_table)

    assert with_history == without_history
    assert without_history[0] == Counter({"TransactWriteItems": 1})
    assert without_history[1]["Query"] == 0


def test_expire_after_a_newer_event_leaves_its_guard(ddb: DynamoDBStore) -> None:
    old = ddb.create(make_event())
    new = ddb.create(make_event(now=T0 + 2 * HOUR))
    ddb.expire(old.id, now=T0 + 2 * HOUR + MINUTE)
    guard = raw_item(ddb, guard_id("alice@example.com", "prod-admin"))
    assert guard["active_event_id"] == {"S": new.id}
    assert guard["last_event_id"] == {"S": new.id}


def test_transition_on_item_without_guard(ddb: DynamoDBStore) -> None:
    """Events written before the guard existed (the Sentinel seed) can still be closed."""
    event = make_event()
    ddb.client.put_item(**ddb._event_put(event))
    closed = ddb.close(event.id, by="bob", reason="done", now=T0 + MINUTE)
    assert ddb.get(event.id) == closed
    assert raw_item(ddb, guard_id(event.invoker, event.profile)) == {}


# -- table management --------------------------------------------------------------------------


def test_create_table_is_idempotent_and_secure(moto_dynamodb: tuple[Any, str]) -> None:
    client, table = moto_dynamodb
    report = create_table(client, table)  # the fixture already created it
    assert any("already exists" in line for line in report), report
    assert any("TTL" in line and "already" in line for line in report), report
    assert any("point-in-time recovery already enabled" in line for line in report), report

    description = client.describe_table(TableName=table)["Table"]
    assert description["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert {i["IndexName"] for i in description["GlobalSecondaryIndexes"]} == set(_INDEXES)
    assert description["SSEDescription"]["Status"] in ("ENABLED", "ENABLING")
    assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] in ("ENABLED", "ENABLING")
    assert ttl["AttributeName"] == "ttl"
    backups = client.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"


def test_create_table_reports_what_it_created(moto_dynamodb: tuple[Any, str]) -> None:
    client, table = moto_dynamodb
    other = table + "-new"
    try:
        report = create_table(client, other)
        assert any(line.startswith(f"created table {other}") for line in report), report
        assert "enabled TTL on `ttl` (expiry + retention)" in report
        assert "enabled point-in-time recovery" in report
    finally:
        client.delete_table(TableName=other)


def test_missing_table_is_store_unavailable(moto_dynamodb: tuple[Any, str]) -> None:
    client, table = moto_dynamodb
    store = DynamoDBStore(table + "-missing", client=client)
    with pytest.raises(StoreUnavailable, match="not found"):
        store.ping()
    with pytest.raises(StoreUnavailable):
        store.create(make_event())


# -- failures ----------------------------------------------------------------------------------


def _client_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "simulated"}}, operation)


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ThrottlingException"])
def test_throttled_create_is_unavailable_and_writes_nothing(
    ddb: DynamoDBStore, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    def throttled(**_: Any) -> Any:
        raise _client_error(code, "TransactWriteItems")

    monkeypatch.setattr(ddb.client, "transact_write_items", throttled)
    event = make_event()
    with pytest.raises(StoreUnavailable, match=code):
        ddb.create(event)
    assert scan_ids(ddb) == []  # neither the event nor its guard
    monkeypatch.undo()
    assert ddb.create(event) == event  # and a retry succeeds


def test_throttled_close_changes_nothing(ddb: DynamoDBStore, monkeypatch: pytest.MonkeyPatch) -> None:
    event = ddb.create(make_event())

    def throttled(**_: Any) -> Any:
        raise _client_error("ProvisionedThroughputExceededException", "TransactWriteItems")

    monkeypatch.setattr(ddb.client, "transact_write_items", throttled)
    with pytest.raises(StoreUnavailable):
        ddb.close(event.id, by="bob", reason="done", now=T0 + MINUTE)
    monkeypatch.undo()
    assert ddb.get(event.id) == event
    with pytest.raises(StackedAccess):
        ddb.create(make_event(now=T0 + MINUTE))


def test_transaction_cancelled_by_throttling_is_unavailable(
    ddb: DynamoDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cancelled(**_: Any) -> Any:
        raise ClientError(
            {
                "Error": {"Code": "TransactionCanceledException", "Message": "simulated"},
                "CancellationReasons": [{"Code": "None"}, {"Code": "ThrottlingError"}],
            },
            "TransactWriteItems",
        )

    monkeypatch.setattr(ddb.client, "transact_write_items", cancelled)
    with pytest.raises(StoreUnavailable):
        ddb.create(make_event())
    monkeypatch.undo()
    assert scan_ids(ddb) == []


def test_expire_not_due_is_refused_without_writing(ddb: DynamoDBStore) -> None:
    event = ddb.create(make_event())
    counter = CallCounter(ddb.client)
    with pytest.raises(InvalidTransition, match="not due"):
        ddb.expire(event.id, now=T0 + HOUR - timedelta(microseconds=1))
    assert counter.calls["TransactWriteItems"] == 0
    assert counter.calls["PutItem"] == 0


@pytest.fixture
def unreachable(aws_env: None) -> DynamoDBStore:
    client = dynamodb_client(
        "http://127.0.0.1:1",
        connect_timeout=0.5,
        read_timeout=0.5,
        retries={"mode": "standard", "max_attempts": 1},
    )
    return DynamoDBStore("breakglass-unreachable", client=client)


def test_unreachable_endpoint_is_store_unavailable(unreachable: DynamoDBStore) -> None:
    with pytest.raises(StoreUnavailable):
        unreachable.ping()
    with pytest.raises(StoreUnavailable):
        unreachable.create(make_event())
    with pytest.raises(StoreUnavailable):
        unreachable.get(make_event().id)
    with pytest.raises(StoreUnavailable):
        unreachable.list_active()
