"""The Membership port over Microsoft Graph, against a loopback Graph that answers as the docs show.

Shapes from "directoryObject: checkMemberGroups" (microsoftgraph/microsoft-graph-docs-contrib,
api-reference/v1.0/api/directoryobject-checkmembergroups.md): POST {"groupIds": [...]} (at most 20),
200 {"@odata.context": ".../$metadata#Collection(Edm.String)", "value": [...]}.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from adapters.graph import GRAPH_SCOPE, GraphMembership
from engine.confinement import Rule, refusals
from engine.policy import resolve
from models.errors import PermanentError, TransientError
from models.request import parse_request
from tests.capture import serving
from tests.conftest import shipped_policy

USER = "4562bcc8-c436-4f95-b7c0-4f8ce89dca5e"
FRAUD = "3a8e5c1f-2d47-4b96-8e0a-6f1c2d3b4a51"


@dataclass
class FakeGraph:
    """Transitive memberships by object id; answers queued statuses first."""

    members: dict[str, set[str]] = field(default_factory=dict)
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class FakeCredential:
    scopes: list[str] = field(default_factory=list)
    fail: bool = False

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        if self.fail:
            raise ClientAuthenticationError("no identity here")
        return AccessToken("graph-token", int(time.time()) + 3600)


@pytest.fixture
def graph() -> Iterator[tuple[FakeGraph, str]]:
    fake = FakeGraph()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            parts = self.path.split("/")  # /v1.0/directoryObjects/{id}/checkMemberGroups
            with fake.lock:
                fake.calls.append({"path": self.path, "auth": self.headers.get("authorization"), "body": body})
                queued = fake.answers.pop(0) if fake.answers else None
            time.sleep(fake.delay_s)
            if queued is not None:
                status, headers = queued
                payload: dict[str, Any] = {"error": {"code": "Oops", "message": "queued answer"}}
            elif parts[1:3] != ["v1.0", "directoryObjects"] or parts[4:] != ["checkMemberGroups"]:
                status, headers, payload = 400, {}, {"error": {"code": "BadRequest", "message": self.path}}
            elif len(body.get("groupIds", [])) > 20:
                status, headers = 400, {}
                payload = {"error": {"code": "Request_BadRequest", "message": "too many groupIds"}}
            elif parts[3] not in fake.members:
                status, headers = 404, {}
                payload = {"error": {"code": "Request_ResourceNotFound", "message": f"'{parts[3]}' does not exist."}}
            else:
                status, headers = 200, {}
                payload = {
                    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(Edm.String)",
                    "value": [g for g in body["groupIds"] if g in fake.members[parts[3]]],
                }
            data = json.dumps(payload).encode()
            self.send_response(status)
            for k, v in {"content-type": "application/json", **headers}.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as url:
        yield fake, f"{url}/v1.0"


def _groups(n: int) -> list[str]:
    return [f"00000000-0000-4000-8000-{i:012d}" for i in range(n)]


def test_membership_is_asked_twenty_groups_at_a_time(graph: tuple[FakeGraph, str]) -> None:
    fake, url = graph
    groups = _groups(45)
    fake.members[USER] = {groups[3], groups[21], groups[44]}
    credential = FakeCredential()
    membership = GraphMembership(credential=credential, base_url=url)
    assert membership.member_groups(principal=USER.upper(), groups=[*groups, groups[3]]) == {
        groups[3],
        groups[21],
        groups[44],
    }
    assert [len(c["body"]["groupIds"]) for c in fake.calls] == [20, 20, 5]
    assert {c["path"] for c in fake.calls} == {f"/v1.0/directoryObjects/{USER}/checkMemberGroups"}
    assert {c["auth"] for c in fake.calls} == {"Bearer graph-token"}
    assert set(credential.scopes) == {GRAPH_SCOPE}


def test_an_unknown_object_belongs_to_nothing_and_no_id_is_asked_about(graph: tuple[FakeGraph, str]) -> None:
    fake, url = graph
    membership = GraphMembership(credential=FakeCredential(), base_url=url)
    assert membership.member_groups(principal=USER, groups=[FRAUD]) == frozenset()  # 404 from Graph
    assert membership.member_groups(principal="../users", groups=[FRAUD]) == frozenset()
    assert membership.member_groups(principal=USER, groups=[]) == frozenset()
    assert len(fake.calls) == 1


def test_graph_errors_are_transient_or_permanent(graph: tuple[FakeGraph, str]) -> None:
    fake, url = graph
    fake.members[USER] = {FRAUD}
    membership = GraphMembership(credential=FakeCredential(), base_url=url, timeout_s=0.5)
    fake.answers = [(429, {"Retry-After": "7"})]
    with pytest.raises(TransientError) as info:
        membership.member_groups(principal=USER, groups=[FRAUD])
    assert info.value.retry_after_s == 7 and info.value.code == "GraphUnavailable"
    fake.answers = [(503, {})]
    with pytest.raises(TransientError):
        membership.member_groups(principal=USER, groups=[FRAUD])
    fake.answers = [(403, {})]
    with pytest.raises(PermanentError) as refused:
        membership.member_groups(principal=USER, groups=[FRAUD])
    assert refused.value.code == "GraphForbidden" and "GroupMember.Read.All" in str(refused.value)
    fake.answers = [(400, {})]
    with pytest.raises(PermanentError, match="refused a group membership check with 400"):
        membership.member_groups(principal=USER, groups=[FRAUD])
    fake.delay_s = 1.5
    with pytest.raises(TransientError, match="did not answer"):
        membership.member_groups(principal=USER, groups=[FRAUD])
    fake.delay_s = 0
    assert membership.member_groups(principal=USER, groups=[FRAUD]) == {FRAUD}


def test_a_credential_that_cannot_sign_in_is_permanent(graph: tuple[FakeGraph, str]) -> None:
    _, url = graph
    membership = GraphMembership(credential=FakeCredential(fail=True), base_url=url)
    with pytest.raises(PermanentError, match="could not get a Microsoft Graph token"):
        membership.member_groups(principal=USER, groups=[FRAUD])


def test_the_token_goes_only_to_https_or_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        GraphMembership(credential=FakeCredential(), base_url="http://graph.example.com/v1.0")


def test_confinement_asks_graph_about_role_targets(graph: tuple[FakeGraph, str]) -> None:
    fake, url = graph
    fake.members[USER] = {FRAUD}
    stranger = "5b7e9a1c-3f6b-4cad-8e5a-7c9e1b3d5f05"
    fake.members[stranger] = set()
    policy = shipped_policy()
    body = {
        "team": "fraud-detection",
        "environment": "dev",
        "region": "westeurope",
        "members": [{"object_id": USER, "type": "User"}, {"object_id": stranger, "type": "User"}],
        "tags": {"cost-center": "CC-1"},
    }
    req = resolve(parse_request(body), policy)

    class NoHistory:
        def workspace_owner(self, workspace_key: str) -> str | None:
            return None

    found = refusals(
        request=req,
        policy=policy,
        membership=GraphMembership(credential=FakeCredential(), base_url=url),
        history=NoHistory(),
    )
    assert [(r.rule, r.field) for r in found] == [(Rule.PRINCIPAL_NOT_TEAM_MEMBER, "members[1]")]
