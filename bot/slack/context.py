"""What every Slack surface needs, built once by `create_app`, plus typed `private_metadata`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from slack_sdk import WebClient

from bot.clock import Clock
from bot.delivery.audit_channels import AuditChannels
from bot.delivery.queue import DeliveryQueue, root_owed
from bot.known_roles import KnownRoles
from bot.policy import Policy
from bot.service import BreakGlassService
from store import BreakGlassEvent

log = logging.getLogger(__name__)


class EventMetadata(BaseModel):
    """private_metadata of the close and review modals (Slack returns it untouched; still validated)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    event_id: str
    who: KnownRoles | None = None  # the opener's roles, resolved as it opened (bot.slack.roles_meta)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, value: Any) -> Any:
        # Modals opened before the unused `channel_id` was dropped still carry it.
        if isinstance(value, dict) and "channel_id" in value:
            return {k: v for k, v in value.items() if k != "channel_id"}
        return value


def parse_metadata(model: type[BaseModel], raw: str | None) -> BaseModel | None:
    try:
        return model.model_validate_json(raw or "{}")
    except ValidationError:
        return None


# The key under which `create_app`'s middleware puts the `SlackContext` into Bolt's request context.
CONTEXT_KEY = "breakglass"


def ctx_of(context: Mapping[str, Any]) -> SlackContext:
    """The `SlackContext` of the app a listener runs in (Bolt's `context` argument)."""
    return context[CONTEXT_KEY]


@dataclass
class SlackContext:
    """What every Slack surface needs: the use cases, the post-ack delivery queue, the Web API client.

    Work after a Slack ack, two kinds, each with one mechanism per runtime (README, "After the ack"):
      * `deliver_after_ack(event)`: a change was stored and its owed steps (audit messages, DMs, AWS) must
        be delivered. Threaded runtimes: the delivery engine's post-ack queue (bot/delivery/queue.py).
        Lambda: nothing here; a Bolt lazy listener (`create_app`'s `lambda_lazy_delivery`) delivers in a
        second invocation.
      * `call_after_ack(work, *args)`: a Slack call that answers the request but stores nothing (views.open,
        App Home). Threaded runtimes: Bolt's listener executor (`background`). Lambda: inline, before the
        response (nothing may run after it)."""

    service: BreakGlassService
    queue: DeliveryQueue
    audit_channels: AuditChannels
    client: WebClient
    policy: Policy
    clock: Clock
    # Where `call_after_ack` work runs once the request is answered; None: in the listener itself (Lambda).
    background: Executor | None = None
    # The invoke modal per set of profiles (bot.slack.commands.modal), built once per set.
    modals: dict[tuple[str, ...], dict[str, Any]] = field(default_factory=dict)

    def __deepcopy__(self, memo: dict[int, Any]) -> SlackContext:
        """The process's one context, shared, never copied: Bolt deep-copies a request's context for its
        lazy listeners (on Lambda only the request itself travels), and warned on every such request."""
        return self

    def deliver_after_ack(self, event: BreakGlassEvent) -> None:
        """A change to `event` was stored and Slack has its answer: queue its delivery (Lambda: the lazy
        listener delivers instead)."""
        self.queue.deliver_after_ack(event.id, root=root_owed(event))

    def call_after_ack(self, work: Callable[..., object], *args: Any) -> None:
        """Run `work(*args)` after the listener returns, so Bolt sends the ack first.

        Listeners run in the request's thread (Bolt's `process_before_response`), and Bolt answers Slack
        when the listener returns: no polling for the ack, no handoff to another thread before it. What
        a listener does *after* its ack (open a modal, publish App Home) comes here instead; it is counted
        in flight, so a clean shutdown (and a test's `idle()`) waits for it."""
        if self.background is None:
            work(*args)
            return
        inflight = self.queue.inflight
        inflight.enter()

        def run() -> None:
            try:
                work(*args)
            except Exception:
                log.exception("work after a Slack acknowledgement failed")
            finally:
                inflight.exit()

        try:
            self.background.submit(run)
        except RuntimeError:  # shutting down
            inflight.exit()
