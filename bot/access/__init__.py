"""Access providers: what breakglass does to real AWS access when an event starts and ends.

The policy's ``access.provider`` chooses one (:func:`make_provider`):

* ``none`` (the default, :class:`NoneProvider`): the stored event *is* the grant; something else (Sentinel)
  reads the store and decides. Grant and revoke change nothing and say so in their receipts.
* ``identity-center`` (:class:`~bot.access.identity_center.IdentityCenterProvider`): IAM Identity Center
  account assignments, revocation that also denies sessions issued before it, and drift repair.

Every provider implements :class:`AccessProvider`; results are typed receipts (:mod:`bot.access.base`) and
failures typed errors: :class:`TransientAccessError` (retry later), :class:`PermanentAccessError` (announce,
needs a person) and its subclass :class:`UserNotInIdentityStore`. Nothing here imports the store or Slack:
what a provider needs to know about other events comes from the caller (:data:`HoldersFn`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.access.base import (
    AccessError,
    AccessProvider,
    AccessState,
    Assignment,
    Drift,
    ExpectedAssignment,
    GrantReceipt,
    HoldersFn,
    PermanentAccessError,
    ReconcileReport,
    RevocationReceipt,
    Target,
    TransientAccessError,
    UserNotInIdentityStore,
    no_holders,
)
from bot.access.none import NoneProvider

if TYPE_CHECKING:
    from bot.policy import AccessPolicy

__all__ = [
    "AccessError",
    "AccessProvider",
    "AccessState",
    "Assignment",
    "Drift",
    "ExpectedAssignment",
    "GrantReceipt",
    "HoldersFn",
    "NoneProvider",
    "PermanentAccessError",
    "ReconcileReport",
    "RevocationReceipt",
    "Target",
    "TransientAccessError",
    "UserNotInIdentityStore",
    "make_provider",
    "no_holders",
]


def make_provider(access: AccessPolicy, *, holders: HoldersFn = no_holders, **kwargs: Any) -> AccessProvider:
    """The provider the policy's ``access`` block names. ``holders`` answers "which other active events
    hold this assignment" (the caller asks its store); ``kwargs`` go to the provider (clients, clock, sleep)."""
    if access.provider == "none":
        return NoneProvider()
    from bot.access.identity_center import IdentityCenterProvider

    assert access.instance_arn is not None and access.identity_store_id is not None  # the policy checks it
    return IdentityCenterProvider(
        instance_arn=access.instance_arn,
        identity_store_id=access.identity_store_id,
        holders=holders,
        **kwargs,
    )
