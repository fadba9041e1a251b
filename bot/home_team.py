"""The Slack workspace breakglass is installed in ("home"), which `authorize` (bot/app.py) compares with
every request's team: `SLACK_TEAM_ID`, or learned from `auth.test`, never in a request's path.

* At start-up one `auth.test` serves both the token check (bot/runtime.py) and this: its answer names the
  workspace. It is a single attempt with a short timeout (no retries): start-up does not wait on Slack.
* When Slack did not answer then, a background learner (a daemon thread) asks again with a backoff
  (1 s doubling to 60 s) until Slack names the workspace, and stops at shutdown. A request that finds the
  workspace still unknown wakes it (at most one `auth.test` per second however many requests come).
* Until then a request is refused at once, in its ack (bot/app.py's `authorize`): trusting the team a request names would let
  another workspace's install of the app in, and asking Slack first would put a Slack round trip (or its
  timeout, Slack being unreachable) before the ack. The user is told to try again shortly.
* Lambda cannot run a learner between invocations and must not spend its cold start on `auth.test`:
  there `SLACK_TEAM_ID` is required (the SAM template and the Terraform module require it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.slack_token import TOKEN_REFUSED

log = logging.getLogger(__name__)

START_TIMEOUT = 5  # seconds for the one start-up auth.test
FIRST_RETRY = 1.0  # seconds before the learner asks again, doubling up to MAX_RETRY
MAX_RETRY = 60.0
SPACING = 1.0  # seconds at least between two attempts, however often requests wake the learner

AuthTest = Callable[[], Any]  # WebClient.auth_test: its answer's .get('team_id')


def start_up_client(token: str | None, base_url: str) -> WebClient:
    """The client of the one start-up auth.test: one attempt, a short timeout."""
    return WebClient(token=token, base_url=base_url, timeout=START_TIMEOUT, retry_handlers=[])


class HomeTeam:
    def __init__(
        self,
        team_id: str | None = None,
        *,
        first_retry: float = FIRST_RETRY,
        max_retry: float = MAX_RETRY,
        spacing: float = SPACING,
    ) -> None:
        self._team = team_id or None
        self.first_retry = first_retry
        self.max_retry = max_retry
        self.spacing = spacing
        self.asked = False  # an auth.test was made at start-up (whatever its answer)
        self.refused: str | None = None  # Slack's error when it refused the token
        self._known = threading.Event()
        if self._team:
            self._known.set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def team_id(self) -> str | None:
        """The workspace's id, or None while it is not known. Never calls Slack."""
        return self._team

    def wait(self, timeout: float) -> bool:
        """Wait until the workspace is known (tests, operators); True if it is."""
        return self._known.wait(timeout)

    def ask(self, auth_test: AuthTest) -> bool:
        """One auth.test; True when its answer named the workspace. Slack unreachable or failing is logged
        and False; a refused token is also remembered in `refused` (bot/runtime.py stops on it)."""
        self.asked = True
        try:
            answer = auth_test()
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            if error in TOKEN_REFUSED:
                self.refused = str(error)
            log.warning("auth.test failed: %s", error, extra={"action": "home_team", "outcome": "failed"})
            return False
        except (SlackClientError, OSError) as exc:
            log.warning(
                "Slack unreachable (auth.test): %s",
                type(exc).__name__,
                extra={"action": "home_team", "outcome": "unreachable"},
            )
            return False
        team = answer.get("team_id")
        if not team:
            log.warning("Slack's auth.test did not name the bot's workspace", extra={"action": "home_team"})
            return False
        with self._lock:
            configured, self._team = self._team, self._team or str(team)
        if configured and configured != team:
            log.warning(
                "SLACK_TEAM_ID is %s but the bot token belongs to workspace %s: requests are checked against %s",
                configured,
                team,
                configured,
                extra={"action": "home_team", "outcome": "mismatch"},
            )
        self._known.set()
        return True

    def learn_in_background(self, auth_test: AuthTest) -> None:
        """Unless the workspace is known, ask in a daemon thread until Slack names it (or refuses the token)."""
        if self.refused:
            self._cannot_learn()
            return
        with self._lock:
            if self._team or self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._learn, args=(auth_test,), name="breakglass-home-team", daemon=True
            )
            self._thread.start()
        log.warning(
            "the Slack workspace is not known yet (set SLACK_TEAM_ID to avoid it): learning it from "
            "auth.test in the background; requests are refused until then",
            extra={"action": "home_team", "outcome": "learning"},
        )

    def _learn(self, auth_test: AuthTest) -> None:
        delay = self.first_retry
        while not self._stop.wait(min(self.spacing, delay)):  # attempts at least `spacing` apart
            self._wake.wait(max(0.0, delay - self.spacing))  # the rest of the backoff, cut short by a request
            if self._stop.is_set():
                return
            self._wake.clear()
            if self.ask(auth_test):
                log.info(
                    "learned the Slack workspace from auth.test: %s",
                    self._team,
                    extra={"action": "home_team", "outcome": "ok"},
                )
                return
            if self.refused:
                self._cannot_learn()
                return
            delay = min(delay * 2, self.max_retry)

    def _cannot_learn(self) -> None:
        log.error(
            "Slack refuses the bot token (auth.test: %s): the workspace cannot be learned and every request "
            "is refused; replace SLACK_BOT_TOKEN (or set SLACK_TEAM_ID) and restart",
            self.refused,
            extra={"action": "home_team", "outcome": "refused"},
        )

    def nudge(self) -> None:
        """A request found the workspace unknown: let the learner ask now (after its minimum spacing)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the learner (shutdown); an auth.test under way is not waited for beyond `timeout` (the
        learner is a daemon thread whose only call is read-only: shutdown passes 0)."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def learning(self) -> bool:
        with self._lock:
            thread = self._thread
        return thread is not None and thread.is_alive()
