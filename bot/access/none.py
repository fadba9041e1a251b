"""The ``none`` provider: the stored event is the grant (e.g. Sentinel reads the store); AWS is untouched."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from bot.access.base import (
    AccessState,
    ExpectedAssignment,
    GrantReceipt,
    ReconcileReport,
    RevocationReceipt,
    Target,
)
from bot.clock import Clock, SystemClock


class NoneProvider:
    """Changes no AWS access. Receipts say so (``assignment`` is ``None``)."""

    name = "none"

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()

    def resolve_user(self, email: str) -> str | None:
        return None

    def grant(
        self, event_id: str, target: Target | None, user_id: str | None, *, first_attempt: bool = True
    ) -> GrantReceipt:
        now = self.clock.now()
        return GrantReceipt(
            provider=self.name, event_id=event_id, assignment=None, requested_at=now, completed_at=now
        )

    def revoke(
        self, event_id: str, target: Target | None, user_id: str | None, *, pre_existing: bool = False
    ) -> RevocationReceipt:
        now = self.clock.now()
        return RevocationReceipt(
            provider=self.name, event_id=event_id, assignment=None, requested_at=now, completed_at=now
        )

    def allow_sessions_from(self, target: Target, user_id: str, moment: datetime) -> bool:
        return False

    def is_assigned(self, target: Target, user_id: str) -> bool:
        return False  # nothing is ever assigned

    def inspect(self, target: Target, user_id: str) -> AccessState | None:
        return None  # no AWS access is managed, so there is nothing to look at

    def reconcile(
        self,
        targets: Iterable[Target],
        expected: Iterable[ExpectedAssignment],
        *,
        regrant: bool = True,
        confirm: Callable[[], Iterable[ExpectedAssignment]] | None = None,
    ) -> ReconcileReport:
        return ReconcileReport(checked_at=self.clock.now(), targets_checked=0)

    def cleanup(self, targets: Iterable[Target], now: datetime) -> int:
        return 0
