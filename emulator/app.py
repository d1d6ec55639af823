"""The emulator's HTTP face: the ARM REST protocol over Starlette."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator.resources import TYPES
from emulator.state import ArmError, Config, EmulatorState, parse_path

log = logging.getLogger(__name__)

OPERATIONS = "/providers/Microsoft.Emulator/operations/"


def cloud_metadata(base_url: str) -> dict[str, Any]:
    """Return the ARM cloud metadata document (the shape of GET /metadata/endpoints on Azure)."""
    return {
        "name": "WorkspaceVendingEmulator",
        "portal": "https://portal.emulator.local/",
        "resourceManager": base_url,
        "authentication": {
            "loginEndpoint": base_url,
            "audiences": [base_url],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "suffixes": {"storage": "core.windows.net", "keyVaultDns": "vault.azure.net", "acrLoginServer": "azurecr.io"},
        "media": base_url,
        "graph": base_url,
        "graphAudience": base_url,
    }


def _error(exc: ArmError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def build_app(state: EmulatorState, base_url: str) -> Starlette:
    """Build the ASGI app serving `state` at `base_url`."""

    def op_headers(sub: str, op: str) -> dict[str, str]:
        return {
            "Azure-AsyncOperation": f"{base_url.rstrip('/')}/subscriptions/{sub}{OPERATIONS}{op}?api-version=2023-01-01",
            "Location": f"{base_url.rstrip('/')}/subscriptions/{sub}{OPERATIONS}{op}?api-version=2023-01-01&result=1",
            "Retry-After": str(state.config.retry_after_s),
        }

    async def metadata(request: Request) -> Response:
        return JSONResponse(cloud_metadata(base_url))

    async def stats(request: Request) -> Response:
        return JSONResponse({**state.stats(), "resources": state.resource_ids()})

    async def config(request: Request) -> Response:
        if request.method == "PUT":
            data = await request.json()
            for key, value in data.items():
                if not hasattr(state.config, key):
                    return JSONResponse({"error": f"unknown setting {key}"}, status_code=400)
                setattr(state.config, key, value)
        return JSONResponse(vars(state.config))

    async def arm(request: Request) -> Response:
        path = request.url.path
        method = request.method
        state.calls[method] += 1
        headers = {"x-ms-request-id": str(uuid.uuid4()), "x-ms-correlation-request-id": str(uuid.uuid4())}
        try:
            if not request.headers.get("authorization", "").lower().startswith("bearer "):
                raise ArmError(
                    401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
                )
            if "api-version" not in request.query_params:
                raise ArmError(
                    400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required."
                )
            if OPERATIONS.lower() in path.lower():
                doc = state.operation(path.rsplit("/", 1)[-1])
                if "result" in request.query_params:
                    done = doc["status"] != "InProgress"
                    return JSONResponse(
                        doc if done else {},
                        status_code=200 if done else 202,
                        headers={**headers, "Retry-After": str(state.config.retry_after_s)},
                    )
                return JSONResponse(doc, headers=headers)
            p = parse_path(path)
            if p.type.lower() == "microsoft.resources/deployments/operations" and method == "GET":
                parent = parse_path(p.parent_id)
                return JSONResponse({"value": state.deployment_operations(parent)}, headers=headers)
            if method in ("GET", "HEAD"):
                if p.name is None:
                    return JSONResponse({"value": state.list_children(p)}, headers=headers)
                body = state.get(p)
                if method == "HEAD":
                    return Response(status_code=204, headers=headers)
                return JSONResponse(body, headers=headers)
            if method in ("PUT", "PATCH"):
                raw = await request.body()
                try:
                    payload = json.loads(raw or b"{}")
                except json.JSONDecodeError as exc:
                    raise ArmError(400, "InvalidRequestContent", f"The request content was invalid: {exc}") from exc
                if method == "PATCH":
                    current = state.get(p)
                    payload = {
                        **current,
                        **payload,
                        "properties": {**current.get("properties", {}), **payload.get("properties", {})},
                    }
                status, body, op = state.put(p, payload)
                rtype = TYPES.get(p.type.lower())
                if op and rtype is not None and rtype.location_lro and status == 201:
                    return Response(status_code=202, headers={**headers, **op_headers(p.subscription, op)})
                if op:
                    headers.update(op_headers(p.subscription, op))
                    headers.pop("Location", None)
                return JSONResponse(body, status_code=status, headers=headers)
            if method == "DELETE":
                return Response(status_code=state.delete(p), headers=headers)
            if method == "POST":
                raise ArmError(
                    400, "UnsupportedAction", f"The emulator does not serve the action '{path.rsplit('/', 1)[-1]}'."
                )
            raise ArmError(405, "MethodNotAllowed", f"{method} is not supported.")
        except ArmError as exc:
            resp = _error(exc)
            resp.headers.update(headers)
            return resp

    return Starlette(
        routes=[
            Route("/metadata/endpoints", metadata),
            Route("/_emulator/stats", stats),
            Route("/_emulator/config", config, methods=["GET", "PUT"]),
            Route("/{path:path}", arm, methods=["GET", "PUT", "PATCH", "DELETE", "POST", "HEAD"]),
        ]
    )


__all__ = ["Config", "EmulatorState", "build_app", "cloud_metadata"]
