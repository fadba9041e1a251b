"""A bare Bolt app that only acks /breakglass and the invoke modal: the baseline for ack latency.

Served like the bot: `gunicorn -w 1 -k gthread --threads 32 bench.bare_app:app`. With BENCH_BARE_STORE=URL
(e.g. sqlite:///bare.db) its modal submission makes one store write (the bot's: `Store.create` of the
submitted event) before it acks: "bare Bolt + one local store write", the floor of a submission's ack.
"""

from __future__ import annotations

import os
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

bolt = App(
    signing_secret=os.environ["SLACK_SIGNING_SECRET"],
    # the fake Slack only: Bolt's authorization calls auth.test once, and nothing may leave 127.0.0.1
    client=WebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"]),
    token_verification_enabled=False,
    process_before_response=False,
)


@bolt.command("/breakglass")
def _command(ack: Any) -> None:
    ack()


_store = None
if os.environ.get("BENCH_BARE_STORE"):
    from store import open_store

    _store = open_store(os.environ["BENCH_BARE_STORE"])


@bolt.view("breakglass_invoke")
def _invoke(ack: Any, body: dict[str, Any]) -> None:
    if _store is not None:
        from datetime import UTC, datetime

        from bench.common import event

        user = body["user"]["id"]
        _store.create(event(invoker=user, profile=f"bare-{body['view']['id']}", created_at=datetime.now(UTC)))
    ack()


app = SlackRequestHandler(bolt)
