"""What every Slack surface needs, built once by `create_app`, plus typed `private_metadata`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, ValidationError
from slack_sdk import WebClient

from bot.announce import Announcer
from bot.clock import Clock
from bot.policy import Policy
from bot.service import BreakGlassService
from store import BreakGlassEvent

log = logging.getLogger(__name__)


class EventMetadata(BaseModel):
    """private_metadata of the close and review modals (Slack returns it untouched; still validated)."""

    model_config = ConfigDict(extra="forbid")
    event_id: str
    channel_id: str | None = None


class InvokeMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel_id: str | None = None
    source: str = "command"


def parse_metadata(model: type[BaseModel], raw: str | None) -> BaseModel | None:
    try:
        return model.model_validate_json(raw or "{}")
    except ValidationError:
        return None


class InFlight:
    """Counts post-ack work still running, so shutdown (and tests) can wait for it to finish."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    def __enter__(self) -> None:
        with self._idle:
            self._count += 1

    def __exit__(self, *exc: object) -> None:
        with self._idle:
            self._count -= 1
            if self._count == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._count == 0, timeout=timeout)


@dataclass
class Components:
    service: BreakGlassService
    announcer: Announcer
    client: WebClient
    policy: Policy
    clock: Clock
    # Hooks, set by the runtime: what to do with an event after the ack (deliver its announcements,
    # schedule its warning and expiry), and how to refresh a user's App Home.
    on_event: list[Callable[[BreakGlassEvent], None]] = field(default_factory=list)
    lazy_delivery: bool = False  # Lambda: announcements go to a lazy listener instead of inline

    inflight: InFlight = field(default_factory=lambda: InFlight())

    def after_ack(self, event: BreakGlassEvent) -> None:
        """Work done after Slack has its answer: deliver owed announcements, then notify hooks."""
        with self.inflight:
            self._after_ack(event)

    def _after_ack(self, event: BreakGlassEvent) -> None:
        if not self.lazy_delivery:
            delivered = self.announcer.deliver(event.id)
            event = delivered or event
        for hook in self.on_event:
            try:
                hook(event)
            except Exception:
                log.exception("post-ack hook failed", extra={"event_id": event.id})
