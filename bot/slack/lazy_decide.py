"""Lambda: decisions that need a lookup run after the ack there too.

On threaded runtimes a listener acks, then does the rest with `SlackContext.call_after_ack`. On Lambda
nothing runs after the response, so a listener that owes work after its ack gets a Bolt *lazy listener*
(`lambda_lazy_decide`): Bolt's `LambdaLazyListenerRunner` re-invokes the function asynchronously with the
same signed request, and there the lazy listener REDOES the decision from that request alone (nothing from
the ack's closure survives), then delivers what is owed (as `lambda_lazy_delivery` does for the others).

A lazy invocation may be retried by Lambda: a redo never stores twice. An invocation is keyed by its
request (the modal's view id, the command's trigger id), so the store refuses a second create
(`DuplicateRequest`), and `already_granted` turns that into the first attempt's answer; a close of an
ended event changes nothing; refusal notices are keyed by the request too. The close, review and extend
forms (`form_redo`) are redone the same way (bot.slack.roles_meta); an extension carries its request's id
(the view id; a command's trigger id) and the store refuses a second one (DuplicateRequest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import BoltContext

from bot.errors import AlreadyActive, AlreadySubmitted
from bot.service import InvokeRequest
from bot.slack.context import SlackContext
from store import BreakGlassEvent, DuplicateRequest, StackedAccess, StoreError

LAZY_DECIDE_NAME = "lambda_lazy_decide"

Redo = Callable[[BoltContext, dict[str, Any], Any], None]


def deciding(redo: Redo, delivery: list[Callable[..., None]]) -> list[Callable[..., None]]:
    """The lazy listeners of a listener that owes work after its ack: on Lambda (`delivery` holds the lazy
    delivery) one that redoes the decision from the request, then delivers; elsewhere none."""
    if not delivery:
        return []
    (deliver,) = delivery

    def lambda_lazy_decide(body: dict[str, Any], context: BoltContext, respond: Any) -> None:
        try:
            redo(context, body, respond)
        finally:
            deliver()  # whatever the redo stored (or an earlier attempt did) is announced now

    return [lambda_lazy_decide]


def form_redo(listener: Callable[[Any, dict[str, Any], dict[str, Any], BoltContext], None]) -> Redo:
    """The redo of a close, review or extend form's submission: its listener run again on the same request
    with no ack (bot.slack.roles_meta.submit then decides what the ack left "Checking …")."""

    def redo(context: BoltContext, body: dict[str, Any], _respond: Any) -> None:
        listener(None, body, body.get("view") or {}, context)

    return redo


def already_granted(ctx: SlackContext, exc: Exception, request: InvokeRequest) -> BreakGlassEvent | None:
    """The event this very request already created (the ack did, or an earlier attempt of a retried lazy
    invocation), when `exc` refused it for that (stacked on it, or a repeated request); None otherwise."""
    cause = exc.__cause__
    if isinstance(cause, StackedAccess):  # the store checks stacking first
        event: BreakGlassEvent = cause.existing
    elif isinstance(cause, DuplicateRequest):
        try:
            event = ctx.service.store.get(cause.event_id)
        except StoreError:
            return None
    else:
        return None
    same = request.request_id is not None and event.request_id == request.request_id
    return event if same and event.slack_user_id == request.user_id else None


def invoke_once(ctx: SlackContext, request: InvokeRequest) -> BreakGlassEvent:
    """`service.invoke(request)`; when this very request was already granted (a retried lazy invocation, or
    the ack did it), that grant instead of the refusal."""
    try:
        return ctx.service.invoke(request)
    except (AlreadySubmitted, AlreadyActive) as exc:
        granted = already_granted(ctx, exc, request)
        if granted is None:
            raise
        return granted
