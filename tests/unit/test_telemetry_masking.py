"""Credentials in URLs are masked in telemetry: the HTTP door's span, dependency spans and log records."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from adapters.telemetry import install_log_filters, redacting_span_processor
from models.redact import redact

FUNCTION_KEY = "FnKey0123456789abcdefSECRET=="
SIG = "SasSig0123SECRET%2Fabc"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"code={FUNCTION_KEY}", FUNCTION_KEY),
        (f"/api/chat/slack/commands?code={FUNCTION_KEY}", FUNCTION_KEY),
        (f"https://func-vending.azurewebsites.net/api/workspaces?team=a&code={FUNCTION_KEY}", FUNCTION_KEY),
        (f"GET /hook?sig={SIG}&se=2030 HTTP/1.1", SIG),
        ("https://r.example.com/cb?token=Tok3nSECRET&x=1", "Tok3nSECRET"),
        ("https://r.example.com/cb?key=K3ySECRET", "K3ySECRET"),
        ("?client_secret=CliSECRET&access_token=AccSECRET", "CliSECRET"),
        ("?client_secret=CliSECRET&access_token=AccSECRET", "AccSECRET"),
        ("https://login.example.com/cb?id_token=eyJhbGciOi.x.y", "eyJhbGciOi.x.y"),
    ],
)
def test_credentials_in_query_strings_are_masked(text: str, secret: str) -> None:
    assert secret not in redact(text)


def test_query_parameters_that_are_not_credentials_and_prose_are_left_alone() -> None:
    for text in ("team=churn&status=failed", "(Code: QuotaExceeded) the quota", "statuscode=429", "?keys=2"):
        assert redact(text) == text


def test_the_http_doors_span_and_a_dependency_span_export_no_function_key_or_signature() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(redacting_span_processor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    # The attributes FastAPI's server span starts with (it masks only `sig` itself), and an httpx client span's.
    with (
        tracer.start_as_current_span(
            "POST /api/chat/slack/commands",
            kind=SpanKind.SERVER,
            attributes={
                "url.path": "/api/chat/slack/commands",
                "url.query": f"code={FUNCTION_KEY}&sig=REDACTED",
                "http.target": f"/api/chat/slack/commands?code={FUNCTION_KEY}",
                "url.scheme": "https",
            },
        ),
        tracer.start_as_current_span(
            "POST",
            kind=SpanKind.CLIENT,
            attributes={
                "url.full": f"https://20.50.1.2/hook?sig={SIG}&code={FUNCTION_KEY}",
                "http.url": f"/x?token={SIG}",
            },
        ),
    ):
        pass
    exported = "\n".join(str(dict(span.attributes or {})) for span in exporter.get_finished_spans())
    assert FUNCTION_KEY not in exported and SIG not in exported
    assert "code=***" in exported and "url.path" in exported


def test_log_records_with_a_url_lose_its_credentials(caplog: pytest.LogCaptureFixture) -> None:
    install_log_filters(caplog.handler)
    logging.getLogger("uvicorn.access").warning(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST", f"/api/chat/teams/messages?code={FUNCTION_KEY}", "1.1", 200
    )
    assert FUNCTION_KEY not in caplog.text and "code=***" in caplog.text
