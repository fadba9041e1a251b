"""The close, review and extend forms decide without a round trip before their ack (bot.known_roles).

Opening one (after the click or command was acknowledged): the opener's roles are resolved and carried in
the form's `private_metadata` (`who`, a `KnownRoles`), and the view gets a fresh `external_id` that the
answers are bound to. Submitting one: the use case runs against those answers only (`known_for` checks them:
the user Slack signed, the view submitted — by its `external_id` —, fresh), so the only I/O before the ack is
the store. When the answers do not cover the decision (missing, someone else's, stale, or it needs another
lookup) nothing is stored, the ack shows "Checking …", and the decision is made after the ack with live
lookups and shown in the same modal (`views.update`; a DM when that fails). Every field still comes from
the submitted form.

On Lambda nothing runs after the response, so there the ack of an uncovered submission is "Checking …" too
and Bolt's lazy listener (bot.slack.lazy_decide) decides it in a second invocation, from the same signed
request: `submit` with no `ack` tells, without writing (`covered`), whether the ack decided it, and if not
decides live. A retry of that run changes nothing twice: a close of an ended event changes nothing, a
review already made by the same person with the same notes is that review, an extension carries its
request's id (the view id) and the store refuses a second one."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

from slack_bolt import Ack
from slack_sdk.errors import SlackApiError, SlackClientError

from bot import blocks, known_roles
from bot.invoker import Unresolved
from bot.known_roles import KnownRoles
from bot.service import BreakGlassService
from bot.slack.context import SlackContext
from bot.slack.errors import modal_errors, user_message
from store import BreakGlassEvent, Store
from store.base import EVENT_READS

log = logging.getLogger(__name__)

# A decision: the use case run against a service; returns the event it changed, the view that replaces the
# form (None: the form just closes), and whether the event's owed steps are to be delivered now.
Decision = Callable[[BreakGlassService], tuple[BreakGlassEvent, dict[str, Any] | None, bool]]


def opened(ctx: SlackContext, user_id: str) -> KnownRoles:
    """The opener's roles, for a form about to be opened, bound to a new view `external_id`."""
    return known_roles.resolve(ctx.service, user_id, "bg-" + secrets.token_hex(12))


def bind(view: dict[str, Any], who: KnownRoles) -> dict[str, Any]:
    """`view` (its private_metadata carrying `who`), with the external_id `who` is bound to."""
    return {**view, "external_id": who.view}


def known_for(
    ctx: SlackContext, body: dict[str, Any], view: dict[str, Any], who: KnownRoles | None
) -> KnownRoles | None:
    """`who` if it may decide this submission: the user Slack signed, the view submitted, fresh."""
    if who is None:
        return None
    user_id = (body.get("user") or {}).get("id")
    if who.user_id != user_id or not view.get("external_id") or who.view != view.get("external_id"):
        log.warning(
            "form metadata is for another user or view: not used",
            extra={"slack_user": user_id, "outcome": "metadata_mismatch"},
        )
        return None
    if not who.fresh(ctx.clock.now(), timedelta(seconds=ctx.service.directory.ttl)):
        return None
    return who


def submit(
    ctx: SlackContext,
    ack: Ack | None,
    body: dict[str, Any],
    view: dict[str, Any],
    who: KnownRoles | None,
    fields: tuple[str, ...],
    decide: Decision,
    refused_title: str,
    done_title: str,
) -> None:
    """Decide a form's submission from what its opening resolved (`who`), answering in the ack; or, when
    that does not cover it, answer "Checking …" and decide after the ack. `refused_title`: the outcome's
    title when it is refused after the ack; `done_title`: when it succeeded and `decide` closes the form.
    `ack` None: Lambda's lazy run of the same request, which decides what its ack left "Checking …"."""
    user_id = body["user"]["id"]
    known = known_for(ctx, body, view, who)
    after = (decide_live, ctx, str(view.get("id") or ""), user_id, decide, refused_title, done_title)
    if ack is None:
        if not covered(ctx, user_id, known, decide):
            after[0](*after[1:])
        return
    try:
        answer_in_ack(ctx, ack, fields, decide, known_roles.known_service(ctx.service, user_id, known))
    except Unresolved as exc:
        from bot.slack.views import CHECKING_TITLE  # the invoke form's (views imports this module)

        ack(
            response_action="update",
            view=blocks.notice_modal(CHECKING_TITLE, f":hourglass_flowing_sand: Checking {exc.what}…"),
        )
        if ctx.background is not None:  # Lambda: its lazy run decides it (`ack` None, above)
            ctx.call_after_ack(*after)


def covered(ctx: SlackContext, user_id: str, known: KnownRoles | None, decide: Decision) -> bool:
    """Whether the ack decided the submission from `known` (as `submit` does), found out without writing:
    `decide` runs against the known roles and a store that refuses every write (`ReadOnlyStore`); only
    `Unresolved` (raised before anything is written) means it was left to decide after the ack."""
    service = known_roles.known_service(ctx.service, user_id, known)
    service.store = cast(Store, ReadOnlyStore(service.store))
    try:
        decide(service)
    except Unresolved:
        return False
    except Exception:  # noqa: BLE001 - WouldWrite (the ack wrote), or refused in the ack: decided there
        return True
    return True


class WouldWrite(Exception):
    """`ReadOnlyStore` was asked to write."""


class ReadOnlyStore:
    """A store's reads; every other method raises WouldWrite when called."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if name in EVENT_READS or not callable(found):
            return found

        def refused(*_args: Any, **_kwargs: Any) -> Any:
            raise WouldWrite(name)

        return refused


def answer_in_ack(
    ctx: SlackContext, ack: Ack, fields: tuple[str, ...], decide: Decision, service: BreakGlassService
) -> None:
    """Decide with `service` and answer in the ack: the outcome, or inline errors. Unresolved propagates
    (nothing was stored)."""
    try:
        event, shown, deliver = decide(service)
    except Unresolved:
        raise
    except Exception as exc:  # noqa: BLE001 - shown to the user inline, logged with a reference
        ack(response_action="errors", errors=modal_errors(exc, fields))
        return
    if shown is None:
        ack()
    else:
        ack(response_action="update", view=shown)
    if deliver:
        ctx.deliver_after_ack(event)


def decide_live(
    ctx: SlackContext, view_id: str, user_id: str, decide: Decision, refused_title: str, done_title: str
) -> None:
    """After the "Checking …" ack: decide with live lookups, show the outcome in the modal."""
    text = None
    try:
        event, shown, deliver = decide(ctx.service)
    except Exception as exc:  # noqa: BLE001 - shown to the user, logged with a reference
        text = ":x: " + blocks.escape(user_message(exc)) + "\nNothing was changed."
        outcome = blocks.notice_modal(refused_title, text)
    else:
        if deliver:
            ctx.deliver_after_ack(event)
        outcome = shown or blocks.notice_modal(
            done_title, f":white_check_mark: {done_title}: event `{event.id}`."
        )
    try:
        ctx.client.views_update(view_id=view_id, view=outcome)
    except (SlackApiError, SlackClientError, OSError) as exc:
        log.info("form outcome not shown in the modal: %s", type(exc).__name__)
        if text is not None:  # a change is announced anyway (audit thread, DMs)
            try:
                ctx.client.chat_postMessage(channel=user_id, text=text)
            except (SlackApiError, SlackClientError, OSError):
                log.warning("could not tell the user their form was refused", extra={"slack_user": user_id})
