"""Check an audit feed's records (JSON lines) against the store and both hash chains.

Every record is rebuilt from the event as stored (`event_records`): a record whose canonical JSON differs was
edited (or the store was); a record the store does not know (no such event, or no such step) is reported;
a step the store has but the feed lacks is a gap; within each event the chain (`seq`, `previous`) must hold.
Records that carry their place in a day's chain (`day_chain`, sent by a sink; `export` has none) are checked
against the store's chain of that day (`Store.day_chain`): the place must be the stored one, the record's
digest the stored digest, and every record the store placed in that day must be in the feed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable

from bot.audit_feed.notices import notice_record
from bot.audit_feed.ocsf import Record, canonical, day_digest, event_records, verify_chain, without_day
from store import BreakGlassEvent, EventNotFound, Store


def verify_feed(lines: Iterable[str], store: Store, stored: Iterable[BreakGlassEvent] = ()) -> list[str]:
    """Problems found, one line each (empty: the feed matches the store and every chain holds). `stored`:
    events the feed must hold records of (e.g. every event since a date), even if it has none of theirs."""
    problems: list[str] = []
    by_event: dict[str, list[Record]] = defaultdict(list)
    notices: set[str] = set()
    by_day: dict[str, list[Record]] = defaultdict(list)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            ours = record["unmapped"]["breakglass"]
            uid = str(record["metadata"]["uid"])
            if "notice" in ours:  # a refusal: it belongs to no event (bot/audit_feed/notices.py)
                problems += _check_notice(uid, record, store, notices)
                if "day_chain" in ours:
                    by_day[str(ours["day_chain"]["day"])].append(record)
                continue
            event_id = ours["event_id"]
        except (ValueError, KeyError, TypeError):
            problems.append(f"line {number}: not a breakglass OCSF record")
            continue
        by_event[str(event_id)].append(record)
        if "day_chain" in ours:
            by_day[str(ours["day_chain"]["day"])].append(record)
    for event in stored:
        if event.id not in by_event:
            problems += [f"{r['metadata']['uid']}: missing from the feed (gap)" for r in event_records(event)]
    for event_id, records in sorted(by_event.items()):
        try:
            expected = {r["metadata"]["uid"]: r for r in event_records(store.get(event_id))}
        except EventNotFound:
            problems += [
                f"{r['metadata']['uid']}: unknown record (the store has no event {event_id})" for r in records
            ]
            continue
        seen: set[str] = set()
        for record in records:
            uid = record["metadata"]["uid"]
            if uid in seen:
                problems.append(f"{uid}: duplicate record")
                continue
            seen.add(uid)
            if uid not in expected:
                problems.append(f"{uid}: unknown record (the store's event has no such step)")
            elif canonical(without_day(record)) != canonical(expected[uid]):
                problems.append(f"{uid}: edited (differs from the record the stored event gives)")
        problems += [f"{uid}: missing from the feed (gap)" for uid in expected if uid not in seen]
        unique = list({r["metadata"]["uid"]: r for r in records}.values())
        problems += verify_chain(unique)
    for day, records in sorted(by_day.items()):
        problems += _check_day(day, records, store)
    return problems


def _check_day(day: str, records: list[Record], store: Store) -> list[str]:
    """The feed's records of `day` against the store's chain of that day."""
    problems: list[str] = []
    links = {link.uid: link for link in store.day_chain(day)}
    seen: set[str] = set()
    for record in sorted(records, key=lambda r: r["unmapped"]["breakglass"]["day_chain"]["seq"]):
        uid, place = record["metadata"]["uid"], record["unmapped"]["breakglass"]["day_chain"]
        if uid in seen:
            continue  # reported as a duplicate above
        seen.add(uid)
        link = links.get(uid)
        if link is None:
            problems.append(f"{uid}: not in the store's chain of {day}")
        elif (place["seq"], place["previous"]) != (link.seq, link.previous):
            problems.append(f"{uid}: its place in the chain of {day} is not the stored one (seq {link.seq})")
        elif day_digest(record) != link.digest:
            problems.append(f"{uid}: digest differs from the chain of {day} (edited)")
    problems += [
        f"{day} seq {link.seq} ({uid}): missing from the feed (gap in the day's chain)"
        for uid, link in sorted(links.items(), key=lambda item: item[1].seq)
        if uid not in seen
    ]
    return problems


def _check_notice(uid: str, record: Record, store: Store, seen: set[str]) -> list[str]:
    """A notice's record against the notice as stored: unknown, edited or duplicate."""
    if uid in seen:
        return [f"{uid}: duplicate record"]
    seen.add(uid)
    notice = store.get_notice(uid)
    if notice is None:
        return [f"{uid}: unknown record (the store has no such notice)"]
    if canonical(without_day(record)) != canonical(notice_record(notice)):
        return [f"{uid}: edited (differs from the record the stored notice gives)"]
    return []
