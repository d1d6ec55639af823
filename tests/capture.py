"""A local HTTP endpoint that records what is posted to it (callbacks, webhooks), on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Capture:
    """Records requests; answers with the queued statuses first, then 200."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        self.url = ""
        self.reply = b""  # the body of every answer (the Slack Web API wants {"ok": true})

    def bodies(self, path_prefix: str = "") -> list[Any]:
        """The JSON (or form) bodies received on paths starting with `path_prefix`."""
        with self.lock:
            return [r["json"] for r in self.received if r["path"].startswith(path_prefix)]

    def answer(self) -> int:
        with self.lock:
            return self.statuses.pop(0) if self.statuses else 200


def _decode(body: bytes, content_type: str) -> Any:
    if not body:
        return None
    if "application/x-www-form-urlencoded" in content_type:
        from urllib.parse import parse_qs

        return {k: v[0] for k, v in parse_qs(body.decode()).items()}
    return json.loads(body)


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve a request handler on a free loopback port while the block runs; yield the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def capture_server() -> Iterator[Capture]:
    cap = Capture()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length)
            status = cap.answer()
            with cap.lock:
                cap.received.append(
                    {
                        "path": self.path,
                        "status": status,
                        "headers": dict(self.headers),
                        "json": _decode(body, self.headers.get("content-type", "")),
                    }
                )
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(cap.reply)))
            self.end_headers()
            self.wfile.write(cap.reply)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as url:
        cap.url = url
        yield cap
