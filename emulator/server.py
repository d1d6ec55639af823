"""Run the ARM emulator over HTTPS on loopback, with a certificate from a local CA (trustme)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

import certifi
import trustme
import uvicorn

from emulator.api_versions import ApiVersionGate
from emulator.app import build_app
from emulator.faults import Fault, FaultPlan
from emulator.state import Config, EmulatorState
from emulator.throttling import RequestThrottle, ThrottlingConfig

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the OS for a free TCP port on loopback."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Tell whether `port` can be bound on loopback now."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
        return True


def local_ca(tls: Path) -> trustme.CA:
    """Load the data directory's CA, or make one and keep it, so that clients trusting it keep doing so."""
    cert, key = tls / "ca.pem", tls / "ca-key.pem"
    if cert.is_file() and key.is_file():
        return trustme.CA.from_pem(cert.read_bytes(), key.read_bytes())
    ca = trustme.CA(organization_name="Workspace Vending local ARM emulator")
    ca.cert_pem.write_to_path(str(cert))
    # The key signs the emulator's certificates: readable by this user only.
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(ca.private_key_pem.bytes())
    return ca


def remembered_port(tls: Path, host: str) -> int:
    """Return the port this data directory's emulator used last, when it is free; else a new free port."""
    endpoint = tls / "endpoint.json"
    if endpoint.is_file():
        try:
            port = int(json.loads(endpoint.read_text())["port"])
        except (ValueError, KeyError, TypeError):
            port = 0
        if port and port_is_free(port, host):
            return port
        if port:
            log.warning(
                "the emulator's port %d is taken; clients configured for it must be pointed at the new one", port
            )
    return free_port(host)


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
        throttling: ThrottlingConfig | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        tls = data_dir / "emulator-tls"
        tls.mkdir(parents=True, exist_ok=True)
        # The URL and the CA are what a data scientist's client is configured with: the same data
        # directory keeps both across restarts.
        self.port = port or remembered_port(tls, self.host)
        self.url = f"https://{self.host}:{self.port}/"
        (tls / "endpoint.json").write_text(json.dumps({"url": self.url, "port": self.port}))
        ca = local_ca(tls)
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = tls / "ca.pem"
        self.cert_file = tls / "server.pem"
        # The server's private key: readable by this user only, from creation (as the CA's key).
        self.cert_file.unlink(missing_ok=True)
        fd = os.open(self.cert_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(cert.private_key_and_cert_chain_pem.bytes())
        # Public roots plus the local CA: clients that also talk to real endpoints keep working.
        self.ca_bundle = tls / "ca-bundle.pem"
        self.ca_bundle.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + ca.cert_pem.bytes())
        self.state = EmulatorState(state_path or (data_dir / "emulator.db"), config, FaultPlan(faults))
        self.throttle = RequestThrottle(throttling)
        self.api_versions = ApiVersionGate()
        app = build_app(self.state, self.url, throttle=self.throttle, api_versions=self.api_versions)
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
                timeout_graceful_shutdown=1,  # clients keep connections open; do not wait for them on stop
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
