"""The one place where errors become what a user sees: inline modal errors or an ephemeral message.

Domain errors carry a message for the user. Anything unexpected is logged with a reference the user
is given, so nobody is left staring at a spinner or at nothing.
"""

from __future__ import annotations

import logging
import secrets

from bot import metrics
from bot.errors import AlreadySubmitted, BreakglassError, ValidationFailed
from store import EventNotFound, InvalidTransition, StoreUnavailable

log = logging.getLogger(__name__)

STORE_DOWN = (
    "Could not reach the break-glass store, so nothing was recorded and no access was granted or changed. "
    "Try again in a moment; if it keeps failing, tell security."
)
STORE_UNCERTAIN = (
    "The break-glass store did not answer in time, so we cannot tell whether your request was recorded. "
    "Check `/breakglass list` before trying again: if it was recorded, it is announced as usual."
)


def user_message(exc: BaseException) -> str:
    """Plain text for the user (escape it before putting it in mrkdwn)."""
    metrics.refused(exc)
    if isinstance(exc, ValidationFailed):
        return " ".join(exc.errors.values())
    if isinstance(exc, BreakglassError):
        return exc.message
    if isinstance(exc, EventNotFound):
        return f"There is no break-glass event with id {exc.event_id}."
    if isinstance(exc, InvalidTransition):
        return f"Event {exc.event.id} cannot be changed: {exc.reason}."
    if isinstance(exc, StoreUnavailable):
        return STORE_UNCERTAIN if exc.maybe_written else STORE_DOWN
    reference = secrets.token_hex(4)
    log.error("unexpected error (reference %s)", reference, exc_info=exc, extra={"outcome": "error"})
    return (
        f"Something went wrong on our side (reference {reference}). Your request may not have been applied: "
        "check `/breakglass list` before retrying, and tell security if it persists."
    )


def modal_errors(
    exc: BaseException, fields: tuple[str, ...], default_field: str | None = None
) -> dict[str, str]:
    """`response_action: errors` for a modal: one message per input block id (plain text, <= 150 chars
    is what Slack shows comfortably; longer is allowed but wraps)."""
    target = default_field or fields[0]
    if isinstance(exc, ValidationFailed):
        metrics.refused(exc)
        return _by_field(exc, fields, target)
    return {target: user_message(exc)}


def field_errors(exc: BaseException, fields: tuple[str, ...]) -> dict[str, str] | None:
    """What `modal_errors` would show for `exc`, when every part of it belongs to one of the form's
    `fields`; None when it belongs to none: not bad input (on call, rate limits, the store, the identity
    store), a repeated request (the form would not help), or an error about something the form does not
    ask. Not counted as a refusal (`user_message` counts it when it is shown)."""
    if not isinstance(exc, ValidationFailed) or isinstance(exc, AlreadySubmitted):
        return None
    if not exc.errors or any(field not in fields for field in exc.errors):
        return None
    return _by_field(exc, fields, fields[0])


def _by_field(exc: ValidationFailed, fields: tuple[str, ...], target: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    for field, message in exc.errors.items():
        key = field if field in fields else target
        errors[key] = (errors[key] + " " + message) if key in errors else message
    return errors
