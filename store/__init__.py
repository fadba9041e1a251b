"""Break-glass events and their persistence. Never imports `bot`."""

from store.base import Page, Store, mutate
from store.errors import (
    ConcurrentModification,
    DuplicateRequest,
    EventNotFound,
    ExtendedMeanwhile,
    InvalidTransition,
    LimitReached,
    StackedAccess,
    StoreError,
    StoreNotConfigured,
    StoreUnavailable,
)
from store.limits import Limits
from store.model import BreakGlassEvent, ReasonCode, Status, is_event_id, new_event_id
from store.notices import Notice
from store.url import DEFAULT_STORE_URL, InvalidStoreURL, open_store, parse_store_url

__all__ = [
    "DEFAULT_STORE_URL",
    "BreakGlassEvent",
    "ConcurrentModification",
    "DuplicateRequest",
    "EventNotFound",
    "ExtendedMeanwhile",
    "InvalidStoreURL",
    "InvalidTransition",
    "LimitReached",
    "Limits",
    "Notice",
    "Page",
    "ReasonCode",
    "StackedAccess",
    "Status",
    "Store",
    "StoreError",
    "StoreNotConfigured",
    "StoreUnavailable",
    "is_event_id",
    "mutate",
    "new_event_id",
    "open_store",
    "parse_store_url",
]
