"""The REST API (DESIGN section 7): a FastAPI app, problem+json errors, idempotency, pagination."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.fault_log import FaultLog
from adapters.health import probe
from adapters.telemetry import TRACEPARENT
from composition import Container
from engine.intake import rest_key
from handlers.chat import add_chat_routes
from models.api import (
    Accepted,
    EventList,
    Health,
    HealthCheck,
    HealthProblem,
    PlannedStep,
    PlanView,
    ProblemDetails,
    RequestList,
    RequestSummary,
    RequestView,
    links,
)
from models.errors import ConflictError, InvalidInputError, NotFoundError, Problem, TransientError
from models.records import RequestStatus
from models.request import WorkspaceRequest, field_path, parse_request

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ProblemDetails, "content": {PROBLEM: {}}, "description": text}
    for code, text in ((404, "Not found"), (409, "Conflict"), (422, "Invalid input"), (503, "Briefly unavailable"))
}


def problem(
    status: int,
    title: str,
    *,
    detail: str | None = None,
    errors: list[Problem] | None = None,
    existing_id: str | None = None,
    instance: str | None = None,
) -> JSONResponse:
    """Build an RFC 9457 problem+json response."""
    body = ProblemDetails(
        title=title,
        status=status,
        detail=detail,
        instance=instance,
        errors=[p.as_dict() for p in errors] if errors is not None else None,  # type: ignore[misc]
        existing_id=existing_id,
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM)


def _retry_after(seconds: float | None) -> str:
    return str(max(1, round(seconds or 5)))


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _traceparent(value: str | None) -> str | None:
    return value if value and TRACEPARENT.match(value) else None


def create_api(container: Callable[[], Container]) -> FastAPI:
    """Build the API; `container` gives the service's parts (built lazily, swappable in tests)."""
    api = FastAPI(
        title="Workspace Vending",
        version="1.0.0",
        description="Self-service Azure Machine Learning workspaces: ask for one, follow its steps, get its config.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        # The HTTP door of the trace: with OpenTelemetry configured, FastAPI opens a server span per
        # request that continues the caller's traceparent; what a request starts is recorded under it.
        # Its own log records stay off: they would carry request bodies, unmasked.
        telemetry={"logs": False, "operation_spans": False, "auto_configure": False},
    )

    @api.exception_handler(InvalidInputError)
    async def _invalid(request: Request, exc: InvalidInputError) -> JSONResponse:
        return problem(
            422,
            exc.title,
            detail="Fix every listed field and send the request again.",
            errors=exc.problems,
            instance=request.url.path,
        )

    @api.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        body = exc.body
        if isinstance(body, (str, bytes)):
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            try:
                body = json.loads(text)
            except ValueError as bad:
                return problem(
                    422,
                    "The request is not valid.",
                    errors=[
                        Problem(
                            "(body)",
                            f"the body is not JSON ({bad}); send a JSON object with Content-Type: application/json.",
                            "json_invalid",
                        )
                    ],
                    instance=request.url.path,
                )
        if request.url.path.rstrip("/") in ("/api/workspaces", "/api/plan") and request.method == "POST":
            # Report the body's problems as the model's own validation words them: all at once, with paths.
            try:
                parse_request(body)
            except InvalidInputError as full:
                return await _invalid(request, full)
        problems = []
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            where = loc[0] if loc else "body"
            path = field_path(loc[1:]) if len(loc) > 1 else str(where)
            message = (
                "The body is not valid JSON: " + str(err.get("msg"))
                if err.get("type") == "json_invalid"
                else str(err.get("msg"))
            )
            problems.append(Problem(path if where == "body" else f"{where}.{path}", message, str(err.get("type"))))
        return problem(422, "The request is not valid.", errors=problems, instance=request.url.path)

    @api.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> JSONResponse:
        return problem(409, "Conflict", detail=str(exc), existing_id=exc.existing_id, instance=request.url.path)

    @api.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return problem(404, "Not found", detail=str(exc), instance=request.url.path)

    # An outage fails every request at once: one line per kind of fault, not one per request.
    faults = FaultLog(log)

    @api.exception_handler(TransientError)
    async def _unavailable(request: Request, exc: TransientError) -> JSONResponse:
        # The store or the bus is briefly out of reach; the client may send the same request again.
        faults.fault(exc.code, f"{request.method} {request.url.path} answers 503: {exc}")
        response = problem(
            503,
            "Service unavailable",
            detail=f"{exc} Send the request again later; with the same Idempotency-Key it is never created twice.",
            instance=request.url.path,
        )
        response.headers["Retry-After"] = _retry_after(exc.retry_after_s)
        return response

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), instance=request.url.path)

    @api.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "Internal error", detail="The service failed; the error is logged. Try again later.")

    add_chat_routes(api, container, problem)

    @api.post(
        "/api/workspaces",
        status_code=202,
        response_model=Accepted,
        responses={200: {"model": Accepted}, **PROBLEM_RESPONSES},
    )
    def submit_workspace(
        body: WorkspaceRequest,
        request: Request,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
        traceparent: Annotated[str | None, Header()] = None,
        x_ms_client_principal_name: Annotated[str | None, Header()] = None,
    ) -> Accepted:
        """Ask for a workspace; provisioning starts at once and is followed with GET."""
        c = container()
        requester = (x_ms_client_principal_name or "anonymous")[:256]
        result = c.intake.submit(
            request=body,
            requester=requester,
            source="rest",
            idempotency_key=rest_key(requester, idempotency_key) if idempotency_key else None,
            traceparent=c.telemetry.current_traceparent(_traceparent(traceparent)),
        )
        base = _base(request)
        response.headers["Location"] = f"{base}/api/workspaces/{result.record.id}"
        if not result.created:
            response.status_code = 200
        return Accepted(
            id=result.record.id,
            status=result.record.status,
            links=links(result.record.id, base),
            warnings=result.record.warnings,
        )

    @api.get("/api/workspaces/{request_id}", response_model=RequestView, responses=PROBLEM_RESPONSES)
    def get_workspace(request_id: str, request: Request) -> RequestView:
        """Show a request: its status, every step, and its outputs."""
        c = container()
        record = c.store.get_request(request_id)
        if record is None:
            raise NotFoundError(f"there is no workspace request with id '{request_id}'.")
        return RequestView.full(record, c.store.get_steps(request_id), _base(request))

    @api.get("/api/workspaces", response_model=RequestList, responses=PROBLEM_RESPONSES)
    def list_workspaces(
        request: Request,
        team: Annotated[str | None, Query(max_length=64)] = None,
        status: RequestStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
    ) -> RequestList:
        """List requests, newest first; follow `next` for more."""
        page = container().store.list_requests(team=team, status=status, limit=limit, cursor=cursor)
        base = _base(request)
        nxt = None
        if page.next_cursor:
            nxt = str(request.url.include_query_params(cursor=page.next_cursor))
        return RequestList(items=[RequestSummary.of(r, base) for r in page.items], next=nxt)

    @api.get("/api/workspaces/{request_id}/events", response_model=EventList, responses=PROBLEM_RESPONSES)
    def list_events(request_id: str) -> EventList:
        """Show a request's status-event timeline."""
        c = container()
        if c.store.get_request(request_id) is None:
            raise NotFoundError(f"there is no workspace request with id '{request_id}'.")
        return EventList(items=c.store.list_events(request_id))

    @api.post("/api/plan", response_model=PlanView, responses=PROBLEM_RESPONSES)
    def plan_workspace(body: WorkspaceRequest) -> PlanView:
        """Show what a request would create (steps, dependencies, names); nothing is created."""
        plan = container().intake.plan(request=body)
        return PlanView(
            names=plan.names,
            steps=[
                PlannedStep(
                    id=s.id,
                    kind=s.kind,
                    depends_on=s.depends_on,
                    resource_name=s.resource_name,
                    resource_id=s.resource_id,
                )
                for s in plan.steps
            ],
            tags=plan.tags,
        )

    unhealthy: set[str] = set()  # parts whose last check failed, so that their recovery is logged once

    def check(part: Literal["store", "bus"], get: Callable[[], object]) -> tuple[HealthCheck | None, float | None]:
        try:
            checked = probe(get())
        except Exception as exc:  # noqa: BLE001 - health reports whatever stops a part; it never fails itself
            code = str(getattr(exc, "code", "") or type(exc).__name__)
            faults.fault(code, f"the health check finds the {part} failing: {exc}")
            unhealthy.add(part)
            retry = exc.retry_after_s if isinstance(exc, TransientError) else None
            return HealthCheck(part=part, ok=False, code=code, reason=str(exc)), retry
        if not checked:
            return None, None
        if part in unhealthy:
            unhealthy.discard(part)
            faults.cleared(f"the {part}")
        return HealthCheck(part=part, ok=True), None

    @api.get(
        "/api/health",
        response_model=Health,
        response_model_exclude_none=True,
        responses={
            503: {
                "model": HealthProblem,
                "content": {PROBLEM: {}},
                "description": "The store or the bus cannot be read or written",
            }
        },
    )
    def health() -> Health | JSONResponse:
        """Say whether the service can work: its store and bus read and written once, now; and what it runs on."""
        c = container()
        results = [check("store", lambda: c.store), check("bus", lambda: c.bus)]
        checks = [found for found, _ in results if found is not None]
        failing = [found for found in checks if not found.ok]
        if not failing:
            s = c.settings
            return Health(store=s.store, bus=s.bus, cloud=s.cloud, checks=checks)
        body = HealthProblem(
            title="Service unavailable",
            status=503,
            detail="; ".join(f"{found.part}: {found.reason}" for found in failing),
            instance="/api/health",
            checks=checks,
        )
        response = JSONResponse(body.model_dump(exclude_none=True), status_code=503, media_type=PROBLEM)
        waits = [wait for _, wait in results if wait is not None]
        if waits:
            response.headers["Retry-After"] = _retry_after(max(waits))
        return response

    return api
