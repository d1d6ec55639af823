"""Callbacks to this machine, for tests only: the capture endpoints listen on loopback, over http.

The default policy refuses both (models/callbacks.py), so a test that posts callbacks to a local
receiver opts in here, explicitly, for its own container or policy file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from composition import Container
from models.policy import Policy

LOOPBACK: dict[str, Any] = {
    "allowed_callback_hosts": ["127.0.0.1", "localhost", "*.callbacks.test"],
    "callbacks": {"allow_http": True, "allowed_networks": ["127.0.0.0/8", "::1/128"]},
}


def loopback_callbacks(policy: Policy) -> Policy:
    """Return `policy` with callbacks to loopback over http allowed (the rest as it was)."""
    data = policy.model_dump(mode="json")
    data["allowed_callback_hosts"] = [*policy.allowed_callback_hosts, *LOOPBACK["allowed_callback_hosts"]]
    data["callbacks"] = {**data["callbacks"], **LOOPBACK["callbacks"]}
    return Policy.model_validate(data)


def loopback_policy_file(source: Path, folder: Path) -> Path:
    """Write a copy of the policy file `source` that allows loopback callbacks into `folder`; return its path."""
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    data["allowed_callback_hosts"] = [*data.get("allowed_callback_hosts", []), *LOOPBACK["allowed_callback_hosts"]]
    data["callbacks"] = {**data.get("callbacks", {}), **LOOPBACK["callbacks"]}
    path = folder / "policy-loopback-callbacks.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@contextmanager
def loopback_callbacks_for(container: Container) -> Iterator[Policy]:
    """Let a container's callbacks reach loopback while the block runs; then its own policy and notifier again."""
    from adapters.webhook import HttpNotifier

    policy = loopback_callbacks(container.policy)
    notifier = HttpNotifier(
        signing_secret=container.callback_secret,
        timeout_s=container.settings.callback_timeout_s,
        policy=lambda: policy,
    )
    container.swap(policy=policy, notifier=notifier)
    try:
        yield policy
    finally:
        container.swap(policy=None, notifier=None)
