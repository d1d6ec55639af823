"""The CLI's login, whoami, --as and logout against a served local issuer and an API that authenticates its callers."""

from __future__ import annotations

import io
import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from adapters.auth import Authenticator
from cli.commands import LOGIN_FILE, CliError, _check, main
from devhost.identity import LocalIssuer, load_directory
from handlers.api import problem
from handlers.identity import CurrentCaller, add_authentication, add_identity_routes
from models.identity import DEFAULT_DIRECTORY, AuthSettings
from tests.conftest import ROOT, served
from tests.tokens import LateApp

USERS = load_directory(DEFAULT_DIRECTORY).users


@dataclass
class Service:
    """The local issuer and a small API on one port, as the devhost serves them; it notes who called."""

    url: str
    seen: list[str] = field(default_factory=list)  # the oid of each authenticated API caller
    headers: list[dict[str, str]] = field(default_factory=list)  # every request's headers


def build(service: Service, issuer: LocalIssuer) -> FastAPI:
    app = FastAPI()
    add_identity_routes(app, issuer)
    authenticator = Authenticator(issuer.validation_settings(AuthSettings(website_site_name=None)))
    add_authentication(app, lambda: authenticator, problem)

    @app.middleware("http")
    async def note(request: Request, call_next: Any) -> Any:
        service.headers.append(dict(request.headers))
        return await call_next(request)

    @app.get("/api/workspaces")
    def list_requests(caller: CurrentCaller) -> object:
        service.seen.append(caller.oid)
        item = {"id": "01J9ZZ", "status": "succeeded", "team": "fraud-detection", "environment": "dev"}
        return {"items": [{**item, "workspace_name": f"ws-of-{caller.oid}"}], "next": None}

    @app.post("/api/workspaces", status_code=202)
    def submit(caller: CurrentCaller) -> object:
        service.seen.append(caller.oid)
        return {"id": "01J9ZZ", "links": {"self": "/api/workspaces/01J9ZZ"}}

    @app.get("/api/health")
    def health() -> object:
        return {"status": "ok"}

    return app


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    monkeypatch.setenv("VENDING_DATA_DIR", str(tmp_path / "cli-data"))
    late = LateApp()
    with served(late) as url:
        service = Service(url=url)
        late.app = build(service, LocalIssuer.open(directory_file=DEFAULT_DIRECTORY, data_dir=tmp_path, base_url=url))
        yield service


def cli(service: Service, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["--url", service.url, *args], out=out)
    return code, out.getvalue()


def token_path(tmp_path: Path) -> Path:
    return tmp_path / "cli-data" / LOGIN_FILE


def test_login_remembers_a_token_in_a_0600_file_with_its_expiry(service: Service, tmp_path: Path) -> None:
    code, out = cli(service, "login", "alice")

    assert code == 0, out
    assert "logged in as alice (Alice Fraser)" in out
    path = token_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["username"] == "alice"
    assert saved["service_url"] == service.url
    expires = datetime.fromisoformat(saved["expires_at"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    assert saved["access_token"] not in out


def test_whoami_shows_the_remembered_user(service: Service) -> None:
    cli(service, "login", "alice")

    code, out = cli(service, "whoami")

    assert code == 0
    assert out.startswith("alice  Alice Fraser <alice@vending.example>")
    assert USERS["alice"].object_id in out
    assert "Workspaces.Request" in out


def test_every_api_call_sends_the_remembered_token(service: Service) -> None:
    cli(service, "login", "alice")

    code, out = cli(service, "list")
    assert code == 0, out
    assert f"ws-of-{USERS['alice'].object_id}" in out

    code, out = cli(service, "submit", str(ROOT / "examples" / "cpu-small.json"), "--idempotency-key", "k-1")
    assert code == 0, out
    assert service.headers[-1]["idempotency-key"] == "k-1"  # the command's own headers are kept
    assert service.seen == [USERS["alice"].object_id, USERS["alice"].object_id]


def test_as_calls_as_another_user_for_one_command_only(service: Service, tmp_path: Path) -> None:
    cli(service, "login", "alice")
    before = token_path(tmp_path).read_text()

    code, out = cli(service, "--as", "bob", "list")
    assert code == 0, out
    code, whoami = cli(service, "--as", "olivia", "whoami")
    assert code == 0
    cli(service, "list")

    assert service.seen == [USERS["bob"].object_id, USERS["alice"].object_id]
    assert "Vending.Operator" in whoami
    assert "not remembered" in whoami
    assert token_path(tmp_path).read_text() == before


def test_an_expired_token_is_not_sent(service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli(service, "login", "alice")
    path = token_path(tmp_path)
    saved = json.loads(path.read_text())
    saved["expires_at"] = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    path.write_text(json.dumps(saved))

    code, _ = cli(service, "list")

    assert code == 1
    assert service.seen == []
    assert "authorization" not in service.headers[-1]
    assert "python -m cli login" in capsys.readouterr().err
    code, out = cli(service, "whoami")
    assert code == 1
    assert "expired" in out


def test_a_token_is_sent_only_to_the_service_it_came_from(service: Service, tmp_path: Path) -> None:
    cli(service, "login", "alice")
    path = token_path(tmp_path)
    saved = json.loads(path.read_text())
    saved["service_url"] = "https://vending.example.net"
    path.write_text(json.dumps(saved))

    cli(service, "list")

    assert "authorization" not in service.headers[-1]


def test_logout_forgets_the_token(service: Service, tmp_path: Path) -> None:
    cli(service, "login", "alice")

    code, out = cli(service, "logout")
    assert code == 0
    assert out == "logged out alice\n"
    assert not token_path(tmp_path).exists()

    code, out = cli(service, "whoami")
    assert code == 1
    assert out.startswith("not logged in")


def test_login_as_a_user_the_directory_does_not_know_fails_clearly(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = cli(service, "login", "zed")

    assert code == 1
    assert "no user 'zed' in the local directory" in capsys.readouterr().err
    assert not token_path(tmp_path).exists()


def test_the_api_answers_401_problem_json_with_www_authenticate(service: Service) -> None:
    anonymous = httpx.get(f"{service.url}/api/workspaces")
    forged = httpx.get(f"{service.url}/api/workspaces", headers={"Authorization": "Bearer a.b.c"})
    open_route = httpx.get(f"{service.url}/api/health")

    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="workspace-vending"'
    assert anonymous.json()["title"] == "Sign in first"
    assert forged.status_code == 401
    assert 'error="invalid_token"' in forged.headers["www-authenticate"]
    assert open_route.status_code == 200
    assert service.seen == []


def test_login_to_a_service_without_a_local_issuer_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VENDING_DATA_DIR", str(tmp_path))
    with served(FastAPI()) as url:
        code = main(["--url", url, "login", "alice"], out=io.StringIO())

    assert code == 1
    assert "no local sign-in" in capsys.readouterr().err


def test_a_401_that_does_not_say_how_to_sign_in_gets_the_cli_s_hint() -> None:
    # App Service Authentication answers anonymous callers with its own plain 401.
    with pytest.raises(CliError) as caught:
        _check(httpx.Response(401, text="You do not have permission to view this directory or page."))

    assert "python -m cli login <user>" in str(caught.value)
