"""Issue 12 (trust): bidirectional controls in user text, separation of duties in reviews, injective
identities, requests verified before they are parsed, and what /healthz reports. Over the real HTTP
endpoint with signed requests wherever a request is involved."""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from slack_sdk.signature import SignatureVerifier

from bot import lambda_handler
from bot.clock import ManualClock
from bot.health import CheckResult, StoreProbe
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy, PolicyError, parse_policy
from bot.skew import SkewMonitor
from bot.verify import MAX_BODY_BYTES
from store.base import HEARTBEAT_CLAIM
from store.model import BIDI_CONTROLS, validate_free_text, validate_incident, validate_justification
from store.sqlite import SQLiteStore
from tests.conftest import TEST_POLICY, Bot, make_bot
from tests.harness import BOT_TOKEN, SIGNING_SECRET, Response, SlackSender, http, modals_opened
from tests.processes import BotProcess
from tests.test_flows_close import ephemerals, invoke, reply_text, settled
from tests.test_flows_review_home import refused, submit_review

VALID = "Database failover is stuck; promoting the replica by hand"

# -- bidirectional controls ---------------------------------------------------------------------------


def test_the_refused_bidi_controls_are_exactly_the_embeddings_overrides_and_isolates() -> None:
    assert sorted(ord(c) for c in BIDI_CONTROLS) == [
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    ]


@pytest.mark.parametrize("char", sorted(BIDI_CONTROLS))
def test_bidi_controls_are_refused_in_every_user_field(char: str) -> None:
    code = f"U+{ord(char):04X}"
    checks = [
        lambda: validate_justification(VALID + char + "moc.live"),
        lambda: validate_incident("INC-1" + char),
        lambda: validate_free_text("done" + char, what="close reason", max_length=500),
        lambda: validate_free_text("ok" + char, what="review notes", max_length=2000),
    ]
    for check in checks:
        with pytest.raises(ValueError, match="bidirectional text control") as info:
            check()
        assert code in str(info.value)


def test_stored_events_cannot_carry_bidi_controls() -> None:
    from store import BreakGlassEvent

    with pytest.raises(ValidationError, match="U\\+202E"):
        BreakGlassEvent.new(
            invoker="U1",
            slack_user_id="U1",
            profile="sandbox",
            reason_code="incident",
            justification=VALID + "\u202e",
            duration=timedelta(hours=1),
            now=datetime.now(UTC),
        )


def test_direction_marks_are_kept_for_right_to_left_writers() -> None:
    text = "\u05e9\u05dc\u05d5\u05dd \u200fעדכון בסיס הנתונים נתקע\u200e INC-7 \u061c"
    assert validate_justification(text) == text


def test_a_bidi_override_in_the_modal_is_an_inline_error_and_records_nothing(bot: Bot) -> None:
    body = bot.slack.invoke(justification="Rotating keys after the leak \u202egnp.exe\u202c ok").json
    assert body["response_action"] == "errors"
    assert "bidirectional text control (U+202E)" in body["errors"]["justification"]
    assert bot.store.list_active() == []


# -- separation of duties --------------------------------------------------------------------------------


def _ended_by_security_member(bot: Bot) -> str:
    event = invoke(bot, user="U0SECA")
    assert "Closed event" in reply_text(
        bot.slack.command(f"close {event.id} replica promoted", user="U0SECA")
    )
    return settled(bot, event.id).id


def test_a_security_member_cannot_review_their_own_event_and_is_told_who_can(bot: Bot) -> None:
    bot.fake.add_user("U0SECB", email="carol@example.com", name="carol")
    bot.fake.set_usergroup("S0SEC", ["U0SECA", "U0SECB"])
    event_id = _ended_by_security_member(bot)
    before = bot.store.get(event_id)

    bot.slack.click("review_event", event_id, user="U0SECA")
    text = ephemerals(bot, "U0SECA")[0]
    assert "cannot review it" in text and "separation of duties" in text
    assert "carol (U0SECB)" in text
    assert modals_opened(bot.fake) == []

    # a hand-made submission (no opener's roles in it): decided after the ack, refused in the modal
    body = submit_review(bot, event_id, "looks fine to me", user="U0SECA").json
    assert refused(body, "carol (U0SECB)")
    assert bot.store.get(event_id) == before
    assert [e.id for e in bot.service.unreviewed()] == [event_id]

    # the other security member may
    reviewed = submit_review(bot, event_id, "checked the trail, fine", user="U0SECB").json
    assert reviewed["view"]["title"]["text"] == "Reviewed"
    assert bot.store.get(event_id).reviewed_by == "U0SECB"


def test_a_lone_security_member_is_told_to_add_a_second_one(bot: Bot) -> None:
    event_id = _ended_by_security_member(bot)
    body = submit_review(bot, event_id, "looks fine to me", user="U0SECA").json
    assert refused(body, "Nobody else is in security") and refused(body, "S0SEC")
    assert bot.store.get(event_id).reviewed_at is None


# -- requests are verified before they are parsed ---------------------------------------------------------

MALFORMED = [
    (b"\xff\xfe\x00garbage", "application/x-www-form-urlencoded"),
    (b"{not json", "application/json"),
    (b"[1, 2]", "application/json"),
    (b"payload=%7Bnot+json", "application/x-www-form-urlencoded"),
]


def _unsigned(bot_url: str, body: bytes, content_type: str) -> Response:
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": str(int(time.time())),
        "X-Slack-Signature": "v0=" + "0" * 64,
    }
    return http("POST", bot_url + "/slack/events", body, headers)


def _signed_raw(sender: SlackSender, body: bytes, content_type: str) -> Response:
    """Signed over the raw bytes, as a sender holding the secret would sign any body."""
    import hashlib
    import hmac

    ts = str(int(time.time()))
    digest = hmac.new(SIGNING_SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
    return sender.post(body, content_type, timestamp=int(ts), signature="v0=" + digest.hexdigest())


@pytest.mark.parametrize(("body", "content_type"), MALFORMED)
def test_unsigned_malformed_requests_get_401_and_one_log_line(
    bot: Bot, body: bytes, content_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = _unsigned(bot.server.url, body, content_type)
    assert response.status == 401
    assert response.json == {"error": "invalid or missing Slack signature"}
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1 and records[0].exc_info is None
    assert bot.fake.calls == []


@pytest.mark.parametrize(("body", "content_type"), MALFORMED)
def test_signed_malformed_requests_get_400_and_one_log_line(
    bot: Bot, body: bytes, content_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = _signed_raw(bot.slack, body, content_type)
    assert response.status == 400, response.text
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) == 1 and records[0].exc_info is None
    assert bot.fake.calls == [] and bot.store.list_active() == []


def test_oversized_and_bad_length_requests_are_refused_unread(bot: Bot) -> None:
    import http.client
    from urllib.parse import urlsplit

    # Announce a body over the limit but send only its first bytes: the answer must come from the
    # Content-Length alone (a server that read the body would wait for the rest and time out). Sending the
    # whole body would race the server's early close (EPIPE on the client), which proves nothing.
    url = urlsplit(bot.server.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    try:
        conn.putrequest("POST", "/slack/events")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
        conn.putheader("X-Slack-Request-Timestamp", str(int(time.time())))
        conn.putheader("X-Slack-Signature", "v0=" + "0" * 64)
        conn.endheaders(b"x" * 1024)
        assert conn.getresponse().status == 413
    finally:
        conn.close()
    # a well-formed signed request still works behind the guard
    assert bot.slack.invoke().json["response_action"] == "update"


def test_lambda_verifies_before_parsing(
    fake: FakeSlack, store: SQLiteStore, policy: Policy, clock: ManualClock
) -> None:
    from tests.test_lambda import FakeLambdaClient, LambdaContext, build_runtime, function_url_event

    lambda_handler.install(build_runtime(fake, store, policy, clock), lambda_client=FakeLambdaClient())
    try:
        unsigned = function_url_event("x", {"content-type": "application/json"})
        unsigned["body"] = base64.b64encode(b"\xff{not json").decode()
        assert lambda_handler.handler(unsigned, LambdaContext())["statusCode"] == 401
        ts = str(int(time.time()))
        body = "{not json"
        signature = SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=ts, body=body)
        signed = function_url_event(
            body,
            {
                "content-type": "application/json",
                "x-slack-request-timestamp": ts,
                "x-slack-signature": signature,
            },
        )
        assert lambda_handler.handler(signed, LambdaContext())["statusCode"] == 400
        assert store.list_active() == []
    finally:
        lambda_handler.reset()


def test_gunicorn_answers_malformed_requests_without_a_traceback(tmp_path: Path) -> None:
    with FakeSlack(token=BOT_TOKEN, users={"U0001": {"email": "a@example.com"}}) as fake:
        process = BotProcess(tmp_path, fake.url, f"sqlite:///{tmp_path / 'bot.db'}").start()
        try:
            sender = SlackSender(process.url, fake)
            assert _unsigned(process.url, b"\xff\xfe{", "application/json").status == 401
            assert _signed_raw(sender, b"{not json", "application/json").status == 400
            assert sender.command("help").status == 200
        finally:
            assert process.terminate() == 0
        logs = process.stderr()
    assert "Traceback" not in logs
    assert logs.count("refused a request to the Slack endpoint") == 2


# -- identities are injective ----------------------------------------------------------------------------


def _bot_with(fake: FakeSlack, store: SQLiteStore, clock: ManualClock, extra: str, **settings: object) -> Bot:
    return make_bot(fake, store, parse_policy(TEST_POLICY + extra, "trust.yml"), clock, **settings)


def test_email_local_part_is_refused_at_load_without_an_allow_list() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(TEST_POLICY + "identity: email_local_part\n", "p.yml")
    assert info.value.problems[0][0] == "email_domains"
    assert "alice@example.com and alice@other.example would be one invoker" in info.value.problems[0][1]
    with pytest.raises(PolicyError, match="without the @"):
        parse_policy(TEST_POLICY + "identity: email\nemail_domains: ['@example.com']\n", "p.yml")
    policy = parse_policy(TEST_POLICY + "identity: email_local_part\nemail_domains: [Example.COM]\n", "p.yml")
    assert policy.email_domains == ("example.com",)


@pytest.mark.parametrize("mode", ["email", "email_local_part"])
def test_email_identities_from_another_domain_are_refused(
    fake: FakeSlack, store: SQLiteStore, clock: ManualClock, mode: str
) -> None:
    fake.add_user("U0GUESTALICE", email="alice@contractor.example", name="alice-contractor")
    bot = _bot_with(fake, store, clock, f"identity: {mode}\nemail_domains: [example.com]\n")
    try:
        body = bot.slack.invoke(user="U0GUESTALICE").json
        assert body["response_action"] == "errors"
        assert "'contractor.example'" in body["errors"]["profile"]
        assert "does not accept" in body["errors"]["profile"]
        assert bot.store.list_active() == []
        # the real alice is not blocked by stacking, and is still herself
        assert bot.slack.invoke(user="U0001").json["response_action"] == "update"
        assert bot.store.list_active()[0].invoker == ("alice@example.com" if mode == "email" else "alice")
    finally:
        bot.server.stop()


REFUSED_USERS = [
    ({"is_restricted": True}, "guests", "allow_guests"),
    ({"is_ultra_restricted": True, "is_restricted": True}, "guests", "allow_guests"),
    ({"is_stranger": True}, "another Slack workspace", "allow_external_users"),
    ({"team_id": "T0OTHER"}, "another Slack workspace (T0OTHER)", "allow_external_users"),
]


@pytest.mark.parametrize(("flags", "message", "key"), REFUSED_USERS)
def test_guests_and_users_of_other_workspaces_are_refused_unless_allowed(
    fake: FakeSlack, tmp_path: Path, clock: ManualClock, flags: dict[str, object], message: str, key: str
) -> None:
    fake.add_user("U0ODD", email="odd@example.com", **flags)
    bot = _bot_with(fake, SQLiteStore(tmp_path / "a.db"), clock, "")
    try:
        body = bot.slack.invoke(user="U0ODD").json
        assert body["response_action"] == "errors"
        assert message in body["errors"]["profile"] and key in body["errors"]["profile"]
        assert bot.store.list_active() == []
        assert message in reply_text(bot.slack.command("history", user="U0ODD"))  # no history either
    finally:
        bot.server.stop()
    allowed = _bot_with(fake, SQLiteStore(tmp_path / "b.db"), clock, f"{key}: true\n")
    try:
        assert allowed.slack.invoke(user="U0ODD").json["response_action"] == "update"
    finally:
        allowed.server.stop()


def test_deactivated_users_are_always_refused(
    fake: FakeSlack, store: SQLiteStore, clock: ManualClock
) -> None:
    fake.add_user("U0GONE", email="gone@example.com", deleted=True)
    bot = _bot_with(fake, store, clock, "allow_guests: true\nallow_external_users: true\n")
    try:
        body = bot.slack.invoke(user="U0GONE").json
        assert "deactivated" in body["errors"]["profile"]
        assert bot.store.list_active() == []
    finally:
        bot.server.stop()


def _command_from_team(bot: Bot, team: str) -> Response:
    return bot.slack.command("sandbox 30m incident " + VALID, team_id=team)


def test_requests_from_another_workspace_are_refused(bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    response = _command_from_team(bot, "T0OTHER")
    assert response.status == 200
    bot.idle()
    assert bot.store.list_active() == []
    assert "only serves the Slack workspace it is installed in" in json.dumps(
        [c.params for c in bot.fake.calls_to("response_url")] + [response.text]
    )
    assert any(getattr(r, "team", None) == "T0OTHER" for r in caplog.records)
    assert bot.fake.calls_to("auth.test") == []  # SLACK_TEAM_ID is set: no round trip
    assert "update" in json.dumps(bot.slack.invoke().json)  # the installed workspace is served


def test_the_installed_workspace_is_learned_from_auth_test_once(
    fake: FakeSlack, store: SQLiteStore, clock: ManualClock, policy: Policy
) -> None:
    bot = make_bot(fake, store, policy, clock, slack_team_id=None)
    try:
        assert len(fake.calls_to("auth.test")) == 1  # at start-up
        assert bot.slack.invoke().json["response_action"] == "update"
        _command_from_team(bot, "T0OTHER")
        bot.idle()
        assert len(bot.store.list_active()) == 1
        assert len(fake.calls_to("auth.test")) == 1
    finally:
        bot.server.stop()


# -- /healthz: named checks, a rate-limited write probe ---------------------------------------------------


def test_healthz_is_a_dict_of_named_checks(bot: Bot) -> None:
    response = http("GET", bot.server.url + "/healthz")
    assert response.status == 200
    checks = response.json["checks"]
    assert response.json["status"] == "ok"
    assert checks["store"] == {"ok": True, "backend": "SQLiteStore"}
    assert checks["store_write"]["ok"] is True
    assert checks["scheduler"] == {"ok": True, "running": False}
    assert http("GET", bot.server.url + "/livez").json == {"status": "alive"}


def test_a_failing_check_that_restarting_cannot_fix_degrades_without_503(bot: Bot) -> None:
    bot.runtime.checks.add("clock", lambda: CheckResult(False, detail={"skew_seconds": 90}))
    response = http("GET", bot.server.url + "/healthz")
    assert response.status == 200
    assert response.json["status"] == "degraded"
    assert response.json["checks"]["clock"] == {"ok": False, "critical": False, "skew_seconds": 90}
    bot.runtime.checks.add("boom", lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    response = http("GET", bot.server.url + "/healthz")
    assert response.status == 503 and response.json["checks"]["boom"]["error"] == "ZeroDivisionError"


def _heartbeat(path: Path) -> str | None:
    import sqlite3

    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT until FROM claims WHERE name = ?", (HEARTBEAT_CLAIM,)).fetchone()
    return row[0] if row else None


def test_the_write_probe_writes_a_heartbeat_at_most_once_per_interval(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "probe.db")
    now = [100.0]
    probe = StoreProbe(store, interval=10, monotonic=lambda: now[0])
    assert probe.write().ok
    first = _heartbeat(tmp_path / "probe.db")
    assert first is not None
    for step in range(9):
        now[0] += 1
        time.sleep(0.001)  # a later wall-clock heartbeat if one were written
        assert probe.write().detail == {"checked_seconds_ago": float(step + 1)}
    assert _heartbeat(tmp_path / "probe.db") == first
    now[0] += 1
    assert probe.write().detail == {"checked_seconds_ago": 0.0}
    assert _heartbeat(tmp_path / "probe.db") != first
    assert store.list_active() == []


DISK_FULL = """
import json, os, resource, signal, sys
from slack_sdk import WebClient
from bot.app import create_app
from bot.config import Settings
from bot.health import StoreProbe
from store.sqlite import SQLiteStore

path = sys.argv[1]
store = SQLiteStore(path)
settings = Settings(_env_file=None, slack_bot_token="xoxb-x", slack_signing_secret="s", slack_team_id="T1",
                    breakglass_audit_channel="C0AUDIT", slack_api_url="http://127.0.0.1:9/")
runtime = create_app(settings, store, WebClient(token="xoxb-x", base_url="http://127.0.0.1:9/"))
runtime.checks.add("store_write", StoreProbe(store, interval=0).write)  # no rate limit in this test
before = runtime.health()
# the disk is full: no file may grow any more (writes past today's sizes fail, as with ENOSPC)
limit = max(os.path.getsize(path), os.path.getsize(path + "-wal"))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
after = runtime.health()
print(json.dumps({"before": before, "after": after, "reads": len(store.list_active())}))
"""


def test_healthz_is_503_when_the_sqlite_disk_is_full(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(tmp_path / "full.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(result.stdout)
    assert report["before"][0] == 200
    status, body = report["after"]
    assert status == 503 and body["status"] == "unavailable"
    assert body["checks"]["store"]["ok"] is True  # it still reads...
    assert body["checks"]["store_write"]["ok"] is False  # ...but cannot record anything
    assert body["checks"]["store_write"]["error"] == "StoreUnavailable"
    assert report["reads"] == 0
    assert result.stderr.count("the store cannot be written") == 1


def test_healthz_on_dynamodb_probes_writes_and_is_503_when_unreachable(
    fake: FakeSlack, policy: Policy, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from botocore.config import Config

    from store.dynamodb import DynamoDBStore
    from tests.conftest import dynamodb_bot
    from tests.processes import free_port

    with dynamodb_bot(fake, policy, clock, monkeypatch, "health") as bot:
        response = http("GET", bot.server.url + "/healthz")
        assert response.status == 200 and response.json["checks"]["store_write"]["ok"] is True
        item = bot.store.client.get_item(TableName="health", Key={"id": {"S": HEARTBEAT_CLAIM}})["Item"]
        assert item["kind"] == {"S": "heartbeat"} and "ttl" in item
        assert bot.store.list_active() == []
    client = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(connect_timeout=0.5, read_timeout=0.5, retries={"mode": "standard", "max_attempts": 1}),
    )
    down = make_bot(fake, DynamoDBStore("nowhere", client=client), policy, clock)  # type: ignore[arg-type]
    try:
        response = http("GET", down.server.url + "/healthz")
        assert response.status == 503
        assert response.json["checks"]["store"] == {
            "ok": False,
            "critical": True,
            "backend": "DynamoDBStore",
            "error": "StoreUnavailable",
        }
    finally:
        down.server.stop()


# -- clock skew against Slack's and AWS's Date headers ----------------------------------------------------


def _skew_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bot.skew"]


def test_clock_skew_against_slack_is_reported_and_logged_once_per_episode(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.skew")
    bot.clock.set(datetime.now(UTC) + timedelta(seconds=90))  # this replica runs 90 s ahead
    for _ in range(3):
        bot.runtime.context.client.api_test()
    response = http("GET", bot.server.url + "/healthz")
    assert response.status == 200  # restarting does not fix a clock: no restart loop
    assert response.json["status"] == "degraded"
    clock_check = response.json["checks"]["clock"]
    assert clock_check["ok"] is False and clock_check["critical"] is False
    assert clock_check["bound_seconds"] == 30
    assert 88 <= clock_check["skew_seconds"]["slack"] <= 92
    warnings = _skew_logs(caplog)
    assert len(warnings) == 1 and "s off slack's (bound 30 s)" in warnings[0]

    bot.clock.set(datetime.now(UTC))  # fixed (NTP)
    bot.runtime.context.client.api_test()
    bot.runtime.context.client.api_test()
    response = http("GET", bot.server.url + "/healthz")
    assert response.json["status"] == "ok" and response.json["checks"]["clock"]["ok"] is True
    assert len(_skew_logs(caplog)) == 2 and "back within 30 s" in _skew_logs(caplog)[1]


def test_clock_skew_against_aws_is_reported(
    fake: FakeSlack, policy: Policy, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import dynamodb_bot

    with dynamodb_bot(fake, policy, clock, monkeypatch, "skew") as bot:
        bot.clock.set(datetime.now(UTC) - timedelta(minutes=5))  # 5 minutes behind
        bot.store.list_active()
        checks = http("GET", bot.server.url + "/healthz").json["checks"]
        assert checks["clock"]["ok"] is False
        assert -302 <= checks["clock"]["skew_seconds"]["aws"] <= -298
        assert checks["store"]["ok"] is True


def test_unparsable_or_missing_date_headers_are_ignored() -> None:
    monitor = SkewMonitor(ManualClock(datetime(2026, 1, 1, tzinfo=UTC)))
    for header in (None, "", "yesterday", "Thu, 01 Jan 2026 00:00:00"):
        monitor.observe("slack", header)
    assert monitor.skews() == {}
    monitor.observe("slack", "Thu, 01 Jan 2026 00:00:00 GMT")
    assert monitor.skews() == {"slack": 0.0}
    assert monitor.check().ok


def test_a_user_slack_does_not_know_is_refused_but_a_slack_outage_does_not_block_an_emergency(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    body = bot.slack.invoke(user="U0NOBODY").json
    assert "Slack does not know your account" in body["errors"]["profile"]
    bot.fake.set_down(True)  # identity: slack_id, nothing cached: admitted by id, with one WARNING
    # the form could not be opened (nor looked up): the bare submission is decided after its ack
    assert bot.slack.invoke(user="U0002").json["response_action"] == "update"
    bot.idle()
    assert [r.getMessage() for r in caplog.records if "admitted by user id" in r.getMessage()]
    assert bot.store.list_active()[0].invoker == "U0002"
