"""The devhost's banner hands the emulator over: its URL and CA, the same after a restart on the same data."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.conftest import started_devhost


def _banner(data: Path) -> tuple[str, Path]:
    banner = (data / "devhost.log").read_text()
    url = re.search(r"ARM emulator\s+(https://\S+)", banner)
    ca = re.search(r"emulator CA\s+(\S+)", banner)
    assert url and ca, banner
    return url.group(1), Path(ca.group(1))


def test_the_banner_names_the_emulator_and_its_ca_and_a_restart_keeps_both(tmp_path: Path) -> None:
    data = tmp_path / "devhost"
    with started_devhost(data, user=None):
        url, ca = _banner(data)
        pem = ca.read_bytes()
    assert ca.name == "ca.pem" and ca.parent.name == "emulator-tls"
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    with started_devhost(data, user=None) as host:
        again_url, again_ca = _banner(data)
        assert host.emulator().get("/metadata/endpoints").status_code == 200  # trusted with the same ca.pem
    assert again_url == url
    assert again_ca.read_bytes() == pem
