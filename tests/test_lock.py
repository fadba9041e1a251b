"""requirements.lock (`make lock`, pip-compile --generate-hashes) still matches pyproject.toml: every runtime
dependency is pinned, at a version its specifier allows, with hashes; nothing is pinned that pyproject.toml
no longer asks for; and the container, `sam build` and `make` install from it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"


def pins() -> dict[str, tuple[Version, list[str], list[str]]]:
    """name -> (version, hashes, `# via` parents), from the lock file."""
    out: dict[str, tuple[Version, list[str], list[str]]] = {}
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text())
    for block in blocks:
        if block.startswith("#"):
            continue
        match = re.match(r"([A-Za-z0-9._-]+)==(\S+)", block)
        assert match, f"not a pin: {block[:80]!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
        via = re.findall(
            r"#\s+(?:via\s+)?([A-Za-z0-9._-]+(?: \(pyproject\.toml\))?)\s*$", block, re.MULTILINE
        )
        out[canonicalize_name(match.group(1))] = (Version(match.group(2)), hashes, via)
    return out


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def test_every_dependency_is_pinned_within_its_specifier_with_hashes() -> None:
    locked = pins()
    for requirement in runtime_requirements():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in requirements.lock: run `make lock`"
        version, hashes, _ = locked[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside pyproject.toml's {requirement}: run `make lock`"
        )
    for name, (_, hashes, _) in locked.items():
        assert hashes, f"{name} has no hash"


def test_nothing_is_pinned_for_a_dependency_pyproject_dropped() -> None:
    """The lock's direct dependencies (`via breakglass (pyproject.toml)`) are exactly pyproject.toml's."""
    direct = {name for name, (_, _, via) in pins().items() if "breakglass (pyproject.toml)" in via}
    assert direct == {canonicalize_name(r.name) for r in runtime_requirements()}
    # Every other pin is needed by some pin (nothing stale is left behind).
    locked = pins()
    for name, (_, _, via) in locked.items():
        parents = {canonicalize_name(v.split(" ")[0]) for v in via} - {"breakglass"}
        assert name in direct or parents & set(locked), f"{name} is pinned but nothing needs it"


def test_the_container_sam_and_make_install_from_the_lock() -> None:
    assert "--require-hashes -r requirements.lock" in (ROOT / "Dockerfile").read_text()
    sam = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert sam == ["-r requirements.lock"]
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --require-hashes -r requirements.lock" in makefile
    assert "pip install --quiet --no-deps -e ." in makefile
