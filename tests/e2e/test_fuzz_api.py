"""Fuzz the running devhost's API from its own OpenAPI document (schemathesis).

Every generated call (valid and invalid bodies, headers, query strings, paths) must get an answer
below 500, every error must be problem+json, and every documented answer must match its schema.
`VENDING_FUZZ_EXAMPLES` sets examples per operation (CI: 15).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from tests.e2e.conftest import Devhost, started_devhost

EXAMPLES = int(os.environ.get("VENDING_FUZZ_EXAMPLES", "15"))


@pytest.fixture(scope="module")
def fuzzed_devhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    # Chat secrets set, so unsigned calls to the chat endpoints are refused (401), not unconfigured (503).
    env = {
        "SLACK_SIGNING_SECRET": "fuzz-signing-secret-0123",
        "TEAMS_OUTGOING_WEBHOOK_SECRET": "ZnV6ei10ZWFtcy1zZWNyZXQ=",
        # The Teams bot too; its keys are looked for on loopback only (nothing listens there: no key, no entry).
        "TEAMS_BOT_APP_ID": "0d4c7e2b-93a1-4f58-b6e2-71c9a0d3f5e5",
        "TEAMS_BOT_APP_PASSWORD": "fuzz-bot-password",
        "TEAMS_BOT_OPENID_URL": "http://127.0.0.1:9/.well-known/openidconfiguration",
    }
    with started_devhost(tmp_path_factory.mktemp("fuzz"), **env) as host:
        yield host


@pytest.fixture(scope="module")
def api_schema(fuzzed_devhost: Devhost) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed_devhost.url}/api/openapi.json")


def test_no_server_errors_and_every_error_is_problem_json(api_schema: Any) -> None:
    # schemathesis' own pytest plugin does not run under this pytest version; its strategies do.
    failures: list[str] = []
    calls: list[int] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8, "the OpenAPI document lists the API's operations"
    for operation in operations:

        @hypothesis_settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call(timeout=30)
            calls.append(response.status_code)
            where = f"{case.method} {case.formatted_path}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
            if response.status_code >= 400:
                content_type = response.headers.get("content-type", "")
                content_type = content_type[0] if isinstance(content_type, list) else content_type
                assert content_type.startswith("application/problem+json"), f"{where}: {content_type}"
                body = response.json()
                assert body["status"] == response.status_code and body["title"], where

        try:
            check()
        except AssertionError as exc:
            failures.append(str(exc)[:600])
    assert failures == []
    assert len(calls) >= len(operations) * min(EXAMPLES, 5), len(calls)  # it did call the API
    assert any(status >= 400 for status in calls) and any(status < 300 for status in calls)
