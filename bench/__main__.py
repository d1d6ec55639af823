"""`make bench`: how fast the service is, measured on this machine, printed and written to docs/performance.md.

Sections (each a subprocess or a fresh in-process setup, so one does not warm the next):
- intake: requests/s and p50/p99 of POST /api/workspaces on the devhost, next to a bare FastAPI
  endpoint that only validates the same model, in the same run;
- cold start: importing function_app and serving the first HTTP request, from a copy of the deployment package
  with requirements.txt's packages only (bench/deployed.py), next to importing azure.ai.ml;
- fan-out: 1, 50 and 200 concurrent requests against the emulator with latencies set, as makespan
  over the plan's critical path; and the engine's own cost per step on SQLite;
- memory: the step worker process's peak while 200 requests are in flight;
- baseline: the service against the script a user would write instead (bench/baseline.py), for 1, 20
  and 100 requests, makespan and ARM calls side by side.

`python -m bench --quick` runs smaller sizes (a smoke run, not the record).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# ----- intake -----------------------------------------------------------------------------------


def _load(
    url: str,
    make_body: Callable[[int], dict[str, Any]],
    *,
    seconds: float,
    threads: int,
    headers: Callable[[int], dict[str, str]] | None = None,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """Post bodies from `threads` clients for `seconds`; request i is sent with `headers(i)` (its principal's token).

    With `server_pid`, also the server process's CPU per accepted request (/proc), the load's own excluded.
    """
    import httpx

    from bench.emulator_process import process_cpu_s

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    counter = iter(range(10**9))

    def worker(index: int) -> None:
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter)
                started = time.perf_counter()
                response = client.post(url, json=make_body(i), headers=headers(i) if headers else None)
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if response.status_code >= 300:
                        errors.append(f"{response.status_code} {response.text[:2000]}")

    started = time.monotonic()
    cpu_before = process_cpu_s(server_pid) if server_pid else 0.0
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.monotonic() - started
    cpu = process_cpu_s(server_pid) - cpu_before if server_pid else 0.0
    accepted = len(latencies) - len(errors)
    return {
        "rps": accepted / wall,  # accepted requests only: a refusal is not throughput
        "cpu_ms": cpu * 1000 / max(accepted, 1),
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "n": len(latencies),
    }


def _serve(argv: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    import httpx

    out = log.open("w")
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv} exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{argv} did not start:\n{log.read_text()[-2000:]}")


BARE_APP = textwrap.dedent(
    """
    from fastapi import FastAPI
    from models.request import WorkspaceRequest
    app = FastAPI()

    @app.get("/api/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/workspaces", status_code=202)
    def submit(body: WorkspaceRequest) -> dict[str, str]:
        return {"team": body.team}
    """
)
# The least a durable intake can do: validate the same model and write one row in one SQLite transaction,
# with the service store's settings (adapters/sqlite_base.py: WAL, synchronous NORMAL, a connection per thread).
DURABLE_APP = textwrap.dedent(
    """
    import os, sqlite3, threading, uuid
    from fastapi import FastAPI
    from models.request import WorkspaceRequest
    app = FastAPI()
    PATH = os.environ["BENCH_DB"]
    local = threading.local()
    with sqlite3.connect(PATH) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE IF NOT EXISTS requests (id TEXT PRIMARY KEY, body TEXT NOT NULL)")

    def conn() -> sqlite3.Connection:
        if not hasattr(local, "conn"):
            local.conn = sqlite3.connect(PATH, isolation_level=None)
            local.conn.execute("PRAGMA busy_timeout = 5000")
            local.conn.execute("PRAGMA synchronous = NORMAL")
        return local.conn

    @app.get("/api/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/workspaces", status_code=202)
    def submit(body: WorkspaceRequest) -> dict[str, str]:
        rid = str(uuid.uuid4())
        c = conn()
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO requests (id, body) VALUES (?, ?)", (rid, body.model_dump_json()))
        c.execute("COMMIT")
        return {"id": rid}
    """
)


def _admin_tokens(data_dir: Path, port: int, n: int) -> list[dict[str, str]]:
    """Authorization headers of `n` admins, each a principal of its own, signed with the key the devhost keeps.

    A platform's load comes from many callers, each within its allowance (VENDING_SUBMISSIONS_PER_WINDOW,
    10 a window by default): the load sends each principal's token for that many requests, then the next's.
    """
    import uuid

    from devhost.identity import LocalIssuer
    from models.identity import DEFAULT_DIRECTORY

    issuer = LocalIssuer.open(directory_file=DEFAULT_DIRECTORY, data_dir=data_dir, base_url=f"http://127.0.0.1:{port}")
    admin = issuer.directory.find("admin")
    assert admin is not None, "the example directory has no admin"
    tokens = []
    for i in range(n):
        user = admin.model_copy(update={"object_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-admin-{i}"))})
        tokens.append({"Authorization": f"Bearer {issuer.issue(user).access_token.get_secret_value()}"})
    return tokens


SUBMISSIONS_PER_PRINCIPAL = 10  # models/settings.py: submissions_per_window's default
MAX_INTAKE_RPS = 1500  # more than any intake here takes: enough principals for a run at that rate


def _first_error(result: dict[str, Any]) -> str:
    """The first refusal of a load run, as its status and the start of its detail (empty when none)."""
    if not result["first_error"]:
        return ""
    status, _, body = str(result["first_error"]).partition(" ")
    try:
        detail = str(json.loads(body).get("detail", ""))
    except ValueError:
        detail = body
    return f"; the first: {status}, {detail[:110]}…"


def _bare(folder: Path, name: str, code: str, body: Callable[[int], dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Serve one of the bare apps with uvicorn and load it as the devhost is loaded."""
    from emulator.server import free_port

    (folder / f"{name}.py").write_text(code)
    port = free_port()
    server = _serve(
        [PY, "-m", "uvicorn", f"{name}:app", "--port", str(port), "--log-level", "warning"],
        {"PYTHONPATH": f"{folder}:{ROOT}", "BENCH_DB": str(folder / f"{name}.db")},
        port,
        folder / f"{name}.log",
    )
    try:
        return _load(f"http://127.0.0.1:{port}/api/workspaces", body, seconds=seconds, threads=8, server_pid=server.pid)
    finally:
        server.terminate()
        server.wait(10)


def _line(result: dict[str, Any]) -> str:
    return (
        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; server CPU {result['cpu_ms']:.1f} ms per "
        f"accepted; {result['errors']} refused of {result['n']:.0f}" + _first_error(result)
    )


# What a submission costs in CPU, part by part, one after another in one process (the devhost's settings and
# emulator): the parts the one-row endpoint does not have and intake may not drop (DESIGN section 9: who is
# calling, their allowance, confinement's ARM read), then the whole submission.
INTAKE_PARTS = textwrap.dedent(
    """
    import json, time, uuid
    from composition import Container
    from engine.planner import plan as make_plan
    from engine.policy import admit
    from models.request import WorkspaceRequest
    from models.settings import Settings

    c = Container(Settings())
    issuer = c.local_issuer
    admin = issuer.directory.find("admin")
    N = 300
    users = [admin.model_copy(update={"object_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"parts-{i}"))}) for i in range(N)]
    tokens = [issuer.issue(u).access_token.get_secret_value() for u in users]
    example = json.loads(open("examples/cpu-small.json").read())
    bodies = [WorkspaceRequest.model_validate(example | {"workspace_name": f"parts-{i}"}) for i in range(N)]
    auth, intake = c.authenticator, c.intake
    callers = [auth.authenticate({"authorization": f"Bearer {t}"}) for t in tokens[:2]]  # keys fetched, caches warm

    def cpu_ms(fn):
        fn(0)
        started = time.process_time()
        for i in range(1, N):
            fn(i)
        return (time.process_time() - started) * 1000 / (N - 1)

    callers = [None] * N
    out = {"token": cpu_ms(lambda i: callers.__setitem__(i, auth.authenticate({"authorization": f"Bearer {tokens[i]}"})))}
    out["allowance"] = cpu_ms(lambda i: c.submissions(callers[i]))
    resolved = [admit(b, c.policy, team_vcpus_in_use=0) for b in bodies]
    plans = [make_plan(r, c.policy) for r in resolved]
    out["confinement"] = cpu_ms(lambda i: intake.confinement.check(plan=plans[i], request=resolved[i]))
    out["submission"] = cpu_ms(lambda i: intake.submit(request=bodies[i], caller=callers[i], source="rest"))
    print(json.dumps(out))
    """
)


def bench_intake(seconds: float) -> list[tuple[str, str, str]]:
    from bench.emulator_process import Emulator
    from emulator.server import free_port

    example = json.loads((ROOT / "examples" / "cpu-small.json").read_text())

    def body(i: int) -> dict[str, Any]:
        return example | {"workspace_name": f"bench-{os.getpid() % 1000}-{i}"}

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        policy = (ROOT / "policy" / "default.yaml").read_text()
        off = folder / "policy-off.yaml"
        off.write_text(
            policy.replace("max_team_vcpus: 400", "max_team_vcpus: 400000") + "\npreflight: {enabled: false}\n"
        )
        on = folder / "policy-on.yaml"
        on.write_text(policy.replace("max_team_vcpus: 400", "max_team_vcpus: 400000"))
        bare = _bare(folder, "bare_app", BARE_APP, body, seconds)
        durable = _bare(folder, "durable_app", DURABLE_APP, body, seconds)
        results = {}
        parts: dict[str, float] = {}
        # ARM's buckets off: the service's own intake, with its one ARM read (confinement: is the workspace name
        # someone else's?) answered at loopback speed. On: the same, with ARM's read bucket in the way.
        for label, policy_file, throttling in (
            ("unthrottled", off, {"enabled": False}),
            ("throttled", off, None),
            ("preflight", on, None),
        ):
            port = free_port()
            config: dict[str, Any] = {"latency_s": 5.0, "quota": QUOTA}
            if throttling is not None:
                config["throttling"] = throttling
            # The cloud in a process of its own: the devhost's CPU is the service's.
            with Emulator(folder / f"emulator-{label}", config) as emu:
                env = {
                    "PORT": str(port),
                    "VENDING_DATA_DIR": str(folder / f"data-{label}"),
                    "VENDING_POLICY_FILE": str(policy_file),
                    # Intake alone: Flex Consumption runs HTTP functions on instances of their own, apart from the
                    # queue-triggered step handlers (Microsoft Learn, "Flex Consumption plan", Per-function scaling).
                    "VENDING_WORKERS": "0",
                    **emu.env(),
                }
                host = _serve([PY, "-m", "devhost"], env, port, folder / f"devhost-{label}.log")
                try:
                    tokens = _admin_tokens(
                        folder / f"data-{label}", port, int(seconds * MAX_INTAKE_RPS / SUBMISSIONS_PER_PRINCIPAL) + 1
                    )
                    results[label] = _load(
                        f"http://127.0.0.1:{port}/api/workspaces",
                        body,
                        seconds=seconds,
                        threads=8,
                        # Past the principals minted, the last one's allowance runs out: refusals (429), counted as such.
                        headers=lambda i, tokens=tokens: tokens[min(i // SUBMISSIONS_PER_PRINCIPAL, len(tokens) - 1)],  # type: ignore[misc]
                        server_pid=host.pid,
                    )
                    if label == "unthrottled":
                        parts = _run_json(INTAKE_PARTS, {**env, "VENDING_DATA_DIR": str(folder / "data-parts")})
                finally:
                    host.terminate()
                    host.wait(15)
    free, throttled, preflight = results["unthrottled"], results["throttled"], results["preflight"]
    mandated = parts["token"] + parts["allowance"] + parts["confinement"]
    ceiling = durable["cpu_ms"] / (durable["cpu_ms"] + mandated)
    return [
        ("intake: bare FastAPI, validation only", f"{bare['rps']:.0f} accepted/s", _line(bare)),
        ("intake: bare FastAPI, validation and one SQLite row", f"{durable['rps']:.0f} accepted/s", _line(durable)),
        (
            "intake: devhost, pre-flight off, ARM unthrottled",
            f"{free['rps']:.0f} accepted/s",
            _line(free)
            + "; the request, its steps and the first steps' claims in one store write, their messages after it",
        ),
        (
            "intake ratio (target ≥ 0.7)",
            f"{free['rps'] / durable['rps']:.2f}",
            f"devhost ÷ the one-row endpoint, same run, 8 clients; ÷ validation only: {free['rps'] / bare['rps']:.2f}; "
            f"server CPU per accepted request: {free['cpu_ms']:.1f} ms against {durable['cpu_ms']:.1f} ms",
        ),
        (
            "intake: what the one-row endpoint lacks and intake may not drop, CPU per submission",
            f"{mandated:.2f} ms",
            f"the caller's token {parts['token']:.2f} ms, their allowance {parts['allowance']:.2f} ms, confinement's "
            f"ARM read {parts['confinement']:.2f} ms; the whole submission {parts['submission']:.2f} ms (request, "
            "plan, record, steps, claims, messages, events); each timed alone, one call after another, in one process",
        ),
        (
            "intake ratio's ceiling with those parts alone",
            f"{ceiling:.2f}",
            f"the one-row endpoint's server CPU {durable['cpu_ms']:.2f} ms ÷ ({durable['cpu_ms']:.2f} + {mandated:.2f}) "
            "ms: the most the ratio could be were the rest of intake free",
        ),
        (
            "intake: devhost, pre-flight off, ARM throttled",
            f"{throttled['rps']:.0f} accepted/s",
            _line(throttled) + "; confinement reads the workspace once per submission, from ARM's 25/s read bucket",
        ),
        ("intake: devhost, pre-flight on, ARM throttled", f"{preflight['rps']:.0f} accepted/s", _line(preflight)),
    ]


# ----- cold start -------------------------------------------------------------------------------

# The Functions worker's own calls, as the worker makes them: index the app's functions, then invoke its HTTP
# function with an azure.functions HttpRequest (what tests/contract/test_function_app.py does too).
WORKER = textwrap.dedent(
    """
    import asyncio, azure.functions

    class Context:
        invocation_id, function_name, function_directory = "bench", "http_app_func", "."
        trace_context = retry_context = None

    INDEXED = {}

    def functions(app):
        # The worker indexes an app once (a second get_functions() refuses the names it has seen).
        if not INDEXED:
            INDEXED.update({f.get_function_name(): f.get_user_function() for f in app.get_functions()})
        return INDEXED

    # The worker runs every invocation on one event loop of its own, for the life of the process.
    LOOP = asyncio.new_event_loop()

    def invoke(app, method, path, body=b"", headers=None):
        request = azure.functions.HttpRequest(method=method, url=f"http://localhost{path}", headers=headers or {}, body=body)
        return LOOP.run_until_complete(functions(app)["http_app_func"](request, Context()))

    def finish():
        # The worker's loop ends with the process: its tasks (the app's lifespan) are cancelled and end.
        tasks = asyncio.all_tasks(LOOP)
        for task in tasks:
            task.cancel()
        LOOP.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        LOOP.close()
    """
)
COLD_APP = (
    textwrap.dedent(
        """
    import json, resource, sys, time
    # The Functions Python worker has imported azure.functions before it loads the app: only what the
    # app adds on top is the app's cold start.
    import azure.functions
    rss_worker = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    import function_app
    imported = time.perf_counter() - started
    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_worker
    if sys.argv[1] == "import":  # the import alone
        print(json.dumps({"import_s": imported, "rss_import_mb": rss_import}))
        raise SystemExit(0)
    """
    )
    + WORKER
    + textwrap.dedent(
        """
    t = time.perf_counter()
    if sys.argv[1] == "warm":  # scale-out adds the instance: the warm-up trigger runs before any request comes
        from azure.functions.warmup import WarmUpContext
        functions(function_app.app)["warmup"](WarmUpContext())
    warmed = time.perf_counter() - t
    t = time.perf_counter()
    status = invoke(function_app.app, "GET", "/api/health").status_code
    served = time.perf_counter() - t
    finish()
    print(json.dumps({"import_s": imported, "warmup_s": warmed, "first_request_s": served, "status": status,
                      "rss_import_mb": rss_import,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_worker}))
    """
    )
)
# The machine's own speed at the time, to read the cold-start figures against: this VM's speed drifts by a
# third over minutes (the same import took 280 to 490 ms in runs of one day). A fixed pure-Python loop.
REFERENCE = textwrap.dedent(
    """
    import json, time
    started = time.perf_counter()
    sum(i * i for i in range(2_000_000))
    print(json.dumps({"loop_s": time.perf_counter() - started}))
    """
)
COLD_ML = textwrap.dedent(
    """
    import json, resource, time
    started = time.perf_counter()
    import azure.ai.ml
    print(json.dumps({"import_s": time.perf_counter() - started, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)


# A Slack slash command on a cold instance: the worker has imported azure.functions, then the app is imported
# and the first request is a signed `/mlws create` (Slack wants its answer within 3 s: Slack API docs,
# "Enabling interactivity with Slash Commands", "you must respond within 3000 ms").
COLD_SLACK = (
    textwrap.dedent(
        """
    import hashlib, hmac, json, os, time
    from urllib.parse import urlencode
    import azure.functions
    started = time.perf_counter()
    import function_app
    imported = time.perf_counter() - started
    """
    )
    + WORKER
    + textwrap.dedent(
        """

    def signed(body: str) -> dict[str, str]:
        stamp = str(int(time.time()))
        mac = hmac.new(os.environ["SLACK_SIGNING_SECRET"].encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256)
        return {"content-type": "application/x-www-form-urlencoded", "x-slack-request-timestamp": stamp,
                "x-slack-signature": f"v0={mac.hexdigest()}"}

    def slack() -> dict[str, object]:
        text = "create region=westeurope team=fraud-detection env=dev profile=cpu-small cost-center=CC-1042"
        body = urlencode({"command": "/mlws", "user_id": "U0BENCH", "channel_id": "C0BENCH",
                          "response_url": os.environ["BENCH_RESPONSE_URL"], "text": text})
        r = invoke(function_app.app, "POST", "/api/chat/slack/commands", body.encode(), signed(body))
        answered = time.perf_counter() - started
        button = next(e for b in json.loads(r.get_body()).get("blocks", []) if b["type"] == "actions"
                      for e in b["elements"] if e["action_id"] == "confirm_create")
        payload = {"type": "block_actions", "user": {"id": "U0BENCH"}, "channel": {"id": "C0BENCH"},
                   "response_url": os.environ["BENCH_RESPONSE_URL"], "trigger_id": "bench.1",
                   "actions": [{"action_id": "confirm_create", "value": button["value"]}]}
        body = urlencode({"payload": json.dumps(payload)})
        clicked = time.perf_counter()
        c = invoke(function_app.app, "POST", "/api/chat/slack/interactions", body.encode(), signed(body))
        return {"status": r.status_code, "answered_s": answered, "confirm_status": c.status_code,
                "confirmed_s": time.perf_counter() - clicked, "confirm_text": c.get_body().decode()[:300]}

    out = slack()
    finish()
    print(json.dumps({"import_s": imported, **out}))
    """
    )
)


ALICE = "1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01"  # models/directory.yaml (the example directory)


def bench_cold_slack(runs: int) -> list[tuple[str, str, str]]:
    """A signed `/mlws create` as the first request of a fresh process on top of azure.functions, with a cloud attached."""
    import yaml

    from bench.emulator_process import Emulator

    answers = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        policy = yaml.safe_load((ROOT / "policy" / "default.yaml").read_text())
        # Alice of the example directory, a member of fraud-detection: she asks for her own team.
        policy["chat_users"] = [{"slack_user": "U0BENCH", "principal": ALICE, "name": "Alice"}]
        (folder / "policy.yaml").write_text(yaml.safe_dump(policy))
        from tests.capture import capture_server

        # Slack's response_url, where the click's answer goes: a loopback receiver that answers at once.
        with Emulator(folder / "emulator", {"latency_s": 1.0, "quota": QUOTA}) as emu, capture_server() as slack:
            for i in range(runs):
                env = {
                    "VENDING_DATA_DIR": str(folder / f"data-{i}"),
                    "VENDING_POLICY_FILE": str(folder / "policy.yaml"),
                    "SLACK_SIGNING_SECRET": "bench-signing-secret",
                    "BENCH_RESPONSE_URL": f"{slack.url}/response-{i}",
                    **emu.env(),
                }
                answer = _run_json(COLD_SLACK, env)
                told = json.dumps(slack.bodies(f"/response-{i}"))
                answers.append(answer | {"accepted": "has started" in told, "told": told[:300]})
    bad = [a for a in answers if a["status"] != 200 or a["confirm_status"] != 200 or not a["accepted"]]
    if bad:
        raise RuntimeError(f"the cold Slack command was not answered and accepted: {bad[0]}")
    answered = statistics.median(a["answered_s"] for a in answers) * 1000
    confirmed = statistics.median(a["confirmed_s"] for a in answers) * 1000
    imported = statistics.median(a["import_s"] for a in answers) * 1000
    return [
        (
            "cold Slack /mlws create, from app import to its answer (target < 3,000 ms)",
            f"{answered:.0f} ms",
            f"median of {runs}, worst {max(a['answered_s'] for a in answers) * 1000:.0f} ms; {imported:.0f} ms of it "
            "the app's import; the answer is the plan with a Create button; from the repository with the devhost's "
            "cloud (the emulator: ARM cannot be reached as deployed) and the test tools installed, so a little slower "
            "than the deployment",
        ),
        (
            "then its Create button, the first submission (target < 3,000 ms)",
            f"{confirmed:.0f} ms",
            f"median of {runs}, worst {max(a['confirmed_s'] for a in answers) * 1000:.0f} ms; confined (one ARM read), "
            "accepted, dispatched, and the answer posted to the response_url before the click is acknowledged",
        ),
    ]


def _run_json(code: str, env: dict[str, str] | None = None, *args: str) -> dict[str, Any]:
    """Run a script in a fresh interpreter of this environment, from the repository; its last line is JSON."""
    out = subprocess.run(
        [PY, "-c", code, *args], cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run_deployed(python: Path, package: Path, code: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run a script as Azure runs the app: from a copy of the package, with requirements.txt's packages only."""
    from bench.deployed import bare_environment

    bare = bare_environment()
    # The package is mounted read-only and holds no bytecode (.funcignore): its modules compile at every start.
    # The installed packages have theirs, compiled when pip installed them.
    bare["PYTHONDONTWRITEBYTECODE"] = "1"
    out = subprocess.run(
        [str(python), "-c", code, *args], cwd=package, env={**bare, **env}, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"a cold start of the package failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_cold(runs: int) -> list[tuple[str, str, str]]:
    from bench.deployed import DEPLOYMENT_SETTINGS, copy_package, deployed_python

    python = deployed_python()
    cold: list[dict[str, Any]] = []
    warm: list[dict[str, Any]] = []
    local: list[dict[str, Any]] = []
    mls: list[dict[str, Any]] = []
    reference: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "wwwroot"
        copy_package(package)
        # Round by round, so that this machine's drift in speed (a third, over minutes) falls on every row alike.
        for i in range(runs):
            for mode, results in (("cold", cold), ("warm", warm)):
                env = {**DEPLOYMENT_SETTINGS, "VENDING_DATA_DIR": f"{tmp}/{mode}-{i}"}
                results.append(_run_deployed(python, package, COLD_APP, env, mode))
            # The devhost's settings (the emulator's cloud): the import reads the settings only.
            local.append(_run_deployed(python, package, COLD_APP, {"VENDING_DATA_DIR": f"{tmp}/local-{i}"}, "import"))
            mls.append(_run_deployed(python, package, COLD_ML, {}))
            reference.append(_run_deployed(python, package, REFERENCE, {}))

    def ms(runs: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in runs)) * 1000

    def mb(runs: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    bad = [r for r in cold + warm if r["status"] != 200]
    if bad:
        raise RuntimeError(f"the first request on a cold instance failed: {bad[0]}")
    total = statistics.median(r["import_s"] + r["first_request_s"] for r in cold) * 1000
    return [
        (
            "cold import of function_app on top of azure.functions, as deployed (target ≤ 250 ms, ≤ 60 MB)",
            f"{ms(cold, 'import_s'):.0f} ms",
            f"+{mb(cold, 'rss_import_mb'):.0f} MB peak RSS over azure.functions' own; median of {runs}; a copy of the "
            "package, requirements.txt's packages only, the deployment's settings (cloud=azure, Easy Auth): the "
            "settings, then the policy, its tenant and the identity settings (a deployment that fails them takes "
            "no message)",
        ),
        (
            "cold import of function_app on top of azure.functions, the devhost's settings (target ≤ 250 ms)",
            f"{ms(local, 'import_s'):.0f} ms",
            f"+{mb(local, 'rss_import_mb'):.0f} MB peak RSS; the emulator's cloud: the settings only (the policy is "
            "read on first use); in both, the container and the HTTP app are built on first use",
        ),
        (
            "first HTTP response on a cold instance without warm-up (a restart)",
            f"{ms(cold, 'first_request_s'):.0f} ms",
            f"as deployed, GET /api/health through the registered function, building the container and FastAPI app "
            f"first (state in SQLite here: no Azure Tables to reach); import and it: {total:.0f} ms; "
            f"+{mb(cold, 'rss_mb'):.0f} MB peak RSS after it",
        ),
        (
            "first HTTP response after the warm-up trigger (scale-out adds the instance)",
            f"{ms(warm, 'first_request_s'):.0f} ms",
            f"the warm-up ran {ms(warm, 'warmup_s'):.0f} ms before traffic (container, HTTP app, intake and its ARM "
            f"reader); +{mb(warm, 'rss_mb'):.0f} MB peak RSS after it",
        ),
        (
            "reference: a fixed pure-Python loop, in the same rounds",
            f"{ms(reference, 'loop_s'):.0f} ms",
            "the machine's speed while the cold starts above ran: compare runs by it",
        ),
        (
            "import azure.ai.ml alone (never on the HTTP path)",
            f"{ms(mls, 'import_s'):.0f} ms",
            f"peak RSS {mb(mls, 'rss_mb'):.0f} MB",
        ),
    ]


# ----- the service against an emulator in its own process --------------------------------------------

# Flex Consumption bills the memory an instance is given (2048 MB unless set to 4096) for as long as it
# runs executions, in GB-seconds. On-demand rate, East US, USD, as quoted on 2025-05-22 by
# https://modal.com/blog/azure-function-pricing-guide (the pricing page,
# https://azure.microsoft.com/pricing/details/functions/, is not reachable from this machine: check it).
FLEX_USD_PER_GB_S = 0.000026
FLEX_PRICE_DATE = "2025-05-22"
FLEX_INSTANCE_GB = 2.0
QUOTA = {
    region: {"standardDSv2Family": 10**7, "standardNCADSA100v4Family": 10**7, "lowPriority": 10**7}
    for region in ("westeurope", "swedencentral")
}


def _against_emulator(argv: list[str], latency: float, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run `python -m <argv>` against an emulator process of its own; return its last JSON line and the cloud's side.

    The cloud's side: the emulator's CPU-seconds and peak memory over the run, its calls by kind and
    resource type, and what each subscription's buckets let through.
    """
    from bench.emulator_process import Emulator

    with tempfile.TemporaryDirectory() as tmp, Emulator(Path(tmp), {"latency_s": latency, "quota": QUOTA}) as emu:
        cpu_before = emu.cpu_s()
        out = subprocess.run(
            [PY, "-m", *argv],
            check=False,
            cwd=ROOT,
            env={**os.environ, **emu.env(), "VENDING_DATA_DIR": str(Path(tmp) / "data")},
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{what} failed:\n{out.stderr[-3000:]}")
        figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        stats = emu.stats()
        cloud = {
            "cpu_s": emu.cpu_s() - cpu_before,
            "rss_mb": emu.peak_rss_mb(),
            "calls": stats["calls_by_type"],
            "by_subscription": stats["calls_by_subscription"],
        }
    return figures, cloud


def _service_run(
    example: Path, n: int, *, latency: float, workers: int, environments: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Vend `n` workspaces of `example` in a service process (bench/service_run.py) against an emulator of its own."""
    argv = ["bench.service_run", str(example), str(n), str(latency / 4), str(workers)]
    return _against_emulator(argv + ([",".join(environments)] if environments else []), latency, "bench.service_run")


def _calls(cloud: dict[str, Any]) -> dict[str, int]:
    """Totals of an emulator's calls: writes, reads (of which polls), deletes, throttled (429)."""
    total = {"writes": 0, "reads": 0, "polls": 0, "deletes": 0, "throttled": 0}
    for row in cloud["calls"]:
        if row["throttled"]:
            total["throttled"] += row["count"]
            continue
        total[row["operation"]] += row["count"]
        if row["poll"]:
            total["polls"] += row["count"]
    return total


def bench_per_workspace(latency: float) -> tuple[list[tuple[str, str, str]], str]:
    """Each example vended once: the service's CPU, memory and Flex Consumption cost, and its ARM calls by type."""
    rows = []
    by_type: dict[str, dict[str, dict[str, int]]] = {}
    for name in ("cpu-small", "gpu-research"):
        service, cloud = _service_run(ROOT / "examples" / f"{name}.json", 1, latency=latency, workers=8)
        gb_s = service["busy_s"] * FLEX_INSTANCE_GB
        calls = _calls(cloud)
        rows.append(
            (
                f"service per workspace: {name}",
                f"{service['cpu_s']:.2f} CPU-s",
                f"peak RSS {service['rss_mb']:.0f} MB; step handlers busy {service['busy_s']:.2f} s = {gb_s:.1f} GB-s "
                f"on a {FLEX_INSTANCE_GB:g} GB Flex instance = USD {gb_s * FLEX_USD_PER_GB_S * 1000:.2f} per 1,000 "
                f"workspaces (USD {FLEX_USD_PER_GB_S}/GB-s, {FLEX_PRICE_DATE}); the emulator used "
                f"{cloud['cpu_s']:.2f} CPU-s in its own process",
            )
        )
        rows.append(
            (
                f"ARM calls per workspace: {name}",
                f"{calls['writes']} writes, {calls['reads']} reads",
                f"of the reads {calls['polls']} polls of an operation; {calls['deletes']} deletes; "
                f"{calls['throttled']} throttled; {service['steps']} steps",
            )
        )
        for row in cloud["calls"]:
            if row["throttled"]:
                continue
            kind = "polls" if row["poll"] else row["operation"]
            counts = by_type.setdefault(row["type"], {}).setdefault(name, {})
            counts[kind] = counts.get(kind, 0) + row["count"]
    lines = [
        "| resource type | " + " | ".join(f"{n}: writes / reads / polls" for n in ("cpu-small", "gpu-research")) + " |"
    ]
    lines.append("|---|---|---|")
    for rtype in sorted(by_type):
        cells = []
        for name in ("cpu-small", "gpu-research"):
            c = by_type[rtype].get(name, {})
            cells.append(f"{c.get('writes', 0)} / {c.get('reads', 0)} / {c.get('polls', 0)}")
        lines.append(f"| `{rtype}` | " + " | ".join(cells) + " |")
    return rows, "\n".join(lines)


def arm_bound(by_subscription: dict[str, dict[str, int]], critical_s: float) -> tuple[float, str]:
    """The shortest a run can take: its critical path, or the time ARM's token buckets take to admit its calls.

    Per subscription and principal (the service's identity), each kind of call beyond a full bucket waits
    for the bucket's refill (emulator/throttling.py, Azure's published sizes and rates); subscriptions
    fill and refill apart, so the slowest one bounds the run. `by_subscription` is what the emulator
    admitted for each (`calls_by_subscription`).
    """
    from emulator.throttling import ThrottlingConfig

    limits = ThrottlingConfig()
    candidates = [(critical_s, "the critical path")]
    for sub, calls in by_subscription.items():
        for kind, limit in (
            ("reads", limits.subscription_reads),
            ("writes", limits.subscription_writes),
            ("deletes", limits.subscription_deletes),
        ):
            beyond = calls.get(kind, 0) - limit.size
            if beyond > 0:
                candidates.append(
                    (
                        beyond / limit.refill_per_s,
                        f"{calls[kind]} {kind} in subscription {sub[:8]}… at {limit.refill_per_s:g}/s after {limit.size}",
                    )
                )
    return max(candidates)


def _script_run(example: Path, n: int, mode: str, *, latency: float) -> tuple[dict[str, Any], dict[str, int]]:
    """Vend `n` workspaces with the baseline script (bench/baseline.py) against an emulator of its own.

    Returns the script's figures and the emulator's call totals.
    """
    script, cloud = _against_emulator(
        ["bench.baseline", str(example), str(n), mode, str(latency)], latency, "bench.baseline"
    )
    return script, _calls(cloud)


def _median_run(runs: list[tuple[dict[str, Any], Any]]) -> tuple[dict[str, Any], Any]:
    """The run of median makespan: one request takes a few seconds and varies by a tenth from run to run."""
    return sorted(runs, key=lambda run: float(run[0]["makespan_s"]))[len(runs) // 2]


ServiceRuns = dict[int, tuple[dict[str, Any], dict[str, int]]]


def bench_baseline(service: ServiceRuns, latency: float) -> list[tuple[str, str, str]]:
    """The service against the script a user would write instead, on the same emulator, for each size it was run at.

    One request after another is linear in the requests (nothing overlaps, and one caller at a time stays far
    inside ARM's buckets), so the sequential script is run once and its makespan multiplied for larger sizes;
    the thread-per-request script is run at every size.
    """
    example = ROOT / "examples" / "cpu-small.json"
    # As for the service's one request (bench_fanout): the run of median makespan of three.
    single, single_calls = _median_run([_script_run(example, 1, "sequential", latency=latency) for _ in range(3)])
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in single["phases_s"].items())
    rows = []
    for n in sorted(service):
        figures, calls = service[n]
        threads, thread_calls = _script_run(example, n, "threads", latency=latency)
        sequential = single["makespan_s"] * n
        target = " (target ≤ 0.6)" if n == 1 else ""
        made = threads["succeeded"]
        failed = (
            ""
            if made == n
            else f"; the threaded script made {made} of {n} (the SDK gave up after its retries): "
            + threads["first_error"][:160]
        )
        rows.append(
            (
                f"service ÷ script, {n} request{'s' if n > 1 else ''}: makespan"
                + (f" ÷ sequential{target}" if n == 1 else " ÷ sequential (computed), ÷ threads (measured)"),
                f"{figures['makespan_s'] / sequential:.2f}"
                + (f", {figures['makespan_s'] / threads['makespan_s']:.2f}" if n > 1 else ""),
                f"service {figures['makespan_s']:.2f} s ({figures['succeeded']} of {n} made"
                + ("; median of 3" if n == 1 else "")
                + f"); script one after another "
                f"{sequential:.2f} s{' (measured, median of 3)' if n == 1 else f' ({n} × the one request measured, not run)'}, "
                f"a thread per request {threads['makespan_s']:.1f} s{failed}",
            )
        )
        # Per workspace made: a script that fails part-way has spent calls on workspaces it never made.
        ours_w, ours_r = calls["writes"] / max(figures["succeeded"], 1), calls["reads"] / max(figures["succeeded"], 1)
        theirs_w, theirs_r = thread_calls["writes"] / max(made, 1), thread_calls["reads"] / max(made, 1)
        rows.append(
            (
                f"service ÷ script, {n} request{'s' if n > 1 else ''}: ARM calls per workspace made (writes: never more)",
                f"{ours_w / theirs_w:.2f} writes, {ours_r / theirs_r:.2f} reads",
                f"{'never more' if ours_w <= theirs_w else 'MORE'}: service {calls['writes']} writes, {calls['reads']} "
                f"reads, {calls['throttled']} throttled; script (a thread per request) {thread_calls['writes']} writes, "
                f"{thread_calls['reads']} reads, {thread_calls['throttled']} throttled"
                + (
                    f"; one request, one after another: {single_calls['writes']} writes, {single_calls['reads']} "
                    f"reads; its time by part: {phases}"
                    if n == 1
                    else ""
                ),
            )
        )
    return rows


def bench_fanout(
    sizes: list[tuple[int, tuple[str, ...]]], latency: float, runs: ServiceRuns | None = None
) -> list[tuple[str, str, str]]:
    """Concurrent requests of cpu-small against the emulator with ARM's throttling on, each size with its environments.

    One environment is one subscription (policy/default.yaml: dev in one, prod in another).
    """
    rows = []
    for n, environments in sizes:
        workers = max(8, min(64, n // 2))
        service, cloud = _median_run(
            [
                _service_run(
                    ROOT / "examples" / "cpu-small.json", n, latency=latency, workers=workers, environments=environments
                )
                for _ in range(3 if n == 1 else 1)
            ]
        )
        calls = _calls(cloud)
        if runs is not None and len(environments) <= 1:
            runs[n] = (service, calls)
        critical = service["chain"] * latency
        bound, limit = arm_bound(cloud["by_subscription"], critical)
        subs = len(cloud["by_subscription"])
        rows.append(
            (
                f"fan-out: {n} concurrent request{'s' if n > 1 else ''}, {subs} subscription{'s' if subs > 1 else ''}"
                + (" (target ≤ 1.2 × the bound)" if subs > 1 else ""),
                f"{service['makespan_s'] / bound:.2f} × bound",
                f"bound {bound:.1f} s ({limit}); {service['makespan_s'] / critical:.2f} × the critical path; "
                f"makespan {service['makespan_s']:.1f} s; critical path {service['chain']} long-running steps × "
                f"{latency:g} s; the first submission answered in {service['first_accepted_s']:.2f} s; "
                f"{service['succeeded']}/{n} succeeded, {service['failed_on_429']} steps failed on a 429, "
                f"{service['throttled_steps']} steps were throttled and said so in their events, "
                f"{service['intake_refused']} submissions refused 503 (ARM throttled intake's reads) and sent again; "
                f"{workers} workers; service {service['cpu_s']:.1f} CPU-s, peak RSS {service['rss_mb']:.0f} MB; "
                f"emulator {cloud['cpu_s']:.1f} CPU-s; {calls['writes']} writes, {calls['reads']} reads, "
                f"{calls['throttled']} throttled",
            )
        )
    return rows


OVERHEAD = textwrap.dedent(
    """
    import json, sys, time, tempfile
    from pathlib import Path
    from composition import Container
    from adapters.sqlite_bus import SqliteBus
    from adapters.sqlite_store import SqliteStore
    from handlers.queues import handle_step
    from models.request import parse_request
    from models.settings import Settings
    from tests.fakes import FakeCloud
    n = int(sys.argv[1])
    tmp = Path(tempfile.mkdtemp())
    settings = Settings(data_dir=tmp, retry_base_s=0, retry_cap_s=0)
    c = Container(settings, store=SqliteStore(tmp / "s.db"), bus=SqliteBus(tmp / "b.db"), cloud=FakeCloud(), sinks=[])
    from bench.service_run import bench_caller, unlimited
    c.swap(policy=unlimited(c.policy))
    body = json.loads(Path("examples/gpu-research.json").read_text())
    ids = [c.intake.submit(request=parse_request(body | {"workspace_name": f"ovh-{i:03d}"}), caller=bench_caller(),
                           source="bench").record.id for i in range(n)]
    runs = 0
    started = time.perf_counter()
    while True:
        got = c.bus.receive(settings.steps_queue, max_messages=10)
        if not got:
            break
        for m in got:
            handle_step(body=m.body, engine=c.engine)
            c.bus.complete(m)
            runs += 1
    elapsed = time.perf_counter() - started
    done = sum(c.store.get_request(r).status.value == "succeeded" for r in ids)
    print(json.dumps({"per_run_ms": elapsed / runs * 1000, "runs": runs, "succeeded": done}))
    """
)


def bench_overhead(n: int) -> list[tuple[str, str, str]]:
    result = _run_json(OVERHEAD.replace("sys.argv[1]", repr(str(n))))
    return [
        (
            "engine overhead per step run on SQLite (target < 5 ms)",
            f"{result['per_run_ms']:.2f} ms",
            f"{result['runs']} step runs of {n} requests, one thread, zero-cost cloud, store and bus on disk",
        )
    ]


def _replace_block(text: str, marker: str, block: str) -> str:
    """Put `block` between the two `marker` lines of `text` (or at its end when they are not there)."""
    wrapped = f"{marker}\n{block}\n{marker}"
    if marker in text:
        head, _, rest = text.partition(marker)
        _, _, tail = rest.partition(marker)
        return head + wrapped + tail
    return text + "\n" + wrapped + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run, not the record")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    args = parser.parse_args(argv)
    quick = args.quick
    by_type: list[str] = []
    service_runs: ServiceRuns = {}

    def per_workspace() -> list[tuple[str, str, str]]:
        rows, table = bench_per_workspace(1.0)
        by_type.append(table)
        return rows

    sections: list[tuple[str, Callable[[], list[tuple[str, str, str]]]]] = [
        ("cold start", lambda: bench_cold(2 if quick else 5)),
        ("cold Slack command", lambda: bench_cold_slack(2 if quick else 5)),
        ("engine", lambda: bench_overhead(5 if quick else 40)),
        ("per workspace", per_workspace),
        ("intake", lambda: bench_intake(3 if quick else 15)),
        (
            "fan-out",
            lambda: bench_fanout(
                [(1, ()), (10, ("dev", "prod"))] if quick else [(1, ()), (20, ()), (100, ()), (200, ("dev", "prod"))],
                1.0,
                service_runs,
            ),
        ),
        # The service's runs at 1, 20 and 100 requests (from fan-out) against the script's at the same sizes.
        ("baseline", lambda: bench_baseline({n: r for n, r in service_runs.items() if n <= 100}, 1.0)),
    ]
    rows: list[tuple[str, str, str]] = []
    for name, run in sections:
        started = time.monotonic()
        print(f"running {name} …", file=sys.stderr, flush=True)
        rows += run()
        print(f"  {name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    machine = f"{_cpu()}, {os.cpu_count()} cores, {_memory_gib():.0f} GiB, Python {platform.python_version()}, {platform.system()}"
    width = max(len(r[0]) for r in rows)
    table = "\n".join(f"{a:<{width}}  {b:>24}  {c}" for a, b, c in rows)
    print(f"\n{machine}\n\n{table}\n\nARM calls per workspace, by resource type:\n{by_type[0]}")
    if not args.no_write and not quick:
        markdown = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
        page = ROOT / "docs" / "performance.md"
        text = page.read_text() if page.exists() else ""
        text = _replace_block(
            text,
            "<!-- bench:results -->",
            f"Run on {time.strftime('%Y-%m-%d')} on {machine} (`make bench`):\n\n"
            f"| measure | result | detail |\n|---|---|---|\n{markdown}",
        )
        text = _replace_block(text, "<!-- bench:arm-calls -->", by_type[0])
        page.write_text(text)
        print(f"\nwritten to {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
