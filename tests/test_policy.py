import textwrap
from datetime import time, timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from bot.policy import (
    BUILTIN_SOURCE,
    DEFAULT_POLICY_YAML,
    HARD_CAP,
    Policy,
    PolicyError,
    ProfilePolicy,
    RateLimits,
    load_policy,
    parse_policy,
    summarize,
)

M15, M30, H1, H2, H4 = (
    timedelta(minutes=15),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(hours=4),
)

FULL_POLICY = """\
audit_channel: C0123456
warn_before: 10m
sweep_interval: 1m
retention: 30d
identity: email_local_part
email_domains: [example.com]
review_reminder_after: 12h
review_reminder_time: "08:30"
incident_commanders: [U0IC1, S0ONCALL]
security: [S0SECURITY]
rate_limits:
  cooldown: 10m
  window: 24h
  per_user: 5
  per_profile: 20
  escalate_after: 3
profiles:
  prod:
    description: Production account admin
    durations: [4h, 15m, 1h, 30m, 2h]
    max_duration: 4h
    invokers: [S0SRE, U0ALICE]
    require_incident: true
    audit_channel: C0PRODAUDIT
  staging:
    durations: [30m, 1h]
"""


def problems_of(text: str) -> list[tuple[str, str]]:
    """The (key, reason) problems parse_policy reports for ``text``."""
    with pytest.raises(PolicyError) as info:
        parse_policy(textwrap.dedent(text), "policy.yml")
    assert info.value.path == "policy.yml"
    return info.value.problems


def only_problem(text: str) -> tuple[str, str]:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


def with_profile(body: str) -> str:
    """A policy with one profile ``p`` whose settings are ``body`` (YAML, unindented)."""
    return "profiles:\n  p:\n" + textwrap.indent(textwrap.dedent(body), "    ")


# --------------------------------------------------------------------------------------------------
# Parsing valid policies


def test_full_policy_parses() -> None:
    policy = parse_policy(FULL_POLICY, "policy.yml")
    assert policy.audit_channel == "C0123456"
    assert policy.warn_before == timedelta(minutes=10)
    assert policy.sweep_interval == timedelta(minutes=1)
    assert policy.retention == timedelta(days=30)
    assert policy.identity == "email_local_part"
    assert policy.review_reminder_after == timedelta(hours=12)
    assert policy.review_reminder_time == time(8, 30)
    assert policy.incident_commanders == ("U0IC1", "S0ONCALL")
    assert policy.security == ("S0SECURITY",)
    assert policy.rate_limits == RateLimits(
        cooldown=timedelta(minutes=10),
        window=timedelta(hours=24),
        per_user=5,
        per_profile=20,
        escalate_after=3,
    )
    prod = policy.profiles["prod"]
    assert prod.description == "Production account admin"
    assert prod.durations == (M15, M30, H1, H2, H4)  # sorted
    assert prod.max_duration == H4
    assert prod.invokers == ("S0SRE", "U0ALICE")
    assert prod.require_incident is True
    assert prod.audit_channel == "C0PRODAUDIT"
    staging = policy.profiles["staging"]
    assert staging.durations == (M30, H1)
    assert staging.invokers is None
    assert staging.require_incident is False
    assert staging.audit_channel is None
    assert list(policy.profiles) == ["prod", "staging"]


def test_defaults() -> None:
    policy = parse_policy("profiles:\n  p: {}\n", "policy.yml")
    assert policy.audit_channel is None
    assert policy.warn_before == M15
    assert policy.sweep_interval == timedelta(seconds=30)
    assert policy.retention == timedelta(days=400)
    assert policy.identity == "slack_id"
    assert policy.review_reminder_after == timedelta(hours=24)
    assert policy.review_reminder_time == time(9, 0)
    assert policy.incident_commanders == ()
    assert policy.security == ()
    assert policy.rate_limits == RateLimits()
    assert policy.rate_limits.cooldown == timedelta(0)
    assert policy.rate_limits.window == timedelta(hours=24)
    assert policy.rate_limits.per_user is None
    assert policy.rate_limits.per_profile is None
    assert policy.rate_limits.escalate_after is None
    profile = policy.profiles["p"]
    assert profile.durations == (M15, M30, H1, H2, H4)
    assert profile.max_duration == HARD_CAP == H4
    assert profile.invokers is None
    assert profile.require_incident is False
    assert profile.description is None
    assert profile.audit_channel is None


def test_default_durations_are_filtered_to_max_duration() -> None:
    policy = parse_policy(with_profile("max_duration: 1h30m"), "policy.yml")
    assert policy.profiles["p"].durations == (M15, M30, H1)


def test_default_durations_below_the_smallest_default_offer_max_duration() -> None:
    policy = parse_policy(with_profile("max_duration: 10m"), "policy.yml")
    assert policy.profiles["p"].durations == (timedelta(minutes=10),)


def test_durations_accept_seconds_and_mixed_forms() -> None:
    policy = parse_policy(with_profile("durations: [900, 1h30m, '1800']"), "policy.yml")
    assert policy.profiles["p"].durations == (M15, M30, timedelta(minutes=90))


def test_durations_equal_to_max_duration_and_hard_cap_are_allowed() -> None:
    policy = parse_policy(with_profile("durations: [4h]\nmax_duration: 240m"), "policy.yml")
    assert policy.profiles["p"].durations == (H4,)


def test_null_lists_and_rate_limits_mean_the_defaults() -> None:
    policy = parse_policy("incident_commanders:\nsecurity:\nrate_limits:\nprofiles: {p: {}}\n", "policy.yml")
    assert policy.incident_commanders == ()
    assert policy.security == ()
    assert policy.rate_limits == RateLimits()


def test_repeated_ids_are_kept_once_in_order() -> None:
    policy = parse_policy(
        "security: [S0B, S0A, S0B]\nprofiles: {p: {invokers: [U0B, U0A, U0B]}}\n",
        "policy.yml",
    )
    assert policy.security == ("S0B", "S0A")
    assert policy.profiles["p"].invokers == ("U0B", "U0A")


@pytest.mark.parametrize("identity", ["slack_id", "email", "email_local_part"])
def test_identities(identity: str) -> None:
    text = f"identity: {identity}\nemail_domains: [example.com]\nprofiles: {{p: {{}}}}\n"
    assert parse_policy(text, "policy.yml").identity == identity


@pytest.mark.parametrize(
    ("written", "expected"),
    [('"09:00"', time(9, 0)), ("09:00", time(9, 0)), ("10:30", time(10, 30)), ("'7:05'", time(7, 5))],
)
def test_review_reminder_time_even_unquoted(written: str, expected: time) -> None:
    # YAML 1.1 would read an unquoted 10:30 as the base-60 number 630; the policy loader does not.
    text = f"review_reminder_time: {written}\nprofiles: {{p: {{}}}}\n"
    assert parse_policy(text, "policy.yml").review_reminder_time == expected


@pytest.mark.parametrize("name", ["prod", "a", "A1", "team.prod-eu_1", "x@y", "0day", "p" * 64])
def test_valid_profile_names(name: str) -> None:
    policy = parse_policy(f"profiles:\n  '{name}': {{}}\n", "policy.yml")
    assert policy.profile(name) is not None


@pytest.mark.parametrize("principal", ["U0ABC", "W0ABC", "S0ABC", "UAB"])
def test_valid_principal_ids(principal: str) -> None:
    policy = parse_policy(with_profile(f"invokers: [{principal}]"), "policy.yml")
    assert policy.profiles["p"].invokers == (principal,)


@pytest.mark.parametrize("channel", ["C0123456", "G0ABC", "D0ABC"])
def test_valid_channel_ids(channel: str) -> None:
    assert (
        parse_policy(f"audit_channel: {channel}\nprofiles: {{p: {{}}}}\n", "policy.yml").audit_channel
        == channel
    )


def test_models_are_frozen() -> None:
    policy = parse_policy(FULL_POLICY, "policy.yml")
    with pytest.raises(ValidationError):
        policy.warn_before = timedelta(minutes=1)  # type: ignore[misc]
    with pytest.raises(ValidationError):
        policy.profiles["prod"].require_incident = False  # type: ignore[misc]
    with pytest.raises(ValidationError):
        policy.rate_limits.per_user = 1  # type: ignore[misc]


def test_json_dump_round_trips_through_the_parser() -> None:
    policy = parse_policy(FULL_POLICY, "policy.yml")
    dumped = policy.model_dump(mode="json", exclude_none=True)
    assert dumped["warn_before"] == "10m"
    assert dumped["review_reminder_time"] == "08:30"
    assert dumped["profiles"]["prod"]["durations"] == ["15m", "30m", "1h", "2h", "4h"]
    assert parse_policy(yaml.safe_dump(dumped), "dumped.yml") == policy


def test_models_can_be_built_in_python() -> None:
    profile = ProfilePolicy(durations=["1h", 900], invokers=["S0SRE"])  # type: ignore[list-item]
    assert profile.durations == (M15, H1)
    policy = Policy(profiles={"p": profile})
    assert policy.profile("p") is profile


# --------------------------------------------------------------------------------------------------
# Validation errors: every one names the key and the reason


def test_error_rendering() -> None:
    error = PolicyError(
        "policy.yml",
        [
            ("profiles.prod.durations[2]", "5h exceeds the 4h hard cap"),
            ("rate_limits.per_user", "must be at least 1"),
        ],
    )
    assert str(error) == (
        "invalid policy file policy.yml:\n"
        "  - profiles.prod.durations[2]: 5h exceeds the 4h hard cap\n"
        "  - rate_limits.per_user: must be at least 1"
    )
    assert error.path == "policy.yml"


def test_several_problems_are_reported_together() -> None:
    text = """\
    rate_limits:
      per_user: 0
    profiles:
      prod:
        durations: [15m, 30m, 5h]
    """
    with pytest.raises(PolicyError) as info:
        parse_policy(textwrap.dedent(text), "policy.yml")
    rendered = str(info.value)
    assert rendered.startswith("invalid policy file policy.yml:\n")
    assert "\n  - profiles.prod.durations[2]: 5h exceeds the 4h hard cap" in rendered
    assert "\n  - rate_limits.per_user: must be at least 1" in rendered
    assert sorted(info.value.problems) == [
        ("profiles.prod.durations[2]", "5h exceeds the 4h hard cap"),
        ("rate_limits.per_user", "must be at least 1"),
    ]


def test_duration_over_the_hard_cap() -> None:
    assert only_problem(with_profile("durations: [15m, 30m, 5h]")) == (
        "profiles.p.durations[2]",
        "5h exceeds the 4h hard cap",
    )


def test_duration_over_max_duration() -> None:
    assert only_problem(with_profile("durations: [15m, 2h]\nmax_duration: 1h")) == (
        "profiles.p.durations[1]",
        "2h exceeds max_duration 1h",
    )


def test_duplicate_durations() -> None:
    assert only_problem(with_profile("durations: [15m, 30m, 900]")) == (
        "profiles.p.durations[2]",
        "15m is listed more than once (first at durations[0])",
    )


def test_all_duration_problems_of_a_profile_are_reported_at_once() -> None:
    problems = problems_of(with_profile("durations: [15m, 5h, 2h, 15m]\nmax_duration: 1h"))
    assert problems == [
        ("profiles.p.durations[1]", "5h exceeds the 4h hard cap"),
        ("profiles.p.durations[2]", "2h exceeds max_duration 1h"),
        ("profiles.p.durations[3]", "15m is listed more than once (first at durations[0])"),
    ]


def test_empty_durations() -> None:
    assert only_problem(with_profile("durations: []")) == (
        "profiles.p.durations",
        "must offer at least one duration; omit durations for the default list",
    )


def test_zero_duration() -> None:
    key, reason = only_problem(with_profile("durations: [0s, 15m]"))
    assert key == "profiles.p.durations[0]"
    assert reason == "duration must be greater than zero, got '0s'"


def test_unparseable_duration() -> None:
    assert only_problem(with_profile("durations: [15m, 5x]")) == (
        "profiles.p.durations[1]",
        "'5x' is not a duration: use a number with s, m, h or d, such as 90s, 15m, 1h or 1h30m",
    )


def test_durations_not_a_list() -> None:
    assert only_problem(with_profile("durations: 15m")) == (
        "profiles.p.durations",
        "must be a list, not '15m'",
    )


def test_max_duration_over_the_hard_cap() -> None:
    assert only_problem(with_profile("max_duration: 8h")) == (
        "profiles.p.max_duration",
        "8h exceeds the 4h hard cap",
    )


def test_max_duration_zero() -> None:
    key, reason = only_problem(with_profile("max_duration: 0"))
    assert key == "profiles.p.max_duration"
    assert "must be greater than zero" in reason


def test_no_profiles() -> None:
    assert only_problem("profiles: {}\n") == ("profiles", "at least one profile is required")


def test_profiles_missing() -> None:
    assert only_problem("warn_before: 10m\n") == ("profiles", "is missing; define at least one profile")


def test_profile_without_settings() -> None:
    assert only_problem("profiles:\n  p:\n") == (
        "profiles.p",
        "has no settings; write {} to use the defaults",
    )


def test_profile_settings_not_a_mapping() -> None:
    assert only_problem("profiles:\n  p: [1h]\n") == (
        "profiles.p",
        "must be a mapping of keys to values, not a list",
    )


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("bad name", 'profiles["bad name"]'),
        ("_prod", "profiles._prod"),
        ("-prod", "profiles.-prod"),
        ("prod/eu", 'profiles["prod/eu"]'),
        ("p" * 65, "profiles." + "p" * 65),
        ("", 'profiles[""]'),
    ],
)
def test_invalid_profile_names(name: str, key: str) -> None:
    assert only_problem(f"profiles:\n  '{name}': {{}}\n") == (
        key,
        f"{name!r} is not a valid profile name: use up to 64 letters, digits, '_', '.', '@' or '-', "
        "starting with a letter or digit",
    )


@pytest.mark.parametrize(
    ("written", "key", "shown"), [("yes", "profiles[true]", "true"), ("123", "profiles[123]", "123")]
)
def test_profile_names_yaml_reads_as_something_else(written: str, key: str, shown: str) -> None:
    assert only_problem(f"profiles:\n  {written}: {{}}\n") == (
        key,
        f"profile names must be text, but YAML read this one as {shown}; quote it",
    )


def test_profile_names_with_dots_are_quoted_in_keys() -> None:
    assert only_problem("profiles:\n  prod.eu: {max_duration: 5h}\n") == (
        'profiles["prod.eu"].max_duration',
        "5h exceeds the 4h hard cap",
    )


USER_OR_GROUP = "is not a Slack user id (U... or W...) or user-group id (S...)"


@pytest.mark.parametrize(
    ("principal", "reason"),
    [
        ("X0ABC", f"'X0ABC' {USER_OR_GROUP}"),
        ("U1", f"'U1' {USER_OR_GROUP}"),
        ("C0ABC", f"'C0ABC' {USER_OR_GROUP}"),
        ("U0AB-C", f"'U0AB-C' {USER_OR_GROUP}"),
        ("u0abc", f"'u0abc' {USER_OR_GROUP}; Slack ids are upper case"),
        ("'@alice'", f"'@alice' {USER_OR_GROUP}; use the id, not the @name"),
        ("42", "must be a Slack user id (U... or W...) or user-group id (S...), not 42"),
    ],
)
def test_invalid_invokers(principal: str, reason: str) -> None:
    assert only_problem(with_profile(f"invokers: [U0OK, {principal}]")) == ("profiles.p.invokers[1]", reason)


@pytest.mark.parametrize("field", ["incident_commanders", "security"])
def test_invalid_ids_in_top_level_lists(field: str) -> None:
    assert only_problem(f"{field}: [S0OK, U0OK, bob]\nprofiles: {{p: {{}}}}\n") == (
        f"{field}[2]",
        f"'bob' {USER_OR_GROUP}",
    )


@pytest.mark.parametrize("field", ["incident_commanders", "security"])
def test_top_level_id_lists_must_be_lists(field: str) -> None:
    assert only_problem(f"{field}: S0SECURITY\nprofiles: {{p: {{}}}}\n") == (
        field,
        "must be a list, not 'S0SECURITY'",
    )


def test_empty_invokers() -> None:
    assert only_problem(with_profile("invokers: []")) == (
        "profiles.p.invokers",
        "is empty, so nobody could invoke this profile; list user or user-group ids, "
        "or omit invokers to allow everyone",
    )


def test_null_invokers_do_not_mean_everyone() -> None:
    assert only_problem(with_profile("invokers:")) == (
        "profiles.p.invokers",
        "is empty; list user or user-group ids, or omit invokers to allow everyone",
    )


CHANNEL = "is not a Slack channel id (C..., G... or D...)"


@pytest.mark.parametrize(
    ("channel", "reason"),
    [
        ("X0123", f"'X0123' {CHANNEL}"),
        ("U0123", f"'U0123' {CHANNEL}"),
        ("C1", f"'C1' {CHANNEL}"),
        ("c0123", f"'c0123' {CHANNEL}; Slack ids are upper case"),
        ("'#security'", f"'#security' {CHANNEL}; use the id, not the #name"),
        ("12345", "must be a Slack channel id (C..., G... or D...), not 12345"),
    ],
)
def test_invalid_audit_channel(channel: str, reason: str) -> None:
    assert only_problem(f"audit_channel: {channel}\nprofiles: {{p: {{}}}}\n") == ("audit_channel", reason)


def test_invalid_profile_audit_channel() -> None:
    assert only_problem(with_profile("audit_channel: '#prod-audit'")) == (
        "profiles.p.audit_channel",
        f"'#prod-audit' {CHANNEL}; use the id, not the #name",
    )


@pytest.mark.parametrize(
    ("setting", "key", "reason"),
    [
        ("warn_before: 4h", "warn_before", "must be less than the 4h hard cap, got 4h"),
        ("warn_before: 5h", "warn_before", "must be less than the 4h hard cap, got 5h"),
        ("warn_before: 0", "warn_before", "duration must be greater than zero, got 0"),
        ("sweep_interval: 0.5", "sweep_interval", "must be at least 1s, got 0.5s"),
        ("sweep_interval: 0s", "sweep_interval", "duration must be greater than zero, got '0s'"),
        ("sweep_interval: 61m", "sweep_interval", "must be at most 1h, got 1h1m"),
        ("retention: 23h", "retention", "must be at least 1d, got 23h"),
        (
            "review_reminder_after: 0m",
            "review_reminder_after",
            "duration must be greater than zero, got '0m'",
        ),
        ("rate_limits: {cooldown: -5m}", "rate_limits.cooldown", "'-5m' is not a duration"),
        ("rate_limits: {window: 0}", "rate_limits.window", "duration must be greater than zero, got 0"),
        ("warn_before: soon", "warn_before", "'soon' is not a duration"),
        ("warn_before:", "warn_before", "a duration is required"),
    ],
)
def test_invalid_durations(setting: str, key: str, reason: str) -> None:
    found_key, found_reason = only_problem(f"{setting}\nprofiles: {{p: {{}}}}\n")
    assert found_key == key
    assert found_reason.startswith(reason)


def test_sweep_interval_bounds_are_inclusive() -> None:
    assert parse_policy("sweep_interval: 1s\nprofiles: {p: {}}\n", "p.yml").sweep_interval == timedelta(
        seconds=1
    )
    assert parse_policy("sweep_interval: 1h\nprofiles: {p: {}}\n", "p.yml").sweep_interval == H1
    assert parse_policy("retention: 1d\nprofiles: {p: {}}\n", "p.yml").retention == timedelta(days=1)


def test_zero_cooldown_is_allowed() -> None:
    policy = parse_policy("rate_limits: {cooldown: 0}\nprofiles: {p: {}}\n", "policy.yml")
    assert policy.rate_limits.cooldown == timedelta(0)


@pytest.mark.parametrize("field", ["per_user", "per_profile", "escalate_after"])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "must be at least 1"),
        ("-3", "must be at least 1"),
        ("2.5", "must be a whole number, not 2.5"),
        ("true", "must be a whole number, not true"),
        ("'5'", "must be a whole number, not '5'"),
    ],
)
def test_invalid_counts(field: str, value: str, reason: str) -> None:
    assert only_problem(f"rate_limits:\n  {field}: {value}\nprofiles: {{p: {{}}}}\n") == (
        f"rate_limits.{field}",
        reason,
    )


def test_invalid_identity() -> None:
    assert only_problem("identity: name\nprofiles: {p: {}}\n") == (
        "identity",
        "must be one of 'slack_id', 'email' or 'email_local_part', not 'name'",
    )


@pytest.mark.parametrize("written", ['"25:00"', '"9am"', '"09:60"', '"0900"', "900", '"09:00:00"'])
def test_invalid_review_reminder_time(written: str) -> None:
    key, reason = only_problem(f"review_reminder_time: {written}\nprofiles: {{p: {{}}}}\n")
    assert key == "review_reminder_time"
    assert reason.endswith('is not a time of day: use HH:MM (UTC), such as "09:00"')


def test_wrong_types() -> None:
    problems = problems_of(
        """\
        rate_limits: 5
        profiles:
          p:
            require_incident: maybe
            description: [a, b]
        """
    )
    assert problems == [
        ("rate_limits", "must be a mapping of keys to values, not 5"),
        ("profiles.p.description", "must be text, not a list"),
        ("profiles.p.require_incident", "must be true or false, not 'maybe'"),
    ]


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("profils: {p: {}}\n", "profils", "unknown key; did you mean profiles?"),
        ("profiles: {p: {}}\nwarn_befor: 5m\n", "warn_befor", "unknown key; did you mean warn_before?"),
        (
            "profiles: {p: {}}\nrate_limits: {per_users: 3}\n",
            "rate_limits.per_users",
            "unknown key; did you mean per_user?",
        ),
        ("profiles: {p: {invoker: [U0A]}}\n", "profiles.p.invoker", "unknown key; did you mean invokers?"),
        (
            "profiles: {p: {}}\nzzz: 1\n",
            "zzz",
            "unknown key; expected one of: audit_channel, fallback_channel, warn_before, sweep_interval, retention, "
            "identity, email_domains, allow_guests, allow_external_users, review_reminder_after, "
            "review_reminder_time, incident_commanders, security, rate_limits, access, profiles",
        ),
    ],
)
def test_unknown_keys(text: str, key: str, reason: str) -> None:
    assert (key, reason) in problems_of(text)


def test_misspelt_profiles_key_is_named() -> None:
    problems = problems_of("profils:\n  prod: {}\n")
    assert ("profils", "unknown key; did you mean profiles?") in problems
    assert ("profiles", "is missing; define at least one profile") in problems


# --------------------------------------------------------------------------------------------------
# File-level problems


def test_yaml_syntax_error_has_line_and_column() -> None:
    problem = only_problem("profiles:\n  p: {}\n  q: [15m\n")
    assert problem[0] == ""
    assert problem[1].startswith("invalid YAML at line 4, column 1: ")


def test_yaml_syntax_error_mapping_values() -> None:
    key, reason = only_problem("profiles:\n  p: a: b\n")
    assert key == ""
    assert reason == "invalid YAML at line 2, column 7: mapping values are not allowed here"


def test_yaml_duplicate_keys_are_errors() -> None:
    assert only_problem("profiles:\n  p: {}\n  q: {}\n  p: {invokers: [U0A]}\n") == (
        "",
        "invalid YAML at line 4, column 3: found duplicate key 'p'",
    )


def test_yaml_merge_keys_still_work() -> None:
    text = """\
profiles:
  a: &base {require_incident: true, durations: [1h]}
  b:
    <<: *base
    durations: [2h]
"""
    policy = parse_policy(text, "policy.yml")
    assert policy.profiles["b"].require_incident is True
    assert policy.profiles["b"].durations == (H2,)


def test_yaml_python_tags_are_rejected() -> None:
    key, reason = only_problem("profiles: !!python/object:os.system {}\n")
    assert key == ""
    assert reason.startswith("invalid YAML at line 1")


def test_several_yaml_documents_are_rejected() -> None:
    key, reason = only_problem("profiles: {p: {}}\n---\nprofiles: {q: {}}\n")
    assert key == ""
    assert reason == (
        "invalid YAML at line 2, column 1: "
        "expected a single document in the stream, but found another document"
    )


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    assert only_problem(text) == ("", "the file is empty; it must define at least one profile")


@pytest.mark.parametrize(
    ("text", "shown"), [("- a\n- b\n", "a list"), ("just text\n", "'just text'"), ("42\n", "42")]
)
def test_top_level_not_a_mapping(text: str, shown: str) -> None:
    assert only_problem(text) == (
        "",
        f"the top level must be a mapping of keys such as profiles:, not {shown}",
    )


def test_load_policy_from_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(FULL_POLICY, encoding="utf-8")
    assert load_policy(path) == parse_policy(FULL_POLICY, "x")
    assert load_policy(str(path)) == parse_policy(FULL_POLICY, "x")


def test_load_policy_tolerates_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text("\ufeffprofiles: {p: {}}\n", encoding="utf-8")
    assert load_policy(path).profile("p") is not None


def test_load_policy_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text("rate_limits:\n  per_user: 0\nprofiles: {p: {}}\n", encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.path == str(path)
    assert str(info.value) == f"invalid policy file {path}:\n  - rate_limits.per_user: must be at least 1"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.path == str(path)
    assert info.value.problems == [("", "file not found")]
    assert str(info.value) == f"invalid policy file {path}:\n  - file not found"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    assert info.value.problems == [("", "is a directory, not a file")]


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.yml"
    path.write_text("profiles: {p: {}}\n", encoding="utf-8")

    def refuse(*_args: object, **_kwargs: object) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.path == str(path)
    assert info.value.problems == [("", "cannot read the file: permission denied")]


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_bytes(b"profiles:\n  caf\xe9: {}\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.problems == [("", "the file is not UTF-8 text (bad byte on line 2)")]


def test_empty_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert (
        str(info.value)
        == f"invalid policy file {path}:\n  - the file is empty; it must define at least one profile"
    )


def test_yaml_error_in_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text("profiles: [\n", encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value).startswith(f"invalid policy file {path}:\n  - invalid YAML at line 2, column 1: ")


def test_policy_error_survives_pickling() -> None:
    import pickle

    error = PolicyError("policy.yml", [("profiles", "at least one profile is required")])
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert copy.path == error.path
    assert copy.problems == error.problems
    assert str(copy) == str(error)


# --------------------------------------------------------------------------------------------------
# The built-in policy


def test_default_policy_loads() -> None:
    policy = load_policy(None)
    assert policy == parse_policy(DEFAULT_POLICY_YAML, BUILTIN_SOURCE)
    assert list(policy.profiles) == ["sandbox", "prod"]
    sandbox, prod = policy.profiles["sandbox"], policy.profiles["prod"]
    assert sandbox.durations == (M15, M30, H1)
    assert sandbox.invokers is None  # everyone may invoke
    assert sandbox.require_incident is False
    assert prod.durations == (M15, M30, H1, H2, H4)
    assert prod.invokers is None
    assert prod.require_incident is True
    assert policy.warn_before == M15
    assert policy.sweep_interval == timedelta(seconds=30)
    assert policy.audit_channel is None
    assert policy.rate_limits == RateLimits(cooldown=timedelta(0))
    assert policy.incident_commanders == () and policy.security == ()


def test_default_policy_is_documented() -> None:
    assert DEFAULT_POLICY_YAML.count("#") > 10


def test_builtin_source_names_the_default_policy() -> None:
    assert BUILTIN_SOURCE == "<built-in>"


def test_parse_policy_default_source() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("profiles: {}\n")
    assert info.value.path == "<string>"


# --------------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture
def policy() -> Policy:
    return parse_policy(FULL_POLICY, "policy.yml")


def test_profile_lookup(policy: Policy) -> None:
    assert policy.profile("prod") is policy.profiles["prod"]
    assert policy.profile("nope") is None
    assert policy.profile("PROD") is policy.profiles["prod"]  # matched without case
    assert policy.profile_name("Prod") == "prod"


def test_profiles_differing_only_in_case_are_refused() -> None:
    with pytest.raises(PolicyError, match="differs from profile 'prod' only in case"):
        parse_policy("audit_channel: C0A\nprofiles:\n  prod: {}\n  PROD: {}\n", "policy.yml")


def test_max_total_and_extensions() -> None:
    policy = parse_policy(
        "audit_channel: C0A\nprofiles:\n  a: {durations: [1h, 4h]}\n  b: {durations: [1h], max_total: 3h, extensions: 0}\n",
        "policy.yml",
    )
    assert policy.profiles["a"].lifetime_cap == timedelta(hours=8)  # twice the longest
    assert policy.profiles["b"].lifetime_cap == timedelta(hours=3)
    assert policy.profiles["b"].extensions == 0
    with pytest.raises(PolicyError, match="12h cap"):
        parse_policy("audit_channel: C0A\nprofiles:\n  a: {max_total: 13h}\n", "policy.yml")
    with pytest.raises(PolicyError, match="extensions"):
        parse_policy("audit_channel: C0A\nprofiles:\n  a: {extensions: -1}\n", "policy.yml")


def test_audit_channel_for() -> None:
    text = "audit_channel: C0POLICY\nprofiles:\n  prod: {audit_channel: C0PROD}\n  staging: {}\n"
    policy = parse_policy(text, "policy.yml")
    assert policy.audit_channel_for("prod", "C0ENV") == "C0PROD"
    assert policy.audit_channel_for("staging", "C0ENV") == "C0POLICY"
    assert policy.audit_channel_for("unknown", "C0ENV") == "C0POLICY"
    no_policy_channel = parse_policy(
        "profiles:\n  prod: {audit_channel: C0PROD}\n  staging: {}\n", "policy.yml"
    )
    assert no_policy_channel.audit_channel_for("prod", "C0ENV") == "C0PROD"
    assert no_policy_channel.audit_channel_for("staging", "C0ENV") == "C0ENV"
    assert no_policy_channel.audit_channel_for("staging", None) is None


# --------------------------------------------------------------------------------------------------
# Summary


def test_summarize_full_policy(policy: Policy) -> None:
    summary = summarize(policy)
    lines = summary.splitlines()
    assert "Audit channel: C0123456 (overrides BREAKGLASS_AUDIT_CHANNEL)" in lines
    assert "Expiry warning: 10 minutes before access expires" in lines
    assert "Sweep interval: every 1 minute" in lines
    assert "Audit retention: 30 days after expiry" in lines
    assert "Identity: email_local_part (email address before the @)" in lines
    assert (
        "Review reminder: ended events unreviewed for more than 12 hours are listed daily at 08:30 UTC"
        in lines
    )
    assert "Incident commanders: U0IC1, S0ONCALL" in lines
    assert "Security: S0SECURITY" in lines
    assert "Rate limits:" in lines
    assert (
        "  - cooldown of 10 minutes: after an event on a profile ends, the same person waits that long "
        "before invoking that profile again"
    ) in lines
    assert "  - at most 5 events per person per 24 hours" in lines
    assert "  - at most 20 events per profile per 24 hours" in lines
    assert "  - the 3rd and later events by one person within 24 hours are allowed but escalated" in lines
    assert "Profiles (2):" in lines
    prod = lines.index("  prod: Production account admin")
    assert lines[prod + 1 : prod + 6] == [
        "    who may invoke: S0SRE, U0ALICE",
        "    durations: 15 minutes, 30 minutes, 1 hour, 2 hours, 4 hours",
        "    max duration: 4 hours",
        "    incident required: yes",
        "    audit channel: C0PRODAUDIT (overrides the policy's)",
    ]
    staging = lines.index("  staging")
    assert lines[staging + 1 :] == [
        "    who may invoke: everyone",
        "    durations: 30 minutes, 1 hour",
        "    max duration: 4 hours",
        "    incident required: no",
    ]


def test_summarize_default_policy() -> None:
    summary = summarize(load_policy(None))
    assert "Audit channel: not set in the policy; BREAKGLASS_AUDIT_CHANNEL is used" in summary
    assert "Incident commanders: none" in summary
    assert "Security: none" in summary
    assert "  - no cooldown" in summary
    assert "  - no limit on the number of events" in summary
    assert (
        "Review reminder: ended events unreviewed for more than 24 hours are listed daily at 09:00 UTC"
        in summary
    )
    assert "    durations: 15 minutes, 30 minutes, 1 hour\n" in summary
    assert summary.count("who may invoke: everyone") == 2


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ("{per_user: 1, window: 1h}", "  - at most 1 event per person per 1 hour"),
        ("{per_profile: 2, window: 7d}", "  - at most 2 events per profile per 7 days"),
        ("{per_profile: 2, window: 36h}", "  - at most 2 events per profile per 36 hours"),
        (
            "{escalate_after: 1}",
            "  - the 1st and later events by one person within 24 hours are allowed but escalated",
        ),
        (
            "{escalate_after: 2}",
            "  - the 2nd and later events by one person within 24 hours are allowed but escalated",
        ),
        (
            "{escalate_after: 11}",
            "  - the 11th and later events by one person within 24 hours are allowed but escalated",
        ),
        (
            "{escalate_after: 22}",
            "  - the 22nd and later events by one person within 24 hours are allowed but escalated",
        ),
    ],
)
def test_summarize_rate_limits_in_words(limits: str, expected: str) -> None:
    summary = summarize(parse_policy(f"rate_limits: {limits}\nprofiles: {{p: {{}}}}\n", "p.yml"))
    assert expected in summary.splitlines()
