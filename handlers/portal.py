"""The portal (docs/portal.md): web pages at `/` of the API's host, for people who do not live in a terminal.

The pages are server-rendered Jinja2 shells with small ES modules (portal/static), no build step and
nothing from a CDN. Every figure a page shows comes from the REST API the CLI calls, with the
browser's cookie as its credential (handlers/identity.py: the cookie, and the CSRF token every
state-changing call carries), so every act is decided by the one authorisation function, exactly as
for any other client. A page route itself only authenticates (nobody signed in: to the sign-in page)
and, for a request's page, asks that function whether the caller may read it.

Sign-in: on the devhost (VENDING_AUTH_MODE=local) a user picker over the local directory, which
stores the embedded issuer's token in an HttpOnly, SameSite=Strict cookie; in Azure (easyauth)
App Service Authentication's own login (`/.auth/login/aad`) and session cookie.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from handlers.identity import CSRF_COOKIE, EASY_AUTH_COOKIE, SESSION_COOKIE, current_caller
from models.errors import ForbiddenError, NotFoundError, TransientError
from models.identity import AppRole, AuthenticationError, Caller

if TYPE_CHECKING:
    from composition import Container
    from devhost.identity import LocalIssuer
    from models.records import RequestRecord

PORTAL = Path(__file__).resolve().parent.parent / "portal"
ASSETS = "/portal/assets"
MAX_FORM_BYTES = 4096
EASY_AUTH_LOGIN = "/.auth/login/aad"
EASY_AUTH_LOGOUT = "/.auth/logout"
SIGNIN_TRIED = "vending_signin_tried"  # set for a minute when a browser is sent to Easy Auth's login
# No script, style or connection but the service's own; no framing; forms post only here.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Readable = Callable[["Container", Caller, str], "RequestRecord"]


def local_path(value: str | None) -> str:
    """Return `value` if it is a path on this host (where to go after signing in), else `/`."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")) or any(c in value for c in "\r\n\\"):
        return "/"
    return value


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


class Pages:
    """Render the portal's pages (autoescaped templates) with the headers every page carries."""

    def __init__(self, container: Callable[[], Container], local_issuer: LocalIssuer | None) -> None:
        self.container = container
        self.local_issuer = local_issuer
        self.templates = Environment(
            loader=FileSystemLoader(PORTAL / "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(
        self, request: Request, template: str, *, status: int = 200, caller: Caller | None = None, **values: Any
    ) -> HTMLResponse:
        """Render a page; give the browser a CSRF token if it has none yet."""
        csrf = request.cookies.get(CSRF_COOKIE)
        fresh = csrf is None or len(csrf) < 32
        token = secrets.token_urlsafe(32) if fresh else csrf
        html = self.templates.get_template(template).render(
            assets=ASSETS,
            caller=caller,
            approver=caller is not None and (caller.has_role(AppRole.APPROVE) or caller.has_role(AppRole.ADMIN)),
            csrf=token,
            path=request.url.path,
            **values,
        )
        response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
        if fresh:
            # Not HttpOnly: the page's script reads it into the X-CSRF-Token header (the double submit).
            response.set_cookie(CSRF_COOKIE, str(token), samesite="strict", secure=_secure(request), path="/")
        return response

    def signed_in(self, request: Request) -> Caller | Response:
        """Return the caller, or the redirect to the sign-in page (or an error page) when there is none."""
        try:
            return current_caller(request)
        except AuthenticationError:
            target = quote(local_path(request.url.path + (f"?{request.url.query}" if request.url.query else "")))
            return RedirectResponse(f"/signin?next={target}", status_code=303)
        except TransientError as exc:
            return self.render(request, "message.html", status=503, title="Briefly unavailable", message=str(exc))


def add_portal(
    app: FastAPI, container: Callable[[], Container], readable: Readable, issuer: LocalIssuer | None
) -> None:
    """Serve the portal's pages and assets at `/`."""
    pages = Pages(container, issuer)
    app.mount(ASSETS, StaticFiles(directory=PORTAL / "static"), name="portal-assets")

    def shell(template: str, **values: Any) -> Callable[[Request], Response]:
        def page(request: Request) -> Response:
            caller = pages.signed_in(request)
            if isinstance(caller, Response):
                return caller
            return pages.render(request, template, caller=caller, **values)

        return page

    app.add_api_route("/", shell("list.html", title="Workspaces"), methods=["GET"], include_in_schema=False)
    app.add_api_route("/new", shell("form.html", title="New workspace"), methods=["GET"], include_in_schema=False)
    app.add_api_route(
        "/approvals", shell("approvals.html", title="Approvals"), methods=["GET"], include_in_schema=False
    )

    def request_page(template: str, title: str) -> Callable[[str, Request], Response]:
        def page(request_id: str, request: Request) -> Response:
            caller = pages.signed_in(request)
            if isinstance(caller, Response):
                return caller
            try:
                # Another team's request is "not found", as a missing one is: the one authorisation function decides.
                record = readable(container(), caller, request_id)
            except NotFoundError as exc:
                return pages.render(
                    request, "message.html", status=404, caller=caller, title="Not found", message=str(exc)
                )
            return pages.render(
                request, template, caller=caller, title=record.workspace_name or record.id, request_id=record.id
            )

        return page

    app.add_api_route(
        "/workspaces/{request_id}",
        request_page("request.html", "Workspace"),
        methods=["GET"],
        include_in_schema=False,
    )
    app.add_api_route(
        "/workspaces/{request_id}/edit",
        request_page("form.html", "Change workspace"),
        methods=["GET"],
        include_in_schema=False,
    )

    @app.get("/signin", include_in_schema=False)
    def signin(request: Request, next: str | None = None) -> Response:
        target = local_path(next)
        mode = container().auth_settings.mode
        if mode == "easyauth":
            if request.cookies.get(SIGNIN_TRIED) and request.cookies.get(EASY_AUTH_COOKIE):
                # Signed in to App Service Authentication a moment ago, yet the app was not told who: sending the
                # browser to log in again would loop. Say what the platform team must check instead.
                return pages.render(
                    request,
                    "message.html",
                    status=502,
                    title="Signed in, but the service was not told who you are",
                    message="App Service Authentication signed you in, but the request reached the service without "
                    "X-MS-CLIENT-PRINCIPAL. The platform team should check WEBSITE_AUTH_ENABLED and the "
                    "authsettingsV2 of the function app (docs/portal.md).",
                )
            response = RedirectResponse(f"{EASY_AUTH_LOGIN}?post_login_redirect_uri={quote(target)}", status_code=303)
            response.set_cookie(
                SIGNIN_TRIED, "1", max_age=60, httponly=True, samesite="lax", secure=_secure(request), path="/signin"
            )
            return response
        if issuer is None:
            return pages.render(
                request,
                "message.html",
                status=501,
                title="Sign-in needs App Service Authentication",
                message="The portal signs people in through App Service Authentication (VENDING_AUTH_MODE=easyauth, "
                "docs/portal.md). With bearer tokens only, use the CLI or the REST API.",
            )
        users = sorted(issuer.directory.users.items(), key=lambda item: item[1].name)
        return pages.render(request, "signin.html", title="Sign in", users=users, next=target, error=None)

    @app.post("/signin", include_in_schema=False)
    async def signin_as(request: Request) -> Response:
        if issuer is None:
            return pages.render(
                request, "message.html", status=404, title="Not found", message="no local sign-in here."
            )
        fields = await _form(request)
        target = local_path(fields.get("next"))
        if not _csrf_ok(request, fields):
            return pages.render(
                request,
                "message.html",
                status=403,
                title="Sign-in refused",
                message="The form's CSRF token does not match this browser's: reload the sign-in page and try again.",
            )
        user = issuer.directory.find(fields.get("username", ""))
        if user is None:
            users = sorted(issuer.directory.users.items(), key=lambda item: item[1].name)
            return pages.render(
                request,
                "signin.html",
                status=400,
                title="Sign in",
                users=users,
                next=target,
                error="Choose one of the directory's users.",
            )
        token = issuer.issue(user)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            token.access_token.get_secret_value(),
            max_age=token.expires_in,
            httponly=True,
            samesite="strict",
            secure=_secure(request),
            path="/",
        )
        return response

    @app.post("/signout", include_in_schema=False)
    async def signout(request: Request) -> Response:
        fields = await _form(request)
        if not _csrf_ok(request, fields):
            raise ForbiddenError(
                "reload the page and sign out again: the form's CSRF token is missing.", rule="CsrfToken"
            )
        if container().auth_settings.mode == "easyauth":
            return RedirectResponse(f"{EASY_AUTH_LOGOUT}?post_logout_redirect_uri=/", status_code=303)
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request))
        return response


async def _form(request: Request) -> dict[str, str]:
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items() if len(v) == 1}


def _csrf_ok(request: Request, fields: dict[str, str]) -> bool:
    expected = request.cookies.get(CSRF_COOKIE) or ""
    return len(expected) >= 32 and secrets.compare_digest(expected.encode(), fields.get("csrf", "").encode())
