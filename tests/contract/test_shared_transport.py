"""Every SDK client shares one transport, and that transport trusts the emulator's CA on its own."""

from __future__ import annotations

import pytest

from cloud.clients import Clients, emulator_endpoint
from cloud.credentials import EmulatorCredential
from emulator.server import EmulatorServer
from tests.contract.conftest import SUB


def test_the_shared_transport_trusts_the_ca_bundle_without_the_environment(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients = Clients(emulator_endpoint(emulator.url, str(emulator.ca_bundle)), EmulatorCredential())
    # A client given transport= ignores its own connection_verify; the CA must be the transport's, not only
    # the process-wide REQUESTS_CA_BUNDLE that Clients also sets for azure-ai-ml's own clients.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    groups = list(clients.resources(SUB).resource_groups.list())
    assert isinstance(groups, list)
    assert clients.storage(SUB)._client._pipeline._transport is clients.resources(SUB)._client._pipeline._transport
