"""The installed workspace (bot/home_team.py) is never asked of Slack in a request's path.

Built the way every threaded entry point builds the bot (`bot.runtime.build`: the token check, then
`create_app`), against the fake Slack Web API, with signed requests to the bot's real HTTP endpoint."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError

from bot import runtime as runtime_module
from bot.app import BreakglassApp, create_app
from bot.config import ConfigError
from bot.home_team import HomeTeam
from bot.ids import ACTION_CLOSE
from bot.localslack.webapi import FakeSlack
from store.sqlite import SQLiteStore
from tests.conftest import TEST_POLICY, settings_for
from tests.harness import BotServer, SlackSender

UNCONFIRMED = "could not confirm this request came from it"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


@contextmanager
def built(
    fake: FakeSlack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[BreakglassApp, SlackSender]]:
    """`bot.runtime.build` without SLACK_TEAM_ID (the configuration check itself is other tests' job), served
    on the real HTTP endpoint; stopped afterwards."""
    policy = tmp_path / "policy.yml"
    policy.write_text(TEST_POLICY)
    settings = settings_for(
        fake,
        slack_team_id=None,
        breakglass_policy=policy,
        breakglass_store=f"sqlite:///{tmp_path / 'events.db'}",
    )
    monkeypatch.setattr(runtime_module, "_checked", True)
    runtime = runtime_module.build(settings)
    server = BotServer(runtime).start()
    try:
        yield runtime, SlackSender(server.url, fake)
    finally:
        server.stop()
        runtime.shutdown()
        runtime.store.disconnect()  # type: ignore[attr-defined]


@pytest.mark.usefixtures("restore_logging")
def test_slack_down_at_start_up_then_up_the_workspace_is_learned_in_the_background(
    fake: FakeSlack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.set_down(True)  # every Web API call answers 503
    with built(fake, tmp_path, monkeypatch) as (runtime, slack):
        # One auth.test at start-up serves the token check and the workspace: one attempt, no retries
        # (before: the token check and create_app each asked, each retried, 6 calls in all).
        assert len(fake.calls_to("auth.test")) == 1
        assert runtime.home is not None and runtime.home.team_id is None and runtime.home.learning

        refused = slack.raw_command("sandbox 30m incident " + "x" * 30)  # still unknown: refused at once
        assert refused.status == 200 and UNCONFIRMED in refused.text
        assert fake.calls_to("response_url") == []  # in the ack, not posted to the response_url first
        assert runtime.store.list_active() == []

        fake.set_down(False)
        assert runtime.home.wait(15)  # learned in the background
        assert runtime.home.team_id == "T0001"
        learned = len(fake.calls_to("auth.test"))
        assert fake.calls_to("auth.test")[-1].ok

        assert slack.invoke().json["response_action"] == "update"
        assert len(runtime.store.list_active()) == 1
        other = slack.raw_command("sandbox 30m incident " + "x" * 30, team_id="T0OTHER")
        assert UNCONFIRMED in other.text  # another workspace is still refused
        assert runtime.pipeline.inflight.wait_idle(15)
        assert len(fake.calls_to("auth.test")) == learned  # none in any request's path
        assert not runtime.home.learning  # the learner ended once it knew


@pytest.mark.usefixtures("restore_logging")
def test_slack_up_at_start_up_one_auth_test_and_no_learner(
    fake: FakeSlack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with built(fake, tmp_path, monkeypatch) as (runtime, _slack):
        assert len(fake.calls_to("auth.test")) == 1
        assert runtime.home is not None and runtime.home.team_id == "T0001"
        assert not runtime.home.learning


@pytest.mark.usefixtures("restore_logging")
def test_a_request_while_the_workspace_is_unknown_never_waits_for_slack(
    fake: FakeSlack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slack answering slowly (5 s) and failing: the request is refused in its ack, no Slack call before it
    (a request only wakes the background learner, which asks on its own thread)."""
    fake.set_down(True)
    with built(fake, tmp_path, monkeypatch) as (runtime, slack):
        fake.set_down(False)
        fake.fail("auth.test", status=503, delay=5, times=100)
        before = len(fake.calls_to("auth.test"))
        started = time.monotonic()
        for response in (slack.raw_command("list"), slack.click(ACTION_CLOSE, "01EVENT")):
            assert response.status == 200
            assert UNCONFIRMED in response.text
        assert time.monotonic() - started < 5  # one auth.test in the path would have taken 5 s
        assert len(fake.calls_to("auth.test")) <= before + 1  # at most the woken learner's own
        assert fake.calls_to("response_url") == []
        assert runtime.shutdown(timeout=10)  # the learner stops without waiting for its slow call


def test_lambda_requires_slack_team_id_and_asks_slack_nothing(
    fake: FakeSlack, tmp_path: Path, policy: Any
) -> None:
    settings = settings_for(fake, slack_team_id=None)
    with pytest.raises(ConfigError, match="SLACK_TEAM_ID is not set: on Lambda it is required"):
        create_app(settings, SQLiteStore(tmp_path / "l.db"), policy=policy, lazy_delivery=True)
    assert fake.calls_to("auth.test") == []


# -- the learner -----------------------------------------------------------------------------------


class Answers:
    """An auth.test that fails `failures` times (connection refused), then names T0HOME; counts calls."""

    def __init__(self, failures: int, error: str | None = None) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0
        self.called = threading.Condition()

    def __call__(self) -> dict[str, Any]:
        with self.called:
            self.calls += 1
            self.called.notify_all()
        if self.error is not None:
            raise SlackApiError(self.error, {"ok": False, "error": self.error})  # type: ignore[arg-type]
        if self.calls <= self.failures:
            raise ConnectionRefusedError("Slack is down")
        return {"ok": True, "team_id": "T0HOME"}


def test_the_learner_backs_off_until_slack_names_the_workspace() -> None:
    home = HomeTeam(first_retry=0.01, spacing=0.01)
    answers = Answers(failures=3)
    assert not home.ask(answers)  # the start-up attempt
    home.learn_in_background(answers)  # then after 0.01 s, 0.02 s, 0.04 s
    assert home.wait(10) and home.team_id == "T0HOME"
    assert answers.calls == 4
    home.stop()
    assert not home.learning


def test_a_request_wakes_the_learner_out_of_its_backoff() -> None:
    home = HomeTeam(first_retry=3600, spacing=0.01)  # an hour's backoff, cut short by each nudge
    answers = Answers(failures=2)
    assert not home.ask(answers)
    home.learn_in_background(answers)
    home.nudge()
    with answers.called:
        assert answers.called.wait_for(lambda: answers.calls == 2, timeout=10)
    assert home.team_id is None
    home.nudge()
    assert home.wait(10) and home.team_id == "T0HOME" and answers.calls == 3
    home.stop()


def test_a_token_slack_refuses_ends_the_learner_with_an_error(caplog: pytest.LogCaptureFixture) -> None:
    home = HomeTeam(first_retry=0.01)
    answers = Answers(failures=0, error="token_revoked")
    home.learn_in_background(answers)
    with answers.called:
        assert answers.called.wait_for(lambda: answers.calls == 1, timeout=10)
    home.stop(10)
    assert not home.learning and home.team_id is None and home.refused == "token_revoked"
    assert answers.calls == 1
    assert any("Slack refuses the bot token" in r.getMessage() for r in caplog.records)


def test_stop_ends_a_learner_waiting_out_its_backoff() -> None:
    home = HomeTeam(first_retry=3600)
    home.learn_in_background(Answers(failures=10))
    assert home.learning
    home.stop(10)
    assert not home.learning


def test_a_configured_workspace_is_never_learned() -> None:
    home = HomeTeam("T0CONF")
    answers = Answers(failures=0)
    home.learn_in_background(answers)
    assert not home.learning and answers.calls == 0 and home.team_id == "T0CONF"
