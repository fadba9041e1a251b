"""A bare Bolt Lambda app that only acks /breakglass: the baseline of the cold-start benchmark.

Built like bot/lambda_handler.py builds the bot's (Bolt `App`, `process_before_response=True`, Bolt's
`SlackRequestHandler` for AWS Lambda), at import, i.e. in Lambda's init phase.
"""

from __future__ import annotations

import os
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.aws_lambda import SlackRequestHandler
from slack_sdk import WebClient

bolt = App(
    signing_secret=os.environ["SLACK_SIGNING_SECRET"],
    client=WebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"]),
    token_verification_enabled=False,
    process_before_response=True,
)


@bolt.command("/breakglass")
def _command(ack: Any) -> None:
    ack()


_slack = SlackRequestHandler(bolt)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    answer: dict[str, Any] = _slack.handle(event, context)
    return answer
