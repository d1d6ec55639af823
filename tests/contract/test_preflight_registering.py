"""A resource provider still Registering is a warning at intake, not a refusal (cloud/preflight.py _providers)."""

from __future__ import annotations

from adapters.sqlite_bus import SqliteBus
from adapters.sqlite_store import SqliteStore
from cloud.clients import emulator_endpoint
from cloud.credentials import EmulatorCredential
from cloud.preflight import ArmPreflight
from composition import Container
from emulator.server import EmulatorServer
from models.request import parse_request
from models.settings import Settings
from tests.callers import PLATFORM, PermitAll, Unconfined
from tests.conftest import example
from tests.contract.conftest import POLICY
from tests.fakes import FakeCloud


def test_a_registering_provider_is_a_warning_and_the_request_is_accepted(
    emulator: EmulatorServer, settings: Settings
) -> None:
    c = Container(
        settings,
        authorizer=PermitAll(),
        confinement=Unconfined(),
        store=SqliteStore(":memory:"),
        bus=SqliteBus(":memory:"),
        cloud=FakeCloud(),
        policy=POLICY,  # preflight.on_failure is "fail": a problem would refuse the request
        preflight=ArmPreflight(emulator_endpoint(emulator.url, str(emulator.ca_bundle)), EmulatorCredential()),
        sinks=[],
    )
    emulator.state.config.registering = ["microsoft.containerregistry"]
    try:
        body = example("gpu-research.json") | {"team": "pf-registering"}
        record = c.intake.submit(request=parse_request(body), caller=PLATFORM, source="test").record
    finally:
        emulator.state.config.registering = []
    [warning] = [w for w in record.warnings if w["code"] == "SubscriptionRegistering"]
    assert "still registering Microsoft.ContainerRegistry" in warning["message"]
    assert all(w["code"] != "MissingSubscriptionRegistration" for w in record.warnings)
