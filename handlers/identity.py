"""The devhost's embedded identity provider over HTTP: discovery, key set and token endpoint.

Mounted by the devhost only (VENDING_AUTH_MODE=local), on its own port, under the issuer's path
(`/identity`): it is a development convenience that hands out tokens without a password, and is
never mounted in Azure. The routes stay out of the OpenAPI document.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from models.identity import TokenError

if TYPE_CHECKING:
    from devhost.identity import LocalIssuer

MAX_FORM_BYTES = 4096
# RFC 6749 section 5.1: token responses are never cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


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
