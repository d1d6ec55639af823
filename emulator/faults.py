"""Fault injection: rules that make the emulator answer like Azure on a bad day.

A rule matches calls by resource type, method and name, and fires on a schedule (skip the first
N matches, then every Nth, at most `times` times). It answers with an ARM error (status, code,
message, Retry-After), for any method a rule names (PUT, PATCH, POST, DELETE of any type); with
`latency_s` it makes a matching create (or, with `method: DELETE`, a long-running delete) slow instead,
and with `provisioning_state: Failed` it accepts a matching create and lets it end Failed (an
asynchronous failure: the PUT succeeds, the operation and the resource's provisioningState end Failed)
or, with `method: DELETE`, accepts a long-running delete whose operation ends Failed, the resource kept.
Rules come from a JSON or YAML file (`VENDING_EMULATOR_FAULTS`) or from `PUT /_emulator/faults`.
"""

from __future__ import annotations

import fnmatch
import json
import threading
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field


class Fault(BaseModel):
    """One fault rule."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(
        "*", description="Resource type (fnmatch, case-insensitive), e.g. Microsoft.Storage/storageAccounts."
    )
    method: str = Field("*", description="HTTP method, or *.")
    name: str = Field("*", description="Resource name (fnmatch, case-insensitive).")
    status: int = Field(500, ge=400, le=599)
    code: str = "InternalServerError"
    message: str = "The server encountered an internal error. Please retry the request."
    retry_after_s: int | None = Field(None, ge=0)
    latency_s: float | None = Field(
        None, ge=0, description="Instead of an error: make a matching create (or long-running delete) this slow."
    )
    provisioning_state: Literal["Failed"] | None = Field(
        None,
        description="Instead of an error: accept a matching create (or long-running delete), then let it end in "
        "this state (code and message become the operation's error; a failed delete keeps the resource).",
    )
    delay_s: float = Field(0.0, ge=0, le=120, description="Wait this long before answering (timeouts).")
    skip: int = Field(0, ge=0, description="Let this many matching calls through first.")
    every: int = Field(1, ge=1, description="Then fire on every Nth matching call.")
    times: int | None = Field(1, ge=1, description="Fire at most this many times (null: no limit).")

    @property
    def kind(self) -> Literal["error", "slow", "failed"]:
        """Say what the rule does: answer with an error, slow a create down, or let a create end Failed."""
        if self.latency_s is not None:
            return "slow"
        if self.provisioning_state is not None:
            return "failed"
        return "error"


class FaultPlan:
    """The active fault rules and how often each has matched and fired."""

    def __init__(self, faults: list[Fault] | None = None) -> None:
        self._lock = threading.Lock()
        self.faults: list[Fault] = []
        self.matched: list[int] = []
        self.fired: list[int] = []
        self.replace(faults or [])

    def replace(self, faults: list[Fault]) -> None:
        """Install a new set of rules, with fresh counters."""
        with self._lock:
            self.faults = list(faults)
            self.matched = [0] * len(faults)
            self.fired = [0] * len(faults)

    def check(
        self,
        *,
        rtype: str,
        method: str,
        name: str | None,
        slow_only: bool = False,
        kind: Literal["error", "slow", "failed"] | None = None,
    ) -> Fault | None:
        """Return the first rule of this kind (an error by default) that fires for this call (and count it), or None."""
        wanted = kind or ("slow" if slow_only else "error")
        with self._lock:
            for i, f in enumerate(self.faults):
                if f.kind != wanted:
                    continue
                if f.method not in ("*", method.upper()):
                    continue
                if not fnmatch.fnmatch(rtype.lower(), f.type.lower()):
                    continue
                if not fnmatch.fnmatch((name or "").lower(), f.name.lower()):
                    continue
                self.matched[i] += 1
                n = self.matched[i] - f.skip
                if n <= 0 or (n - 1) % f.every != 0:
                    continue
                if f.times is not None and self.fired[i] >= f.times:
                    continue
                self.fired[i] += 1
                return f
        return None

    def report(self) -> list[dict[str, Any]]:
        """Return each rule with its counters."""
        with self._lock:
            return [
                {**f.model_dump(), "matched": m, "fired": n}
                for f, m, n in zip(self.faults, self.matched, self.fired, strict=True)
            ]


class Scenario(BaseModel):
    """A bad day to rehearse: fault rules, quotas and unregistered resource providers."""

    model_config = ConfigDict(extra="forbid")

    faults: list[Fault] = Field(default_factory=list)
    quota: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="region -> VM family (or lowPriority) -> vCPU limit"
    )
    unregistered: list[str] = Field(default_factory=list, description="Resource provider namespaces not registered.")


def load_scenario(path: Path) -> Scenario:
    """Read a scenario from a JSON or YAML file (a list of faults, or the Scenario's fields)."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if isinstance(data, list):
        data = {"faults": data}
    return Scenario.model_validate(data or {})
