"""Run the ARM emulator over HTTPS on loopback, with a certificate from a local CA (trustme)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from pathlib import Path

import certifi
import trustme
import uvicorn

from emulator.app import build_app
from emulator.faults import Fault, FaultPlan
from emulator.state import Config, EmulatorState

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the OS for a free TCP port on loopback."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmulatorServer:
    """The emulator in a background thread; `url` and `ca_bundle` say how to reach and trust it."""

    def __init__(
        self,
        *,
        data_dir: Path,
        port: int = 0,
        state_path: Path | str | None = None,
        config: Config | None = None,
        faults: list[Fault] | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.url = f"https://{self.host}:{self.port}/"
        tls = data_dir / "emulator-tls"
        tls.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="Workspace Vending local ARM emulator")
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = tls / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.cert_file = tls / "server.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(self.cert_file))
        # Public roots plus the local CA: clients that also talk to real endpoints keep working.
        self.ca_bundle = tls / "ca-bundle.pem"
        self.ca_bundle.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + ca.cert_pem.bytes())
        self.state = EmulatorState(state_path or (data_dir / "emulator.db"), config, FaultPlan(faults))
        app = build_app(self.state, self.url)
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=self.host,
                port=self.port,
                ssl_certfile=str(self.cert_file),
                ssl_keyfile=str(self.cert_file),
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
        )
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 15.0) -> EmulatorServer:
        """Start serving and wait until the port answers."""
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve()), name="arm-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the ARM emulator did not start on {self.url}")
            time.sleep(0.01)
        log.info("ARM emulator serving on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        if self._thread:
            self._thread.join(10)
