"""A slack_sdk retry handler that never retries: slack_sdk shows every Web API answer to its retry handlers,
so a subclass sees each response (its `Date`, its `ok`/`error`) without wrapping the client."""

from __future__ import annotations

from typing import Any

from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState


class SlackResponseObserver(RetryHandler):
    """Put it first in a WebClient's `retry_handlers`; `on_response` is called with every answer."""

    def __init__(self) -> None:
        super().__init__(max_retry_count=2**31)

    def __deepcopy__(self, memo: dict[int, Any]) -> SlackResponseObserver:
        # Bolt deep-copies a request's context, client included (Lambda lazy listeners): share the state.
        return self

    def on_response(self, response: HttpResponse) -> None:
        raise NotImplementedError

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is not None:
            self.on_response(response)
        return False
