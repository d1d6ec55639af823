"""What the portal's form is built from: the caller's choices, the as-you-type check, and the review's findings."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from composition import Container
from handlers.api import create_api
from models.settings import Settings
from tests.callers import bearer
from tests.conftest import example, served
from tests.fakes import FakeCloud


@pytest.fixture
def api(settings: Settings) -> Iterator[tuple[Container, httpx.Client]]:
    container = Container(settings, cloud=FakeCloud(), sinks=[])
    container.swap(preflight=None)
    with served(create_api(lambda: container)) as base, httpx.Client(base_url=base, timeout=30) as http:
        yield container, http


def test_choices_are_the_callers_own(api: tuple[Container, httpx.Client]) -> None:
    c, http = api
    alice = http.get("/api/choices", headers=bearer(c, "alice")).json()
    assert alice["teams"] == ["fraud-detection"]
    assert set(alice["environments"]) == {"dev", "test", "prod"}
    gpu = next(v for v in alice["vm_sizes"] if v["name"] == "Standard_NC6s_v3")
    assert (gpu["vcpus"], gpu["gpus"], gpu["hourly"]) == (6, 1, 3.06)
    assert "cpu-small" in [p["name"] for p in alice["profiles"]]
    assert http.get("/api/choices", headers=bearer(c, "bob")).json()["teams"] == ["churn"]
    assert http.get("/api/choices").status_code == 401


def test_validate_reports_every_problem_by_field_and_keeps_nothing(api: tuple[Container, httpx.Client]) -> None:
    c, http = api
    bad = example("cpu-small.json") | {"region": "mars", "environment": "qa"}
    found = http.post("/api/validate", json=bad, headers=bearer(c, "alice")).json()
    assert found["valid"] is False
    assert {"environment"} <= {p["field"] for p in found["problems"]}
    policy = example("cpu-small.json") | {"region": "mars"}
    found = http.post("/api/validate", json=policy, headers=bearer(c, "alice")).json()
    assert [p["field"] for p in found["problems"]] == ["region"]
    other = http.post("/api/validate", json=example("cpu-small.json"), headers=bearer(c, "bob")).json()
    assert [(p["field"], p["code"]) for p in other["problems"]] == [("team", "NotTeamMember")]
    ok = http.post("/api/validate", json=example("cpu-small.json"), headers=bearer(c, "alice")).json()
    assert (ok["valid"], ok["problems"], ok["approval"]) == (True, [], [])
    assert ok["estimate"]["monthly_max"] > 0
    assert c.store.list_requests(limit=5).items == []


def test_the_plan_shows_preflight_findings(settings: Settings) -> None:
    from engine.ports import PreflightReport
    from models.errors import Problem

    class Finds:
        def check(self, **_: object) -> PreflightReport:
            return PreflightReport(problems=[Problem("workspace_name", "the name is taken in Azure", "NameTaken")])

    container = Container(settings, cloud=FakeCloud(), sinks=[])
    container.swap(preflight=Finds())
    with served(create_api(lambda: container)) as base, httpx.Client(base_url=base, timeout=30) as http:
        plan = http.post("/api/plan", json=example("cpu-small.json"), headers=bearer(container, "alice")).json()
    assert [(p["field"], p["code"]) for p in plan["preflight"]] == [("workspace_name", "NameTaken")]
