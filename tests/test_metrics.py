"""Operations metrics (bot/metrics.py): `GET /metrics` on the real HTTP endpoint after signed Slack requests,
every gunicorn worker's counts added up, CloudWatch embedded metric format lines from real Lambda invocations
(checked against the EMF specification), and no secret in any of it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot import lambda_handler, metrics
from bot.clock import ManualClock
from bot.errors import AlreadyActive, RateLimited, ValidationFailed
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from store import EventNotFound, StoreUnavailable
from store.model import OutboxKind
from store.sqlite import SQLiteStore
from tests.conftest import Bot, make_bot
from tests.harness import BOT_TOKEN, SIGNING_SECRET, http
from tests.store_fixtures import make_event
from tests.test_lambda import (
    JUSTIFICATION,
    FakeLambdaClient,
    LambdaContext,
    build_runtime,
    command_body,
    function_url_event,
    signed_headers,
)

pytest_plugins = ["tests.store_fixtures", "tests.access_world"]

METRICS_TOKEN = "metrics-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def metered(
    fake: FakeSlack, store: SQLiteStore, policy: Policy, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bot]:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    bot = make_bot(fake, store, policy, clock, breakglass_metrics_token=METRICS_TOKEN)
    endpoint = bot.server.server.get_app().metrics  # type: ignore[attr-defined]
    assert endpoint is not None
    yield bot
    metrics.RECORDER.detach(endpoint.sink)
    bot.runtime.scheduler.shutdown(wait=False)
    bot.server.stop()


def scrape(bot: Bot, token: str | None = METRICS_TOKEN) -> tuple[int, str, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = http("GET", bot.server.url + "/metrics", headers=headers)
    return response.status, response.text, response.headers


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text, parsed by prometheus-client's own parser: {(sample name, labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_signed_requests_on_the_real_endpoint(metered: Bot, fake: FakeSlack) -> None:
    bot = metered
    assert bot.slack.invoke(profile="sandbox").status == 200
    bot.idle()
    # the same person again on the same profile: stacked access, refused
    refused = bot.slack.invoke(profile="sandbox")
    assert refused.json["response_action"] == "errors"
    # a justification too short: refused by validation
    assert bot.slack.invoke(profile="sandbox", justification="short").json["response_action"] == "errors"
    fake.fail("chat.postMessage", status=429, retry_after=0)  # the next announcement is rate limited once
    assert bot.slack.invoke(user="U0002", profile="sandbox").status == 200
    bot.idle()

    status, text, headers = scrape(bot)

    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    values = samples(text)
    assert values[("breakglass_invocations_total", (("profile", "sandbox"),))] == 2
    assert values[("breakglass_refusals_total", (("reason", "already_active"),))] == 1
    assert values[("breakglass_refusals_total", (("reason", "validation_failed"),))] == 1
    assert values[("breakglass_slack_rate_limited_total", (("method", "chat.postMessage"),))] == 1
    assert values[("breakglass_active_events", ())] == 2
    assert values[("breakglass_owed_deliveries", ())] == 0  # everything announced
    assert values[("breakglass_owed_oldest_seconds", ())] == 0
    assert values[("breakglass_audit_channels_broken", ())] == 0
    assert values[("breakglass_revoke_failures_total", ())] == 0
    assert values[("breakglass_revoke_latency_seconds_count", ())] == 0
    for secret in (SIGNING_SECRET, BOT_TOKEN, METRICS_TOKEN):
        assert secret not in text


def test_metrics_need_the_token(metered: Bot) -> None:
    assert scrape(metered, token=None)[0] == 401
    status, text, headers = scrape(metered, token="not-the-metrics-token-at-all")
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    assert "breakglass_" not in text
    response = http(
        "POST", metered.server.url + "/metrics", b"", {"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert response.status == 404  # only GET/HEAD serve metrics; the rest is not a route


def test_metrics_are_off_without_a_token(bot: Bot) -> None:
    response = http("GET", bot.server.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status == 404
    assert "BREAKGLASS_METRICS_TOKEN" in response.json["error"]


def test_the_metrics_token_is_a_secret_and_long_enough(fake: FakeSlack) -> None:
    from pydantic import ValidationError

    from tests.conftest import settings_for

    assert METRICS_TOKEN in settings_for(fake, breakglass_metrics_token=METRICS_TOKEN).secrets()  # redacted
    with pytest.raises(ValidationError, match="breakglass_metrics_token"):
        settings_for(fake, breakglass_metrics_token="short")


def test_state_shows_owed_deliveries_and_how_late_the_oldest_is(metered: Bot, clock: ManualClock) -> None:
    store = metered.store
    late = store.create(
        make_event(
            invoker="alice@example.com",
            profile="sandbox",
            now=clock.now() - timedelta(minutes=10),
            slack_user_id="U0001",
            audit_channel="C0AUDIT",
            outbox=(OutboxKind.AUDIT_POST, OutboxKind.DM_INVOKED),
        )
    )
    state = metrics.read_state(store, clock.now())
    assert state.active_events == 1
    assert state.owed_deliveries == 2
    assert state.owed_failing == 0
    assert state.owed_oldest_seconds == pytest.approx((clock.now() - late.outbox_due_at).total_seconds())  # type: ignore[operator]
    assert state.owed_oldest_seconds >= 600
    values = samples(scrape(metered)[1])
    assert values[("breakglass_owed_deliveries", ())] == 2
    assert values[("breakglass_owed_oldest_seconds", ())] == pytest.approx(state.owed_oldest_seconds)


def test_audit_channel_state_comes_from_the_pipeline(metered: Bot, fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", error="is_archived", channel="C0AUDIT", times=50)
    assert metered.slack.invoke(profile="sandbox").status == 200
    metered.idle()
    values = samples(scrape(metered)[1])
    assert values[("breakglass_audit_channels_broken", ())] == 1


def test_refusal_reasons_are_bounded() -> None:
    assert metrics.refusal_reason(AlreadyActive({"profile": "x"})) == "already_active"
    assert metrics.refusal_reason(ValidationFailed({"x": "y"})) == "validation_failed"
    assert metrics.refusal_reason(RateLimited("slow down", None)) == "rate_limited"
    assert metrics.refusal_reason(EventNotFound("e1")) == "event_not_found"
    assert metrics.refusal_reason(StoreUnavailable("down")) == "store_unavailable"
    assert metrics.refusal_reason(RuntimeError("token xoxb-123 leaked")) == "unexpected"  # never the message


def test_every_gunicorn_workers_counts_add_up(tmp_path: Path) -> None:
    """prometheus-client's multiprocess mode, as bot/gunicorn_conf.py sets it up: counts recorded in two
    forked workers are both in the answer of whichever process renders /metrics."""
    script = textwrap.dedent(
        """
        import os, sys
        from bot import gunicorn_conf
        gunicorn_conf.share_metrics_between_workers()
        from bot import metrics
        pids = []
        for n in (2, 3):
            pid = os.fork()
            if pid == 0:
                metrics.RECORDER.attach(metrics.PrometheusSink())
                for _ in range(n):
                    metrics.invoked("sandbox")
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            assert os.waitpid(pid, 0)[1] == 0
        state = metrics.State(1, 0, 0, 0.0, 0)
        body, _ = metrics.PrometheusEndpoint(lambda: state).render()
        sys.stdout.write(body.decode())
        gunicorn_conf.on_exit(None)
        assert not os.path.exists(os.environ[gunicorn_conf.MULTIPROC_ENV])
        """
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != metrics.MULTIPROC_ENV}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    values = samples(result.stdout)
    assert values[("breakglass_invocations_total", (("profile", "sandbox"),))] == 5
    assert values[("breakglass_active_events", ())] == 1


# -- CloudWatch embedded metric format on Lambda ----------------------------------------------------------------

EMF_UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
    "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
    "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
    "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}  # fmt: skip


def validate_emf(line: str) -> dict[str, Any]:
    """One log line as CloudWatch's embedded metric format specification requires it."""
    assert len(line.encode()) < 256 * 1024
    document = json.loads(line)
    assert isinstance(document, dict)
    meta = document["_aws"]
    assert set(meta) == {"Timestamp", "CloudWatchMetrics"}
    assert isinstance(meta["Timestamp"], int) and 1.5e12 < meta["Timestamp"] < 4.1e12  # ms since 1970
    directives = meta["CloudWatchMetrics"]
    assert isinstance(directives, list) and directives
    names: set[str] = set()
    for directive in directives:
        assert set(directive) == {"Namespace", "Dimensions", "Metrics"}
        assert isinstance(directive["Namespace"], str) and 1 <= len(directive["Namespace"]) <= 1024
        assert directive["Namespace"].strip()
        assert isinstance(directive["Dimensions"], list) and directive["Dimensions"]
        for dimension_set in directive["Dimensions"]:
            assert isinstance(dimension_set, list) and len(dimension_set) <= 30
            for key in dimension_set:
                value = document[key]  # a dimension is a root member with a string value
                assert isinstance(value, str) and 1 <= len(value) <= 1024
        assert 1 <= len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            assert set(metric) <= {"Name", "Unit", "StorageResolution"}
            assert isinstance(metric["Name"], str) and 1 <= len(metric["Name"]) <= 1024
            assert metric["Name"] not in names
            names.add(metric["Name"])
            assert metric.get("Unit", "None") in EMF_UNITS
            value = document[metric["Name"]]
            values = value if isinstance(value, list) else [value]
            assert 1 <= len(values) <= 100
            assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    return document


def emf_documents(output: str) -> list[dict[str, Any]]:
    """Every EMF line of `output`, validated; lines that are not EMF are left out."""
    return [validate_emf(line) for line in output.splitlines() if line.startswith('{"_aws"')]


def metric_values(documents: list[dict[str, Any]], name: str, **dimensions: str) -> list[Any]:
    return [
        d[name]
        for d in documents
        if name in d
        and all(d.get(k) == v for k, v in dimensions.items())
        and (dimensions or not any(len(s) for c in d["_aws"]["CloudWatchMetrics"] for s in c["Dimensions"]))
    ]


def test_lambda_invocations_write_valid_emf(
    fake: FakeSlack,
    store: SQLiteStore,
    policy: Policy,
    clock: ManualClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lam = FakeLambdaClient()
    lambda_handler.reset()
    try:
        lambda_handler.install(build_runtime(fake, store, policy, clock), lambda_client=lam)

        captured: list[str] = []  # everything written, checked for secrets at the end

        def command(text: str) -> list[dict[str, Any]]:
            """The fast path: an empty ack, then the lazy invocation that decides (and announces); the EMF
            documents the lazy run wrote."""
            body = command_body(text)
            started = len(lam.invocations)
            response = lambda_handler.handler(function_url_event(body, signed_headers(body)), LambdaContext())
            assert response["statusCode"] == 200
            acked = capsys.readouterr()
            captured.extend((acked.out, acked.err))
            assert emf_documents(acked.out) == []  # nothing counted in the ack: nothing decided there
            (lazy,) = lam.invocations[started:]
            assert lambda_handler.handler(json.loads(lazy["Payload"]), LambdaContext())["statusCode"] == 200
            decided = capsys.readouterr()
            captured.extend((decided.out, decided.err))
            return emf_documents(decided.out)

        first = command(f"sandbox 15m maintenance {JUSTIFICATION}")
        assert metric_values(first, "Invocations", Profile="sandbox") == [1]
        (document,) = [d for d in first if "Invocations" in d]
        assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Profile"], []]
        assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "breakglass"

        second = command(f"sandbox 15m maintenance {JUSTIFICATION}")  # stacked: refused
        assert metric_values(second, "Refusals", Reason="already_active") == [1]
        assert metric_values(second, "Invocations", Profile="sandbox") == []  # each flush: its own counts

        clock.advance(timedelta(minutes=20))  # past the 15 min: the sweep expires it
        counts = lambda_handler.sweep_handler({}, None)
        assert counts["expired"] == 1
        swept = capsys.readouterr()
        (state,) = [d for d in emf_documents(swept.out) if "ActiveEvents" in d]
        assert state["ActiveEvents"] == 0
        assert state["OwedDeliveries"] == 0 and state["OwedOldestSeconds"] == 0
        assert state["AuditChannelsBroken"] == 0
        units = {m["Name"]: m["Unit"] for m in state["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
        assert units.items() >= {"OwedOldestSeconds": "Seconds", "ActiveEvents": "Count"}.items()
        for secret in (SIGNING_SECRET, BOT_TOKEN):
            assert secret not in "".join(captured) + swept.out + swept.err
    finally:
        lambda_handler.reset()
    assert not [s for s in metrics.RECORDER.sinks if isinstance(s, metrics.EmfSink)]


def test_emf_splits_more_than_100_values_and_labels() -> None:
    sink = metrics.EmfSink(clock=lambda: 1_700_000_000.0)
    for n in range(250):
        sink.record(metrics.REVOKE_LATENCY, float(n), None)
    sink.record(metrics.SLACK_RATE_LIMITED, 1, "chat.postMessage")
    sink.record(metrics.SLACK_RATE_LIMITED, 1, "chat.postMessage")
    sink.record(metrics.SLACK_RATE_LIMITED, 1, "views.open")
    lines: list[str] = []

    class Stream:
        def write(self, text: str) -> None:
            lines.extend(text.splitlines())

        def flush(self) -> None:
            pass

    sink.stream = Stream()  # type: ignore[assignment]
    assert sink.flush() == 5
    documents = [validate_emf(line) for line in lines]
    latencies = [v for d in documents if "RevokeLatency" in d for v in d["RevokeLatency"]]
    assert latencies == [float(n) for n in range(250)]
    assert metric_values(documents, "SlackRateLimited", Method="chat.postMessage") == [2]
    assert metric_values(documents, "SlackRateLimited", Method="views.open") == [1]
    assert sink.flush() == 0  # flushed: nothing pending


def test_revoke_latency_and_failures_are_recorded() -> None:
    sink = metrics.EmfSink()
    metrics.RECORDER.attach(sink)
    try:
        from tests.store_fixtures import T0

        event = make_event(now=T0).close(by="U1", reason="done", now=T0 + timedelta(minutes=5))
        metrics.revoked(event, T0 + timedelta(minutes=5, seconds=7))
        metrics.access_failed("revoke")
        metrics.access_failed("grant")
        documents = sink.documents()
    finally:
        metrics.RECORDER.detach(sink)
    (document,) = documents
    assert document["RevokeLatency"] == [7.0]
    assert document["RevokeFailures"] == 1 and document["GrantFailures"] == 1


# -- AWS access: revoke latency and failures, end to end --------------------------------------------------------


@pytest.fixture
def metered_access(
    aws: Any, fake: FakeSlack, store: SQLiteStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bot]:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    bot = make_bot(fake, store, aws.policy(), clock, breakglass_metrics_token=METRICS_TOKEN)
    endpoint = bot.server.server.get_app().metrics  # type: ignore[attr-defined]
    yield bot
    metrics.RECORDER.detach(endpoint.sink)
    bot.runtime.scheduler.shutdown(wait=False)
    bot.server.stop()


def test_a_failed_then_late_revoke_shows_in_failures_and_latency(metered_access: Bot, aws: Any) -> None:
    from bot.access.identity_center import IdentityCenterProvider
    from tests.test_access_pipeline import FlakySso, invoke
    from tests.test_flows_close import settled, submit_close

    bot = metered_access
    provider = bot.runtime.pipeline.access
    assert isinstance(provider, IdentityCenterProvider)
    provider.sso = flaky = FlakySso(provider.sso)
    provider.sleep = lambda _seconds: None
    event_id = invoke(bot)
    settled(bot, event_id)
    flaky.fail("delete_account_assignment", "AccessDeniedException")
    assert submit_close(bot, event_id, "Replica promoted, done").status == 200
    bot.idle()
    failing = samples(scrape(bot)[1])
    assert failing[("breakglass_revoke_failures_total", ())] == 1
    assert failing[("breakglass_owed_failing", ())] == 1
    assert failing[("breakglass_revoke_latency_seconds_count", ())] == 0

    flaky.heal()
    bot.clock.advance(timedelta(seconds=90))
    bot.runtime.scheduler.sweep()
    assert aws.assigned() == []
    done = samples(scrape(bot)[1])
    assert done[("breakglass_revoke_failures_total", ())] == 1
    assert done[("breakglass_revoke_latency_seconds_count", ())] == 1
    assert done[("breakglass_revoke_latency_seconds_sum", ())] == 90.0  # from the close to the revoke
    assert done[("breakglass_revoke_latency_seconds_bucket", (("le", "60.0"),))] == 0
    assert done[("breakglass_revoke_latency_seconds_bucket", (("le", "120.0"),))] == 1
    assert done[("breakglass_owed_failing", ())] == 0


def test_revoke_latency_of_an_expiry_counts_from_the_expiry_time() -> None:
    """A sweep that expires an event late shows in the latency: it counts from `expires_at`, not from
    when the event was marked expired."""
    from tests.store_fixtures import T0

    sink = metrics.EmfSink()
    metrics.RECORDER.attach(sink)
    try:
        event = make_event(now=T0)
        expired = event.expire(now=event.expires_at + timedelta(minutes=3))
        metrics.revoked(expired, event.expires_at + timedelta(minutes=3, seconds=2))
        (document,) = sink.documents()
    finally:
        metrics.RECORDER.detach(sink)
    assert document["RevokeLatency"] == [182.0]


def test_lambda_builds_no_prometheus_client() -> None:
    """prometheus-client is for GET /metrics only: the Lambda entry point (cold starts) never imports it."""
    script = "import sys, bot.lambda_handler; assert 'prometheus_client' not in sys.modules, 'imported'"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_procfile_gunicorn_with_two_workers_adds_up_their_counts(tmp_path: Path) -> None:
    """The Procfile's `web` command (two gunicorn workers): whichever worker answers a scrape, it shows every
    worker's counts."""
    from tests.harness import SlackSender
    from tests.processes import BIN, BotProcess

    users = {f"U000{n}": {"email": f"user{n}@example.com"} for n in range(1, 7)}
    gunicorn = [str(BIN / "gunicorn"), "-c", "python:bot.gunicorn_conf", "--worker-class", "gthread"]
    with FakeSlack(token=BOT_TOKEN, users=users) as fake:
        bot = BotProcess(
            tmp_path,
            fake.url,
            f"sqlite:///{tmp_path / 'web.db'}",
            command=[
                *gunicorn,
                "--workers",
                "2",
                "--threads",
                "4",
                "--bind",
                "127.0.0.1:{port}",
                "bot.wsgi:app",
            ],
            BREAKGLASS_SCHEDULER="off",
            BREAKGLASS_METRICS_TOKEN=METRICS_TOKEN,
        ).start()
        try:
            sender = SlackSender(bot.url, fake)
            for user in users:
                response = sender.invoke(user=user, profile="sandbox", duration="900")
                assert response.json["response_action"] == "update", response.text
            assert sender.invoke(user="U0001", profile="sandbox").json["response_action"] == "errors"
            for _ in range(8):  # each scrape is a new connection: either worker may answer
                response = http(
                    "GET", bot.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
                )
                assert response.status == 200
                values = samples(response.text)
                assert values[("breakglass_invocations_total", (("profile", "sandbox"),))] == 6
                assert values[("breakglass_refusals_total", (("reason", "already_active"),))] == 1
                assert values[("breakglass_active_events", ())] == 6
        finally:
            assert bot.terminate() == 0
        logs = bot.stderr()
        for secret in (SIGNING_SECRET, BOT_TOKEN, METRICS_TOKEN):
            assert secret not in logs


def test_a_failing_sink_never_fails_what_it_measures(metered: Bot, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def record(self, metric: metrics.Metric, value: float, label: str | None) -> None:
            raise OSError("disk full")

    broken = Broken()
    metrics.RECORDER.attach(broken)
    try:
        assert metered.slack.invoke(profile="sandbox").json["response_action"] == "update"
    finally:
        metrics.RECORDER.detach(broken)
    assert len(metered.store.list_active()) == 1
    assert any("could not record invocations" in r.getMessage() for r in caplog.records)
    values = samples(scrape(metered)[1])
    assert values[("breakglass_invocations_total", (("profile", "sandbox"),))] == 1  # the other sink counted
