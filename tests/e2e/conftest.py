"""The devhost as a user runs it: `python -m devhost` in its own process, driven over HTTP."""

from __future__ import annotations

import json
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
import yaml

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


# The teams the end-to-end tests ask for, added to whatever policy a test runs with; each is given the
# local directory's fraud-detection group. The tests call as the directory's admin (Vending.Admin), who
# acts for every team the policy lists; the attacks on the trust rules use their own users and teams.
E2E_TEAMS = [
    "fraud-detection",
    "churn",
    "vision",
    "telemetry",
    "secrets",
    "chatslack",
    "chatteams",
    "chatfail",
    "down-one",
    "down-two",
    *(f"par-{i:02d}" for i in range(16)),
]
E2E_GROUP = "3a8e5c1f-2d47-4b96-8e0a-6f1c2d3b4a51"


def e2e_policy(data: Path, base: str | None) -> Path:
    """Write the policy the devhost runs with: `base` (default: the shipped one) with the e2e teams added."""
    source = Path(base) if base else ROOT / "policy" / "default.yaml"
    policy = yaml.safe_load(source.read_text())
    teams = policy.setdefault("teams", {}) or {}
    policy["teams"] = teams
    for team in E2E_TEAMS:
        teams.setdefault(team, {"groups": [E2E_GROUP]})
    path = data / "e2e-policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


@contextmanager
def started_devhost(data: Path, *, user: str | None = "admin", **extra_env: str) -> Iterator[Devhost]:
    """Run `python -m devhost` with its state in `data` until the block ends; call it as `user` (None: nobody)."""
    port = free_port()
    data.mkdir(parents=True, exist_ok=True)
    extra_env["VENDING_POLICY_FILE"] = str(e2e_policy(data, extra_env.get("VENDING_POLICY_FILE")))
    env = {
        **os.environ,
        "PORT": str(port),
        "VENDING_DATA_DIR": str(data),
        "VENDING_EMULATOR_LATENCY_S": "0.2",
        "VENDING_WORKERS": "8",
        "VENDING_SUBMISSIONS_PER_WINDOW": "1000",  # the rate limits have tests of their own
        "VENDING_PLANS_PER_WINDOW": "1000",
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
        host = Devhost(f"http://127.0.0.1:{port}", match.group(1), data, env, http)
        if user is not None:
            # Signed in as the CLI signs in: the token is remembered for the CLI and sent by `http`.
            login = host.cli("login", user)
            assert login.returncode == 0, login.stderr
            token = json.loads((data / "cli-token.json").read_text())["access_token"]
            http.headers["Authorization"] = f"Bearer {token}"
        yield host
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
