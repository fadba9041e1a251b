"""examples/policy.yml is the policy people copy: it loads, and it shows every key the policy accepts (a key
added to the policy must be added to the example too)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bot.policy import AccessPolicy, AwsTarget, Policy, ProfilePolicy, RateLimits, load_policy

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "policy.yml"


def test_the_example_policy_loads_and_shows_every_key() -> None:
    policy = load_policy(EXAMPLE)
    assert policy.access.provider == "identity-center"
    raw = yaml.safe_load(EXAMPLE.read_text())
    profiles = raw["profiles"].values()
    targets = [p["aws"] for p in profiles if "aws" in p]
    shown = {
        Policy: set(raw),
        RateLimits: set(raw["rate_limits"]),
        AccessPolicy: set(raw["access"]),
        ProfilePolicy: set().union(*(set(p) for p in profiles)),
        AwsTarget: set().union(*(set(t) for t in targets)),
    }
    for model, keys in shown.items():
        assert set(model.model_fields) - keys == set(), (
            f"{model.__name__} keys missing from examples/policy.yml"
        )


def test_the_readme_contents_list_every_section() -> None:
    readme = (EXAMPLE.parent.parent / "README.md").read_text()
    sections, in_code = [], False
    for line in readme.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("## ") and line != "## Contents":
            sections.append(line[3:])
    contents = readme.split("## Contents", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^- \[(.+?)\]\(#[\w-]+\)$", contents, flags=re.MULTILINE)
    assert listed == sections, "README.md's Contents must list its ## sections, in order"
