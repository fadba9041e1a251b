"""`/breakglass`: opens the modal, runs subcommands, and the one-line fast path. Replies are ephemeral."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, BoltContext
from slack_sdk.errors import SlackApiError, SlackClientError

from bot import blocks, ids
from bot.errors import AlreadyActive, BreakglassError, IncidentRefused, NotAuthorized, ValidationFailed
from bot.service import InvokeRequest
from bot.slack import invoke_meta, roles_meta
from bot.slack.context import EventMetadata, SlackContext, ctx_of
from bot.slack.errors import user_message
from bot.slack.lazy_decide import deciding, invoke_once
from store import BreakGlassEvent, StoreError

log = logging.getLogger(__name__)

USAGE = (
    "Usage: `/breakglass <profile> <duration> <reason> <justification…>` "
    "(optionally `incident=<ticket or URL>` anywhere after the reason), "
    f"e.g. `{blocks.EXAMPLE}`. "
    "Or `/breakglass` alone to open the form; `/breakglass help` for everything else."
)
SUBCOMMANDS = ids.SUBCOMMANDS
# Subcommands that live in their own module (e.g. bot.slack.extend), added by its `register`:
# name -> handler(ctx, user_id, args, request_id: the command's trigger id) returning the reply and the changed event.
SubcommandHandler = Callable[
    ["SlackContext", str, list[str], str | None], tuple[tuple[str, blocks.Blocks], BreakGlassEvent | None]
]
SUBCOMMAND_HANDLERS: dict[str, SubcommandHandler] = {}


def unescape_command_text(text: str) -> str:
    """Slack sends &, < and > in slash-command text as HTML entities: recover what the user typed."""
    # Exactly Slack's three entities, &amp; last; no general HTML unescaping (a typed "&amp;" must stay so).
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def parse_fast_path(user_id: str, words: list[str], request_id: str | None) -> InvokeRequest:
    """`<profile> <duration> <reason> <justification…>`; `incident=X` may appear among the justification."""
    missing = ["profile", "duration", "reason", "justification"][len(words) :]
    if missing:
        raise ValidationFailed({"usage": f"Missing {', '.join(missing)}. {USAGE}"})
    profile, duration, reason, *rest = words
    incident = None
    justification_words = []
    for word in rest:
        if incident is None and word.lower().startswith("incident="):
            incident = word.split("=", 1)[1]
        else:
            justification_words.append(word)
    return InvokeRequest(
        user_id=user_id,
        profile=profile,
        reason=reason,
        justification=" ".join(justification_words),
        duration=duration,
        incident=incident,
        request_id=request_id,
    )


FormOpener = Callable[[SlackContext, str, str, Any], None]  # (ctx, trigger_id, user_id, respond)


def form_to_open(ctx: SlackContext, command: dict[str, Any]) -> FormOpener | None:
    """What opens the form a command only opens, or None: `/breakglass` (the invoke form),
    `/breakglass <profile>` (with it chosen), `/breakglass close <id>` (no reason: the close form, which
    asks for it). Opening a form stores nothing."""
    words = unescape_command_text(command.get("text") or "").split()
    if not words:
        return open_modal
    if len(words) == 2 and words[0].lower() == "close":
        event_id = words[1]
        return lambda ctx, trigger_id, user_id, respond: open_close_form(
            ctx, trigger_id, user_id, event_id, respond
        )
    if len(words) == 1 and words[0].lower() not in SUBCOMMANDS:
        chosen = ctx.policy.profile_name(words[0])
        if chosen is not None:
            return functools.partial(open_modal, selected=chosen)
    return None


def opens_a_form(command: dict[str, Any], context: BoltContext) -> bool:
    """Bolt listener matcher: the command only opens a form (`form_to_open`)."""
    return form_to_open(ctx_of(context), command) is not None


def slash_command(ack: Ack, command: dict[str, Any], client: Any, respond: Any, context: BoltContext) -> None:
    ctx = ctx_of(context)
    user_id = command["user_id"]
    opener = form_to_open(ctx, command)
    if opener is not None:
        ack()
        ctx.call_after_ack(opener, ctx, command.get("trigger_id", ""), user_id, respond)
        return
    work = after_ack(ctx, command, respond)
    if work is None:  # answered in the ack (from the policy alone)
        (text_out, body), event = answer(ctx, user_id, command_words(command), command)
        ack(text=text_out, blocks=body)
        if event is not None:
            ctx.deliver_after_ack(event)
        return
    ack()
    if ctx.background is not None:  # Lambda: the lazy listener `redo_command` does it, from the same request
        ctx.call_after_ack(*work)


def command_words(command: dict[str, Any]) -> list[str]:
    return unescape_command_text(command.get("text") or "").strip().split()


def after_ack(ctx: SlackContext, command: dict[str, Any], respond: Any) -> tuple[Any, ...] | None:
    """What `/breakglass` does after its empty ack, as (function, *args), decided from the command alone
    (so Lambda's lazy listener decides the same from the same request); None: it is answered in the ack.
    A command that only opens a form (`form_to_open`) is not asked here: it has its own listener.

    Everything that reads Slack (user groups, users.info), AWS or the incident tool is after the ack,
    answered through the command's response_url. An invocation's store write is then after the ack too
    (the ack promises nothing: it is empty); the audit record and its announcements are owed as always."""
    user_id = command["user_id"]
    words = command_words(command)
    if (
        not words  # the form opener's (it has its own listener)
        or words[0].lower() == "help"
        or (len(words) == 1 and words[0].lower() not in SUBCOMMANDS and ctx.policy.profile(words[0]) is None)
    ):
        return None
    return (answer_later, ctx, user_id, words, command, respond)


def redo_command(context: BoltContext, body: dict[str, Any], respond: Any) -> None:
    """Lambda's lazy listener (bot.slack.lazy_decide): the command's work after its ack, decided again from
    the same request. A retry stores nothing twice: a fast-path invocation is keyed by its trigger id (the
    store refuses a second create; the first one's answer is given again), an extension likewise (the store
    refuses a second extension by the same request), a close of an ended event changes nothing."""
    ctx = ctx_of(context)
    work = after_ack(ctx, body, respond)
    if work is not None:
        work[0](*work[1:])


def answer(
    ctx: SlackContext, user_id: str, words: list[str], command: dict[str, Any]
) -> tuple[tuple[str, blocks.Blocks], BreakGlassEvent | None]:
    """The ephemeral reply to a command and the event it changed; every failure becomes a clear reply."""
    try:
        return dispatch(ctx, user_id, words, command)
    except (BreakglassError, StoreError) as exc:
        message = blocks.escape(user_message(exc))
        if (
            isinstance(exc, ValidationFailed)
            and not isinstance(exc, AlreadyActive | IncidentRefused)  # well formed: usage would not help
            and words[0].lower() not in SUBCOMMANDS
            and "usage" not in exc.errors
        ):
            message += "\n" + blocks.escape(USAGE)
        return blocks.message(":x: " + message), None
    except Exception as exc:  # one clear answer, never silence  # noqa: BLE001 - shown to the user, logged with a reference
        return blocks.message(":x: " + blocks.escape(user_message(exc))), None


def answer_later(
    ctx: SlackContext, user_id: str, words: list[str], command: dict[str, Any], respond: Any
) -> None:
    (text_out, body), event = answer(ctx, user_id, words, command)
    try:
        respond(text=text_out, blocks=body, response_type="ephemeral")
    except (SlackApiError, SlackClientError, OSError) as exc:
        # an invocation is still announced (audit message, DM); anything else can be asked again
        log.warning("could not answer /breakglass: %s", type(exc).__name__, extra={"slack_user": user_id})
    if event is not None:
        ctx.deliver_after_ack(event)


def open_modal(
    ctx: SlackContext, trigger_id: str, user_id: str, respond: Any, selected: str | None = None
) -> None:
    try:
        profiles = ctx.service.profiles_for(user_id)
        if selected is not None and selected not in profiles:
            raise NotAuthorized(f"You are not allowed to invoke break-glass on {selected!r}.")
        form = modal(ctx, tuple(profiles), selected)
        opened = ctx.client.views_open(trigger_id=trigger_id, view=form)
        if profiles:  # while the person fills in the form: who they are, carried in the view itself
            invoke_meta.resolve_into(ctx, opened.get("view") or {}, user_id, form)
    except (SlackApiError, SlackClientError, OSError, BreakglassError) as exc:
        log.warning("could not open the break-glass modal: %s", exc, extra={"slack_user": user_id})
        detail = user_message(exc) if isinstance(exc, BreakglassError) else "Slack did not accept the request"
        if respond is not None:
            try:
                respond(
                    text=blocks.escape(f"Could not open the break-glass form ({detail}). {USAGE}"),
                    response_type="ephemeral",
                )
            except (SlackApiError, SlackClientError, OSError):
                log.warning("could not tell the user the modal failed", extra={"slack_user": user_id})


def open_close_form(ctx: SlackContext, trigger_id: str, user_id: str, event_id: str, respond: Any) -> None:
    """`/breakglass close EVENT_ID` without a reason: the close modal (or why not, ephemerally)."""
    try:
        event = ctx.service.check_close(user_id, event_id)
        if event.status.ended:
            answer = blocks.already_ended(event)
        else:
            who = roles_meta.opened(ctx, user_id)  # the submission decides from these (no round trip)
            meta = EventMetadata(event_id=event.id, who=who).model_dump_json(exclude_none=True)
            ctx.client.views_open(
                trigger_id=trigger_id, view=roles_meta.bind(blocks.close_modal(event, meta), who)
            )
            return
    except (BreakglassError, StoreError) as exc:
        answer = ":x: " + blocks.escape(user_message(exc))
    except (SlackApiError, SlackClientError, OSError):
        answer = "Could not open the close form: use `/breakglass close &lt;id&gt; &lt;reason…&gt;`."
    if respond is not None:
        try:
            respond(text=answer, response_type="ephemeral")
        except (SlackApiError, SlackClientError, OSError):
            log.warning("could not answer /breakglass close", extra={"slack_user": user_id})


def modal(ctx: SlackContext, profiles: tuple[str, ...], selected: str | None = None) -> dict[str, Any]:
    """The invoke modal for a set of profiles (and the one chosen, whose durations it then offers), built
    once per set (the policy is fixed while the process runs). Callers only serialise it, never change it."""
    key = (*profiles, "\0" + selected) if selected else profiles
    view = ctx.modals.get(key)
    if view is None:
        if profiles:
            view = blocks.invoke_modal(
                [(name, _label(ctx, name)) for name in profiles],
                ctx.service.durations_for([selected] if selected else list(profiles)),
                selected=selected,
                incident_hint=ctx.service.incidents.hint,
            )
        else:
            view = blocks.no_profiles_modal()
        if len(ctx.modals) < 1024:  # one per distinct profile set: few in practice
            ctx.modals[key] = view
    return view


def _label(ctx: SlackContext, name: str) -> str:
    profile = ctx.policy.profiles[name]
    return f"{name} — {profile.description}" if profile.description else name


def dispatch(
    ctx: SlackContext, user_id: str, words: list[str], command: dict[str, Any]
) -> tuple[tuple[str, blocks.Blocks], BreakGlassEvent | None]:
    service = ctx.service
    name, args = words[0].lower(), words[1:]
    if name == "help":
        return blocks.message(blocks.HELP), None
    if name == "list":
        roles = service.roles(user_id)
        title = "All active break-glass access" if roles.can_see_all else "Your active break-glass access"
        return blocks.event_list(title, service.active_for(user_id), "No active break-glass access."), None
    if name == "status":
        if len(args) != 1:
            raise ValidationFailed({"usage": "Usage: `/breakglass status <event id>`"})
        return blocks.event_status(service.status(user_id, args[0])), None
    if name == "close":
        if len(args) < 2:
            raise ValidationFailed({"usage": "Usage: `/breakglass close <event id> <reason…>`"})
        result = service.close(args[0], by=user_id, reason=" ".join(args[1:]))
        if not result.closed_now:  # announce what is still owed (e.g. it was just recorded as expired)
            return blocks.message(blocks.already_ended(result.event)), (
                result.event if result.event.outbox else None
            )
        return blocks.message(blocks.closed_now(result.event)), result.event
    if name in SUBCOMMAND_HANDLERS:
        return SUBCOMMAND_HANDLERS[name](ctx, user_id, args, command.get("trigger_id"))
    if name == "history":
        profile = (ctx.policy.profile_name(args[0]) or args[0]) if args else None
        events = service.history(user_id, profile)
        everyone = service.roles(user_id).can_see_all
        if profile:
            title = (
                f"Recent break-glass events on {profile}" if everyone else f"Your recent events on {profile}"
            )
        else:
            title = "Recent break-glass events" if everyone else "Your recent break-glass events"
        hint = (
            "`/breakglass history <profile>` narrows it to one profile."
            if everyone
            else "You see your own events; the audit channel has everyone's."
        )
        empty = "No break-glass events yet." + ("" if profile else " " + hint)
        return blocks.event_list(title, events, blocks.escape(empty)), None
    if name == "review":
        if not service.roles(user_id).security:
            raise ValidationFailed({"review": "Only security can list events awaiting review."})
        return blocks.event_list(
            "Ended events awaiting review", service.unreviewed(), "Nothing awaits review."
        ), None
    if len(words) == 1 and ctx.policy.profile(words[0]) is None:
        return blocks.message(unknown_command(ctx, words[0])), None
    try:
        request = parse_fast_path(user_id, words, command.get("trigger_id"))
    except ValidationFailed as exc:
        if ctx.policy.profile(words[0]) is None:  # name the unknown profile before what is missing
            raise ValidationFailed(
                {ids.PROFILE: f"There is no profile called {words[0]!r}.", **exc.errors}
            ) from None
        raise
    event = invoke_once(ctx, request)  # a retried lazy invocation (Lambda): the first answer
    broken = ctx.audit_channels.error(event.audit_channel)
    return blocks.message(blocks.granted(event, audit_broken=broken)), event


def unknown_command(ctx: SlackContext, word: str) -> str:
    """An unknown first word: the closest command or profile, not the whole help."""
    candidates = [*SUBCOMMANDS, *ctx.policy.profiles]
    lowered = {c.lower(): c for c in candidates}
    import difflib  # only for an unknown word: kept off the Lambda init path

    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    text = f"Unknown command `{blocks.escape(word)}`."
    if close:
        match = lowered[close[0]]
        what = "" if match in SUBCOMMANDS else " (a profile: opens the form with it chosen)"
        text += f" Did you mean `/breakglass {blocks.escape(match)}`{what}?"
    return text + " `/breakglass help` lists every command."


def register(app: App, lazy: list[Callable[..., None]]) -> None:
    if lazy:
        # A command that only opens a form stores nothing, so no lazy run follows it (on Lambda that run is
        # a second invocation, started before the response: docs/benchmarks.md 7c). Bolt dispatches to the
        # first listener that matches.
        app.command(ids.COMMAND, matchers=[opens_a_form])(ack=slash_command, lazy=[])
    app.command(ids.COMMAND)(ack=slash_command, lazy=deciding(redo_command, lazy))
