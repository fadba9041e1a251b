"""Typed errors of the use cases. `bot.slack.errors` is the one place that turns them (and the store's
errors) into what a user sees; nothing here knows about Slack."""

from __future__ import annotations

from datetime import datetime


class BreakglassError(Exception):
    """An error whose message is meant for the user who caused it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationFailed(BreakglassError):
    """Bad input. `errors` maps a field (the modal block id) to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


class AlreadyActive(ValidationFailed):
    """Refused as stacked access: the person already holds active access to the profile. The request
    itself was well formed (no usage hint helps)."""


class IncidentRefused(ValidationFailed):
    """The incident tool refused the incident named: unknown, already resolved, or not verifiable while the
    policy refuses unverified ones. The request itself was well formed (no usage hint helps)."""


class AlreadySubmitted(ValidationFailed):
    """The same request (a modal's view id, a command's trigger id) already created an event: a replayed or
    repeated submission creates nothing and announces nothing."""


class AwsAccessRefused(BreakglassError):
    """The profile grants AWS access and the person cannot be given it (no identity-store user with the
    email of their Slack profile, or the identity store could not be asked): nothing was stored."""


class NotAuthorized(BreakglassError):
    pass


class RateLimited(BreakglassError):
    """A policy rate limit refused the request; `retry_at` says when it will be allowed."""

    def __init__(self, message: str, retry_at: datetime | None) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class DirectoryUnavailable(BreakglassError):
    """Slack could not tell us who someone is or which groups they are in."""
