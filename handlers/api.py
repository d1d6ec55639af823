"""The REST API (DESIGN section 7): a FastAPI app, problem+json errors, idempotency, pagination."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Body, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.fault_log import FaultLog
from adapters.health import probe
from adapters.telemetry import TRACEPARENT
from composition import Container
from engine.authz import Act, Decision
from engine.intake import rest_key
from handlers.approvals import add_approval_routes
from handlers.chat import add_chat_routes
from handlers.identity import CurrentCaller, add_authentication, add_identity_routes
from handlers.lifecycle import add_lifecycle_routes
from handlers.portal import add_portal
from handlers.teams_bot import add_teams_bot_routes
from models.api import (
    Accepted,
    CallerView,
    Choices,
    DeadLetterItem,
    DeadLetterList,
    EventList,
    FieldProblem,
    Health,
    HealthCheck,
    HealthProblem,
    OperatorResult,
    PlannedStep,
    PlanView,
    ProblemDetails,
    ProfileChoice,
    RequestList,
    RequestSummary,
    RequestView,
    Validation,
    VmSizeChoice,
    WorkspaceConfig,
    links,
)
from models.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    Problem,
    TransientError,
)
from models.identity import AppRole, Caller
from models.records import RequestRecord, RequestStatus
from models.redact import redact
from models.request import DatastoreKind, WorkspaceRequest, field_path, parse_request

if TYPE_CHECKING:
    from devhost.identity import LocalIssuer
    from engine.ports import DeadLetter

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ProblemDetails, "content": {PROBLEM: {}}, "description": text}
    for code, text in (
        (401, "Not signed in: send an access token for this API"),
        (403, "Not allowed: the rule that refused it is named"),
        (404, "Not found"),
        (409, "Conflict"),
        (413, "The body is too large"),
        (422, "Invalid input"),
        (429, "Too many submissions: wait Retry-After seconds"),
        (503, "Briefly unavailable"),
    )
}
OPERATOR_DOOR = "rest"
SECRET_PROPERTIES = frozenset({"authorization"})


def problem(
    status: int,
    title: str,
    *,
    detail: str | None = None,
    errors: list[Problem] | None = None,
    existing_id: str | None = None,
    instance: str | None = None,
    rule: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    """Build an RFC 9457 problem+json response."""
    body = ProblemDetails(
        title=title,
        status=status,
        detail=detail,
        instance=instance,
        errors=[p.as_dict() for p in errors] if errors is not None else None,  # type: ignore[misc]
        existing_id=existing_id,
        rule=rule,
        code=code,
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM)


DOCS_ASSETS = "/api/docs/assets"


def add_api_docs(api: FastAPI) -> None:
    """Serve Swagger UI at /api/docs from packaged assets, never from a CDN.

    The assets are fastapi-offline's (Swagger UI 5, which reads the OpenAPI 3.1 documents FastAPI
    writes; Swagger UI 4 cannot); only its static files are used.
    """
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    assets = Path(fastapi_offline.__file__).parent / "static"
    api.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="api-docs-assets")

    @api.get("/api/docs", include_in_schema=False)
    def api_docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/api/openapi.json",
            title="Workspace Vending API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )


def _retry_after(seconds: float | None) -> str:
    return str(max(1, round(seconds or 5)))


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _traceparent(value: str | None) -> str | None:
    return value if value and TRACEPARENT.match(value) else None


class BodyTooLarge(Exception):
    """A request body grew past the limit while it was read."""


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413 problem+json, whether or not they declare a length.

    A declared Content-Length over the limit is refused before any of the body is read; a body sent
    in chunks is counted as it arrives and refused at the first byte over the limit.
    """

    def __init__(self, app: Any, max_bytes: Callable[[], int]) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes()
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, send, limit)
            return
        seen = 0
        started = False

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        async def tracked(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, send, limit)

    @staticmethod
    async def _refuse(scope: Any, send: Any, limit: int) -> None:
        response = problem(
            413,
            "The body is too large",
            detail=f"send at most {limit} bytes; a workspace request is far smaller than that.",
            instance=scope.get("path"),
        )
        await response(scope, None, send)  # type: ignore[arg-type]


def _dead_letter_item(letter: DeadLetter, kind: str, request_id: str | None, step_id: str | None) -> DeadLetterItem:
    return DeadLetterItem(
        message_id=letter.message_id,
        sequence=letter.sequence,
        queue=letter.queue,
        kind=kind,
        reason=letter.reason,
        description=redact(letter.description),
        delivery_count=letter.delivery_count,
        dead_lettered_at=letter.dead_lettered_at,
        request_id=request_id,
        step_id=step_id,
        # A sender's token travels with its message; operators see that there was one, never what it was.
        application_properties={
            k: ("***" if k.lower() in SECRET_PROPERTIES else redact(v))
            for k, v in letter.application_properties.items()
        },
        body=redact(letter.body.decode("utf-8", "replace")),
    )


def readable(c: Container, caller: Caller, request_id: str) -> RequestRecord:
    """Return a request the caller may read; another team's is 'not found', as a missing one is."""
    record = c.store.get_request(request_id)
    missing = f"there is no workspace request with id '{request_id}'."
    if record is None:
        raise NotFoundError(missing)
    decision = c.guard.decide(caller, Act.READ, team=record.team, door="rest", request_id=record.id)
    if not decision.allowed:
        raise NotFoundError(missing)
    return record


def create_api(container: Callable[[], Container], *, local_issuer: LocalIssuer | None = None) -> FastAPI:
    """Build the API; `container` gives the service's parts (built lazily, swappable in tests).

    Every route but `/api/health` and the chat doors (which check their platforms' signatures)
    authenticates its caller, and every act is decided by the one authorisation function. With
    `local_issuer` (the devhost), the embedded identity provider's routes are served too.
    """
    api = FastAPI(
        title="Workspace Vending",
        version="1.0.0",
        description="Self-service Azure Machine Learning workspaces: ask for one, follow its steps, get its config.",
        openapi_url="/api/openapi.json",
        docs_url=None,  # served below, with Swagger UI's assets from the service itself: no CDN, works offline
        redoc_url=None,
        # The HTTP door of the trace: with OpenTelemetry configured, FastAPI opens a server span per
        # request that continues the caller's traceparent; what a request starts is recorded under it.
        # Its own log records stay off: they would carry request bodies, unmasked.
        telemetry={"logs": False, "operation_spans": False, "auto_configure": False},
    )

    add_api_docs(api)

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
        return problem(
            409, "Conflict", detail=str(exc), code=exc.code, existing_id=exc.existing_id, instance=request.url.path
        )

    @api.exception_handler(ForbiddenError)
    async def _forbidden(request: Request, exc: ForbiddenError) -> JSONResponse:
        return problem(
            403, exc.title, detail=str(exc), errors=exc.problems or None, rule=exc.rule, instance=request.url.path
        )

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

    @api.exception_handler(PermanentError)
    async def _misconfigured(request: Request, exc: PermanentError) -> JSONResponse:
        # Something only the platform team can fix (e.g. the identity lacks Microsoft Graph permissions):
        # the caller is told that and the code; the details go to the log, for the platform team.
        faults.fault(exc.code, f"{request.method} {request.url.path} answers 503: {exc}")
        return problem(
            503,
            "Service unavailable",
            detail=f"The service cannot decide this request until the platform team fixes its setup ({exc.code}); "
            "try again later.",
            instance=request.url.path,
        )

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), instance=request.url.path)

    @api.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "Internal error", detail="The service failed; the error is logged. Try again later.")

    add_authentication(api, lambda: container().authenticator, problem)
    if local_issuer is not None:
        add_identity_routes(api, local_issuer)
    add_chat_routes(api, container, problem)
    add_teams_bot_routes(api, container, problem)
    add_portal(api, container, readable, local_issuer)
    api.add_middleware(BodyLimit, max_bytes=lambda: container().settings.max_body_bytes)

    def operator(c: Container, caller: Caller) -> None:
        c.guard.require(caller, Act.OPERATE, team=None, door=OPERATOR_DOOR)

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
        caller: CurrentCaller,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
        traceparent: Annotated[str | None, Header()] = None,
    ) -> Accepted | JSONResponse:
        """Ask for a workspace for one of your teams; provisioning starts at once and is followed with GET."""
        c = container()
        key = rest_key(caller.oid, idempotency_key) if idempotency_key else None
        # A replay of a request already made takes nothing from the caller's allowance.
        if key is None or c.store.find_by_idempotency_key(key) is None:
            wait = c.submissions(caller)
            if wait is not None:
                return too_many(c, caller, body.team, wait, request.url.path)
        result = c.intake.submit(
            request=body,
            caller=caller,
            source="rest",
            idempotency_key=key,
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

    def too_many(
        c: Container,
        caller: Caller,
        team: str,
        wait: float,
        path: str,
        *,
        what: str = "submissions",
        allowed: int | None = None,
    ) -> JSONResponse:
        s = c.settings
        reason = (
            f"you have made {allowed or s.submissions_per_window} {what} in {s.submission_window_s:g} s, the most "
            f"allowed; send this one again in {wait:.0f} s."
        )
        c.audit.decided(
            caller=caller,
            decision=Decision(False, "SubmissionRateLimit", reason),
            act=Act.REQUEST,
            team=team,
            door="rest",
        )
        response = problem(429, f"Too many {what}", detail=reason, instance=path, rule="SubmissionRateLimit")
        response.headers["Retry-After"] = _retry_after(wait)
        return response

    add_lifecycle_routes(api, container, PROBLEM_RESPONSES, too_many)
    add_approval_routes(api, container, PROBLEM_RESPONSES)

    @api.get("/api/workspaces/{request_id}", response_model=RequestView, responses=PROBLEM_RESPONSES)
    def get_workspace(request_id: str, request: Request, caller: CurrentCaller) -> RequestView:
        """Show a request of one of your teams: its status, every step, and its outputs."""
        c = container()
        record = readable(c, caller, request_id)
        return RequestView.full(record, c.store.get_steps(request_id), _base(request))

    @api.get(
        "/api/workspaces/{request_id}/config.json",
        response_model=WorkspaceConfig,
        responses={**PROBLEM_RESPONSES, 409: {**PROBLEM_RESPONSES[409], "description": "Not provisioned yet"}},
    )
    def workspace_config(request_id: str, caller: CurrentCaller) -> JSONResponse:
        """Download the workspace's config.json (what MLClient.from_config reads), once it is provisioned."""
        c = container()
        record = readable(c, caller, request_id)
        config = record.outputs.get("config_json")
        if not isinstance(config, dict) or record.status in (RequestStatus.DELETING, RequestStatus.DELETED):
            raise ConflictError(
                f"request {request_id} has no workspace to connect to ({record.status.value}); config.json is "
                "given once provisioning succeeds.",
                code="WorkspaceNotReady",
            )
        body = WorkspaceConfig.model_validate(config)
        return JSONResponse(
            body.model_dump(mode="json"),
            headers={"Content-Disposition": 'attachment; filename="config.json"', "Cache-Control": "no-store"},
        )

    @api.get("/api/workspaces", response_model=RequestList, responses=PROBLEM_RESPONSES)
    def list_workspaces(
        request: Request,
        caller: CurrentCaller,
        team: Annotated[str | None, Query(max_length=64)] = None,
        status: RequestStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
    ) -> RequestList:
        """List your teams' requests (every team's with Workspaces.ReadAll), newest first; follow `next` for more."""
        c = container()
        visible = c.authorizer.visible_teams(caller)
        if team is not None:
            teams: list[str] | None = [team] if visible is None or team in visible else []
        else:
            teams = None if visible is None else sorted(visible)
        c.audit.decided(
            caller=caller,
            decision=Decision(True, "ReadAllRole" if visible is None else "ReadOwnTeams", "allowed"),
            act=Act.READ,
            team=team or ("*" if visible is None else ",".join(sorted(visible))),
            door="rest",
            command="list",
        )
        items, next_cursor = _page(c, teams, status=status, limit=limit, cursor=cursor)
        base = _base(request)
        nxt = str(request.url.include_query_params(cursor=next_cursor)) if next_cursor else None
        return RequestList(items=[RequestSummary.of(r, base) for r in items], next=nxt)

    @api.get("/api/workspaces/{request_id}/events", response_model=EventList, responses=PROBLEM_RESPONSES)
    def list_events(request_id: str, caller: CurrentCaller) -> EventList:
        """Show the status-event timeline of a request of one of your teams."""
        c = container()
        readable(c, caller, request_id)
        return EventList(items=c.store.list_events(request_id))

    @api.get("/api/me", response_model=CallerView, responses=PROBLEM_RESPONSES)
    def me(caller: CurrentCaller) -> CallerView:
        """Show who the service sees calling, its roles, and the teams it acts for."""
        c = container()
        return CallerView(
            oid=caller.oid,
            tid=caller.tid,
            name=caller.name,
            username=caller.username,
            roles=sorted(caller.roles),
            teams=sorted(c.authorizer.teams_of(caller)),
            reads_every_team=c.authorizer.visible_teams(caller) is None,
        )

    @api.get("/api/operator/deadletters", response_model=DeadLetterList, responses=PROBLEM_RESPONSES)
    def dead_letters(caller: CurrentCaller) -> DeadLetterList:
        """Operators (Vending.Operator): every queue's dead letters."""
        c = container()
        operator(c, caller)
        views = c.deadletters.list()
        c.audit.operator(caller=caller, action="deadletters.list", door=OPERATOR_DOOR, outcome=f"{len(views)} listed")
        return DeadLetterList(items=[_dead_letter_item(v.letter, v.kind, v.request_id, v.step_id) for v in views])

    @api.post(
        "/api/operator/deadletters/{message_id:path}/replay", response_model=OperatorResult, responses=PROBLEM_RESPONSES
    )
    def replay_dead_letter(
        message_id: str,
        caller: CurrentCaller,
        sequence: Annotated[int | None, Query(ge=0, description="Which letter, when several share the id.")] = None,
    ) -> OperatorResult:
        """Operators (Vending.Operator): send a dead letter again after its cause was fixed."""
        c = container()
        operator(c, caller)
        view = c.deadletters.find(message_id, sequence)
        if view is None:
            raise NotFoundError(f"there is no dead letter with message id '{message_id}'.")
        outcome = c.deadletters.replay(message_id, view.letter.sequence)
        c.audit.operator(
            caller=caller,
            action="deadletters.replay",
            door=OPERATOR_DOOR,
            outcome=outcome,
            request_id=view.request_id,
            subject=message_id,
        )
        return OperatorResult(action="deadletters.replay", outcome=outcome)

    @api.post("/api/operator/deadletters/process", response_model=OperatorResult, responses=PROBLEM_RESPONSES)
    def process_dead_letters(caller: CurrentCaller) -> OperatorResult:
        """Operators (Vending.Operator): record what each dead letter means, now (the timer does it too)."""
        c = container()
        operator(c, caller)
        count = c.deadletters.process()
        outcome = f"recorded {count} dead-lettered messages"
        c.audit.operator(caller=caller, action="deadletters.process", door=OPERATOR_DOOR, outcome=outcome)
        return OperatorResult(action="deadletters.process", outcome=outcome, count=count)

    @api.post("/api/operator/sweep", response_model=OperatorResult, responses=PROBLEM_RESPONSES)
    def sweep(caller: CurrentCaller) -> OperatorResult:
        """Operators (Vending.Operator): repair stalled steps and requests now (the timer does it too)."""
        c = container()
        operator(c, caller)
        count = c.engine.sweep()
        outcome = f"repaired {count} steps or requests"
        c.audit.operator(caller=caller, action="sweep", door=OPERATOR_DOOR, outcome=outcome)
        return OperatorResult(action="sweep", outcome=outcome, count=count)

    @api.post("/api/plan", response_model=PlanView, responses=PROBLEM_RESPONSES)
    def plan_workspace(body: WorkspaceRequest, request: Request, caller: CurrentCaller) -> PlanView | JSONResponse:
        """Show what a request for one of your teams would create (steps, dependencies, names); nothing is created."""
        c = container()
        # A plan reads ARM (confinement): each principal has an allowance, as for submissions.
        wait = c.plans(caller)
        if wait is not None:
            return too_many(
                c, caller, body.team, wait, request.url.path, what="plans", allowed=c.settings.plans_per_window
            )
        review = c.intake.review(request=body, caller=caller, source="rest")
        plan = review.plan
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
            estimate=review.estimate,
            approval=review.approval.rules if review.approval else [],
            preflight=[FieldProblem(**p.as_dict()) for p in review.preflight],
        )

    @api.post("/api/validate", response_model=Validation, responses=PROBLEM_RESPONSES)
    def validate_workspace(body: Annotated[Any, Body()], caller: CurrentCaller) -> Validation:
        """Check a request as POST /api/workspaces would, without calling Azure: every problem, by field; nothing is kept."""
        problems, review = container().intake.validate(data=body, caller=caller)
        return Validation(
            valid=not problems,
            problems=[FieldProblem(**p.as_dict()) for p in problems],
            estimate=review.estimate if review else None,
            approval=review.approval.rules if review and review.approval else [],
        )

    @api.get("/api/choices", response_model=Choices, responses=PROBLEM_RESPONSES)
    def choices(caller: CurrentCaller) -> Choices:
        """List what a request of yours may choose, from policy: your teams, environments, regions, profiles, VM sizes."""
        c = container()
        policy = c.policy
        teams = sorted(policy.teams) if caller.has_role(AppRole.ADMIN) else sorted(c.authorizer.teams_of(caller))
        prices = policy.prices
        return Choices(
            teams=teams,
            environments=[e.value for e in policy.environments],
            regions=list(policy.allowed_regions),
            profiles=[
                ProfileChoice(
                    name=name,
                    description=p.description,
                    compute=p.compute,
                    datastores=p.datastores,
                    container_registry=p.container_registry,
                )
                for name, p in policy.profiles.items()
            ],
            vm_sizes=[
                VmSizeChoice(
                    name=name,
                    vcpus=v.vcpus,
                    gpus=v.gpus,
                    family=v.family,
                    hourly=prices.hourly(name) if prices else None,
                )
                for name, v in policy.vm_sizes.items()
            ],
            datastore_kinds=[k.value for k in DatastoreKind],
            compute_kinds=["cluster", "instance"],
            tiers=["dedicated", "low_priority"],
            required_tags=list(policy.required_tags),
            max_nodes_per_cluster=policy.max_nodes_per_cluster,
            max_min_nodes=policy.max_min_nodes,
            currency=prices.currency if prices else None,
            prices_as_of=prices.as_of.isoformat() if prices else None,
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


def _page(
    c: Container, teams: list[str] | None, *, status: RequestStatus | None, limit: int, cursor: str | None
) -> tuple[list[RequestRecord], str | None]:
    """Return one page of the requests of `teams` (None: every team), newest first, and the next cursor.

    The cursor is the last id shown (ids are ULIDs: id order is time order), so each team's page
    after it can be merged into one page exactly.
    """
    if teams is None:
        page = c.store.list_requests(status=status, limit=limit, cursor=cursor)
        return page.items, page.next_cursor
    found: list[RequestRecord] = []
    more = False
    for team in teams:
        page = c.store.list_requests(team=team, status=status, limit=limit, cursor=cursor)
        found += page.items
        more = more or page.next_cursor is not None
    found.sort(key=lambda r: r.id, reverse=True)
    items = found[:limit]
    more = more or len(found) > limit
    return items, (items[-1].id if more and items else None)
