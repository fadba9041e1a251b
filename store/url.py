"""Open a store from a URL: sqlite:///path/to/file.db (default) or dynamodb://TABLE."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from store.base import Store

DEFAULT_STORE_URL = "sqlite:///breakglass.db"


class InvalidStoreURL(ValueError):
    pass


def parse_store_url(url: str) -> tuple[str, str]:
    """Return (kind, target): ("sqlite", path) or ("dynamodb", table). Raises InvalidStoreURL."""
    parts = urlsplit(url.strip())
    if parts.scheme == "sqlite":
        # sqlite:///relative.db -> "relative.db"; sqlite:////abs/path.db -> "/abs/path.db"
        path = (parts.netloc + parts.path)[1:] if parts.path.startswith("/") else parts.netloc + parts.path
        if not path:
            raise InvalidStoreURL(f"{url!r}: give a file, e.g. sqlite:///breakglass.db or sqlite:////var/lib/bg.db")
        return "sqlite", path
    if parts.scheme == "dynamodb":
        table = parts.netloc or parts.path.lstrip("/")
        if not table or "/" in table:
            raise InvalidStoreURL(f"{url!r}: give a table name, e.g. dynamodb://breakglass-events")
        return "dynamodb", table
    raise InvalidStoreURL(f"{url!r}: use sqlite:///path/to/file.db or dynamodb://TABLE")


def open_store(url: str = DEFAULT_STORE_URL, *, retention: timedelta | None = None) -> Store:
    kind, target = parse_store_url(url)
    if kind == "sqlite":
        from store.sqlite import SQLiteStore

        return SQLiteStore(target)
    from store.dynamodb import DEFAULT_RETENTION, DynamoDBStore

    return DynamoDBStore(target, retention=retention or DEFAULT_RETENTION)
