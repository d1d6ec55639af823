"""Callback delivery against real receivers on loopback: the checked address is the one connected to, TLS is
verified for the name, redirects are not followed, and a receiver's answer is read only up to the cap."""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import trustme

from adapters.webhook import HttpNotifier
from models.errors import PermanentError, TransientError
from tests.capture import capture_server
from tests.conftest import shipped_policy
from tests.loopback import loopback_callbacks

POLICY = loopback_callbacks(shipped_policy())
NAME = "hooks.callbacks.test"  # .test never resolves (RFC 6761): only the notifier's resolver knows it


class Resolver:
    """A resolver that answers from a table and counts its lookups; the second answer may differ (rebinding)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_the_post_goes_to_the_address_that_was_checked_with_the_name_in_the_host_header() -> None:
    resolver = Resolver(["127.0.0.1"], ["10.0.0.1"])  # a second lookup would be refused: there is none
    notifier = HttpNotifier(signing_secret=b"k", timeout_s=5, policy=lambda: POLICY, resolve=resolver)
    with capture_server() as cap:
        port = int(cap.url.rsplit(":", 1)[1])
        notifier.post(f"http://{NAME}:{port}/hooks/ws", {"a": 1}, "r:succeeded")
        [call] = cap.received
    assert resolver.asked == [(NAME, port)]  # resolved once, by the guard; httpx never looked the name up
    assert call["headers"]["Host"] == f"{NAME}:{port}" and call["path"] == "/hooks/ws"
    with pytest.raises(PermanentError, match=r"10\.0\.0\.1 is a private address"):
        notifier.post(f"http://{NAME}:{port}/hooks/ws", {"a": 1})  # the next delivery resolves, and checks, anew


def test_an_address_that_refuses_connections_is_passed_over_for_the_next_checked_one() -> None:
    with capture_server() as cap:
        port = int(cap.url.rsplit(":", 1)[1])
        notifier = HttpNotifier(
            signing_secret=b"k", timeout_s=5, policy=lambda: POLICY, resolve=Resolver(["::1", "127.0.0.1"])
        )
        notifier.post(f"http://{NAME}:{port}/x", {"a": 1})  # nothing listens on [::1]:port
        assert len(cap.received) == 1


@contextmanager
def tls_receiver(ca: trustme.CA, name: str) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """An HTTPS receiver on 127.0.0.1 whose certificate is for `name` only; yield its port and what it received."""
    received: list[dict[str, Any]] = []
    server_names: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            received.append({"host": self.headers["Host"], "sni": server_names[-1] if server_names else None})
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    context.sni_callback = lambda _socket, server_name, _context: server_names.append(server_name)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


def test_tls_names_the_host_and_verifies_its_certificate_for_the_name_not_the_address() -> None:
    ca = trustme.CA()
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    client = httpx.Client(verify=trust, timeout=5, trust_env=False)
    notifier = HttpNotifier(signing_secret=b"k", policy=lambda: POLICY, client=client, resolve=Resolver(["127.0.0.1"]))
    with tls_receiver(ca, NAME) as (port, received):
        notifier.post(f"https://{NAME}:{port}/x", {"a": 1})
        assert received == [{"host": f"{NAME}:{port}", "sni": NAME}]
    with tls_receiver(ca, "someone-else.callbacks.test") as (port, received):
        with pytest.raises(TransientError, match="ConnectError"):
            notifier.post(f"https://{NAME}:{port}/x", {"a": 1})  # a certificate for another name: refused
        assert received == []


@contextmanager
def answering(write_body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Iterator[str]:
    """A receiver whose answer body `write_body(wfile)` writes; yield its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            with contextlib.suppress(
                BrokenPipeError, ConnectionResetError
            ):  # the notifier stopped reading, as it should
                write_body(self.wfile)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_400_mib_answer_is_read_only_up_to_the_cap() -> None:
    sent = [0]
    chunk = b"x" * (1024 * 1024)

    def huge(out: Any) -> None:
        for _ in range(400):
            out.write(chunk)
            sent[0] += len(chunk)

    notifier = HttpNotifier(signing_secret=b"k", timeout_s=10, policy=lambda: POLICY)
    with answering(huge, headers={"Content-Length": str(400 * 1024 * 1024)}) as url:
        tracemalloc.start()
        try:
            notifier.post(url, {"a": 1})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"{peak} bytes held while delivering"
    assert sent[0] < 400 * 1024 * 1024  # the receiver could not hand it all over: nobody read it


def test_an_answer_dripped_byte_by_byte_ends_at_the_timeout_not_at_the_cap() -> None:
    stop = threading.Event()

    def drip(out: Any) -> None:
        while not stop.wait(0.1):
            out.write(b"x")
            out.flush()

    notifier = HttpNotifier(signing_secret=b"k", timeout_s=1, policy=lambda: POLICY)
    with answering(drip) as url:
        started = time.monotonic()
        notifier.post(url, {"a": 1})  # 200 came first: delivered, whatever follows
        took = time.monotonic() - started
        stop.set()
    assert took < 3, took


def test_a_redirect_is_refused_not_followed() -> None:
    notifier = HttpNotifier(signing_secret=b"k", timeout_s=5, policy=lambda: POLICY)
    with capture_server() as elsewhere:
        location = {"Location": f"{elsewhere.url}/x"}
        with answering(lambda out: None, status=307, headers=location) as url, pytest.raises(PermanentError) as info:
            notifier.post(url, {"a": 1})
        assert "answered 307; redirects are not followed" in str(info.value)
        assert elsewhere.received == []


def test_without_a_policy_the_notifier_keeps_to_https_and_public_addresses() -> None:
    with capture_server() as cap:
        with pytest.raises(PermanentError, match="must use https"):
            HttpNotifier(signing_secret=b"k").post(cap.url, {"a": 1})
        with pytest.raises(PermanentError, match=r"127\.0\.0\.1 is a loopback address"):
            HttpNotifier(signing_secret=b"k").post(cap.url.replace("http://", "https://"), {"a": 1})
        assert cap.received == []
