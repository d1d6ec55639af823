"""The authenticator against an issuer a test serves on loopback: its own RSA keys, discovery document and key set."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import jwt
import pytest

from adapters.auth import Authenticator
from emulator.server import free_port
from models.errors import TransientError
from models.identity import AuthenticationError, AuthSettings, AuthUnavailableError
from tests.conftest import served
from tests.tokens import (
    ALICE,
    APP_ID_URI,
    CLIENT_ID,
    FRAUD_GROUP,
    TENANT,
    FakeClock,
    TestIssuer,
    hs256_with,
    public_pem,
    rsa_key,
    unsigned,
)


@pytest.fixture
def issuer() -> Iterator[TestIssuer]:
    issuer = TestIssuer()
    with served(issuer.app()) as url:
        issuer.base = url
        yield issuer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def settings_for(issuer: TestIssuer, **overrides: object) -> AuthSettings:
    values: dict[str, object] = {
        "mode": "entra",
        "tenant_id": TENANT,
        "client_id": CLIENT_ID,
        "audience": APP_ID_URI,
        "issuer": issuer.issuer,
        "website_auth_enabled": False,
        "website_site_name": None,
        **overrides,
    }
    return AuthSettings.model_validate(values)


@pytest.fixture
def authenticator(issuer: TestIssuer, clock: FakeClock) -> Authenticator:
    return Authenticator(settings_for(issuer), clock=clock)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refused(authenticator: Authenticator, headers: dict[str, str]) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as caught:
        authenticator.authenticate(headers)
    return caught.value


def test_a_valid_token_gives_the_caller_with_its_oid_roles_and_groups(
    issuer: TestIssuer, authenticator: Authenticator
) -> None:
    caller = authenticator.authenticate(bearer(issuer.token()))

    assert caller.oid == ALICE
    assert caller.tid == TENANT
    assert caller.roles == {"Workspaces.Request"}
    assert caller.groups == {FRAUD_GROUP}
    assert caller.groups_overage is False
    assert caller.name == "Alice Fraser"
    assert caller.username == "alice@contoso.example"
    assert caller.auth == "entra"
    # The keys came by discovery, once.
    assert issuer.hits == {"discovery": 1, "keys": 1}


def test_both_audience_forms_are_accepted_and_nothing_else(issuer: TestIssuer, authenticator: Authenticator) -> None:
    assert authenticator.authenticate(bearer(issuer.token(aud=APP_ID_URI))).oid == ALICE
    assert authenticator.authenticate(bearer(issuer.token(aud=CLIENT_ID))).oid == ALICE

    error = refused(authenticator, bearer(issuer.token(aud="api://another-api")))

    assert "audience" in error.reason
    assert error.www_authenticate.startswith('Bearer realm="workspace-vending", error="invalid_token"')


def test_no_token_is_refused_without_an_error_code(authenticator: Authenticator, issuer: TestIssuer) -> None:
    error = refused(authenticator, {})

    assert error.error is None
    assert error.www_authenticate == 'Bearer realm="workspace-vending"'
    assert issuer.hits == {}  # nothing fetched for a request without credentials


@pytest.mark.parametrize(
    "authorization",
    ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer not-a-jwt", "Bearer a.b.c", "Bearer " + "a" * 20000 + ".b.c"],
)
def test_malformed_credentials_are_refused(authenticator: Authenticator, authorization: str) -> None:
    error = refused(authenticator, {"Authorization": authorization})

    assert error.reason
    assert "YWxpY2U6c2VjcmV0" not in error.www_authenticate


def test_an_expired_token_is_refused_and_the_leeway_is_small(issuer: TestIssuer, authenticator: Authenticator) -> None:
    now = int(time.time())

    error = refused(authenticator, bearer(issuer.token(exp=now - 120, nbf=now - 3700, iat=now - 3700)))
    assert "expired" in error.reason
    assert "expired" in error.www_authenticate

    # Ten seconds late is within the leeway (60 s): clocks differ a little.
    assert authenticator.authenticate(bearer(issuer.token(exp=now - 10))).oid == ALICE


def test_a_token_not_valid_yet_is_refused(issuer: TestIssuer, authenticator: Authenticator) -> None:
    now = int(time.time())

    error = refused(authenticator, bearer(issuer.token(nbf=now + 600, iat=now)))

    assert "not valid yet" in error.reason


def test_a_token_from_another_issuer_is_refused(issuer: TestIssuer, authenticator: Authenticator) -> None:
    other = f"https://login.microsoftonline.com/{TENANT}/v2.0"

    error = refused(authenticator, bearer(issuer.token(iss=other)))

    assert "issuer" in error.reason


def test_a_token_from_another_tenant_is_refused(issuer: TestIssuer, authenticator: Authenticator) -> None:
    error = refused(authenticator, bearer(issuer.token(tid="9188040d-6c67-4c5b-b112-36a304b66dad")))

    assert "another tenant" in error.reason


@pytest.mark.parametrize("missing", ["oid", "tid", "exp", "nbf", "aud"])
def test_a_token_without_a_required_claim_is_refused(
    issuer: TestIssuer, authenticator: Authenticator, missing: str
) -> None:
    error = refused(authenticator, bearer(issuer.token(**{missing: None})))

    assert missing in error.reason


def test_an_unknown_kid_is_refused_after_one_refetch_and_refetches_are_rate_limited(
    issuer: TestIssuer, authenticator: Authenticator, clock: FakeClock
) -> None:
    assert authenticator.authenticate(bearer(issuer.token())).oid == ALICE
    assert issuer.hits["keys"] == 1

    error = refused(authenticator, bearer(issuer.token(kid="rogue-1", key=rsa_key("rogue"))))
    assert "key" in error.reason
    assert issuer.hits["keys"] == 2  # the issuer may have rolled its keys: looked once

    for n in range(2, 50):  # a flood of made-up key ids
        refused(authenticator, bearer(issuer.token(kid=f"rogue-{n}", key=rsa_key("rogue"))))
    assert issuer.hits["keys"] == 2

    clock.advance(authenticator.settings.jwks_refetch_min_s)
    refused(authenticator, bearer(issuer.token(kid="rogue-50", key=rsa_key("rogue"))))
    assert issuer.hits["keys"] == 3
    assert issuer.hits["discovery"] == 1  # the key set's URL is remembered


def test_a_rolled_key_is_found_by_the_one_refetch(issuer: TestIssuer, authenticator: Authenticator) -> None:
    assert authenticator.authenticate(bearer(issuer.token())).oid == ALICE
    issuer.keys = {"key-2": rsa_key("key-2")}

    assert authenticator.authenticate(bearer(issuer.token(kid="key-2"))).oid == ALICE
    assert issuer.hits["keys"] == 2


def test_a_known_kid_with_another_key_s_signature_is_refused(issuer: TestIssuer, authenticator: Authenticator) -> None:
    error = refused(authenticator, bearer(issuer.token(kid="key-1", key=rsa_key("rogue"))))

    assert "signature" in error.reason


def test_alg_none_is_refused_before_any_key_is_fetched(issuer: TestIssuer, authenticator: Authenticator) -> None:
    token = unsigned({"alg": "none", "typ": "JWT", "kid": "key-1"}, issuer.claims())

    error = refused(authenticator, bearer(token))

    assert "RS256" in error.reason
    assert issuer.hits == {}


def test_hs256_signed_with_the_public_key_is_refused(issuer: TestIssuer, authenticator: Authenticator) -> None:
    # The classic confusion: an HMAC "signed" with the issuer's public key, which anyone can read.
    pem = public_pem(issuer.keys["key-1"])
    token = hs256_with(pem, {"alg": "HS256", "typ": "JWT", "kid": "key-1"}, issuer.claims(roles=["Vending.Admin"]))

    error = refused(authenticator, bearer(token))

    assert "RS256" in error.reason


def test_rs256_in_the_header_but_an_hmac_signature_is_refused(issuer: TestIssuer, authenticator: Authenticator) -> None:
    pem = public_pem(issuer.keys["key-1"])
    token = hs256_with(pem, {"alg": "RS256", "typ": "JWT", "kid": "key-1"}, issuer.claims())

    error = refused(authenticator, bearer(token))

    assert "signature" in error.reason


def test_a_token_with_critical_header_extensions_is_refused(issuer: TestIssuer, authenticator: Authenticator) -> None:
    token = jwt.encode(
        issuer.claims(),
        issuer.keys["key-1"],
        algorithm="RS256",
        headers={"kid": "key-1", "crit": ["b64"], "b64": False},
    )

    error = refused(authenticator, bearer(token))

    assert "extensions" in error.reason


def test_the_group_overage_claim_sets_groups_overage(issuer: TestIssuer, authenticator: Authenticator) -> None:
    token = issuer.token(
        groups=None,
        _claim_names={"groups": "src1"},
        _claim_sources={"src1": {"endpoint": f"https://graph.microsoft.com/v1.0/users/{ALICE}/getMemberObjects"}},
    )

    caller = authenticator.authenticate(bearer(token))

    assert caller.groups_overage is True
    assert caller.groups == frozenset()


def test_a_forged_principal_header_without_easy_auth_is_ignored_for_the_bearer(
    issuer: TestIssuer, clock: FakeClock
) -> None:
    authenticator = Authenticator(settings_for(issuer, mode="easyauth", website_auth_enabled=False), clock=clock)
    forged = base64.b64encode(
        json.dumps(
            {
                "auth_typ": "aad",
                "claims": [
                    {
                        "typ": "http://schemas.microsoft.com/identity/claims/objectidentifier",
                        "val": "5b7e9a1c-3f6b-4cad-8e5a-7c9e1b3d5f05",
                    },
                    {"typ": "http://schemas.microsoft.com/identity/claims/tenantid", "val": TENANT},
                    {"typ": "roles", "val": "Vending.Admin"},
                ],
            }
        ).encode()
    ).decode()

    caller = authenticator.authenticate({"X-MS-CLIENT-PRINCIPAL": forged, **bearer(issuer.token())})

    assert caller.oid == ALICE
    assert "Vending.Admin" not in caller.roles
    assert caller.auth == "entra"


def test_a_discovery_failure_is_transient_and_retried_only_after_a_pause(
    issuer: TestIssuer, authenticator: Authenticator, clock: FakeClock
) -> None:
    issuer.fail_with = 500

    with pytest.raises(AuthUnavailableError) as caught:
        authenticator.authenticate(bearer(issuer.token()))
    assert isinstance(caught.value, TransientError)
    assert not isinstance(caught.value, AuthenticationError)
    assert "HTTP 500" in str(caught.value)

    issuer.fail_with = None
    with pytest.raises(AuthUnavailableError) as again:  # within fetch_retry_s: no new attempt
        authenticator.authenticate(bearer(issuer.token()))
    assert again.value.retry_after_s is not None
    assert issuer.hits["discovery"] == 1

    clock.advance(authenticator.settings.fetch_retry_s)
    assert authenticator.authenticate(bearer(issuer.token())).oid == ALICE
    assert issuer.hits["discovery"] == 2


def test_a_key_set_failure_is_transient(issuer: TestIssuer, clock: FakeClock) -> None:
    authenticator = Authenticator(settings_for(issuer, jwks_url=f"{issuer.base}/no-such-keys"), clock=clock)

    with pytest.raises(AuthUnavailableError) as caught:
        authenticator.authenticate(bearer(issuer.token()))

    assert "HTTP 404" in str(caught.value)
    assert issuer.hits["discovery"] == 0  # a configured key set URL is used as is


def test_an_issuer_that_cannot_be_reached_is_transient(clock: FakeClock) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/{TENANT}/v2.0"
    authenticator = Authenticator(
        AuthSettings(mode="entra", tenant_id=TENANT, client_id=CLIENT_ID, issuer=nobody, http_timeout_s=2),
        clock=clock,
    )

    with pytest.raises(AuthUnavailableError) as caught:
        authenticator.authenticate(bearer(TestIssuer(base="http://x").token()))

    assert "ConnectError" in str(caught.value)


def test_a_discovery_document_naming_another_issuer_is_not_trusted(issuer: TestIssuer, clock: FakeClock) -> None:
    issuer.document_issuer = f"https://login.microsoftonline.com/{TENANT}/v2.0"
    authenticator = Authenticator(settings_for(issuer), clock=clock)

    with pytest.raises(AuthUnavailableError) as caught:
        authenticator.authenticate(bearer(issuer.token()))

    assert "another issuer" in str(caught.value)
    assert issuer.hits["keys"] == 0


def test_keys_are_refreshed_when_due_and_stale_keys_serve_while_the_issuer_is_down(
    issuer: TestIssuer, authenticator: Authenticator, clock: FakeClock
) -> None:
    assert authenticator.authenticate(bearer(issuer.token())).oid == ALICE
    clock.advance(authenticator.settings.jwks_refresh_s)

    issuer.fail_with = 503
    assert authenticator.authenticate(bearer(issuer.token())).oid == ALICE
    assert issuer.hits["keys"] == 2  # tried, failed, kept the keys it had

    issuer.fail_with = None
    clock.advance(authenticator.settings.fetch_retry_s)
    assert authenticator.authenticate(bearer(issuer.token())).oid == ALICE
    assert issuer.hits["keys"] == 3


def test_a_key_that_names_its_issuer_is_used_only_for_that_issuer(issuer: TestIssuer, clock: FakeClock) -> None:
    issuer.key_issuer = "https://login.microsoftonline.com/{tenantid}/v2.0"
    authenticator = Authenticator(settings_for(issuer), clock=clock)

    error = refused(authenticator, bearer(issuer.token()))
    assert "signing key" in error.reason

    # Entra's templated form: {tenantid} is the token's tid.
    issuer.key_issuer = f"{issuer.base}/{{tenantid}}/v2.0"
    fresh = Authenticator(settings_for(issuer), clock=clock)
    assert fresh.authenticate(bearer(issuer.token())).oid == ALICE


def test_the_refusal_never_echoes_the_token(issuer: TestIssuer, authenticator: Authenticator) -> None:
    token = issuer.token(aud="api://another-api")

    error = refused(authenticator, bearer(token))

    assert token not in str(error)
    assert token.split(".")[1] not in error.www_authenticate
