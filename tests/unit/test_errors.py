"""The Azure error table: transient errors are retried (Retry-After honoured), permanent ones explained."""

from __future__ import annotations

import json

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError
from azure.core.pipeline.transport import HttpRequest, RequestsTransportResponse

from cloud.errors import classify, is_not_found, translate
from models.errors import PermanentError, TransientError


def _response(status: int, body: dict, headers: dict[str, str] | None = None) -> RequestsTransportResponse:
    """A real azure-core response around a real requests response, as ARM would send it (no network)."""
    raw = requests.Response()
    raw.status_code = status
    raw._content = json.dumps(body).encode()
    raw.headers.update({"content-type": "application/json", **(headers or {})})
    return RequestsTransportResponse(HttpRequest("PUT", "https://management.azure.com/x"), raw)


def _error(status: int, code: str, message: str = "m", headers: dict[str, str] | None = None) -> HttpResponseError:
    return HttpResponseError(response=_response(status, {"error": {"code": code, "message": message}}, headers))


def test_throttling_is_transient_and_honours_retry_after() -> None:
    err = translate(_error(429, "TooManyRequests", headers={"Retry-After": "17"}), what="creating x")
    assert isinstance(err, TransientError)
    assert err.retry_after_s == 17.0
    assert err.code == "TooManyRequests"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_transient(status: int) -> None:
    assert isinstance(translate(_error(status, "Whatever"), what="x"), TransientError)


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        ("QuotaExceeded", "raise the subscription's quota"),
        ("StorageAccountAlreadyTaken", "Storage account names are global"),
        ("VaultAlreadyExists", "soft-deleted"),
        ("AuthorizationFailed", "lacks permission"),
        ("RequestDisallowedByPolicy", "Azure Policy"),
        ("InvalidResourceName", "naming rules"),
        ("MissingSubscriptionRegistration", "register"),
        ("LinkedInvalidPropertyId", "linked resource id"),
    ],
)
def test_permanent_errors_say_what_to_do(code: str, advice: str) -> None:
    err = translate(_error(400 if code != "AuthorizationFailed" else 403, code, "Azure said no"), what="creating st1")
    assert isinstance(err, PermanentError)
    assert err.code == code
    assert "creating st1 failed" in str(err) and "Azure said no" in str(err) and advice in str(err)


def test_conflicts_and_propagation_delays_clear_by_themselves() -> None:
    assert isinstance(translate(_error(409, "AnotherOperationInProgress"), what="x"), TransientError)
    assert isinstance(translate(_error(400, "PrincipalNotFound"), what="x"), TransientError)
    assert isinstance(classify("OperationNotAllowed", "Operation could exceed quota", what="x"), PermanentError)


def test_network_failures_are_transient_and_404s_are_recognised() -> None:
    assert isinstance(translate(ServiceRequestError("connection refused"), what="x"), TransientError)
    assert is_not_found(ResourceNotFoundError("gone"))
    assert isinstance(translate(_error(400, "SomethingNew"), what="x"), PermanentError)
