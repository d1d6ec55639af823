"""The Function App's deployment package: what `azd deploy` uploads, read from .funcignore as azd reads it.

azd applies .funcignore with gitignore syntax (Microsoft Learn, "Configure service packaging file
exclusions"); without one it leaves out only __pycache__ and virtual environments. A copy of the package
must import, index and start as Azure runs it, with nothing the package leaves out.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pathspec

from tests.conftest import ROOT

# The app and nothing else; the remote build installs requirements.txt.
PACKAGED = {
    "adapters",
    "cloud",
    "composition.py",
    "engine",
    "function_app.py",
    "handlers",
    "host.json",
    "models",
    "policy",
    "portal",
    "requirements.txt",
}
LEFT_OUT_CODE = {"devhost", "emulator", "cli", "tests", "bench"}
# What a working copy holds besides the tracked files: none of it may be deployed.
LOCAL_FILES = [
    ".git/HEAD",
    ".venv/lib/python3.11/site-packages/fastapi/__init__.py",
    ".tools/node_modules/azurite/package.json",
    "local.settings.json",
    ".local/store.db",
    ".local/vending-callback-secret",
    ".hypothesis/examples/0a1b/2c3d",
    ".mypy_cache/3.11/cache.db",
    ".ruff_cache/CACHEDIR.TAG",
    ".pytest_cache/v/cache/nodeids",
    "models/__pycache__/plan.cpython-311.pyc",
    "node_modules/azurite/package.json",
    ".python_packages/lib/site-packages/fastapi/__init__.py",
]


def _spec() -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines((ROOT / ".funcignore").read_text(encoding="utf-8").splitlines())


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if (ROOT / line).is_file()]


def _package(files: list[str]) -> list[str]:
    spec = _spec()
    return [f for f in files if not spec.match_file(f)]


def test_the_package_holds_the_app_and_no_development_files() -> None:
    tracked = _tracked()
    packaged = _package(tracked)
    assert {f.split("/")[0] for f in packaged} == PACKAGED
    # Whole: every tracked file of the app's folders is deployed (templates and static assets too).
    assert sorted(packaged) == sorted(f for f in tracked if f.split("/")[0] in PACKAGED)
    assert _package(LOCAL_FILES) == []


def _copy_package(to: Path) -> None:
    for name in _package(_tracked()):
        target = to / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)


# As infra/modules/functionapp.bicep configures the app, but with the embedded store and bus: the test has
# no Azure to reach, and what it checks is that the package's own code is all there.
AZURE_SETTINGS = {
    "WEBSITE_SITE_NAME": "func-vending-test",
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

RUN_AS_AZURE = """
import asyncio, importlib, json, sys
from pathlib import Path
import azure.functions, function_app
from azure.functions.warmup import WarmUpContext

functions = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}
functions["warmup"](WarmUpContext())
function_app.container.warm(steps=True)  # the provider and the step SDKs, as a step handler builds them

class Context:
    invocation_id, function_name, function_directory = "package", "http_app_func", "."
    trace_context = retry_context = None

request = azure.functions.HttpRequest(method="GET", url="http://localhost/api/health", headers={}, body=b"")
health = asyncio.new_event_loop().run_until_complete(functions["http_app_func"](request, Context()))
# Every module of the package, the ones no test above reaches among them.
for path in sorted(Path(".").rglob("*.py")):
    importlib.import_module(".".join(path.with_suffix("").parts).removesuffix(".__init__"))
left_out = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1].split(",")))
print(json.dumps({"functions": sorted(functions), "health": health.status_code, "left_out_loaded": left_out}))
"""


def test_a_copy_of_the_package_indexes_warms_up_and_serves_as_azure_runs_it(tmp_path: Path) -> None:
    package = tmp_path / "wwwroot"
    _copy_package(package)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VENDING_", "AZURE_", "WEBSITE_", "PYTHON"))}
    out = subprocess.run(
        [sys.executable, "-c", RUN_AS_AZURE, ",".join(sorted(LEFT_OUT_CODE))],
        cwd=package,
        env={**clean, **AZURE_SETTINGS, "VENDING_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["health"] == 200
    assert {"http_app_func", "warmup", "onboarding", "steps", "notifications"} <= set(result["functions"])
    assert result["left_out_loaded"] == []


def _imports_of_left_out_code(package: list[str]) -> set[tuple[str, str, str]]:
    """Each import of code the package leaves out, outside `if TYPE_CHECKING`: (file, enclosing scope, module)."""
    found: set[tuple[str, str, str]] = set()

    def visit(node: ast.AST, file: str, scope: tuple[str, ...]) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child, file, scope)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found.update((file, ".".join(scope), n) for n in names if n.split(".")[0] in LEFT_OUT_CODE)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            scope = (*scope, node.name)
        for child in ast.iter_child_nodes(node):
            visit(child, file, scope)

    for file in package:
        if file.endswith(".py"):
            visit(ast.parse((ROOT / file).read_text(encoding="utf-8")), file, ())
    return found


def test_the_package_reaches_left_out_code_only_in_modes_refused_on_app_service() -> None:
    # Each is reached only with VENDING_AUTH_MODE=local (AuthSettings refuses it on App Service), with a
    # cloud other than azure (Settings refuses it there), or by the devhost's own identity routes.
    assert _imports_of_left_out_code(_package(_tracked())) == {
        ("composition.py", "Container.local_issuer.build", "devhost.identity"),
        ("composition.py", "Container.membership.build", "devhost.identity"),
        ("engine/policy.py", "policy_with_tenant", "devhost.identity"),
        ("handlers/identity.py", "add_identity_routes", "devhost.identity"),
    }
