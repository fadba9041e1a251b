"""The `try` page cannot be driven by another website open in the same browser, nor read through DNS
rebinding: real HTTP requests to the page's server, as a hostile page's browser would send them."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.localslack.pageguard import MAX_TOKENS, TOKEN_HEADER
from bot.localslack.workspace import LocalWorkspace
from tests.test_try_workspace import page_token

INVOKE = {"user": "U0ENG", "text": "/breakglass sandbox 15m incident " + "x" * 25}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWorkspace]:
    path: Path = tmp_path_factory.mktemp("try") / "try.db"
    with LocalWorkspace(port=0, db_path=str(path)) as ws:
        yield ws


def send(
    workspace: LocalWorkspace, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict, dict[str, str]]:
    """One request with exactly these headers (``Host`` too, as a rebinding page's browser sends it)."""
    port = int(workspace.url.rsplit(":", 1)[1].strip("/"))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        headers = {"Host": f"127.0.0.1:{port}", **{k.replace("_", "-"): v for k, v in headers.items()}}
        for name, value in headers.items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        raw = response.read()
        answer = (
            json.loads(raw) if response.getheader("Content-Type", "").startswith("application/json") else {}
        )
        return response.status, answer, dict(response.getheaders())
    finally:
        connection.close()


def nothing_happened(workspace: LocalWorkspace) -> None:
    assert workspace.runtime is not None
    assert workspace.runtime.store.list_active() == []
    assert workspace.clock.offset.total_seconds() == 0


def test_a_text_plain_post_from_another_origin_invokes_nothing_and_moves_no_clock(
    workspace: LocalWorkspace,
) -> None:
    """What any website can send without a preflight: a simple `text/plain` POST, with its own Origin."""
    for path, body in (("/ui/command", INVOKE), ("/ui/fast-forward", {"seconds": 3600})):
        status, answer, _ = send(
            workspace,
            "POST",
            path,
            json.dumps(body).encode(),
            Origin="http://evil.example",
            Content_Type="text/plain",
        )
        assert status == 403, answer
        assert "evil.example" in answer["error"]
    nothing_happened(workspace)


def test_another_origin_is_refused_even_with_json_and_a_token(workspace: LocalWorkspace) -> None:
    token = page_token(workspace.url)
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{workspace.bot_url.split(':')[2]}"):
        status, _, _ = send(
            workspace,
            "POST",
            "/ui/command",
            json.dumps(INVOKE).encode(),
            Origin=origin,
            Content_Type="application/json",
            **{TOKEN_HEADER: token},
        )
        assert status == 403, origin
    status, _, _ = send(
        workspace,
        "POST",
        "/ui/command",
        json.dumps(INVOKE).encode(),
        Sec_Fetch_Site="cross-site",
        Content_Type="application/json",
        **{TOKEN_HEADER: token},
    )
    assert status == 403
    nothing_happened(workspace)


def test_a_post_needs_json_and_the_pages_token(workspace: LocalWorkspace) -> None:
    body = json.dumps(INVOKE).encode()
    token = page_token(workspace.url)

    def command(content_type: str, **token_header: str) -> int:
        origin = workspace.url.rstrip("/")
        return send(
            workspace, "POST", "/ui/command", body, Origin=origin, Content_Type=content_type, **token_header
        )[0]

    assert command("application/json") == 403
    assert command("application/json", **{TOKEN_HEADER: "guessed"}) == 403
    assert command("text/plain", **{TOKEN_HEADER: token}) == 415
    nothing_happened(workspace)


def test_dns_rebinding_reads_nothing(workspace: LocalWorkspace) -> None:
    """evil.example resolved to 127.0.0.1: the browser sends `Host: evil.example:PORT`, same-origin to it."""
    port = workspace.url.rsplit(":", 1)[1].strip("/")
    for path in ("/", "/ui/state", "/healthz"):
        status, answer, _ = send(workspace, "GET", path, Host=f"evil.example:{port}")
        assert status == 403, path
        assert "evil.example" in answer["error"]
    token = page_token(workspace.url)  # even a token learnt otherwise does not help
    assert send(workspace, "GET", "/ui/state", Host=f"evil.example:{port}", **{TOKEN_HEADER: token})[0] == 403


def test_the_state_needs_the_pages_token(workspace: LocalWorkspace) -> None:
    assert send(workspace, "GET", "/ui/state")[0] == 403
    status, state, _ = send(workspace, "GET", "/ui/state", **{TOKEN_HEADER: page_token(workspace.url)})
    assert status == 200
    assert state["simulation"] is True


def test_the_page_itself_works_on_127_0_0_1_and_localhost_and_cannot_be_framed(
    workspace: LocalWorkspace,
) -> None:
    port = workspace.url.rsplit(":", 1)[1].strip("/")
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        status, _, headers = send(workspace, "GET", "/", Host=host)
        assert status == 200
        assert headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        token = page_token(f"http://127.0.0.1:{port}/")
        status, answer, _ = send(
            workspace,
            "POST",
            "/ui/command",
            json.dumps({"user": "U0ENG", "text": "/breakglass help"}).encode(),
            Host=host,
            Origin=f"http://{host}",
            Content_Type="application/json; charset=utf-8",
            Sec_Fetch_Site="same-origin",
            **{TOKEN_HEADER: token},
        )
        assert status == 200, answer


def test_each_page_gets_its_own_token_and_old_ones_are_forgotten(workspace: LocalWorkspace) -> None:
    first = page_token(workspace.url)
    assert page_token(workspace.url) != first
    for _ in range(MAX_TOKENS):
        page_token(workspace.url)
    assert send(workspace, "GET", "/ui/state", **{TOKEN_HEADER: first})[0] == 403
