"""Masking secrets: the patterns, registered values, log records and the doors' trace context."""

from __future__ import annotations

import logging

import pytest

from adapters.telemetry import Telemetry, install_log_filters
from models.redact import MASK, redact, register

KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={KEY};EndpointSuffix=core.windows.net", KEY),
        ("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=x;SharedAccessKey=abcDEF123=", "abcDEF123="),
        ("GET https://a.blob.core.windows.net/c/b?sv=2024-01-01&se=2030&sig=AbC%2Fdef123 failed", "AbC%2Fdef123"),
        ("Authorization: Bearer eyJhbGciOi.payload.signature", "eyJhbGciOi.payload.signature"),
        ("token xoxb-1234-5678-abcdefgh was refused", "xoxb-1234-5678-abcdefgh"),
        ("post to https://hooks.slack.com/services/T000/B000/XXXXSECRET failed", "XXXXSECRET"),
        (
            "https://prod-12.westeurope.logic.azure.com:443/workflows/0a1b/triggers/manual/paths/invoke?sp=x&sig=s3cr3t",
            "0a1b/triggers",
        ),
        (f'{{"keys": [{{"keyName": "key1", "value": "{KEY}"}}]}}', KEY),
        ('{"primaryKey": "not-base64-but-secret"}', "not-base64-but-secret"),
        ("client_secret=hunter2hunter2&grant_type=client_credentials", "hunter2hunter2"),
    ],
)
def test_known_kinds_of_secret_are_masked(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked and MASK in masked


def test_plain_text_and_error_codes_are_left_alone() -> None:
    text = "(Code: StorageAccountAlreadyTaken) The storage account named stvision is already taken. error_code=X"
    assert redact(text) == text


def test_registered_values_are_masked_wherever_they_appear() -> None:
    register("https://receiver.example.com/hooks/abc123def456", "short")
    assert (
        redact("callback https://receiver.example.com/hooks/abc123def456 answered 500") == "callback *** answered 500"
    )
    assert redact("short words stay") == "short words stay"  # too short to be a secret worth masking


def test_log_records_are_masked_and_carry_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    install_log_filters(caplog.handler)
    logger = logging.getLogger("tests.redact")
    with Telemetry().span("step storage", request_id="01REQUEST"):
        logger.warning("connect with %s", f"AccountKey={KEY}")
        try:
            raise RuntimeError(f"boom AccountKey={KEY}")
        except RuntimeError:
            logger.exception("failed")
    logger.warning("outside")
    first, second, third = caplog.records
    assert KEY not in first.getMessage() and first.request_id == "01REQUEST"  # type: ignore[attr-defined]
    assert second.exc_text is not None and KEY not in second.exc_text
    assert not hasattr(third, "request_id")
    assert KEY not in caplog.text


def test_a_door_without_telemetry_continues_or_starts_a_trace() -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with Telemetry().span("onboarding message", parent=parent) as span:
        assert span.traceparent == parent
    with Telemetry().span("onboarding message") as span:
        assert span.traceparent.startswith("00-") and span.traceparent != parent


def test_entra_ingestion_is_asked_for_by_the_authentication_string() -> None:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    from adapters.telemetry import entra_credential

    assert entra_credential(None) is None and entra_credential("Authorization=Key") is None
    assert isinstance(
        entra_credential("ClientId=0c9a3f5e-2b1d-4e6f-8a7b-9c0d1e2f3a4b;Authorization=AAD"), ManagedIdentityCredential
    )
    assert isinstance(entra_credential("Authorization=AAD"), DefaultAzureCredential)
