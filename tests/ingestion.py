"""A stand-in for the Application Insights ingestion endpoint (`POST /v2.1/track`), on loopback.

It keeps every envelope it is sent and answers as the service does, so the real Azure Monitor
exporters run unchanged against it (`IngestionEndpoint=http://127.0.0.1:PORT/` in the connection string).
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

from models.events import AUDIT_EVENTS
from tests.capture import serving

INSTRUMENTATION_KEY = "00000000-0000-0000-0000-00000000c0de"


class Ingestion:
    """The envelopes received, by kind."""

    def __init__(self) -> None:
        self.envelopes: list[dict[str, Any]] = []
        self.bodies: list[str] = []
        self.lock = threading.Lock()
        self.url = ""

    @property
    def connection_string(self) -> str:
        """A connection string that sends everything here."""
        return f"InstrumentationKey={INSTRUMENTATION_KEY};IngestionEndpoint={self.url}/"

    def of(self, base_type: str) -> list[dict[str, Any]]:
        """Envelopes of one kind: EventData, RequestData, RemoteDependencyData, MessageData, MetricData..."""
        with self.lock:
            return [e for e in self.envelopes if e.get("data", {}).get("baseType") == base_type]

    def events(self, *, audit: bool = False) -> list[dict[str, Any]]:
        """Custom events: each envelope's baseData plus its operation tags (status events; with `audit`, only audit ones).

        Audit events (every decision, every read included) reach Azure Monitor but not a request's
        timeline, so the two are compared without them.
        """
        names = {name.value for name in AUDIT_EVENTS}
        return [
            {**e["data"]["baseData"], "operation_id": e.get("tags", {}).get("ai.operation.id"), "time": e.get("time")}
            for e in self.of("EventData")
            if (e["data"]["baseData"].get("name") in names) == audit
        ]


@contextmanager
def ingestion_server() -> Iterator[Ingestion]:
    """Serve the stand-in on a free loopback port while the block runs."""
    sink = Ingestion()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            text = body.decode("utf-8")
            items = (
                json.loads(text) if text.strip().startswith("[") else [json.loads(line) for line in text.splitlines()]
            )
            with sink.lock:
                sink.bodies.append(text)
                sink.envelopes.extend(items)
            answer = json.dumps({"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as url:
        sink.url = url
        yield sink
