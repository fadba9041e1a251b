"""OCSF records of the audit feed: valid against the published OCSF schema (from the ocsf-json-schema
package, which ships the schema's export), stable, and chained so an edit or a removal shows."""

from __future__ import annotations

import copy
import functools
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

from bot.audit_feed import OCSF_VERSION, event_records
from bot.audit_feed.notices import notice_record
from bot.audit_feed.ocsf import chain_digest, verify_chain
from tests import audit_feed_sample
from tests.store_fixtures import make_event


@functools.cache
def class_schema(class_uid: int) -> dict[str, Any]:
    schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(OCSF_VERSION))
    return schema.get_class_schema(schema.lookup_class_name_from_uid(class_uid))


def all_records() -> list[dict[str, Any]]:
    return (
        event_records(audit_feed_sample.lived_event())
        + event_records(audit_feed_sample.expired_event())
        + event_records(make_event())
        + event_records(audit_feed_sample.aws_event_states()[-1])
        + [
            notice_record(n)
            for n in (
                audit_feed_sample.refusal(),
                *audit_feed_sample.drift(),
                audit_feed_sample.edited(),
                *audit_feed_sample.channel_episode(),
            )
        ]
    )


def test_extension_and_aws_receipts_have_records_that_only_ever_get_appended() -> None:
    """Each state of an event's life adds one record at the end: the records of every earlier state are a
    prefix of the later ones, byte for byte (an extension clears `warned_at` and moves the expiry, and
    neither changes the warning's or the invocation's record)."""
    states = audit_feed_sample.aws_event_states()
    previous: list[dict[str, Any]] = []
    for state in states:
        records = event_records(state)
        assert records[: len(previous)] == previous
        assert len(records) == len(previous) + 1
        previous = records
    steps = [r["unmapped"]["breakglass"]["step"] for r in previous]
    assert steps == [
        "invoked",
        "aws_granted",
        "warned",
        "extended-1",
        "warned-2",
        "closed",
        "aws_revoked",
        "sessions_denied",
        "reviewed",
    ]
    by_step = {r["unmapped"]["breakglass"]["step"]: r for r in previous}
    assert by_step["invoked"]["end_time"] == by_step["warned"]["end_time"]  # the expiry before extending
    assert by_step["extended-1"]["end_time"] - by_step["invoked"]["end_time"] == 30 * 60 * 1000
    assert by_step["extended-1"]["activity_id"] == 1
    receipt = by_step["aws_revoked"]["unmapped"]["breakglass"]["receipt"]
    assert receipt["assignment_deleted_at"] == "2026-03-01T13:25:04Z" and receipt["kept"] is None
    assert by_step["sessions_denied"]["unmapped"]["breakglass"]["receipt"]["sessions_issued_before"]
    assert by_step["aws_granted"]["unmapped"]["breakglass"]["receipt"]["pre_existing"] is False
    assert verify_chain(previous) == []


@pytest.mark.parametrize("index", range(len(all_records())))
def test_every_record_is_valid_ocsf(index: int) -> None:
    record = all_records()[index]
    jsonschema.validate(record, class_schema(record["class_uid"]))
    assert record["type_uid"] == record["class_uid"] * 100 + record["activity_id"]
    assert record["metadata"]["product"]["name"] == "breakglass"


def test_the_schema_refuses_a_broken_record() -> None:
    """The validation is real: a record missing a required attribute, or with an unknown one, is refused."""
    record = event_records(make_event())[0]
    for broken in ({k: v for k, v in record.items() if k != "user"}, {**record, "surprise": 1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, class_schema(record["class_uid"]))


def test_steps_and_uids() -> None:
    records = event_records(audit_feed_sample.lived_event())
    assert [r["unmapped"]["breakglass"]["step"] for r in records] == [
        "invoked",
        "warned",
        "closed",
        "reviewed",
    ]
    assert [r["activity_id"] for r in records] == [1, 99, 2, 99]
    event_id = audit_feed_sample.lived_event().id
    assert [r["metadata"]["uid"] for r in records] == [
        f"{event_id}:{s}" for s in ("invoked", "warned", "closed", "reviewed")
    ]
    assert records[2]["actor"]["user"]["name"] == "bob@example.com"
    assert {"uid": "123456789012", "type": "aws.account"} in records[0]["resources"]


def test_records_are_a_function_of_the_stored_event() -> None:
    """Built again (another process, a retry), a record is the same, digest and all: its uid is a safe
    idempotency key."""
    event = audit_feed_sample.lived_event()
    assert [chain_digest(r) for r in event_records(event)] == [chain_digest(r) for r in event_records(event)]
    # a later step never changes the records already owed
    fresh = make_event()
    closed = fresh.close(
        by="bob@example.com", reason="done early", now=fresh.created_at + timedelta(minutes=5)
    )
    assert event_records(closed)[0] == event_records(fresh)[0]


def test_chain_detects_an_edit_and_a_gap() -> None:
    records = event_records(audit_feed_sample.lived_event())
    assert verify_chain(records) == []
    edited = copy.deepcopy(records)
    edited[1]["message"] = "nothing happened"
    assert verify_chain(edited) == [
        f"{records[2]['metadata']['uid']}: previous digest does not match the record before it (edited?)"
    ]
    gap = records[:1] + records[2:]
    assert verify_chain(gap) == [f"{records[2]['metadata']['uid']}: gap before seq 3 (expected 2)"]


def test_sample_document_is_current() -> None:
    """docs/audit-feed.md is what tests/audit_feed_sample.py prints (regenerate it when this fails)."""
    doc = Path(__file__).resolve().parent.parent / "docs" / "audit-feed.md"
    assert doc.read_text() == audit_feed_sample.document()
