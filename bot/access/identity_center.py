"""The ``identity-center`` provider: IAM Identity Center account assignments.

* **grant**: ``CreateAccountAssignment`` and poll its status to ``SUCCEEDED``/``FAILED``. An assignment that
  is already there and held by no other active breakglass event is someone's standing access: the receipt
  says ``pre_existing`` and revoke leaves it alone.
* **revoke**: ``DeleteAccountAssignment`` and poll; then, because deleting an assignment does not end the
  sessions already issued from it, deny this user's sessions *in the target's account* issued before the
  revoke (``identitystore:UserId`` + ``aws:PrincipalAccount`` + ``aws:TokenIssueTime``) in the permission
  set's inline policy, keeping every other statement, within IAM's role policy quota
  (:mod:`bot.access.denies`), one writer at a time (``policy_lock``), and ``ProvisionPermissionSet`` to all
  accounts. Denies whose sessions cannot be alive any more are dropped in the same write and by
  :meth:`cleanup`. An assignment that another active event holds (overlap, two profiles on one target) is
  kept: the caller's :data:`~bot.access.base.HoldersFn` says who holds it.
* **reconcile**: assignments on managed targets that no active event expects are removed (drift); expected
  ones that vanished are re-granted (``regrant=True``) or reported as missing, for a caller that re-grants
  them under its own lock after reading its events again (bot/delivery/handlers/access.py does).

Throttling and ``ConflictException`` (another operation on the permission set in flight) are retried here with
exponential backoff on an injectable ``sleep``; botocore's own retries are off so that tests never sleep.
Clients follow the SDK conventions: region from ``AWS_REGION`` (then ``AWS_DEFAULT_REGION``), endpoints from
``AWS_ENDPOINT_URL_SSO_ADMIN`` / ``AWS_ENDPOINT_URL_IDENTITYSTORE`` / ``AWS_ENDPOINT_URL`` (botocore reads these).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from bot.access.base import (
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
from bot.access.denies import DENY_SID_PREFIX, DenyPolicy, DenyQuotaExceeded, load_policy_document
from bot.access.policy_lock import PolicyLock, no_policy_lock
from bot.clock import Clock, SystemClock
from store.dynamodb import aws_session

log = logging.getLogger(__name__)

__all__ = [
    "DENY_SID_PREFIX",
    "INLINE_POLICY_LIMIT",
    "IdentityCenterProvider",
    "load_policy_document",
    "make_clients",
    "merge_deny",
    "parse_session_duration",
]

INLINE_POLICY_LIMIT = 32_768
"""Characters allowed in a permission set's inline policy (IAM Identity Center quota); the tighter bound is
IAM's role policy quota, :data:`~bot.access.denies.ROLE_POLICY_LIMIT` (what :func:`merge_deny` keeps to)."""

RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "TooManyRequestsException",
        "ConflictException",
        "InternalServerException",
        "ServiceUnavailableException",
        "RequestTimeout",
    }
)
_DURATION_RE = re.compile(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?")


def client_config() -> Config:
    # Retries are this module's (with an injectable sleep), so botocore makes exactly one attempt.
    return Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=3, read_timeout=15)


def make_clients(session: boto3.session.Session | None = None) -> tuple[Any, Any]:
    """(sso-admin, identitystore) clients from the standard AWS environment.

    botocore reads ``AWS_DEFAULT_REGION`` and the ``AWS_ENDPOINT_URL*`` variables itself; ``AWS_REGION``
    (which the AWS runtimes and other SDKs set) is honoured here because botocore does not read it."""
    session = session or aws_session()
    region = os.environ.get("AWS_REGION") or None
    config = client_config()
    return (
        session.client("sso-admin", region_name=region, config=config),
        session.client("identitystore", region_name=region, config=config),
    )


def parse_session_duration(text: str | None) -> timedelta:
    """An ISO 8601 ``PT…`` session duration (Identity Center's default is one hour)."""
    match = _DURATION_RE.fullmatch(text or "")
    if not text or not match or not any(match.groups()):
        return timedelta(hours=1)
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def merge_deny(
    policy_text: str,
    account: str,
    user_id: str,
    issued_before: datetime,
    *,
    now: datetime | None = None,
    lifetime: timedelta | None = None,
    movable: Callable[[str, str], bool] = lambda _account, _user: False,
) -> str:
    """The inline policy ``policy_text`` denying ``user_id``'s sessions in ``account`` issued before
    ``issued_before`` (an existing bound only moves later), every other statement kept, expired denies
    dropped (given ``now`` and the session ``lifetime``), within IAM's quota (see :mod:`bot.access.denies`)."""
    policy = DenyPolicy.parse(policy_text)
    if now is not None and lifetime is not None:
        policy.drop_expired(now, lifetime)
    policy.add(account, user_id, issued_before)
    return policy.fit(movable=movable)


class IdentityCenterProvider:
    """Grants and revokes IAM Identity Center account assignments (see the module docstring)."""

    name = "identity-center"

    def __init__(
        self,
        instance_arn: str,
        identity_store_id: str,
        *,
        holders: HoldersFn = no_holders,
        sso_admin: Any | None = None,
        identitystore: Any | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], None] | None = None,
        max_attempts: int = 6,
        base_delay: float = 0.5,
        max_delay: float = 10.0,
        poll_interval: float = 1.0,
        poll_timeout: timedelta = timedelta(minutes=5),
        deny_margin: timedelta = timedelta(0),
        policy_lock: PolicyLock = no_policy_lock,
    ) -> None:
        if sso_admin is None or identitystore is None:
            default_sso, default_ids = make_clients()
            sso_admin = sso_admin or default_sso
            identitystore = identitystore or default_ids
        self.instance_arn = instance_arn
        self.identity_store_id = identity_store_id
        self.holders = holders
        self.sso = sso_admin
        self.ids = identitystore
        self.clock = clock or SystemClock()
        self.sleep = sleep or time.sleep
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.poll_interval = poll_interval
        self.poll_timeout = poll_timeout
        # The deny covers sessions issued up to this long after the deletion as the bot's clock sees it, so
        # that a bot clock behind AWS's (within this margin) still denies every session issued before it.
        self.deny_margin = deny_margin
        # Held around every read-modify-write of a permission set's inline policy (bot.access.policy_lock).
        self.policy_lock = policy_lock

    # -- calls ----------------------------------------------------------------------------------------

    def _call(self, client: Any, operation: str, request_ids: list[str], **params: Any) -> dict[str, Any]:
        """One AWS call, retried on throttling/conflict/5xx/network trouble with exponential backoff."""
        last: Exception | None = None
        for attempt in range(self.max_attempts):
            if attempt:
                self.sleep(min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
            try:
                response: dict[str, Any] = getattr(client, operation)(**params)
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code", ""))
                request_id = exc.response.get("ResponseMetadata", {}).get("RequestId")
                if request_id:
                    request_ids.append(request_id)
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
                if code in RETRYABLE_CODES or status >= 500:
                    last = TransientAccessError(
                        f"{operation}: {code}: {error.get('Message', '')}".strip(),
                        code=code,
                        request_id=request_id,
                    )
                    continue
                raise PermanentAccessError(
                    f"{operation}: {code}: {error.get('Message', '')}".strip(),
                    code=code,
                    request_id=request_id,
                ) from exc
            except BotoCoreError as exc:
                last = TransientAccessError(f"{operation}: {exc}")
                continue
            request_id = response.get("ResponseMetadata", {}).get("RequestId")
            if request_id:
                request_ids.append(request_id)
            return response
        assert isinstance(last, TransientAccessError)
        raise TransientAccessError(
            f"{last.message} (gave up after {self.max_attempts} attempts)",
            code=last.code,
            request_id=last.request_id,
        )

    def _poll(
        self,
        status: dict[str, Any],
        describe: str,
        id_param: str,
        result_key: str,
        what: str,
        request_ids: list[str],
    ) -> None:
        """Poll an asynchronous Identity Center request until SUCCEEDED; FAILED raises with its reason."""
        deadline = self.clock.now() + self.poll_timeout
        while status.get("Status") == "IN_PROGRESS":
            if self.clock.now() >= deadline:
                raise TransientAccessError(f"{what} still in progress after {self.poll_timeout}")
            self.sleep(self.poll_interval)
            response = self._call(
                self.sso,
                describe,
                request_ids,
                InstanceArn=self.instance_arn,
                **{id_param: status["RequestId"]},
            )
            status = response[result_key]
        if status.get("Status") == "FAILED":
            raise PermanentAccessError(
                f"{what} failed: {status.get('FailureReason') or 'no reason given'}",
                request_id=status.get("RequestId"),
            )
        if status.get("Status") != "SUCCEEDED":
            raise TransientAccessError(f"{what}: unexpected status {status.get('Status')!r}")

    def _assignment_params(self, assignment: Assignment) -> dict[str, Any]:
        return {
            "InstanceArn": self.instance_arn,
            "TargetId": assignment.account,
            "TargetType": "AWS_ACCOUNT",
            "PermissionSetArn": assignment.permission_set,
            "PrincipalType": "USER",
            "PrincipalId": assignment.user_id,
        }

    def _list_assignments(self, target: Target, request_ids: list[str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {
            "InstanceArn": self.instance_arn,
            "AccountId": target.account,
            "PermissionSetArn": target.permission_set,
        }
        while True:
            response = self._call(self.sso, "list_account_assignments", request_ids, **params)
            found.extend(response.get("AccountAssignments", []))
            if not response.get("NextToken"):
                return found
            params["NextToken"] = response["NextToken"]

    def _is_assigned(self, assignment: Assignment, request_ids: list[str]) -> bool:
        return any(
            a.get("PrincipalType") == "USER" and a.get("PrincipalId") == assignment.user_id
            for a in self._list_assignments(assignment.target, request_ids)
        )

    def _create(self, assignment: Assignment, request_ids: list[str]) -> None:
        response = self._call(
            self.sso, "create_account_assignment", request_ids, **self._assignment_params(assignment)
        )
        self._poll(
            response["AccountAssignmentCreationStatus"],
            "describe_account_assignment_creation_status",
            "AccountAssignmentCreationRequestId",
            "AccountAssignmentCreationStatus",
            "creating the account assignment",
            request_ids,
        )

    def _delete(self, assignment: Assignment, request_ids: list[str]) -> None:
        response = self._call(
            self.sso, "delete_account_assignment", request_ids, **self._assignment_params(assignment)
        )
        self._poll(
            response["AccountAssignmentDeletionStatus"],
            "describe_account_assignment_deletion_status",
            "AccountAssignmentDeletionRequestId",
            "AccountAssignmentDeletionStatus",
            "deleting the account assignment",
            request_ids,
        )

    def _read_policy(self, permission_set: str, request_ids: list[str]) -> str:
        response = self._call(
            self.sso,
            "get_inline_policy_for_permission_set",
            request_ids,
            InstanceArn=self.instance_arn,
            PermissionSetArn=permission_set,
        )
        return str(response.get("InlinePolicy") or "")

    def _write_policy(self, permission_set: str, text: str, request_ids: list[str]) -> None:
        if text:
            self._call(
                self.sso,
                "put_inline_policy_to_permission_set",
                request_ids,
                InstanceArn=self.instance_arn,
                PermissionSetArn=permission_set,
                InlinePolicy=text,
            )
        else:
            self._call(
                self.sso,
                "delete_inline_policy_from_permission_set",
                request_ids,
                InstanceArn=self.instance_arn,
                PermissionSetArn=permission_set,
            )
        response = self._call(
            self.sso,
            "provision_permission_set",
            request_ids,
            InstanceArn=self.instance_arn,
            PermissionSetArn=permission_set,
            TargetType="ALL_PROVISIONED_ACCOUNTS",
        )
        # A terminal status in the answer needs no polling (moto answers SUCCEEDED at once and has no
        # DescribePermissionSetProvisioningStatus); AWS answers IN_PROGRESS and is polled.
        self._poll(
            response["PermissionSetProvisioningStatus"],
            "describe_permission_set_provisioning_status",
            "ProvisionPermissionSetRequestId",
            "PermissionSetProvisioningStatus",
            "provisioning the permission set",
            request_ids,
        )

    def _describe_permission_set(self, permission_set: str, request_ids: list[str]) -> dict[str, Any]:
        described = self._call(
            self.sso,
            "describe_permission_set",
            request_ids,
            InstanceArn=self.instance_arn,
            PermissionSetArn=permission_set,
        )
        return dict(described.get("PermissionSet") or {})

    def permission_set_name(self, permission_set: str, request_ids: list[str] | None = None) -> str | None:
        """The permission set's name (its role is ``AWSReservedSSO_<name>_<hash>`` in each account)."""
        name = self._describe_permission_set(permission_set, [] if request_ids is None else request_ids).get(
            "Name"
        )
        return str(name) if name else None

    def _session_lifetime(self, permission_set: str, request_ids: list[str]) -> timedelta:
        described = self._describe_permission_set(permission_set, request_ids)
        return parse_session_duration(described.get("SessionDuration"))

    def _movable(self, permission_set: str, request_ids: list[str]) -> Callable[[str, str], bool]:
        """Who may have their deny merged to a later bound: people with no assignment on that account now
        (listed lazily, once per account)."""
        assigned: dict[str, set[str]] = {}

        def movable(account: str, user_id: str) -> bool:
            if account not in assigned:
                listed = self._list_assignments(
                    Target(account=account, permission_set=permission_set), request_ids
                )
                assigned[account] = {
                    a.get("PrincipalId", "") for a in listed if a.get("PrincipalType") == "USER"
                }
            return user_id not in assigned[account]

        return movable

    def read_inline_policy(self, permission_set: str) -> str:
        """The permission set's inline policy as AWS holds it ("" when there is none)."""
        return self._read_policy(permission_set, [])

    def _write_denies(self, permission_set: str, policy: DenyPolicy, request_ids: list[str]) -> None:
        """Write ``policy`` within the quota (merging only people who hold no assignment now)."""
        try:
            text = policy.fit(movable=self._movable(permission_set, request_ids))
        except DenyQuotaExceeded as exc:
            log.error("revoked sessions NOT denied on %s: %s", permission_set, exc.message)
            raise
        self._write_policy(permission_set, text, request_ids)

    def _deny_sessions(self, target: Target, user_id: str, issued_before: datetime, ids: list[str]) -> None:
        """Deny ``user_id``'s sessions in ``target``'s account issued before ``issued_before``; denies whose
        sessions cannot be alive any more are dropped in the same write."""
        lifetime = self._session_lifetime(target.permission_set, ids)
        with self.policy_lock(target.permission_set):
            policy = DenyPolicy.parse(self._read_policy(target.permission_set, ids))
            policy.drop_expired(self.clock.now(), lifetime)
            policy.add(target.account, user_id, issued_before)
            self._write_denies(target.permission_set, policy, ids)

    # -- the protocol ---------------------------------------------------------------------------------

    def resolve_user(self, email: str) -> str:
        """The identity-store user id whose ``emails.value`` is ``email``."""
        try:
            response = self._call(
                self.ids,
                "get_user_id",
                [],
                IdentityStoreId=self.identity_store_id,
                AlternateIdentifier={
                    "UniqueAttribute": {"AttributePath": "emails.value", "AttributeValue": email}
                },
            )
        except PermanentAccessError as exc:
            if exc.code == "ResourceNotFoundException":
                raise UserNotInIdentityStore(email, self.identity_store_id) from exc
            raise
        return str(response["UserId"])

    def grant(
        self, event_id: str, target: Target | None, user_id: str | None, *, first_attempt: bool = True
    ) -> GrantReceipt:
        """Assign ``target`` to ``user_id`` for ``event_id``.

        On the first attempt an assignment already in place that no other active event holds is recorded
        as ``pre_existing`` (standing access). A retry (``first_attempt=False``, e.g. after a crash between
        the AWS call and storing the receipt) takes an existing assignment as its own."""
        if target is None or user_id is None:
            raise PermanentAccessError(
                "the identity-center provider needs an AWS target and an identity-store user"
            )
        return self._grant(event_id, target, user_id, first_attempt=first_attempt, known_absent=False)

    def _grant(
        self, event_id: str, target: Target, user_id: str, *, first_attempt: bool, known_absent: bool
    ) -> GrantReceipt:
        requested_at = self.clock.now()
        request_ids: list[str] = []
        assignment = Assignment.of(target, user_id)
        pre_existing = False
        if not known_absent and self._is_assigned(assignment, request_ids):
            others = set(self.holders(assignment)) - {event_id}
            pre_existing = first_attempt and not others
        else:
            self._create(assignment, request_ids)
        completed_at = self.clock.now()
        name = self._name_for_receipt(target.permission_set, request_ids)
        return GrantReceipt(
            provider=self.name,
            event_id=event_id,
            assignment=assignment,
            requested_at=requested_at,
            completed_at=completed_at,
            pre_existing=pre_existing,
            request_ids=tuple(request_ids),
            permission_set_name=name,
        )

    def _name_for_receipt(self, permission_set: str, request_ids: list[str]) -> str | None:
        """The permission set's name for the grant receipt; the access is granted already, so a failure
        here only loses the digest's exact role binding (it then takes any Identity Center role)."""
        try:
            return self.permission_set_name(permission_set, request_ids)
        except (TransientAccessError, PermanentAccessError) as exc:
            log.warning("could not read the name of %s: %s", permission_set, exc.message)
            return None

    def revoke(
        self, event_id: str, target: Target | None, user_id: str | None, *, pre_existing: bool = False
    ) -> RevocationReceipt:
        """End ``event_id``'s access: delete the assignment (unless standing or held by another active
        event) and deny the user's sessions issued before the deletion. Safe to call again."""
        if target is None or user_id is None:
            raise PermanentAccessError(
                "the identity-center provider needs an AWS target and an identity-store user"
            )
        requested_at = self.clock.now()
        request_ids: list[str] = []
        assignment = Assignment.of(target, user_id)
        base = {
            "provider": self.name,
            "event_id": event_id,
            "assignment": assignment,
            "requested_at": requested_at,
        }
        if pre_existing:
            return RevocationReceipt(**base, completed_at=self.clock.now(), kept="pre-existing")
        others = tuple(sorted(set(self.holders(assignment)) - {event_id}))
        if others:
            return RevocationReceipt(
                **base, completed_at=self.clock.now(), kept="held-by-other-events", other_holders=others
            )
        if self._is_assigned(assignment, request_ids):
            self._delete(assignment, request_ids)
        deleted_at = self.clock.now()
        issued_before = deleted_at + self.deny_margin
        self._deny_sessions(target, user_id, issued_before, request_ids)
        denied_at = self.clock.now()
        return RevocationReceipt(
            **base,
            completed_at=denied_at,
            assignment_deleted_at=deleted_at,
            sessions_issued_before=issued_before,
            sessions_denied_at=denied_at,
            request_ids=tuple(request_ids),
        )

    def allow_sessions_from(self, target: Target, user_id: str, moment: datetime) -> bool:
        """Pull the person's deny in ``target``'s account back to ``moment`` if it reaches past it (see the
        protocol). Sessions denied by it were issued before the revoke, which came before ``moment``."""
        request_ids: list[str] = []
        with self.policy_lock(target.permission_set):
            policy = DenyPolicy.parse(self._read_policy(target.permission_set, request_ids))
            if not policy.pull_back(target.account, user_id, moment):
                return False
            self._write_denies(target.permission_set, policy, request_ids)
        return True

    def is_assigned(self, target: Target, user_id: str) -> bool:
        return self._is_assigned(Assignment.of(target, user_id), [])

    def inspect(self, target: Target, user_id: str) -> AccessState:
        request_ids: list[str] = []
        assignment = Assignment.of(target, user_id)
        assigned = self._is_assigned(assignment, request_ids)
        policy = DenyPolicy.parse(self._read_policy(target.permission_set, request_ids))
        return AccessState(
            assignment=assignment,
            assigned=assigned,
            denied_sessions_issued_before=policy.bound(target.account, user_id),
        )

    def reconcile(
        self,
        targets: Iterable[Target],
        expected: Iterable[ExpectedAssignment],
        *,
        regrant: bool = True,
        confirm: Callable[[], Iterable[ExpectedAssignment]] | None = None,
    ) -> ReconcileReport:
        """Compare each managed target's assignments with ``expected`` (the active events' assignments):
        remove the others as drift (and deny their sessions), re-grant the vanished ones."""
        checked_at = self.clock.now()
        expected = list(expected)
        drift: list[Drift] = []
        regranted: list[GrantReceipt] = []
        missing: list[ExpectedAssignment] = []
        errors: list[str] = []
        unique_targets = list(dict.fromkeys(targets))
        for target in unique_targets:
            want = [e for e in expected if e.assignment.target == target]
            want_users = {e.assignment.user_id for e in want}
            try:
                actual = self._list_assignments(target, [])
            except (TransientAccessError, PermanentAccessError) as exc:
                errors.append(f"{target.account} {target.permission_set}: {exc.message}")
                continue
            have_users = set()
            candidates: list[tuple[str, str]] = []
            for listed in actual:
                kind, principal = listed.get("PrincipalType", "USER"), listed.get("PrincipalId", "")
                if kind == "USER" and principal in want_users:
                    have_users.add(principal)
                    continue
                candidates.append((kind, principal))
            if candidates and confirm is not None:
                # Read the events again now that the target was listed: a grant that ran since `expected`
                # was read belongs to an event stored before it, which this read sees.
                known = {e.assignment.user_id for e in confirm() if e.assignment.target == target}
                candidates = [(k, p) for k, p in candidates if not (k == "USER" and p in known)]
            for kind, principal in candidates:
                drift.append(self._remove_drift(target, kind, principal))
            for item in want:
                if item.assignment.user_id in have_users or item.pre_existing:
                    continue
                if not regrant:
                    missing.append(item)
                    continue
                try:
                    # Just listed as absent: create without listing again.
                    regranted.append(
                        self._grant(
                            item.event_id,
                            target,
                            item.assignment.user_id,
                            first_attempt=False,
                            known_absent=True,
                        )
                    )
                except (TransientAccessError, PermanentAccessError) as exc:
                    errors.append(f"re-granting {item.event_id}: {exc.message}")
                    missing.append(item)
        return ReconcileReport(
            checked_at=checked_at,
            targets_checked=len(unique_targets),
            drift=tuple(drift),
            regranted=tuple(regranted),
            missing=tuple(missing),
            errors=tuple(errors),
        )

    def _remove_drift(self, target: Target, kind: str, principal: str) -> Drift:
        request_ids: list[str] = []
        params = {
            "InstanceArn": self.instance_arn,
            "TargetId": target.account,
            "TargetType": "AWS_ACCOUNT",
            "PermissionSetArn": target.permission_set,
            "PrincipalType": kind,
            "PrincipalId": principal,
        }
        base = {"account": target.account, "permission_set": target.permission_set}
        try:
            response = self._call(self.sso, "delete_account_assignment", request_ids, **params)
            self._poll(
                response["AccountAssignmentDeletionStatus"],
                "describe_account_assignment_deletion_status",
                "AccountAssignmentDeletionRequestId",
                "AccountAssignmentDeletionStatus",
                "deleting a drifted account assignment",
                request_ids,
            )
            if kind == "USER":
                self._deny_sessions(target, principal, self.clock.now() + self.deny_margin, request_ids)
        except (TransientAccessError, PermanentAccessError) as exc:
            return Drift(
                **base, principal_type=kind, principal_id=principal, removed=False, error=exc.message
            )
        return Drift(**base, principal_type=kind, principal_id=principal, removed=True)

    def cleanup(self, targets: Iterable[Target], now: datetime) -> int:
        """Remove deny entries older than the permission set's session duration (no session issued
        before them can still be alive). Returns how many entries were removed."""
        removed = 0
        for permission_set in dict.fromkeys(t.permission_set for t in targets):
            request_ids: list[str] = []
            lifetime = self._session_lifetime(permission_set, request_ids)
            with self.policy_lock(permission_set):
                text = self._read_policy(permission_set, request_ids)
                policy = DenyPolicy.parse(text)
                dropped = policy.drop_expired(now, lifetime) if text.strip() else 0
                if dropped:
                    self._write_policy(permission_set, policy.render(), request_ids)
            removed += dropped
        return removed
