"""The Function App's deployment package: what `azd deploy` uploads, read from .funcignore as azd reads it.

azd applies .funcignore with gitignore syntax (Microsoft Learn, "Configure service packaging file
exclusions"); without one it leaves out only __pycache__ and virtual environments. A copy of the package
must import, index and start as Azure runs it, with nothing the package leaves out.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from bench.deployed import DEPLOYMENT_SETTINGS, bare_environment, copy_package, packaged, tracked_files
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
# What a working copy may hold besides the tracked files: none of it may be deployed.
LOCAL_FILES = [
    ".git/HEAD",
    ".venv/lib/python3.11/site-packages/fastapi/__init__.py",
    "venv/pyvenv.cfg",
    "env/lib/python3.11/site-packages/fastapi/__init__.py",
    "workspace-vending_env/pyvenv.cfg",  # what `azd restore` makes
    "scratch_env/lib/python3.11/site-packages/x.py",
    ".tools/node_modules/azurite/package.json",
    "node_modules/azurite/package.json",
    ".python_packages/lib/site-packages/fastapi/__init__.py",
    "local.settings.json",
    ".env",
    ".azure/dev/.env",  # azd's environment values
    ".vscode/settings.json",
    ".local/store.db",
    ".local/vending-callback-secret",
    ".hypothesis/examples/0a1b/2c3d",
    ".mypy_cache/3.11/cache.db",
    ".ruff_cache/CACHEDIR.TAG",
    ".pytest_cache/v/cache/nodeids",
    ".coverage",
    "htmlcov/index.html",
    "models/__pycache__/plan.cpython-311.pyc",
    "handlers/portal.cpython-311.pyc",
]


def test_every_rule_reads_alike_in_azds_matcher_and_gits() -> None:
    # azd matches .funcignore with its own library, whose wildcards cross "/" in a pattern that has a
    # slash; pathspec here follows git. A literal name at the top (/name) or a name with no slash (matched
    # against each file's and folder's own name) reads the same in both, so the package computed here is
    # the one azd makes.
    for line in (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines():
        rule = line.strip()
        if not rule or rule.startswith("#"):
            continue
        assert not rule.startswith("!"), f"{rule}: a re-include reads differently in azd"
        name = rule.removeprefix("/").removesuffix("/")
        assert "/" not in name, f"{rule}: one name, at the top or anywhere"
        assert not rule.startswith("/") or not any(c in name for c in "*?[]"), f"{rule}: a wildcard at the top"


def test_the_package_holds_the_app_and_no_development_files() -> None:
    tracked = tracked_files()
    deployed = packaged(tracked)
    # A new tracked file or folder at the top fails here until .funcignore leaves it out or PACKAGED names it.
    assert {f.split("/")[0] for f in deployed} == PACKAGED
    # Whole: every tracked file of the app's folders is deployed (templates and static assets too).
    assert sorted(deployed) == sorted(f for f in tracked if f.split("/")[0] in PACKAGED)
    assert packaged(LOCAL_FILES) == []


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
    copy_package(package)
    bare = bare_environment()
    out = subprocess.run(
        [sys.executable, "-c", RUN_AS_AZURE, ",".join(sorted(LEFT_OUT_CODE))],
        cwd=package,
        env={**bare, **DEPLOYMENT_SETTINGS, "VENDING_DATA_DIR": str(tmp_path / "data")},
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
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
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
    assert _imports_of_left_out_code(packaged(tracked_files())) == {
        ("composition.py", "Container.local_issuer.build", "devhost.identity"),
        ("composition.py", "Container.membership.build", "devhost.identity"),
        ("engine/policy.py", "policy_with_tenant", "devhost.identity"),
        ("handlers/identity.py", "add_identity_routes", "devhost.identity"),
    }
