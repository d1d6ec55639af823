"""Authentication without a network: Easy Auth's principal header, the auth settings, the caller and the refusal."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from adapters.auth import Authenticator
from models.identity import (
    DEFAULT_DIRECTORY,
    AppRole,
    AuthenticationError,
    AuthSettings,
    Caller,
    check_key_url,
)

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
ALICE = "690222be-ff1a-4d56-abd1-7e4f7d38e474"
GROUP = "3a8e5c1f-2d47-4b96-8e0a-6f1c2d3b4a51"
OID_TYPE = "http://schemas.microsoft.com/identity/claims/objectidentifier"
TID_TYPE = "http://schemas.microsoft.com/identity/claims/tenantid"
ROLE_TYPE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"


def no_network(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no key fetch expected, got {request.url}")


def authenticator(**settings: Any) -> Authenticator:
    values: dict[str, Any] = {
        "mode": "easyauth",
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "website_auth_enabled": True,
        "website_site_name": None,
        **settings,
    }
    return Authenticator(
        AuthSettings.model_validate(values), http=httpx.Client(transport=httpx.MockTransport(no_network))
    )


def principal(claims: list[tuple[str, str]], **fields: Any) -> str:
    # The decoded shape App Service documents: {auth_typ, claims: [{typ, val}], name_typ, role_typ}.
    body = {
        "auth_typ": "aad",
        "claims": [{"typ": t, "val": v} for t, v in claims],
        "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
        "role_typ": ROLE_TYPE,
        **fields,
    }
    return base64.b64encode(json.dumps(body).encode()).decode()


ALICE_CLAIMS = [
    ("aud", CLIENT_ID),
    ("iss", f"https://login.microsoftonline.com/{TENANT}/v2.0"),
    ("name", "Alice Fraser"),
    (OID_TYPE, ALICE),
    ("preferred_username", "alice@contoso.example"),
    (TID_TYPE, TENANT),
    ("roles", "Workspaces.Request"),
    (ROLE_TYPE, "Workspaces.Approve"),
    ("groups", GROUP.upper()),
    ("groups", "not-a-guid-sAMAccountName"),
]


def refused(auth: Authenticator, headers: dict[str, str]) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as caught:
        auth.authenticate(headers)
    return caught.value


def test_the_principal_header_is_parsed_when_easy_auth_is_on() -> None:
    caller = authenticator().authenticate({"X-MS-CLIENT-PRINCIPAL": principal(ALICE_CLAIMS)})

    assert caller == Caller(
        oid=ALICE,
        tid=TENANT,
        name="Alice Fraser",
        username="alice@contoso.example",
        roles=frozenset({"Workspaces.Request", "Workspaces.Approve"}),
        groups=frozenset({GROUP}),
        auth="easyauth",
    )


def test_header_names_are_read_whatever_their_case() -> None:
    caller = authenticator().authenticate({"x-ms-client-principal": principal(ALICE_CLAIMS)})

    assert caller.oid == ALICE


def test_a_forged_principal_header_without_easy_auth_is_refused_and_a_bearer_is_required() -> None:
    admin = [(OID_TYPE, ALICE), (TID_TYPE, TENANT), ("roles", "Vending.Admin")]

    error = refused(authenticator(website_auth_enabled=False), {"X-MS-CLIENT-PRINCIPAL": principal(admin)})

    assert error.error is None
    assert "Bearer" in error.reason
    assert error.www_authenticate == 'Bearer realm="workspace-vending"'


def test_mode_entra_never_reads_the_principal_header_even_behind_easy_auth() -> None:
    auth = authenticator(mode="entra", website_auth_enabled=True)

    refused(auth, {"X-MS-CLIENT-PRINCIPAL": principal(ALICE_CLAIMS)})
    assert auth.trusts_principal_header is False


def test_website_auth_enabled_is_read_from_app_service_s_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBSITE_SITE_NAME", raising=False)
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    on = AuthSettings(mode="easyauth", tenant_id=TENANT, client_id=CLIENT_ID)
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "False")
    off = AuthSettings(mode="easyauth", tenant_id=TENANT, client_id=CLIENT_ID)

    assert on.website_auth_enabled is True
    assert off.website_auth_enabled is False


def test_the_group_overage_in_the_principal_sets_groups_overage() -> None:
    claims = [c for c in ALICE_CLAIMS if c[0] != "groups"] + [("_claim_names", json.dumps({"groups": "src1"}))]

    caller = authenticator().authenticate({"X-MS-CLIENT-PRINCIPAL": principal(claims)})

    assert caller.groups_overage is True
    assert caller.groups == frozenset()


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("%%% not base64 %%%", "base64"),
        (base64.b64encode(b"[1, 2]").decode(), "base64 JSON"),
        (principal([c for c in ALICE_CLAIMS if c[0] != OID_TYPE]), "object id"),
        (
            principal(
                [(t, v) if t != TID_TYPE else (t, "9188040d-6c67-4c5b-b112-36a304b66dad") for t, v in ALICE_CLAIMS]
            ),
            "another tenant",
        ),
        (principal([(t, v) if t != "aud" else (t, "api://other") for t, v in ALICE_CLAIMS]), "audience"),
        (principal(ALICE_CLAIMS, auth_typ="google"), "Microsoft Entra ID"),
    ],
)
def test_a_principal_that_is_not_an_entra_user_of_this_tenant_is_refused(header: str, why: str) -> None:
    error = refused(authenticator(), {"X-MS-CLIENT-PRINCIPAL": header})

    assert why in error.reason


def test_the_refusal_header_follows_rfc_6750() -> None:
    error = AuthenticationError('the token "x" \\ expired é')

    assert error.www_authenticate == (
        'Bearer realm="workspace-vending", error="invalid_token", error_description="the token x  expired "'
    )
    assert error.status_code == 401


def test_the_issuer_defaults_to_entra_v2_for_the_tenant() -> None:
    s = AuthSettings(mode="entra", tenant_id=TENANT.upper(), audience="api://workspace-vending", website_site_name=None)

    assert s.tenant_id == TENANT
    assert s.issuer == f"https://login.microsoftonline.com/{TENANT}/v2.0"
    assert s.discovery_url == f"https://login.microsoftonline.com/{TENANT}/v2.0/.well-known/openid-configuration"
    assert s.audiences == {"api://workspace-vending"}
    assert s.directory_file == DEFAULT_DIRECTORY
    assert DEFAULT_DIRECTORY.is_file()


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ({"mode": "entra", "audience": "api://x"}, "VENDING_AUTH_TENANT_ID"),
        ({"mode": "easyauth", "tenant_id": TENANT}, "VENDING_AUTH_AUDIENCE"),
        ({"mode": "entra", "tenant_id": TENANT, "audience": "api://x", "issuer": "http://login.example/v2.0"}, "https"),
        ({"mode": "entra", "tenant_id": TENANT, "audience": "api://x", "jwks_url": "http://10.0.0.8/keys"}, "https"),
        ({"mode": "local", "website_site_name": "func-vending-prod"}, "App Service"),
        ({"mode": "entra", "tenant_id": "contoso", "audience": "api://x"}, "tenant_id"),
    ],
)
def test_settings_that_cannot_authenticate_anyone_safely_are_refused_at_start(values: dict[str, Any], why: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AuthSettings.model_validate({"website_site_name": None, **values})

    assert why in str(caught.value)


def test_keys_are_fetched_over_https_or_from_loopback_only() -> None:
    assert check_key_url("https://login.microsoftonline.com/x/v2.0", "issuer")
    assert check_key_url("http://127.0.0.1:7071/identity", "issuer")
    assert check_key_url("http://localhost:7071/identity", "issuer")
    assert check_key_url("http://[::1]:7071/identity", "issuer")
    for bad in ("http://192.168.1.5/keys", "ftp://127.0.0.1/keys", "http://127.0.0.1.evil.example/keys", "keys"):
        with pytest.raises(ValueError, match="https"):
            check_key_url(bad, "issuer")


def test_an_authenticator_without_tenant_issuer_or_audience_is_refused() -> None:
    with pytest.raises(ValueError, match=r"LocalIssuer\.validation_settings"):
        Authenticator(AuthSettings(mode="local", website_site_name=None))


def test_a_caller_is_frozen_and_knows_its_roles() -> None:
    caller = Caller(oid=ALICE.upper(), tid=TENANT, name="Alice", roles=frozenset({"Vending.Operator"}), auth="local")

    assert caller.oid == ALICE
    assert caller.has_role(AppRole.OPERATOR)
    assert not caller.has_role(AppRole.ADMIN)
    with pytest.raises(ValidationError):
        caller.oid = "5b7e9a1c-3f6b-4cad-8e5a-7c9e1b3d5f05"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Caller(oid="alice", tid=TENANT, name="Alice", auth="local")


def test_the_app_roles_are_the_registration_s_names() -> None:
    assert [r.value for r in AppRole] == [
        "Workspaces.Request",
        "Workspaces.Approve",
        "Workspaces.ReadAll",
        "Vending.Operator",
        "Vending.Admin",
    ]
