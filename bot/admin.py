"""`breakglass-admin`: operate the store directly, on SQLite or DynamoDB.

breakglass-admin create-table [--update]            create the DynamoDB table (idempotent; --update adds missing indexes)
breakglass-admin list [--status S] [--profile P] [--invoker I] [--since DATE] [--limit N]
breakglass-admin show ID                            every field and the lifecycle timeline
breakglass-admin close ID --reason TEXT --operator NAME
breakglass-admin export --since DATE [--until DATE] --format csv|jsonl|ocsf [--output FILE]
breakglass-admin verify-audit FILE|s3://BUCKET/PREFIX [--since DATE]

`--store URL` (before or after the command; default $BREAKGLASS_STORE, else sqlite:///breakglass.db).
Exit status: 0 ok, 1 not found or refused, 2 usage or configuration error. Messages go to stderr,
data to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import heapq
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, time, timedelta
from typing import IO, Any

from bot.audit_feed import event_records
from bot.audit_feed.sinks import FeedConfigError, read_s3
from bot.audit_feed.verify import verify_feed
from store import (
    DEFAULT_STORE_URL,
    BreakGlassEvent,
    EventNotFound,
    InvalidStoreURL,
    Status,
    Store,
    StoreError,
    StoreNotConfigured,
    is_event_id,
    open_store,
    parse_store_url,
)
from store.base import Page
from store.model import MAX_CLOSE_REASON, OutboxEntry, OutboxKind, validate_free_text
from store.timeutil import format_ts

OK, REFUSED, USAGE = 0, 1, 2
PAGE_SIZE = 200
PROGRESS_EVERY = 1000
DEFAULT_LIST_LIMIT = 50
OPERATOR_PREFIX = "operator:"
_OPERATOR_RE = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")

# The export's columns, in this order, forever: auditors' tooling relies on it. Add new ones at the end.
EXPORT_COLUMNS: tuple[str, ...] = (
    "id",
    "status",
    "profile",
    "invoker",
    "slack_user_id",
    "reason_code",
    "justification",
    "incident",
    "duration_seconds",
    "created_at",
    "expires_at",
    "warned_at",
    "ended_at",
    "closed_by",
    "closed_reason",
    "escalated",
    "reviewed_by",
    "reviewed_at",
    "review_notes",
    "audit_channel",
    "audit_ts",
    "request_id",
    "outbox",
    "updated_at",
    "version",
    "source",
    # the activity digest (issue 15) as counts; JSONL has the whole digest in "activity"
    "activity_status",
    "activity_gathered_at",
    "activity_calls",
    "activity_write_calls",
    "activity_denied_calls",
    "activity_sensitive_calls",
)
JSONL_COLUMNS: tuple[str, ...] = (*EXPORT_COLUMNS, "activity")


class AdminError(Exception):
    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.code = code


def err(message: str) -> None:
    print(message, file=sys.stderr)


# -- parsing ---------------------------------------------------------------------------------------


DATE_FORMAT = "YYYY-MM-DD, midnight UTC, or YYYY-MM-DDTHH:MM[:SS][+HH:MM], UTC without an offset"


def parse_date(text: str) -> datetime:
    """YYYY-MM-DD (midnight UTC) or an ISO 8601 date-time (naive means UTC)."""
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return datetime.combine(datetime.strptime(value, "%Y-%m-%d").date(), time(0), tzinfo=UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+00:00]"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit 2 with usage, as argparse does, but testable
        self.print_usage(sys.stderr)
        raise AdminError(f"{self.prog}: error: {message}", USAGE)


def build_parser() -> argparse.ArgumentParser:
    store_opt = _Parser(add_help=False)
    store_opt.add_argument(
        "--store",
        default=argparse.SUPPRESS,
        help="store URL (default: $BREAKGLASS_STORE, else sqlite:///breakglass.db)",
    )
    parser = _Parser(
        prog="breakglass-admin", description="Administer break-glass events.", parents=[store_opt]
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    table = sub.add_parser("create-table", parents=[store_opt], help="create the DynamoDB table (idempotent)")
    table.add_argument(
        "--update",
        action="store_true",
        help="add the indexes a table made by an older version lacks (one at a time; nothing is deleted)",
    )

    ls = sub.add_parser("list", parents=[store_opt], help="list events, newest first")
    ls.add_argument("--status", choices=[s.value for s in Status])
    ls.add_argument("--profile")
    ls.add_argument("--invoker", help="the invoker's identity, e.g. alice@example.com")
    ls.add_argument(
        "--since",
        type=parse_date,
        metavar="DATE",
        help=f"only events created at or after DATE ({DATE_FORMAT})",
    )
    ls.add_argument("--limit", type=int, default=DEFAULT_LIST_LIMIT, help="at most N rows (default 50)")

    show = sub.add_parser("show", parents=[store_opt], help="every field of one event and its timeline")
    show.add_argument("id")

    close = sub.add_parser("close", parents=[store_opt], help="close an active event, announced as in Slack")
    close.add_argument("id")
    close.add_argument("--reason", required=True)
    close.add_argument("--operator", required=True, help="who is closing (recorded as operator:NAME)")

    extend = sub.add_parser(
        "extend", parents=[store_opt], help="extend an active event, announced as in Slack"
    )
    extend.add_argument("id")
    extend.add_argument("--duration", required=True, help="one of the profile's durations that still fits")
    extend.add_argument("--reason", required=True)
    extend.add_argument("--operator", required=True, help="who is extending (recorded as operator:NAME)")

    export = sub.add_parser("export", parents=[store_opt], help="export events for auditors")
    export.add_argument(
        "--since",
        type=parse_date,
        required=True,
        metavar="DATE",
        help=f"created at or after DATE ({DATE_FORMAT})",
    )
    export.add_argument("--until", type=parse_date, metavar="DATE", help="created before DATE (same format)")
    export.add_argument(
        "--format",
        choices=["csv", "jsonl", "ocsf"],
        required=True,
        help="ocsf: JSON lines, one OCSF record per step of each event (bot/audit_feed)",
    )
    export.add_argument("--output", help="write to FILE instead of stdout")

    verify = sub.add_parser(
        "verify-audit",
        parents=[store_opt],
        help="check an OCSF audit feed file against the store and its chain",
    )
    verify.add_argument(
        "file",
        help="the feed's JSON lines (a file sink, or `export --format ocsf`), or an S3 sink's s3://BUCKET/PREFIX",
    )
    verify.add_argument(
        "--since",
        type=parse_date,
        metavar="DATE",
        help=f"also report store events created since DATE that the feed lacks ({DATE_FORMAT})",
    )
    return parser


def store_url(args: argparse.Namespace) -> str:
    return getattr(args, "store", None) or os.environ.get("BREAKGLASS_STORE") or DEFAULT_STORE_URL


# -- streaming reads ---------------------------------------------------------------------------------


def iter_pages(
    fetch: Callable[..., Page], *, since: datetime | None = None, page_size: int | None = None
) -> Iterator[BreakGlassEvent]:
    """Events of one newest-first listing, page by page; stops at the first one created before `since`."""
    cursor: str | None = None
    while True:
        page = fetch(limit=page_size or PAGE_SIZE, cursor=cursor)
        for event in page.items:
            if since is not None and event.created_at < since:
                return
            yield event
        if page.cursor is None:
            return
        cursor = page.cursor


def iter_all(store: Store, *, since: datetime | None = None) -> Iterator[BreakGlassEvent]:
    """Every event (created >= since), newest first: a merge of the per-status listings.

    Memory holds one page per status plus the ids already emitted (an event whose status changes during
    the read can show up in two listings; it is emitted once, in the state first read).
    """
    streams = [
        iter_pages(lambda status=status, **kw: store.list_by_status(status, **kw), since=since)
        for status in Status
    ]
    seen: set[str] = set()
    for event in heapq.merge(*streams, key=lambda e: (e.created_at, e.id), reverse=True):
        if event.id not in seen:
            seen.add(event.id)
            yield event


def select(
    store: Store,
    *,
    status: str | None = None,
    profile: str | None = None,
    invoker: str | None = None,
    since: datetime | None = None,
) -> Iterator[BreakGlassEvent]:
    """Events matching every filter, newest first, through the most selective index."""
    source: Iterator[BreakGlassEvent]
    if invoker is not None:
        source = iter_pages(lambda **kw: store.list_by_invoker(invoker, **kw), since=since)
    elif profile is not None:
        source = iter_pages(lambda **kw: store.list_by_profile(profile, **kw), since=since)
    elif status is not None:
        source = iter_pages(lambda **kw: store.list_by_status(Status(status), **kw), since=since)
    else:
        source = iter_all(store, since=since)
    for event in source:
        if status is not None and event.status.value != status:
            continue
        if profile is not None and event.profile != profile:
            continue
        if invoker is not None and event.invoker != invoker:
            continue
        yield event


# -- rendering ---------------------------------------------------------------------------------------


def _ts(value: datetime | None) -> str:
    return format_ts(value) if value is not None else ""


def export_row(event: BreakGlassEvent) -> dict[str, Any]:
    """One event as the export's columns (JSON types: strings, ints, bool, null)."""
    return {
        "id": event.id,
        "status": event.status.value,
        "profile": event.profile,
        "invoker": event.invoker,
        "slack_user_id": event.slack_user_id,
        "reason_code": event.reason_code.value,
        "justification": event.justification,
        "incident": event.incident,
        "duration_seconds": int(event.duration.total_seconds()),
        "created_at": _ts(event.created_at),
        "expires_at": _ts(event.expires_at),
        "warned_at": _ts(event.warned_at) or None,
        "ended_at": _ts(event.ended_at) or None,
        "closed_by": event.closed_by,
        "closed_reason": event.closed_reason,
        "escalated": event.escalated,
        "reviewed_by": event.reviewed_by,
        "reviewed_at": _ts(event.reviewed_at) or None,
        "review_notes": event.review_notes,
        "audit_channel": event.audit_channel,
        "audit_ts": event.audit_ts,
        "request_id": event.request_id,
        "outbox": [entry.kind.value for entry in event.outbox],
        "updated_at": _ts(event.updated_at),
        "version": event.version,
        "source": event.source or "breakglass",  # "sentinel": written by Sentinel to a shared table
        **_activity_columns(event),
    }


def _activity_columns(event: BreakGlassEvent) -> dict[str, Any]:
    from bot.evidence import stored_digest

    digest = stored_digest(event)
    return {
        "activity_status": digest.status.value if digest else None,
        "activity_gathered_at": _ts(digest.gathered_at) if digest else None,
        "activity_calls": digest.total_calls if digest else None,
        "activity_write_calls": digest.write_calls if digest else None,
        "activity_denied_calls": digest.denied_calls if digest else None,
        "activity_sensitive_calls": digest.sensitive_calls if digest else None,
        "activity": digest.model_dump(mode="json") if digest else None,
    }


# Cells a spreadsheet would run as a formula (OWASP "CSV injection"): text starting with one of these
# is prefixed with a single quote, so that it is shown as text. Only in CSV; JSONL stays exact.
_FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        value = " ".join(value)
    if isinstance(value, str) and value.startswith(_FORMULA_LEADS):
        return "'" + value
    return str(value)


def _short(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _duration(value: timedelta) -> str:
    from bot.durations import human_duration

    return human_duration(value)  # as Slack shows it


LIST_HEADER = ("ID", "STATUS", "PROFILE", "INVOKER", "CREATED (UTC)", "DURATION", "ENDED (UTC)", "REVIEWED")


def table(rows: Iterable[tuple[str, ...]], header: tuple[str, ...] = LIST_HEADER) -> str:
    rows = [header, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def list_row(event: BreakGlassEvent) -> tuple[str, ...]:
    return (
        event.id,
        event.status.value,
        event.profile,
        event.invoker,
        _short(event.created_at),
        _duration(event.duration),
        _short(event.ended_at),
        event.reviewed_by or ("no" if event.status.ended else "-"),
    )


def timeline(event: BreakGlassEvent) -> list[tuple[datetime, str]]:
    steps = [
        (
            event.created_at,
            f"created by {event.invoker} ({event.slack_user_id}) on {event.profile} for "
            f"{_duration(event.duration)}, expiring {_short(event.expires_at)}",
        )
    ]
    if event.warned_at:
        steps.append((event.warned_at, "expiry warning sent"))
    if event.ended_at:
        if event.status is Status.CLOSED:
            steps.append((event.ended_at, f"closed by {event.closed_by}: {event.closed_reason}"))
        else:
            steps.append((event.ended_at, "expired"))
    if event.reviewed_at:
        steps.append((event.reviewed_at, f"reviewed by {event.reviewed_by}: {event.review_notes}"))
    return sorted(steps, key=lambda step: step[0])


def render_show(event: BreakGlassEvent) -> str:
    lines = []
    data = event.model_dump()
    data["activity"] = "(the activity digest, below)" if event.activity else None
    data["outbox"] = tuple(_outbox_entry(entry) for entry in event.outbox)
    # Whether outbox_next_at is a delivery's lease or a backoff: meaningless without an outbox_next_at
    # (nothing owed, or owed and due at once), where the stored default would read "True".
    if event.outbox_next_at is None:
        data["outbox_leased"] = None
    else:
        data["outbox_leased"] = (
            "lease (a delivery holds it)" if event.outbox_leased else "backoff (retry after)"
        )
    width = max(len(name) for name in data)
    for name, value in data.items():
        if isinstance(value, datetime):
            text = format_ts(value)
        elif isinstance(value, timedelta):
            text = f"{_duration(value)} ({int(value.total_seconds())} s)"
        elif isinstance(value, tuple):
            text = ", ".join(value) if value else "-"
        elif value is None:
            text = "-"
        else:
            text = str(getattr(value, "value", value))
        text = text.replace("\n", "\n" + " " * (width + 2))
        lines.append(f"{name.ljust(width)}  {text}")
    lines += ["", *activity_lines(event)]
    lines += ["", "timeline:"]
    lines += [f"  {_short(when)}  {what}" for when, what in timeline(event)]
    if event.status.ended and event.reviewed_at is None:
        lines.append("  (awaiting security review)")
    return "\n".join(lines)


def _outbox_entry(entry: OutboxEntry) -> str:
    text = f"{entry.kind.value} (v{entry.version})"
    return text + (f" not before {format_ts(entry.not_before)}" if entry.not_before else "")


def activity_lines(event: BreakGlassEvent) -> list[str]:
    """The stored activity digest as plain text (every string in it was made terminal-safe when it was
    gathered: controls and bidi characters are shown as \\uXXXX)."""
    from bot.evidence import stored_digest

    digest = stored_digest(event)
    if digest is None:
        return ["activity digest: none stored"]

    def counts(counter: dict[str, int], dropped: int) -> str:
        shown = ", ".join(f"{key} x{n}" for key, n in counter.items()) or "none"
        return shown + (f" (+{dropped} more)" if dropped else "")

    status = digest.status.value + (f", capped: {digest.cap_reason}" if digest.capped else "")
    status += ", gathered before CloudTrail's delay had passed" if digest.early else ""
    lines = [
        f"activity digest: {status}",
        f"  account {digest.account}, identities {', '.join(digest.identities)}, "
        f"regions {', '.join(digest.regions_queried) or '-'}",
        f"  window {format_ts(digest.window_start)} .. {format_ts(digest.window_end)}, "
        f"gathered {format_ts(digest.gathered_at)} ({digest.pages} pages, {digest.records_read} records read)",
        f"  calls {digest.total_calls}: {digest.read_calls} read, {digest.write_calls} write, "
        f"{digest.unknown_calls} unknown; denied {digest.denied_calls}; sensitive {digest.sensitive_calls}",
        f"  services: {counts(digest.services, digest.services_dropped)}",
        f"  regions: {counts(digest.regions, digest.regions_dropped)}",
        f"  source IPs: {counts(digest.source_ips, digest.source_ips_dropped)}",
        f"  user agents: {counts(digest.user_agents, digest.user_agents_dropped)}",
    ]
    for title, calls, dropped in (
        ("sensitive calls", digest.sensitive, digest.sensitive_dropped),
        ("denied calls", digest.denied, digest.denied_dropped),
    ):
        if calls:
            lines.append(f"  {title}:")
            for call in calls:
                what = f"[{call.category}] " if call.category else ""
                error = f" -> {call.error_code}" if call.error_code else ""
                lines.append(
                    f"    {format_ts(call.time)} {what}{call.event_name} ({call.event_source}) {call.region} "
                    f"on {call.resource or '-'}{error}  id {call.event_id or '-'}"
                )
            if dropped:
                lines.append(f"    …and {dropped} more")
    for failure in digest.errors:
        region = f" {failure.region}" if failure.region else ""
        again = "retryable" if failure.retryable else "not retried"
        lines.append(f"  not gathered: {failure.stage}{region}: {failure.code} {failure.message} ({again})")
    if digest.event_ids:
        more = f" (+{digest.event_ids_dropped} more)" if digest.event_ids_dropped else ""
        lines.append(f"  CloudTrail event ids: {', '.join(digest.event_ids)}{more}")
    return lines


# -- commands ----------------------------------------------------------------------------------------


def cmd_create_table(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from store.dynamodb import create_table, make_client

    url = store_url(args)
    kind, target = parse_store_url(url)
    if kind != "dynamodb":
        err(f"{url} is a SQLite store: its schema is created on first use, nothing to do")
        return OK
    try:
        for line in create_table(make_client(), target, update=args.update):
            print(line)
    except StoreNotConfigured as exc:  # no region, or an existing table laid out differently
        err(f"create-table: {exc}")
        return USAGE
    except (ClientError, BotoCoreError) as exc:
        err(f"create-table failed: {exc}")
        return USAGE
    return OK


def cmd_list(args: argparse.Namespace, store: Store) -> int:
    if not 1 <= args.limit <= 100_000:
        raise AdminError("--limit must be between 1 and 100000")
    rows = []
    for event in select(
        store, status=args.status, profile=args.profile, invoker=args.invoker, since=args.since
    ):
        rows.append(list_row(event))
        if len(rows) >= args.limit:
            break
    if not rows:
        err("no matching events")
        return OK
    print(table(rows))
    if len(rows) >= args.limit:
        err(f"showing the first {args.limit}; use --limit or --since to see more")
    return OK


def _event_id(text: str) -> str:
    event_id = text.strip().lower()
    if not is_event_id(event_id):
        raise AdminError(f"{text!r} is not an event id (16 hex characters, e.g. 3f9a0c1b2d4e5f60)")
    return event_id


def cmd_show(args: argparse.Namespace, store: Store) -> int:
    event = store.get(_event_id(args.id))
    print(render_show(event))
    return OK


def cmd_export(args: argparse.Namespace, store: Store) -> int:
    if args.until is not None and args.until <= args.since:
        raise AdminError("--until must be later than --since")
    count = 0
    with ExitStack() as stack:
        out: IO[str] = (
            stack.enter_context(open(args.output, "w", encoding="utf-8", newline=""))
            if args.output
            else sys.stdout
        )
        writer = None
        if args.format == "csv":
            writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180: a CR inside a cell is quoted too
            writer.writerow(EXPORT_COLUMNS)
        for event in iter_all(store, since=args.since):
            if args.until is not None and event.created_at >= args.until:
                continue
            row = export_row(event)
            if args.format == "ocsf":
                for record in event_records(event):
                    out.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
            elif writer is not None:
                writer.writerow([_csv_value(row[c]) for c in EXPORT_COLUMNS])
            else:
                out.write(json.dumps({c: row[c] for c in JSONL_COLUMNS}, ensure_ascii=False) + "\n")
            count += 1
            if count % PROGRESS_EVERY == 0:
                err(f"exported {count} events…")
        out.flush()
    err(f"exported {count} events" + (f" to {args.output}" if args.output else ""))
    return OK


@contextlib.contextmanager
def _operator_service(args: argparse.Namespace) -> Iterator[tuple[Any, Any, list[str], str]]:
    """The use cases as Slack runs them, for an operator (`operator:NAME`, authorized by their access to
    the store): yields (service, runtime or None, Slack problems, by). Without Slack settings, the use
    case alone: the owed steps stay in the outbox for the bot's sweep."""
    from slack_sdk import WebClient

    from bot.app import create_app, resolve_policy
    from bot.clock import SystemClock
    from bot.config import ConfigError, load_settings
    from bot.directory import Directory
    from bot.logs import aws_credentials, configure_logging
    from bot.service import BreakGlassService

    operator = args.operator.strip()
    if not _OPERATOR_RE.match(operator):
        raise AdminError("--operator must be a name or email (letters, digits, . _ @ + -; at most 64)")
    by = OPERATOR_PREFIX + operator
    url = store_url(args)

    # Only what changing and announcing need: the bot token and the audit channel, never the signing
    # secret or an app token (the admin CLI receives no requests from Slack).
    slack_problems: list[str] = []
    try:
        settings = load_settings(need_slack=True, serving=False)
    except ConfigError as exc:
        slack_problems = exc.problems
        try:
            settings = load_settings(need_slack=False, serving=False)
        except ConfigError as exc2:
            raise AdminError(exc2.render()) from None
    settings = settings.model_copy(update={"breakglass_store": url})
    if not logging.getLogger().handlers:  # keep an embedding process's (or test runner's) logging
        # The bot's JSON log lines are for its log pipeline; at a terminal a normal close prints only its
        # result (and warnings and errors, as JSON lines, still go to stderr).
        level = "WARNING" if settings.log_level == "INFO" else settings.log_level  # DEBUG when asked for
        configure_logging(level, settings.secrets() + aws_credentials())
    try:
        policy = resolve_policy(settings)
    except ConfigError as exc:
        raise AdminError(exc.render()) from None
    store = open_store(url, retention=policy.retention, create=False)
    runtime = None
    try:
        if not slack_problems:
            try:
                runtime = create_app(settings, store, policy=policy, operator=True)
            except ConfigError as exc:
                slack_problems = exc.problems
        if runtime is not None:
            service = runtime.service
        else:  # no Slack: the use case alone (an operator needs no Slack roles); delivery stays owed
            service = BreakGlassService(
                store=store, policy=policy, directory=Directory(WebClient()), clock=SystemClock()
            )
        yield service, runtime, slack_problems, by
    finally:
        if runtime is not None:
            runtime.pipeline.shutdown(10)
        store.disconnect()


def cmd_close(args: argparse.Namespace) -> int:
    """Close through the same use case as Slack (`BreakGlassService.close`, as operator `operator:NAME`),
    then hand the event to the delivery pipeline; without Slack settings the steps stay owed for the sweep."""
    event_id = _event_id(args.id)
    try:
        reason = validate_free_text(args.reason, what="close reason", max_length=MAX_CLOSE_REASON)
    except ValueError as exc:
        raise AdminError(f"--reason: {exc}") from None
    with _operator_service(args) as (service, runtime, slack_problems, by):
        result = service.close(event_id, by=by, reason=reason, operator=True)
        event = result.event
        if not result.closed_now:
            if event.outbox and runtime is not None:  # e.g. just recorded as expired (a late sweep): announce
                runtime.pipeline.deliver(
                    event.id
                )  # quietly: this command changed nothing, the sweep would too
            who = f" by {event.closed_by}" if event.closed_by else ""
            err(f"refused: event {event.id} is already {event.status.value}{who} at {_short(event.ended_at)}")
            return REFUSED
        print(f"closed event {event.id} on {event.profile} (invoker {event.invoker}) as {by}")
        _deliver(runtime, event.id, slack_problems)
        return OK


def cmd_extend(args: argparse.Namespace) -> int:
    """Extend through the same use case as Slack (`BreakGlassService.extend`, as operator `operator:NAME`):
    the same bounds, the same atomic write, the same announcements."""
    from bot.errors import RateLimited, ValidationFailed

    event_id = _event_id(args.id)
    with _operator_service(args) as (service, runtime, slack_problems, by):
        try:
            event = service.extend(event_id, by=by, duration=args.duration, reason=args.reason, operator=True)
        except ValidationFailed as exc:
            err("refused: " + " ".join(exc.errors.values()))
            return REFUSED
        except RateLimited as exc:  # extensions count toward the policy's rate limits, as in Slack
            err("refused: " + exc.message)
            return REFUSED
        print(
            f"extended event {event.id} on {event.profile} by {_duration(event.extensions[-1].duration)} "
            f"as {by}: it now expires {_short(event.expires_at)}"
        )
        _deliver(runtime, event.id, slack_problems)
        return OK


def _deliver(runtime: Any, event_id: str, slack_problems: list[str]) -> None:
    if runtime is None:
        err(
            "Slack settings are missing, so nothing was announced yet: the announcements are owed in the "
            "event's outbox and the bot's sweep delivers them within its sweep interval.\n"
            + "\n".join(f"  - {p}" for p in slack_problems)
        )
        return
    delivered = runtime.pipeline.deliver(event_id)
    left = {entry.kind for entry in delivered.outbox} if delivered is not None else None
    if left is not None and left <= {OutboxKind.EXPIRY_SCHEDULES}:
        err("announced in the audit channel and to the invoker")
        if left:  # the admin CLI changes no AWS access (docs/iam-policy-admin.json)
            err("the event's EventBridge schedules are the bot's to move: its next sweep does it")
    else:
        err("some announcements could not be delivered now: they stay owed and the bot's sweep retries them")


def cmd_verify_audit(args: argparse.Namespace, store: Store) -> int:
    stored = iter_all(store, since=args.since) if args.since is not None else ()
    if args.file.startswith("s3://"):  # an S3 sink: every object under the prefix
        try:
            lines, problems = read_s3(args.file)
        except FeedConfigError as exc:
            raise AdminError(str(exc), USAGE) from exc
        problems += verify_feed(lines, store, stored)
    else:
        try:
            with open(args.file, encoding="utf-8") as feed:
                problems = verify_feed(feed, store, stored)
        except OSError as exc:
            raise AdminError(f"cannot read {args.file}: {exc.strerror}", USAGE) from exc
    for problem in problems:
        print(problem)
    err(f"{len(problems)} problems" if problems else "the feed matches the store and every chain holds")
    return REFUSED if problems else OK


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command in ("close", "extend"):
            return (cmd_close if args.command == "close" else cmd_extend)(args)
        url = store_url(args)
        parse_store_url(url)
        if args.command == "create-table":
            return cmd_create_table(args)
        store = open_store(url, create=False)  # reading never creates a store
        try:
            handlers = {
                "list": cmd_list,
                "show": cmd_show,
                "export": cmd_export,
                "verify-audit": cmd_verify_audit,
            }
            return handlers[args.command](args, store)
        finally:
            store.disconnect()
    except AdminError as exc:
        err(str(exc))
        return exc.code
    except InvalidStoreURL as exc:
        err(f"--store / BREAKGLASS_STORE: {exc}")
        return USAGE
    except EventNotFound as exc:
        err(f"not found: {exc}")
        return REFUSED
    except StoreNotConfigured as exc:
        err(str(exc))
        return USAGE
    except StoreError as exc:
        err(f"store error: {exc}")
        return USAGE
    except SystemExit as exc:  # argparse --help
        return int(exc.code or 0) if isinstance(exc.code, int) else USAGE
    except BrokenPipeError:  # `breakglass-admin export … | head`
        return OK


if __name__ == "__main__":
    sys.exit(main())
