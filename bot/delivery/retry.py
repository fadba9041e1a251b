"""slack_sdk's own retry handlers, bounded by the delivery running in this thread (bot/delivery/lease.py):
a 429's Retry-After never outlasts the lease, and a chat.postMessage whose connection dropped is never sent
again blindly (the engine first looks for it). Outside a delivery they behave as slack_sdk's."""

from __future__ import annotations

from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.delivery.errors import LeaseLost
from bot.delivery.lease import SEND_MARGIN, current, lease_lost, lease_time_left


def retry_after(response: HttpResponse) -> float:
    """The seconds a 429's `Retry-After` header asks for (1 when it is missing or not a number)."""
    value = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), None)
    try:
        return float(value[0] if isinstance(value, list) else value) if value is not None else 1.0
    except ValueError:
        return 1.0


class LeaseBoundedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler, except that inside a delivery it never sleeps past what the delivery may
    still hold its lease for (`MAX_HOLD`, minus SEND_MARGIN): such a 429 fails the send, which stays owed and
    is retried after a backoff. The lease is renewed during the sleep; if it is lost meanwhile (the store
    refused a renewal, another process took over), the retry is not sent (`LeaseLost`)."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        time_left = lease_time_left()
        if time_left is None or response is None:
            return True
        return retry_after(response) + 1 < time_left - SEND_MARGIN.total_seconds()

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        super().prepare_for_next_attempt(state=state, request=request, response=response, error=error)
        if lease_lost():
            raise LeaseLost("the delivery lease was lost during Slack's Retry-After wait")


class DeliveryConnectionErrorRetryHandler(ConnectionErrorRetryHandler):
    """slack_sdk's connection-error handler, except that inside a delivery it never re-sends a
    chat.postMessage: the first request may have been accepted before the connection dropped, so
    the post stays owed and the next attempt first looks for it (root audit message: by its metadata)."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if current.get() is not None and request.url.endswith("chat.postMessage"):
            return False
        return super()._can_retry(state=state, request=request, response=response, error=error)
