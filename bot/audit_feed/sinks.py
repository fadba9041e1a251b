"""The audit feed's sinks: where each OCSF record of an event goes, delivered through the outbox.

`BREAKGLASS_AUDIT_FEED` names the sinks, comma-separated:

  stdout                      JSON lines on standard output (for a log shipper reading the process's output)
  file:/var/log/bg/audit.log  JSON lines appended to a file (fsync'd)
  s3://bucket/prefix          one object per record, `<prefix>/year=YYYY/month=MM/day=DD/<uid>.json`
                              (Athena / Security Lake partitions), written with `If-None-Match: *`
  eventbridge://bus           `PutEvents` on the bus (`default` for the account's default bus), source
                              `breakglass`, detail-type `breakglass.<step>`, the record as detail

Delivery (`deliver`, the `audit_feed` outbox kind's handler): the delivery pipeline owes an `audit_feed`
step whenever an event has a record some sink does not have yet (`owe`, in the same conditional write that
records the event's other sends, so it is never lost), then sends every missing record to every sink and
records `<sink>:<step>` in the event (`audit_feed_sent`) as each sink accepts them: a retry sends a record
only to the sinks that do not have it. A failing sink never holds back the others; it stays owed and is
retried with the pipeline's backoff.

Exactly once: a record's `metadata.uid` is its idempotency key. S3 refuses a second write of the same key
(the conditional put answers 412, which counts as delivered once the object there is the same record); the
file sink looks for the uid in the file's tail before appending again after an unknown outcome. stdout and
EventBridge cannot be asked: a process that dies between their send and the recording write sends that
record again (at least once), with the same uid for the consumer to drop.

Object Lock: the S3 bucket should have Object Lock in compliance mode with a default retention, so nobody,
the bot's own role included, can change or delete a record before it runs out. `check()` looks at start-up
and logs a warning naming the bucket when it is off (`BREAKGLASS_AUDIT_FEED_OBJECT_LOCK=required`:
refuses to start instead).

The AWS clients follow the SDK conventions (`AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`,
`AWS_ENDPOINT_URL_EVENTS`), so the same code runs against moto in tests.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from bot.audit_feed.notices import (
    RefusalKind,
    channel_notice,
    drift_notices,
    notice_record,
    refusal_notice,
)
from bot.audit_feed.ocsf import Record, canonical, day_digest, event_records, with_day
from store import BreakGlassEvent, Notice, Store, StoreError, mutate
from store.model import OutboxKind

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client

    from bot.access import ReconcileReport
    from bot.service import InvokeRequest

log = logging.getLogger(__name__)

SOURCE = "breakglass"
EVENTBRIDGE_BATCH = 10  # PutEvents takes at most 10 entries
NOTICE_HOLD = timedelta(minutes=2)  # a notice's claim while its sends run (bounded by the sinks' timeouts)
TAIL = 1024 * 1024  # bytes of a file sink searched for a record before appending it again
ObjectLock = Literal["required", "recommended", "off"]


class SinkError(Exception):
    """A sink refused or failed some records; `delivered` are the uids it accepted before failing."""

    def __init__(self, message: str, delivered: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.delivered = set(delivered)


class FeedConfigError(ValueError):
    pass


class FeedFailed(Exception):
    """A sink failed, or a record could not be given its place: the step stays owed and is retried
    (bot/delivery/handlers/audit_feed.py makes it the engine's DeliveryFailed)."""


class Sink(Protocol):
    name: str  # one per kind: "stdout", "file", "s3", "eventbridge" (recorded in `audit_feed_sent`)

    def send(self, records: Sequence[Record], *, retry: bool) -> set[str]:
        """Deliver `records` in order; return the uids delivered. Raise SinkError (with what was
        delivered) when some are not. `retry`: an earlier attempt may have delivered some already."""
        ...

    def check(self) -> list[str]:
        """Problems found at start-up (one sentence each; empty: fine)."""
        ...


def uid_of(record: Record) -> str:
    return str(record["metadata"]["uid"])


def step_of(record: Record) -> str:
    return str(record["unmapped"]["breakglass"]["step"])


def line_of(record: Record) -> bytes:
    return canonical(record) + b"\n"


def record_day(record: Record) -> datetime:
    return datetime.fromtimestamp(record["time"] / 1000, tz=UTC)


# -- the sinks ----------------------------------------------------------------------------------------


@dataclass
class StreamSink:
    """JSON lines on a stream (standard output)."""

    stream: Callable[[], IO[str]] = lambda: sys.stdout
    name: str = "stdout"

    def send(self, records: Sequence[Record], *, retry: bool) -> set[str]:
        out = self.stream()
        out.write("".join(line_of(r).decode() for r in records))
        out.flush()
        return {uid_of(r) for r in records}

    def check(self) -> list[str]:
        return []


@dataclass
class FileSink:
    """JSON lines appended to a file: one `write` per line (O_APPEND), then fsync."""

    path: Path
    name: str = "file"

    def _tail(self) -> bytes:
        try:
            with self.path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - TAIL))
                return f.read()
        except FileNotFoundError:
            return b""

    def send(self, records: Sequence[Record], *, retry: bool) -> set[str]:
        tail = self._tail() if retry else b""
        done: set[str] = set()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            raise SinkError(f"cannot open {self.path}: {exc.strerror}") from exc
        try:
            for record in records:
                if f'"uid":{json.dumps(uid_of(record))}'.encode() not in tail:
                    os.write(fd, line_of(record))
                done.add(uid_of(record))
            os.fsync(fd)
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        return done

    def check(self) -> list[str]:
        if not self.path.parent.is_dir():
            return [f"audit feed file {self.path}: its directory does not exist"]
        return []


def s3_key(prefix: str, record: Record) -> str:
    """`<prefix>/year=YYYY/month=MM/day=DD/<uid>.json`, dated by the record's time (UTC)."""
    day = record_day(record)
    head = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return f"{head}year={day:%Y}/month={day:%m}/day={day:%d}/{uid_of(record)}.json"


def _aws_client(service: Literal["s3", "events"]) -> Any:
    """A client from the standard AWS environment (AWS_REGION, AWS_ENDPOINT_URL_<SERVICE>, keys), with
    bounded timeouts: a slow sink fails the send, which stays owed, well inside a delivery's lease."""
    from botocore.config import Config

    from store.dynamodb import aws_region, aws_session

    session = aws_session()  # the process's one boto3 session
    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=5)
    return session.client(service, region_name=aws_region(session), config=config)


def _make_client(factory: Callable[[], Any] | None, service: Literal["s3", "events"]) -> Any:
    """The sink's client: from its factory (tests), else from the AWS environment."""
    return factory() if factory is not None else _aws_client(service)


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


@dataclass
class S3Sink:
    """One object per record, never overwritten (`If-None-Match: *`)."""

    bucket: str
    prefix: str
    object_lock: ObjectLock = "recommended"
    client_factory: Callable[[], S3Client] | None = None
    name: str = "s3"
    _client: S3Client | None = field(default=None, repr=False)

    @property
    def client(self) -> S3Client:
        self._client = self._client or _make_client(self.client_factory, "s3")
        return self._client

    def key(self, record: Record) -> str:
        return s3_key(self.prefix, record)

    def send(self, records: Sequence[Record], *, retry: bool) -> set[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        done: set[str] = set()
        for record in records:
            key, body = self.key(record), line_of(record)
            try:
                try:
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=body,
                        ContentType="application/json",
                        IfNoneMatch="*",
                        ChecksumAlgorithm="SHA256",  # Object Lock buckets need an integrity checksum
                    )
                except ClientError as exc:
                    if _code(exc) not in ("PreconditionFailed", "412"):
                        raise
                    self._already_there(key, body)
            except (BotoCoreError, ClientError) as exc:
                raise SinkError(f"s3://{self.bucket}/{key}: {_code(exc) or exc}", done) from exc
            done.add(uid_of(record))
        return done

    def _already_there(self, key: str, body: bytes) -> None:
        """A conditional put found the key taken: an earlier attempt wrote it (the same record), or
        someone wrote another object there, which is reported (verify-audit reports it too)."""
        existing = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        if existing != body:
            log.error(
                "audit feed: s3://%s/%s already holds a different record; it was not overwritten",
                self.bucket,
                key,
                extra={"action": "audit_feed", "outcome": "conflict"},
            )

    def check(self) -> list[str]:
        """Object Lock in compliance mode with a default retention, on this bucket."""
        if self.object_lock == "off":
            return []
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) != "ObjectLockConfigurationNotFoundError":
                return [
                    f"audit feed bucket {self.bucket}: cannot read its Object Lock setting ({_code(exc)})"
                ]
            config = {}  # type: ignore[typeddict-item]
        except BotoCoreError as exc:
            return [f"audit feed bucket {self.bucket}: cannot read its Object Lock setting ({exc})"]
        lock = config.get("ObjectLockConfiguration", {})
        retention = lock.get("Rule", {}).get("DefaultRetention", {})
        problem = None
        if lock.get("ObjectLockEnabled") != "Enabled":
            problem = (
                f"audit feed bucket {self.bucket} has no Object Lock: its records can be changed or deleted "
                "(create the bucket with Object Lock and a COMPLIANCE default retention)"
            )
        elif retention.get("Mode") != "COMPLIANCE":
            mode = retention.get("Mode") or "no default retention"
            problem = (
                f"audit feed bucket {self.bucket} has Object Lock but not in compliance mode ({mode}): "
                "set a COMPLIANCE default retention so nobody can change or delete a record"
            )
        if problem and self.object_lock == "required":
            raise FeedConfigError(f"{problem}; BREAKGLASS_AUDIT_FEED_OBJECT_LOCK=required refuses to start")
        return [problem] if problem else []


@dataclass
class EventBridgeSink:
    """`PutEvents` on a bus: source `breakglass`, detail-type `breakglass.<step>`, the record as detail."""

    bus: str
    client_factory: Callable[[], EventBridgeClient] | None = None
    name: str = "eventbridge"
    _client: EventBridgeClient | None = field(default=None, repr=False)

    @property
    def client(self) -> EventBridgeClient:
        self._client = self._client or _make_client(self.client_factory, "events")
        return self._client

    def send(self, records: Sequence[Record], *, retry: bool) -> set[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        done: set[str] = set()
        for start in range(0, len(records), EVENTBRIDGE_BATCH):
            batch = records[start : start + EVENTBRIDGE_BATCH]
            try:
                response = self.client.put_events(
                    Entries=[
                        {
                            "Source": SOURCE,
                            "DetailType": f"breakglass.{step_of(r)}",
                            "Detail": canonical(r).decode(),
                            "EventBusName": self.bus,
                            "Time": record_day(r),
                            "Resources": [],
                        }
                        for r in batch
                    ]
                )
            except (BotoCoreError, ClientError) as exc:
                raise SinkError(f"EventBridge bus {self.bus}: {_code(exc) or exc}", done) from exc
            failed = []
            for record, entry in zip(batch, response.get("Entries", []), strict=False):
                if entry.get("EventId"):
                    done.add(uid_of(record))
                else:
                    failed.append(f"{uid_of(record)}: {entry.get('ErrorCode')}")
            if failed or len(response.get("Entries", [])) < len(batch):
                raise SinkError(f"EventBridge bus {self.bus} refused {', '.join(failed) or 'entries'}", done)
        return done

    def check(self) -> list[str]:
        return []


def read_s3(url: str, client: S3Client | None = None) -> tuple[list[str], list[str]]:
    """The records an S3 sink holds under `s3://bucket/prefix` (one JSON line each, in key order), and
    problems only the bucket shows: an object whose key is not the one its record's uid and day give
    (moved or copied there), an object that is not one JSON record."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    s3 = client or _aws_client("s3")
    lines: list[str] = []
    problems: list[str] = []
    head = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=head):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8", "replace")
                try:
                    record = json.loads(text)
                    expected = s3_key(prefix, record)
                except (ValueError, KeyError, TypeError):
                    problems.append(f"s3://{bucket}/{key}: not a breakglass OCSF record")
                    continue
                if key != expected:
                    problems.append(f"s3://{bucket}/{key}: holds {uid_of(record)}, whose key is {expected}")
                lines.append(text.strip())
    except (BotoCoreError, ClientError) as exc:
        raise FeedConfigError(f"cannot read s3://{bucket}/{head}: {_code(exc) or exc}") from exc
    return lines, problems


# -- configuration ------------------------------------------------------------------------------------


def parse_sinks(spec: str | None, *, object_lock: ObjectLock = "recommended") -> list[Sink]:
    """The sinks `BREAKGLASS_AUDIT_FEED` names (FeedConfigError saying what is wrong)."""
    sinks: list[Sink] = []
    for raw in (spec or "").split(","):
        item = raw.strip()
        if not item:
            continue
        sink: Sink
        if item == "stdout":
            sink = StreamSink()
        elif item.startswith("file:"):
            path = item.removeprefix("file:").removeprefix("//")
            if not path:
                raise FeedConfigError(
                    f"{item!r}: give the file's path, e.g. file:/var/log/breakglass/audit.log"
                )
            sink = FileSink(Path(path))
        elif item.startswith("s3://"):
            bucket, _, prefix = item.removeprefix("s3://").partition("/")
            if not bucket:
                raise FeedConfigError(f"{item!r}: give the bucket, e.g. s3://my-audit-bucket/breakglass")
            sink = S3Sink(bucket, prefix, object_lock=object_lock)
        elif item.startswith("eventbridge://"):
            bus = item.removeprefix("eventbridge://").strip("/")
            if not bus:
                raise FeedConfigError(f"{item!r}: give the event bus, e.g. eventbridge://default")
            sink = EventBridgeSink(bus)
        else:
            raise FeedConfigError(
                f"{item!r} is not a sink: use stdout, file:PATH, s3://BUCKET/PREFIX or eventbridge://BUS"
            )
        if any(s.name == sink.name for s in sinks):
            raise FeedConfigError(f"{item!r}: at most one {sink.name} sink")
        sinks.append(sink)
    return sinks


# -- delivery -----------------------------------------------------------------------------------------


def mark(sink: Sink, record: Record) -> str:
    return f"{sink.name}:{step_of(record)}"


@dataclass
class AuditFeed:
    """What the `audit_feed` handler depends on: the sinks and the store (to record what each has)."""

    store: Store
    sinks: Sequence[Sink] = ()
    # Told the uids of the notices just stored (`add_notices`), so they are delivered now rather than at the
    # next sweep (bot/delivery/prompt_notices.py, wired in bot.app); None: the sweep delivers them.
    on_stored: Callable[[list[str]], None] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.sinks)

    def pending(self, event: BreakGlassEvent) -> dict[str, list[Record]]:
        """Per sink, the event's records it does not have yet."""
        records = event_records(event)
        sent = set(event.audit_feed_sent)
        out = {s.name: [r for r in records if mark(s, r) not in sent] for s in self.sinks}
        return {name: missing for name, missing in out.items() if missing}

    def owe(self, event: BreakGlassEvent) -> BreakGlassEvent:
        """The event owing an `audit_feed` step if a sink lacks one of its records (for the pipeline's
        recording write: owed before the outbox can empty, so never lost)."""
        if not self.sinks or event.owes(OutboxKind.AUDIT_FEED) or not self.pending(event):
            return event
        return event.with_outbox(OutboxKind.AUDIT_FEED)

    def record_sent(self, event_id: str, marks: Iterable[str]) -> None:
        new = tuple(marks)

        def change(ev: BreakGlassEvent) -> BreakGlassEvent | None:
            missing = tuple(m for m in new if m not in ev.audit_feed_sent)
            return ev.updated(audit_feed_sent=(*ev.audit_feed_sent, *missing)) if missing else None

        mutate(self.store, event_id, change)

    # -- notices (bot/audit_feed/notices.py): refusals, which belong to no event ----------------------

    def refused(self, now: datetime, request: InvokeRequest, kind: RefusalKind, message: str) -> None:
        """A refused invocation (`BreakGlassService.on_refused`): stored as a notice owed to the sinks
        (nothing when the feed has none). A store that cannot take it is logged (the refusal stands)."""
        if not self.sinks:
            return
        notice = refusal_notice(
            now=now,
            kind=kind,
            slack_user_id=request.user_id,
            profile=(request.profile or "").strip()[:256] or None,
            reason_code=(request.reason or "").strip()[:64] or None,
            message=message,
            request_id=request.request_id,
            attempt=json.dumps(
                [request.profile, request.reason, request.justification, request.duration, request.incident]
            ),
        )
        self.add_notices([notice])

    def add_notices(self, notices: Iterable[Notice]) -> None:
        """Store notices owed to the sinks (nothing when the feed has none; a store that cannot take one
        is logged: the fact itself is also in the log line of what happened)."""
        if not self.sinks:
            return
        stored: list[str] = []
        for notice in notices:
            try:
                if self.store.add_notice(notice):
                    stored.append(notice.uid)
            except StoreError as exc:
                log.error(
                    "audit feed: could not store notice %s: %s",
                    notice.uid,
                    exc,
                    extra={"action": "audit_feed", "outcome": "lost"},
                )
        if stored and self.on_stored is not None:
            try:  # stored, so owed: whatever happens to the prompt delivery, the sweep still delivers them
                self.on_stored(stored)
            except Exception:
                log.exception(
                    "audit feed: prompt delivery of notices not started; the sweep will deliver them"
                )

    def repaired(self, report: ReconcileReport | None) -> None:
        """The drift check's repairs (bot/delivery/handlers/drift.reconcile), one notice each."""
        if report is not None:
            self.add_notices(drift_notices(report))

    def channel(
        self, kind: Literal["broken", "recovered"], channel: str, error: str, since: datetime, now: datetime
    ) -> None:
        """The audit channel broke, or works again (bot.delivery.audit_channels.AuditChannels)."""
        self.add_notices([channel_notice(kind, channel, error, since, now)])

    def deliver_notices(self, now: datetime, *, limit: int = 100, uids: Iterable[str] | None = None) -> int:
        """Send owed notices to the sinks that lack them, each under a named claim (one replica, or one
        thread, at a time: the sweep and a prompt delivery never send one twice), recording each sink as it
        accepts. `uids`: only those notices (a prompt delivery of the ones just stored); default: every
        owed notice, oldest first (the sweep). Returns the notices delivered to every sink now."""
        if not self.sinks:
            return 0
        if uids is None:
            notices = self.store.list_notices(limit=limit)
        else:
            notices = [n for uid in uids if (n := self.store.get_notice(uid)) is not None and n.owed]
        return sum(self._deliver_notice(notice, now) for notice in notices)

    def _deliver_notice(self, notice: Notice, now: datetime) -> bool:
        """One notice to every sink that lacks it, under its claim. True: every sink has it now."""
        claim = f"audit-notice:{notice.uid}"
        if not self.store.claim(claim, now=now, hold=NOTICE_HOLD):
            return False  # another replica (or thread) is sending it
        try:
            current = self.store.get_notice(notice.uid) or notice
            if not current.owed:
                return False  # delivered by whoever held the claim before
            try:
                record, sent = self.seal(notice_record(current)), list(current.sent)
            except FeedFailed as exc:
                log.warning("%s (will retry)", exc, extra={"action": "audit_feed", "outcome": "retry"})
                return False
            for sink in self.sinks:
                if sink.name in sent:
                    continue
                try:
                    if uid_of(record) in sink.send([record], retry=True):
                        sent.append(sink.name)
                        self.store.update_notice(current.model_copy(update={"sent": tuple(sent)}))
                except SinkError as exc:
                    log.warning(
                        "audit feed: %s: %s (notice %s, will retry)",
                        sink.name,
                        exc,
                        notice.uid,
                        extra={"action": "audit_feed", "outcome": "retry"},
                    )
            if not all(sink.name in sent for sink in self.sinks):
                return False
            self.store.update_notice(current.model_copy(update={"sent": tuple(sent), "owed": False}))
            return True
        finally:
            self.store.finish_claim(claim, until=now)  # released: the next sweep retries what is left

    def seal(self, record: Record) -> Record:
        """The record with its place in its day's chain (taken now, or the one it has)."""
        day = record_day(record).date().isoformat()

        def digest_of(seq: int, previous: str) -> str:
            return day_digest(with_day(record, day, seq, previous))

        try:
            link = self.store.link_day(day, uid_of(record), digest_of)
        except StoreError as exc:
            raise FeedFailed(
                f"audit feed: cannot place {uid_of(record)} in the chain of {day}: {exc}"
            ) from exc
        return with_day(record, day, link.seq, link.previous)

    def check(self) -> list[str]:
        """Problems of the sinks found at start-up, each logged as a warning (FeedConfigError: refused)."""
        problems = [problem for sink in self.sinks for problem in sink.check()]
        for problem in problems:
            log.warning("%s", problem, extra={"action": "audit_feed", "outcome": "check"})
        return problems


def make_feed(store: Store, spec: str | None, *, object_lock: ObjectLock = "recommended") -> AuditFeed:
    """The feed `BREAKGLASS_AUDIT_FEED` configures, checked (FeedConfigError: it must not start)."""
    feed = AuditFeed(store, parse_sinks(spec, object_lock=object_lock))
    feed.check()
    return feed


def deliver(feed: AuditFeed, event: BreakGlassEvent) -> dict[str, Any]:
    """The `audit_feed` step (bot/delivery/handlers/audit_feed.py): every record of `event` to every sink that lacks it, recorded per sink as
    it is accepted, each first given its place in its day's chain (the same place on every retry). Raises
    FeedFailed (the step stays owed, retried with backoff) if a sink failed."""
    failures: list[str] = []
    pending = feed.pending(event)
    sealed = {uid_of(r): feed.seal(r) for records in pending.values() for r in records}
    pending = {name: [sealed[uid_of(r)] for r in records] for name, records in pending.items()}
    for sink in feed.sinks:
        records = pending.get(sink.name)
        if not records:
            continue
        try:
            done = sink.send(records, retry=event.outbox_attempts > 1)
        except SinkError as exc:
            done = exc.delivered
            failures.append(f"{sink.name}: {exc}")
        if done:
            feed.record_sent(event.id, [mark(sink, r) for r in records if uid_of(r) in done])
    if failures:
        log.warning(
            "audit feed: %s",
            "; ".join(failures),
            extra={"event_id": event.id, "action": "audit_feed", "outcome": "retry"},
        )
        raise FeedFailed("audit feed sink failed: " + "; ".join(failures))
    return {}
