"""Confinement's ARM reads without azure-core's pipeline (cloud/preflight.py `_Getter`): what the pipeline did is kept."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

import pytest

from cloud.clients import CloudEndpoint
from cloud.preflight import ArmPreflight, _Getter
from models.errors import TransientError

WORKSPACE = (
    "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-fraud-detection-dev/providers/"
    "Microsoft.MachineLearningServices/workspaces/mlw-fraud-dev"
)


class Token(NamedTuple):
    token: str
    expires_on: int


class Tokens:
    """A credential that hands out `old`, then `new`, and counts what it was asked."""

    def __init__(self, *tokens: str, lifetime_s: int = 3600) -> None:
        self.tokens = list(tokens)
        self.lifetime_s = lifetime_s
        self.asked: list[str] = []
        self.claims: list[str | None] = []

    def get_token(self, *scopes: str, claims: str | None = None, **_: Any) -> Token:
        self.asked.extend(scopes)
        self.claims.append(claims)
        return Token(self.tokens.pop(0), int(time.time()) + self.lifetime_s)


class Refusing:
    def get_token(self, *scopes: str, **_: Any) -> Token:
        raise RuntimeError("ManagedIdentityCredential: no response from the IMDS endpoint")


@pytest.fixture
def arm() -> Iterator[tuple[str, list[str]]]:
    """An ARM on loopback that accepts only the token 'new' (the workspace as Workspaces_Get shows it)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            auth = self.headers.get("Authorization", "")
            seen.append(auth)
            challenge = None
            if auth == "Bearer revoked":
                # Microsoft Learn, "Claims challenges, claims requests and client capabilities": the example.
                challenge = (
                    'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
                    'error="insufficient_claims", '
                    'claims="eyJhY2Nlc3NfdG9rZW4iOnsiYWNycyI6eyJlc3NlbnRpYWwiOnRydWUsInZhbHVlIjoiY3AxIn19fQ=="'
                )
            if auth != "Bearer new":
                body = {"error": {"code": "InvalidAuthenticationToken", "message": "The access token is invalid."}}
                status = 401
            else:
                # specification/machinelearningservices/.../stable/2024-04-01/examples/Workspace/get.json (abridged)
                body = {"id": self.path.split("?")[0], "name": "mlw-fraud-dev", "tags": {"team": "fraud-detection"}}
                status = 200
            data = json.dumps(body).encode()
            self.send_response(status)
            if challenge:
                self.send_header("WWW-Authenticate", challenge)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_refused_token_is_asked_for_again_once_and_the_read_goes_on(arm: tuple[str, list[str]]) -> None:
    url, seen = arm
    credential = Tokens("old", "new")
    reader = ArmPreflight(CloudEndpoint(url), credential)
    found = reader.read_resources([WORKSPACE], timeout_s=5)
    assert found[WORKSPACE] is not None and found[WORKSPACE].tags == {"team": "fraud-detection"}
    assert seen == ["Bearer old", "Bearer new"]  # one 401, then the fresh token
    assert credential.asked == [f"{url.rstrip('/')}/.default"] * 2
    reader.read_resources([WORKSPACE], timeout_s=5)
    assert len(credential.asked) == 2  # kept while it is good


def test_a_token_near_its_end_is_asked_for_again_before_it_is_used(arm: tuple[str, list[str]]) -> None:
    url, seen = arm
    credential = Tokens("new", "new", lifetime_s=120)  # inside the 300 s before expiry: never used as it is
    reader = ArmPreflight(CloudEndpoint(url), credential)
    reader.read_resources([WORKSPACE], timeout_s=5)
    reader.read_resources([WORKSPACE], timeout_s=5)
    assert len(credential.asked) == 2 and seen == ["Bearer new", "Bearer new"]


def test_a_token_refused_twice_fails_closed(arm: tuple[str, list[str]]) -> None:
    url, _ = arm
    reader = ArmPreflight(CloudEndpoint(url), Tokens("old", "stale"))
    with pytest.raises(TransientError, match="answered 401") as info:
        reader.read_resources([WORKSPACE], timeout_s=5)
    assert info.value.code == "ConfinementUnchecked"


def test_no_token_fails_closed_and_says_so(arm: tuple[str, list[str]], caplog: pytest.LogCaptureFixture) -> None:
    url, seen = arm
    reader = ArmPreflight(CloudEndpoint(url), Refusing())
    with pytest.raises(TransientError, match=r"could not get a token.*managed identity") as info:
        reader.read_resources([WORKSPACE], timeout_s=5)
    assert info.value.code == "ConfinementUnchecked" and seen == []
    # The credential's own words go to the log, for the platform team, not to the caller.
    assert "IMDS" not in str(info.value) and "no response from the IMDS endpoint" in caplog.text


def test_nothing_listening_is_unreachable_not_a_timeout() -> None:
    from emulator.server import free_port

    reader = ArmPreflight(CloudEndpoint(f"http://127.0.0.1:{free_port()}/"), Tokens("new"))
    with pytest.raises(TransientError, match="could not be reached"):
        reader.read_resources([WORKSPACE], timeout_s=2)


def test_a_proxy_from_the_environment_is_used_with_its_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://vending%40corp:s3cr%3At@proxy.corp.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    getter = _Getter(CloudEndpoint("https://management.azure.com/"), Tokens("new"), connections=4)
    assert getter._http.proxy.host == "proxy.corp.example" and getter._http.proxy.port == 3128
    expected = base64.b64encode(b"vending@corp:s3cr:t").decode()
    assert getter._http.proxy_headers["proxy-authorization"] == f"Basic {expected}"
    # NO_PROXY names ARM's host: no proxy, as requests decides it.
    monkeypatch.setenv("NO_PROXY", "management.azure.com")
    direct = _Getter(CloudEndpoint("https://management.azure.com/"), Tokens("new"), connections=4)
    assert not hasattr(direct._http, "proxy") or direct._http.proxy is None


def test_a_claims_challenge_asks_for_a_token_with_its_claims(arm: tuple[str, list[str]]) -> None:
    url, seen = arm
    credential = Tokens("revoked", "new")
    ArmPreflight(CloudEndpoint(url), credential).read_resources([WORKSPACE], timeout_s=5)
    assert seen == ["Bearer revoked", "Bearer new"]
    assert credential.claims == [None, '{"access_token":{"acrs":{"essential":true,"value":"cp1"}}}']


def test_a_refused_token_another_thread_replaced_is_not_replaced_again() -> None:
    credential = Tokens("old", "new")
    getter = _Getter(CloudEndpoint("https://management.azure.com/"), credential, connections=1)
    assert getter._bearer() == "old"
    assert getter._bearer(rejected="old") == "new"  # the first thread to see the 401 asks for a new one
    assert getter._bearer(rejected="old") == "new"  # a thread that saw it too uses that one
    assert len(credential.asked) == 2


def test_an_early_refresh_that_fails_keeps_the_token_in_hand() -> None:
    class Flaky(Tokens):
        def get_token(self, *scopes: str, claims: str | None = None, **kw: Any) -> Token:
            if self.asked:
                raise RuntimeError("IMDS is busy")
            return super().get_token(*scopes, claims=claims, **kw)

    getter = _Getter(CloudEndpoint("https://management.azure.com/"), Flaky("only", lifetime_s=200), connections=1)
    assert getter._bearer() == "only"
    assert getter._bearer() == "only"  # within 300 s of expiry, the refresh failed: the token is still good


def test_a_proxy_without_a_scheme_is_http_and_a_socks_proxy_is_refused_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "proxy.corp.example:3128")  # as requests and curl accept it
    getter = _Getter(CloudEndpoint("https://management.azure.com/"), Tokens("new"), connections=1)
    assert (getter._http.proxy.scheme, getter._http.proxy.host) == ("http", "proxy.corp.example")
    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy.corp.example:1080")
    reader = ArmPreflight(CloudEndpoint("https://management.azure.com/"), Tokens("new"))
    with pytest.raises(TransientError, match="SOCKS proxy") as info:
        reader.read_resources([WORKSPACE], timeout_s=2)
    assert info.value.code == "ConfinementUnchecked"


def test_the_token_is_never_sent_in_the_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from models.settings import Settings

    with pytest.raises(ValidationError, match="must be https"):
        Settings(arm_endpoint="http://management.example.com/")
    assert Settings(arm_endpoint="http://127.0.0.1:8443/").arm_endpoint == "http://127.0.0.1:8443/"
    credential = Tokens("new")
    reader = ArmPreflight(CloudEndpoint("http://arm.corp.example/"), credential)
    with pytest.raises(TransientError, match="never sent in the clear"):
        reader.read_resources([WORKSPACE], timeout_s=2)
    assert credential.asked == []


def test_a_kept_connection_the_server_closed_is_read_again_on_a_new_one() -> None:
    # A server whose keep-alive ends as the connection is reused: it answers a connection's first request,
    # then closes it on the next without a word (what tests/e2e/test_chatops.py met in CI as
    # "Remote end closed connection without response"). The read goes on over a new connection.
    import socket
    import socketserver

    connections: list[int] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            connections.append(1)
            self._head()
            data = json.dumps({"id": WORKSPACE, "name": "mlw-fraud-dev", "tags": {"team": "fraud-detection"}}).encode()
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)
            )
            self.wfile.flush()
            self._head()  # the next request on this connection: closed unanswered
            self.request.shutdown(socket.SHUT_RDWR)

        def _head(self) -> None:
            while self.rfile.readline() not in (b"\r\n", b""):
                pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        reader = ArmPreflight(CloudEndpoint(f"http://127.0.0.1:{server.server_address[1]}/"), Tokens("new"))
        for _ in range(3):
            found = reader.read_resources([WORKSPACE], timeout_s=5)
            assert found[WORKSPACE] is not None and found[WORKSPACE].tags == {"team": "fraud-detection"}
        assert len(connections) == 3  # each later read met a closed connection and went on over a new one
    finally:
        server.shutdown()
        server.server_close()
