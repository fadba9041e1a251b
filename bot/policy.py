"""The break-glass policy file: which AWS profiles exist, who may invoke them, for how long, and the limits.

The policy is a YAML file validated by the pydantic models :class:`Policy`, :class:`ProfilePolicy` and
:class:`RateLimits`. :func:`load_policy` reads a file (or the built-in :data:`DEFAULT_POLICY_YAML`),
:func:`parse_policy` parses a string, and every problem is reported as one :class:`PolicyError` that
lists each bad key in dotted form (``profiles.prod.durations[2]``) with the reason.
:func:`summarize` renders a policy for ``breakglass-bot check-policy FILE``.

This module depends on nothing else in ``bot`` except :mod:`bot.durations`.
"""

import copy
import json
import re
from collections.abc import Iterable, Sequence
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bot.durations import Duration, PositiveDuration, compact_duration, format_duration
from bot.ids import SUBCOMMANDS
from bot.incidents.policy import CloseOnResolve, IncidentsPolicy, OncallRule, incident_problems
from bot.incidents.policy import profile_lines as incident_profile_lines
from bot.incidents.policy import summary_lines as incident_summary_lines
from store.model import MAX_DURATION, MAX_TOTAL

__all__ = [
    "BUILTIN_SOURCE",
    "DEFAULT_DURATIONS",
    "DEFAULT_POLICY_YAML",
    "HARD_CAP",
    "AccessPolicy",
    "AwsTarget",
    "Identity",
    "Policy",
    "PolicyError",
    "ProfilePolicy",
    "RateLimits",
    "load_policy",
    "parse_policy",
    "summarize",
    "unheld_roles",
]

HARD_CAP = MAX_DURATION  # the store's cap: one constant
"""No profile may grant access for longer than this, whatever the policy file says."""

DEFAULT_DURATIONS: tuple[timedelta, ...] = (
    timedelta(minutes=15),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(hours=4),
)
"""Durations offered by a profile that does not list its own (those up to its ``max_duration``)."""

BUILTIN_SOURCE = "<built-in>"
"""The ``path`` of a :class:`PolicyError` about :data:`DEFAULT_POLICY_YAML`."""

DEFAULT_POLICY_YAML = """\
# breakglass policy -- the built-in example, used when no policy file is configured.
# Copy it to a file, edit it, and check it with:  breakglass-bot check-policy FILE
#
# Durations are written 90s, 15m, 1h, 1h30m or 400d; a plain number is seconds.
# Slack ids: users U.../W..., user groups S..., channels C.../G...

# audit_channel: C0123456   # overrides the BREAKGLASS_AUDIT_CHANNEL environment variable

# Warn the holder this long before their access expires.
warn_before: 15m

# How a person is identified (slack_id, email or email_local_part); with the email modes, only
# addresses in email_domains are accepted (exactly one domain for email_local_part).
# identity: slack_id
# email_domains: [example.com]
# Slack guests and users of other workspaces (Slack Connect) are refused unless allowed here.
# allow_guests: false
# allow_external_users: false

# How often expired access is looked for and revoked (and a dead replica's owed steps taken over).
sweep_interval: 15s

# Optional limits on how often break-glass access is taken.
rate_limits:
  cooldown: 0          # a person may invoke the same profile again as soon as their access ends
  # window: 24h        # the window for the limits below
  # per_user: 5        # at most this many events per person (all profiles) per window
  # per_profile: 20    # at most this many events per profile (all people) per window
  # escalate_after: 3  # the Nth event by one person per window is allowed but escalated

profiles:
  # Anyone in the workspace may take sandbox access for up to an hour.
  sandbox:
    description: Sandbox account
    durations: [15m, 30m, 1h]

  # Anyone may take production access for up to the 4h hard cap, but must name an incident.
  prod:
    description: Production account
    durations: [15m, 30m, 1h, 2h, 4h]
    require_incident: true
    # invokers: [S0SRE]            # omit to allow everyone; list user ids and/or user-group ids
    # audit_channel: C0PRODAUDIT   # a separate audit channel for this profile
"""
"""The built-in policy (see :func:`load_policy`): ``sandbox`` and ``prod``, both open to everyone."""

Identity = Literal["slack_id", "email", "email_local_part"]
"""How a person is identified to AWS and in the audit records."""

_PROFILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_PRINCIPAL_ID_RE = re.compile(r"[UWS][A-Z0-9]{2,}")
CHANNEL_ID_RE = re.compile(r"[CGD][A-Z0-9]{2,}")  # also checks BREAKGLASS_AUDIT_CHANNEL (bot.config)
_EMAIL_DOMAIN_RE = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}")
_TIME_OF_DAY_RE = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")

_MIN_SWEEP_INTERVAL = timedelta(seconds=1)
_MAX_SWEEP_INTERVAL = timedelta(hours=1)
_MIN_RETENTION = timedelta(days=1)


# --------------------------------------------------------------------------------------------------
# Errors


class PolicyError(Exception):
    """A policy file that cannot be used, with every problem found in it.

    ``path`` is the file as given (or ``"<built-in>"``); ``problems`` is a list of ``(key, reason)``
    pairs, ``key`` in dotted form with list indices (``profiles.prod.durations[2]``), or ``""`` for a
    problem with the file as a whole (unreadable, empty, invalid YAML...).
    """

    def __init__(self, path: str | Path, problems: Sequence[tuple[str, str]]) -> None:
        self.path = str(path)
        self.problems: list[tuple[str, str]] = list(problems)
        super().__init__(self.path, self.problems)

    def __str__(self) -> str:
        lines = [f"invalid policy file {self.path}:"]
        lines.extend(f"  - {key}: {reason}" if key else f"  - {reason}" for key, reason in self.problems)
        return "\n".join(lines)


class _NestedProblems(ValueError):
    """Raised by a validator to report problems at locations below the field it validates."""

    def __init__(self, problems: Sequence[tuple[tuple[str | int, ...], str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{_render_loc(loc, None)}: {reason}" for loc, reason in self.problems))


def _show(value: object) -> str:
    """A value as the policy author wrote it in YAML, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return str(value)


def _render_key(key: object, first: bool) -> str:
    if isinstance(key, str) and _PLAIN_KEY_RE.fullmatch(key):
        return key if first else f".{key}"
    if isinstance(key, str):
        return f"[{json.dumps(key)}]"
    return f"[{_show(key)}]"


def _render_loc(loc: Iterable[str | int], data: object) -> str:
    """Render a pydantic error location as ``profiles.prod.durations[2]``.

    ``data`` is the validated input, walked alongside so that list indices (``[2]``) can be told
    apart from mapping keys that happen to be numbers.
    """
    out = ""
    node = data
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(node, dict):
            # pydantic reports a YAML key `true` as 1: show the key as it is in the data.
            same_type = [k for k in node if k == part and type(k) is type(part)]
            key = (same_type or [k for k in node if k == part] or [part])[0]
            out += _render_key(key, first=not out)
            node = node.get(key)
        elif isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list | tuple) and 0 <= part < len(node) else None
        else:
            out += _render_key(part, first=not out)
            node = None
    return out


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model whose keys are directly at ``loc`` (used to suggest the key meant by a typo)."""
    if not loc:
        return Policy
    if loc == ("rate_limits",):
        return RateLimits
    if len(loc) == 2 and loc[0] == "profiles":
        return ProfilePolicy
    if loc == ("access",):
        return AccessPolicy
    if len(loc) == 3 and loc[0] == "profiles" and loc[2] == "aws":
        return AwsTarget
    return None


def _reason(error: Any) -> str:
    """Turn one pydantic error into a reason a policy author can act on."""
    kind = error["type"]
    loc = tuple(error["loc"])
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "missing":
        if loc == ("profiles",):
            return "is missing; define at least one profile"
        return "is required"
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        if model is None or not isinstance(loc[-1], str):
            return "unknown key"
        known = list(model.model_fields)
        import difflib  # only for a policy error: kept off the Lambda init path

        close = difflib.get_close_matches(loc[-1], known, n=1)
        if close:
            return f"unknown key; did you mean {close[0]}?"
        return f"unknown key; expected one of: {', '.join(known)}"
    if kind == "string_type":
        return f"must be text, not {_show(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, not {_show(value)}"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list, not {_show(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        if value is None and len(loc) == 2 and loc[0] == "profiles":
            return "has no settings; write {} to use the defaults"
        return f"must be a mapping of keys to values, not {_show(value)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '?')}, not {_show(value)}"
    return str(error["msg"])


def _problems_from_validation_error(exc: ValidationError, data: object) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        nested = (error.get("ctx") or {}).get("error")
        if isinstance(nested, _NestedProblems):
            problems.extend((_render_loc(loc + sub, data), reason) for sub, reason in nested.problems)
        else:
            problems.append((_render_loc(loc, data), _reason(error)))
    return problems


# --------------------------------------------------------------------------------------------------
# Field types


def _check_profile_name(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"profile names must be text, but YAML read this one as {_show(value)}; quote it")
    if not _PROFILE_NAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid profile name: use up to 64 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    if value.lower() in SUBCOMMANDS:
        raise ValueError(
            f"{value!r} cannot be a profile name: `/breakglass {value.lower()}` is a subcommand, so the "
            f"profile could never be invoked in one line (reserved: {', '.join(SUBCOMMANDS)})"
        )
    return value


def _id_hint(value: str, prefix: str, pattern: re.Pattern[str]) -> str:
    if value.startswith(prefix):
        return f"; use the id, not the {prefix}name"
    if pattern.fullmatch(value.upper()):
        return "; Slack ids are upper case"
    return ""


def _check_principal_id(value: object) -> str:
    what = "a Slack user id (U... or W...) or user-group id (S...)"
    if not isinstance(value, str):
        raise ValueError(f"must be {what}, not {_show(value)}")
    if not _PRINCIPAL_ID_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not {what}{_id_hint(value, '@', _PRINCIPAL_ID_RE)}")
    return value


def _check_channel_id(value: object) -> str:
    what = "a Slack channel id (C..., G... or D...)"
    if not isinstance(value, str):
        raise ValueError(f"must be {what}, not {_show(value)}")
    if not CHANNEL_ID_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not {what}{_id_hint(value, '#', CHANNEL_ID_RE)}")
    return value


def _check_email_domain(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be an email domain such as example.com, not {_show(value)}")
    domain = value.strip().lower()
    if not _EMAIL_DOMAIN_RE.fullmatch(domain):
        hint = "; write the domain without the @" if "@" in domain else ""
        raise ValueError(f"{value!r} is not an email domain such as example.com{hint}")
    return domain


def _check_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a whole number, not {_show(value)}")
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _exceeds_hard_cap(value: timedelta) -> str:
    return f"{compact_duration(value)} exceeds the {compact_duration(HARD_CAP)} hard cap"


def _within_hard_cap(value: timedelta) -> timedelta:
    if value > HARD_CAP:
        raise ValueError(_exceeds_hard_cap(value))
    return value


def _parse_time_of_day(value: object) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, str) and (match := _TIME_OF_DAY_RE.fullmatch(value.strip())):
        return time(int(match.group(1)), int(match.group(2)))
    raise ValueError(f'{_show(value)} is not a time of day: use HH:MM (UTC), such as "09:00"')


ProfileName = Annotated[str, BeforeValidator(_check_profile_name)]
"""A profile name: 1-64 of ``A-Z a-z 0-9 _ . @ -``, starting with a letter or digit."""

PrincipalId = Annotated[str, BeforeValidator(_check_principal_id)]
"""A Slack user id (``U...``/``W...``) or user-group id (``S...``)."""

ChannelId = Annotated[str, BeforeValidator(_check_channel_id)]
"""A Slack channel id (``C...``, ``G...`` or ``D...``)."""

EmailDomain = Annotated[str, BeforeValidator(_check_email_domain)]
"""An email domain (``example.com``), lower-cased."""

Count = Annotated[int, BeforeValidator(_check_count)]
"""A whole number >= 1."""

CappedDuration = Annotated[PositiveDuration, AfterValidator(_within_hard_cap)]
"""A duration > 0 and <= :data:`HARD_CAP`."""

TimeOfDay = Annotated[
    time,
    BeforeValidator(_parse_time_of_day),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str, when_used="json"),
]
"""A time of day (UTC) written ``HH:MM``."""


def _dedupe(ids: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))


# --------------------------------------------------------------------------------------------------
# Models


class RateLimits(BaseModel):
    """Limits on how often break-glass access may be taken (all off by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cooldown: Duration = timedelta(0)
    """After an event on a profile ends, the same person waits this long before invoking it again."""
    window: PositiveDuration = timedelta(hours=24)
    """The window that ``per_user``, ``per_profile`` and ``escalate_after`` count events in."""
    per_user: Count | None = None
    """At most this many events by one person (all profiles) within ``window``."""
    per_profile: Count | None = None
    """At most this many events on one profile (all people) within ``window``."""
    escalate_after: Count | None = None
    """The Nth (and later) event by one person within ``window`` is allowed but escalated."""


# --------------------------------------------------------------------------------------------------
# AWS access (the access provider, bot/access): the policy's `access:` block and each profile's `aws:`

AccessProviderName = Literal["none", "identity-center"]
"""Which access provider changes AWS access: ``none`` (the stored event is the grant) or IAM Identity Center."""

_ACCOUNT_RE = re.compile(r"[0-9]{12}")
_INSTANCE_ARN_RE = re.compile(r"arn:(aws|aws-us-gov|aws-cn):sso:::instance/(ssoins-[a-zA-Z0-9.-]{16})")
_PERMISSION_SET_ARN_RE = re.compile(
    r"arn:(aws|aws-us-gov|aws-cn):sso:::permissionSet/(ssoins-[a-zA-Z0-9.-]{16})/ps-[a-zA-Z0-9.-]{16}"
)
_IDENTITY_STORE_ID_RE = re.compile(
    r"d-[0-9a-f]{10}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)
_ROLE_ARN_RE = re.compile(r"arn:(aws|aws-us-gov|aws-cn):iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}")
_MIN_RECONCILE_EVERY = timedelta(minutes=1)
_MAX_ACTIVITY_DELAY = timedelta(hours=24)


def _pattern_check(pattern: re.Pattern[str], what: str, example: str) -> Any:
    def check(value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be {what} written as text (quote it), not {_show(value)}")
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}, such as {example}")
        return value

    return BeforeValidator(check)


AccountId = Annotated[str, _pattern_check(_ACCOUNT_RE, "a 12-digit AWS account id", '"123456789012"')]
InstanceArn = Annotated[
    str,
    _pattern_check(
        _INSTANCE_ARN_RE,
        "an IAM Identity Center instance ARN",
        "arn:aws:sso:::instance/ssoins-0123456789abcdef",
    ),
]
PermissionSetArn = Annotated[
    str,
    _pattern_check(
        _PERMISSION_SET_ARN_RE,
        "a permission set ARN",
        "arn:aws:sso:::permissionSet/ssoins-0123456789abcdef/ps-0123456789abcdef",
    ),
]
IdentityStoreId = Annotated[
    str, _pattern_check(_IDENTITY_STORE_ID_RE, "an identity store id", "d-0123456789")
]
RoleArn = Annotated[
    str, _pattern_check(_ROLE_ARN_RE, "an IAM role ARN", "arn:aws:iam::123456789012:role/breakglass-activity")
]


class AccessPolicy(BaseModel):
    """The policy's ``access:`` block: which provider changes AWS access, and its settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: AccessProviderName = "none"
    """``none`` (default): breakglass changes no AWS access; ``identity-center``: IAM Identity Center."""
    instance_arn: InstanceArn | None = None
    """The Identity Center instance (required with ``identity-center``)."""
    identity_store_id: IdentityStoreId | None = None
    """Its identity store, where people are found by email (required with ``identity-center``)."""
    reconcile_every: PositiveDuration = timedelta(minutes=5)
    """How often the assignments on the managed permission sets are compared with the active events."""
    activity_delay: PositiveDuration = timedelta(minutes=15)
    """How long after an event ends its CloudTrail activity is collected (the activity digest)."""

    @field_validator("reconcile_every")
    @classmethod
    def _check_reconcile_every(cls, value: timedelta) -> timedelta:
        if value < _MIN_RECONCILE_EVERY:
            raise ValueError(
                f"must be at least {compact_duration(_MIN_RECONCILE_EVERY)}, got {compact_duration(value)}"
            )
        return value

    @field_validator("activity_delay")
    @classmethod
    def _check_activity_delay(cls, value: timedelta) -> timedelta:
        if value > _MAX_ACTIVITY_DELAY:
            raise ValueError(
                f"must be at most {compact_duration(_MAX_ACTIVITY_DELAY)}, got {compact_duration(value)}"
            )
        return value

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Settings the chosen provider needs but lacks (locations relative to ``access``)."""
        if self.provider != "identity-center":
            return []
        return [
            ((key,), f"is required with provider identity-center; {hint}")
            for key, hint in (
                ("instance_arn", "find it with `aws sso-admin list-instances`"),
                ("identity_store_id", "find it with `aws sso-admin list-instances`"),
            )
            if getattr(self, key) is None
        ]


class AwsTarget(BaseModel):
    """A profile's ``aws:`` block: where the access provider grants access when the profile is invoked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    account: AccountId
    """The 12-digit AWS account id (quoted, so YAML keeps leading zeros)."""
    permission_set: PermissionSetArn
    """The dedicated break-glass permission set assigned for the event's duration."""
    activity_role: RoleArn | None = None
    """A role in ``account`` the bot may assume to read CloudTrail for the activity digest (optional)."""
    activity_external_id: str | None = Field(default=None, min_length=2, max_length=1224)
    """The external id the activity role's trust policy requires (``sts:ExternalId``), if any."""
    activity_regions: list[Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")]] = Field(
        default_factory=list, max_length=20
    )
    """The regions whose CloudTrail event history is read (IAM and other global services are recorded in
    us-east-1); empty: the bot's own region (``AWS_REGION``)."""


def _fallback_problems(policy: "Policy") -> list[tuple[tuple[str | int, ...], str]]:
    audit = {policy.audit_channel, *(p.audit_channel for p in policy.profiles.values())} - {None}
    if policy.fallback_channel is not None and policy.fallback_channel in audit:
        return [
            (
                ("fallback_channel",),
                f"{policy.fallback_channel} is an audit channel; the fallback must be another channel "
                "(it is used when an audit channel is broken)",
            )
        ]
    return []


def _access_problems(policy: "Policy") -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-checks between ``access:`` and the profiles' ``aws:`` blocks."""
    access = policy.access
    problems: list[tuple[tuple[str | int, ...], str]] = [
        (("access", *loc), r) for loc, r in access.problems()
    ]
    instance = _INSTANCE_ARN_RE.fullmatch(access.instance_arn or "")
    for name, profile in policy.profiles.items():
        if profile.aws is None:
            if access.provider == "identity-center":
                problems.append(
                    (
                        ("profiles", name),
                        "has no aws: block (account and permission_set); with provider identity-center "
                        "every profile needs a target",
                    )
                )
            continue
        ps = _PERMISSION_SET_ARN_RE.fullmatch(profile.aws.permission_set)
        if instance and ps and ps.group(2) != instance.group(2):
            problems.append(
                (
                    ("profiles", name, "aws", "permission_set"),
                    f"belongs to instance {ps.group(2)}, not to access.instance_arn's {instance.group(2)}",
                )
            )
    return problems


class ProfilePolicy(BaseModel):
    """What the policy says about one AWS profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str | None = None
    """Shown in the modal."""
    max_duration: CappedDuration = HARD_CAP
    """The longest access this profile grants; at most :data:`HARD_CAP`."""
    durations: tuple[PositiveDuration, ...] = Field(default=None, validate_default=True)
    """Durations offered in the modal, ascending; default :data:`DEFAULT_DURATIONS` up to ``max_duration``."""
    invokers: tuple[PrincipalId, ...] | None = None
    """User and user-group ids who may invoke this profile; ``None`` means everyone in the workspace."""
    require_incident: bool = False
    """Whether the incident field must be filled in."""
    audit_channel: ChannelId | None = None
    """Audit channel for this profile, instead of the policy's."""
    aws: AwsTarget | None = None
    """Where the access provider grants access (required with ``access.provider: identity-center``)."""
    close_on_resolve: CloseOnResolve = True
    """When the linked incident resolves: close the event (``true``), DM the holder (``warn``) or nothing."""
    oncall: OncallRule | None = None
    """Who is on call in the incident tool (``incidents.provider``): required to invoke, or only noted."""

    max_total: PositiveDuration | None = None
    """The longest an event may last with its extensions; default twice the longest duration, at most
    :data:`store.model.MAX_TOTAL` (12 h, the longest Identity Center session)."""
    extensions: int | None = Field(default=None, ge=0)
    """How many times one event may be extended (``0``: never); ``None``: as often as ``max_total`` allows."""

    @field_validator("max_total")
    @classmethod
    def _check_max_total(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value > MAX_TOTAL:
            raise ValueError(f"{compact_duration(value)} exceeds the 12h cap (the longest AWS session)")
        return value

    @property
    def lifetime_cap(self) -> timedelta:
        """The longest an event on this profile may last, extensions included."""
        return self.max_total or min(2 * max(self.durations), MAX_TOTAL)

    @field_validator("durations", mode="before")
    @classmethod
    def _default_durations(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            return value
        max_duration = info.data.get("max_duration", HARD_CAP)
        return [d for d in DEFAULT_DURATIONS if d <= max_duration] or [max_duration]

    @field_validator("durations")
    @classmethod
    def _check_durations(cls, value: tuple[timedelta, ...], info: ValidationInfo) -> tuple[timedelta, ...]:
        if not value:
            raise ValueError("must offer at least one duration; omit durations for the default list")
        max_duration: timedelta | None = info.data.get("max_duration")
        problems: list[tuple[tuple[str | int, ...], str]] = []
        first_seen: dict[timedelta, int] = {}
        for index, duration in enumerate(value):
            if duration in first_seen:
                problems.append(
                    (
                        (index,),
                        f"{compact_duration(duration)} is listed more than once "
                        f"(first at durations[{first_seen[duration]}])",
                    )
                )
            else:
                first_seen[duration] = index
            if duration > HARD_CAP:
                problems.append(((index,), _exceeds_hard_cap(duration)))
            elif max_duration is not None and duration > max_duration:
                problems.append(
                    (
                        (index,),
                        f"{compact_duration(duration)} exceeds max_duration {compact_duration(max_duration)}",
                    )
                )
        if problems:
            raise _NestedProblems(problems)
        return tuple(sorted(value))

    @field_validator("invokers", mode="before")
    @classmethod
    def _invokers_not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("is empty; list user or user-group ids, or omit invokers to allow everyone")
        return value

    @field_validator("invokers")
    @classmethod
    def _check_invokers(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError(
                "is empty, so nobody could invoke this profile; list user or user-group ids, "
                "or omit invokers to allow everyone"
            )
        return None if value is None else _dedupe(value)


class Policy(BaseModel):
    """The whole policy file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    audit_channel: ChannelId | None = None
    """Audit channel; overrides the ``BREAKGLASS_AUDIT_CHANNEL`` environment variable."""
    fallback_channel: ChannelId | None = None
    """Where announcements go at once when an audit channel fails permanently (archived, deleted, the bot
    removed from a private one), besides a DM to every security member; must not be an audit channel."""
    warn_before: PositiveDuration = timedelta(minutes=15)
    """Warn the holder this long before their access expires; less than :data:`HARD_CAP`."""
    sweep_interval: PositiveDuration = timedelta(seconds=15)
    """How often expired access is looked for; between 1s and 1h. After a crash, owed steps are taken over
    within the delivery lease (10 s) plus this: 25 s by default."""
    retention: PositiveDuration = timedelta(days=400)
    """How long audit records are kept after expiry (DynamoDB ttl); at least 1d."""
    identity: Identity = "slack_id"
    """How a person is identified: Slack user id, email address, or the part of it before the @."""
    email_domains: tuple[EmailDomain, ...] = Field(default=(), validate_default=True)
    """Email domains an identity may come from (``identity: email``/``email_local_part``); others are
    refused. Exactly one with ``email_local_part``, where two domains would make two people one invoker."""
    allow_guests: bool = False
    """Whether Slack guests (multi- and single-channel: ``is_restricted``/``is_ultra_restricted``) may use
    breakglass. Deleted users never may."""
    allow_external_users: bool = False
    """Whether users of other workspaces (Slack Connect: ``is_stranger``, or another ``team_id``) may."""
    review_reminder_after: PositiveDuration = timedelta(hours=24)
    """Ended events unreviewed for longer than this are listed in the daily reminder."""
    review_reminder_time: TimeOfDay = time(9, 0)
    """Time of day (UTC) the daily review reminder is posted."""
    incident_commanders: tuple[PrincipalId, ...] = ()
    """Incident commanders: user and user-group ids."""
    security: tuple[PrincipalId, ...] = ()
    """The security team: user and user-group ids."""
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    """Limits on how often access is taken."""
    access: AccessPolicy = Field(default_factory=AccessPolicy)
    """Which access provider changes AWS access (default ``none``: the stored event is the grant)."""
    incidents: IncidentsPolicy = Field(default_factory=IncidentsPolicy)
    """Which incident tool the incident field links to (default ``none``: free text)."""
    profiles: dict[ProfileName, ProfilePolicy]
    """The profiles that may be invoked, by name; at least one."""

    @model_validator(mode="after")
    def _check_whole_policy(self) -> "Policy":
        """The checks across keys, all at once (pydantic would stop at the first validator that raises)."""
        problems = (
            _access_problems(self)
            + _fallback_problems(self)
            + incident_problems(self.incidents, {n: p.oncall for n, p in self.profiles.items()})
        )
        if problems:
            raise _NestedProblems(problems)
        return self

    @field_validator("warn_before")
    @classmethod
    def _check_warn_before(cls, value: timedelta) -> timedelta:
        if value >= HARD_CAP:
            raise ValueError(
                f"must be less than the {compact_duration(HARD_CAP)} hard cap, got {compact_duration(value)}"
            )
        return value

    @field_validator("sweep_interval")
    @classmethod
    def _check_sweep_interval(cls, value: timedelta) -> timedelta:
        if value < _MIN_SWEEP_INTERVAL:
            raise ValueError(
                f"must be at least {compact_duration(_MIN_SWEEP_INTERVAL)}, got {compact_duration(value)}"
            )
        if value > _MAX_SWEEP_INTERVAL:
            raise ValueError(
                f"must be at most {compact_duration(_MAX_SWEEP_INTERVAL)}, got {compact_duration(value)}"
            )
        return value

    @field_validator("retention")
    @classmethod
    def _check_retention(cls, value: timedelta) -> timedelta:
        if value < _MIN_RETENTION:
            raise ValueError(
                f"must be at least {compact_duration(_MIN_RETENTION)}, got {compact_duration(value)}"
            )
        return value

    @field_validator("email_domains")
    @classmethod
    def _domains_for_identity(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if info.data.get("identity") == "email_local_part" and not value:
            raise ValueError(
                "is required with identity: email_local_part (alice@example.com and alice@other.example "
                "would be one invoker); list the domain whose addresses are your people, e.g. [example.com]"
            )
        value = _dedupe(value)
        if info.data.get("identity") == "email_local_part" and len(value) > 1:
            raise ValueError(
                f"lists {len(value)} domains ({', '.join(value)}), but identity: email_local_part keeps only the "
                f"part before the @, so alice@{value[0]} and alice@{value[1]} would be one invoker: list one "
                "domain, or use identity: email (the whole address) for several"
            )
        return value

    @field_validator("incident_commanders", "security", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return () if value is None else value

    @field_validator("incident_commanders", "security")
    @classmethod
    def _dedupe_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _dedupe(value)

    @field_validator("rate_limits", "access", "incidents", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("profiles")
    @classmethod
    def _at_least_one_profile(cls, value: dict[str, ProfilePolicy]) -> dict[str, ProfilePolicy]:
        if not value:
            raise ValueError("at least one profile is required")
        return value

    def profile(self, name: str) -> ProfilePolicy | None:
        """The profile called ``name`` (matched without case: ``PROD`` is ``prod``), or ``None``."""
        found = self.profile_name(name)
        return None if found is None else self.profiles[found]

    def profile_name(self, name: str) -> str | None:
        """The policy's own spelling of the profile ``name`` (matched without case), or ``None``."""
        if name in self.profiles:
            return name
        folded = name.casefold()
        return next((key for key in self.profiles if key.casefold() == folded), None)

    @model_validator(mode="after")
    def _check_profile_case(self) -> "Policy":
        seen: dict[str, str] = {}
        for name in self.profiles:
            other = seen.setdefault(name.casefold(), name)
            if other != name:
                raise _NestedProblems(
                    [
                        (
                            ("profiles", name),
                            f"differs from profile {other!r} only in case; profile names are matched "
                            "without case, so rename one",
                        )
                    ]
                )
        return self

    def audit_channel_for(self, profile_name: str, default: str | None) -> str | None:
        """Where to audit events on ``profile_name``: its own channel, else the policy's, else ``default``."""
        profile = self.profile(profile_name)
        if profile is not None and profile.audit_channel:
            return profile.audit_channel
        return self.audit_channel or default


# --------------------------------------------------------------------------------------------------
# Loading


class _PolicyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects duplicate keys and does not read ``10:30`` as a base-60 number."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            ident = (key_node.tag, key_node.value)
            if ident in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found duplicate key {key_node.value!r}",
                    key_node.start_mark,
                )
            seen.add(ident)
        return super().construct_mapping(node, deep=deep)


_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_PolicyLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_PolicyLoader.add_implicit_resolver(
    _INT_TAG,
    re.compile(
        r"""^(?:[-+]?0b[0-1_]+
        |[-+]?0[0-7_]+
        |[-+]?(?:0|[1-9][0-9_]*)
        |[-+]?0x[0-9a-fA-F_]+)$""",
        re.VERBOSE,
    ),
    list("-+0123456789"),
)
_PolicyLoader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
        |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def _load_yaml(text: str, source: str) -> Any:
    loader = _PolicyLoader(text)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and not exc.context.startswith("while "):
            problem = f"{exc.context}, {exc.problem}"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise PolicyError(source, [("", f"invalid YAML{where}: {problem}")]) from exc
    except yaml.YAMLError as exc:
        raise PolicyError(source, [("", f"invalid YAML: {exc}")]) from exc
    finally:
        loader.dispose()


def parse_policy(text: str, source: str = "<string>") -> Policy:
    """Parse and validate policy YAML; ``source`` names it in a :class:`PolicyError`."""
    data = _load_yaml(text, source)
    if data is None:
        raise PolicyError(source, [("", "the file is empty; it must define at least one profile")])
    if not isinstance(data, dict):
        raise PolicyError(
            source, [("", f"the top level must be a mapping of keys such as profiles:, not {_show(data)}")]
        )
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = _problems_from_validation_error(exc, data)
        problems += [p for p in _cross_check_problems(exc, data) if p not in problems]
        raise PolicyError(source, problems) from exc


def _caused_by(sub: tuple[str | int, ...], reason: str, removed: tuple[str | int, ...]) -> bool:
    """Whether a whole-policy problem at ``sub`` may come from setting ``removed`` aside: it lies under it,
    or it is about it (a key of ``sub`` that the reason names, e.g. "has no aws: block")."""
    if removed == sub[: len(removed)]:
        return True
    return removed[: len(sub)] == sub and str(removed[len(sub)]) in reason


def _prune(data: Any, loc: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
    """Delete the key (in a mapping) nearest to ``loc`` from ``data``; the location deleted, or None."""
    node, deepest = data, None
    for depth, key in enumerate(loc):
        if isinstance(node, dict) and key in node:
            deepest = loc[: depth + 1]
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node = node[key]  # a list item: the list's own key is deleted (indexes would shift)
        else:
            break
    if deepest is None:
        return None
    parent = data
    for key in deepest[:-1]:
        parent = parent[key]
    del parent[deepest[-1]]
    return deepest


def _cross_check_problems(exc: ValidationError, data: Any) -> list[tuple[str, str]]:
    """The problems the whole-policy checks (access vs profiles, fallback channel...) find, which pydantic
    runs only once every field is valid: each invalid key is set aside (its own problem is reported
    already) and the rest validated again, so that one bad value hides nothing else."""
    pruned: Any = copy.deepcopy(data)
    removed: list[tuple[str | int, ...]] = []
    error = exc
    for _ in range(8):
        progress = False
        for item in error.errors(include_url=False):
            loc = tuple(item["loc"])
            if loc and loc[-1] == "[key]":
                loc = loc[:-1]
            nested = (item.get("ctx") or {}).get("error")
            if isinstance(nested, _NestedProblems) and not loc:
                continue  # a whole-policy check: reported below
            gone = _prune(pruned, loc)
            if gone is not None:
                removed.append(gone)
                progress = True
        try:
            Policy.model_validate(pruned)
            return []
        except ValidationError as again:
            error = again
        found: list[tuple[str, str]] = []
        for item in error.errors(include_url=False):
            nested = (item.get("ctx") or {}).get("error")
            if isinstance(nested, _NestedProblems) and not item["loc"]:
                found += [
                    (_render_loc(sub, data), reason)
                    for sub, reason in nested.problems
                    if not any(_caused_by(sub, reason, r) for r in removed)
                ]
        if found or not progress:
            return found
    return []


def load_policy(path: str | Path | None) -> Policy:
    """Load and validate the policy file at ``path``; ``None`` loads the built-in :data:`DEFAULT_POLICY_YAML`.

    Raises :class:`PolicyError` naming the file if it cannot be read or is not a valid policy.
    """
    if path is None:
        return parse_policy(DEFAULT_POLICY_YAML, BUILTIN_SOURCE)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise PolicyError(path, [("", "file not found")]) from exc
    except IsADirectoryError as exc:
        raise PolicyError(path, [("", "is a directory, not a file")]) from exc
    except PermissionError as exc:
        raise PolicyError(path, [("", "cannot read the file: permission denied")]) from exc
    except OSError as exc:
        raise PolicyError(path, [("", f"cannot read the file: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        reason = f"the file is not UTF-8 text (bad byte on line {line})"
        raise PolicyError(path, [("", reason)]) from exc
    return parse_policy(text, str(path))


# --------------------------------------------------------------------------------------------------
# Summary

_IDENTITY_WORDS: dict[str, str] = {
    "slack_id": "Slack user id",
    "email": "email address",
    "email_local_part": "email address before the @",
}


def _long_words(td: timedelta) -> str:
    """Like format_duration, but a single day reads "24 hours"."""
    whole_days = td % timedelta(days=1) == timedelta(0)
    return format_duration(td, use_days=whole_days and td > timedelta(days=1))


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _ids(ids: Iterable[str]) -> str:
    return ", ".join(ids) or "none"


def _rate_limit_lines(limits: RateLimits) -> list[str]:
    window = _long_words(limits.window)
    lines = []
    if limits.cooldown:
        lines.append(
            f"cooldown of {format_duration(limits.cooldown)}: after an event on a profile ends, "
            "the same person waits that long before invoking that profile again"
        )
    else:
        lines.append("no cooldown")
    if limits.per_user is not None:
        lines.append(f"at most {_plural(limits.per_user, 'event')} per person per {window}")
    if limits.per_profile is not None:
        lines.append(f"at most {_plural(limits.per_profile, 'event')} per profile per {window}")
    if limits.escalate_after is not None:
        lines.append(
            f"the {_ordinal(limits.escalate_after)} and later events by one person within {window} "
            "are allowed but escalated"
        )
    if limits.per_user is None and limits.per_profile is None and limits.escalate_after is None:
        lines.append("no limit on the number of events")
    return lines


def unheld_roles(policy: Policy) -> list[str]:
    """One warning per role nobody holds (what then cannot happen), for start-up and ``check-policy``."""
    warnings = []
    if not policy.security:
        warnings.append(
            "nobody is in the security role (security: is empty), so nobody can review ended events; "
            "list security user or user-group ids in the policy file"
        )
    if not policy.incident_commanders:
        warnings.append(
            "nobody is an incident commander (incident_commanders: is empty), so only the holder and "
            "security can end access early; list incident commanders in the policy file"
        )
    return warnings


def summarize(policy: Policy) -> str:
    """A readable multi-line summary of the policy, for ``breakglass-bot check-policy FILE``."""
    if policy.audit_channel:
        audit = f"{policy.audit_channel} (overrides BREAKGLASS_AUDIT_CHANNEL)"
    else:
        audit = "not set in the policy; BREAKGLASS_AUDIT_CHANNEL is used"
    lines = [
        f"Audit channel: {audit}",
        "If an audit channel breaks: "
        + (f"post to {policy.fallback_channel} and " if policy.fallback_channel else "")
        + "DM every security member",
        f"Expiry warning: {format_duration(policy.warn_before)} before access expires",
        f"Sweep interval: every {format_duration(policy.sweep_interval)}",
        f"Audit retention: {format_duration(policy.retention)} after expiry",
        f"Identity: {policy.identity} ({_IDENTITY_WORDS[policy.identity]})",
        f"Email domains: {', '.join(policy.email_domains) or 'any'}",
        f"Guests allowed: {'yes' if policy.allow_guests else 'no'}; "
        f"users of other workspaces allowed: {'yes' if policy.allow_external_users else 'no'}",
        f"Review reminder: ended events unreviewed for more than {_long_words(policy.review_reminder_after)} "
        f"are listed daily at {policy.review_reminder_time.strftime('%H:%M')} UTC",
        f"Incident commanders: {_ids(policy.incident_commanders)}",
        f"Security: {_ids(policy.security)}",
        *_access_lines(policy.access),
        *incident_summary_lines(policy.incidents),
        "Rate limits:",
        *(f"  - {line}" for line in _rate_limit_lines(policy.rate_limits)),
        f"Profiles ({len(policy.profiles)}):",
    ]
    for name, profile in policy.profiles.items():
        lines.append(f"  {name}: {profile.description}" if profile.description else f"  {name}")
        invokers = "everyone" if profile.invokers is None else _ids(profile.invokers)
        lines.append(f"    who may invoke: {invokers}")
        lines.append(f"    durations: {', '.join(format_duration(d) for d in profile.durations)}")
        lines.append(f"    max duration: {format_duration(profile.max_duration)}")
        lines.append(f"    incident required: {'yes' if profile.require_incident else 'no'}")
        if profile.audit_channel:
            lines.append(f"    audit channel: {profile.audit_channel} (overrides the policy's)")
        lines.extend(_aws_target_lines(profile.aws))
        lines.extend(incident_profile_lines(policy.incidents, profile.close_on_resolve, profile.oncall))
    lines += [f"WARNING: {warning}" for warning in unheld_roles(policy)]
    return "\n".join(lines)


def _aws_target_lines(target: AwsTarget | None) -> list[str]:
    if target is None:
        return []
    lines = [f"    AWS: account {target.account}, permission set {target.permission_set}"]
    if target.activity_role:
        regions = ", ".join(target.activity_regions) or "the bot's region"
        lines.append(f"    activity role: {target.activity_role} (CloudTrail in {regions})")
    return lines


def _access_lines(access: AccessPolicy) -> list[str]:
    if access.provider == "none":
        return ["AWS access: provider none (breakglass records events; it grants and revokes no AWS access)"]
    return [
        f"AWS access: provider {access.provider}, instance {access.instance_arn}, "
        f"identity store {access.identity_store_id}",
        f"  drift check every {format_duration(access.reconcile_every)}; "
        f"activity collected {format_duration(access.activity_delay)} after an event ends",
    ]
