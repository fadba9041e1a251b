"""`create-table --update` (store.dynamodb.create_table(update=True)) adds the indexes a table made by an
older version lacks, one per UpdateTable, waiting until each is ACTIVE, keeps the items, and never changes
a table whose keys differ. Against moto."""

from __future__ import annotations

from typing import Any

import pytest

from store import dynamodb
from store.dynamodb import DynamoDBStore, create_table, layout_problems, table_definition
from store.errors import StoreNotConfigured
from tests.store_fixtures import dynamodb_client, make_event, unique_table_name

pytest_plugins = ["tests.store_fixtures"]


@pytest.fixture
def old_table(_moto_in_process: None, aws_env: None) -> tuple[Any, str]:
    """A table as an older version made it: without gsi-outbox and gsi-review."""
    client = dynamodb_client()
    table = unique_table_name()
    definition = table_definition(table)
    kept = [
        i for i in definition["GlobalSecondaryIndexes"] if i["IndexName"] not in ("gsi-outbox", "gsi-review")
    ]
    used = {k["AttributeName"] for i in kept for k in i["KeySchema"]} | {"id"}
    definition["GlobalSecondaryIndexes"] = kept
    definition["AttributeDefinitions"] = [
        a for a in definition["AttributeDefinitions"] if a["AttributeName"] in used
    ]
    client.create_table(**definition)
    return client, table


def test_without_update_missing_indexes_are_reported_and_nothing_changes(old_table: tuple[Any, str]) -> None:
    client, table = old_table
    with pytest.raises(StoreNotConfigured, match=r"gsi-outbox.*missing.*`create-table --update` adds"):
        create_table(client, table)
    names = {
        i["IndexName"] for i in client.describe_table(TableName=table)["Table"]["GlobalSecondaryIndexes"]
    }
    assert names == {"gsi-invoker", "gsi-status", "gsi-profile"}


def test_update_adds_each_missing_index_one_at_a_time_and_keeps_the_items(old_table: tuple[Any, str]) -> None:
    client, table = old_table
    # An item written before the upgrade (through the item API: the old table cannot serve the new store).
    event = make_event()
    item = dynamodb._ser(dynamodb.to_item(event))
    client.put_item(TableName=table, Item=item)
    calls: list[dict[str, Any]] = []
    client.meta.events.register(
        "before-parameter-build.dynamodb.UpdateTable", lambda params, **_: calls.append(dict(params))
    )
    report = create_table(client, table, update=True, sleep=lambda _: None)
    assert "added index gsi-outbox (outbox_next_at, owed_pk)" in report
    assert "added index gsi-review (ended_at, review_pk)" in report
    assert [len(c["GlobalSecondaryIndexUpdates"]) for c in calls] == [1, 1]
    assert all("Create" in c["GlobalSecondaryIndexUpdates"][0] for c in calls)
    description = client.describe_table(TableName=table)["Table"]
    assert layout_problems(description) == []
    assert DynamoDBStore(table, client=client).get(event.id) == event
    # Idempotent: a second run changes nothing.
    calls.clear()
    again = create_table(client, table, update=True, sleep=lambda _: None)
    assert calls == [] and "table " + table + " already exists" in again


@pytest.mark.usefixtures("_moto_in_process", "aws_env")
def test_update_never_touches_a_table_with_other_keys() -> None:
    client = dynamodb_client()
    table = unique_table_name()
    client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(StoreNotConfigured, match="key schema is pk") as caught:
        create_table(client, table, update=True, sleep=lambda _: None)
    assert "--update" not in str(caught.value)
    assert not client.describe_table(TableName=table)["Table"].get("GlobalSecondaryIndexes")


def test_update_waits_until_the_new_index_is_active(
    old_table: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, table = old_table
    real = client.describe_table
    seen = {"n": 0}

    def describe(**kwargs: Any) -> dict[str, Any]:
        answer = real(**kwargs)
        seen["n"] += 1
        if seen["n"] <= 3:  # the first polls after an UpdateTable see the index still backfilling
            for index in answer["Table"].get("GlobalSecondaryIndexes", []):
                index["IndexStatus"] = "CREATING"
        return answer

    monkeypatch.setattr(client, "describe_table", describe)
    slept: list[float] = []
    create_table(client, table, update=True, sleep=slept.append)
    assert slept, "create-table --update returned before the index was ACTIVE"
