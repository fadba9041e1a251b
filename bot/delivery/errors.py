"""What a delivery step raises: a failed step stays owed and is retried after a backoff."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError, SlackClientError

SLACK_ERRORS = (SlackApiError, SlackClientError, OSError)


class DeliveryFailed(Exception):
    pass


class LeaseLost(DeliveryFailed):
    """The delivery's lease ran out or was taken over during a wait: the next send must not start."""


class AuditChannelBroken(DeliveryFailed):
    """The audit channel refused a send for good (one of AUDIT_CHANNEL_ERRORS, after a join if possible)."""

    def __init__(self, channel: str, error: str) -> None:
        super().__init__(f"audit channel {channel} is broken: {error}")
        self.channel = channel
        self.error = error
