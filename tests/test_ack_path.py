"""The ack path: Bolt answers when the listener returns (no polling for the ack); whatever follows the ack
(opening a modal, publishing App Home, delivering announcements) runs after the answer, off the request's
thread, and is waited for by a clean shutdown. Under a burst, queued audit messages go before App Home."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bot.clock import ManualClock
from bot.localslack.webapi import FakeSlack
from bot.policy import Policy
from store.sqlite import SQLiteStore
from tests.conftest import Bot, make_bot
from tests.test_flows_close import AUDIT


def test_the_slash_command_is_answered_before_the_modal_is_opened(bot: Bot) -> None:
    assert bot.runtime.bolt.process_before_response  # listeners run in the request's thread
    release = threading.Event()
    opened_on: list[str] = []
    views_open = bot.runtime.context.client.views_open

    def slow_views_open(**kwargs: Any) -> Any:
        opened_on.append(threading.current_thread().name)
        assert release.wait(10)
        return views_open(**kwargs)

    bot.runtime.context.client.views_open = slow_views_open  # type: ignore[method-assign]
    response = bot.slack.command("")  # would block until `release` if views.open ran before the answer
    assert response.status == 200
    release.set()
    bot.idle()  # the modal is work in flight, as deliveries are
    assert [c.method for c in bot.fake.calls_to("views.open")] == ["views.open"]
    assert opened_on and not opened_on[0].startswith("ThreadPoolExecutor")  # not the server's request thread
    assert opened_on[0].startswith("bolt-listener")


def test_app_home_opened_is_answered_before_app_home_is_published(bot: Bot) -> None:
    release = threading.Event()
    publish = bot.runtime.context.client.views_publish

    def slow_publish(**kwargs: Any) -> Any:
        assert release.wait(10)
        return publish(**kwargs)

    bot.runtime.context.client.views_publish = slow_publish  # type: ignore[method-assign]
    response = bot.slack.event({"type": "app_home_opened", "user": "U0001", "tab": "home"})
    assert response.status == 200
    release.set()
    bot.idle()
    assert bot.fake.home_view("U0001") is not None


@pytest.fixture
def one_worker_bot(fake: FakeSlack, store: SQLiteStore, policy: Policy, clock: ManualClock) -> Iterator[Bot]:
    bot = make_bot(fake, store, policy, clock, delivery_workers=1)
    yield bot
    bot.server.stop()


def test_a_burst_sends_every_queued_audit_message_before_app_home_refreshes(one_worker_bot: Bot) -> None:
    """One delivery worker, held while two invocations queue: both audit messages (and DMs) are sent
    before either App Home refresh, which wait at the back of the queue."""
    bot = one_worker_bot
    gate = threading.Event()
    bot.runtime.pipeline.queue.put((gate.wait, (10,)))  # the only worker waits; what follows queues behind it
    for user in ("U0001", "U0002"):
        assert bot.slack.invoke(user=user, profile="sandbox").status == 200
    gate.set()
    bot.idle()
    posts = [c for c in bot.fake.calls_to("chat.postMessage") if c.params.get("channel") == AUDIT]
    publishes = bot.fake.calls_to("views.publish")
    assert len(posts) == 2 and len(publishes) == 2
    assert max(c.at for c in posts) < min(c.at for c in publishes)
