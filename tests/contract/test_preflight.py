"""Pre-flight at intake, against the emulator: a request that cannot succeed is refused before 202."""

from __future__ import annotations

import time
from typing import Any

import pytest

from adapters.sqlite_bus import SqliteBus
from adapters.sqlite_store import SqliteStore
from cloud.clients import CloudEndpoint, emulator_endpoint
from cloud.credentials import EmulatorCredential
from cloud.preflight import ArmPreflight
from composition import Container
from emulator.faults import Fault
from emulator.server import EmulatorServer, free_port
from emulator.state import parse_path
from models.errors import InvalidInputError
from models.policy import KeyVaultPolicy, PreflightPolicy
from models.request import parse_request
from models.settings import Settings
from tests.callers import PLATFORM, PermitAll
from tests.conftest import example
from tests.contract.conftest import POLICY, STORAGE_BODY, _plan, drive, held_elsewhere
from tests.fakes import FakeCloud

SUB = "11111111-1111-1111-1111-111111111111"


@pytest.fixture
def make(emulator: EmulatorServer, settings: Settings) -> Any:
    def build(**policy: Any) -> Container:
        effective = POLICY.model_copy(update=policy)
        preflight = ArmPreflight(emulator_endpoint(emulator.url, str(emulator.ca_bundle)), EmulatorCredential())
        return Container(
            settings,
            authorizer=PermitAll(),
            store=SqliteStore(":memory:"),
            bus=SqliteBus(":memory:"),
            cloud=FakeCloud(),
            policy=effective,
            preflight=preflight,
            sinks=[],
        )

    return build


def _submit(c: Container, body: dict[str, Any]) -> Any:
    return c.intake.submit(request=parse_request(body), caller=PLATFORM, source="test").record


def test_a_clean_request_passes(make: Any) -> None:
    record = _submit(make(), example("gpu-research.json") | {"team": "pf-clean"})
    assert record.warnings == []


def test_everything_that_cannot_succeed_is_refused_at_once(make: Any, emulator: EmulatorServer) -> None:
    body = example("gpu-research.json") | {"team": "pf-bad"}
    p = _plan(body)
    held_elsewhere(
        emulator, "Microsoft.Storage/storageAccounts", p.names.storage_account, STORAGE_BODY, location="swedencentral"
    )
    emulator.state.config.quota = {"swedencentral": {"lowPriority": 10}}
    emulator.state.config.unregistered = ["microsoft.containerregistry"]
    with pytest.raises(InvalidInputError) as info:
        _submit(make(), body)
    assert "pre-flight" in info.value.title
    codes = {p.code: p for p in info.value.problems}
    assert set(codes) == {"StorageAccountAlreadyTaken", "QuotaExceeded", "MissingSubscriptionRegistration"}
    assert codes["QuotaExceeded"].field == "compute[1].max_nodes"
    assert "need 48 vCPUs" in codes["QuotaExceeded"].message and " of 10 are in use" in codes["QuotaExceeded"].message
    assert (
        "az provider register --namespace Microsoft.ContainerRegistry"
        in codes["MissingSubscriptionRegistration"].message
    )


def test_warn_mode_accepts_with_warnings(make: Any, emulator: EmulatorServer) -> None:
    emulator.state.config.unregistered = ["microsoft.keyvault"]
    c = make(preflight=PreflightPolicy(on_failure="warn"))
    record = _submit(c, example("cpu-small.json") | {"team": "pf-warn"})
    assert [w["code"] for w in record.warnings] == ["MissingSubscriptionRegistration"]


@pytest.mark.parametrize(("action", "refused"), [("fail", True), ("recover", False)])
def test_a_soft_deleted_vault_is_found_before_provisioning(
    make: Any, emulator: EmulatorServer, provider: Any, action: str, refused: bool
) -> None:
    kv = KeyVaultPolicy(on_soft_deleted=action)  # type: ignore[arg-type]
    body = example("cpu-small.json") | {"team": f"pf-sd-{action}"}
    p = _plan(body, key_vault=kv)
    outputs: dict[str, Any] = {}
    for sid in ("resource-group", "key-vault"):
        drive(provider, p, sid, outputs)
    emulator.state.delete(parse_path(p.step("key-vault").resource_id))
    c = make(key_vault=kv)
    if refused:
        with pytest.raises(InvalidInputError) as info:
            _submit(c, body)
        assert info.value.problems[0].code == "VaultSoftDeleted"
        assert "recover or purge it" in info.value.problems[0].message
    else:
        record = _submit(c, body)
        assert record.warnings[0]["code"] == "VaultSoftDeleted"
        assert "it will be recovered" in record.warnings[0]["message"]


def test_pre_flight_is_bounded_and_skips_what_does_not_answer(make: Any, emulator: EmulatorServer) -> None:
    emulator.state.faults.replace(
        [Fault(type="Microsoft.MachineLearningServices/*", method="GET", delay_s=10, times=None)]
    )
    c = make(preflight=PreflightPolicy(timeout_s=2.0))
    started = time.monotonic()
    record = _submit(c, example("cpu-small.json") | {"team": "pf-slow"})
    assert time.monotonic() - started < 6  # the budget, not the emulator's 10 s
    messages = [w["message"] for w in record.warnings]
    assert "not checked: vCPU quota: no answer within 2 s" in messages
    assert all(w["code"] == "PreflightSkipped" for w in record.warnings)


def test_an_unreachable_cloud_does_not_block_intake(settings: Settings) -> None:
    dead = CloudEndpoint(f"https://127.0.0.1:{free_port()}/", None, None)
    c = Container(
        settings,
        authorizer=PermitAll(),
        store=SqliteStore(":memory:"),
        bus=SqliteBus(":memory:"),
        cloud=FakeCloud(),
        preflight=ArmPreflight(dead, EmulatorCredential()),
        sinks=[],
    )
    record = c.intake.submit(request=parse_request(example("cpu-small.json")), caller=PLATFORM, source="test").record
    assert record.warnings and all(w["code"] == "PreflightSkipped" for w in record.warnings)
    assert any("did not answer" in w["message"] for w in record.warnings)
