"""Who someone is, for the close, review and extend forms: resolved when the form opens, so the submission
is decided without a round trip to Slack before its ack.

When one of those forms opens (after the click or command that asked for it was acknowledged), breakglass
looks the person up: their membership of each user group the policy's `incident_commanders` and `security`
name, and — when the policy's `identity` is not the Slack id — their invoker identity (a review's separation
of duties). The answers go into the form's `private_metadata` as a `KnownRoles` (bot.slack.roles_meta).

On submission the use case runs against a `KnownDirectory`: a directory that answers only from those
answers and raises `invoker.Unresolved` for anything else, before anything is stored. So authorization is
the same code as always, and what the answers do not cover — they are missing, for another user or view,
older than the directory's cache would be (`fresh`), or the decision needs something else from Slack
(e.g. who else may review) — is decided again after the ack with live lookups. Nothing here is the user's:
a `KnownRoles` is the bot's own earlier answer, used only for the user Slack signed the submission for."""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from bot.directory import Admission, Directory, is_group
from bot.errors import DirectoryUnavailable, NotAuthorized
from bot.invoker import CLOCK_TOLERANCE, Unresolved

if TYPE_CHECKING:
    from bot.service import BreakGlassService

log = logging.getLogger(__name__)

ROLES = "your roles"  # what `Unresolved.what` names (shown as "Checking your roles…")


class KnownRoles(BaseModel):
    """What was resolved about one Slack user when a close, review or extend form opened for them."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    user_id: str
    view: str
    """The `external_id` of the view it was put in: used only for a submission of that view."""
    at: datetime
    """When it was resolved (the bot's clock, UTC)."""
    groups: dict[str, bool] = {}
    """Per user group of `incident_commanders` and `security`: a member then (absent: not known)."""
    identity: str | None = None
    """Their invoker identity, when the policy's `identity` is not the Slack id and they were admitted."""

    def fresh(self, now: datetime, max_age: timedelta) -> bool:
        """No older than the directory's cache would answer (`max_age`, its TTL): authorization from these
        answers is never staler than from the cache. Another replica may have resolved it on a clock up
        to the skew bound ahead (bot.skew)."""
        return -CLOCK_TOLERANCE <= now - self.at <= max_age


def resolve(service: BreakGlassService, user_id: str, view: str) -> KnownRoles:
    """Look `user_id` up now (their form is opening). A lookup that fails leaves its answer unknown, so a
    submission that needs it makes it again after its ack."""
    policy = service.policy
    groups: dict[str, bool] = {}
    for group in dict.fromkeys(p for p in (*policy.incident_commanders, *policy.security) if is_group(p)):
        with contextlib.suppress(DirectoryUnavailable):  # not known: looked up again if needed
            groups[group] = user_id in service.directory.group_members(group)
    identity = None
    if policy.identity != "slack_id":
        with contextlib.suppress(NotAuthorized, DirectoryUnavailable):  # asked again live, which says why
            identity = service.identity(user_id)
    return KnownRoles(user_id=user_id, view=view, at=service.clock.now(), groups=groups, identity=identity)


class KnownDirectory(Directory):
    """A directory without Slack: it answers about `user_id` from `known` (None: nothing known) and raises
    `Unresolved` for every question that would need a lookup. Nothing in it calls Slack."""

    def __init__(self, user_id: str, known: KnownRoles | None) -> None:  # no super(): no Slack client
        self.user_id = user_id
        self.known = known if known is not None and known.user_id == user_id else None

    def is_member(self, user_id: str, principals: Iterable[str]) -> bool:
        principals = list(principals)
        if user_id in principals:
            return True
        groups = [p for p in principals if is_group(p)]
        if not groups:
            return False
        if self.known is None or user_id != self.user_id:
            raise Unresolved(ROLES)
        for group in groups:
            member = self.known.groups.get(group)
            if member is None:
                raise Unresolved(ROLES)
            if member:
                return True
        return False

    def group_members(self, group_id: str) -> frozenset[str]:
        raise Unresolved("who is in " + group_id)

    def members(self, principals: Iterable[str]) -> set[str]:
        raise Unresolved("who else has that role")

    def user(self, user_id: str) -> dict[str, Any]:
        raise Unresolved("your Slack profile")

    def home_team(self) -> str:
        raise Unresolved("your workspace")

    def identity(self, user_id: str, mode: str, admission: Admission | None = None) -> str:
        if self.known is not None and user_id == self.user_id and self.known.identity is not None:
            return self.known.identity
        raise Unresolved("who you are")

    @property
    def ttl(self) -> float:
        return 0.0


def known_service(service: BreakGlassService, user_id: str, known: KnownRoles | None) -> BreakGlassService:
    """`service` deciding about `user_id` from `known` alone (a shallow copy sharing the store, policy, clock
    and everything else, its directory a `KnownDirectory`): the same use cases, no Slack round trip."""
    decided = copy.copy(service)
    decided.directory = KnownDirectory(user_id, known)
    return decided
