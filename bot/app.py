"""`create_app(settings, store, client)`: the one factory every entry point (HTTP/WSGI, Socket Mode,
Lambda, tests) wraps. It wires the policy, the use cases, the outbox, the scheduler and the Slack
surfaces onto a runtime-agnostic Bolt `App`."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from slack_bolt import App, BoltResponse
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped, warning_token_skipped
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.announce import Announcer
from bot.clock import Clock, SystemClock
from bot.config import ConfigError, Settings
from bot.directory import Directory
from bot.policy import Policy, PolicyError, load_policy, unheld_roles
from bot.scheduler import Scheduler
from bot.service import BreakGlassService
from bot.slack import actions, commands, home, views
from bot.slack.context import Components
from store import Store

log = logging.getLogger(__name__)

__all__ = ["BreakglassApp", "audit_channel", "create_app", "make_client", "resolve_policy", "unheld_roles"]


def make_client(settings: Settings, *, timeout: int = 10) -> WebClient:
    """The Web API client: Slack's own retry handlers for 429 (Retry-After), connection errors and 5xx."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    return WebClient(
        token=token,
        base_url=settings.slack_api_url,
        timeout=timeout,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=3),
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
    components: Components
    scheduler: Scheduler
    store: Store
    settings: Settings

    @property
    def service(self) -> BreakGlassService:
        return self.components.service

    @property
    def announcer(self) -> Announcer:
        return self.components.announcer

    def shutdown(self, timeout: float = 20.0) -> None:
        """Clean stop: no new scheduled work, in-flight jobs and post-ack deliveries finish."""
        self.scheduler.shutdown(wait=True)
        self.components.inflight.wait_idle(timeout)
        self.components.workers.shutdown(wait=True)

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            self.store.ping()
        except Exception as exc:  # noqa: BLE001 - health must answer, whatever the store raises
            return 503, {"status": "unavailable", "store": type(exc).__name__}
        return 200, {"status": "ok", "store": type(self.store).__name__, "scheduler": self.scheduler.running}


def create_app(
    settings: Settings,
    store: Store,
    client: WebClient | None = None,
    *,
    policy: Policy | None = None,
    clock: Clock | None = None,
    directory: Directory | None = None,
    lazy_delivery: bool = False,
) -> BreakglassApp:
    policy = policy or resolve_policy(settings)
    channel = audit_channel(settings, policy)
    client = client or make_client(settings)
    clock = clock or SystemClock()
    directory = directory or Directory(client)
    service = BreakGlassService(
        store=store,
        policy=policy,
        directory=directory,
        clock=clock,
        default_audit_channel=channel,
        lease_on_invoke=not lazy_delivery,
    )
    announcer = Announcer(store=store, client=client, policy=policy, clock=clock)
    components = Components(
        service=service,
        announcer=announcer,
        client=client,
        policy=policy,
        clock=clock,
        lazy_delivery=lazy_delivery,
    )
    scheduler = Scheduler(
        service=service,
        announcer=announcer,
        policy=policy,
        clock=clock,
        default_audit_channel=channel,
    )
    components.on_event += [scheduler.on_event, home.refresh_for(components)]
    if lazy_delivery:
        # Lambda: each listener that records owed announcements gets this lazy listener, which Bolt runs
        # after the ack in a second invocation; it delivers whatever is due (this request's included).
        def deliver_owed_announcements() -> None:
            announcer.deliver_owed()

        components.lazy.append(deliver_owed_announcements)
        announcer.on_change = home.refresh_for(components)

    token = client.token or ""

    def authorize(enterprise_id: str | None, team_id: str | None, **_: Any) -> AuthorizeResult:
        # A single-workspace app with a static bot token: no auth.test round trip per request, so a
        # Slack outage does not stop the bot from recording invocations.
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=token)

    bolt = App(
        name="breakglass",
        signing_secret=settings.slack_signing_secret.get_secret_value()
        if settings.slack_signing_secret
        else "",
        client=WebClient(
            base_url=client.base_url, timeout=client.timeout, retry_handlers=client.retry_handlers
        ),
        authorize=authorize,
        process_before_response=lazy_delivery,
        request_verification_enabled=not settings.socket_mode,
        token_verification_enabled=False,
        logger=_BOLT_LOGGER,
        # Listeners ack, then deliver announcements in the same thread; a large pool keeps slow Slack
        # calls after one ack from delaying the next request's ack (Bolt's default is cpu_count + 4).
        listener_executor=ThreadPoolExecutor(max_workers=64, thread_name_prefix="bolt-listener"),
    )

    @bolt.error
    def on_error(error: Exception, body: dict[str, Any]) -> BoltResponse:
        log.error("unhandled error in a Slack listener", exc_info=error, extra={"outcome": "error"})
        return BoltResponse(status=500, body="")

    handler = commands.register(bolt, components)
    views.register(bolt, components)
    actions.register(bolt, components, handler)
    home.register(bolt, components)
    return BreakglassApp(
        bolt=bolt, components=components, scheduler=scheduler, store=store, settings=settings
    )
