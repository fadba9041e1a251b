"""Who may drive the `try` page: only the page itself, served from 127.0.0.1.

Any website open in the same browser can send requests to http://127.0.0.1:PORT/: a "simple" cross-origin
POST (`text/plain`, no preflight) reaches the server although its answer stays unreadable, and a DNS
rebinding name (evil.example resolving to 127.0.0.1) makes the page's answers readable too. So every
request must name this server in `Host` (127.0.0.1:PORT or localhost:PORT: a rebinding name is refused),
a request with an `Origin` (or `Sec-Fetch-Site`) must come from this server's own origin, a POST must be
`application/json` (which a cross-origin page cannot send without a CORS preflight, never granted here),
and every /ui/ request must carry a token that only the page's own HTML holds (`X-Breakglass-Token`): a
fresh one in each page served, which another origin can neither read nor guess.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

TOKEN_HEADER = "X-Breakglass-Token"  # noqa: S105 - a header name, not a secret
TOKEN_PLACEHOLDER = "__BREAKGLASS_PAGE_TOKEN__"  # noqa: S105 - replaced by each page's token
MAX_TOKENS = 256  # pages served in this run whose token is still accepted (the oldest is forgotten first)

# Sent with every answer: the page may not be framed by another site (clickjacking), nothing is sniffed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Refused:
    status: int
    error: str


class PageGuard:
    def __init__(self) -> None:
        self._tokens: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def new_token(self) -> str:
        """A token for one page served; accepted until MAX_TOKENS newer pages have been served."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = None
            while len(self._tokens) > MAX_TOKENS:
                self._tokens.popitem(last=False)
        return token

    def _known(self, token: str) -> bool:
        with self._lock:
            tokens = list(self._tokens)
        return any(hmac.compare_digest(token, known) for known in tokens)

    def check(
        self, method: str, path: str, headers: Mapping[str, str], port: int, *, needs_token: bool
    ) -> Refused | None:
        """None when the request may be served; else why not. ``headers`` as the request sent them."""
        hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        host = (headers.get("Host") or "").strip().lower()
        if host not in hosts:
            return Refused(403, f"Host {host or '(none)'!r} is not this page: open http://127.0.0.1:{port}/")
        origin = headers.get("Origin")
        if origin is not None and origin.strip().lower() not in {f"http://{h}" for h in hosts}:
            return Refused(403, f"requests from {origin!r} are refused: only this page may drive it")
        site = (headers.get("Sec-Fetch-Site") or "").strip().lower()
        if site and site not in ("same-origin", "none"):
            return Refused(403, f"a {site} request is refused: only this page may drive it")
        if method == "POST":
            content_type = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            if content_type != "application/json":
                return Refused(415, "send application/json")
        if needs_token and not self._known(headers.get(TOKEN_HEADER) or ""):
            return Refused(403, f"missing or unknown {TOKEN_HEADER}: reload the page")
        return None
