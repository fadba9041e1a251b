"""Who is invoking, resolved before they submit: nothing between Slack's request and its ack waits on Slack,
AWS or the incident tool.

When the invoke form opens, breakglass looks the person up once — the profiles they may invoke (user-group
membership), their invoker identity and admission (users.info), their email, their identity-store user
(Identity Center), whether they are on call under each profile's `oncall` rule — and carries the answers in
the modal's `private_metadata` as a `KnownInvoker` (bot.slack.invoke_meta). The submission's use case then
decides from those answers alone (`InvokeRequest.known`): the only I/O before its ack is the store write.

A `KnownInvoker` is the bot's own earlier answer, never the user's: it is used only for the user Slack
signed the submission for, only for the view it was put in, and only while fresh (`IDENTITY_MAX_AGE`; the
on-call answers for the policy's `incidents.oncall_cache`). Whatever it does not cover — it is missing or
stale, on call could not be told for a profile that requires it, an incident must be looked up — raises
`Unresolved` before anything is stored, and the submission is then answered at once and decided after the
ack with live lookups (bot.slack.views)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from bot.access import PermanentAccessError, TransientAccessError
from bot.errors import AwsAccessRefused, DirectoryUnavailable, NotAuthorized
from bot.incidents.base import IncidentUnreachable

if TYPE_CHECKING:
    from bot.policy import ProfilePolicy
    from bot.service import BreakGlassService, InvokeRequest

IDENTITY_MAX_AGE = timedelta(minutes=15)
"""How long who someone is (admission, identity, email, identity-store user, groups) resolved at the form's
opening is used for its submission. Slack ends a deactivated user's sessions, so a form left open cannot be
submitted by one; a group change reaches forms opened after it."""

CLOCK_TOLERANCE = timedelta(seconds=30)
"""How far ahead of this replica's clock the replica that opened the form may have been (bot.skew's bound)."""

OncallStatus = Literal["yes", "no", "unknown"]

NO_EMAIL = (
    "Your Slack profile has no email address visible to breakglass, so it cannot find you in the "
    "AWS identity store; ask an admin to check the app's users:read.email scope."
)


class Unresolved(Exception):
    """Deciding the invocation needs a round trip the form's opening did not make (`what` says which); raised
    before anything is stored, so it can be decided again after the ack with live lookups."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class KnownInvoker(BaseModel):
    """What was resolved about one Slack user when their invoke form opened. None/absent: not known."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str
    at: datetime
    """When it was resolved (the bot's clock, UTC)."""
    profiles: tuple[str, ...] | None = None
    """The profiles they may invoke."""
    identity: str | None = None
    """Their invoker identity (policy `identity`), when admitted."""
    refused: str | None = None
    """Why the policy refuses them as an invoker (NotAuthorized), when it does."""
    email: str | None = None
    email_checked: bool = False
    """Slack answered users.info (`email` None then: their profile shows none)."""
    aws_checked: bool = False
    """The identity store was asked (only when one of their profiles grants AWS access)."""
    aws_user: str | None = None
    aws_refused: str | None = None
    """Why they cannot be given AWS access (e.g. no identity-store user with their email)."""
    oncall: dict[str, OncallStatus] = {}
    """Per profile with an `oncall` rule: on call then, or "unknown" (the tool could not be asked)."""

    def fresh(self, now: datetime) -> bool:
        # another replica may have resolved it on a clock up to the skew bound ahead (bot.skew)
        return -CLOCK_TOLERANCE <= now - self.at <= IDENTITY_MAX_AGE


def resolve(service: BreakGlassService, user_id: str) -> KnownInvoker:
    """Look `user_id` up now (the invoke form was just opened): every answer a submission may need. A lookup
    that fails leaves its answer unknown, so the submission makes it again after its ack."""
    now = service.clock.now()
    policy = service.policy
    try:
        profiles: tuple[str, ...] | None = tuple(service.profiles_for(user_id))
    except DirectoryUnavailable:
        profiles = None
    identity = refused = email = None
    email_checked = False
    try:
        identity = service.identity(user_id)
    except NotAuthorized as exc:
        refused = exc.message
    except DirectoryUnavailable as exc:
        if exc.__cause__ is None:  # Slack answered, and it cannot be an identity (e.g. no email shown)
            refused = exc.message
    if refused is None:
        try:
            email = str((service.directory.user(user_id).get("profile") or {}).get("email") or "") or None
            email_checked = True
        except DirectoryUnavailable:
            pass
    aws_checked, aws_user, aws_refused = False, None, None
    wants_aws = any(policy.profiles[name].aws is not None for name in profiles or ())
    if service.access.name != "none" and wants_aws and email:
        try:
            aws_user, aws_checked = service.access.resolve_user(email), True
        except PermanentAccessError as exc:
            aws_refused, aws_checked = exc.message, True
        except TransientAccessError:
            pass
    oncall: dict[str, OncallStatus] = {}
    links = service.incidents
    for name in profiles or ():
        rule = policy.profiles[name].oncall
        if rule is None or not links.enabled or not email_checked:
            continue
        try:
            on_call = bool(email) and str(email).lower() in links.oncall_now(rule)
            oncall[name] = "yes" if on_call else "no"
        except IncidentUnreachable:
            oncall[name] = "unknown"
    return KnownInvoker(
        user_id=user_id,
        at=now,
        profiles=profiles,
        identity=identity,
        refused=refused,
        email=email,
        email_checked=email_checked,
        aws_checked=aws_checked,
        aws_user=aws_user,
        aws_refused=aws_refused,
        oncall=oncall,
    )


# -- deciding from what is known (no round trip; Unresolved for what is not known) ---------------------------


def may_invoke(known: KnownInvoker, profile_name: str) -> bool:
    if known.profiles is None:
        raise Unresolved("profiles")
    return profile_name in known.profiles


def identity(known: KnownInvoker) -> str:
    if known.refused is not None:
        raise NotAuthorized(known.refused)
    if known.identity is None:
        raise Unresolved("identity")
    return known.identity


def aws_user(known: KnownInvoker) -> tuple[str, str | None]:
    """(email, identity-store user id or None when the provider needs none); AwsAccessRefused as a live
    lookup would raise it."""
    if known.refused is not None:
        raise NotAuthorized(known.refused)
    if known.email_checked and known.email is None:
        raise AwsAccessRefused(NO_EMAIL)
    if known.aws_refused is not None:
        raise AwsAccessRefused(known.aws_refused)
    if known.email is None or not known.aws_checked:
        raise Unresolved("identity-store user")
    return known.email, known.aws_user


def oncall(
    service: BreakGlassService, known: KnownInvoker, profile_name: str, profile: ProfilePolicy
) -> OncallStatus | None:
    """The on-call answer resolved at the form's opening, as `IncidentLinks.check_oncall` would decide it.
    Unresolved when it is stale or missing, or "unknown" for a profile that requires being on call (asked
    again after the ack, rather than refusing or admitting on an old answer)."""
    rule = profile.oncall
    links = service.incidents
    if rule is None or not links.enabled:
        return None
    status = known.oncall.get(profile_name)
    stale = service.clock.now() - known.at > links.policy.oncall_cache
    if status is None or stale or (status == "unknown" and rule.require):
        raise Unresolved("on call")
    if rule.require and status != "yes":
        raise links.not_on_call(profile_name)
    return status


def covers(service: BreakGlassService, request: InvokeRequest) -> bool:
    """Whether `request` (an InvokeRequest with `known`) is decided from what is known, as its ack decides it:
    the same checks the use case makes before its store write, with nothing stored and nothing asked. Lambda's
    lazy listener uses it to tell, from the request alone, whether the ack already decided it."""
    assert request.known is not None
    try:
        profile, _ = service.validate(request)
        service._access_for(request.user_id, profile, request.known)  # the same check, read-only
    except Unresolved:
        return False
    except Exception:  # noqa: BLE001 - refused in the ack (inline errors): decided there
        return True
    return True
