"""Store cost per operation on DynamoDB (moto), and scaling of the stacking check and sweep reads with history.

Requests are counted with botocore `before-call` hooks; items read come from `Count`/`ScannedCount` in
`after-call` responses (GetItem counts as one item read when it returns an item). ReturnConsumedCapacity
is added to every call through a `provide-client-params` hook.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import boto3

from bench.common import Row, aws_env, event, free_port, moto_server
from store.dynamodb import DynamoDBStore, _de, _ser, create_table, make_client, to_item
from store.errors import StackedAccess
from store.sqlite import _COLUMNS, SQLiteStore, _row

# computed here rather than imported, so that this module also runs against older stores (before/after)
_PLACEHOLDERS = ", ".join("?" * len(_COLUMNS.split(",")))
_CC_OPS = {
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "GetItem",
    "Query",
    "Scan",
    "TransactWriteItems",
    "TransactGetItems",
}


@dataclass
class Meter:
    """Counts DynamoDB API calls, items read and the consumed capacity moto reports."""

    calls: Counter = field(default_factory=Counter)
    attempts: int = 0  # HTTP requests sent, retries included
    items_read: int = 0
    items_returned: int = 0
    capacity: float = 0.0
    capacity_reported: int = 0
    capacity_missing: int = 0

    def reset(self) -> None:
        self.calls.clear()
        self.attempts = 0
        self.items_read = self.items_returned = 0
        self.capacity = 0.0
        self.capacity_reported = self.capacity_missing = 0

    def install(self, client: Any) -> None:
        events = client.meta.events
        events.register("provide-client-params.dynamodb.*", self._params)
        events.register("before-call.dynamodb.*", self._before)
        events.register("after-call.dynamodb.*", self._after)
        events.register("before-send.dynamodb.*", self._send)

    def _send(self, **_: Any) -> None:
        self.attempts += 1

    def _params(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in _CC_OPS:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")

    def _before(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def _after(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in ("Query", "Scan"):
            self.items_read += int(parsed.get("ScannedCount", 0))
            self.items_returned += int(parsed.get("Count", 0))
        elif model.name == "GetItem" and parsed.get("Item"):
            self.items_read += 1
            self.items_returned += 1
        elif model.name == "TransactGetItems":
            found = sum(1 for r in parsed.get("Responses", []) if r.get("Item"))
            self.items_read += found
            self.items_returned += found
        cc = parsed.get("ConsumedCapacity")
        if isinstance(cc, dict):
            cc = [cc]
        if cc:
            self.capacity_reported += 1
            self.capacity += sum(float(c.get("CapacityUnits", 0)) for c in cc)
        elif model.name in _CC_OPS and "Error" not in parsed:
            self.capacity_missing += 1

    def describe(self) -> str:
        calls = ", ".join(f"{n} {op}" for op, n in sorted(self.calls.items())) or "none"
        retries = self.attempts - sum(self.calls.values())
        return f"{calls}{f' (+{retries} retried)' if retries > 0 else ''}; items read {self.items_read}"

    def capacity_text(self) -> str:
        if self.capacity_reported == 0:
            return "not reported by moto"
        text = f"{self.capacity:g} units"
        if self.capacity_missing:
            text += f" (+{self.capacity_missing} calls without a report)"
        return text


def _dynamo(url: str, table: str, *, patient: bool = False) -> tuple[DynamoDBStore, Meter, Any]:
    if patient:
        # moto takes seconds per write on a big table; the production client's 5 s read timeout would
        # turn that into retries of already-applied writes, so the scaling runs wait longer instead
        from botocore.config import Config

        client = boto3.session.Session().client(
            "dynamodb",
            region_name="us-east-1",
            endpoint_url=url,
            config=Config(retries={"mode": "standard", "max_attempts": 1}, read_timeout=300),
        )
    else:
        client = make_client("us-east-1", url)
    create_table(client, table, pitr=False)
    meter = Meter()
    meter.install(client)
    return DynamoDBStore(table, client=client), meter, client


def op_costs(rows: list[Row]) -> None:
    """Section 1: requests per store operation."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with moto_server() as url:
        store, meter, _ = _dynamo(url, "bench-ops")
        now = datetime.now(UTC)

        def measure(name: str, fn: Any, target: str = "", check: Any = None) -> Any:
            meter.reset()
            result = fn()
            verdict = "" if check is None else ("ok" if check(meter) else "MISS")
            rows.append(
                Row(
                    "1 DynamoDB ops",
                    name,
                    f"{meter.describe()}; capacity {meter.capacity_text()}",
                    target,
                    verdict,
                )
            )
            return result

        ev = event(invoker="alice", profile="sandbox", created_at=now, duration=timedelta(hours=1))
        measure(
            "invoke (store.create)",
            lambda: store.create(ev),
            "1 TransactWriteItems, 0 Query",
            lambda m: m.calls == Counter({"TransactWriteItems": 1}),
        )
        stacked = event(invoker="alice", profile="sandbox", created_at=now, duration=timedelta(hours=1))

        def refused() -> None:
            try:
                store.create(stacked)
            except StackedAccess:
                return
            raise AssertionError("stacked create was not refused")

        measure("stacked invoke (refused)", refused, "0 Query", lambda m: m.calls["Query"] == 0)
        from store.limits import Limits

        limits = Limits(per_user=5, per_profile=5, cooldown=timedelta(minutes=10), escalate_after=3)
        limited = event(invoker="carol", profile="sandbox", created_at=now, duration=timedelta(hours=1))
        measure(
            "invoke with every rate limit on (store.create(limits=...))",
            lambda: store.create(limited, limits=limits),
            "limits decided in the write, 0 Query",
            lambda m: m.calls == Counter({"TransactGetItems": 1, "TransactWriteItems": 1}),
        )
        warned = store.get(ev.id).updated(warned_at=now)
        measure("warning (store.save warned_at)", lambda: store.save(warned))
        measure("list_active (1 active)", store.list_active)
        measure("list_owed", lambda: store.list_owed(now=now))
        known = store.get(ev.id)
        measure(
            "close (the service passes its copy: known=)",
            lambda: store.close(
                ev.id, by="alice", reason="done", now=now + timedelta(minutes=1), known=known
            ),
            "0 GetItem",
            lambda m: m.calls == Counter({"TransactWriteItems": 1}),
        )
        short = event(invoker="bob", profile="sandbox", created_at=now - timedelta(minutes=20))
        store.create(short)
        measure("expire (without a copy: reads first)", lambda: store.expire(short.id, now=now))


# -- scaling with history --------------------------------------------------------------------------

HOT = "hot-invoker"


def _history(n: int, now: datetime) -> tuple[list[Any], int]:
    """n ended events; the hot invoker holds min(10,000, n//2) of them, all on profile B and newer than
    the hot invoker's active event on profile A (created by the caller 3h ago)."""
    hot = min(10_000, n // 2) if n >= 2 else n
    base = now - timedelta(hours=2)
    events = []
    for i in range(n):
        who = HOT if i < hot else f"user-{i % 997}"
        events.append(
            event(
                invoker=who,
                profile="B" if who == HOT else f"p{i % 7}",
                created_at=base + timedelta(microseconds=i * 10),
                ended=True,
            )
        )
    return events, hot


def _seed_query(client: Any, table: str, profile: str, *, limit: int | None) -> tuple[bool, int, int]:
    """The seed's check: gsi-invoker newest first, FilterExpression profile = :p AND status = active.
    With limit=1 (the seed) one page; with None, paginate until found. Returns (found, pages, scanned)."""
    kwargs: dict[str, Any] = {
        "TableName": table,
        "IndexName": "gsi-invoker",
        "KeyConditionExpression": "invoker = :i",
        "FilterExpression": "#p = :p AND #s = :a",
        "ExpressionAttributeNames": {"#p": "profile", "#s": "status"},
        "ExpressionAttributeValues": {":i": {"S": HOT}, ":p": {"S": profile}, ":a": {"S": "active"}},
        "ScanIndexForward": False,
    }
    if limit is not None:
        kwargs["Limit"] = limit
    pages = scanned = 0
    while True:
        result = client.query(**kwargs)
        pages += 1
        scanned += int(result.get("ScannedCount", 0))
        if result.get("Items"):
            return True, pages, scanned
        if limit is not None or not result.get("LastEvaluatedKey"):
            return False, pages, scanned
        kwargs["ExclusiveStartKey"] = result["LastEvaluatedKey"]


def _seed_http(client: Any, table: str, items: list[dict[str, Any]]) -> str:
    t0 = time.perf_counter()
    for i in range(0, len(items), 25):
        chunk = items[i : i + 25]
        client.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": it}} for it in chunk]})
    return f"BatchWriteItem {time.perf_counter() - t0:.1f} s on moto"


def scaling(rows: list[Row], sizes: list[int], dynamo_sizes: list[int] | None = None) -> None:
    """Section 2: the stacking check and the sweep's reads with 10 .. 100,000 ended events (SQLite at
    `sizes`; DynamoDB on moto at `dynamo_sizes`, smaller: moto's writes and queries are O(table))."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with moto_server() as url:
        for n in dynamo_sizes or sizes:
            table = f"bench-hist-{n}"
            store, meter, client = _dynamo(url, table, patient=True)
            _dynamo_scaling_one(rows, store, meter, client, n, partial(_seed_http, client, table))
            client.delete_table(TableName=table)  # keep moto's memory and per-query scans small
    _sqlite_scaling(rows, sizes)


def scaling_large(rows: list[Row], n: int = 100_000) -> None:
    """Section 2, opt-in (`--large`): DynamoDB at n ended events on moto *in-process* (`moto.mock_aws`).

    Seeding over moto's HTTP server takes ~1.3 ms an item; here the items go straight into moto's
    backend model with `Table.put_item` (the same validation and storage as a PutItem, without HTTP,
    request parsing or the 25-item batching). Everything measured afterwards goes through the store's
    botocore client as usual, so the request and item counts come from the same hooks as the default
    run. moto's TransactWriteItems still deep-copies the whole table per call (nothing is patched), so
    its wall times grow with n; they are moto's, not DynamoDB's.
    """
    from botocore.config import Config
    from moto import mock_aws
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    aws_env()
    # safety belt: anything moto failed to intercept goes to a closed port on 127.0.0.1, never to AWS
    saved = {k: os.environ.get(k) for k in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")}
    os.environ["HTTPS_PROXY"] = os.environ["HTTP_PROXY"] = f"http://127.0.0.1:{free_port()}"
    os.environ.pop("NO_PROXY", None)
    table = f"bench-hist-{n}"
    try:
        with mock_aws():
            client = boto3.session.Session().client(
                "dynamodb",
                region_name="us-east-1",
                config=Config(retries={"mode": "standard", "max_attempts": 1}),
            )
            create_table(client, table, pitr=False)
            meter = Meter()
            meter.install(client)
            store = DynamoDBStore(table, client=client)
            moto_table = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_table(table)

            def seed(items: list[dict[str, Any]]) -> str:
                t0 = time.perf_counter()
                for item in items:
                    moto_table.put_item(item)
                return f"moto backend Table.put_item (in-process) {time.perf_counter() - t0:.1f} s"

            _dynamo_scaling_one(rows, store, meter, client, n, seed, where="moto in-process")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _dynamo_scaling_one(
    rows: list[Row],
    store: DynamoDBStore,
    meter: Meter,
    client: Any,
    n: int,
    seed: Any,
    *,
    where: str = "",
) -> None:
    section = "2 history scaling"
    table = store.table
    now = datetime.now(UTC)
    active_a = event(
        invoker=HOT, profile="A", created_at=now - timedelta(hours=3), duration=timedelta(hours=4)
    )
    store.create(active_a)
    events, hot = _history(n, now)
    seed_text = seed([_ser(to_item(e)) for e in events])
    label = f"n={n:,} (hot invoker holds {hot:,})" + (f", {where}" if where else "")
    rows.append(Row(section, f"DynamoDB seed {label}", seed_text))

    # our stacking check: refused on A (holds an active event), granted on C (then closed)
    meter.reset()
    t = time.perf_counter()
    try:
        store.create(event(invoker=HOT, profile="A", created_at=now, duration=timedelta(hours=1)))
        refused = False
    except StackedAccess:
        refused = True
    dt = time.perf_counter() - t
    rows.append(
        Row(
            section,
            f"DynamoDB our check, stacked on A, {label}",
            f"{'refused' if refused else 'NOT REFUSED'}; {meter.describe()}; {dt * 1000:.1f} ms",
            "refused, flat",
            "ok" if refused and meter.items_read <= 2 and not meter.calls["Query"] else "MISS",
        )
    )
    fresh = event(invoker=HOT, profile="C", created_at=now, duration=timedelta(hours=1))
    meter.reset()
    t = time.perf_counter()
    store.create(fresh)
    dt = time.perf_counter() - t
    rows.append(
        Row(
            section,
            f"DynamoDB our check, new profile C, {label}",
            f"granted; {meter.describe()}; {dt * 1000:.1f} ms",
            "1 write, 0 Query",
            "ok" if meter.calls == Counter({"TransactWriteItems": 1}) else "MISS",
        )
    )
    store.close(fresh.id, by=HOT, reason="benchmark cleanup", now=now)

    # the sweep's reads
    meter.reset()
    t = time.perf_counter()
    active = store.list_active()
    owed = store.list_owed(now=now)
    dt = time.perf_counter() - t
    rows.append(
        Row(
            section,
            f"DynamoDB sweep reads, {label}",
            f"{len(active)} active, {len(owed)} owed; {meter.describe()}; {dt * 1000:.1f} ms",
            "items read flat",
            "ok" if meter.items_read <= 5 else "MISS",
        )
    )

    # the seed's check, side by side
    t = time.perf_counter()
    found, pages, scanned = _seed_query(client, table, "A", limit=1)
    dt = time.perf_counter() - t
    rows.append(
        Row(
            section,
            f"seed Limit=1 check on A, {label}",
            f"{'found' if found else 'MISSED the active event'}; 1 Query, items read {scanned}; "
            f"{dt * 1000:.1f} ms",
            "(baseline)",
        )
    )
    t = time.perf_counter()
    found, pages, scanned = _seed_query(client, table, "A", limit=None)
    dt = time.perf_counter() - t
    rows.append(
        Row(
            section,
            f"seed check paginated to be correct, {label}",
            f"{'found' if found else 'missed'}; {pages} Query pages, items read {scanned}; "
            f"{dt * 1000:.1f} ms",
            "(baseline)",
        )
    )


def sqlite_contention(rows: list[Row], writers: int = 20, events: int = 500) -> None:
    """Diagnostic for the HTTP tail: SQLiteStore alone, `writers` threads each doing create + 3 saves
    (what one invocation and its outbox delivery write), in one process, no Slack, no HTTP."""
    from concurrent.futures import ThreadPoolExecutor

    from bench.common import summary_ms
    from store.base import mutate

    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "b.db")
        creates: list[float] = []
        saves: list[float] = []

        def one(i: int) -> None:
            ev = event(invoker=f"u{i}", profile="sandbox", created_at=datetime.now(UTC))
            t = time.perf_counter()
            store.create(ev.with_outbox("audit_post", "dm_invoked"))
            creates.append(time.perf_counter() - t)
            for n in range(3):
                t = time.perf_counter()
                mutate(store, ev.id, lambda e, n=n: e.updated(audit_ts=f"1700000000.{n:06d}"))
                saves.append(time.perf_counter() - t)

        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(one, range(events)))
        store.disconnect()
    section = "3 HTTP end-to-end"
    rows.append(Row(section, f"diagnostic: SQLite create, {writers} writer threads", summary_ms(creates)))
    rows.append(Row(section, f"diagnostic: SQLite get+save, {writers} writer threads", summary_ms(saves)))


def _sqlite_scaling(rows: list[Row], sizes: list[int]) -> None:
    for n in sizes:
        _sqlite_one(rows, n)


def _sqlite_one(rows: list[Row], n: int) -> None:
    section = "2 history scaling"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "b.db"
        store = SQLiteStore(path)
        now = datetime.now(UTC)
        store.create(
            event(invoker=HOT, profile="A", created_at=now - timedelta(hours=3), duration=timedelta(hours=4))
        )
        events, hot = _history(n, now)
        t0 = time.perf_counter()
        conn = sqlite3.connect(path)
        with conn:
            conn.executemany(
                f"INSERT INTO events ({_COLUMNS}) VALUES ({_PLACEHOLDERS})",  # noqa: S608
                [_row(e) for e in events],
            )
        conn.close()
        seed_s = time.perf_counter() - t0
        label = f"n={n:,} (hot invoker holds {hot:,})"

        def timed(fn: Any, repeat: int = 20) -> float:
            best = []
            for _ in range(repeat):
                t = time.perf_counter()
                fn()
                best.append(time.perf_counter() - t)
            return sorted(best)[len(best) // 2]

        def stacked() -> None:
            try:
                store.create(event(invoker=HOT, profile="A", created_at=now, duration=timedelta(hours=1)))
            except StackedAccess:
                return
            raise AssertionError("stacked create was not refused")

        check = timed(stacked)
        sweep = timed(lambda: (store.list_active(), store.list_owed(now=now)))
        rows.append(
            Row(
                section,
                f"SQLite {label}",
                f"seed {seed_s:.1f} s; stacking check (refused) median {check * 1000:.2f} ms; "
                f"sweep reads median {sweep * 1000:.2f} ms",
                "flat",
            )
        )
        store.disconnect()


def sqlite_one_profile(rows: list[Row], sizes: tuple[int, ...] = (10, 10_000)) -> None:
    """Section 2b (issue 13.6): one invoker with `n` ended events on ONE profile, which `n` other
    people's events also crowd. The stacking check inside `create` (refused: the invoker holds an active
    event there), the same with every rate limit on (SQLite decides them in the create's transaction),
    and `last_by_invoker_and_profile` for that invoker and for one with no event on the busy profile."""
    for n in sizes:
        _sqlite_one_profile(rows, n)


def _sqlite_one_profile(rows: list[Row], n: int) -> None:
    try:
        from store.limits import Limits
    except ImportError:  # a store from before issue 12: no limits in create
        Limits = None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "b.db"
        store = SQLiteStore(path)
        now = datetime.now(UTC)
        base = now - timedelta(days=2)
        history = [
            event(invoker=HOT, profile="A", created_at=base + timedelta(seconds=i), ended=True)
            for i in range(n)
        ] + [
            event(invoker=f"user-{i}", profile="A", created_at=base + timedelta(seconds=i), ended=True)
            for i in range(n)
        ]
        conn = sqlite3.connect(path)
        with conn:
            conn.executemany(
                f"INSERT INTO events ({_COLUMNS}) VALUES ({_PLACEHOLDERS})",  # noqa: S608
                [_row(e) for e in history],
            )
        conn.close()
        store.create(event(invoker=HOT, profile="A", created_at=now, duration=timedelta(hours=1)))

        def median_ms(fn: Any, repeat: int = 50) -> float:
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            return sorted(times)[len(times) // 2] * 1000

        def stacked(**kwargs: Any) -> None:
            try:
                store.create(
                    event(invoker=HOT, profile="A", created_at=now, duration=timedelta(hours=1)), **kwargs
                )
            except StackedAccess:
                return
            raise AssertionError("stacked create was not refused")

        parts = [f"stacking check (refused) {median_ms(stacked):.2f} ms"]
        if Limits is not None:
            limits = Limits(
                window=timedelta(hours=24),
                per_user=1000,
                per_profile=1000,
                cooldown=timedelta(minutes=10),
                escalate_after=1000,
            )
            parts.append(f"with every limit on {median_ms(partial(stacked, limits=limits)):.2f} ms")
        parts.append(
            f"last_by_invoker_and_profile {median_ms(lambda: store.last_by_invoker_and_profile(HOT, 'A')):.3f} ms"
        )
        newcomer = median_ms(lambda: store.last_by_invoker_and_profile("newcomer", "A"))
        parts.append(f"same, invoker with no event on the profile {newcomer:.3f} ms")
        rows.append(
            Row(
                "2b one invoker, one profile",
                f"SQLite n={n:,} ended (+{n:,} others')",
                "; ".join(parts),
                "flat",
            )
        )
        store.disconnect()


def _de_all(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [_de(i) for i in items]
