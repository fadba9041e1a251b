"""UTC time helpers: every timestamp the store writes is fixed-width so string order is time order."""

from __future__ import annotations

from datetime import UTC, datetime

# 2026-11-25T10:00:00.000000Z: 27 characters, always. RFC 3339 (Go's time.RFC3339Nano parses it).
_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
TIMESTAMP_WIDTH = 27


def ensure_utc(value: datetime) -> datetime:
    """Return `value` as a tz-aware UTC datetime; naive datetimes are refused, not guessed."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware (UTC)")
    return value.astimezone(UTC)


def format_ts(value: datetime) -> str:
    """Fixed-width UTC timestamp, e.g. 2026-11-25T10:00:00.000000Z."""
    text = ensure_utc(value).strftime(_FORMAT)
    if len(text) != TIMESTAMP_WIDTH:  # years before 1000 or after 9999
        raise ValueError(f"timestamp out of range: {value!r}")
    return text


def parse_ts(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (any offset, 'Z' accepted) into a UTC datetime."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return ensure_utc(value)
