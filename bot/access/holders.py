"""Which stored events hold an AWS assignment: the Identity Center provider's `holders` callback (a revoke keeps
an assignment another active event holds), and the mapping between an event's access and the provider's
`Target`/`Assignment`. Reads the store only; nothing here leads into the delivery handlers."""

from __future__ import annotations

from collections.abc import Callable

from bot.access.base import Assignment, Target
from store import Store
from store.model import EventAccess


def target_of(access: EventAccess) -> Target:
    return Target(account=access.account, permission_set=access.permission_set)


def assignment_of(access: EventAccess) -> Assignment:
    return Assignment(account=access.account, permission_set=access.permission_set, user_id=access.user_id)


def same(access: EventAccess | None, assignment: Assignment) -> bool:
    return access is not None and assignment_of(access) == assignment


def active_holders(store: Store, assignment: Assignment) -> list[str]:
    """Active events whose grant has looked at AWS and that hold `assignment` (the provider's HoldersFn:
    a revoke keeps an assignment another such event holds)."""
    return [
        e.id
        for e in store.list_active()
        if same(e.access, assignment) and e.access is not None and e.access.pre_existing is not None
    ]


def holders_in(store: Store) -> Callable[[Assignment], list[str]]:
    """The provider's `holders` callback over `store`."""
    return lambda assignment: active_holders(store, assignment)
