"""Azure's compute name rules at intake, and the emulator applying the same rules (models/azure_names.py)."""

from __future__ import annotations

from typing import Any

import pytest

from emulator.arm_errors import ArmError
from emulator.validation import validate
from models.azure_names import name_problem
from models.errors import InvalidInputError
from models.request import parse_request

USER = "7d8e9f0a-1b2c-4d3e-8f4a-5b6c7d8e9f0a"
COMPUTES = "Microsoft.MachineLearningServices/workspaces/computes"


def _request(name: str, kind: str) -> dict[str, Any]:
    compute: dict[str, Any] = {"name": name, "kind": kind, "vm_size": "Standard_DS3_v2"}
    if kind == "instance":
        compute["assigned_user"] = USER
    return {"team": "names", "environment": "dev", "region": "swedencentral", "compute": [compute]}


def _refusal(name: str, kind: str) -> str | None:
    try:
        parse_request(_request(name, kind))
    except InvalidInputError as exc:
        return {p.field: p.message for p in exc.problems}.get("compute[0].name")
    return None


def _emulator_refusal(name: str, kind: str) -> str | None:
    inner: dict[str, Any] = {"vmSize": "Standard_DS3_v2"}
    if kind == "cluster":
        inner["scaleSettings"] = {"minNodeCount": 0, "maxNodeCount": 1}
    body = {
        "properties": {"computeType": "AmlCompute" if kind == "cluster" else "ComputeInstance", "properties": inner}
    }
    try:
        validate(COMPUTES, name, body)
    except ArmError as exc:
        return exc.message
    return None


# (name, kind, Azure accepts it): the spec's NamePattern, and Microsoft's cluster rule (a "-" is followed
# later by a letter); names that fail only at the body check are not in this table.
CASES = [
    ("cpu-1", "cluster", False),  # trailing -<digits>: Azure refuses after the resource group, storage ... exist
    ("cpu-1", "instance", False),
    ("gpu-cluster-0001", "cluster", False),
    ("notebook-for-ada-lovelace", "instance", False),  # 25 characters
    ("notebook-for-ada-lovelac", "instance", True),  # 24: Azure accepts up to 24
    ("ada-notebook-2024a", "instance", True),  # 18
    ("cpu-", "cluster", False),  # a hyphen with no letter after it
    ("cpu-", "instance", True),
    ("cpu-a1", "cluster", True),
    ("cpu1", "cluster", True),
    ("c1", "cluster", False),
    ("1cpu", "instance", False),
    ("cpu_1", "cluster", False),
]


@pytest.mark.parametrize(("name", "kind", "accepted"), CASES)
def test_intake_and_the_emulator_follow_azures_compute_name_rule(name: str, kind: str, accepted: bool) -> None:
    at_intake, in_emulator = _refusal(name, kind), _emulator_refusal(name, kind)
    assert (at_intake is None) is accepted, at_intake
    assert (in_emulator is None) is accepted, in_emulator


def test_a_refused_compute_name_says_what_to_write_instead() -> None:
    message = _refusal("cpu-1", "cluster") or ""
    assert "'cpu-1' is not valid" in message
    assert "3 to 24 characters" in message
    assert "'cpu1' or 'cpu-a'" in message


@pytest.mark.parametrize(
    ("kind", "name", "accepted"),
    [
        ("insights", "appi-team-dev", True),
        ("insights", "appi.", False),
        ("insights", "a/b", False),
        ("insights", "a" * 261, False),
        ("resource_group", "rg-ml-team-dev", True),
        ("resource_group", "rg.", False),
        ("registry", "crteam01", True),
        ("registry", "cr-team", False),
    ],
)
def test_other_names_follow_azures_rules(kind: str, name: str, accepted: bool) -> None:
    assert (name_problem(kind, name) is None) is accepted
