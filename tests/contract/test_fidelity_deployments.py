"""Failed workspace deployments read as ARM reports them, re-deployed only within the retry budget, and purges awaited.

ARM wraps a resource provider's error: DeploymentFailed, then the RP's HTTP status name (Conflict,
BadRequest) with the RP's JSON body as the message, or ResourceDeploymentFailure for a create that
ended Failed (Microsoft Learn, "Troubleshoot common Azure deployment errors"; Microsoft.Resources
deployments spec, api-version 2020-06-01 as azure-ai-ml sends).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from cloud.ml import ArmDeployment, deployment_error
from cloud.provider import AzureProvider
from emulator.faults import Fault
from emulator.server import EmulatorServer
from emulator.state import parse_path
from engine.ports import StepContext
from models.errors import PermanentError, TransientError, VendingError
from models.outcomes import Done, Fail, Retry, Wait
from tests.conftest import ROOT, example
from tests.contract.conftest import _plan, drive

FIXTURES = ROOT / "tests" / "events" / "arm"
WORKSPACES = "Microsoft.MachineLearningServices/workspaces"


def _deployment(name: str) -> ArmDeployment:
    return ArmDeployment.model_validate_json((FIXTURES / name).read_text())


def _up_to(provider: AzureProvider, p: Any, last: str) -> dict[str, dict[str, Any]]:
    outputs: dict[str, dict[str, Any]] = {}
    for s in p.steps:
        if s.id == last:
            break
        assert isinstance(drive(provider, p, s.id, outputs), Done), s.id
    return outputs


def _deployment_puts(emulator: EmulatorServer) -> list[dict[str, Any]]:
    return [
        r
        for r in emulator.state.requests
        if r["method"] == "PUT" and "/microsoft.resources/deployments/" in r["path"].lower()
    ]


def _latest_deployment(emulator: EmulatorServer, p: Any) -> dict[str, Any]:
    group = f"/subscriptions/{p.names.subscription_id}/resourceGroups/{p.names.resource_group}"
    found = emulator.state.list_children(parse_path(f"{group}/providers/Microsoft.Resources/deployments"))
    return found[-1]


@pytest.mark.parametrize(
    ("fixture", "code"),
    [
        ("deployment-failed-conflict.json", "MissingSubscriptionRegistration"),  # a 409 the RP gave at once
        ("deployment-failed-resource.json", "RequestDisallowedByPolicy"),  # a create that ended Failed
    ],
)
def test_a_failed_deployment_is_read_to_its_innermost_error(fixture: str, code: str) -> None:
    error = deployment_error(_deployment(fixture), "deploying workspace 'mlw-fixtures-test'")
    assert isinstance(error, PermanentError), error  # 'Conflict' alone would read as transient
    assert error.code == code and code in str(error)


def test_a_permanent_refusal_inside_the_deployment_fails_at_once(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "dep-perm"})
    outputs = _up_to(provider, p, "workspace")
    emulator.state.requests.clear()
    emulator.state.config.unregistered = ["microsoft.machinelearningservices"]
    outcome = drive(provider, p, "workspace", outputs)
    assert isinstance(outcome, Fail) and outcome.code == "MissingSubscriptionRegistration", outcome
    assert len(_deployment_puts(emulator)) == 1  # never deployed again
    error = _latest_deployment(emulator, p)["properties"]["error"]
    assert error["code"] == "DeploymentFailed"
    detail = error["details"][0]
    assert detail["code"] == "Conflict"  # the RP's status, its body as text
    assert json.loads(detail["message"])["error"]["code"] == "MissingSubscriptionRegistration"


def test_a_transient_failure_is_deployed_again_as_a_counted_retry(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "dep-retry"})
    outputs = _up_to(provider, p, "workspace")
    emulator.state.requests.clear()
    emulator.state.faults.replace(
        [Fault(type=WORKSPACES, method="PUT", status=500, code="InternalServerError", message="RP hiccup.", times=1)]
    )
    outcome = drive(provider, p, "workspace", outputs, retry=False)
    # A Retry, not a Wait: the engine counts it against step_max_retries, so re-deploys are bounded.
    assert isinstance(outcome, Retry) and outcome.code == "InternalServerError", outcome
    assert "RP hiccup" in outcome.error
    assert len(_deployment_puts(emulator)) == 2  # the first one, and one more for this retry
    assert isinstance(drive(provider, p, "workspace", outputs), Done)


def _fail_the_next_workspace_create(emulator: EmulatorServer) -> None:
    """The next workspace PUT is accepted and then ends Failed, as a create the RP could not finish does."""
    emulator.state.faults.replace(
        [
            Fault(
                type=WORKSPACES,
                method="PUT",
                provisioning_state="Failed",
                code="InternalServerError",
                message="The workspace could not be provisioned.",
                times=1,
            )
        ]
    )


def test_a_create_that_ends_failed_is_a_resource_deployment_failure(
    provider: AzureProvider, emulator: EmulatorServer
) -> None:
    p = _plan(example("cpu-small.json") | {"team": "dep-async"})
    outputs = _up_to(provider, p, "workspace")
    _fail_the_next_workspace_create(emulator)
    outcome = drive(provider, p, "workspace", outputs, retry=False)
    assert isinstance(outcome, Retry) and "could not be provisioned" in outcome.error, outcome
    deployments = [d for d in _all_deployments(emulator, p) if d["properties"]["provisioningState"] == "Failed"]
    detail = deployments[0]["properties"]["error"]["details"][0]
    status = json.loads(detail["message"])
    assert detail["code"] == "Conflict" and status["status"] == "Failed"
    assert status["error"]["code"] == "ResourceDeploymentFailure"
    assert status["error"]["details"][0]["code"] == "InternalServerError"
    assert isinstance(drive(provider, p, "workspace", outputs), Done)


def _all_deployments(emulator: EmulatorServer, p: Any) -> list[dict[str, Any]]:
    group = f"/subscriptions/{p.names.subscription_id}/resourceGroups/{p.names.resource_group}"
    return emulator.state.list_children(parse_path(f"{group}/providers/Microsoft.Resources/deployments"))


def test_a_purge_is_waited_for_before_deploying_again(provider: AzureProvider, emulator: EmulatorServer) -> None:
    from models.policy import WorkspacePolicy

    p = _plan(example("cpu-small.json") | {"team": "dep-purge"}, workspace=WorkspacePolicy(on_soft_deleted="purge"))
    outputs = _up_to(provider, p, "workspace")
    assert isinstance(drive(provider, p, "workspace", outputs), Done)
    ws_id = p.step("workspace").resource_id
    emulator.state.delete(parse_path(ws_id))  # soft-deleted: the name is held
    ctx = StepContext(request_id="r", names=p.names, attempt=1, dependency_outputs=outputs)
    step = p.step("workspace")
    emulator.state.config.latency_by_type = {WORKSPACES.lower(): 2.0}  # a purge that takes its time
    try:
        assert isinstance(provider.reconcile(step, ctx), Wait)  # the deployment fails on the soft-deleted name
        emulator.state.requests.clear()
        outcome = provider.reconcile(step, ctx)
        assert isinstance(outcome, Wait) and "purg" in outcome.reason, outcome
        assert not _deployment_puts(emulator)  # nothing deployed while the purge runs
        assert ws_id in emulator.state.soft_deleted_workspaces()
    finally:
        emulator.state.config.latency_by_type = {}
    done = drive(provider, p, "workspace", outputs)
    assert isinstance(done, Done) and done.outputs["soft_delete_action"] == "purged"
    assert ws_id not in emulator.state.soft_deleted_workspaces()


def test_the_emulator_answers_a_purge_with_an_operation(emulator: EmulatorServer) -> None:
    group = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-purge-op"
    ws = parse_path(f"{group}/providers/{WORKSPACES}/mlw-purge-op")
    emulator.state.put(parse_path(group), {"location": "westeurope"})
    emulator.state.put(ws, {"location": "westeurope", "identity": {"type": "SystemAssigned"}, "properties": {}})
    emulator.state.delete(ws)  # soft-deleted
    status, op = emulator.state.purge_workspace(ws)
    assert status == 202 and op is not None  # Workspaces_Delete: 200, 202 or 204
    assert emulator.state.purge_workspace(ws) == (202, op)  # asked again while it runs: the same operation
    assert emulator.state.operation(op)["status"] in ("InProgress", "Succeeded")


def test_unwrapping_keeps_a_plain_conflict_transient() -> None:
    from cloud.errors import ErrorDetail, classify_wrapped

    busy = ErrorDetail(
        "DeploymentFailed", "At least one resource deployment operation failed.", (ErrorDetail("Conflict", "busy"),)
    )
    assert isinstance(classify_wrapped(busy, what="deploying"), TransientError)


def test_inner_codes_that_name_an_http_status_or_a_retry_are_transient_and_keys_ignore_case() -> None:
    import json

    from cloud.errors import ErrorDetail, classify_wrapped

    for code in ("RetryableError", "TooManyRequests", "InternalServerError", "BadGateway", "ServiceUnavailable"):
        wrapped = ErrorDetail(
            "DeploymentFailed", "At least one resource deployment operation failed.", (ErrorDetail(code, "m"),)
        )
        assert isinstance(classify_wrapped(wrapped, what="deploying"), TransientError), code
    # A resource provider's JSON in a message, with its keys in another case, is still opened.
    rp = json.dumps({"Code": "StorageAccountAlreadyTaken", "Message": "The storage account named x is already taken."})
    taken = ErrorDetail("DeploymentFailed", "failed", (ErrorDetail("Conflict", rp),))
    found = classify_wrapped(taken, what="deploying")
    assert isinstance(found, PermanentError) and found.code == "StorageAccountAlreadyTaken"
    # Nesting past a bound is read as it stands, never followed without end.
    deep = json.dumps({"error": {"code": "BadRequest", "message": "bottom"}})
    for _ in range(12):
        deep = json.dumps({"error": {"code": "Conflict", "message": deep}})
    assert isinstance(
        classify_wrapped(ErrorDetail("DeploymentFailed", "", (ErrorDetail("Conflict", deep),)), what="d"), VendingError
    )


class _Answer:
    """A raw ARM answer, as azure-core's send_request returns it (it does not raise on errors)."""

    def __init__(self, status: int, body: dict[str, object] | None, headers: dict[str, str] | None = None) -> None:
        import json

        self.status_code = status
        self.content = json.dumps(body).encode() if body is not None else b""
        self._body = body
        self.headers = headers or {}

    def json(self) -> object:
        return self._body


def test_a_throttled_or_failing_purge_answer_is_transient_and_a_bad_request_is_permanent() -> None:
    from cloud.ml import _answer_error

    throttled = _answer_error(
        _Answer(429, {"error": {"code": "TooManyRequests", "message": "slow down"}}, {"Retry-After": "7"}), "purging"
    )
    assert isinstance(throttled, TransientError) and throttled.retry_after_s == 7
    assert isinstance(_answer_error(_Answer(503, None), "purging"), TransientError)
    refused = _answer_error(_Answer(400, {"error": {"code": "BadRequest", "message": "no"}}), "purging")
    assert isinstance(refused, PermanentError)


def test_a_failed_deployment_on_a_later_page_is_still_read(provider: AzureProvider, emulator: EmulatorServer) -> None:
    # Two workspaces of one team share its resource group, so its deployment history holds both; one a page.
    first = _plan(example("cpu-small.json") | {"team": "dep-pages", "workspace_name": "dep-pages-one"})
    done = _up_to(provider, first, "workspace")
    assert isinstance(drive(provider, first, "workspace", done), Done)
    p = _plan(example("cpu-small.json") | {"team": "dep-pages", "workspace_name": "dep-pages-two"})
    assert p.names.resource_group == first.names.resource_group
    outputs = _up_to(provider, p, "workspace")
    _fail_the_next_workspace_create(emulator)
    emulator.state.config.page_size = 1
    try:
        before = _deployment_reads(emulator)
        outcome = drive(provider, p, "workspace", outputs, retry=False)
        listed = _deployment_reads(emulator) - before
    finally:
        emulator.state.config.page_size = 100
    # Its failed deployment is the resource group's second: read from the second page, as a counted retry.
    assert isinstance(outcome, Retry) and "could not be provisioned" in outcome.error, outcome
    assert listed >= 2  # one page, then the one its nextLink named
    assert isinstance(drive(provider, p, "workspace", outputs), Done)


def _deployment_reads(emulator: EmulatorServer) -> int:
    return sum(
        row["count"]
        for row in emulator.state.stats()["calls_by_type"]
        if row["operation"] == "reads" and row["type"].lower() == "microsoft.resources/deployments"
    )


class _Deployments:
    """A deployments client answering `pages` in turn, then the last one for ever (a list that never ends)."""

    def __init__(self, *pages: dict[str, Any]) -> None:
        self.pages = list(pages)
        self.sent: list[str] = []

    def send_request(self, request: Any) -> _Answer:
        self.sent.append(request.url)
        if len(self.sent) > 60:
            raise AssertionError("the list was followed past its page limit")
        return _Answer(200, self.pages[min(len(self.sent), len(self.pages)) - 1])


class _Clients:
    def __init__(self, deployments: _Deployments) -> None:
        self.endpoint = type("Endpoint", (), {"arm_url": "https://management.azure.com/"})()
        self._deployments = deployments

    def deployments(self, sub: str) -> _Deployments:
        return self._deployments


def _listed(deployments: _Deployments, workspace: str = "dep-links") -> list[Any]:
    from cloud.ml import _recent_deployments

    p = _plan(example("cpu-small.json") | {"team": "dep-links", "workspace_name": workspace})
    ctx = StepContext(request_id="r", names=p.names, attempt=1)
    return _recent_deployments(p.step("workspace"), ctx, _Clients(deployments))  # type: ignore[arg-type]


class _Endless(_Deployments):
    """Every page names a new next page."""

    def send_request(self, request: Any) -> _Answer:
        self.sent.append(request.url)
        if len(self.sent) > 60:
            raise AssertionError("the list was followed past its page limit")
        return _Answer(200, {"value": [], "nextLink": f"https://management.azure.com/next?$skipToken={len(self.sent)}"})


@pytest.mark.parametrize(
    ("deployments", "said", "sends"),
    [
        (_Deployments({"value": [], "nextLink": "https://elsewhere.example/next"}), "leaves the ARM endpoint", 1),
        (_Deployments({"value": [], "nextLink": "https://management.azure.com@evil.example/"}), "leaves the ARM", 1),
        (_Deployments({"value": [], "nextLink": "http://management.azure.com/next"}), "leaves the ARM endpoint", 1),
        (_Deployments({"value": [], "nextLink": "https://management.azure.com/same"}), "came round again", 2),
        (_Endless(), "ran past 50 pages", 50),
    ],
)
def test_a_deployment_list_follows_next_link_only_on_arm_and_not_for_ever(
    deployments: _Deployments, said: str, sends: int
) -> None:
    with pytest.raises(TransientError, match=said):
        _listed(deployments)
    # The token never went to another host: every request was to ARM.
    assert all(url.startswith("https://management.azure.com/") for url in deployments.sent)
    assert len(deployments.sent) == sends


def test_a_deployment_list_reads_arm_s_own_links_and_only_the_step_s_deployments() -> None:
    ours = {"name": "dep-links-1", "properties": {"provisioningState": "Running", "timestamp": "2026-12-01T10:00:00Z"}}
    deployments = _Deployments(
        # ARM may spell its own host with a port and in capitals; a link without api-version gets the list's.
        {"value": [ours], "nextLink": "https://Management.Azure.com:443/subscriptions/x/next?$skipToken=1"},
        {
            "value": [
                {"name": "someone-elses", "properties": {"provisioningState": 5, "timestamp": "not a time"}},
                "not even an object",
                {"name": "dep-links-2", "properties": None},
            ],
            "nextLink": "",  # the end, as the SDK reads it
        },
    )
    found = _listed(deployments)
    assert [d.name for d in found] == ["dep-links-2", "dep-links-1"]  # oldest first; no timestamp is oldest
    assert [d.state for d in found] == ["Succeeded", "Running"]
    assert len(deployments.sent) == 2 and "api-version=2026-06-01" in deployments.sent[1]
    assert "/providers/Microsoft.Resources/deployments?api-version=2026-06-01" in deployments.sent[0]
