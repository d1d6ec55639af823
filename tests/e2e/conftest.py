"""The devhost as a user runs it: `python -m devhost` in its own process, driven over HTTP."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from emulator.server import free_port
from tests.conftest import ROOT


@dataclass
class Devhost:
    url: str
    emulator_url: str
    data_dir: Path
    env: dict[str, str]
    http: httpx.Client

    def emulator(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.emulator_url,
            verify=ssl.create_default_context(cafile=self.data_dir / "emulator-tls" / "ca.pem"),
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@contextmanager
def started_devhost(data: Path, **extra_env: str) -> Iterator[Devhost]:
    """Run `python -m devhost` with its state in `data` until the block ends."""
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "VENDING_DATA_DIR": str(data),
        "VENDING_EMULATOR_LATENCY_S": "0.2",
        "VENDING_WORKERS": "8",
        "PYTHONUNBUFFERED": "1",
        **extra_env,
    }
    log = (data / "devhost.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "devhost"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError("the devhost exited:\n" + (data / "devhost.log").read_text())
            try:
                if http.get("/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the devhost did not answer in 60 s:\n" + (data / "devhost.log").read_text())
            time.sleep(0.1)
        banner = (data / "devhost.log").read_text()
        match = re.search(r"ARM emulator\s+(https://\S+)", banner)
        assert match, banner
        yield Devhost(f"http://127.0.0.1:{port}", match.group(1), data, env, http)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def devhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devhost]:
    with started_devhost(tmp_path_factory.mktemp("devhost")) as host:
        yield host
