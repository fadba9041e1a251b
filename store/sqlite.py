"""SQLite store: the embedded default. One file, WAL mode, safe across threads and processes.

`create` is one `BEGIN IMMEDIATE` transaction: the rate limits (cooldown, per person, per profile,
escalation), the stacking check (per invoker and per Slack user) and the insert run under SQLite's one
write lock, so they hold against every other writer on the file, a thread of this process or another
process. The insert itself is refused by a unique index when its `request_id` (a modal submission's view
id, a slash command's trigger id) already created an event (`DuplicateRequest`).

`extend` is one `BEGIN IMMEDIATE` transaction too: the event is read under the write lock, the extension
decided (its bounds, then the rate limits, exactly as for `create`: it is one more entry in the windows),
the event updated conditionally on the version read and the extension's window entry inserted into the
`extensions` table (its time, the event's invoker, Slack user and profile), which the window counts of
`create` and `extend` read next to the events' creation times. Every other write is a single SQL
statement, conditional on the version, status and claim it was computed from. Every query is served by an
index that makes it independent of history.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
    StoreError,
    StoreNotConfigured,
    StoreUnavailable,
)
from store.limits import NO_LIMITS, Counting, Limits, check_cooldown, decide
from store.model import BreakGlassEvent, Status, with_version
from store.notices import DayLink, DigestOf, Notice
from store.tasks import OwedTask, TaskKind
from store.timeutil import format_ts, parse_ts

# 2: slack_user_id column (limits and stacking per Slack user); 3: request_id (one event each);
# 4: the extensions table (extensions count toward the rate limits)
SCHEMA_VERSION = 4
_ATTEMPTS = 8

_TABLES = """
CREATE TABLE IF NOT EXISTS events (
    id             TEXT PRIMARY KEY,
    invoker        TEXT NOT NULL,
    profile        TEXT NOT NULL,
    status         TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    ended_at       TEXT,
    owed           INTEGER NOT NULL DEFAULT 0,
    outbox_next_at TEXT,
    unreviewed     INTEGER NOT NULL DEFAULT 0,
    version        INTEGER NOT NULL,
    data           TEXT NOT NULL,
    slack_user_id  TEXT,
    request_id     TEXT
);
CREATE TABLE IF NOT EXISTS claims (
    name  TEXT PRIMARY KEY,
    until TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS day_chain (
    day      TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    uid      TEXT NOT NULL UNIQUE,
    previous TEXT NOT NULL,
    digest   TEXT NOT NULL,
    PRIMARY KEY (day, seq)
);
CREATE TABLE IF NOT EXISTS notices (
    uid   TEXT PRIMARY KEY,
    at    TEXT NOT NULL,
    owed  INTEGER NOT NULL,
    data  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    name    TEXT PRIMARY KEY,
    kind    TEXT NOT NULL,
    payload TEXT NOT NULL,
    due     TEXT  -- NULL once finished (kept: a finished task is never owed again)
);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (due, name);
"""
# One row per extension: its entry in the rate-limit windows (`at` fixed-width, like every time).
_EXTENSIONS = """
CREATE TABLE IF NOT EXISTS extensions (
    event_id       TEXT NOT NULL,
    at             TEXT NOT NULL,
    invoker        TEXT NOT NULL,
    slack_user_id  TEXT,
    profile        TEXT NOT NULL,
    PRIMARY KEY (event_id, at)
)
"""

# Every query of the store has an index that makes its cost independent of history: the claim checks
# inside `create` read only active rows (partial indexes), the last event of a person on a profile is
# the first entry of its own index, and the window counts read only the window's rows.
_INDEXES = """
DROP INDEX IF EXISTS events_invoker_profile;
CREATE INDEX IF NOT EXISTS events_invoker ON events (invoker, created_at, id);
CREATE INDEX IF NOT EXISTS events_profile ON events (profile, created_at, id);
CREATE INDEX IF NOT EXISTS events_status ON events (status, created_at, id);
CREATE INDEX IF NOT EXISTS events_slack_user ON events (slack_user_id, created_at) WHERE slack_user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_last_invoker ON events (invoker, profile, created_at, id);
CREATE INDEX IF NOT EXISTS events_last_slack_user ON events (slack_user_id, profile, created_at, id)
    WHERE slack_user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_active_invoker ON events (invoker, profile, expires_at) WHERE status = 'active';
CREATE INDEX IF NOT EXISTS events_active_slack_user ON events (slack_user_id, profile, expires_at)
    WHERE status = 'active' AND slack_user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_owed ON events (outbox_next_at) WHERE owed = 1;
CREATE INDEX IF NOT EXISTS events_unreviewed ON events (ended_at, id) WHERE unreviewed = 1;
CREATE INDEX IF NOT EXISTS notices_owed ON notices (at, uid) WHERE owed = 1;
CREATE UNIQUE INDEX IF NOT EXISTS events_request ON events (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS extensions_invoker ON extensions (invoker, at);
CREATE INDEX IF NOT EXISTS extensions_slack_user ON extensions (slack_user_id, at) WHERE slack_user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS extensions_profile ON extensions (profile, at);
"""

_COLUMNS = (
    "id, invoker, profile, status, created_at, expires_at, ended_at, owed, outbox_next_at, unreviewed, "
    "version, data, slack_user_id"
)
_PLACEHOLDERS = ", ".join("?" * len(_COLUMNS.split(",")))
# A create also writes request_id, which nothing updates afterwards (the unique index: one event per request).
_INSERT_COLUMNS = _COLUMNS + ", request_id"
_INSERT_PLACEHOLDERS = _PLACEHOLDERS + ", ?"
_SUFFIX = {"invoker": "invoker", "slack_user_id": "slack_user"}  # identity column -> index name suffix
# The entries of one identity's (or profile's) rate-limit window: its events' creations and extensions.
_WINDOW = {
    column: f"SELECT created_at FROM events INDEXED BY events_{index} WHERE {column} = ? AND created_at > ? "  # noqa: S608 - constant names
    f"UNION ALL SELECT at FROM extensions INDEXED BY extensions_{index} WHERE {column} = ? AND at > ?"
    for column, index in (("invoker", "invoker"), ("slack_user_id", "slack_user"), ("profile", "profile"))
}


def _row(event: BreakGlassEvent) -> tuple[Any, ...]:
    return (
        event.id,
        event.invoker,
        event.profile,
        event.status.value,
        format_ts(event.created_at),
        format_ts(event.expires_at),
        format_ts(event.ended_at) if event.ended_at else None,
        1 if event.outbox else 0,
        format_ts(event.outbox_due_at) if event.outbox_due_at else None,  # next attempt, entries' not_before
        1 if event.status.ended and event.reviewed_at is None else 0,
        event.version,
        event.model_dump_json(),
        event.slack_user_id,
    )


def _link(row: Any) -> DayLink:
    return DayLink(day=row[0], seq=int(row[1]), uid=row[2], previous=row[3], digest=row[4])


def _event(data: str) -> BreakGlassEvent:
    return BreakGlassEvent.model_validate_json(data)


def _position(cursor: str, *keys: str) -> list[str]:
    """The cursor's values for `keys` (exactly those keys, all strings), or InvalidCursor."""
    position = decode_cursor(cursor)
    if set(position) != set(keys) or not all(isinstance(position[k], str) for k in keys):
        raise InvalidCursor(f"invalid pagination cursor {cursor!r}")
    return [position[k] for k in keys]


class SQLiteStore(TransitionStore):
    """`Store` on one SQLite file. `path` may be ':memory:' only for single-connection use in tests."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0, create: bool = True) -> None:
        """`create=False` (read-only commands): a missing file raises StoreNotConfigured, nothing is created."""
        self.path = str(path)
        if not create and self.path != ":memory:" and not Path(self.path).expanduser().is_file():
            raise StoreNotConfigured(
                f"SQLite store {self.path} not found (no such file): check --store / BREAKGLASS_STORE "
                "and the working directory"
            )
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        if self.path != ":memory:":
            Path(self.path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        try:
            self._initialise(self._conn())
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite store {self.path}: {exc}") from exc

    def _initialise(self, conn: sqlite3.Connection) -> None:
        # Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is locked"
        # at once (without the busy timeout) when another process is opening the same new file: retry.
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
        # The schema in one write transaction: BEGIN IMMEDIATE waits for the write lock (busy timeout)
        # instead of upgrading a read lock mid-statement, which SQLite refuses to wait for.
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _TABLES.split(";"):
                if statement.strip():
                    conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            conn.execute(_EXTENSIONS)
            if "extensions" not in tables:  # before schema 4: the extensions already made count too
                self._backfill_extensions(conn)
            if "slack_user_id" not in columns:  # a schema 1 file: add the column, filled from the data
                conn.execute("ALTER TABLE events ADD COLUMN slack_user_id TEXT")
                conn.execute("UPDATE events SET slack_user_id = json_extract(data, '$.slack_user_id')")
            if "request_id" not in columns:  # schema 1 or 2: the column from the data; a request that
                # already created several events (replays before schema 3) keeps the first one only
                conn.execute("ALTER TABLE events ADD COLUMN request_id TEXT")
                conn.execute("UPDATE events SET request_id = json_extract(data, '$.request_id')")
                conn.execute(
                    "UPDATE events SET request_id = NULL WHERE request_id IS NOT NULL AND rowid NOT IN "
                    "(SELECT MIN(rowid) FROM events WHERE request_id IS NOT NULL GROUP BY request_id)"
                )
            for statement in _INDEXES.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _backfill_extensions(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute(
            "SELECT data FROM events WHERE json_array_length(data, '$.extensions') > 0"
        ).fetchall()
        for (data,) in rows:
            try:
                event = _event(data)
            except ValueError:  # a row no version can read: nothing of it can be counted (or shown)
                continue
            for ext in event.extensions:
                self._insert_extension(conn, event, ext.at)

    def _insert_extension(self, conn: sqlite3.Connection, event: BreakGlassEvent, at: datetime) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO extensions (event_id, at, invoker, slack_user_id, profile) "
            "VALUES (?, ?, ?, ?, ?)",
            (event.id, format_ts(at), event.invoker, event.slack_user_id, event.profile),
        )

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- connections --------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path,
                    timeout=self._busy_timeout,
                    isolation_level=None,  # autocommit; transactions are explicit
                    check_same_thread=False,
                )
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open SQLite store {self.path}: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _execute_write(self, sql: str, params: Sequence[Any]) -> int:
        """One write statement (atomic on its own in autocommit mode); returns the row count.

        Threads of this process queue on a lock rather than meeting SQLite's busy handler, which sleeps
        in growing steps (up to 100 ms) while another connection holds the write lock: that turned 20
        concurrent one-millisecond writes into second-long tails. Other processes still meet the busy
        handler (busy_timeout). One statement per write also means one round trip through the GIL while
        the lock is held.
        """
        with self._write_lock:
            try:
                return self._conn().execute(sql, params).rowcount
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:  # locked past busy_timeout, disk full, I/O error: nothing written
                raise StoreUnavailable(f"SQLite store {self.path} is busy or unwritable: {exc}") from exc

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row | tuple[Any, ...]]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite query failed: {exc}") from exc

    def disconnect(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def ping(self, *, write: bool = False) -> None:
        self._query("SELECT 1")
        if write:  # a row in the claims table, rewritten each time: fails when the file cannot grow
            self._execute_write(
                "INSERT INTO claims (name, until) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET until = excluded.until",
                (HEARTBEAT_CLAIM, format_ts(datetime.now(UTC))),
            )

    def claim(self, name: str, *, now: datetime, hold: timedelta) -> bool:
        taken = self._execute_write(
            "INSERT INTO claims (name, until) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET until = excluded.until WHERE claims.until <= ?",
            (name, format_ts(now + hold), format_ts(now)),
        )
        return taken == 1

    def renew_claim(self, name: str, *, held: datetime, until: datetime) -> bool:
        renewed = self._execute_write(
            "UPDATE claims SET until = ? WHERE name = ? AND until = ?",
            (format_ts(until), name, format_ts(held)),
        )
        return renewed == 1

    def finish_claim(self, name: str, *, until: datetime) -> None:
        self._execute_write(
            "INSERT INTO claims (name, until) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET until = excluded.until",
            (name, format_ts(until)),
        )

    def owe_task(self, task: OwedTask) -> None:
        self._execute_write(
            "INSERT INTO tasks (name, kind, payload, due) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO NOTHING",
            (task.name, task.kind.value, task.payload, format_ts(task.due)),
        )

    def list_tasks(self, *, now: datetime, limit: int = 100) -> list[OwedTask]:
        rows = self._query(
            "SELECT name, kind, payload, due FROM tasks WHERE due <= ? ORDER BY due, name LIMIT ?",
            (format_ts(now), check_limit(limit)),
        )
        return [OwedTask(name=r[0], kind=TaskKind(r[1]), payload=r[2], due=parse_ts(r[3])) for r in rows]

    def finish_task(self, name: str, *, now: datetime) -> None:
        self._execute_write("UPDATE tasks SET due = NULL WHERE name = ?", (name,))

    # -- notices (store/notices.py) -------------------------------------------------------------

    def add_notice(self, notice: Notice) -> bool:
        return (
            self._execute_write(
                "INSERT INTO notices (uid, at, owed, data) VALUES (?, ?, ?, ?) ON CONFLICT(uid) DO NOTHING",
                (notice.uid, format_ts(notice.at), int(notice.owed), notice.model_dump_json()),
            )
            == 1
        )

    def list_notices(self, *, limit: int = 100) -> list[Notice]:
        rows = self._query(
            "SELECT data FROM notices WHERE owed = 1 ORDER BY at, uid LIMIT ?", (check_limit(limit),)
        )
        return [Notice.model_validate_json(r[0]) for r in rows]

    def get_notice(self, uid: str) -> Notice | None:
        rows = self._query("SELECT data FROM notices WHERE uid = ?", (uid,))
        return Notice.model_validate_json(rows[0][0]) if rows else None

    def link_day(self, day: str, uid: str, digest_of: DigestOf) -> DayLink:
        for _ in range(_ATTEMPTS * 4):
            rows = self._query("SELECT day, seq, uid, previous, digest FROM day_chain WHERE uid = ?", (uid,))
            if rows:
                return _link(rows[0])
            head = self._query(
                "SELECT seq, digest FROM day_chain WHERE day = ? ORDER BY seq DESC LIMIT 1", (day,)
            )
            seq, previous = (int(head[0][0]) + 1, str(head[0][1])) if head else (1, "")
            link = DayLink(day=day, seq=seq, uid=uid, previous=previous, digest=digest_of(seq, previous))
            try:  # the primary key (day, seq) refuses a place taken meanwhile; the uid, a second place
                self._execute_write(
                    "INSERT INTO day_chain (day, seq, uid, previous, digest) VALUES (?, ?, ?, ?, ?)",
                    (day, seq, uid, previous, link.digest),
                )
            except sqlite3.IntegrityError:
                continue
            return link
        raise ConcurrentModification(uid, f"too many concurrent appends to the chain of {day}")

    def day_chain(self, day: str) -> list[DayLink]:
        rows = self._query(
            "SELECT day, seq, uid, previous, digest FROM day_chain WHERE day = ? ORDER BY seq", (day,)
        )
        return [_link(r) for r in rows]

    def update_notice(self, notice: Notice) -> None:
        self._execute_write(
            "UPDATE notices SET owed = ?, data = ? WHERE uid = ?",
            (int(notice.owed), notice.model_dump_json(), notice.uid),
        )

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
        if not (limits.cooldown or limits.counts_person or limits.counts_profile):
            return self._create_unlimited(event)

        # One BEGIN IMMEDIATE transaction: the limits, the stacking check and the insert see and change
        # the file under SQLite's one write lock, against every other thread and process.
        def write(conn: sqlite3.Connection) -> BreakGlassEvent:
            decided = self._decide(conn, event, limits, escalate)
            conn.execute(
                f"INSERT INTO events ({_INSERT_COLUMNS}) VALUES ({_INSERT_PLACEHOLDERS})",  # noqa: S608 - constant columns; values are bound
                (*_row(decided), decided.request_id),
            )
            return decided

        return self._in_transaction(write, conflict=lambda exc: self._conflict(event, exc))

    def _in_transaction(
        self,
        write: Callable[[sqlite3.Connection], BreakGlassEvent],
        *,
        conflict: Callable[[sqlite3.IntegrityError], StoreError],
    ) -> BreakGlassEvent:
        """`write` in one BEGIN IMMEDIATE transaction under SQLite's write lock (against every other
        thread and process), committed if it returns, rolled back if it raises."""
        with self._write_lock:
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite store {self.path} is busy or unwritable: {exc}") from exc
            try:
                written = write(conn)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.IntegrityError):
                    raise conflict(exc) from exc
                if isinstance(exc, sqlite3.Error):
                    raise StoreUnavailable(f"SQLite store {self.path} is busy or unwritable: {exc}") from exc
                raise
        return written

    def _create_unlimited(self, event: BreakGlassEvent) -> BreakGlassEvent:
        """Without rate limits the stacking check and the insert are one `INSERT … SELECT … WHERE NOT
        EXISTS` statement: the write lock is held for one statement (one wait for the GIL after it), not
        five (BEGIN, two checks, INSERT, COMMIT). Only a refusal reads, after the lock, to name the blocker."""
        identities = self._identities(event)
        now = format_ts(event.created_at)
        checks = " AND ".join(
            f"NOT EXISTS (SELECT 1 FROM events INDEXED BY events_active_{_SUFFIX[column]} "  # noqa: S608 - constant names
            f"WHERE {column} = ? AND profile = ? AND status = 'active' AND expires_at > ?)"
            for column, _ in identities
        )
        params = [*_row(event), event.request_id]
        for _, value in identities:
            params += [value, event.profile, now]
        sql = f"INSERT INTO events ({_INSERT_COLUMNS}) SELECT {_INSERT_PLACEHOLDERS} WHERE {checks}"
        for _ in range(_ATTEMPTS):
            try:
                if self._execute_write(sql, params) == 1:
                    return event
            except sqlite3.IntegrityError as exc:
                raise self._conflict(event, exc) from exc
            for column, value in identities:
                rows = self._query(
                    f"SELECT data FROM events INDEXED BY events_active_{_SUFFIX[column]} "  # noqa: S608 - constant names
                    f"WHERE {column} = ? AND profile = ? AND status = 'active' AND expires_at > ? "
                    "ORDER BY expires_at DESC LIMIT 1",
                    (value, event.profile, now),
                )
                if rows:
                    raise StackedAccess(_event(rows[0][0]))
            # the blocking event ended between the insert and the read: try again
        raise ConcurrentModification(event.id, f"still conflicting after {_ATTEMPTS} attempts")

    def _conflict(self, event: BreakGlassEvent, exc: sqlite3.IntegrityError) -> StoreError:
        """The insert broke a unique constraint: the request already created an event, or the id is taken."""
        if event.request_id is not None and "request_id" in str(exc):
            rows = self._query("SELECT id FROM events WHERE request_id = ?", (event.request_id,))
            if rows:
                return DuplicateRequest(event.request_id, str(rows[0][0]))
        return ConcurrentModification(event.id, "an event with this id already exists")

    def _identities(self, event: BreakGlassEvent) -> list[tuple[str, str]]:
        """(column, value) of each identity the claims and limits hold for: the invoker and the Slack user."""
        keys = [("invoker", event.invoker)]
        if event.slack_user_id:
            keys.append(("slack_user_id", event.slack_user_id))
        return keys

    def _decide(
        self,
        conn: sqlite3.Connection,
        event: BreakGlassEvent,
        limits: Limits,
        escalate: Callable[[BreakGlassEvent], BreakGlassEvent] | None,
    ) -> BreakGlassEvent:
        """Inside the write transaction: raise LimitReached or StackedAccess, or return the event to insert."""
        now = event.created_at
        identities = self._identities(event)
        suffix = _SUFFIX
        if limits.cooldown:
            ended: list[datetime | None] = []
            for column, value in identities:
                row = conn.execute(
                    f"SELECT status, expires_at, ended_at FROM events INDEXED BY events_last_{suffix[column]} "  # noqa: S608 - constant column names
                    f"WHERE {column} = ? AND profile = ? ORDER BY created_at DESC, id DESC LIMIT 1",
                    (value, event.profile),
                ).fetchone()
                if row is None:
                    continue
                status, expires_at, ended_at = row
                if status == Status.ACTIVE.value and parse_ts(expires_at) > now:
                    continue  # still effective: the stacking check below refuses it
                ended.append(parse_ts(ended_at or expires_at))
            check_cooldown(limits, event.profile, now, ended)
        escalated = self._decide_windows(conn, event, limits, now)
        for column, value in identities:
            row = conn.execute(
                f"SELECT data FROM events INDEXED BY events_active_{suffix[column]} "  # noqa: S608 - constant column names
                f"WHERE {column} = ? AND profile = ? AND status = 'active' AND expires_at > ? "
                "ORDER BY expires_at DESC LIMIT 1",
                (value, event.profile, format_ts(now)),
            ).fetchone()
            if row is not None:
                raise StackedAccess(_event(row[0]))
        if escalated:
            event = escalate(event) if escalate is not None else event.updated(escalated=True)
        return event

    def _decide_windows(
        self, conn: sqlite3.Connection, event: BreakGlassEvent, limits: Limits, now: datetime
    ) -> bool:
        """Inside the write transaction: `decide` the window limits for a new entry at `now` (a creation
        or an extension) of `event`'s person and profile, on their creations and extensions in the window."""
        since = format_ts(now - limits.window)

        def window(column: str, value: str) -> list[datetime]:
            rows = conn.execute(_WINDOW[column], (value, since, value, since)).fetchall()
            return [parse_ts(r[0]) for r in rows]

        person = [window(c, v) for c, v in self._identities(event)] if limits.counts_person else []
        on_profile = window("profile", event.profile) if limits.counts_profile else []
        return decide(limits, event.profile, now, person_times=person, profile_times=on_profile)

    def get(self, event_id: str) -> BreakGlassEvent:
        rows = self._query("SELECT data FROM events WHERE id = ?", (event_id,))
        if not rows:
            raise EventNotFound(event_id)
        return _event(rows[0][0])

    def _replace(self, old: BreakGlassEvent, new: BreakGlassEvent) -> BreakGlassEvent | None:
        """Write `new` over `old` if the row still is `old` (same version, status and claim); None if not."""
        new = with_version(new, old.version + 1)
        updated = self._execute_write(
            f"UPDATE events SET ({_COLUMNS}) = ({_PLACEHOLDERS}) "  # noqa: S608 - constant columns; values are bound
            "WHERE id = ? AND version = ? AND status = ? AND invoker = ? AND profile = ? AND created_at = ? "
            "AND expires_at = ?",
            (
                *_row(new),
                old.id,
                old.version,
                old.status.value,
                old.invoker,
                old.profile,
                format_ts(old.created_at),
                format_ts(old.expires_at),
            ),
        )
        return new if updated == 1 else None

    def _transition(
        self,
        event_id: str,
        apply: Callable[[BreakGlassEvent], BreakGlassEvent],
        known: BreakGlassEvent | None = None,
        *,
        moves_claim: bool = False,  # the claim is the row itself: its expires_at column moves with it
        counting: Counting | None = None,
    ) -> BreakGlassEvent:
        if counting is not None:
            return self._extend(event_id, apply, counting)
        for _ in range(_ATTEMPTS):
            # the caller's copy on the first attempt (the write is conditional on its version), then
            # re-read: a stale copy costs one failed conditional write instead of a read every time
            current = known if known is not None and known.id == event_id else self.get(event_id)
            known = None
            written = self._replace(current, apply(current))  # apply raises InvalidTransition once ended
            if written is not None:
                return written
        raise ConcurrentModification(event_id, f"still conflicting after {_ATTEMPTS} attempts")

    def _extend(
        self, event_id: str, apply: Callable[[BreakGlassEvent], BreakGlassEvent], counting: Counting
    ) -> BreakGlassEvent:
        """An extension in one transaction: read under the write lock, `apply` (its bounds and the seen
        check), the windows decided at its time, then the conditional update and its window entry."""

        def write(conn: sqlite3.Connection) -> BreakGlassEvent:
            row = conn.execute("SELECT data FROM events WHERE id = ?", (event_id,)).fetchone()
            if row is None:
                raise EventNotFound(event_id)
            current = _event(row[0])
            extended = apply(current)  # InvalidTransition (ExtendedMeanwhile) when it cannot be
            at = extended.extensions[-1].at
            if self._decide_windows(conn, current, counting.limits, at):  # LimitReached refuses it
                extended = counting.escalate(extended)
            new = with_version(extended, current.version + 1)
            updated = conn.execute(
                f"UPDATE events SET ({_COLUMNS}) = ({_PLACEHOLDERS}) WHERE id = ? AND version = ?",  # noqa: S608 - constant columns; values are bound
                (*_row(new), current.id, current.version),
            ).rowcount
            if updated != 1:  # cannot happen under the write lock; never write the entry without it
                raise ConcurrentModification(event_id)
            self._insert_extension(conn, new, at)
            return new

        return self._in_transaction(write, conflict=lambda exc: ConcurrentModification(event_id, str(exc)))

    def save(self, event: BreakGlassEvent) -> BreakGlassEvent:
        # `event` carries the version it was read at; the UPDATE applies only if the row is still that
        # version with the same status and claim. Only when it does not do we read, to say why.
        written = self._replace(event, event)
        if written is not None:
            return written
        check_save(self.get(event.id), event)  # EventNotFound, InvalidTransition or ConcurrentModification
        raise ConcurrentModification(event.id)

    # -- reads --------------------------------------------------------------------------------

    def _page(self, where: str, params: Sequence[Any], limit: int, cursor: str | None) -> Page:
        check_limit(limit)
        sql = f"SELECT created_at, id, data FROM events WHERE {where}"  # noqa: S608 - `where` is a constant of this class
        args = list(params)
        if cursor is not None:
            sql += " AND (created_at, id) < (?, ?)"
            args += _position(cursor, "c", "i")
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = self._query(sql, [*args, limit + 1])
        items = [_event(r[2]) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor({"c": last[0], "i": last[1]})
        return Page(items=items, cursor=next_cursor)

    def list_active(self) -> list[BreakGlassEvent]:
        rows = self._query("SELECT data FROM events WHERE status = 'active' ORDER BY created_at, id")
        return [_event(r[0]) for r in rows]

    def list_by_invoker(
        self, invoker: str, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page:
        return self._page("invoker = ?", [invoker], limit, cursor)

    def list_by_profile(
        self, profile: str, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page:
        return self._page("profile = ?", [profile], limit, cursor)

    def list_by_status(
        self, status: Status, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> Page:
        return self._page("status = ?", [Status(status).value], limit, cursor)

    def list_owed(self, *, now: datetime, limit: int = 100) -> list[BreakGlassEvent]:
        rows = self._query(
            "SELECT data FROM events WHERE owed = 1 AND outbox_next_at <= ? ORDER BY outbox_next_at LIMIT ?",
            (format_ts(now), check_limit(limit)),
        )
        return [_event(r[0]) for r in rows]

    def list_unreviewed(self, *, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None) -> Page:
        check_limit(limit)
        sql = "SELECT ended_at, id, data FROM events WHERE unreviewed = 1"
        args: list[Any] = []
        if cursor is not None:
            sql += " AND (ended_at, id) > (?, ?)"
            args += _position(cursor, "e", "i")
        rows = self._query(sql + " ORDER BY ended_at, id LIMIT ?", [*args, limit + 1])
        items = [_event(r[2]) for r in rows[:limit]]
        next_cursor = (
            encode_cursor({"e": rows[limit - 1][0], "i": rows[limit - 1][1]}) if len(rows) > limit else None
        )
        return Page(items=items, cursor=next_cursor)

    def count_by_invoker_since(self, invoker: str, since: datetime) -> int:
        rows = self._query(
            "SELECT COUNT(*) FROM events WHERE invoker = ? AND created_at >= ?", (invoker, format_ts(since))
        )
        return int(rows[0][0])

    def count_by_profile_since(self, profile: str, since: datetime) -> int:
        rows = self._query(
            "SELECT COUNT(*) FROM events WHERE profile = ? AND created_at >= ?", (profile, format_ts(since))
        )
        return int(rows[0][0])

    def last_by_invoker_and_profile(self, invoker: str, profile: str) -> BreakGlassEvent | None:
        rows = self._query(
            "SELECT data FROM events INDEXED BY events_last_invoker WHERE invoker = ? AND profile = ? ORDER BY created_at DESC, id DESC LIMIT 1",
            (invoker, profile),
        )
        return _event(rows[0][0]) if rows else None
