"""The packages a deployment has: what requirements.txt installs, and nothing the tests and tools add.

The Functions app is deployed with requirements.txt only (infra, azure.yaml: the remote build installs it).
This virtual environment also holds the test and lint tools (requirements-dev.txt), and some libraries
import them when they are there: httpx's command line, for one, loads click, rich and pygments when
click can be imported, about 35 ms of a cold first response that Azure never pays. The cold-start
benchmarks run with those packages hidden (`PRELUDE`), so that the figures are the deployment's.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ENV = "BENCH_HIDDEN_MODULES"
# Installed with Python itself (ensurepip), so there on Azure's worker too.
WITH_PYTHON = frozenset({"pip", "setuptools"})

# Run first in a cold-start subprocess, before anything is imported: a module whose package is not
# deployed cannot be imported, as on Azure (ModuleNotFoundError, which the libraries' optional imports expect).
PRELUDE = f"""
import os as _os, sys as _sys
class _NotDeployed:
    hidden = frozenset(filter(None, _os.environ.get({ENV!r}, "").split(",")))
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in cls.hidden:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not deployed: not in requirements.txt)", name=name)
        return None
_sys.meta_path.insert(0, _NotDeployed)
"""


def deployed_distributions(requirements: Path) -> set[str]:
    """The canonical names of the distributions `requirements` installs, with their dependencies and extras."""
    todo = [Requirement(line) for raw in requirements.read_text().splitlines() if (line := raw.split("#")[0].strip())]
    extras: dict[str, set[str]] = {}
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if name in extras and set(req.extras) <= extras[name]:
            continue
        wanted = extras.setdefault(name, set())
        wanted.update(req.extras)
        try:
            requires = distribution(req.name).requires or []
        except PackageNotFoundError:
            continue
        for line in requires:
            dep = Requirement(line)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in wanted | {""}):
                todo.append(Requirement(str(dep).split(";")[0]))  # its marker is met: walk it as a plain requirement
    return set(extras)


def hidden_modules(requirements: Path) -> list[str]:
    """The top-level modules installed here whose distributions a deployment of `requirements` lacks."""
    kept = deployed_distributions(requirements) | WITH_PYTHON
    return sorted(
        module
        for module, dists in packages_distributions().items()
        if not any(canonicalize_name(d) in kept for d in dists)
    )
