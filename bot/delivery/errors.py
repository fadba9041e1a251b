"""What a delivery step raises, and the Slack answers the engine tells apart: a failed step stays owed and is
retried after a backoff."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError, SlackClientError

SLACK_ERRORS = (SlackApiError, SlackClientError, OSError)

# Slack's answers (chat.postMessage, chat.update, conversations.history) that say the channel itself refuses
# the bot, for good: retrying the same call cannot succeed until someone changes the channel.
AUDIT_CHANNEL_ERRORS = frozenset(
    {
        "channel_not_found",  # deleted, or private and the bot is not in it
        "not_in_channel",  # the bot was removed (a public channel is joined again, then posted to)
        "is_archived",
        "restricted_action",  # posting restricted by the workspace's settings
        "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel",
        "restricted_action_non_threadable_channel",
        "team_access_not_granted",  # a shared channel the workspace lost access to
        "ekm_access_denied",
    }
)
# Per recipient of an audit fallback: answers that mean this recipient can never receive it.
UNREACHABLE_RECIPIENT = AUDIT_CHANNEL_ERRORS | {"user_not_found", "user_disabled", "cannot_dm_bot"}


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


def slack_error(exc: SlackApiError) -> str | None:
    """Slack's error code of a refused call (`channel_not_found`, `ratelimited`, …)."""
    return exc.response.get("error") if exc.response is not None else None


def describe(exc: Exception) -> str:
    """A failure for the log: Slack's status and error, or the exception's type (and a DeliveryFailed's text)."""
    if isinstance(exc, SlackApiError):
        return f"Slack answered {exc.response.status_code} {exc.response.get('error')}"
    return type(exc).__name__ + (f": {exc}" if isinstance(exc, DeliveryFailed) else "")
