"""``check-policy --aws``: how much room each permission set's inline policy leaves for breakglass's denies.

The operator's own statements in a break-glass permission set's inline policy count against IAM's role
policy quota (:data:`~bot.access.denies.ROLE_POLICY_LIMIT`, without whitespace) together with the denies that
end revoked sessions. A policy that leaves little room makes revokes fail (loudly, but their sessions are then
not denied) once enough people were revoked inside one session duration: warn before that happens.
"""

from __future__ import annotations

from typing import Any

from bot.access.base import AccessError
from bot.access.denies import LOW_ROOM, ROLE_POLICY_LIMIT, room_left


def room_warnings(instance_arn: str, permission_sets: list[str], sso: Any | None = None) -> list[str]:
    """One line per permission set whose inline policy leaves fewer than :data:`LOW_ROOM` characters (or
    that could not be read)."""
    from bot.access.identity_center import IdentityCenterProvider

    provider = IdentityCenterProvider(
        instance_arn, "-", sso_admin=sso, identitystore=object(), max_attempts=2, sleep=lambda _s: None
    )
    warnings = []
    for permission_set in dict.fromkeys(permission_sets):
        try:
            left = room_left(provider.read_inline_policy(permission_set))
        except AccessError as exc:
            warnings.append(f"could not read the inline policy of {permission_set}: {exc.message}")
            continue
        if left < LOW_ROOM:
            warnings.append(
                f"the inline policy of {permission_set} leaves {max(left, 0)} of IAM's {ROLE_POLICY_LIMIT} "
                f"characters (not counting whitespace) for the denies that end revoked sessions; fewer than "
                f"{LOW_ROOM} means revokes can fail once about {max(left, 0) // 40} people were revoked inside "
                "one session duration on one account: move statements into a managed policy"
            )
    return warnings
