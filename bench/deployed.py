"""The deployment as Azure runs it: the package azd uploads, and a Python with requirements.txt only.

The package is what `.funcignore` keeps, read with gitignore syntax as azd reads it (Microsoft Learn,
"Configure service packaging file exclusions"). Flex Consumption's remote build installs
requirements.txt into it; here a virtual environment holds those packages and nothing the tests and
tools add (requirements-dev.txt). That matters for cold starts: with click installed, httpx loads its
command line, and with it rich and pygments, 60-80 ms that Azure never pays. The cold-start benchmarks
run a copy of the package with that environment's Python; tests/contract/test_packaging.py checks the
package itself.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pathspec

ROOT = Path(__file__).resolve().parent.parent


def tracked_files(root: Path = ROOT) -> list[str]:
    """The repository's tracked files that exist in the working tree, relative to `root`."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True)
    return [name for name in out.stdout.decode().split("\0") if name and (root / name).is_file()]


def packaged(files: list[str], root: Path = ROOT) -> list[str]:
    """Those of `files` (relative paths) that the Function App's package holds."""
    spec = pathspec.GitIgnoreSpec.from_lines((root / ".funcignore").read_text(encoding="utf-8").splitlines())
    return [name for name in files if not spec.match_file(name)]


def copy_package(to: Path, root: Path = ROOT) -> None:
    """Write a copy of the package (the tracked files it holds) to the folder `to`."""
    for name in packaged(tracked_files(root), root):
        target = to / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)


def bare_environment() -> dict[str, str]:
    """Return only what a process needs to start: none of this shell's settings reach the deployed app."""
    return {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}


def deployed_python(root: Path = ROOT) -> Path:
    """A Python with requirements.txt's packages only, at the versions constraints.txt pins; made once, then reused.

    Kept in .local/bench/deploy-venv and made again when either file or this Python changes (about a
    minute from the local wheel cache).
    """
    folder = root / ".local" / "bench" / "deploy-venv"
    wanted = hashlib.sha256(
        sys.version.encode()
        + b"\0"
        + (root / "requirements.txt").read_bytes()
        + b"\0"
        + (root / "constraints.txt").read_bytes()
    ).hexdigest()
    stamp = folder / "requirements.sha256"
    python = folder / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", "requirements.txt", "-c", "constraints.txt"],
        cwd=root,
        check=False,
        capture_output=True,
        text=True,
    )
    if installed.returncode != 0:
        raise RuntimeError(f"pip could not install requirements.txt into {folder}:\n{installed.stderr[-3000:]}")
    stamp.write_text(wanted)
    return python


# As infra/modules/functionapp.bicep configures the app, but with the embedded store and bus (a benchmark
# or test here has no Azure Tables or Service Bus to reach) and telemetry sent with a key to a loopback
# port nobody answers (no Entra token for Application Insights here; Microsoft's own SDK channels off).
# App Service sets the two WEBSITE_ settings.
DEPLOYMENT_SETTINGS = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING": (
        "InstrumentationKey=00000000-0000-0000-0000-00000000dead;IngestionEndpoint=http://127.0.0.1:9/"
    ),
    "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
    "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
    "WEBSITE_SITE_NAME": "func-vending-bench",
    "WEBSITE_AUTH_ENABLED": "True",
    "VENDING_CLOUD": "azure",
    "VENDING_SERVICE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001",
    "VENDING_TENANT_ID": "2f4a6c8e-0b1d-4f3a-9c5e-7a9b1d3f5e70",
    "VENDING_AUTH_MODE": "easyauth",
    "VENDING_AUTH_TENANT_ID": "2f4a6c8e-0b1d-4f3a-9c5e-7a9b1d3f5e70",
    "VENDING_AUTH_CLIENT_ID": "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
    "VENDING_AUTH_AUDIENCE": "api://workspace-vending",
    "VENDING_STORE": "sqlite",
    "VENDING_BUS": "sqlite",
}
