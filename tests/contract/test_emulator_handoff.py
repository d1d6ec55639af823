"""The hand-off: an emulator keeps its URL and CA across restarts, and MLClient works as docs/emulator.md shows."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cloud.clients import Clients, emulator_endpoint
from cloud.common import Timing
from cloud.credentials import EmulatorCredential
from cloud.provider import AzureProvider
from cloud.throttle import SubscriptionThrottle
from emulator.server import EmulatorServer
from emulator.state import Config
from models.outcomes import Done
from tests.conftest import ROOT, example
from tests.contract.conftest import _plan, run_plan


@pytest.fixture(autouse=True)
def _keep_the_sessions_cloud_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # `Clients` points process-wide variables (REQUESTS_CA_BUNDLE, azure-ai-ml's cloud) at the emulator
    # it is given; this module's own emulators must not leave them pointing away from the session's.
    for name in ("REQUESTS_CA_BUNDLE", "ARM_CLOUD_METADATA_URL", "AZUREML_CURRENT_CLOUD"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)


def test_a_restart_on_the_same_data_directory_keeps_the_url_and_the_ca(tmp_path: Path) -> None:
    first = EmulatorServer(data_dir=tmp_path).start()
    url, ca = first.url, first.ca_file.read_bytes()
    trusting_the_first = ssl.create_default_context(cadata=ca.decode())
    first.stop()
    second = EmulatorServer(data_dir=tmp_path).start()
    try:
        assert second.url == url
        assert second.ca_file.read_bytes() == ca
        # A client configured for the first run still trusts the second one's certificate.
        with httpx.Client(verify=trusting_the_first) as http:
            assert http.get(f"{second.url}metadata/endpoints?api-version=2019-05-01").status_code == 200
    finally:
        second.stop()
    assert (tmp_path / "emulator-tls" / "ca-key.pem").stat().st_mode & 0o077 == 0  # the CA key is private
    assert (tmp_path / "emulator-tls" / "server.pem").stat().st_mode & 0o077 == 0  # so is the server's


def _doc_snippet() -> str:
    doc = (ROOT / "docs" / "emulator.md").read_text()
    match = re.search(r"<!-- handoff:mlclient -->\n```python\n(.*?)\n```", doc, re.DOTALL)
    assert match, "docs/emulator.md has no hand-off MLClient block"
    return match.group(1)


def test_mlclient_configured_as_the_doc_shows_reads_a_provisioned_workspace(tmp_path: Path) -> None:
    emulator = EmulatorServer(data_dir=tmp_path / "data", config=Config(latency_s=0.05)).start()
    try:
        clients = Clients(emulator_endpoint(emulator.url, str(emulator.ca_bundle)), EmulatorCredential())
        provider = AzureProvider(clients, Timing(poll_s=0.05), SubscriptionThrottle(max_concurrent=8))
        p = _plan(example("cpu-small.json") | {"team": "handoff"})
        assert all(isinstance(o, Done) for o in run_plan(provider, p).values())
        values = {
            "EMULATOR": emulator.url,
            "CA_BUNDLE": str(emulator.ca_bundle),
            "SUBSCRIPTION": p.names.subscription_id,
            "RESOURCE_GROUP": p.names.resource_group,
            "WORKSPACE": p.names.workspace,
        }
        script = _doc_snippet()
        for name, value in values.items():
            script, n = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", script, count=1, flags=re.MULTILINE)
            assert n == 1, f"the doc's snippet sets no {name}"
        # A fresh process, as a data scientist's: nothing inherited from this one's azure-ai-ml set-up.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("AZUREML_CURRENT_CLOUD", "ARM_CLOUD_METADATA_URL", "REQUESTS_CA_BUNDLE")
        }
        run = subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        emulator.stop()
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith(f"workspace {p.names.workspace} ") for line in lines), run.stdout
    assert "compute cpu-cluster amlcompute" in lines, run.stdout
