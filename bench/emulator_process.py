"""The ARM emulator in a process of its own, so that a benchmark measures the service's CPU apart from the cloud's.

    python -m bench.emulator_process <data-dir> '<Config as JSON, with "throttling" as ThrottlingConfig>'

prints one JSON line (`url`, `ca_bundle`, `pid`) once the emulator serves, and runs until its standard
input closes. `Emulator` below starts one from a benchmark and reads its CPU-seconds and peak memory
from /proc (proc(5): `stat` utime and stime, `status` VmHWM).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any


class Emulator:
    """An emulator process started by a benchmark: where it listens, its own CPU and memory, its call counts."""

    def __init__(self, data_dir: Path, config: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.emulator_process", str(data_dir), json.dumps(config)],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the emulator process exited with {self.proc.wait()}")
        started = json.loads(line)
        self.url: str = started["url"]
        self.ca_bundle: str = started["ca_bundle"]

    def env(self) -> dict[str, str]:
        """The settings that point a service at this emulator."""
        return {"VENDING_EMULATOR_URL": self.url, "VENDING_EMULATOR_CA_BUNDLE": self.ca_bundle}

    def cpu_s(self) -> float:
        """CPU-seconds (user + system) the emulator process has used so far."""
        return process_cpu_s(self.proc.pid)

    def peak_rss_mb(self) -> float:
        """The emulator process's peak resident memory so far."""
        return process_peak_rss_mb(self.proc.pid)

    def stats(self) -> dict[str, Any]:
        """The emulator's `/_emulator/stats`: creates, deletes, calls by method and by resource type."""
        import httpx

        with httpx.Client(verify=ssl.create_default_context(cafile=self.ca_bundle), timeout=30) as http:
            found: dict[str, Any] = http.get(f"{self.url.rstrip('/')}/_emulator/stats").json()
            return found

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def process_cpu_s(pid: int) -> float:
    """CPU-seconds (utime + stime) of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    from emulator.server import EmulatorServer
    from emulator.state import Config
    from emulator.throttling import ThrottlingConfig

    given = json.loads(sys.argv[2])
    # "throttling" is ARM's buckets (emulator/throttling.py: Azure's published figures unless given).
    throttling = ThrottlingConfig(**given.pop("throttling")) if "throttling" in given else None
    data_dir, config = Path(sys.argv[1]), Config(**given)
    server = EmulatorServer(data_dir=data_dir, config=config, throttling=throttling).start()
    print(json.dumps({"url": server.url, "ca_bundle": str(server.ca_bundle), "pid": os.getpid()}), flush=True)
    try:
        sys.stdin.read()  # until the benchmark closes it
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
