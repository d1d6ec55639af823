"""The tenant written into key vaults and compute instances: the policy's or the service's own, never zeros."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest

from composition import Container
from engine.planner import plan as make_plan
from engine.policy import admit
from models.request import parse_request
from models.settings import DEFAULT_POLICY, Settings
from tests.conftest import example

OURS = "3c5e7a9b-1d2f-4a6b-8c0d-2e4f6a8b0c1d"
LOCAL_DIRECTORY = UUID("5f1d3c2a-7b64-4e19-a8d0-3c2b1a0f9e87")  # policy/directory.example.yaml


@pytest.fixture
def untenanted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("VENDING_TENANT_ID", "AZURE_TENANT_ID"):
        monkeypatch.delenv(name, raising=False)
    text = "\n".join(line for line in DEFAULT_POLICY.read_text().splitlines() if not line.startswith("tenant_id:"))
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def _settings(tmp_path: Path, policy: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, policy_file=policy, **kw)  # type: ignore[arg-type]


def test_azure_without_a_tenant_refuses_to_start_and_names_the_setting(tmp_path: Path, untenanted: Path) -> None:
    with pytest.raises(ValueError, match=r"^cloud=azure needs the Entra tenant id: set VENDING_TENANT_ID") as info:
        Container(_settings(tmp_path, untenanted, cloud="azure"))
    assert "\n" not in str(info.value)


def test_azure_takes_the_services_own_tenant_into_every_key_vault(
    tmp_path: Path, untenanted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_TENANT_ID", OURS)
    policy = Container(_settings(tmp_path, untenanted, cloud="azure")).policy
    plan = make_plan(admit(parse_request(example("gpu-research.json")), policy), policy)
    assert plan.step("key-vault").spec.tenant_id == OURS
    assert all(getattr(s.spec, "tenant_id", None) in (None, OURS) for s in plan.steps)


def test_a_policy_tenant_that_is_not_the_services_refuses_to_start(tmp_path: Path, untenanted: Path) -> None:
    other = tmp_path / "other-tenant.yaml"
    other.write_text(untenanted.read_text() + f"\ntenant_id: {LOCAL_DIRECTORY}\n")
    with pytest.raises(ValueError, match="is not the service's tenant"):
        Container(_settings(tmp_path, other, cloud="azure", tenant_id=OURS))


def test_the_shipped_policy_starts_in_azure_with_the_tenant_infra_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # infra/modules/functionapp.bicep sets VENDING_TENANT_ID to tenant().tenantId, whatever it is.
    for name in ("VENDING_TENANT_ID", "AZURE_TENANT_ID"):
        monkeypatch.delenv(name, raising=False)
    policy = Container(_settings(tmp_path, DEFAULT_POLICY, cloud="azure", tenant_id=OURS)).policy
    assert str(policy.tenant_id) == OURS


def test_the_emulator_uses_the_local_directorys_tenant(tmp_path: Path, untenanted: Path) -> None:
    assert Container(_settings(tmp_path, untenanted)).policy.tenant_id == LOCAL_DIRECTORY
