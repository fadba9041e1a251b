"""What a test needs from outside this repository: `../shared` (beside the repository in CI, absent from a clone
from a forge) and the test browser. Absent, such a test skips with a reason saying what is missing; under
`CI=true` the same absence fails the test, because CI provides both and a missing one there is a broken setup.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def in_ci() -> bool:
    """`CI` set to anything but empty, 0 or false (GitHub Actions, GitLab and most CI systems set CI=true)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str, *, module: bool = False) -> None:
    """Skip (fail under CI) because ``reason``."""
    if in_ci():
        pytest.fail(f"CI={os.environ['CI']} but {reason}", pytrace=False)
    pytest.skip(f"\n!!! SKIPPED: {reason} !!!", allow_module_level=module)


def shared_file(relative: str) -> Path:
    """``../shared/<relative>``, or skip the calling test (fail it under CI) when it is not there."""
    path = SHARED / relative
    if not path.is_file():
        missing(
            f"{path} is not there: it ships beside this repository in CI (`../shared`), not in a clone from a "
            "forge; put that material at ../shared to run this test"
        )
    return path
