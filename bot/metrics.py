"""Operations metrics: Prometheus text at `GET /metrics` (HTTP mode) and CloudWatch embedded metric format (EMF)
lines on Lambda.

The code reports what happens through a few one-line hooks (`invoked`, `refused`, `revoked`, `access_failed`,
and `SlackRateLimits`, an observer of every Web API answer). They record into `RECORDER`, which does nothing
until a runtime attaches a sink: the HTTP entry point attaches `PrometheusSink` (prometheus-client, imported
only then), the Lambda entry point `EmfSink`. The state (active events, owed deliveries and how late the
oldest is, broken audit channels) is read when it is asked for: at each scrape (`StateCollector`), and on
Lambda at each sweep (`EmfSink.flush(state=...)`).

Nothing here sees a secret: the labels are profile names, refusal reasons (exception class names), Slack
Web API method names and step names, all from code or policy.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, TYPE_CHECKING, Any, Protocol

from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.slack_observer import SlackResponseObserver

if TYPE_CHECKING:
    from store import BreakGlassEvent, Store

log = logging.getLogger(__name__)

NAMESPACE = "breakglass"  # Prometheus prefix and CloudWatch namespace


@dataclass(frozen=True)
class Metric:
    name: str  # Prometheus: breakglass_<name>[_total]
    emf: str  # CloudWatch metric name
    help: str
    kind: str  # counter | histogram | gauge
    label: str | None = None  # at most one label: Prometheus label name; its EMF dimension is label.title()
    unit: str = "Count"


INVOCATIONS = Metric(
    "invocations", "Invocations", "Break-glass events created, by profile", "counter", "profile"
)
REFUSALS = Metric(
    "refusals", "Refusals", "Requests refused, by reason (the error shown to the user)", "counter", "reason"
)
REVOKE_FAILURES = Metric(
    "revoke_failures", "RevokeFailures", "AWS access revokes that failed (retried)", "counter"
)
GRANT_FAILURES = Metric(
    "grant_failures", "GrantFailures", "AWS access grants that failed (retried)", "counter"
)
REVOKE_LATENCY = Metric(
    "revoke_latency_seconds",
    "RevokeLatency",
    "From when an event's access should have ended (its close, or its expiry time) to its AWS access revoked",
    "histogram",
    unit="Seconds",
)
SLACK_RATE_LIMITED = Metric(
    "slack_rate_limited", "SlackRateLimited", "Slack Web API answers 429, by method", "counter", "method"
)
ACTIVE_EVENTS = Metric("active_events", "ActiveEvents", "Events holding access now", "gauge")
OWED_DELIVERIES = Metric(
    "owed_deliveries", "OwedDeliveries", "Owed steps in outboxes (announcements, grants, revokes)", "gauge"
)
OWED_FAILING = Metric("owed_failing", "OwedFailing", "Events whose last delivery attempt failed", "gauge")
OWED_OLDEST = Metric(
    "owed_oldest_seconds",
    "OwedOldestSeconds",
    "How long the most overdue owed delivery has been due (0: none is late)",
    "gauge",
    unit="Seconds",
)
AUDIT_CHANNELS_BROKEN = Metric(
    "audit_channels_broken", "AuditChannelsBroken", "Audit channels this process found broken", "gauge"
)

COUNTERS = (INVOCATIONS, REFUSALS, REVOKE_FAILURES, GRANT_FAILURES, SLACK_RATE_LIMITED)
HISTOGRAMS = (REVOKE_LATENCY,)
GAUGES = (ACTIVE_EVENTS, OWED_DELIVERIES, OWED_FAILING, OWED_OLDEST, AUDIT_CHANNELS_BROKEN)
EVERY_METRIC = COUNTERS + HISTOGRAMS + GAUGES
REVOKE_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)


class Sink(Protocol):
    def record(self, metric: Metric, value: float, label: str | None) -> None: ...


class Recorder:
    """Where the hooks record; each attached sink gets every value. Without a sink a hook costs a lookup.
    A hook runs inside the use cases (after an event is stored, in a revoke): a sink that fails is logged
    and never fails the step that reported to it."""

    def __init__(self) -> None:
        self.sinks: tuple[Sink, ...] = ()  # replaced, never changed in place: safe to read from any thread

    def attach(self, sink: Sink) -> None:
        if sink not in self.sinks:
            self.sinks = (*self.sinks, sink)

    def detach(self, sink: Sink) -> None:
        self.sinks = tuple(s for s in self.sinks if s is not sink)

    def record(self, metric: Metric, value: float = 1.0, label: str | None = None) -> None:
        for sink in self.sinks:
            try:
                sink.record(metric, value, label)
            except Exception as exc:  # noqa: BLE001 - metrics must never fail what they measure
                log.warning("metrics: %s could not record %s: %s", type(sink).__name__, metric.name, exc)


RECORDER = Recorder()


# -- the hooks ---------------------------------------------------------------------------------------------


def invoked(profile: str) -> None:
    RECORDER.record(INVOCATIONS, 1, profile)


def refused(exc: BaseException) -> None:
    """A request refused with `exc` (bot.slack.errors, the one place errors become what users see)."""
    RECORDER.record(REFUSALS, 1, refusal_reason(exc))


def access_failed(step: str) -> None:
    RECORDER.record(REVOKE_FAILURES if step == "revoke" else GRANT_FAILURES, 1)


def revoked(event: BreakGlassEvent, revoked_at: datetime) -> None:
    """An event's AWS access was revoked: how long after it should have ended. That is its close, or its
    expiry time (not when the sweep got to it), so a late expiry shows here too."""
    if event.ended_at is not None:
        should_end = min(event.ended_at, event.expires_at)
        RECORDER.record(REVOKE_LATENCY, max(0.0, (revoked_at - should_end).total_seconds()))


def refusal_reason(exc: BaseException) -> str:
    """`RateLimited` -> `rate_limited`: the error's class, whose names the code defines (a bounded label);
    an error that is not a domain or store error is `unexpected`."""
    from bot.errors import BreakglassError
    from store import EventNotFound, InvalidTransition, StoreUnavailable

    if not isinstance(exc, BreakglassError | EventNotFound | InvalidTransition | StoreUnavailable):
        return "unexpected"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


class SlackRateLimits(SlackResponseObserver):
    """Counts the Web API's 429 answers by method (put it first in a WebClient's `retry_handlers`)."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is not None and response.status_code == 429:
            method = request.url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
            RECORDER.record(
                SLACK_RATE_LIMITED, 1, method if re.fullmatch(r"[a-zA-Z.]{1,64}", method) else "other"
            )
        return False


# -- the state, read when asked ------------------------------------------------------------------------------

OWED_HORIZON = timedelta(days=1)  # steps in a backoff are owed too: look this far ahead
OWED_LIMIT = 500


@dataclass(frozen=True)
class State:
    active_events: int
    owed_deliveries: int
    owed_failing: int
    owed_oldest_seconds: float
    audit_channels_broken: int

    def values(self) -> dict[Metric, float]:
        return {
            ACTIVE_EVENTS: self.active_events,
            OWED_DELIVERIES: self.owed_deliveries,
            OWED_FAILING: self.owed_failing,
            OWED_OLDEST: self.owed_oldest_seconds,
            AUDIT_CHANNELS_BROKEN: self.audit_channels_broken,
        }


def read_state(store: Store, now: datetime, audit_check: Callable[[], Any] | None = None) -> State:
    """The store's active events and owed outboxes (at most OWED_LIMIT events), and the audit channels the
    `audit_channel` health check reports broken."""
    active = store.list_active()
    owed = store.list_owed(now=now + OWED_HORIZON, limit=OWED_LIMIT)
    due = [e.outbox_due_at for e in owed if e.outbox_due_at is not None and e.outbox_due_at <= now]
    broken = 0
    if audit_check is not None:
        result = audit_check()
        broken = len((getattr(result, "detail", None) or {}).get("broken", {}))
    return State(
        active_events=len(active),
        owed_deliveries=sum(len(e.outbox) for e in owed),
        owed_failing=sum(1 for e in owed if e.outbox_attempts > 0),
        owed_oldest_seconds=max((now - min(due)).total_seconds(), 0.0) if due else 0.0,
        audit_channels_broken=broken,
    )


# -- Prometheus (HTTP mode) ----------------------------------------------------------------------------------

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class PrometheusSink:
    """prometheus-client metrics for the hooks. Under gunicorn with several workers, PROMETHEUS_MULTIPROC_DIR
    (bot/gunicorn_conf.py sets it) makes every worker's counts add up in whichever worker is scraped."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[Metric, Any] = {}
        for metric in COUNTERS:
            labels = [metric.label] if metric.label else []
            self._metrics[metric] = Counter(
                f"{NAMESPACE}_{metric.name}", metric.help, labels, registry=self.registry
            )
        for metric in HISTOGRAMS:
            self._metrics[metric] = Histogram(
                f"{NAMESPACE}_{metric.name}", metric.help, registry=self.registry, buckets=REVOKE_BUCKETS
            )

    def record(self, metric: Metric, value: float, label: str | None) -> None:
        target = self._metrics.get(metric)
        if target is None:
            return
        if metric.label:
            target = target.labels(label or "")
        if metric.kind == "counter":
            target.inc(value)
        else:
            target.observe(value)


class StateCollector:
    """A prometheus-client collector: the state, read from the store at each scrape."""

    def __init__(self, read: Callable[[], State]) -> None:
        self.read = read

    def describe(self) -> Iterable[Any]:
        return []  # the state is read at collect time only (not when registered)

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        state = self.read()
        for metric, value in state.values().items():
            yield GaugeMetricFamily(f"{NAMESPACE}_{metric.name}", metric.help, value=value)


class PrometheusEndpoint:
    """What `GET /metrics` answers: the hooks' counts (all workers' under PROMETHEUS_MULTIPROC_DIR) and
    the state, in Prometheus's text format."""

    def __init__(self, read_state: Callable[[], State], recorder: Recorder = RECORDER) -> None:
        import os

        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        self.sink = PrometheusSink()
        recorder.attach(self.sink)
        if os.environ.get(MULTIPROC_ENV):
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry)
        else:
            self.registry = self.sink.registry
        self.state_registry = CollectorRegistry(auto_describe=False)
        self.state_registry.register(StateCollector(read_state))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry) + generate_latest(self.state_registry), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """gunicorn's child_exit: drop a dead worker's live gauges (multiprocess mode only)."""
    import os

    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


# -- CloudWatch embedded metric format (Lambda) ---------------------------------------------------------------


class EmfSink:
    """Keeps what the hooks record until `flush`, which writes one EMF document per metric and label value
    on its own line (Lambda sends stdout to CloudWatch Logs, which turns each document into metrics)."""

    MAX_VALUES = 100  # EMF: at most 100 values in one metric's array

    def __init__(self, stream: IO[str] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.stream = stream
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[Metric, str | None], float] = {}
        self._values: dict[Metric, list[float]] = {}

    def record(self, metric: Metric, value: float, label: str | None) -> None:
        with self._lock:
            if metric.kind == "histogram":
                self._values.setdefault(metric, []).append(value)
            else:
                key = (metric, label if metric.label else None)
                self._counts[key] = self._counts.get(key, 0.0) + value

    def documents(self, state: State | None = None) -> list[dict[str, Any]]:
        """The pending values as EMF documents (and clears them)."""
        with self._lock:
            counts, self._counts = self._counts, {}
            values, self._values = self._values, {}
        timestamp = int(self.clock() * 1000)
        plain: dict[Metric, Any] = {m: v for (m, label), v in counts.items() if label is None}
        chunks = {
            m: [seen[i : i + self.MAX_VALUES] for i in range(0, len(seen), self.MAX_VALUES)]
            for m, seen in values.items()
        }
        plain.update({m: parts[0] for m, parts in chunks.items()})
        if state is not None:
            plain.update(state.values())
        documents = [_emf(timestamp, plain)] if plain else []
        documents += [_emf(timestamp, {m: part}) for m, parts in chunks.items() for part in parts[1:]]
        for (metric, label), value in sorted(counts.items(), key=lambda kv: (kv[0][0].name, kv[0][1] or "")):
            if label is not None and metric.label:
                documents.append(_emf(timestamp, {metric: value}, dimension=(metric.label, label)))
        return documents

    def flush(self, state: State | None = None) -> int:
        """Write the pending values (and `state`) as EMF lines; returns how many lines."""
        documents = self.documents(state)
        stream = self.stream or sys.stdout
        for document in documents:
            stream.write(json.dumps(document, separators=(",", ":")) + "\n")
        stream.flush()
        return len(documents)


def _emf(
    timestamp: int, values: dict[Metric, Any], dimension: tuple[str, str] | None = None
) -> dict[str, Any]:
    """One EMF document: the `_aws` metadata, a directive naming every metric, and the values as root members
    (with the dimension's value, per label value and in total)."""
    key = dimension[0].title() if dimension else None
    directive: dict[str, Any] = {
        "Namespace": NAMESPACE,
        "Dimensions": [[key], []] if key else [[]],
        "Metrics": [{"Name": m.emf, "Unit": m.unit} for m in values],
    }
    document: dict[str, Any] = {"_aws": {"Timestamp": timestamp, "CloudWatchMetrics": [directive]}}
    if key and dimension:
        document[key] = dimension[1]
    document.update({m.emf: v for m, v in values.items()})
    return document
