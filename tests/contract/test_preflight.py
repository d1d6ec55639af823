"""Pre-flight at intake, against the emulator: a request that cannot succeed is refused before 202."""

from __future__ import annotations

import json
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
from engine.confinement import cloud_refusals
from engine.planner import plan as make_plan
from engine.policy import admit
from models.errors import InvalidInputError, TransientError
from models.policy import KeyVaultPolicy, PreflightPolicy
from models.request import parse_request
from models.settings import Settings
from tests.callers import PLATFORM, PermitAll, Unconfined
from tests.conftest import ROOT, example
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
            confinement=Unconfined(),
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
    assert codes["QuotaExceeded"].field == "compute[0].max_nodes"  # the caller's gpu-cluster, not the profile's rows
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
        confinement=Unconfined(),
        store=SqliteStore(":memory:"),
        bus=SqliteBus(":memory:"),
        cloud=FakeCloud(),
        preflight=ArmPreflight(dead, EmulatorCredential()),
        sinks=[],
    )
    record = c.intake.submit(request=parse_request(example("cpu-small.json")), caller=PLATFORM, source="test").record
    assert record.warnings and all(w["code"] == "PreflightSkipped" for w in record.warnings)
    assert any("did not answer" in w["message"] for w in record.warnings)


# ----- confinement: what ARM says of the resources a request names (engine/confinement.py) ------

ARM_GET = ROOT / "tests" / "events" / "arm-get"
TEAM_RG = "rg-ml-fraud-detection-dev"


def _fixture(name: str, resource_name: str, tags: Any = ...) -> tuple[str, dict[str, Any]]:
    """Return (resource id, GET body) of a spec-shaped fixture, placed in the team's resource group."""
    data = json.loads((ARM_GET / name).read_text())
    body = data["body"]
    rid = body["id"].replace("{subscription}", SUB).replace("{resourceGroup}", TEAM_RG)
    rid = rid.rsplit("/", 1)[0] + f"/{resource_name}"
    text = json.dumps(body).replace("{subscription}", SUB).replace("{resourceGroup}", TEAM_RG)
    body = json.loads(text)
    if tags is not ...:
        body["tags"] = tags
    return rid, body


def _put(emulator: EmulatorServer, rid: str, body: dict[str, Any]) -> None:
    emulator.state.put(parse_path(f"/subscriptions/{SUB}/resourceGroups/{TEAM_RG}"), {"location": "westeurope"})
    emulator.state.put(parse_path(rid), body)


@pytest.fixture
def reader(emulator: EmulatorServer) -> ArmPreflight:
    return ArmPreflight(emulator_endpoint(emulator.url, str(emulator.ca_bundle)), EmulatorCredential())


class History:
    def __init__(self, owners: dict[str, str] | None = None) -> None:
        self.owners = owners or {}

    def workspace_owner(self, workspace_key: str) -> str | None:
        return self.owners.get(workspace_key)


def _cloud(reader: ArmPreflight, body: dict[str, Any], history: History | None = None) -> list[tuple[str, str]]:
    req = admit(parse_request(body), POLICY)
    found = cloud_refusals(
        plan=make_plan(req, POLICY), request=req, policy=POLICY, reader=reader, history=history or History()
    )
    return [(r.rule.value, r.field) for r in found]


def test_arm_reads_tags_as_the_specs_shape_them(emulator: EmulatorServer, reader: ArmPreflight) -> None:
    storage, storage_body = _fixture("storage-account.json", "stconfinespec1", {"Team": "fraud-detection", "x": "1"})
    insights, insights_body = _fixture("application-insights.json", "appi-confine-spec")  # "tags": "" as published
    registry, registry_body = _fixture("container-registry.json", "crconfinespec1")
    workspace, workspace_body = _fixture("workspace.json", "mlw-confine-spec")
    for rid, body in ((storage, storage_body), (insights, insights_body), (registry, registry_body)):
        _put(emulator, rid, body)
    _put(emulator, workspace, workspace_body)
    missing = storage.rsplit("/", 1)[0] + "/stconfinemissing"
    read = reader.read_resources([storage, insights, registry, workspace, missing], timeout_s=5)
    assert read[storage] is not None and read[storage].tags == {"Team": "fraud-detection", "x": "1"}
    assert read[storage].id.lower() == storage.lower()
    assert read[insights] is not None and read[insights].tags == {}
    assert read[registry] is not None and read[registry].tags == {"key": "value"}
    assert read[workspace] is not None and read[workspace].tags == {}
    assert read[missing] is None
    other_group = f"/subscriptions/{SUB}/resourceGroups/rg-confine-nowhere/providers/Microsoft.KeyVault/vaults/kv-x"
    assert reader.read_resources([other_group], timeout_s=5) == {other_group: None}  # ResourceGroupNotFound


def test_resources_the_service_made_for_the_team_may_be_brought(
    emulator: EmulatorServer, provider: Any, reader: ArmPreflight
) -> None:
    made = example("cpu-small.json") | {"workspace_name": "mlw-confine-made"}
    p = _plan(made)
    outputs: dict[str, Any] = {}
    for sid in ("resource-group", "storage", "key-vault"):
        drive(provider, p, sid, outputs)
    body = made | {
        "workspace_name": "mlw-confine-brings",
        "existing": {
            "storage_account_id": p.step("storage").resource_id,
            "key_vault_id": p.step("key-vault").resource_id,
        },
    }
    assert _cloud(reader, body) == []


def test_brought_resources_that_are_not_the_teams_are_refused(emulator: EmulatorServer, reader: ArmPreflight) -> None:
    foreign, foreign_body = _fixture("storage-account.json", "stconfineforeign", {"team": "churn"})
    insights, insights_body = _fixture("application-insights.json", "appi-confine-untagged")
    _put(emulator, foreign, foreign_body)
    _put(emulator, insights, insights_body)
    vault = f"/subscriptions/{SUB}/resourceGroups/{TEAM_RG}/providers/Microsoft.KeyVault/vaults/kv-confine-none"
    body = example("cpu-small.json") | {
        "workspace_name": "mlw-confine-foreign",
        "existing": {"storage_account_id": foreign, "key_vault_id": vault, "application_insights_id": insights},
    }
    assert _cloud(reader, body) == [
        ("ExistingNotTeamTagged", "existing.storage_account_id"),
        ("ExistingNotFound", "existing.key_vault_id"),
        ("ExistingNotTeamTagged", "existing.application_insights_id"),
    ]
    assert not [r for r in emulator.state.requests if foreign in r["path"] or vault in r["path"]]  # nothing written


def test_an_existing_workspace_is_adopted_only_by_the_team_that_made_it(
    emulator: EmulatorServer, reader: ArmPreflight
) -> None:
    rid, ws = _fixture("workspace.json", "mlw-confine-taken")
    _put(emulator, rid, ws)
    body = example("cpu-small.json") | {"workspace_name": "mlw-confine-taken"}
    assert _cloud(reader, body) == [("WorkspaceNotMadeByTeam", "workspace_name")]
    key = f"{SUB}/{TEAM_RG}/mlw-confine-taken"
    assert _cloud(reader, body, History({key: "churn"})) == [("WorkspaceNotMadeByTeam", "workspace_name")]
    assert _cloud(reader, body, History({key: "fraud-detection"})) == []
    assert _cloud(reader, example("cpu-small.json") | {"workspace_name": "mlw-confine-free"}) == []


def test_confinement_in_the_cloud_fails_closed(emulator: EmulatorServer, reader: ArmPreflight) -> None:
    body = example("cpu-small.json") | {"workspace_name": "mlw-confine-closed"}
    emulator.state.faults.replace(
        [
            Fault(
                type="Microsoft.MachineLearningServices/workspaces",
                method="GET",
                status=503,
                code="ServiceUnavailable",
                times=None,
            )
        ]
    )
    with pytest.raises(TransientError, match="answered 503"):
        _cloud(reader, body)
    emulator.state.faults.replace(
        [Fault(type="Microsoft.MachineLearningServices/workspaces", method="GET", delay_s=3, times=None)]
    )
    req = admit(parse_request(body), POLICY)
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"did not answer within 0\.5 s|could not be reached") as info:
        cloud_refusals(
            plan=make_plan(req, POLICY), request=req, policy=POLICY, reader=reader, history=History(), timeout_s=0.5
        )
    assert time.monotonic() - started < 2.5 and info.value.code == "ConfinementUnchecked"
    dead = ArmPreflight(CloudEndpoint(f"https://127.0.0.1:{free_port()}/", None, None), EmulatorCredential())
    with pytest.raises(TransientError, match="could not be reached"):
        dead.read_resources([p.resource_id for p in make_plan(req, POLICY).steps if p.id == "workspace"], timeout_s=2)
