"""The devhost's embedded issuer served on loopback, its tokens validated by the same authenticator as Entra's."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from fastapi import FastAPI

from adapters.auth import Authenticator
from devhost.identity import KEY_FILE, LocalIdentityError, LocalIssuer, load_directory, load_or_create_key
from handlers.identity import add_identity_routes
from models.identity import DEFAULT_DIRECTORY, AuthenticationError, AuthSettings, Caller
from tests.conftest import served
from tests.tokens import LateApp

DIRECTORY = load_directory(DEFAULT_DIRECTORY)
TENANT = DIRECTORY.tenant_id
GROUPS = DIRECTORY.groups


@dataclass
class Served:
    url: str
    issuer: LocalIssuer
    http: httpx.Client

    def token(self, user: str) -> str:
        resp = self.http.post("/identity/token", data={"grant_type": "password", "username": user})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["access_token"])

    def authenticator(self) -> Authenticator:
        return Authenticator(self.issuer.validation_settings(AuthSettings(website_site_name=None)))


@contextmanager
def serve(data_dir: Path) -> Iterator[Served]:
    late = LateApp()
    with served(late) as url:
        issuer = LocalIssuer.open(directory_file=DEFAULT_DIRECTORY, data_dir=data_dir, base_url=url)
        app = FastAPI()
        add_identity_routes(app, issuer)
        late.app = app
        with httpx.Client(base_url=url, timeout=10) as http:
            yield Served(url=url, issuer=issuer, http=http)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path) as served_issuer:
        yield served_issuer


def caller_of(local: Served, user: str) -> Caller:
    return local.authenticator().authenticate({"Authorization": f"Bearer {local.token(user)}"})


def test_a_local_token_gives_alice_with_her_oid_roles_and_groups(local: Served) -> None:
    caller = caller_of(local, "alice")

    assert caller.oid == "1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01"
    assert caller.tid == TENANT
    assert caller.name == "Alice Fraser"
    assert caller.username == "alice@vending.example"
    assert caller.roles == {"Workspaces.Request"}
    assert caller.groups == {GROUPS["fraud-detection"]}
    assert caller.auth == "local"


@pytest.mark.parametrize(
    ("user", "roles", "groups"),
    [
        ("bob", {"Workspaces.Request"}, {"churn"}),
        ("olivia", {"Vending.Operator"}, {"vending-operators"}),
        ("platform", {"Workspaces.ReadAll"}, {"platform"}),
        ("admin", {"Vending.Admin"}, set()),
    ],
)
def test_every_example_user_has_the_documented_roles_and_groups(
    local: Served, user: str, roles: set[str], groups: set[str]
) -> None:
    caller = caller_of(local, user)

    assert caller.roles == roles
    assert caller.groups == {GROUPS[g] for g in groups}
    assert caller.oid == DIRECTORY.users[user].object_id


def test_a_user_with_too_many_groups_gets_the_overage_claim(local: Served) -> None:
    token = local.token("carol")
    claims = jwt.decode(token, options={"verify_signature": False})

    assert "groups" not in claims
    assert claims["_claim_names"] == {"groups": "src1"}
    assert caller_of(local, "carol").groups_overage is True


def test_tokens_are_entra_v2_shaped(local: Served) -> None:
    token = local.token("alice@vending.example")  # the username works as well as the directory's key
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    keys = local.http.get("/identity/keys").json()["keys"]

    assert header["alg"] == "RS256"
    assert [k["kid"] for k in keys] == [header["kid"]]
    assert claims["iss"] == f"{local.url}/identity"
    assert claims["aud"] == DIRECTORY.application.client_id
    assert claims["ver"] == "2.0"
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["nbf"] == claims["iat"]
    assert {"oid", "tid", "name", "preferred_username", "roles", "groups", "uti"} <= set(claims)


def test_discovery_names_the_issuer_its_keys_and_its_token_endpoint(local: Served) -> None:
    doc = local.http.get("/identity/.well-known/openid-configuration").json()

    assert doc["issuer"] == f"{local.url}/identity"
    assert doc["jwks_uri"] == f"{local.url}/identity/keys"
    assert doc["token_endpoint"] == f"{local.url}/identity/token"


def test_the_authenticator_finds_the_keys_by_discovery(local: Served) -> None:
    auth = local.authenticator()

    assert auth.settings.jwks_url is None
    auth.authenticate({"Authorization": f"Bearer {local.token('alice')}"})
    assert auth.keys.fetches == 1


def test_the_token_answer_is_never_cached(local: Served) -> None:
    resp = local.http.post("/identity/token", data={"grant_type": "password", "username": "alice"})

    assert resp.headers["cache-control"] == "no-store"
    assert resp.json()["token_type"] == "Bearer"
    assert resp.json()["expires_in"] == 3600


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "password", "username": "zed"}, "invalid_grant"),
        ({"grant_type": "client_credentials", "username": "alice"}, "unsupported_grant_type"),
        ({"grant_type": "password"}, "invalid_request"),
        ("grant_type=password&username=alice&username=admin", "invalid_request"),
    ],
)
def test_refused_token_requests_say_why(local: Served, form: dict[str, str] | str, error: str) -> None:
    if isinstance(form, str):
        resp = local.http.post(
            "/identity/token", content=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
    else:
        resp = local.http.post("/identity/token", data=form)

    assert resp.status_code == 400
    assert resp.json()["error"] == error
    assert resp.json()["error_description"]


def test_a_json_token_request_is_refused(local: Served) -> None:
    resp = local.http.post("/identity/token", json={"grant_type": "password", "username": "alice"})

    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_request"


def test_the_identity_routes_stay_out_of_the_openapi_document(local: Served) -> None:
    app = FastAPI()
    add_identity_routes(app, local.issuer)

    assert not any(path.startswith("/identity") for path in app.openapi()["paths"])


def test_the_signing_key_is_created_with_mode_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        load_or_create_key(tmp_path / KEY_FILE)
    finally:
        os.umask(previous)

    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no partial file left behind


def test_the_key_is_kept_across_restarts_and_its_tokens_stay_valid(tmp_path: Path) -> None:
    def start() -> LocalIssuer:
        return LocalIssuer.open(directory_file=DEFAULT_DIRECTORY, data_dir=tmp_path, base_url="http://127.0.0.1:7071")

    first = start()
    token = first.issue(DIRECTORY.users["alice"]).access_token.get_secret_value()
    again = start()

    assert again.kid == first.kid
    key = jwt.PyJWK(again.jwks().keys[0].model_dump(exclude_none=True)).key
    claims = jwt.decode(token, key, algorithms=["RS256"], audience=DIRECTORY.application.client_id)
    assert claims["oid"] == DIRECTORY.users["alice"].object_id


def test_another_devhost_s_tokens_are_refused(tmp_path: Path) -> None:
    with serve(tmp_path / "one") as one, serve(tmp_path / "two") as other:
        token = one.token("admin")
        # Trust the other devhost's keys for the first one's issuer: the key is not among them.
        settings = other.issuer.validation_settings(AuthSettings(website_site_name=None))
        auth = Authenticator(
            settings.model_copy(update={"issuer": one.issuer.issuer, "jwks_url": f"{other.url}/identity/keys"})
        )

        with pytest.raises(AuthenticationError, match="key"):
            auth.authenticate({"Authorization": f"Bearer {token}"})


def test_a_signing_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    load_or_create_key(path)
    path.chmod(0o644)

    with pytest.raises(LocalIdentityError, match="chmod 600"):
        load_or_create_key(path)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("roles: [Workspaces.Request]", "roles: [Workspaces.Requests]"),
        ("groups: [fraud-detection]", "groups: [fraud-detecton]"),
        ("name: Alice Fraser", "nmae: Alice Fraser"),
    ],
)
def test_a_directory_with_a_typo_does_not_load(tmp_path: Path, change: str, why: str) -> None:
    text = DEFAULT_DIRECTORY.read_text(encoding="utf-8").replace(change, why, 1)
    assert text != DEFAULT_DIRECTORY.read_text(encoding="utf-8")
    path = tmp_path / "directory.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(LocalIdentityError, match=r"users\.alice"):
        load_directory(path)


def test_the_local_issuer_refuses_a_public_http_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="https"):
        LocalIssuer.open(directory_file=DEFAULT_DIRECTORY, data_dir=tmp_path, base_url="http://devhost.example:7071")
