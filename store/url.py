"""Open a store from a URL: sqlite:///path/to/file.db (default) or dynamodb://TABLE."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

from store.base import Store

DEFAULT_STORE_URL = "sqlite:///breakglass.db"
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")


class InvalidStoreURL(ValueError):
    pass


def parse_store_url(url: str) -> tuple[str, str]:
    """Return (kind, target): ("sqlite", path) or ("dynamodb", table). Raises InvalidStoreURL."""
    parts = urlsplit(url.strip())
    if parts.scheme == "sqlite":
        # sqlite:///relative.db -> "relative.db"; sqlite:////abs/path.db -> "/abs/path.db";
        # sqlite://relative.db and sqlite://dir/file.db (a "host" part) are relative paths too.
        if parts.netloc:
            path = parts.netloc + parts.path
        else:
            path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise InvalidStoreURL(
                f"{url!r}: give a file, e.g. sqlite:///breakglass.db or sqlite:////var/lib/bg.db"
            )
        return "sqlite", path
    if parts.scheme == "dynamodb":
        # dynamodb://TABLE (or dynamodb:///TABLE); anything after the table name is a mistake
        table = parts.netloc + parts.path if parts.netloc else parts.path.lstrip("/")
        if not _TABLE_NAME.fullmatch(table) or parts.query or parts.fragment:
            raise InvalidStoreURL(
                f"{url!r}: give a table name (3-255 of A-Z a-z 0-9 _ . -), e.g. dynamodb://breakglass-events"
            )
        return "dynamodb", table
    raise InvalidStoreURL(f"{url!r}: use sqlite:///path/to/file.db or dynamodb://TABLE")


def open_store(
    url: str = DEFAULT_STORE_URL,
    *,
    retention: timedelta | None = None,
    create: bool = True,
    lazy: bool = False,
) -> Store:
    """`create=False` for commands that only use an existing store: a missing SQLite file is an error.
    `lazy=True` (the Lambda runtime): DynamoDB's client is made on the first store call, not now."""
    kind, target = parse_store_url(url)
    if kind == "sqlite":
        from store.sqlite import SQLiteStore

        return SQLiteStore(target, create=create)
    from store.dynamodb import DEFAULT_RETENTION, DynamoDBStore

    return DynamoDBStore(target, retention=retention or DEFAULT_RETENTION, lazy=lazy)
