"""What every Slack surface needs, built once by `create_app`, plus typed `private_metadata`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, ValidationError
from slack_sdk import WebClient

from bot.announce import Announcer, owns_lease
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
    # Bolt lazy listeners added to every listener that records owed announcements (Lambda only).
    lazy: list[Callable[..., None]] = field(default_factory=list)

    inflight: InFlight = field(default_factory=lambda: InFlight())
    # Post-ack work runs on a few dedicated threads rather than in the request's listener thread: the
    # ack of the next request then competes with 4 delivery threads for the interpreter, not with dozens.
    workers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=4, thread_name_prefix="after-ack")
    )

    def after_ack(self, event: BreakGlassEvent) -> None:
        """Work done after Slack has its answer: deliver owed announcements, then notify hooks.

        Queued, not awaited; `inflight.wait_idle()` waits for it (shutdown, tests). If the queue is lost
        (crash), nothing is: the announcements are owed in the store and the sweep delivers them."""
        self.inflight.__enter__()
        try:
            self.workers.submit(self._run_after_ack, event)
        except RuntimeError:  # shutting down: the sweep of the next process delivers
            self.inflight.__exit__()

    def _run_after_ack(self, event: BreakGlassEvent) -> None:
        try:
            self._after_ack(event)
        except Exception:
            log.exception("post-ack work failed; the sweep will retry", extra={"event_id": event.id})
        finally:
            self.inflight.__exit__()

    def _after_ack(self, event: BreakGlassEvent) -> None:
        if self.lazy_delivery:
            return  # the lazy listener delivers (and refreshes App Home) outside Slack's 3-second window
        delivered = self.announcer.deliver(event.id, claimed=event if owns_lease(event) else None)
        event = delivered or event
        for hook in self.on_event:
            try:
                hook(event)
            except Exception:
                log.exception("post-ack hook failed", extra={"event_id": event.id})
