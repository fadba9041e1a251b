"""The policy's ``incidents:`` block and each profile's ``close_on_resolve`` and ``oncall`` rules.

Kept apart from :mod:`bot.policy` (which embeds these models) so that the incident providers never
import the whole policy module."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.durations import Duration, PositiveDuration, compact_duration

IncidentProviderName = Literal["none", "pagerduty", "incident-io"]
CloseOnResolve = Literal[True, False, "warn"]
_ToolId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
MIN_POLL_EVERY = timedelta(minutes=1)


class IncidentsPolicy(BaseModel):
    """``incidents:``: which incident tool the incident field links to, and what happens when it is down."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: IncidentProviderName = "none"
    """``none`` (default): the incident field is free text; ``pagerduty`` or ``incident-io``: it must name
    an open incident of that tool, which is linked to the event."""
    on_unreachable: Literal["allow", "refuse"] = "allow"
    """When the tool cannot be asked: ``allow`` (default; the audit message says the incident is
    unverified) or ``refuse``. Break-glass must work in the outage that takes the incident tool down."""
    poll_every: PositiveDuration = timedelta(minutes=3)
    """How often the sweep asks the tool about the incidents of active events (catches a lost webhook)."""
    oncall_cache: Duration = timedelta(minutes=5)
    """How long an on-call answer is reused: it is looked up when the modal opens, and the submission (often
    minutes later) must find it, so the lookup never runs inside Slack's 3-second answer."""

    @field_validator("poll_every")
    @classmethod
    def _poll(cls, value: timedelta) -> timedelta:
        if value < MIN_POLL_EVERY:
            raise ValueError("must be at least 1m (the tools rate-limit their APIs)")
        return value

    @field_validator("oncall_cache")
    @classmethod
    def _cache(cls, value: timedelta) -> timedelta:
        if not timedelta(0) <= value <= timedelta(minutes=15):
            raise ValueError("must be between 0s and 15m")
        return value


class OncallRule(BaseModel):
    """A profile's ``oncall:``: who is on call now on these schedules or escalation policies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedules: tuple[_ToolId, ...] = ()
    escalation_policies: tuple[_ToolId, ...] = ()
    require: bool = True
    """``true``: only those on call now may invoke; ``false``: anyone may, and the audit message says
    whether the invoker is on call."""

    @model_validator(mode="after")
    def _some(self) -> OncallRule:
        if not self.schedules and not self.escalation_policies:
            raise ValueError("list at least one schedule or escalation policy id")
        return self


def incident_problems(
    incidents: IncidentsPolicy, oncall_rules: dict[str, OncallRule | None]
) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-checks between ``incidents:`` and the profiles' ``oncall`` (locations from the policy's root)."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for name, oncall in oncall_rules.items():
        if incidents.provider == "none" and oncall is not None:
            problems.append(
                (("profiles", name, "oncall"), "needs incidents.provider pagerduty or incident-io")
            )
        if oncall is not None and incidents.provider == "incident-io" and oncall.escalation_policies:
            problems.append(
                (
                    ("profiles", name, "oncall", "escalation_policies"),
                    "incident.io on-call is read from schedules: list schedule ids",
                )
            )
    return problems


def summary_lines(incidents: IncidentsPolicy) -> list[str]:
    """The ``incidents:`` block in the policy summary (nothing with provider ``none``)."""
    if incidents.provider == "none":
        return []
    return [
        f"Incident tool: {incidents.provider}; when unreachable: {incidents.on_unreachable}; "
        f"linked incidents polled every {compact_duration(incidents.poll_every)}"
    ]


def profile_lines(
    incidents: IncidentsPolicy, close_on_resolve: CloseOnResolve, oncall: OncallRule | None
) -> list[str]:
    if incidents.provider == "none":
        return []
    words = {True: "close the event", False: "nothing", "warn": "DM the holder"}
    lines = [f"    when the incident resolves: {words[close_on_resolve]}"]
    if oncall is not None:
        on = ", ".join([*oncall.schedules, *oncall.escalation_policies])
        lines.append(f"    on call ({on}): {'required' if oncall.require else 'noted'}")
    return lines
