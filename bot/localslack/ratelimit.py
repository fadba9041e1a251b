"""Slack's per-channel posting limit, for the fake Web API (`FakeSlack.rate_limit`).

Slack lets an app post about one message per second to a channel, with short bursts; beyond that it answers
HTTP 429 with `Retry-After` (whole seconds) and asks the app to leave the channel alone until then. This
keeps one token bucket per channel (`per_second`, `burst`), decided when a request arrives, and records
what a test or benchmark needs to judge a client: every 429, and every request that came while a
Retry-After it had been given was still running (`early`: Slack's "you were told to wait").
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Limited:
    channel: str
    at: float  # when the request arrived (the limiter's clock)
    retry_after: int


@dataclass
class _Bucket:
    tokens: float
    updated: float
    wait_until: float = 0.0  # the end of the last Retry-After given for this channel


@dataclass
class ChannelRateLimit:
    methods: frozenset[str]
    per_second: float = 1.0
    burst: int = 4
    clock: Callable[[], float] = time.monotonic
    limited: list[Limited] = field(default_factory=list)  # every 429 answered
    early: list[Limited] = field(default_factory=list)  # requests inside a Retry-After already given
    accepted: list[tuple[str, float]] = field(
        default_factory=list
    )  # (channel, arrival) of each accepted post
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, method: str, channel: object) -> int | None:
        """None if the request may be served now, else the Retry-After (seconds) to answer with 429."""
        if method not in self.methods or not isinstance(channel, str) or not channel:
            return None
        with self._lock:
            now = self.clock()
            bucket = self._buckets.setdefault(channel, _Bucket(float(self.burst), now))
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.per_second)
            bucket.updated = now
            if now < bucket.wait_until:  # told to wait and did not: refused again, and recorded
                early = Limited(channel, now, max(1, math.ceil(bucket.wait_until - now)))
                self.early.append(early)
                self.limited.append(early)
                return early.retry_after
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                self.accepted.append((channel, now))
                return None
            retry_after = max(1, math.ceil((1.0 - bucket.tokens) / self.per_second))
            bucket.wait_until = max(bucket.wait_until, now + retry_after)
            self.limited.append(Limited(channel, now, retry_after))
            return retry_after

    def floor(self, posts: int) -> float:
        """The shortest time Slack allows for `posts` posts to one channel (from a full bucket)."""
        return max(0, posts - self.burst) / self.per_second
