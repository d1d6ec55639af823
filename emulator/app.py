"""The emulator's HTTP face: the ARM REST protocol over Starlette."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator.api_versions import ApiVersionGate
from emulator.arm_errors import ArmError
from emulator.faults import Fault
from emulator.resources import TYPES
from emulator.state import Config, EmulatorState, parse_path
from emulator.throttling import RequestThrottle, Scope, ThrottlingConfig, principal_of, throttled_error
from models.arm_limits import operation_of

log = logging.getLogger(__name__)

OPERATIONS = "/providers/Microsoft.Emulator/operations/"
PURGE_VAULT = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/providers/microsoft\.keyvault/locations/[^/]+/deletedvaults/(?P<name>[^/]+)/purge$",
    re.IGNORECASE,
)


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


_SUBSCRIPTION = re.compile(r"^/subscriptions/([^/]+)", re.IGNORECASE)


def build_app(
    state: EmulatorState,
    base_url: str,
    *,
    throttle: RequestThrottle | None = None,
    api_versions: ApiVersionGate | None = None,
) -> Starlette:
    """Build the ASGI app serving `state` at `base_url`, throttled as ARM throttles and refusing unpublished api-versions."""
    throttle = throttle or RequestThrottle()
    api_versions = api_versions or ApiVersionGate()

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

    async def inventory(request: Request) -> Response:
        return JSONResponse({"resources": state.inventory()})

    async def soft_deleted(request: Request) -> Response:
        return JSONResponse(state.soft_deleted())

    async def clock(request: Request) -> Response:
        if request.method == "PUT":
            try:
                data = await request.json()
                state.advance_clock(float(data.get("advance_s", 0)))
            except (ValueError, TypeError, AttributeError) as exc:
                return JSONResponse({"error": f"invalid clock change: {exc}"}, status_code=400)
        now = state.now()
        return JSONResponse(
            {
                "now": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                "epoch_s": now,
                "offset_s": state.clock_offset_s,
            }
        )

    async def config(request: Request) -> Response:
        if request.method == "PUT":
            data = await request.json()
            if "throttling" in data:
                try:
                    # Merged into the current limits, so a test can change one bucket.
                    merged = {**throttle.config.model_dump(), **data.pop("throttling")}
                    throttle.configure(ThrottlingConfig.model_validate(merged))
                except (ValueError, ValidationError, TypeError) as exc:
                    return JSONResponse({"error": f"invalid throttling: {exc}"}, status_code=400)
            for key, value in data.items():
                if not hasattr(state.config, key):
                    return JSONResponse({"error": f"unknown setting {key}"}, status_code=400)
                setattr(state.config, key, value)
        return JSONResponse({**vars(state.config), "throttling": throttle.config.model_dump()})

    async def api_versions_seen(request: Request) -> Response:
        return JSONResponse(api_versions.report())

    def admit(path: str, method: str, authorization: str) -> tuple[dict[str, str], ArmError | None]:
        """Take a token from the caller's bucket: the remaining-budget header, and the 429 when it is empty."""
        m = _SUBSCRIPTION.match(path)
        scope: Scope = "subscription" if m else "tenant"
        scope_id = m.group(1) if m else state.config.tenant_id
        principal = principal_of(authorization)
        operation = operation_of(method)
        admission = throttle.admit(scope=scope, scope_id=scope_id, principal=principal, operation=operation)
        if admission is None:
            return {}, None
        if admission.retry_after_s is not None:
            return {}, throttled_error(
                admission, scope=scope, scope_id=scope_id, principal=principal, operation=operation
            )
        return {admission.header: str(admission.remaining)}, None

    async def faults(request: Request) -> Response:
        if request.method == "PUT":
            try:
                data = await request.json()
                items = data.get("faults", []) if isinstance(data, dict) else data
                state.faults.replace([Fault.model_validate(f) for f in items])
            except (ValueError, ValidationError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"faults": state.faults.report()})

    async def requests_log(request: Request) -> Response:
        if request.method == "DELETE":
            state.requests.clear()
        return JSONResponse({"requests": state.requests})

    async def arm(request: Request) -> Response:
        path = request.url.path
        method = request.method
        state.calls[method] += 1
        headers = {"x-ms-request-id": str(uuid.uuid4()), "x-ms-correlation-request-id": str(uuid.uuid4())}
        authorization = request.headers.get("authorization", "")
        poll = OPERATIONS.lower() in path.lower()
        called = _type_of(path, poll)
        if authorization.lower().startswith("bearer "):
            # ARM throttles before the request reaches the resource provider: a throttled call is not logged.
            budget, refused = admit(path, method, authorization)
            if refused is not None:
                state.count_call(
                    operation_of(method), called, poll=poll, throttled=True, subscription=_subscription(path)
                )
                resp = _error(refused)
                resp.headers.update(headers)
                return resp
            headers.update(budget)
        state.count_call(operation_of(method), called, poll=poll, throttled=False, subscription=_subscription(path))
        raw = await request.body() if method in ("PUT", "PATCH", "POST") else b""
        if method not in {"GET", "HEAD"} and OPERATIONS.lower() not in path.lower():
            try:
                logged: Any = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                logged = raw.decode("utf-8", "replace")
            state.record(method, path, request.query_params.get("api-version"), logged)
        try:
            if not request.headers.get("authorization", "").lower().startswith("bearer "):
                raise ArmError(
                    401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
                )
            if "api-version" not in request.query_params:
                raise ArmError(
                    400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required."
                )
            api_versions.check(path, request.query_params["api-version"], _location_of(raw))
            fault = _fault_for(path, method)
            if fault is not None:
                if fault.delay_s:
                    await asyncio.sleep(fault.delay_s)
                retry = {"Retry-After": str(fault.retry_after_s)} if fault.retry_after_s is not None else {}
                raise ArmError(fault.status, fault.code, fault.message, retry)
            if method == "POST" and (purge := PURGE_VAULT.match(path.rstrip("/"))):
                # DeletedVaults_PurgeDeleted: a long-running POST, 202 with Location and Retry-After (see state.py).
                lro = op_headers(purge["sub"], state.purge_vault(purge["sub"], purge["name"]))
                lro.pop("Azure-AsyncOperation")
                return Response(status_code=202, headers={**headers, **lro})
            special = _special(path, method, raw, request)
            if special is not None:
                return JSONResponse(special[1], status_code=special[0], headers=headers)
            if OPERATIONS.lower() in path.lower():
                doc = state.operation(path.rsplit("/", 1)[-1])
                if "result" in request.query_params:
                    failed = state.failed_delete_status(path.rsplit("/", 1)[-1]) if doc["status"] == "Failed" else None
                    if failed is not None:
                        # A Location poll reports a failed operation with its error status (ARM's LRO guidance).
                        return JSONResponse({"error": doc["error"]}, status_code=failed, headers=headers)
                    done = doc["status"] != "InProgress"
                    return JSONResponse(
                        doc if done else {},
                        status_code=200 if done else 202,
                        headers={**headers, "Retry-After": str(state.config.retry_after_s)},
                    )
                if doc["status"] == "InProgress" and state.is_delete_operation(path.rsplit("/", 1)[-1]):
                    # A running delete's status answer says when to ask again (ARM's asynchronous operations:
                    # Retry-After on the status response), so SDK pollers do not fall back to their 30 s default.
                    headers["Retry-After"] = str(state.config.retry_after_s)
                return JSONResponse(doc, headers=headers)
            p = parse_path(path)
            if p.type.lower() == "microsoft.resources/deployments/operations" and method == "GET":
                parent = parse_path(p.parent_id)
                return JSONResponse({"value": state.deployment_operations(parent)}, headers=headers)
            if method in ("GET", "HEAD"):
                if p.name is None:
                    return JSONResponse(state.list_page(p, request.query_params, str(request.url)), headers=headers)
                body = state.get(p)
                if method == "HEAD":
                    return Response(status_code=204, headers=headers)
                return JSONResponse(body, headers=headers)
            if method in ("PUT", "PATCH"):
                try:
                    payload = json.loads(raw or b"{}")
                except json.JSONDecodeError as exc:
                    raise ArmError(400, "InvalidRequestContent", f"The request content was invalid: {exc}") from exc
                status, body, op = state.patch(p, payload) if method == "PATCH" else state.put(p, payload)
                rtype = TYPES.get(p.type.lower())
                if op and rtype is not None and rtype.location_lro and status == 201:
                    return Response(status_code=202, headers={**headers, **op_headers(p.subscription, op)})
                if op:
                    headers.update(op_headers(p.subscription, op))
                    headers.pop("Location", None)
                return JSONResponse(body, status_code=status, headers=headers)
            if method == "DELETE":
                status, op, deleted = state.start_delete(p, request.query_params)
                if op is not None:
                    lro = op_headers(p.subscription, op)
                    rtype = TYPES.get(p.type.lower())
                    if rtype is not None and rtype.delete_lro == "location":
                        lro.pop("Azure-AsyncOperation")
                    headers.update(lro)
                if deleted is not None:
                    return JSONResponse(deleted, status_code=status, headers=headers)
                return Response(status_code=status, headers=headers)
            if method == "POST":
                raise ArmError(
                    400, "UnsupportedAction", f"The emulator does not serve the action '{path.rsplit('/', 1)[-1]}'."
                )
            raise ArmError(405, "MethodNotAllowed", f"{method} is not supported.")
        except ArmError as exc:
            resp = _error(exc)
            resp.headers.update(headers)
            return resp

    def _subscription(path: str) -> str | None:
        m = re.match(r"^/subscriptions/([^/]+)", path, re.IGNORECASE)
        return m.group(1) if m else None

    def _type_of(path: str, poll: bool) -> str:
        """Return the resource type a call is about (for an operation's status, the resource it works on)."""
        if poll:
            return state.operation_type(path.rstrip("/").rsplit("/", 1)[-1])
        try:
            return parse_path(path).type
        except ArmError:
            return "Microsoft.Emulator/other"

    def _fault_for(path: str, method: str) -> Fault | None:
        try:
            p = parse_path(path)
        except ArmError:
            return state.faults.check(rtype="Microsoft.Emulator/other", method=method, name=None)
        if OPERATIONS.lower() in path.lower():
            return state.faults.check(rtype="Microsoft.Emulator/operations", method=method, name=None)
        return state.faults.check(rtype=p.type, method=method, name=p.name)

    def _special(path: str, method: str, raw: bytes, request: Request) -> tuple[int, Any] | None:
        """Serve ARM's non-resource endpoints: providers, name checks, deleted vaults, usages."""
        low = path.lower().rstrip("/")
        if method == "GET" and re.match(r"^/subscriptions/([^/]+)/providers/([^/]+)$", low):
            return 200, state.provider(path.rstrip("/").rsplit("/", 1)[-1])
        if m := re.match(
            r"^/subscriptions/([^/]+)/providers/microsoft\.(storage|keyvault)/checknameavailability$", low
        ):
            data = json.loads(raw or b"{}")
            rtype = "Microsoft.Storage/storageAccounts" if m.group(2) == "storage" else "Microsoft.KeyVault/vaults"
            if not data.get("name"):
                raise ArmError(400, "InvalidRequestContent", "The request content was invalid: 'name' is required.")
            return 200, state.name_available(rtype, str(data["name"]))
        sub_id = path.split("/")[2] if low.startswith("/subscriptions/") else ""
        if re.match(r"^/subscriptions/[^/]+/providers/microsoft\.keyvault/deletedvaults$", low):
            return 200, {"value": state.deleted_vaults(sub_id)}
        if m := re.match(
            r"^/subscriptions/[^/]+/providers/microsoft\.keyvault/locations/[^/]+/deletedvaults/([^/]+)(/purge)?$", low
        ):
            name = path.rstrip("/").split("/")[-2 if m.group(2) else -1]
            found = state.deleted_vaults(sub_id, name)
            if not found:
                raise ArmError(404, "ResourceNotFound", f"The deleted vault '{name}' was not found.")
            return 200, found[0]
        if m := re.match(
            r"^/subscriptions/[^/]+/providers/microsoft\.machinelearningservices/locations/([^/]+)/usages$", low
        ):
            # Usages_List is pageable (ListUsagesResult.nextLink, machineLearningServices.json 2024-04-01).
            items, size = state.usages(sub_id, m.group(1)), max(1, state.config.usages_page_size)
            token = request.query_params.get("$skipToken", "0")
            skip = int(token) if token.isdigit() else 0
            page: dict[str, Any] = {"value": items[skip : skip + size]}
            if skip + size < len(items):
                api = request.query_params.get("api-version", "")
                page["nextLink"] = f"{base_url.rstrip('/')}{path}?api-version={api}&$skipToken={skip + size}"
            return 200, page
        if method == "POST" and re.match(
            r"^/subscriptions/.+/providers/microsoft\.storage/storageaccounts/[^/]+/listkeys$", low
        ):
            account = parse_path(path.rstrip("/").rsplit("/", 1)[0])
            state.get(account)  # 404 when there is no such account
            # "A read-only lock on a storage account prevents users from listing the account keys": listKeys is
            # a POST (Microsoft Learn, "Lock your resources to protect your infrastructure").
            state.check_write_locks(account)
            names = ("key1", "key2")
            keys = [{"keyName": k, "value": state.account_key(account.id, k), "permissions": "FULL"} for k in names]
            return 200, {"keys": keys}
        return None

    return Starlette(
        routes=[
            Route("/metadata/endpoints", metadata),
            Route("/_emulator/stats", stats),
            Route("/_emulator/config", config, methods=["GET", "PUT"]),
            Route("/_emulator/faults", faults, methods=["GET", "PUT"]),
            Route("/_emulator/requests", requests_log, methods=["GET", "DELETE"]),
            Route("/_emulator/api-versions", api_versions_seen),
            Route("/_emulator/resources", inventory),
            Route("/_emulator/deleted", soft_deleted),
            Route("/_emulator/clock", clock, methods=["GET", "PUT"]),
            Route("/{path:path}", arm, methods=["GET", "PUT", "PATCH", "DELETE", "POST", "HEAD"]),
        ]
    )


def _location_of(raw: bytes) -> str | None:
    """Return the `location` of a request body, if it has one (for ARM's error messages)."""
    try:
        body = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return None
    location = body.get("location") if isinstance(body, dict) else None
    return location if isinstance(location, str) else None


__all__ = ["Config", "EmulatorState", "build_app", "cloud_metadata"]
