"""Who is who: user-group membership and invoker identity, read from Slack and cached briefly."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler

from bot.errors import DirectoryUnavailable, NotAuthorized
from bot.home_team import HomeTeam

log = logging.getLogger(__name__)


_NO_SUCH_USER = ("user_not_found", "user_not_visible")


def is_group(principal: str) -> bool:
    return principal.startswith("S")


@dataclass(frozen=True)
class Admission:
    """Who may be an invoker at all (policy `email_domains`, `allow_guests`, `allow_external_users`)."""

    email_domains: tuple[str, ...] = ()
    allow_guests: bool = False
    allow_external_users: bool = False

    def check(self, user: dict[str, Any], home_team: Callable[[], str]) -> None:
        """Raise NotAuthorized, naming why, if the Slack user (a users.info `user`) is refused."""
        if user.get("deleted"):
            raise NotAuthorized("Your Slack account is deactivated; breakglass refuses deactivated users.")
        if user.get("is_bot") or user.get("is_app_user"):
            raise NotAuthorized("Bots and apps cannot use breakglass.")
        if not self.allow_guests and (user.get("is_restricted") or user.get("is_ultra_restricted")):
            raise NotAuthorized(
                "Slack guests cannot use breakglass (the policy's allow_guests is off); ask a full member."
            )
        if not self.allow_external_users:
            team = user.get("team_id")
            if user.get("is_stranger") or (team and team != home_team()):
                raise NotAuthorized(
                    f"You are a member of another Slack workspace ({team or 'unknown'}); breakglass only "
                    "accepts members of its own workspace (the policy's allow_external_users is off)."
                )


class Directory:
    """Expands principals (user ids U.../W... and user-group ids S...) and derives invoker identities.

    Results are cached for `ttl` seconds. When Slack fails, a stale cached answer is used if there is one;
    otherwise DirectoryUnavailable is raised (never a silent "no").
    """

    def __init__(
        self,
        client: WebClient,
        *,
        ttl: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
        team_id: str | None = None,
        home: HomeTeam | None = None,
    ) -> None:
        self._client = client
        self.home = home or HomeTeam(team_id)  # the installed workspace (bot/home_team.py)
        self._ttl = ttl
        self._monotonic = monotonic
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._users: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        # users.info is asked before an invocation is acknowledged: when Slack is down, fail fast (one
        # connection retry, no 5xx backoff) and fall back to the cache or the policy's rule, instead of
        # making Slack's 3-second acknowledgement window run out.
        self._lookup_client = WebClient(
            token=client.token,
            base_url=client.base_url,
            timeout=min(client.timeout, 3),
            retry_handlers=[ConnectionErrorRetryHandler(max_retry_count=1)],
        )

    @property
    def ttl(self) -> float:
        """How long a Slack answer is cached, in seconds."""
        return self._ttl

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

    def members(self, principals: Iterable[str]) -> set[str]:
        result: set[str] = set()
        for principal in principals:
            result |= self.group_members(principal) if is_group(principal) else {principal}
        return result

    def user(self, user_id: str) -> dict[str, Any]:
        user: dict[str, Any] = self._cached(
            self._users,
            user_id,
            lambda: dict(self._lookup_client.users_info(user=user_id)["user"]),
            "Could not look up your Slack profile. Try again shortly.",
        )
        return user

    def home_team(self) -> str:
        """The workspace the bot is installed in (bot/home_team.py), without calling Slack: while it is not
        known, DirectoryUnavailable (and the background learner is asked to try now)."""
        team = self.home.team_id
        if team is None:
            self.home.nudge()
            raise DirectoryUnavailable(
                "breakglass has not yet confirmed which Slack workspace it is installed in (Slack did not "
                "answer since it started). Try again shortly."
            )
        return team

    def identity(self, user_id: str, mode: str, admission: Admission | None = None) -> str:
        """The invoker identity for a Slack user: slack_id, email, or email_local_part (policy `identity`).

        Raises NotAuthorized for users `admission` refuses (deleted users always; guests, users of other
        workspaces and email domains outside the allow-list unless the policy allows them)."""
        admission = admission or Admission()
        try:
            user = self.user(user_id)
        except DirectoryUnavailable as exc:
            cause = exc.__cause__
            if isinstance(cause, SlackApiError) and cause.response.get("error") in _NO_SUCH_USER:
                raise NotAuthorized("Slack does not know your account in this workspace.") from exc
            if mode != "slack_id":
                raise
            # Slack's Web API is down and nothing is cached: an emergency is not refused for it (the
            # request itself was signed by Slack); the audit trail names the Slack user id as always.
            log.warning(
                "could not check whether %s is a guest, external or deactivated (Slack unavailable); "
                "admitted by user id",
                user_id,
                extra={"slack_user": user_id, "action": "admission", "outcome": "unchecked"},
            )
            return user_id
        admission.check(user, self.home_team)
        if mode == "slack_id":
            return user_id
        email = (user.get("profile") or {}).get("email")
        if not email:
            raise DirectoryUnavailable(
                "Your Slack profile has no email address visible to breakglass (identity is by email); "
                "ask an admin to check the app's users:read.email scope."
            )
        email = str(email)
        domain = email.rsplit("@", 1)[-1].lower()
        if admission.email_domains and domain not in admission.email_domains:
            raise NotAuthorized(
                f"Your Slack email address is in the domain {domain!r}, which breakglass does not accept "
                f"(policy email_domains: {', '.join(admission.email_domains)})."
            )
        return email if mode == "email" else email.split("@", 1)[0]
