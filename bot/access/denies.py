"""The deny statements that end revoked Identity Center sessions, and how they fit AWS's quota.

Deleting an account assignment does not end the sessions already issued from it, so a revoke adds a deny to
the permission set's inline policy: *this person's sessions in these accounts issued before the revoke*
(``identitystore:UserId`` + ``aws:PrincipalAccount`` + ``aws:TokenIssueTime``). The account condition matters:
the permission set is provisioned to every account it serves, and a deny without it would also cut the same
person's live sessions of another profile that uses the permission set on another account.

The model here is a set of :class:`Deny` entries (person, account, issued-before bound), read from and
written to the policy's statements whose ``Sid`` starts with :data:`DENY_SID_PREFIX`; every other statement
(the operator's) is kept byte for byte in meaning and counts against the quota.

**The quota.** Identity Center writes the inline policy into each account as an IAM role policy, and IAM caps
a role's inline policies at :data:`ROLE_POLICY_LIMIT` characters *not counting whitespace*. :func:`fit` keeps
the written policy inside it:

1. entries whose bound plus the permission set's session duration has passed are dropped (no session issued
   before them can still be alive);
2. entries of one account with the same bound share a statement (a list of user ids), and statements with the
   same people and bound share one across accounts (a list of accounts): both are exact;
3. while the policy is still too long, the people of one account's group are moved to the next *later*
   bound of that account (the two closest bounds first). That denies them a little longer than their revoke,
   which is safe only for people who hold no assignment on that account now (they have no session issued
   after their revoke): ``movable`` says who; the others stay where they are. A person granted again later gets their entry pulled back to the grant
   (``allow_sessions_from``), which again goes through :func:`fit`;
4. when nothing more can be merged, :class:`DenyQuotaExceeded` (a permanent, announced failure): never a
   silent skip and never a deny that AWS would refuse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from bot.access.base import PermanentAccessError

ROLE_POLICY_LIMIT = 10_240
"""Non-whitespace characters IAM allows in a role's inline policies (what a permission set's inline policy
becomes in each account)."""

LOW_ROOM = 4_000
"""``check-policy`` warns when the operator's own inline policy leaves fewer characters than this for denies
(about 90 people revoked inside one session duration on one account)."""

DENY_SID_PREFIX = "BreakglassRevoke"
"""Sids of the deny statements this module writes start with this; it touches no other statement."""

ALL_ACCOUNTS = "*"
"""The account of an entry read from a statement without an account condition (written before denies were
scoped): it denies in every account, so it is kept as it is until it expires and is never moved."""

_EMPTY_POLICY: dict[str, Any] = {"Version": "2012-10-17", "Statement": []}
_WHITESPACE = re.compile(r"\s")


class DenyQuotaExceeded(PermanentAccessError):
    """The denies that must stay cannot fit the role policy quota next to the operator's statements."""


@dataclass(frozen=True, order=True)
class Deny:
    """Deny ``user_id``'s sessions in ``account`` issued before ``issued_before``."""

    account: str
    user_id: str
    issued_before: datetime


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def quota_length(text: str) -> int:
    """How IAM measures a policy against its quota: characters, not counting whitespace."""
    return len(_WHITESPACE.sub("", text))


def load_policy_document(text: str) -> dict[str, Any]:
    """A permission set's inline policy as JSON (an empty one when there is none)."""
    if not text.strip():
        return dict(_EMPTY_POLICY)
    try:
        policy = json.loads(text)
    except ValueError as exc:
        raise PermanentAccessError(f"the permission set's inline policy is not valid JSON: {exc}") from exc
    if not isinstance(policy, dict):
        raise PermanentAccessError("the permission set's inline policy is not a JSON object")
    return policy


def statements_of(policy: dict[str, Any]) -> list[dict[str, Any]]:
    statements = policy.get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def _values(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _entries_of(statement: dict[str, Any]) -> list[Deny] | None:
    """The entries one of our statements encodes, or None when it is not in a shape this module writes."""
    if not str(statement.get("Sid", "")).startswith(DENY_SID_PREFIX) or statement.get("Effect") != "Deny":
        return None
    condition = statement.get("Condition")
    if not isinstance(condition, dict) or set(condition) != {"StringEquals", "DateLessThan"}:
        return None
    equals, before = condition["StringEquals"], condition["DateLessThan"]
    if not isinstance(equals, dict) or not isinstance(before, dict) or set(before) != {"aws:TokenIssueTime"}:
        return None
    if not set(equals) <= {"identitystore:UserId", "aws:PrincipalAccount"}:
        return None
    users = _values(equals.get("identitystore:UserId"))
    accounts = _values(equals.get("aws:PrincipalAccount", ALL_ACCOUNTS))
    try:
        bound = parse_iso(str(before["aws:TokenIssueTime"]))
    except ValueError:
        return None
    if users is None or accounts is None:
        return None
    return [Deny(account=a, user_id=u, issued_before=bound) for a in accounts for u in users]


@dataclass
class DenyPolicy:
    """A permission set's inline policy split into the operator's statements and breakglass's entries."""

    envelope: dict[str, Any]
    """The policy without ``Statement`` (``Version``, an ``Id``): written back as it was."""
    operator: list[dict[str, Any]]
    entries: dict[tuple[str, str], datetime]
    """(account, user id) -> issued-before bound (the latest one, when several were read)."""

    @classmethod
    def parse(cls, text: str) -> DenyPolicy:
        policy = load_policy_document(text)
        operator: list[dict[str, Any]] = []
        entries: dict[tuple[str, str], datetime] = {}
        for statement in statements_of(policy):
            found = _entries_of(statement) if isinstance(statement, dict) else None
            if found is None:
                operator.append(statement)
                continue
            for deny in found:
                key = (deny.account, deny.user_id)
                entries[key] = max(entries.get(key, deny.issued_before), deny.issued_before)
        envelope = {k: v for k, v in policy.items() if k != "Statement"}
        envelope.setdefault("Version", "2012-10-17")
        return cls(envelope=envelope, operator=operator, entries=entries)

    def bound(self, account: str, user_id: str) -> datetime | None:
        """The bound that denies ``user_id``'s sessions in ``account`` (an unscoped legacy entry counts)."""
        found = [self.entries.get((account, user_id)), self.entries.get((ALL_ACCOUNTS, user_id))]
        return max((b for b in found if b is not None), default=None)

    def add(self, account: str, user_id: str, issued_before: datetime) -> None:
        """Deny ``user_id`` in ``account`` before ``issued_before`` (an existing entry only moves later)."""
        key = (account, user_id)
        self.entries[key] = max(self.entries.get(key, issued_before), issued_before)

    def pull_back(self, account: str, user_id: str, moment: datetime) -> bool:
        """Make the entry end no later than ``moment``; True when it changed."""
        key = (account, user_id)
        if key not in self.entries or self.entries[key] <= moment:
            return False
        self.entries[key] = moment
        return True

    def drop_expired(self, now: datetime, lifetime: timedelta) -> int:
        expired = [k for k, bound in self.entries.items() if bound + lifetime <= now]
        for key in expired:
            del self.entries[key]
        return len(expired)

    def render(self) -> str:
        """The policy as written: operator statements first, then ours (compact JSON). Empty: no policy."""
        ours = [
            _statement(i, accounts, users, bound)
            for i, (bound, accounts, users) in enumerate(_exact_groups(self.entries))
        ]
        if not ours and not self.operator:
            return ""
        return json.dumps({**self.envelope, "Statement": self.operator + ours}, separators=(",", ":"))

    def fit(self, *, movable: Callable[[str, str], bool], limit: int = ROLE_POLICY_LIMIT) -> str:
        """The policy rendered within ``limit`` (see the module docstring); may merge entries to later
        bounds (updating :attr:`entries`) for people ``movable(account, user_id)`` says hold no assignment.
        Raises :class:`DenyQuotaExceeded` when it cannot."""
        text = self.render()
        while quota_length(text) > limit:
            if not self._merge_closest(movable):
                raise DenyQuotaExceeded(
                    f"The permission set's inline policy needs {quota_length(text)} characters (not counting "
                    f"whitespace) to deny every revoked session, over IAM's {limit}-character quota for a "
                    f"role's inline policies: the operator's own statements take "
                    f"{operator_length(self)} of them. Shorten them (or move them into a managed policy) so "
                    "the revoked sessions can be denied; until then they are NOT denied."
                )
            text = self.render()
        return text

    def _merge_closest(self, movable: Callable[[str, str], bool]) -> bool:
        """Move the movable people of one account's group to that account's next later group, choosing the
        two bounds that are closest. False: nobody can be moved."""
        best: tuple[timedelta, str, datetime, datetime] | None = None
        by_account: dict[str, dict[datetime, list[str]]] = {}
        for (account, user), bound in self.entries.items():
            by_account.setdefault(account, {}).setdefault(bound, []).append(user)
        for account, groups in by_account.items():
            if account == ALL_ACCOUNTS:
                continue
            for earlier, later in pairwise(sorted(groups)):
                if not any(movable(account, user) for user in groups[earlier]):
                    continue
                if best is None or later - earlier < best[0]:
                    best = (later - earlier, account, earlier, later)
        if best is None:
            return False
        _, account, earlier, later = best
        for user in by_account[account][earlier]:
            if movable(account, user):
                self.entries[(account, user)] = later
        return True


def operator_length(policy: DenyPolicy) -> int:
    """Characters (not counting whitespace) the policy takes without any deny of ours."""
    return quota_length(DenyPolicy(policy.envelope, policy.operator, {}).render() or "")


def room_left(text: str, limit: int = ROLE_POLICY_LIMIT) -> int:
    """Characters an inline policy's operator statements leave for denies."""
    return limit - operator_length(DenyPolicy.parse(text))


def _exact_groups(entries: dict[tuple[str, str], datetime]) -> list[tuple[datetime, list[str], list[str]]]:
    """(bound, accounts, users) statements that encode ``entries`` exactly and compactly: one account's people
    with one bound share a statement, and the same people with the same bound share one across accounts."""
    per_account: dict[tuple[str, datetime], list[str]] = {}
    for (account, user), bound in sorted(entries.items()):
        per_account.setdefault((account, bound), []).append(user)
    shared: dict[tuple[datetime, tuple[str, ...], bool], list[str]] = {}
    for (account, bound), users in per_account.items():
        # An unscoped (legacy) entry is never combined with scoped ones.
        shared.setdefault((bound, tuple(users), account == ALL_ACCOUNTS), []).append(account)
    return [(bound, accounts, list(users)) for (bound, users, _), accounts in sorted(shared.items())]


def _one_or_list(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else values


def _statement(index: int, accounts: list[str], users: list[str], bound: datetime) -> dict[str, Any]:
    equals: dict[str, Any] = {"identitystore:UserId": _one_or_list(users)}
    if accounts != [ALL_ACCOUNTS]:
        equals["aws:PrincipalAccount"] = _one_or_list(accounts)
    return {
        "Sid": f"{DENY_SID_PREFIX}{index}",
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {"StringEquals": equals, "DateLessThan": {"aws:TokenIssueTime": iso(bound)}},
    }


def denies_of(text: str) -> list[Deny]:
    """Every entry an inline policy holds (for tests, ``inspect`` and reports)."""
    policy = DenyPolicy.parse(text)
    return sorted(Deny(account=a, user_id=u, issued_before=b) for (a, u), b in policy.entries.items())


def not_denied(text: str, wanted: Iterable[Deny]) -> list[Deny]:
    """The entries of ``wanted`` the policy does NOT deny (each needs an entry for its person in its account,
    or an unscoped one, with a bound at or after its own)."""
    policy = DenyPolicy.parse(text)
    missing = []
    for deny in wanted:
        bound = policy.bound(deny.account, deny.user_id)
        if bound is None or bound < deny.issued_before:
            missing.append(deny)
    return missing
