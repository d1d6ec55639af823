"""The Functions entry, called as the host calls it: registered functions with real azure.functions types."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
import pytest
from azure.functions.servicebus import ServiceBusMessage
from azure.functions.timer import TimerRequest

from adapters.sqlite_bus import SqliteBus
from adapters.sqlite_store import SqliteStore
from engine.intake import queue_key
from models.errors import TransientError
from models.records import Notification, RequestStatus, StepStatus
from models.request import parse_request
from tests.callers import ADMIN_OID, PLATFORM, PermitAll, Unconfined, bearer, sender
from tests.conftest import ROOT, example, poll
from tests.fakes import FakeCloud


@pytest.fixture
def function_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # The module is imported once (the host does the same); each test swaps in fresh parts.
    monkeypatch.setenv("VENDING_DATA_DIR", str(tmp_path))
    module = importlib.import_module("function_app")
    module.container.swap(
        store=SqliteStore(tmp_path / "state.db"),
        bus=SqliteBus(tmp_path / "bus.db"),
        cloud=FakeCloud(),
        sinks=[StoreEventLogLater()],
        authorizer=PermitAll(),
        confinement=Unconfined(),
    )
    SIGNED.clear()
    SIGNED.update(sender(module.container))
    return module


SIGNED: dict[str, str] = {}
"""The application properties of a message the test's admin sent (set by the fixture)."""


class StoreEventLogLater:
    """Events go nowhere here; the store-backed timeline is tested elsewhere."""

    def emit(self, event: object) -> None:
        pass


_INDEXED: dict[int, dict[str, Any]] = {}


def _functions(module: ModuleType) -> dict[str, Any]:
    # The worker indexes an app once; a second get_functions() on the same app refuses duplicate names.
    if id(module.app) not in _INDEXED:
        _INDEXED[id(module.app)] = {f.get_function_name(): f for f in module.app.get_functions()}
    return _INDEXED[id(module.app)]


class _Context:
    invocation_id = "test-invocation"
    function_name = "http_app_func"
    function_directory = str(ROOT)
    trace_context = None
    retry_context = None


def _http(
    module: ModuleType, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    import asyncio

    fn = _functions(module)["http_app_func"].get_user_function()
    request = func.HttpRequest(
        method=method,
        url=f"http://localhost{path}",
        headers={"content-type": "application/json", **bearer(module.container), **(headers or {})},
        body=json.dumps(body).encode() if body is not None else b"",
    )
    return asyncio.run(fn(request, _Context()))


def _sb(
    body: bytes, message_id: str, delivery_count: int = 1, properties: dict[str, Any] | None = None
) -> ServiceBusMessage:
    """A message as the Python worker builds it for a Service Bus trigger."""
    return ServiceBusMessage(
        body=body,
        message_id=message_id,
        delivery_count=delivery_count,
        content_type="application/json",
        application_properties={**SIGNED, **(properties or {})},
        user_properties={**SIGNED, **(properties or {})},
    )


def test_registered_functions_and_bindings(function_app: ModuleType) -> None:
    fns = _functions(function_app)
    assert set(fns) == {
        "http_app_func",
        "warmup",
        "onboarding",
        "steps",
        "notifications",
        "sweeper",
        "deadletters",
        "lifecycle",
    }
    bindings = {name: json.loads(f.get_function_json())["bindings"] for name, f in fns.items()}
    trigger = bindings["onboarding"][0]
    assert (trigger["type"], trigger["queueName"], trigger["connection"]) == (
        "serviceBusTrigger",
        "%OnboardingQueueName%",
        "ServiceBusConnection",
    )
    assert bindings["steps"][0]["queueName"] == "%StepsQueueName%"
    assert bindings["notifications"][0]["queueName"] == "%NotificationsQueueName%"
    assert bindings["sweeper"][0]["schedule"] == "%SweepSchedule%"
    assert bindings["lifecycle"][0]["schedule"] == "%LifecycleSchedule%"
    # Microsoft Learn, "Azure Functions warmup trigger": one per app, named warmup, type warmupTrigger, direction in.
    [warm] = bindings["warmup"]
    assert (warm["type"], warm["direction"].lower(), warm["name"]) == ("warmupTrigger", "in", "warmup")


def test_http_through_the_asgi_function(function_app: ModuleType) -> None:
    resp = _http(function_app, "POST", "/api/workspaces", example("cpu-small.json"))
    assert resp.status_code == 202, resp.get_body()
    accepted = json.loads(resp.get_body())
    assert resp.headers["location"].endswith(f"/api/workspaces/{accepted['id']}")
    view = json.loads(_http(function_app, "GET", f"/api/workspaces/{accepted['id']}").get_body())
    assert view["status"] == "accepted" and len(view["steps"]) == 10
    bad = _http(function_app, "POST", "/api/workspaces", example("bad-request.json"))
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"


def test_the_portal_is_served_at_the_root_of_the_host(function_app: ModuleType) -> None:
    # host.json has no route prefix, so the one HTTP function's catch-all route also takes `/` (docs/portal.md).
    http = json.loads(_functions(function_app)["http_app_func"].get_function_json())["bindings"][0]
    assert http["route"] == "/{*route}"
    assert json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["routePrefix"] == ""
    page = _http(function_app, "GET", "/")
    assert page.status_code == 200, page.get_body()
    assert page.mimetype.startswith("text/html") and b"Workspace Vending" in page.get_body()
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    script = _http(function_app, "GET", "/portal/assets/portal.js")
    assert script.status_code == 200 and b"export async function api" in script.get_body()


def test_onboarding_then_steps_through_the_queue_functions(function_app: ModuleType) -> None:
    fns = _functions(function_app)
    container = function_app.container
    fns["onboarding"].get_user_function()(_sb(json.dumps(example("onboarding.json")).encode(), "m-1"))
    fns["onboarding"].get_user_function()(_sb(json.dumps(example("onboarding.json")).encode(), "m-1"))  # redelivery
    records = container.store.list_requests(team="churn").items
    assert sorted(r.environment for r in records) == ["dev", "prod", "test"]
    steps_fn = fns["steps"].get_user_function()

    def pump() -> bool:
        # Play the Functions host: deliver each step message to the steps function, complete on return.
        for m in container.bus.receive("steps", max_messages=10):
            steps_fn(_sb(m.body, m.message_id, m.delivery_count, m.application_properties))
            container.bus.complete(m)
        return all(container.store.get_request(r.id).status.terminal for r in records)

    poll(pump, timeout=60, what="three requests to finish through the steps function")
    for r in records:
        assert container.store.get_request(r.id).status == RequestStatus.SUCCEEDED
        assert {s.status for s in container.store.get_steps(r.id)} == {StepStatus.SUCCEEDED}


def test_the_lifecycle_timer_tears_down_an_expired_workspace(function_app: ModuleType) -> None:
    fns = _functions(function_app)
    container = function_app.container
    accepted = json.loads(_http(function_app, "POST", "/api/workspaces", example("cpu-small.json")).get_body())
    steps_fn = fns["steps"].get_user_function()

    def pump(status: RequestStatus) -> bool:
        for m in container.bus.receive("steps", max_messages=10):
            steps_fn(_sb(m.body, m.message_id, m.delivery_count, m.application_properties))
            container.bus.complete(m)
        return container.store.get_request(accepted["id"]).status == status

    poll(lambda: pump(RequestStatus.SUCCEEDED), timeout=60, what="the request to succeed")
    record = container.store.get_request(accepted["id"])
    # Time passes: the workspace's expiry is behind us when the timer next fires.
    container.store.update_request(record.model_copy(update={"expires_at": container.clock() - timedelta(seconds=1)}))
    fns["lifecycle"].get_user_function()(TimerRequest(past_due=False))
    poll(lambda: pump(RequestStatus.DELETED), timeout=60, what="the expired workspace to be torn down")
    gone = container.store.get_request(accepted["id"])
    assert gone.operation == "delete" and gone.teardown is not None and gone.teardown.deleted


def test_bad_messages_are_recorded_or_dropped_with_a_reason_never_retried(
    function_app: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    fns = _functions(function_app)
    fns["onboarding"].get_user_function()(_sb(b"not json at all", "m-bad"))
    [rejected] = function_app.container.store.list_requests(status=RequestStatus.REJECTED).items
    assert "not JSON" in rejected.problems[0]["message"]
    fns["steps"].get_user_function()(_sb(b'{"nonsense": true}', "m-bad-step"))  # returns: completed, not retried
    assert "cannot be processed and is dropped" in caplog.text


def test_http_path_does_not_import_azure_ai_ml() -> None:
    code = (
        "import sys, json, asyncio\n"
        "import function_app\n"
        "from tests.contract.test_function_app import _http\n"
        "r = _http(function_app, 'POST', '/api/plan', json.load(open('examples/cpu-small.json')))\n"
        "assert r.status_code == 200, r.get_body()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('azure.ai.ml') or m.startswith('azure.mgmt'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_import_indexes_the_functions_without_building_the_app() -> None:
    # The worker imports the module to index its functions: FastAPI, the store and the engine wait for first use.
    code = (
        "import sys, json\n"
        "import azure.functions\n"
        "before = set(sys.modules)\n"
        "import function_app\n"
        "names = sorted(f.get_function_name() for f in function_app.app.get_functions())\n"
        "added = set(sys.modules) - before\n"
        "heavy = sorted(m for m in added if m.split('.')[0] in ('fastapi', 'starlette', 'composition', 'httpx', 'jwt',"
        " 'sqlite3', 'engine', 'adapters', 'cloud', 'azure.ai') or (m.startswith('models.') and m != 'models.settings'))\n"
        "print(json.dumps({'names': names, 'heavy': heavy, 'built': function_app._api.app.built}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert "http_app_func" in seen["names"] and "steps" in seen["names"]
    assert seen["heavy"] == [] and seen["built"] is False


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"VENDING_CLOUD": "azure"}, "cloud=azure needs the Entra tenant id"),
        (
            {
                "VENDING_CLOUD": "azure",
                "VENDING_TENANT_ID": "2f4a6c8e-0b1d-4f3a-9c5e-7a9b1d3f5e70",
                "VENDING_POLICY_FILE": "nowhere.yaml",
            },
            "cannot read policy file",
        ),
        ({"VENDING_WORKERS": "many"}, "workers"),
        (
            {
                "VENDING_CLOUD": "azure",
                "VENDING_TENANT_ID": "2f4a6c8e-0b1d-4f3a-9c5e-7a9b1d3f5e70",
                "VENDING_AUTH_MODE": "local",
                "WEBSITE_SITE_NAME": "func-vending-test",
            },
            "refused on App Service",
        ),
        # The package holds no emulator (.funcignore): on App Service the service acts on Azure or not at all.
        ({"WEBSITE_SITE_NAME": "func-vending-test"}, "on App Service set VENDING_CLOUD=azure"),
    ],
)
def test_a_deployment_the_service_cannot_run_with_fails_the_import(env: dict[str, str], says: str) -> None:
    # The worker's indexing fails, so no function runs and no message is taken off its queue to be
    # abandoned and dead-lettered by invocations that cannot succeed.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VENDING_", "AZURE_TENANT", "WEBSITE_"))}
    out = subprocess.run(
        [sys.executable, "-c", "import azure.functions, function_app"],
        check=False,
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and says in out.stderr, out.stderr[-2000:]


def test_the_container_uses_the_policy_the_import_checked(tmp_path: Path) -> None:
    # cloud=azure: the import reads and checks the policy; the container takes that one, not a second read
    # (the file is gone by the time the container is built, so a second read would fail).
    policy = tmp_path / "policy.yaml"
    policy.write_text((ROOT / "policy" / "default.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    code = (
        "import os, sys, json\n"
        "import function_app\n"
        f"os.remove({str(policy)!r})\n"
        "c = function_app.container\n"
        "print(json.dumps({'policy': c.policy is function_app.STARTUP.policy,"
        " 'auth': c.auth_settings is function_app.STARTUP.auth_settings, 'tenant': str(c.policy.tenant_id)}))\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VENDING_", "AZURE_TENANT", "WEBSITE_"))}
    env = {
        **clean,
        "VENDING_DATA_DIR": str(tmp_path / "data"),
        "VENDING_CLOUD": "azure",
        "VENDING_TENANT_ID": "2f4a6c8e-0b1d-4f3a-9c5e-7a9b1d3f5e70",
        "VENDING_POLICY_FILE": str(policy),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "policy": True,
        "auth": True,
        "tenant": "2f4a6c8e-0b1d-4f3a-9c5e-7a9b1d3f5e70",
    }


def test_the_warmup_trigger_builds_the_http_app_and_intake(tmp_path: Path) -> None:
    code = (
        "import sys, json\n"
        "import function_app\n"
        "from azure.functions.warmup import WarmUpContext\n"
        "fns = {f.get_function_name(): f for f in function_app.app.get_functions()}\n"
        "fns['warmup'].get_user_function()(WarmUpContext())\n"
        "c = function_app.container\n"
        "print(json.dumps({'app': function_app._api.app.built, 'intake': 'intake' in c._built,"
        " 'ml': 'azure.ai.ml' in sys.modules}))\n"
    )
    env = {**os.environ, "VENDING_DATA_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    # Intake is built before traffic; the step SDKs are not (the HTTP path never imports azure.ai.ml).
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"app": True, "intake": True, "ml": False}


class SendRefused(SqliteBus):
    """A bus that can be read but refuses sends (Service Bus throttling the namespace, say)."""

    def send(self, queue: str, message: Any) -> None:
        from models.errors import TransientError

        raise TransientError("the namespace is busy", code="ServerBusy")


def test_a_transient_failure_completes_the_message_and_schedules_a_copy(function_app: ModuleType) -> None:
    from tests.fakes import StoreOutage

    container = function_app.container
    store = StoreOutage(SqliteStore(":memory:"))
    container.swap(store=store)
    onboarding = _functions(function_app)["onboarding"].get_user_function()
    body = json.dumps(example("onboarding.json") | {"team": "retry-fn"}).encode()
    store.outage(60)
    onboarding(_sb(body, "m-9", properties={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}))
    # The function returned: the host completes the original; the copy waits on the queue for its time.
    assert container.bus.counts("onboarding") == {"active": 0, "scheduled": 1, "locked": 0, "dead": 0}
    [copy] = poll(lambda: container.bus.receive("onboarding"), timeout=10, what="the copy to come due")
    assert copy.message_id == "m-9/retry-1" and copy.body == body
    props = copy.application_properties
    assert (props["original_message_id"], props["delivery_attempt"]) == ("m-9", "2")
    assert props["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert (copy.enqueued_at - datetime.fromisoformat(props["first_attempt_at"])).total_seconds() < 5
    store.outage(0)
    onboarding(_sb(copy.body, copy.message_id, copy.delivery_count, props))
    container.bus.complete(copy)
    keys = sorted(r.idempotency_key or "" for r in store.list_requests(team="retry-fn").items)
    assert keys == [
        queue_key("m-9", "dev", sender=ADMIN_OID),
        queue_key("m-9", "prod", sender=ADMIN_OID),
        queue_key("m-9", "test", sender=ADMIN_OID),
    ]  # made under the original id


def test_a_copy_that_cannot_be_sent_raises_so_the_message_is_abandoned(function_app: ModuleType) -> None:
    from tests.fakes import StoreOutage

    store = StoreOutage(SqliteStore(":memory:"))
    function_app.container.swap(store=store, bus=SendRefused(":memory:"))
    store.outage(60)
    onboarding = _functions(function_app)["onboarding"].get_user_function()
    with pytest.raises(TransientError, match="namespace is busy"):
        onboarding(_sb(json.dumps(example("onboarding.json")).encode(), "m-10"))


def test_the_last_try_raises_so_that_service_bus_dead_letters_the_message(function_app: ModuleType) -> None:
    from tests.fakes import StoreOutage

    container = function_app.container
    store = StoreOutage(SqliteStore(":memory:"))
    container.swap(store=store)
    store.outage(60)
    tries = container.settings.message_max_attempts
    onboarding = _functions(function_app)["onboarding"].get_user_function()
    body = json.dumps(example("onboarding.json")).encode()

    def attempt(n: int) -> dict[str, str]:
        return {
            "original_message_id": "m-11",
            "delivery_attempt": str(n),
            "first_attempt_at": datetime.now(UTC).isoformat(),
        }

    onboarding(_sb(body, f"m-11/retry-{tries - 2}", properties=attempt(tries - 1)))  # one try left: a copy
    assert _waiting(container, "onboarding") == 1
    with pytest.raises(TransientError, match="did not answer"):  # none left: abandoned, for Service Bus to dead-letter
        onboarding(_sb(body, f"m-11/retry-{tries - 1}", properties=attempt(tries)))
    assert _waiting(container, "onboarding") == 1


def _waiting(container: Any, queue: str) -> int:
    """Count the queue's messages not yet taken, due or not (a scheduled copy may fall due while a test runs)."""
    counts = container.bus.counts(queue)
    return int(counts["active"] + counts["scheduled"])


def test_a_callback_on_its_last_try_is_recorded_failed_and_completed(function_app: ModuleType) -> None:
    from tests.capture import capture_server
    from tests.loopback import loopback_callbacks_for

    container = function_app.container
    notifications = _functions(function_app)["notifications"].get_user_function()
    with capture_server() as cap, loopback_callbacks_for(container):
        cap.statuses = [503, 503]
        body = example("cpu-small.json") | {"callback_url": f"{cap.url}/hook"}
        record = container.intake.submit(request=parse_request(body), caller=PLATFORM, source="t").record
        finished = record.model_copy(update={"status": RequestStatus.SUCCEEDED, "notification": Notification()})
        container.store.update_request(finished)
        message = json.dumps({"request_id": record.id}).encode()
        notifications(_sb(message, f"{record.id}/notify"))  # try 1: 503, a copy is scheduled
        assert _waiting(container, "notifications") == 1
        last = {"original_message_id": f"{record.id}/notify", "delivery_attempt": "15"}
        notifications(_sb(message, f"{record.id}/notify/retry-14", properties=last))  # 503 on the last try
        assert len(cap.received) == 2
    note = container.store.get_request(record.id).notification
    assert note is not None and note.status == "failed" and note.error and "answered 503" in note.error
    assert "gave up after the last try" in note.error
    assert _waiting(container, "notifications") == 1  # only try 1's copy: none after the last
