"""Who may call the devhost, end to end: `python -m devhost` in its own process, called over HTTP.

Mode entra, with the test's own issuer (tests/tokens.py) served on loopback as Microsoft Entra ID:
a token that is missing, not a JWT, expired, for another audience, from another issuer or tenant,
without an oid, signed with a key the issuer does not publish, signed by someone else under the
issuer's key id, `alg: none`, or HS256 keyed with the issuer's public key is answered 401
problem+json with an RFC 6750 challenge (error="invalid_token" when a token came, no error code
when none did); so is a forged Easy Auth principal header claiming Vending.Admin (App Service
Authentication is not in front), also in mode easyauth without WEBSITE_AUTH_ENABLED. A token the issuer signed for a member of fraud-detection
gets 200, so the refusals are not a devhost that refuses everyone. No refused call writes anything
to the ARM emulator or the store.

Mode local (the embedded issuer): a token from `cli login alice` works; the same token with its
signature or its claims changed, and a token signed with another key under the embedded issuer's
`iss`, `aud` and `kid`, are 401; a call with a valid token does write to the emulator, so the write
log the refusals are checked against does record writes.

One devhost per mode for the whole module.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from adapters.auth import Authenticator
from models.identity import AppRole, AuthSettings
from tests.conftest import example, poll, served
from tests.e2e.conftest import E2E_GROUP, E2E_TEAMS, Devhost, started_devhost
from tests.tokens import (
    ALICE,
    APP_ID_URI,
    CLIENT_ID,
    FRAUD_GROUP,
    TENANT,
    TestIssuer,
    b64url,
    hs256_with,
    public_pem,
    rsa_key,
    unsigned,
)

ROUTES = [("GET", "/api/workspaces"), ("POST", "/api/workspaces")]
REFUSED_BODY = example("cpu-small.json")  # fraud-detection, dev: rg-ml-fraud-detection-dev
REFUSED_RG = "rg-ml-fraud-detection-dev"
ADMIN_OID = "5b7e9a1c-3f6b-4cad-8e5a-7c9e1b3d5f05"  # the local directory's admin
# The e2e policy gives every e2e team the shipped policy does not list the fraud-detection group
# (tests/e2e/conftest.py); it is tokens.FRAUD_GROUP. churn and vision keep groups of their own.
SHARE_THE_FRAUD_GROUP = {"fraud-detection", *E2E_TEAMS} - {"churn", "vision"}
assert E2E_GROUP == FRAUD_GROUP

# RFC 6750 section 3: `Bearer realm=...`, and for a refused token error="invalid_token" with an
# error_description of %x20-21 / %x23-5B / %x5D-7E only. No error code when no credentials came (3.1).
CHALLENGE = re.compile(
    r'^Bearer realm="workspace-vending"'
    r'(?P<error>, error="invalid_token", error_description="(?P<description>[\x20\x21\x23-\x5b\x5d-\x7e]*)")?$'
)

# The devhost must not trust an Easy Auth header it did not get from App Service, whatever runs the tests.
UNTRUSTED = ("WEBSITE_AUTH_ENABLED", "WEBSITE_SITE_NAME")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def forged_principal(tenant: str) -> str:
    """An X-MS-CLIENT-PRINCIPAL value as App Service Authentication sends it, claiming the admin role."""
    principal = {
        "auth_typ": "aad",
        "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
        "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
        "claims": [
            {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": ADMIN_OID},
            {"typ": "http://schemas.microsoft.com/identity/claims/tenantid", "val": tenant},
            {"typ": "aud", "val": CLIENT_ID},
            {"typ": "name", "val": "Mallory"},
            {"typ": "roles", "val": AppRole.ADMIN.value},
            {"typ": "groups", "val": FRAUD_GROUP},
        ],
    }
    return base64.b64encode(json.dumps(principal).encode()).decode()


def call(host: Devhost, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    """One call with exactly these headers: the devhosts here are started signed in as nobody."""
    assert "authorization" not in {k.lower() for k in host.http.headers}
    return host.http.request(method, path, json=REFUSED_BODY if method == "POST" else None, headers=headers)


def assert_refused(resp: httpx.Response, *, reason: str, credentials: bool = True, token: str | None = None) -> None:
    """401 problem+json naming `reason`, with a Bearer challenge: invalid_token when a token came, else none."""
    assert resp.status_code == 401, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert problem["status"] == 401 and problem["title"] == "Sign in first", problem
    assert reason in problem["detail"], problem
    challenge = CHALLENGE.match(resp.headers["www-authenticate"])
    assert challenge, resp.headers["www-authenticate"]
    if credentials:
        assert challenge["error"], resp.headers["www-authenticate"]
        assert challenge["description"] == problem["detail"]
    else:
        assert challenge["error"] is None, resp.headers["www-authenticate"]
    if token is not None:
        assert token not in resp.text and token not in resp.headers["www-authenticate"]


def arm_writes(host: Devhost) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The emulator's log of write calls (PUT, PATCH, DELETE, POST) as sent, and its counters."""
    with host.emulator() as arm:
        writes = arm.get("/_emulator/requests").json()["requests"]
        stats = arm.get("/_emulator/stats").json()
    return writes, stats


def without_untrusted_env() -> pytest.MonkeyPatch:
    mp = pytest.MonkeyPatch()
    for name in UNTRUSTED:
        mp.delenv(name, raising=False)
    return mp


# ----- mode entra (and easyauth without Easy Auth in front), with the test's own issuer -----------


@pytest.fixture(scope="module")
def issuer() -> Iterator[TestIssuer]:
    issuer = TestIssuer()
    with served(issuer.app()) as url:
        issuer.base = url
        yield issuer


def entra_env(issuer: TestIssuer, mode: str) -> dict[str, str]:
    return {
        "VENDING_AUTH_MODE": mode,
        "VENDING_AUTH_TENANT_ID": TENANT,
        "VENDING_AUTH_CLIENT_ID": CLIENT_ID,
        "VENDING_AUTH_AUDIENCE": APP_ID_URI,
        "VENDING_AUTH_ISSUER": issuer.issuer,
        "VENDING_AUTH_JWKS_URL": f"{issuer.base}/{TENANT}/discovery/v2.0/keys",
    }


@pytest.fixture(scope="module")
def entra(issuer: TestIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    mp = without_untrusted_env()
    try:
        with started_devhost(tmp_path_factory.mktemp("entra"), user=None, **entra_env(issuer, "entra")) as host:
            yield host
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def easyauth(issuer: TestIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    mp = without_untrusted_env()
    try:
        with started_devhost(tmp_path_factory.mktemp("easyauth"), user=None, **entra_env(issuer, "easyauth")) as host:
            yield host
    finally:
        mp.undo()


def assert_nothing_written(host: Devhost, issuer: TestIssuer) -> None:
    """No write reached the emulator, no resource exists, and the store holds no request."""
    writes, stats = arm_writes(host)
    assert writes == []
    assert stats["creates"] == {} and stats["resources"] == []
    assert not {"PUT", "PATCH", "DELETE", "POST"} & set(stats["calls"]), stats["calls"]
    everyone = bearer(issuer.token(roles=[AppRole.READ_ALL.value], groups=[]))
    listed = host.http.get("/api/workspaces", headers=everyone)
    assert listed.status_code == 200 and listed.json()["items"] == [], listed.text


def _expired(i: TestIssuer) -> str:
    now = int(time.time())
    return i.token(exp=now - 600, nbf=now - 4200, iat=now - 4200)  # past the 60 s leeway


def _other_signer(i: TestIssuer) -> str:
    return i.token(kid="key-1", key=rsa_key("attacker"))  # the issuer's key id, someone else's key


def _alg_none(i: TestIssuer) -> str:
    return unsigned({"alg": "none", "typ": "JWT", "kid": "key-1"}, i.claims())


def _hs256_public_key(i: TestIssuer) -> str:
    # The key confusion attack: HMAC keyed with the issuer's published RSA key, as a verifier that
    # took the algorithm from the token would check it.
    return hs256_with(public_pem(i.keys["key-1"]), {"alg": "HS256", "typ": "JWT", "kid": "key-1"}, i.claims())


BAD_TOKENS: dict[str, tuple[Callable[[TestIssuer], str], str]] = {
    "expired": (_expired, "has expired"),
    "wrong-audience": (lambda i: i.token(aud="api://another-api"), "another audience"),
    "wrong-issuer": (lambda i: i.token(iss=f"https://login.microsoftonline.com/{TENANT}/v2.0"), "another issuer"),
    "other-tenant": (lambda i: i.token(tid="00000000-0000-4000-8000-000000000001"), "another tenant"),
    "unknown-kid": (lambda i: i.token(kid="key-unknown"), "does not publish"),
    "other-signer": (_other_signer, "signature does not verify"),
    "alg-none": (_alg_none, "RS256"),
    "hs256-with-public-key": (_hs256_public_key, "RS256"),
    "no-oid": (lambda i: i.token(oid=None), "object id"),
    "not-a-jwt": (lambda i: "not.a-jwt", "not a signed JWT"),
}


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_entra_refuses_a_call_without_a_token(entra: Devhost, issuer: TestIssuer, method: str, path: str) -> None:
    assert_refused(call(entra, method, path, {}), reason="sign in", credentials=False)
    assert_refused(
        call(entra, method, path, {"Authorization": "Basic YWRtaW46YWRtaW4="}), reason="Bearer", credentials=False
    )
    assert_nothing_written(entra, issuer)


@pytest.mark.parametrize("case", list(BAD_TOKENS))
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_entra_refuses_a_bad_token(entra: Devhost, issuer: TestIssuer, method: str, path: str, case: str) -> None:
    make, reason = BAD_TOKENS[case]
    token = make(issuer)
    assert_refused(call(entra, method, path, bearer(token)), reason=reason, token=token)
    assert_nothing_written(entra, issuer)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_entra_ignores_a_forged_easy_auth_principal(entra: Devhost, issuer: TestIssuer, method: str, path: str) -> None:
    assert "WEBSITE_AUTH_ENABLED" not in entra.env
    forged = {"X-MS-CLIENT-PRINCIPAL": forged_principal(TENANT), "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}
    assert_refused(call(entra, method, path, forged), reason="sign in", credentials=False)
    assert_nothing_written(entra, issuer)


def test_entra_with_a_forged_principal_and_a_valid_token_is_the_tokens_caller(
    entra: Devhost, issuer: TestIssuer
) -> None:
    me = entra.http.get(
        "/api/me", headers={**bearer(issuer.token()), "X-MS-CLIENT-PRINCIPAL": forged_principal(TENANT)}
    )
    assert me.status_code == 200, me.text
    assert me.json()["oid"] == ALICE and me.json()["roles"] == ["Workspaces.Request"]


def test_entra_accepts_a_token_of_its_issuer_for_a_member_of_fraud_detection(
    entra: Devhost, issuer: TestIssuer
) -> None:
    for aud in (CLIENT_ID, APP_ID_URI):
        token = issuer.token(aud=aud)
        listed = entra.http.get("/api/workspaces", headers=bearer(token))
        assert listed.status_code == 200, listed.text
        assert listed.json()["items"] == []
        me = entra.http.get("/api/me", headers=bearer(token))
        assert me.status_code == 200, me.text
        assert me.json()["oid"] == ALICE and me.json()["tid"] == TENANT
        assert me.json()["roles"] == ["Workspaces.Request"] and not me.json()["reads_every_team"]
        # The groups claim was read: the caller acts for every team that lists the fraud-detection group.
        assert set(me.json()["teams"]) == SHARE_THE_FRAUD_GROUP
    assert issuer.hits["keys"] >= 1  # the keys came from the test's issuer, over loopback
    assert_nothing_written(entra, issuer)


def test_entra_a_member_of_a_group_several_teams_list_acts_for_each(entra: Devhost, issuer: TestIssuer) -> None:
    me = entra.http.get("/api/me", headers=bearer(issuer.token()))
    assert me.status_code == 200, me.text
    assert set(me.json()["teams"]) == SHARE_THE_FRAUD_GROUP


def test_the_forged_principal_would_pass_were_easy_auth_in_front() -> None:
    """The forged header is Easy Auth's shape: trusted, it would make an admin; it is refused for being unproven."""
    trusting = Authenticator(
        AuthSettings(
            mode="easyauth",
            tenant_id=TENANT,
            client_id=CLIENT_ID,
            issuer="https://login.microsoftonline.com/" + TENANT + "/v2.0",
            jwks_url=None,
            website_auth_enabled=True,
            website_site_name=None,
        )
    )
    caller = trusting.authenticate({"X-MS-CLIENT-PRINCIPAL": forged_principal(TENANT)})
    assert caller.oid == ADMIN_OID and caller.has_role(AppRole.ADMIN) and caller.auth == "easyauth"


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_easyauth_without_easy_auth_in_front_ignores_a_forged_principal(
    easyauth: Devhost, issuer: TestIssuer, method: str, path: str
) -> None:
    assert "WEBSITE_AUTH_ENABLED" not in easyauth.env
    forged = {"X-MS-CLIENT-PRINCIPAL": forged_principal(TENANT), "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}
    assert_refused(call(easyauth, method, path, forged), reason="sign in", credentials=False)
    token = _other_signer(issuer)
    assert_refused(call(easyauth, method, path, {**forged, **bearer(token)}), reason="signature", token=token)
    # A bearer token is what it reads instead, checked as in mode entra.
    me = easyauth.http.get("/api/me", headers={**forged, **bearer(issuer.token())})
    assert me.status_code == 200 and me.json()["oid"] == ALICE and me.json()["roles"] == ["Workspaces.Request"]
    assert_nothing_written(easyauth, issuer)


# ----- mode local: the embedded issuer ----------------------------------------------------------


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    mp = without_untrusted_env()
    mp.delenv("VENDING_AUTH_MODE", raising=False)
    try:
        with started_devhost(tmp_path_factory.mktemp("local"), user=None) as host:
            yield host
    finally:
        mp.undo()


def cli_login(host: Devhost, user: str) -> str:
    """`cli login <user>`, and the access token it keeps for the CLI."""
    login = host.cli("login", user)
    assert login.returncode == 0, login.stderr
    token: str = json.loads((host.data_dir / "cli-token.json").read_text())["access_token"]
    return token


@pytest.fixture(scope="module")
def alice_token(local: Devhost) -> str:
    return cli_login(local, "alice")


@pytest.fixture(scope="module")
def platform_token(local: Devhost) -> str:
    return cli_login(local, "platform")  # Workspaces.ReadAll: sees every team's requests


def local_nothing_written(host: Devhost, everyone: str) -> None:
    """Nothing reached the emulator for the refused body's resource group, and the store holds no such request."""
    writes, stats = arm_writes(host)
    assert not [w for w in writes if REFUSED_RG in w["path"].lower()], writes
    assert not [r for r in stats["resources"] if REFUSED_RG in r.lower()]
    listed = host.http.get("/api/workspaces", headers=bearer(everyone))
    assert listed.status_code == 200, listed.text
    assert not [r for r in listed.json()["items"] if r["team"] == REFUSED_BODY["team"]], listed.json()


def with_signature(token: str, change: Callable[[bytes], bytes]) -> str:
    head, body, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    return f"{head}.{body}.{b64url(change(raw))}"


def flip_byte(raw: bytes) -> bytes:
    middle = len(raw) // 2
    return raw[:middle] + bytes([raw[middle] ^ 0x01]) + raw[middle + 1 :]


def with_claims(token: str, **changes: Any) -> str:
    """The token with its payload changed and its signature kept."""
    head, _, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False}) | changes
    return f"{head}.{b64url(json.dumps(claims).encode())}.{signature}"


def embedded_public_pem(host: Devhost) -> bytes:
    keys = host.http.get("/identity/keys").json()["keys"]
    assert len(keys) == 1
    public = jwt.PyJWK.from_dict(keys[0]).key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[union-attr]


def test_local_accepts_the_token_of_cli_login(local: Devhost, alice_token: str) -> None:
    listed = local.http.get("/api/workspaces", headers=bearer(alice_token))
    assert listed.status_code == 200, listed.text
    me = local.http.get("/api/me", headers=bearer(alice_token))
    assert me.status_code == 200, me.text
    assert me.json()["oid"] == "1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01" and me.json()["roles"] == ["Workspaces.Request"]
    assert set(me.json()["teams"]) == SHARE_THE_FRAUD_GROUP


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_local_refuses_the_cli_token_with_its_signature_changed(
    local: Devhost, alice_token: str, platform_token: str, method: str, path: str
) -> None:
    for forged in (
        with_signature(alice_token, flip_byte),
        with_signature(alice_token, lambda raw: raw[:-1]),  # one byte short
        with_signature(alice_token, lambda raw: b""),
    ):
        assert_refused(call(local, method, path, bearer(forged)), reason="signature", token=forged)
    assert local.http.get("/api/me", headers=bearer(alice_token)).status_code == 200  # the original still works
    local_nothing_written(local, platform_token)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_local_refuses_the_cli_token_with_its_claims_changed(
    local: Devhost, alice_token: str, platform_token: str, method: str, path: str
) -> None:
    forged = with_claims(alice_token, roles=[AppRole.ADMIN.value, AppRole.READ_ALL.value])
    assert_refused(call(local, method, path, bearer(forged)), reason="signature", token=forged)
    local_nothing_written(local, platform_token)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_local_refuses_a_token_signed_with_another_key_as_the_embedded_issuer(
    local: Devhost, alice_token: str, platform_token: str, method: str, path: str
) -> None:
    kid = jwt.get_unverified_header(alice_token)["kid"]
    claims = jwt.decode(alice_token, options={"verify_signature": False})
    now = int(time.time())
    claims |= {"iat": now, "nbf": now, "exp": now + 3600, "roles": [AppRole.ADMIN.value]}
    forged = jwt.encode(claims, rsa_key("attacker"), algorithm="RS256", headers={"kid": kid})
    assert jwt.get_unverified_header(forged)["kid"] == kid
    assert_refused(call(local, method, path, bearer(forged)), reason="signature does not verify", token=forged)
    pem = embedded_public_pem(local)
    for confused in (
        hs256_with(pem, {"alg": "HS256", "typ": "JWT", "kid": kid}, claims),
        unsigned({"alg": "none", "typ": "JWT", "kid": kid}, claims),
    ):
        assert_refused(call(local, method, path, bearer(confused)), reason="RS256", token=confused)
    local_nothing_written(local, platform_token)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_local_ignores_a_forged_easy_auth_principal(
    local: Devhost, alice_token: str, platform_token: str, method: str, path: str
) -> None:
    tenant = jwt.decode(alice_token, options={"verify_signature": False})["tid"]
    forged = {"X-MS-CLIENT-PRINCIPAL": forged_principal(tenant), "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}
    assert_refused(call(local, method, path, forged), reason="sign in", credentials=False)
    local_nothing_written(local, platform_token)


def test_local_the_write_log_records_a_call_that_was_let_in(
    local: Devhost, alice_token: str, platform_token: str
) -> None:
    """The control for every `nothing written` above: an accepted submission does reach the emulator's log."""
    made = local.http.post("/api/workspaces", json=REFUSED_BODY | {"team": "telemetry"}, headers=bearer(alice_token))
    assert made.status_code == 202, made.text
    poll(
        lambda: [w for w in arm_writes(local)[0] if "/resourcegroups/rg-ml-telemetry-dev" in w["path"].lower()],
        timeout=60,
        every=0.2,
        what="the accepted request's first write to the emulator",
    )
    local_nothing_written(local, platform_token)
