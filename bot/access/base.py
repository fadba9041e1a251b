"""The access-provider contract: targets, receipts, reconcile reports, errors and the protocol."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from datetime import datetime, timedelta
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

# --------------------------------------------------------------------------------------------------
# What is granted


class Target(BaseModel):
    """Where a profile grants access: an AWS account and a permission set (the policy's ``aws:`` block)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    account: str
    permission_set: str


class Assignment(BaseModel):
    """One account assignment: a target and the identity-store user it is assigned to."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    account: str
    permission_set: str
    user_id: str

    @classmethod
    def of(cls, target: Target, user_id: str) -> Assignment:
        return cls(account=target.account, permission_set=target.permission_set, user_id=user_id)

    @property
    def target(self) -> Target:
        return Target(account=self.account, permission_set=self.permission_set)


HoldersFn = Callable[[Assignment], Collection[str]]
"""The ids of the *active* breakglass events that hold an assignment (the caller asks its store).

The provider calls it at revoke time (excluding the event being revoked) so that overlapping events,
or two profiles mapping to one account and permission set, never revoke each other."""


def no_holders(_assignment: Assignment) -> Collection[str]:
    return ()


class ExpectedAssignment(BaseModel):
    """An active event's assignment, as reconcile expects to find it."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    event_id: str
    assignment: Assignment
    pre_existing: bool = False
    """The assignment existed before breakglass granted it (standing access): never removed."""


# --------------------------------------------------------------------------------------------------
# Receipts


class GrantReceipt(BaseModel):
    """What a grant did. ``assignment`` is ``None`` for the ``none`` provider (nothing assigned)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    provider: str
    event_id: str
    assignment: Assignment | None
    requested_at: datetime
    completed_at: datetime
    pre_existing: bool = False
    """The assignment was already there before this grant and no active breakglass event held it:
    someone's standing access. Store it with the event: revoke must then leave the assignment alone."""
    request_ids: tuple[str, ...] = ()
    """AWS request ids of the calls that made the grant (for AWS support and CloudTrail)."""
    permission_set_name: str | None = None
    """The permission set's name (``DescribePermissionSet``) when granted: its role in the account is
    ``AWSReservedSSO_<name>_<hash>``, which binds the activity digest to this role alone."""

    @property
    def took(self) -> timedelta:
        return self.completed_at - self.requested_at


class RevocationReceipt(BaseModel):
    """What a revoke did: assignment deleted at ``assignment_deleted_at``; sessions issued before
    ``sessions_issued_before`` denied from ``sessions_denied_at`` (when the permission set was provisioned)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    provider: str
    event_id: str
    assignment: Assignment | None
    requested_at: datetime
    completed_at: datetime
    assignment_deleted_at: datetime | None = None
    sessions_issued_before: datetime | None = None
    sessions_denied_at: datetime | None = None
    kept: Literal["pre-existing", "held-by-other-events"] | None = None
    """Why the assignment was left in place, if it was."""
    other_holders: tuple[str, ...] = ()
    """The other active events holding the assignment (when ``kept == "held-by-other-events"``)."""
    request_ids: tuple[str, ...] = ()

    @property
    def took(self) -> timedelta:
        return self.completed_at - self.requested_at


class AccessState(BaseModel):
    """What AWS says about an assignment right now (``inspect``)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    assignment: Assignment
    assigned: bool
    denied_sessions_issued_before: datetime | None = None
    """The revoke time of this user's deny statement on the permission set, if there is one."""


class Drift(BaseModel):
    """An assignment on a managed permission set that breakglass did not make (and removed, or could not)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    account: str
    permission_set: str
    principal_type: str
    principal_id: str
    removed: bool
    error: str | None = None


class ReconcileReport(BaseModel):
    """One reconcile pass: drift found (and removed), vanished assignments (re-granted or not)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    checked_at: datetime
    targets_checked: int
    drift: tuple[Drift, ...] = ()
    regranted: tuple[GrantReceipt, ...] = ()
    missing: tuple[ExpectedAssignment, ...] = ()
    """Expected assignments that vanished and could not be re-granted (or ``regrant=False``)."""
    errors: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not (self.drift or self.regranted or self.missing or self.errors)


# --------------------------------------------------------------------------------------------------
# Errors


class AccessError(Exception):
    """A provider call failed. ``code`` and ``request_id`` are AWS's, when there is one."""

    transient = False

    def __init__(self, message: str, *, code: str | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.request_id = request_id


class TransientAccessError(AccessError):
    """Worth retrying later (throttling, conflicts that outlasted the retries, AWS or network trouble)."""

    transient = True


class PermanentAccessError(AccessError):
    """Will not succeed by retrying (a FAILED assignment, access denied, a bad ARN): announce it."""


class UserNotInIdentityStore(PermanentAccessError):
    """No identity-store user has the Slack user's email address."""

    def __init__(self, email: str, identity_store_id: str) -> None:
        super().__init__(
            f"No user with the email address {email} exists in the AWS identity store {identity_store_id}, "
            "so breakglass cannot grant AWS access to this Slack user. Ask an administrator to add the "
            "address to the user's identity-store profile (or to change the Slack profile's email)."
        )
        self.email = email


# --------------------------------------------------------------------------------------------------
# The protocol


class AccessProvider(Protocol):
    """What the pipeline calls. Every method is idempotent: calling it again after a crash is safe."""

    name: str

    def resolve_user(self, email: str) -> str | None:
        """The provider's user id for a Slack user's email (``None`` when the provider needs none).
        Called before the event is stored; raises :class:`UserNotInIdentityStore`."""
        ...

    def grant(
        self, event_id: str, target: Target | None, user_id: str | None, *, first_attempt: bool = True
    ) -> GrantReceipt: ...

    def revoke(
        self, event_id: str, target: Target | None, user_id: str | None, *, pre_existing: bool = False
    ) -> RevocationReceipt: ...

    def allow_sessions_from(self, target: Target, user_id: str, moment: datetime) -> bool:
        """Make the person's deny statement on ``target`` end no later than ``moment`` (a new grant right
        after a revoke: its sessions must not fall inside the old deny's clock-skew margin). True: changed."""
        ...

    def is_assigned(self, target: Target, user_id: str) -> bool:
        """Is the assignment there right now? (One listing: what the grant step looks at first.)"""
        ...

    def inspect(self, target: Target, user_id: str) -> AccessState | None:
        """What AWS says now; ``None`` for a provider that manages no AWS access."""
        ...

    def reconcile(
        self,
        targets: Iterable[Target],
        expected: Iterable[ExpectedAssignment],
        *,
        regrant: bool = True,
        confirm: Callable[[], Iterable[ExpectedAssignment]] | None = None,
    ) -> ReconcileReport:
        """Compare each target's assignments with `expected`: remove the others as drift (denying their
        sessions), re-grant vanished ones. `confirm`, when given, is asked again *after* a target was listed
        and before anything is removed: an assignment a grant made after `expected` was read is then known
        (its event was stored before its grant ran), so a new event's access is never taken for drift."""
        ...

    def cleanup(self, targets: Iterable[Target], now: datetime) -> int:
        """Remove deny statements whose sessions can no longer exist; returns how many were removed."""
        ...
