"""ARM's request limits as both sides see them: which bucket a call draws from.

Azure Resource Manager counts reads, writes and deletes in buckets of their own (Microsoft Learn,
"Understand how Azure Resource Manager throttles requests"). The emulator enforces them
(emulator/throttling.py) and the provider paces itself by them (cloud/clients.py, cloud/throttle.py).
"""

from __future__ import annotations

from typing import Literal

Operation = Literal["reads", "writes", "deletes"]


def operation_of(method: str) -> Operation:
    """Say which bucket an HTTP method draws from: GET/HEAD read, DELETE deletes, the rest write."""
    method = method.upper()
    if method in ("GET", "HEAD"):
        return "reads"
    if method == "DELETE":
        return "deletes"
    return "writes"
