"""Azurite's Table service on a free loopback port, started for the tests and stopped by its process id.

`make tools` installs the pinned Azurite into `.tools/`; `AZURITE_TABLE` may name another binary.
If Azurite cannot start, the tests that need it fail with the reason; they never skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from emulator.server import free_port

ROOT = Path(__file__).resolve().parent.parent
# The well-known development account every Azure Storage emulator accepts (not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_binary() -> str:
    """Find azurite-table, or say how to install it."""
    candidates = [os.environ.get("AZURITE_TABLE"), str(ROOT / ".tools/node_modules/.bin/azurite-table")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("azurite-table")
    if found:
        return found
    raise RuntimeError(
        "Azurite is not installed, so the Tables store cannot be tested: run `make tools` "
        "(npm install --prefix .tools azurite@3.35.0) or set AZURITE_TABLE to an azurite-table binary."
    )


class Azurite:
    """One Azurite Table service process, in memory."""

    def __init__(self) -> None:
        self.port = free_port()
        self._log = tempfile.NamedTemporaryFile(prefix="azurite-", suffix=".log", delete=False)  # noqa: SIM115
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The Table service endpoint for the development account."""
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        """A connection string for the development account on this port."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint={self.endpoint};"
        )

    def start(self, timeout_s: float = 30.0) -> Azurite:
        """Start the process and wait until it accepts connections."""
        command = [
            azurite_binary(),
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(self.port),
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--silent",
        ]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Azurite exited with {self.process.returncode} at start:\n{self.output()}")
            with socket.socket() as probe:
                probe.settimeout(0.2)
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Azurite did not listen on port {self.port} within {timeout_s} s:\n{self.output()}")

    def output(self) -> str:
        """What Azurite printed."""
        return Path(self._log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """Stop the process by its id (its whole process group), then remove the log."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)
