"""Owed tasks outside any event: work the delivery engine owes that belongs to no break-glass event (the drift
check's findings, announced to security). Stored like an event's outbox, so a crash between finding and
announcing loses nothing: the next sweep, in any process, delivers what is still owed."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, field_validator

from store.timeutil import ensure_utc


class TaskKind(StrEnum):
    ACCESS_DRIFT = "access_drift"  # what the drift check found and repaired, to security in the audit channel


class OwedTask(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    name: str  # unique: owing a task of the same name again keeps the first
    kind: TaskKind
    payload: str  # the task's data, as its handler reads it (JSON)
    due: datetime

    @field_validator("due")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return ensure_utc(value)
