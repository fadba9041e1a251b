"""`create_app(settings, store, client)`: the one factory every entry point (HTTP/WSGI, Socket Mode,
Lambda, tests) wraps. It wires the policy, the use cases, the outbox, the scheduler and the Slack
surfaces onto a runtime-agnostic Bolt `App`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped, warning_token_skipped
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler

from bot import metrics, schedules
from bot.access import AccessProvider, make_provider
from bot.access.holders import holders_in
from bot.access.policy_lock import StorePolicyLock
from bot.clock import Clock, SystemClock
from bot.config import ConfigError, Settings
from bot.delivery import handlers
from bot.delivery.audit_channels import AuditChannels
from bot.delivery.deps import DeliveryDeps, NoFeed
from bot.delivery.engine import Pipeline
from bot.delivery.inflight import InFlight
from bot.delivery.lease import LeaseKeeper, NewLeases
from bot.delivery.prompt_notices import PromptNotices
from bot.delivery.queue import DeliveryQueue
from bot.delivery.retry import DeliveryConnectionErrorRetryHandler
from bot.directory import Directory
from bot.errors import DirectoryUnavailable
from bot.health import CheckResult, Health, StoreProbe
from bot.home_team import HomeTeam, start_up_client
from bot.incidents import IncidentProvider, make_incident_provider, missing_settings, webhook_secrets
from bot.incidents.links import IncidentLinks
from bot.incidents.webhooks import IncidentWebhooks
from bot.policy import Policy, PolicyError, load_policy, unheld_roles
from bot.revoke_deadline import RevocationCheck
from bot.scheduler import Scheduler, Timers
from bot.service import BreakGlassService
from bot.shutdown import Shutdown
from bot.skew import SKEW_BOUND, SkewMonitor
from bot.slack import actions, audit_edits, commands, extend, home, invoke_form, views
from bot.slack.context import CONTEXT_KEY, SlackContext
from bot.slack_pacing import BURST, RATE, ChannelGate, PacedRateLimitRetryHandler, PacedWebClient
from bot.slack_token import TokenWatch
from store import Store
from store.dynamodb import DynamoDBStore

if TYPE_CHECKING:
    from bot.audit_feed.sinks import AuditFeed

log = logging.getLogger(__name__)

LAMBDA_NEEDS_TEAM = (
    "SLACK_TEAM_ID is not set: on Lambda it is required (the installed workspace's id, T0123456; the SAM "
    "template's SlackTeamId): a cold start cannot learn it from auth.test without delaying the first request"
)
# An AWS status poll gives up (the step is retried later) well inside a delivery's lease (bot/delivery/).
ACCESS_POLL_TIMEOUT = timedelta(seconds=30)

__all__ = [
    "BreakglassApp",
    "audit_channel",
    "create_app",
    "make_slack_client",
    "resolve_policy",
    "unheld_roles",
]


def make_slack_client(settings: Settings, *, timeout: int = 10) -> WebClient:
    """The Web API client: Slack's own retry handlers for connection errors and 5xx, and its 429 handler
    bounded, inside a delivery, by the delivery's lease (bot/delivery/); posts take their channel's turn in
    one pacing gate shared by every delivery worker (bot/slack_pacing.py)."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    return PacedWebClient(
        gate=ChannelGate(settings.slack_channel_rate or RATE, settings.slack_channel_burst or BURST),
        token=token,
        base_url=settings.slack_api_url,
        timeout=timeout,
        retry_handlers=[
            DeliveryConnectionErrorRetryHandler(max_retry_count=2),
            PacedRateLimitRetryHandler(max_retry_count=3),
            ServerErrorRetryHandler(max_retry_count=2),
        ],
    )


def resolve_policy(settings: Settings) -> Policy:
    try:
        return load_policy(settings.breakglass_policy)
    except PolicyError as exc:
        raise ConfigError([str(exc)]) from None


def audit_channel(settings: Settings, policy: Policy) -> str | None:
    """The default audit channel (policy, then environment); every profile must end up with one."""
    channel = policy.audit_channel or settings.breakglass_audit_channel
    if any(not (p.audit_channel or channel) for p in policy.profiles.values()):
        raise ConfigError(
            [
                "no audit channel: set BREAKGLASS_AUDIT_CHANNEL (or audit_channel in the policy file) to the id "
                "of the security audit channel (C0123456), and invite the bot to it"
            ]
        )
    return channel


class _StaticTokenNotice(logging.Filter):
    """Drops Bolt's "token will be ignored" warnings: breakglass passes its bot token through `authorize`
    on purpose, and Bolt also reads SLACK_BOT_TOKEN from the environment, then warns that it is unused."""

    NOTICES = (warning_token_skipped(), warning_client_prioritized_and_token_skipped())

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.NOTICES


_BOLT_LOGGER = logging.getLogger("slack_bolt")
_BOLT_LOGGER.addFilter(_StaticTokenNotice())


@dataclass
class BreakglassApp:
    bolt: App
    context: SlackContext  # what the Slack surfaces share
    pipeline: Pipeline  # the delivery engine
    scheduler: Scheduler
    store: Store
    settings: Settings
    checks: Health
    webhooks: IncidentWebhooks
    # the audit feed's notices delivered as soon as they are stored (None: no feed); Lambda flushes it after
    # its post-ack work (bot/delivery/prompt_notices.py)
    notices: PromptNotices | None = None
    home: HomeTeam | None = None  # the installed workspace, maybe being learned (bot/home_team.py)

    @property
    def service(self) -> BreakGlassService:
        return self.context.service

    def shutdown(self, timeout: float | None = None, *, stopping: Shutdown | None = None) -> bool:
        """Clean stop within one deadline (`timeout`, default bot.shutdown.DEADLINE, or the caller's
        `stopping`, shared with its own parts): no new scheduled work, in-flight jobs and post-ack
        deliveries finish, the delivery workers and the lease keeper stop. False (logged) when a part did
        not finish in time (bot/shutdown.py)."""
        own = stopping is None
        stopping = stopping or Shutdown(timeout)
        if (home := self.home) is not None:  # its learner makes a read-only call at most: not waited for
            stopping.stop("workspace learner", lambda _left: home.stop(0))
        stopping.stop("scheduler", lambda _left: self.scheduler.shutdown(wait=True))
        stopping.stop("delivery", self.pipeline.shutdown)
        return stopping.finish() if own else not stopping.late

    def health(self) -> tuple[int, dict[str, Any]]:
        """`/healthz`: the named checks of `self.checks` (see bot.health for what makes it non-200)."""
        return self.checks.report()


def audit_feed(settings: Settings, store: Store) -> AuditFeed | NoFeed:
    """The OCSF audit feed `BREAKGLASS_AUDIT_FEED` names, checked (an S3 bucket's Object Lock); NoFeed when it
    names none, without importing bot.audit_feed (a Lambda cold start loads only what it needs)."""
    if not (settings.breakglass_audit_feed or "").strip(" ,"):
        return NoFeed()
    from bot.audit_feed.sinks import FeedConfigError, make_feed

    try:
        return make_feed(
            store, settings.breakglass_audit_feed, object_lock=settings.breakglass_audit_feed_object_lock
        )
    except FeedConfigError as exc:
        raise ConfigError([f"BREAKGLASS_AUDIT_FEED: {exc}"]) from None


def create_app(
    settings: Settings,
    store: Store,
    client: WebClient | None = None,
    *,
    policy: Policy | None = None,
    clock: Clock | None = None,
    directory: Directory | None = None,
    lazy_delivery: bool = False,
    access: AccessProvider | None = None,
    incidents: IncidentProvider | None = None,
    delivery_workers: int = 4,
    operator: bool = False,
    home_team: HomeTeam | None = None,
) -> BreakglassApp:
    policy = policy or resolve_policy(settings)
    channel = audit_channel(settings, policy)
    client = client or make_slack_client(settings)
    clock = clock or SystemClock()
    if isinstance(client, PacedWebClient):  # Retry-After pauses and pacing also follow the injectable clock
        client.gate.follow(clock)
    # The skew of `clock` (which decides stacking and expiry) against Slack's and AWS's Date headers.
    skew = SkewMonitor(clock)
    client.retry_handlers.insert(0, skew.slack_hook())
    token_watch = TokenWatch()  # health check `slack_token`: does Slack still accept the bot token?
    client.retry_handlers.insert(0, token_watch)
    client.retry_handlers.insert(0, metrics.SlackRateLimits())  # GET /metrics, EMF: Slack's 429s by method
    if isinstance(store, DynamoDBStore):
        store.on_client(skew.watch_boto3)  # the client is made on first use
    directory = directory or Directory(client, home=home_team or HomeTeam(settings.slack_team_id))
    if directory.home.team_id is None:  # learned from auth.test, never in a request's path (bot/home_team.py)
        if lazy_delivery:
            raise ConfigError([LAMBDA_NEEDS_TEAM])
        if not directory.home.asked:  # one auth.test at start-up (bot/runtime.py's token check may be it)
            directory.home.ask(start_up_client(client.token, client.base_url).auth_test)
        if not operator:
            directory.home.learn_in_background(client.auth_test)
    # The composition of the delivery core, once, in dependency order (README, "Architecture"). AWS access
    # (policy `access:`): the provider asks the store which active events hold an assignment, polls within a
    # delivery's lease, and denies sessions up to the clock-skew bound after a revoke.
    access = access or make_provider(
        policy.access,
        holders=holders_in(store),
        clock=clock,
        poll_timeout=ACCESS_POLL_TIMEOUT,
        deny_margin=SKEW_BOUND,
        policy_lock=StorePolicyLock(store, clock),
    )
    # The incident tool (policy `incidents:`): links, on-call, resolve → close, timeline notes.
    missing = [] if incidents else missing_settings(policy.incidents, settings)
    if missing:
        raise ConfigError(missing)
    incidents = incidents or make_incident_provider(policy.incidents, settings)
    feed = audit_feed(settings, store)
    deps = DeliveryDeps(
        audit_feed=feed,
        store=store,
        client=client,
        policy=policy,
        clock=clock,
        access=access,
        directory=directory,
        audit_channels=AuditChannels(clock),
        incidents=incidents,
        leases=LeaseKeeper(),  # renews every lease this process holds (deliveries, assignment locks)
        # Lambda: exact-time warnings and expiry from one-time schedules, when configured (bot/schedules.py)
        schedules=schedules.configured(settings) if lazy_delivery else None,
        # `breakglass-admin` (`operator`) changes no AWS access: the schedules step it owes waits for the bot
        defer_schedules=operator,
    )
    # After the ack: threaded runtimes queue the delivery for the engine's workers; Lambda cannot run
    # threads after returning, so there a Bolt lazy listener delivers (`lazy_listeners` below).
    queue = DeliveryQueue(InFlight(), enabled=not lazy_delivery)
    if isinstance(client, PacedWebClient):  # new invocations' root messages before older thread replies
        client.gate.attend(queue)
    new_leases = NewLeases(store, clock, deps.leases, enabled=not lazy_delivery)
    incident_links = IncidentLinks(
        provider=incidents,
        policy=policy.incidents,
        store=store,
        directory=directory,
        clock=clock,
        after_change=queue.deliver_after_ack,
    )
    service = BreakGlassService(
        incidents=incident_links,
        store=store,
        policy=policy,
        directory=directory,
        clock=clock,
        default_audit_channel=channel,
        prepare_new=new_leases.hold,
        access=access,
    )
    service.timed_by = "schedules" if deps.schedules else None
    # Runs Bolt's lazy listeners (Lambda) and `SlackContext.call_after_ack` work; a large pool keeps slow
    # Slack calls after one ack from delaying the next (Bolt's default is cpu_count + 4).
    executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="bolt-listener")
    prompt: PromptNotices | None = None
    if not isinstance(feed, NoFeed):  # the feed also records refusals and the audit channel's episodes
        sinks = feed
        service.on_refused = lambda request, kind, message: sinks.refused(clock.now(), request, kind, message)
        deps.audit_channels.on_change = lambda *change: sinks.channel(*change)
        # each notice delivered as soon as it is stored, not at the next sweep (bot/delivery/prompt_notices.py)
        prompt = PromptNotices(sinks, clock, queue)
        sinks.on_stored = prompt.stored
    context = SlackContext(
        service=service,
        queue=queue,
        audit_channels=deps.audit_channels,
        client=client,
        policy=policy,
        clock=clock,
        # Lambda: nothing may run after the response, so `call_after_ack` work stays in the listener.
        background=None if lazy_delivery else executor,
    )
    timers = Timers(clock, service.warn_at)
    pipeline = Pipeline(
        deps,
        handlers.registry(),
        new_leases=new_leases,
        queue=queue,
        follow_ups=(timers.on_event, home.refresh_for(context)),
        workers=delivery_workers,
    )
    scheduler = Scheduler(
        service=service,
        pipeline=pipeline,
        timers=timers,
        policy=policy,
        clock=clock,
        default_audit_channel=channel,
    )
    lazy_listeners: list[Callable[..., None]] = []
    if lazy_delivery:
        # Lambda's post-ack delivery: each listener that stores a change gets this Bolt lazy listener, which
        # Bolt runs after the ack in a second invocation; it delivers whatever is due (this change included).
        def lambda_lazy_delivery() -> None:
            pipeline.deliver_owed()
            if prompt is not None:  # notices stored by this run itself (e.g. an audit channel broken)
                prompt.flush()

        lazy_listeners.append(lambda_lazy_delivery)

    token = client.token or ""

    def authorize(
        enterprise_id: str | None, team_id: str | None, context: dict[str, Any], **_: Any
    ) -> AuthorizeResult | None:
        # A single-workspace app with a static bot token. Requests from any other workspace (another
        # install of the same app, a Slack Connect org) are refused. The installed workspace is
        # SLACK_TEAM_ID, or learned from auth.test at start-up or in the background (bot/home_team.py):
        # never asked here. While it is unknown every request is refused (its team cannot be checked).
        try:
            home = directory.home_team()
        except DirectoryUnavailable as exc:
            log.error("cannot authorize a request: %s", exc.message, extra={"outcome": "refused"})
            home = None
        if home is None or team_id != home:
            if home is not None:
                log.warning(
                    "refused a request from another Slack workspace",
                    extra={"action": "authorize", "outcome": "refused", "team": team_id},
                )
            # Refused in the ack itself: without a response_url Bolt answers with its message at once
            # instead of first posting it to the response_url (a Slack round trip before the ack).
            context.pop("response_url", None)
            return None
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=token)

    bolt = App(
        name="breakglass",
        signing_secret=settings.slack_signing_secret.get_secret_value()
        if settings.slack_signing_secret
        else "",
        client=WebClient(
            base_url=client.base_url, timeout=client.timeout, retry_handlers=client.retry_handlers
        ),
        authorize=authorize,  # type: ignore[arg-type]  # None refuses the request (Bolt's own contract)
        user_facing_authorize_error_message=(
            ":no_entry: breakglass only serves the Slack workspace it is installed in, and could not confirm "
            "this request came from it: nothing was done. If it did, try again in a minute."
        ),
        # Listeners run in the request's thread and Bolt answers when they return: no 10 ms polling
        # for the ack and no handoff to a listener thread first. What follows an ack goes to the
        # post-ack queue (`deliver_after_ack`: stored changes) or `call_after_ack` (views.open, App Home).
        process_before_response=True,
        request_verification_enabled=not settings.socket_mode,
        token_verification_enabled=False,
        logger=_BOLT_LOGGER,
        listener_executor=executor,
    )

    @bolt.error
    def on_error(error: Exception, body: dict[str, Any]) -> BoltResponse:
        log.error("unhandled error in a Slack listener", exc_info=error, extra={"outcome": "error"})
        return BoltResponse(status=500, body="")

    @bolt.middleware
    def share_context(req: BoltRequest, next_: Callable[[], BoltResponse]) -> BoltResponse:
        req.context[CONTEXT_KEY] = context  # what every listener shares: `ctx_of(context)` there
        return next_()

    commands.register(bolt, lazy_listeners)
    views.register(bolt, lazy_listeners)
    actions.register(bolt)
    home.register(bolt)
    extend.register(bolt, lazy_listeners)
    invoke_form.register(bolt)
    audit_edits.register(bolt, lazy_listeners, feed)  # edits of audit messages the bot did not make
    checks = Health()
    probe = StoreProbe(store)
    checks.add("store", probe.read)
    checks.add("store_write", probe.write)
    checks.add("scheduler", lambda: CheckResult(True, detail={"running": scheduler.running}))
    checks.add("clock", skew.check)
    checks.add("audit_channel", deps.audit_channels.check)
    checks.add("slack_token", token_watch.check)
    checks.add("revocations", RevocationCheck(deps))
    return BreakglassApp(
        bolt=bolt,
        context=context,
        pipeline=pipeline,
        scheduler=scheduler,
        store=store,
        settings=settings,
        checks=checks,
        webhooks=IncidentWebhooks(incident_links, webhook_secrets(settings)),
        notices=prompt,
        home=directory.home,
    )
