"""The portal's pages over HTTP: sign-in and sign-out, the session and CSRF cookies, who sees which page.

What the browser tests (tests/browser/test_portal.py) cannot reach with a click: a forged form, a
foreign `next`, a cookie-borne API call without the CSRF header, App Service Authentication's paths.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest

from composition import Container
from handlers.api import create_api
from handlers.identity import CSRF_COOKIE, EASY_AUTH_COOKIE, SESSION_COOKIE
from handlers.portal import CSP, SIGNIN_TRIED, local_path
from models.identity import AuthSettings, Caller
from models.records import RequestStatus
from models.request import parse_request
from models.settings import Settings
from tests.callers import bearer
from tests.conftest import example, poll, running_steps, served
from tests.fakes import FakeCloud

TENANT = "5f1d3c2a-7b64-4e19-a8d0-3c2b1a0f9e87"  # policy/directory.example.yaml
CLIENT_ID = "0d4c7e2b-93a1-4f58-b6e2-71c9a0d3f5e4"
ALICE = "1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01"
FRAUD_DETECTION = "3a8e5c1f-2d47-4b96-8e0a-6f1c2d3b4a51"


@dataclass
class Portal:
    container: Container
    http: httpx.Client

    def csrf(self) -> str:
        """Open the sign-in page as a fresh browser would, and return the CSRF cookie it was given."""
        page = self.http.get("/signin")
        assert page.status_code == 200
        return self.http.cookies[CSRF_COOKIE]

    def sign_in(self, user: str, next: str = "/") -> httpx.Response:
        token = self.csrf()
        return self.http.post("/signin", data={"username": user, "csrf": token, "next": next})


def set_cookies(response: httpx.Response) -> dict[str, Any]:
    """The cookies a response sets, each with its attributes (Max-Age, Path, HttpOnly, SameSite, ...)."""
    found: dict[str, Any] = {}
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        for name, morsel in jar.items():
            found[name] = morsel
    return found


@pytest.fixture
def portal(settings: Settings) -> Iterator[Portal]:
    """The API with its portal, on the embedded issuer (VENDING_AUTH_MODE=local), no step worker running."""
    container = Container(settings, cloud=FakeCloud(), sinks=[])
    container.swap(preflight=None)
    app = create_api(lambda: container, local_issuer=container.local_issuer)
    with served(app) as base, httpx.Client(base_url=base, timeout=30, follow_redirects=False) as http:
        yield Portal(container, http)


def _principal(*, oid: str = ALICE, groups: tuple[str, ...] = (FRAUD_DETECTION,)) -> str:
    """An X-MS-CLIENT-PRINCIPAL header as App Service Authentication sends it (base64 JSON of the claims)."""
    claims = [
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
        {"typ": "http://schemas.microsoft.com/identity/claims/tenantid", "val": TENANT},
        {"typ": "aud", "val": CLIENT_ID},
        {"typ": "name", "val": "Alice Fraser"},
        {"typ": "roles", "val": "Workspaces.Request"},
        *({"typ": "groups", "val": g} for g in groups),
    ]
    body = {"auth_typ": "aad", "name_typ": "name", "role_typ": "roles", "claims": claims}
    return base64.b64encode(json.dumps(body).encode()).decode()


@pytest.fixture
def easyauth(settings: Settings) -> Iterator[httpx.Client]:
    """The API with its portal behind App Service Authentication (VENDING_AUTH_MODE=easyauth, Easy Auth on)."""
    auth = AuthSettings.model_validate(
        {"mode": "easyauth", "tenant_id": TENANT, "client_id": CLIENT_ID, "website_auth_enabled": True}
    )
    container = Container(settings, cloud=FakeCloud(), sinks=[], auth_settings=auth)
    container.swap(preflight=None)
    with (
        served(create_api(lambda: container)) as base,
        httpx.Client(base_url=base, timeout=30, follow_redirects=False) as http,
    ):
        yield http


# ----- pages, headers, cookies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "next"),
    [
        ("/", "/"),
        ("/new", "/new"),
        ("/approvals", "/approvals"),
        ("/workspaces/r-1?tab=steps", "/workspaces/r-1%3Ftab%3Dsteps"),
        ("/workspaces/r-1/edit", "/workspaces/r-1/edit"),
    ],
)
def test_a_page_without_a_session_sends_the_browser_to_sign_in_and_back(portal: Portal, path: str, next: str) -> None:
    response = portal.http.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == f"/signin?next={next}"


def test_every_page_carries_the_security_headers_and_hands_out_one_csrf_token(portal: Portal) -> None:
    first = portal.http.get("/signin")
    assert first.status_code == 200
    assert first.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "frame-ancestors 'none'" in CSP and "'unsafe-inline'" not in CSP
    assert first.headers["x-content-type-options"] == "nosniff"
    assert first.headers["referrer-policy"] == "same-origin"
    assert first.headers["cache-control"] == "no-store"
    csrf = set_cookies(first)[CSRF_COOKIE]
    assert len(csrf.value) >= 32
    assert csrf["samesite"] == "strict" and csrf["path"] == "/"
    assert not csrf["httponly"]  # the page's script copies it into the X-CSRF-Token header
    assert f'value="{csrf.value}"' in first.text  # and the sign-in form carries it
    # A browser that has a token keeps it: a second page sets no new one.
    again = portal.http.get("/signin")
    assert CSRF_COOKIE not in set_cookies(again)
    # A cookie too short to be one of ours is replaced.
    portal.http.cookies.set(CSRF_COOKIE, "short")
    assert len(set_cookies(portal.http.get("/signin"))[CSRF_COOKIE].value) >= 32


def test_the_sign_in_page_lists_the_directorys_users(portal: Portal) -> None:
    page = portal.http.get("/signin?next=/new")
    assert "Alice Fraser" in page.text and "Bob Chen" in page.text
    assert 'name="next" value="/new"' in page.text


def test_signing_in_sets_an_http_only_strict_session_cookie_and_goes_where_asked(portal: Portal) -> None:
    response = portal.sign_in("alice", next="/workspaces/r-1?tab=steps")
    assert response.status_code == 303
    assert response.headers["location"] == "/workspaces/r-1?tab=steps"
    session = set_cookies(response)[SESSION_COOKIE]
    assert session["httponly"] and session["samesite"] == "strict" and session["path"] == "/"
    assert int(session["max-age"]) == 3600  # the embedded issuer's token lifetime: the cookie dies with it
    assert not session["secure"]  # plain http on loopback; behind https (x-forwarded-proto) it is Secure
    assert portal.http.get("/api/choices").json()["teams"] == ["fraud-detection"]
    assert portal.http.get("/").status_code == 200


def test_behind_https_the_cookies_are_secure(portal: Portal) -> None:
    page = portal.http.get("/signin", headers={"X-Forwarded-Proto": "https"})
    csrf = set_cookies(page)[CSRF_COOKIE]
    assert csrf["secure"]
    # (httpx keeps a Secure cookie for https only: the browser's Cookie header is written by hand.)
    signed = portal.http.post(
        "/signin",
        data={"username": "alice", "csrf": csrf.value},
        headers={"X-Forwarded-Proto": "https", "Cookie": f"{CSRF_COOKIE}={csrf.value}"},
    )
    assert set_cookies(signed)[SESSION_COOKIE]["secure"]


@pytest.mark.parametrize(
    "form",
    [
        {"username": "alice", "csrf": "x" * 43},  # another token than the cookie's
        {"username": "alice"},  # none at all
    ],
    ids=["wrong-token", "no-token"],
)
def test_a_sign_in_form_without_the_browsers_csrf_token_is_refused(portal: Portal, form: dict[str, str]) -> None:
    portal.csrf()
    response = portal.http.post("/signin", data=form)
    assert response.status_code == 403
    assert "CSRF token does not match" in response.text
    assert SESSION_COOKIE not in set_cookies(response)


def test_a_sign_in_form_from_a_browser_without_a_csrf_cookie_is_refused(portal: Portal) -> None:
    # Another site posting the form: it cannot read our cookie, so it cannot put its value in the form.
    response = portal.http.post("/signin", data={"username": "alice", "csrf": ""})
    assert response.status_code == 403
    assert SESSION_COOKIE not in set_cookies(response)


def test_an_unknown_user_is_asked_to_choose_again(portal: Portal) -> None:
    token = portal.csrf()
    response = portal.http.post("/signin", data={"username": "mallory", "csrf": token, "next": "/new"})
    assert response.status_code == 400
    assert "Choose one of the directory&#39;s users." in response.text
    assert 'name="next" value="/new"' in response.text
    assert SESSION_COOKIE not in set_cookies(response)


@pytest.mark.parametrize(
    "target",
    ["//evil.example/x", "https://evil.example/", "/\\evil.example", "/x\r\nSet-Cookie: a=b", "evil", "", "/x\\y"],
)
def test_signing_in_goes_only_to_a_path_on_this_host(portal: Portal, target: str) -> None:
    response = portal.sign_in("alice", next=target)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert local_path(target) == "/"


def test_a_foreign_next_is_not_put_in_the_sign_in_form(portal: Portal) -> None:
    page = portal.http.get("/signin", params={"next": "//evil.example/"})
    assert 'name="next" value="/"' in page.text and "evil.example" not in page.text


def test_signing_out_needs_the_token_and_ends_the_session(portal: Portal) -> None:
    portal.sign_in("alice")
    refused = portal.http.post("/signout", data={"csrf": "x" * 43})
    assert refused.status_code == 403 and refused.json()["rule"] == "CsrfToken"
    assert portal.http.get("/api/choices").status_code == 200  # still signed in
    out = portal.http.post("/signout", data={"csrf": portal.http.cookies[CSRF_COOKIE]})
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    gone = set_cookies(out)[SESSION_COOKIE]
    assert gone.value == "" and int(gone["max-age"]) == 0
    assert portal.http.get("/").status_code == 303


# ----- the API with the portal's cookie --------------------------------------------------------------


def test_a_cookie_signed_in_call_that_changes_state_needs_the_csrf_header(portal: Portal) -> None:
    portal.sign_in("alice")
    body = example("cpu-small.json")
    for headers in ({}, {"X-CSRF-Token": "x" * 43}):
        refused = portal.http.post("/api/workspaces", json=body, headers=headers)
        assert refused.status_code == 403, refused.text
        assert refused.json()["rule"] == "CsrfToken"
    assert portal.container.store.list_requests(limit=5).items == []
    # A read needs no token; a write with the cookie's value in the header is accepted.
    assert portal.http.get("/api/workspaces").status_code == 200
    accepted = portal.http.post(
        "/api/workspaces", json=body, headers={"X-CSRF-Token": portal.http.cookies[CSRF_COOKIE]}
    )
    assert accepted.status_code == 202, accepted.text


def test_a_bearer_caller_needs_no_csrf_token_and_its_header_wins_over_a_cookie(portal: Portal) -> None:
    portal.sign_in("alice")
    bob = bearer(portal.container, "bob")
    # The Authorization header is the credential, not the cookie: bob, not alice; no CSRF token asked.
    assert portal.http.get("/api/choices", headers=bob).json()["teams"] == ["churn"]
    found = portal.http.post("/api/validate", json=example("cpu-small.json"), headers=bob)
    assert found.status_code == 200, found.text
    assert [p["code"] for p in found.json()["problems"]] == ["NotTeamMember"]


def test_a_session_cookie_that_is_not_a_token_is_refused(portal: Portal) -> None:
    portal.http.cookies.set(SESSION_COOKIE, "not-a-token")
    assert portal.http.get("/api/choices").status_code == 401
    assert portal.http.get("/").headers["location"] == "/signin?next=/"


def test_another_teams_request_page_is_not_found_as_a_missing_one_is(portal: Portal) -> None:
    record = portal.container.intake.submit(
        request=parse_request(example("cpu-small.json")), caller=_caller(portal, "alice"), source="test"
    ).record
    portal.sign_in("alice")
    assert portal.http.get(f"/workspaces/{record.id}").status_code == 200
    assert portal.http.get(f"/workspaces/{record.id}/edit").status_code == 200
    portal.http.post("/signout", data={"csrf": portal.http.cookies[CSRF_COOKIE]})
    portal.sign_in("bob")
    for path in (f"/workspaces/{record.id}", f"/workspaces/{record.id}/edit", "/workspaces/no-such-request"):
        page = portal.http.get(path)
        assert page.status_code == 404, path
        assert "Not found" in page.text and page.headers["content-security-policy"] == CSP
    hidden = portal.http.get(f"/workspaces/{record.id}").text.replace(record.id, "{id}")
    missing = portal.http.get("/workspaces/no-such-request").text.replace("no-such-request", "{id}")
    assert hidden == missing  # nothing tells bob the request exists


def test_config_json_is_given_once_the_workspace_is_ready_and_only_to_its_team(portal: Portal) -> None:
    record = portal.container.intake.submit(
        request=parse_request(example("cpu-small.json")), caller=_caller(portal, "alice"), source="test"
    ).record
    path = f"/api/workspaces/{record.id}/config.json"
    assert portal.http.get(path).status_code == 401
    portal.sign_in("alice")
    waiting = portal.http.get(path)
    assert waiting.status_code == 409 and waiting.json()["code"] == "WorkspaceNotReady"
    with running_steps(portal.container):
        poll(lambda: _status(portal, record.id) == RequestStatus.SUCCEEDED, what="the request to succeed")
    ready = portal.http.get(path)
    assert ready.status_code == 200
    assert ready.headers["content-disposition"] == 'attachment; filename="config.json"'
    assert ready.headers["cache-control"] == "no-store"
    assert ready.json() == {
        "subscription_id": "11111111-1111-1111-1111-111111111111",
        "resource_group": "rg-ml-fraud-detection-dev",
        "workspace_name": "mlw-fraud-detection-dev",
    }
    bob = portal.http.get(path, headers=bearer(portal.container, "bob"))
    assert bob.status_code == 404


# ----- assets -----------------------------------------------------------------------------------------


def test_the_portals_assets_are_served_from_here_and_nothing_else_is(portal: Portal) -> None:
    script = portal.http.get("/portal/assets/form.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert portal.http.get("/portal/assets/portal.css").status_code == 200
    for escape in ("/portal/assets/%2e%2e/templates/form.html", "/portal/assets/..%2f..%2fhandlers/portal.py"):
        assert portal.http.get(escape).status_code == 404, escape
    # No page names an asset of another origin.
    portal.sign_in("alice")
    for page in ("/", "/new", "/approvals", "/signin"):
        html = portal.http.get(page).text
        assert "http://" not in html and "https://" not in html, page


# ----- App Service Authentication (Azure) and bearer-only --------------------------------------------


def test_behind_easy_auth_sign_in_is_app_service_authentications(easyauth: httpx.Client) -> None:
    assert easyauth.get("/new").headers["location"] == "/signin?next=/new"
    sent = easyauth.get("/signin", params={"next": "/new"})
    assert sent.status_code == 303
    assert sent.headers["location"] == "/.auth/login/aad?post_login_redirect_uri=/new"
    tried = set_cookies(sent)[SIGNIN_TRIED]
    assert int(tried["max-age"]) == 60 and tried["path"] == "/signin" and tried["httponly"]
    foreign = easyauth.get("/signin", params={"next": "https://evil.example/"})
    assert foreign.headers["location"] == "/.auth/login/aad?post_login_redirect_uri=/"
    page = easyauth.get("/new", headers={"X-MS-CLIENT-PRINCIPAL": _principal()})
    assert page.status_code == 200 and "Alice Fraser" in page.text
    # There is no local sign-in to post to.
    assert easyauth.post("/signin", data={"username": "alice"}).status_code == 404


def test_behind_easy_auth_a_login_that_tells_the_app_nothing_does_not_loop(easyauth: httpx.Client) -> None:
    easyauth.cookies.set(EASY_AUTH_COOKIE, "session")
    first = easyauth.get("/signin")
    assert first.status_code == 303  # the first time, to the login
    again = easyauth.get("/signin")
    assert again.status_code == 502
    assert "X-MS-CLIENT-PRINCIPAL" in again.text and "WEBSITE_AUTH_ENABLED" in again.text


def test_behind_easy_auth_a_cookie_borne_call_needs_the_csrf_header(easyauth: httpx.Client) -> None:
    principal = {"X-MS-CLIENT-PRINCIPAL": _principal()}
    assert easyauth.get("/", headers=principal).status_code == 200  # the page gives this browser its CSRF cookie
    easyauth.cookies.set(EASY_AUTH_COOKIE, "session")
    refused = easyauth.post("/api/validate", json=example("cpu-small.json"), headers=principal)
    assert refused.status_code == 403 and refused.json()["rule"] == "CsrfToken"
    token = easyauth.cookies[CSRF_COOKIE]
    checked = easyauth.post(
        "/api/validate", json=example("cpu-small.json"), headers={**principal, "X-CSRF-Token": token}
    )
    assert checked.status_code == 200, checked.text
    out = easyauth.post("/signout", data={"csrf": token}, headers=principal)
    assert out.status_code == 303 and out.headers["location"] == "/.auth/logout?post_logout_redirect_uri=/"


def test_with_bearer_tokens_only_the_portal_says_how_to_sign_in(settings: Settings) -> None:
    auth = AuthSettings.model_validate({"mode": "entra", "tenant_id": TENANT, "client_id": CLIENT_ID})
    container = Container(settings, cloud=FakeCloud(), sinks=[], auth_settings=auth)
    with served(create_api(lambda: container)) as base, httpx.Client(base_url=base, timeout=30) as http:
        page = http.get("/signin")
    assert page.status_code == 501
    assert "App Service Authentication" in page.text and "VENDING_AUTH_MODE=easyauth" in page.text


# ----- helpers ------------------------------------------------------------------------------------------


def _caller(portal: Portal, user: str) -> Caller:
    return portal.container.authenticator.authenticate(bearer(portal.container, user))


def _status(portal: Portal, request_id: str) -> RequestStatus | None:
    record = portal.container.store.get_request(request_id)
    return None if record is None else record.status
