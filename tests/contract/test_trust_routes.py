"""Every REST route asks the one authorisation function: each refusal here fails if its check is removed."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from composition import Container
from handlers.api import create_api
from models.errors import PermanentError
from models.settings import Settings
from tests.callers import bearer
from tests.conftest import example, served
from tests.fakes import FakeCloud


@pytest.fixture
def api(settings: Settings) -> Iterator[tuple[Container, httpx.Client]]:
    container = Container(settings.model_copy(update={"max_body_bytes": 4096}), cloud=FakeCloud(), sinks=[])
    container.swap(preflight=None)
    with served(create_api(lambda: container)) as base, httpx.Client(base_url=base) as http:
        yield container, http


ROUTES = [
    ("POST", "/api/workspaces"),
    ("POST", "/api/plan"),
    ("GET", "/api/workspaces"),
    ("GET", "/api/workspaces/x"),
    ("GET", "/api/workspaces/x/events"),
    ("GET", "/api/me"),
    ("GET", "/api/operator/deadletters"),
    ("POST", "/api/operator/deadletters/x/replay"),
    ("POST", "/api/operator/deadletters/process"),
    ("POST", "/api/operator/sweep"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_but_health_refuses_a_caller_without_a_token(
    api: tuple[Container, httpx.Client], method: str, path: str
) -> None:
    _, http = api
    resp = http.request(method, path, json=example("cpu-small.json") if method == "POST" else None)
    assert resp.status_code == 401, resp.text
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert http.get("/api/health").status_code == 200


def test_a_team_member_asks_for_its_own_team_only_and_never_sees_another_teams_request(
    api: tuple[Container, httpx.Client],
) -> None:
    c, http = api
    alice, bob = bearer(c, "alice"), bearer(c, "bob")
    made = http.post("/api/workspaces", json=example("cpu-small.json"), headers=alice)
    assert made.status_code == 202, made.text
    rid = made.json()["id"]
    refused = http.post("/api/workspaces", json=example("cpu-small.json"), headers=bob)
    assert refused.status_code == 403 and refused.json()["rule"] == "NotTeamMember"
    assert http.post("/api/plan", json=example("cpu-small.json"), headers=bob).status_code == 403
    assert http.get(f"/api/workspaces/{rid}", headers=bob).status_code == 404
    assert http.get(f"/api/workspaces/{rid}/events", headers=bob).status_code == 404
    assert http.get("/api/workspaces", headers=bob).json()["items"] == []
    assert http.get("/api/workspaces", params={"team": "fraud-detection"}, headers=bob).json()["items"] == []
    assert http.get(f"/api/workspaces/{rid}", headers=alice).status_code == 200
    assert [r["id"] for r in http.get("/api/workspaces", headers=bearer(c, "platform")).json()["items"]] == [rid]
    assert made.json()["id"] and c.store.get_request(rid).requester == "1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01"


@pytest.mark.parametrize(("method", "path"), [r for r in ROUTES if r[1].startswith("/api/operator")])
def test_operator_routes_need_the_operator_role(api: tuple[Container, httpx.Client], method: str, path: str) -> None:
    c, http = api
    refused = http.request(method, path, headers=bearer(c, "alice"))
    assert refused.status_code == 403 and refused.json()["rule"] == "MissingRole"
    allowed = http.request(method, path, headers=bearer(c, "olivia"))
    assert allowed.status_code in (200, 404), allowed.text  # 404: no dead letter with that id


def test_a_body_over_the_limit_is_413_and_submissions_over_the_rate_are_429(
    api: tuple[Container, httpx.Client],
) -> None:
    c, http = api
    alice = bearer(c, "alice")
    big = http.post(
        "/api/workspaces", content=b"{" + b" " * 5000 + b"}", headers={**alice, "content-type": "application/json"}
    )
    assert big.status_code == 413
    c.swap(policy=c.policy)  # rebuild parts: the limit below is read when the allowance is built
    c.settings = c.settings.model_copy(update={"submissions_per_window": 1})
    c.swap(policy=c.policy)
    body = example("cpu-small.json")
    first = http.post("/api/workspaces", json=body | {"workspace_name": "mlw-rate-1"}, headers=alice)
    assert first.status_code == 202, first.text
    second = http.post("/api/workspaces", json=body | {"workspace_name": "mlw-rate-2"}, headers=alice)
    assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
    assert second.json()["rule"] == "SubmissionRateLimit"


def test_plans_read_arm_and_are_limited_per_principal_apart_from_submissions(
    api: tuple[Container, httpx.Client],
) -> None:
    c, http = api
    c.settings = c.settings.model_copy(update={"plans_per_window": 2})
    c.swap(policy=c.policy)  # rebuild parts: the allowance reads the setting when it is built
    alice, bob = bearer(c, "alice"), bearer(c, "bob")
    body = example("cpu-small.json")
    assert [http.post("/api/plan", json=body, headers=alice).status_code for _ in range(2)] == [200, 200]
    third = http.post("/api/plan", json=body, headers=alice)
    assert third.status_code == 429 and third.json()["title"] == "Too many plans", third.text
    assert int(third.headers["retry-after"]) >= 1
    # Another principal has an allowance of its own, and submitting is not planning.
    churn = example("onboarding.json") | {"environment": "dev"}
    churn.pop("environments", None)
    churn.pop("kind", None)
    churn.pop("cost_center", None)
    churn["tags"] = {"cost-center": "CC-3310"}
    assert http.post("/api/plan", json=churn, headers=bob).status_code == 200
    assert http.post("/api/workspaces", json=body, headers=alice).status_code == 202


class GraphWithoutPermissions:
    """Membership as Microsoft Graph answers an identity that was never granted its permissions."""

    def member_groups(self, *, principal: str, groups: list[str]) -> frozenset[str]:
        raise PermanentError("Microsoft Graph refused the service's identity (403)", code="GraphForbidden")


def test_membership_that_cannot_be_asked_is_a_503_never_an_assumption(settings: Settings) -> None:
    container = Container(settings, cloud=FakeCloud(), sinks=[], membership=GraphWithoutPermissions())
    container.swap(preflight=None)
    with served(create_api(lambda: container)) as base, httpx.Client(base_url=base) as http:
        # The example grants a role to a group nested in the team's: only the directory can say so.
        resp = http.post("/api/workspaces", json=example("cpu-small.json"), headers=bearer(container, "alice"))
        assert resp.status_code == 503, resp.text
        assert "GraphForbidden" in resp.json()["detail"] and "403" not in resp.json()["detail"]
        assert container.store.list_requests().items == []
