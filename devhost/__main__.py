"""`python -m devhost`: the whole service on embedded defaults, on http://127.0.0.1:7071."""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from devhost.runtime import Runtime
from engine.policy import PolicyFileError
from handlers.api import create_api
from models.errors import VendingError
from models.settings import Settings


def unwritable(folder: Path) -> str | None:
    """Say why the devhost cannot keep its state in `folder` (a folder or file in it it may not write), or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".write-check-"):
            pass
        for path in sorted(folder.iterdir()):
            # The store, the bus and the event log are opened for writing later, by threads.
            if path.is_file():
                with path.open("r+b"):
                    pass
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != folder else ""
        return (
            f"the data directory {folder} is not writable: {exc.strerror or exc}{where}. Make it and its files "
            "writable by this user, or set VENDING_DATA_DIR to another folder."
        )
    return None


def main() -> int:
    """Run the devhost until Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("azure", "httpx", "urllib3", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = Settings()
    if why := unwritable(settings.data_dir.resolve()):
        print(f"error: cannot start: {why}", file=sys.stderr)
        return 2
    try:
        runtime = Runtime.start(settings)
        runtime.container.policy  # noqa: B018 - fail now, not on the first request, if the policy is wrong
        runtime.container.authenticator  # noqa: B018 - and if the identity settings or the directory are
    except PolicyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, ValidationError, VendingError) as exc:
        print(f"error: cannot start: {exc}", file=sys.stderr)
        return 2
    s = runtime.settings
    base = f"http://{s.host}:{s.port}"
    issuer = runtime.container.local_issuer
    auth = runtime.container.auth_settings
    identity = (
        f"{issuer.issuer}   (embedded issuer; users in {auth.directory_file})"
        if issuer is not None
        else f"Microsoft Entra ID ({auth.mode}, tenant {auth.tenant_id})"
    )
    faults = f"; faults from {s.emulator_faults}" if s.emulator_faults else ""
    # What a data scientist's MLClient or az needs (docs/emulator.md, "Hand-off"): the URL and the CA.
    trust = (
        f"\n  emulator CA    {runtime.emulator.ca_file}   (bundle with public roots: {runtime.emulator.ca_bundle})"
        if runtime.emulator is not None
        else ""
    )
    folder = s.data_dir.resolve()
    telemetry = (
        "Azure Monitor (APPLICATIONINSIGHTS_CONNECTION_STRING); also events.jsonl and the events API"
        if runtime.container.telemetry.enabled
        else "events.jsonl and the events API (set APPLICATIONINSIGHTS_CONNECTION_STRING for Azure Monitor)"
    )
    state = (
        f"{folder}   (store, bus, events.jsonl)"
        if s.store == "sqlite"
        else f"Azure Tables at {getattr(runtime.container.store, 'url', '?')} ({s.tables_prefix}*); bus and events in {folder}"
    )
    print(
        f"""
Workspace Vending devhost
  API            {base}/api   (docs: {base}/api/docs)
  ARM emulator   {s.emulator_url or s.arm_endpoint}   (resources take {s.emulator_latency_s:g} s{faults}){trust}
  state          {state}
  policy         {s.policy_file}
  workers        {s.workers} step workers, 2 onboarding workers, 2 notification workers
  telemetry      {telemetry}
  identity       {identity}

Try:
  .venv/bin/python -m cli login alice        # a token for alice (team fraud-detection), kept until it expires
  .venv/bin/python -m cli submit examples/cpu-small.json --wait
""",
        flush=True,
    )
    try:
        api = create_api(lambda: runtime.container, local_issuer=issuer)
        uvicorn.run(api, host=s.host, port=s.port, log_level="warning")
    finally:
        runtime.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
