"""Identity over HTTP: who calls each REST route, and the devhost's embedded identity provider.

`add_authentication` makes an app authenticate its callers: a route that takes a `CurrentCaller`
parameter gets the `Caller` the request's headers prove, or the request is answered 401
problem+json with a `WWW-Authenticate` header (AuthUnavailableError is a TransientError: the
app's 503 handler answers it). Routes without that parameter (health, chat) stay open.

`add_identity_routes` serves the embedded issuer's discovery document, key set and token endpoint,
mounted by the devhost only (VENDING_AUTH_MODE=local), on its own port, under the issuer's path
(`/identity`): a development convenience that hands out tokens without a password, never mounted in
Azure. Those routes stay out of the OpenAPI document.

The portal (handlers/portal.py) signs browsers in with a cookie: locally the embedded issuer's token
kept in an HttpOnly, SameSite=Strict cookie (`vending_session`), in Azure App Service
Authentication's own session cookie (`AppServiceAuthSession`), which Easy Auth turns into
X-MS-CLIENT-PRINCIPAL. A browser sends a cookie on its own, so a state-changing request (anything
but GET, HEAD, OPTIONS) that carries no Authorization header and a session cookie must also carry
the `X-CSRF-Token` header with the value of the `vending_csrf` cookie (OWASP's signed double-submit
and custom-header defences: another site can neither read that cookie nor add a header to a
cross-site request). A request with an Authorization header is a script's or the CLI's, never
sent on its own by a browser: it needs no CSRF token.
https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from models.errors import ForbiddenError
from models.identity import AuthenticationError, Caller, TokenError

if TYPE_CHECKING:
    from adapters.auth import Authenticator
    from devhost.identity import LocalIssuer

MAX_FORM_BYTES = 4096
# RFC 6749 section 5.1: token responses are never cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


SESSION_COOKIE = "vending_session"
"""The portal's sign-in on the devhost: the embedded issuer's access token (HttpOnly, SameSite=Strict)."""
EASY_AUTH_COOKIE = "AppServiceAuthSession"
"""App Service Authentication's session cookie: Easy Auth reads it and sends X-MS-CLIENT-PRINCIPAL."""
CSRF_COOKIE = "vending_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def credential_headers(request: Request) -> dict[str, str]:
    """Return the headers that prove the caller: the request's, with the portal's session cookie as a bearer token.

    An Authorization header the request carries wins over the cookie.
    """
    headers = {k.lower(): v for k, v in request.headers.items()}
    session = request.cookies.get(SESSION_COOKIE)
    if session and not headers.get("authorization"):
        headers["authorization"] = f"Bearer {session}"
    return headers


def by_cookie(request: Request) -> bool:
    """Say whether the browser's cookie, not a header the sender set, carries the caller's credential."""
    if request.headers.get("authorization"):
        return False
    return bool(request.cookies.get(SESSION_COOKIE) or request.cookies.get(EASY_AUTH_COOKIE))


def check_csrf(request: Request) -> None:
    """Refuse a state-changing request signed in by cookie without the portal's CSRF token (ForbiddenError)."""
    if request.method in SAFE_METHODS or not by_cookie(request):
        return
    expected = request.cookies.get(CSRF_COOKIE) or ""
    sent = request.headers.get(CSRF_HEADER) or ""
    if len(expected) < 32 or not secrets.compare_digest(expected.encode(), sent.encode()):
        raise ForbiddenError(
            "a request signed in by the portal's cookie must carry the X-CSRF-Token header with the value of the "
            "vending_csrf cookie; reload the portal's page and try again, or call with an Authorization header.",
            rule="CsrfToken",
        )


def current_caller(request: Request) -> Caller:
    """Return who is calling, as the app's authenticator says, or raise AuthenticationError (or ForbiddenError)."""
    # A sync dependency on purpose: FastAPI runs it in the thread pool, where the authenticator may
    # fetch the issuer's keys, in local mode from this very server.
    authenticator: Callable[[], Authenticator] = request.app.state.authenticator
    caller = authenticator().authenticate(credential_headers(request))
    check_csrf(request)
    return caller


CurrentCaller = Annotated[Caller, Depends(current_caller)]
"""A route parameter of this type makes the route authenticated."""


def add_authentication(
    app: FastAPI, authenticator: Callable[[], Authenticator], problem: Callable[..., JSONResponse]
) -> None:
    """Make `app` authenticate the callers of routes that take a `CurrentCaller`; refusals are 401 problem+json."""
    app.state.authenticator = authenticator

    @app.exception_handler(AuthenticationError)
    async def _unauthenticated(request: Request, exc: AuthenticationError) -> JSONResponse:
        response = problem(401, "Sign in first", detail=exc.reason, instance=request.url.path)
        response.headers["WWW-Authenticate"] = exc.www_authenticate
        return response


def _refused(error: TokenError) -> JSONResponse:
    return JSONResponse(error.model_dump(), status_code=400, headers=NO_STORE)


def add_identity_routes(app: FastAPI, issuer: LocalIssuer) -> None:
    """Serve the local issuer's discovery document, key set and token endpoint under its issuer path."""
    from devhost.identity import TokenRequest, TokenRequestError  # only the devhost mounts these routes

    base = issuer.path.rstrip("/")

    @app.get(f"{base}/.well-known/openid-configuration", include_in_schema=False)
    def openid_configuration() -> JSONResponse:
        return JSONResponse(issuer.openid_configuration().model_dump(mode="json", exclude_none=True))

    @app.get(f"{base}/keys", include_in_schema=False)
    def keys() -> JSONResponse:
        return JSONResponse(issuer.jwks().model_dump(mode="json", exclude_none=True))

    @app.post(f"{base}/token", include_in_schema=False)
    async def token(request: Request) -> JSONResponse:
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return _refused(
                TokenError(error="invalid_request", error_description="send a form (x-www-form-urlencoded)")
            )
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return _refused(TokenError(error="invalid_request", error_description="the form is too large"))
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        # RFC 6749 section 3.2: parameters must not be sent more than once.
        if any(len(values) > 1 for values in fields.values()):
            return _refused(TokenError(error="invalid_request", error_description="a parameter was sent twice"))
        try:
            asked = TokenRequest.model_validate({k: v[0] for k, v in fields.items()})
            answer = issuer.token(asked)
        except ValidationError:
            return _refused(TokenError(error="invalid_request", error_description="the form's fields are not valid"))
        except TokenRequestError as exc:
            return _refused(TokenError(error=exc.error, error_description=exc.description))
        return JSONResponse(answer.wire(), headers=NO_STORE)
