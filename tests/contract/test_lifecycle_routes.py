"""The lifecycle routes over HTTP: each asks the one authorisation function, answers problem+json, and is idempotent.

Each refusal here fails if its check is removed: another team's member gets 404 (the request is not
shown to exist), a reader of every team without the request role gets 403, no token gets 401.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from composition import Container
from handlers.api import create_api
from models.records import RequestStatus
from models.settings import Settings
from tests.callers import bearer
from tests.conftest import example, poll, running_steps, served
from tests.fakes import FakeCloud


@pytest.fixture
def api(settings: Settings) -> Iterator[tuple[Container, httpx.Client]]:
    container = Container(settings, cloud=FakeCloud(), sinks=[])
    container.swap(preflight=None)
    with (
        running_steps(container),
        served(create_api(lambda: container)) as base,
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        yield container, http


def _made(c: Container, http: httpx.Client) -> str:
    made = http.post("/api/workspaces", json=example("cpu-small.json"), headers=bearer(c, "alice"))
    assert made.status_code == 202, made.text
    rid: str = made.json()["id"]
    _settle(http, c, rid)
    return rid


def _settle(http: httpx.Client, c: Container, rid: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        view: dict[str, Any] = http.get(f"/api/workspaces/{rid}", headers=bearer(c, "alice")).json()
        return view if RequestStatus(view["status"]).terminal else None

    found: dict[str, Any] = poll(done, what="the request to settle")
    return found


def _routes(rid: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("PATCH", f"/api/workspaces/{rid}", {"tags": {"project": "x"}}),
        ("POST", f"/api/workspaces/{rid}/plan", {"tags": {"project": "x"}}),
        ("POST", f"/api/workspaces/{rid}/cancel", None),
        ("POST", f"/api/workspaces/{rid}/retry", None),
        ("DELETE", f"/api/workspaces/{rid}", None),
        ("POST", f"/api/workspaces/{rid}/extend", {"days": 5}),
        ("POST", f"/api/workspaces/{rid}/drift", None),
    ]


def test_each_lifecycle_route_refuses_callers_who_may_not_change_the_request(
    api: tuple[Container, httpx.Client],
) -> None:
    c, http = api
    rid = _made(c, http)
    before = c.store.get_request(rid)
    for method, path, body in _routes(rid):
        anonymous = http.request(method, path, json=body)
        assert anonymous.status_code == 401, (method, path)
        other_team = http.request(method, path, json=body, headers=bearer(c, "bob"))
        assert other_team.status_code == 404, (method, path, other_team.text)
        assert other_team.headers["content-type"].startswith("application/problem+json")
        reader = http.request(method, path, json=body, headers=bearer(c, "platform"))
        assert reader.status_code == 403, (method, path, reader.text)
        assert reader.json()["rule"] == "MissingRole"
    for path in (f"/api/workspaces/{rid}/revisions", f"/api/workspaces/{rid}/drift"):
        assert http.get(path, headers=bearer(c, "bob")).status_code == 404
        assert http.get(path, headers=bearer(c, "platform")).status_code == 200  # reading is allowed
    assert c.store.get_request(rid) == before  # nothing changed


def test_patch_plans_applies_lists_revisions_and_is_idempotent(api: tuple[Container, httpx.Client]) -> None:
    c, http = api
    alice = bearer(c, "alice")
    rid = _made(c, http)
    view = http.get(f"/api/workspaces/{rid}", headers=alice).json()
    compute = [*view["request"]["compute"], {"name": "extra", "vm_size": "Standard_DS3_v2", "max_nodes": 2}]
    patch = {"compute": compute, "tags": {**view["request"]["tags"], "project": "fraud"}}
    planned = http.post(f"/api/workspaces/{rid}/plan", json=patch, headers=alice)
    assert planned.status_code == 200, planned.text
    changes = {c["step_id"]: c["change"] for c in planned.json()["changes"]}
    assert changes["compute:extra"] == "create" and changes["storage"] == "update"
    headers = {**alice, "content-type": "application/merge-patch+json"}
    applied = http.patch(f"/api/workspaces/{rid}", content=_json(patch), headers=headers)
    assert applied.status_code == 202, applied.text
    assert applied.json()["revision"] == 2 and applied.json()["started"] is True
    after = _settle(http, c, rid)
    assert after["status"] == "succeeded" and after["revision"] == 2
    assert "compute:extra" in {s["id"] for s in after["steps"]}
    again = http.patch(f"/api/workspaces/{rid}", content=_json(patch), headers=headers)
    assert again.status_code == 200 and again.json()["started"] is False
    revisions = http.get(f"/api/workspaces/{rid}/revisions", headers=alice).json()["items"]
    assert [(r["number"], r["status"]) for r in revisions] == [(1, "applied"), (2, "applied")]

    bad = http.patch(f"/api/workspaces/{rid}", json={"region": "northeurope"}, headers=alice)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "region"
    assert bad.json()["errors"][0]["code"] == "ImmutableField"


def test_delete_tears_down_and_repeats_as_the_same_teardown(api: tuple[Container, httpx.Client]) -> None:
    c, http = api
    alice = bearer(c, "alice")
    rid = _made(c, http)
    gone = http.delete(f"/api/workspaces/{rid}", headers=alice)
    assert gone.status_code == 202, gone.text
    after = _settle(http, c, rid)
    assert after["status"] == "deleted" and after["teardown"]["soft_deleted"]
    again = http.delete(f"/api/workspaces/{rid}", headers=alice)
    assert again.status_code == 200 and again.json()["started"] is False
    refused = http.post(f"/api/workspaces/{rid}/cancel", headers=alice)
    assert refused.status_code == 409 and refused.headers["content-type"].startswith("application/problem+json")


def test_extend_stays_within_policy(api: tuple[Container, httpx.Client]) -> None:
    c, http = api
    alice = bearer(c, "alice")
    rid = _made(c, http)
    ok = http.post(f"/api/workspaces/{rid}/extend", json={"days": 5}, headers=alice)
    assert ok.status_code == 200 and ok.json()["expires_at"]
    both = http.post(
        f"/api/workspaces/{rid}/extend", json={"days": 5, "expires_at": ok.json()["expires_at"]}, headers=alice
    )
    assert both.status_code == 422
    past = http.post(f"/api/workspaces/{rid}/extend", json={"expires_at": "2020-01-01T00:00:00Z"}, headers=alice)
    assert past.status_code == 422 and past.json()["errors"][0]["field"] == "expires_at"


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()
