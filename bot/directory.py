"""Who is who: user-group membership and invoker identity, read from Slack and cached briefly."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.errors import DirectoryUnavailable

log = logging.getLogger(__name__)


def is_group(principal: str) -> bool:
    return principal.startswith("S")


class Directory:
    """Expands principals (user ids U.../W... and user-group ids S...) and derives invoker identities.

    Results are cached for `ttl` seconds. When Slack fails, a stale cached answer is used if there is one;
    otherwise DirectoryUnavailable is raised (never a silent "no").
    """

    def __init__(
        self, client: WebClient, *, ttl: float = 60.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._monotonic = monotonic
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._users: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def _cached(
        self,
        cache: dict[str, tuple[float, Any]],
        key: str,
        fetch: Callable[[], Any],
        unavailable: str,
    ) -> Any:
        """`fetch()` at most once per `ttl` per key; on a Slack failure, a stale answer if there is one."""
        now = self._monotonic()
        with self._lock:
            cached = cache.get(key)
        if cached and now - cached[0] < self._ttl:
            return cached[1]
        try:
            value = fetch()
        except (SlackApiError, SlackClientError, OSError, KeyError) as exc:
            if cached:
                log.warning("Slack lookup of %s failed, using the cached answer: %s", key, exc)
                return cached[1]
            raise DirectoryUnavailable(unavailable) from exc
        with self._lock:
            cache[key] = (now, value)
        return value

    def group_members(self, group_id: str) -> frozenset[str]:
        members: frozenset[str] = self._cached(
            self._groups,
            group_id,
            lambda: frozenset(self._client.usergroups_users_list(usergroup=group_id).get("users") or []),
            "Could not read user-group membership from Slack to check your permissions. Try again shortly.",
        )
        return members

    def is_member(self, user_id: str, principals: Iterable[str]) -> bool:
        """Is `user_id` one of `principals` (directly or via a user group)?"""
        principals = list(principals)
        if user_id in principals:
            return True
        return any(is_group(p) and user_id in self.group_members(p) for p in principals)

    def user(self, user_id: str) -> dict[str, Any]:
        user: dict[str, Any] = self._cached(
            self._users,
            user_id,
            lambda: dict(self._client.users_info(user=user_id)["user"]),
            "Could not look up your Slack profile. Try again shortly.",
        )
        return user

    def identity(self, user_id: str, mode: str) -> str:
        """The invoker identity for a Slack user: slack_id, email, or email_local_part (policy `identity`)."""
        if mode == "slack_id":
            return user_id
        email = (self.user(user_id).get("profile") or {}).get("email")
        if not email:
            raise DirectoryUnavailable(
                "Your Slack profile has no email address visible to breakglass (identity is by email); "
                "ask an admin to check the app's users:read.email scope."
            )
        return str(email) if mode == "email" else str(email).split("@", 1)[0]
