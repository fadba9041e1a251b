"""What the incident tool means to the use cases: the incident field looked up and linked at invoke, the
profile's on-call rule, access ended when the linked incident resolves (webhook or the sweep's poll).

Every change is a store write owing its outbox steps, delivered by the one pipeline: a close on resolve is
an ordinary close (audit thread, DM, revoke), recorded as closed by the tool."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from bot import ids
from bot.clock import Clock
from bot.directory import Directory
from bot.errors import DirectoryUnavailable, IncidentRefused, NotAuthorized
from bot.incidents.base import IncidentNotFound, IncidentProvider, IncidentUnreachable, TtlCache
from bot.incidents.policy import IncidentsPolicy, OncallRule
from store import BreakGlassEvent, Store, mutate
from store.model import IncidentLink, OutboxKind

if TYPE_CHECKING:
    from bot.service import BreakGlassService

log = logging.getLogger(__name__)

HINTS = {
    "pagerduty": "id, number or URL",
    "incident-io": "reference (INC-123) or URL",
}


class IncidentLinks:
    def __init__(
        self,
        *,
        provider: IncidentProvider,
        policy: IncidentsPolicy,
        store: Store,
        directory: Directory,
        clock: Clock,
        after_change: Callable[[str], None] = lambda _event_id: None,
    ) -> None:
        self.provider = provider
        self.policy = policy
        self.store = store
        self.directory = directory
        self.clock = clock
        self.oncall_cache = TtlCache(policy.oncall_cache.total_seconds())
        self.service: BreakGlassService | None = None  # set by the service that uses these links
        self.after_change = after_change  # hand a stored change to the delivery (the post-ack queue)

    @property
    def enabled(self) -> bool:
        return self.provider.name != "none"

    @property
    def hint(self) -> str:
        """What the modal's incident field asks for."""
        if not self.enabled:
            return "Ticket id or URL"
        return f"{self.provider.label} incident: {HINTS.get(self.provider.name, 'its id, number or URL')}"

    # -- invoke ---------------------------------------------------------------------------------

    def link(self, reference: str) -> IncidentLink | None:
        """Look up what the person typed; IncidentRefused (nothing stored) for an unknown or resolved
        incident, or when the tool is unreachable and the policy says `on_unreachable: refuse`."""
        if not self.enabled:
            return None
        label = self.provider.label
        try:
            incident = self.provider.lookup(reference)
        except IncidentNotFound as exc:
            raise IncidentRefused({ids.INCIDENT: f"{exc.message}. Check the incident in {label}."}) from exc
        except IncidentUnreachable as exc:
            log.warning("incident lookup failed: %s", exc.message, extra={"action": "incident_lookup"})
            if self.policy.on_unreachable == "refuse":
                raise IncidentRefused(
                    {ids.INCIDENT: f"{exc.message}, and the policy refuses unverified incidents. Try again."}
                ) from exc
            return IncidentLink(
                provider=self.provider.name, id=reference, reference=reference, verified=False
            )
        if incident.resolved:
            raise IncidentRefused(
                {
                    ids.INCIDENT: f"{label} incident {incident.reference} is already resolved: name an open one."
                }
            )
        return IncidentLink(
            provider=incident.provider,
            id=incident.id,
            reference=incident.reference,
            title=incident.title,
            url=incident.url,
        )

    def oncall_now(self, rule: OncallRule) -> frozenset[str]:
        """Emails on call now on the rule's schedules and escalation policies (cached briefly)."""
        key = (rule.schedules, rule.escalation_policies)
        cached = self.oncall_cache.get(key)
        if cached is not None:
            return cached
        emails = self.provider.oncall_emails(rule.schedules, rule.escalation_policies)
        self.oncall_cache.put(key, emails)
        return emails

    def check_oncall(
        self, user_id: str, profile_name: str, rule: OncallRule | None
    ) -> Literal["yes", "no", "unknown"] | None:
        """Is the person on call under `rule`? NotAuthorized when the rule requires it and they are not
        (or it cannot be told and the policy refuses then); "unknown" when it cannot be told and the
        policy allows it (announced in the audit message); None: no rule."""
        if rule is None or not self.enabled:
            return None
        try:
            email = str(((self.directory.user(user_id).get("profile") or {}).get("email")) or "").lower()
            on_call = bool(email) and email in self.oncall_now(rule)
        except (IncidentUnreachable, DirectoryUnavailable) as exc:
            message = getattr(exc, "message", str(exc))
            if rule.require and self.policy.on_unreachable == "refuse":
                raise NotAuthorized(
                    f"{profile_name!r} is for whoever is on call, and {self.provider.label} could not be "
                    f"asked ({message}). Try again in a moment."
                ) from exc
            log.warning(
                "on-call lookup failed: %s", message, extra={"action": "oncall", "outcome": "unknown"}
            )
            return "unknown"
        if rule.require and not on_call:
            raise self.not_on_call(profile_name)
        return "yes" if on_call else "no"

    def not_on_call(self, profile_name: str) -> NotAuthorized:
        """The refusal of someone not on call for a profile whose rule requires it."""
        return NotAuthorized(
            f"{profile_name!r} is for whoever is on call now in {self.provider.label}, and you are not "
            "(matched by your Slack email address)."
        )

    # -- resolve --------------------------------------------------------------------------------

    def linked_active(self, incident_id: str | None = None) -> list[BreakGlassEvent]:
        return [
            e
            for e in self.store.list_active()
            if e.incident_link is not None
            and e.incident_link.provider == self.provider.name
            and (incident_id is None or e.incident_link.id == incident_id)
        ]

    def incident_resolved(self, incident_id: str) -> int:
        """The tool says `incident_id` resolved: each active event linked to it is closed, or its holder
        warned, or only marked, as its profile's `close_on_resolve` says. Returns how many were closed."""
        assert self.service is not None
        closed = 0
        for event in self.linked_active(incident_id):
            link = event.incident_link
            assert link is not None
            profile = self.service.policy.profile(event.profile)
            mode = True if profile is None else profile.close_on_resolve
            if mode is True:
                result = self.service.close(
                    event.id,
                    by=self.provider.label,
                    reason=f"incident {link.reference} resolved in {self.provider.label}",
                    operator=True,
                )
                closed += result.closed_now
                if result.closed_now:
                    self.after_change(event.id)
                continue
            self._mark_resolved(event.id, warn=mode == "warn")
        return closed

    def _mark_resolved(self, event_id: str, *, warn: bool) -> None:
        """Record that the incident resolved (the poll stops asking); `warn`: owe the holder's DM."""
        now = self.clock.now()

        def mark(ev: BreakGlassEvent) -> BreakGlassEvent | None:
            if ev.incident_link is None or ev.incident_link.resolved_at is not None or ev.status.ended:
                return None
            ev = ev.updated(incident_link=ev.incident_link.model_copy(update={"resolved_at": now}))
            return ev.with_outbox(OutboxKind.INCIDENT_RESOLVED_DM) if warn else ev

        mutate(self.store, event_id, mark)
        if warn:
            self.after_change(event_id)

    def poll(self) -> int:
        """Ask the tool about every incident linked to an active event (catches a lost webhook)."""
        pending = {
            e.incident_link.id
            for e in self.linked_active()
            if e.incident_link is not None
            and e.incident_link.resolved_at is None
            and e.incident_link.verified
        }
        closed = 0
        for incident_id in sorted(pending):
            try:
                incident = self.provider.get(incident_id)
            except IncidentNotFound:
                continue
            if incident.resolved:
                closed += self.incident_resolved(incident_id)
        return closed


def incident_note(event: BreakGlassEvent) -> list[OutboxKind]:
    """The timeline note a change to `event` owes: when it is linked to a verified incident."""
    link = event.incident_link
    return [OutboxKind.INCIDENT_NOTE] if link is not None and link.verified else []
