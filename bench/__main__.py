"""`make bench`: how fast the service is, measured on this machine, printed and written to docs/performance.md.

Sections (each a subprocess or a fresh in-process setup, so one does not warm the next):
- intake: requests/s and p50/p99 of POST /api/workspaces on the devhost, next to a bare FastAPI
  endpoint that only validates the same model, in the same run;
- cold start: importing function_app and serving the first HTTP request, next to importing azure.ai.ml;
- fan-out: 1, 50 and 200 concurrent requests against the emulator with latencies set, as makespan
  over the plan's critical path; and the engine's own cost per step on SQLite;
- memory: the step worker process's peak while 200 requests are in flight.

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
    headers: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Post bodies from `threads` clients for `seconds`; client i sends `headers[i]` (its own principal)."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    counter = iter(range(10**9))

    def worker(index: int) -> None:
        with httpx.Client(timeout=30, headers=headers[index] if headers else None) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter)
                started = time.perf_counter()
                response = client.post(url, json=make_body(i))
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if response.status_code >= 300:
                        errors.append(f"{response.status_code} {response.text[:2000]}")

    started = time.monotonic()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.monotonic() - started
    return {
        "rps": (len(latencies) - len(errors)) / wall,  # accepted requests only: a refusal is not throughput
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


def _admin_tokens(data_dir: Path, port: int, n: int) -> list[dict[str, str]]:
    """Authorization headers of `n` admins, signed with the key the devhost keeps in its data dir.

    Each load client is its own principal: the per-principal submission limit (at most 1,000 a window)
    would otherwise cap one client's run, and a platform's load comes from many callers.
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


def bench_intake(seconds: float) -> list[tuple[str, str, str]]:
    from emulator.server import free_port

    example = json.loads((ROOT / "examples" / "cpu-small.json").read_text())

    def body(i: int) -> dict[str, Any]:
        return example | {"workspace_name": f"bench-{os.getpid() % 1000}-{i}"}

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bare_app.py").write_text(BARE_APP)
        policy = (ROOT / "policy" / "default.yaml").read_text()
        off = folder / "policy-off.yaml"
        off.write_text(
            policy.replace("max_team_vcpus: 400", "max_team_vcpus: 400000") + "\npreflight: {enabled: false}\n"
        )
        on = folder / "policy-on.yaml"
        on.write_text(policy.replace("max_team_vcpus: 400", "max_team_vcpus: 400000"))
        bare_port = free_port()
        bare = _serve(
            [PY, "-m", "uvicorn", "bare_app:app", "--port", str(bare_port), "--log-level", "warning"],
            {"PYTHONPATH": f"{folder}:{ROOT}"},
            bare_port,
            folder / "bare.log",
        )
        try:
            bare_result = _load(f"http://127.0.0.1:{bare_port}/api/workspaces", body, seconds=seconds, threads=8)
        finally:
            bare.terminate()
            bare.wait(10)
        from bench.emulator_process import Emulator

        results = {}
        for label, policy_file in (("off", off), ("on", on)):
            port = free_port()
            # The cloud in a process of its own: the devhost's CPU is the service's.
            with Emulator(folder / f"emulator-{label}", {"latency_s": 5.0, "quota": QUOTA}) as emu:
                env = {
                    "PORT": str(port),
                    "VENDING_DATA_DIR": str(folder / f"data-{label}"),
                    "VENDING_POLICY_FILE": str(policy_file),
                    "VENDING_WORKERS": "1",
                    "VENDING_POLL_S": "2.5",
                    # The per-principal submission limit at its highest (each client is a principal of its own).
                    "VENDING_SUBMISSIONS_PER_WINDOW": "1000",
                    **emu.env(),
                }
                host = _serve([PY, "-m", "devhost"], env, port, folder / f"devhost-{label}.log")
                try:
                    results[label] = _load(
                        f"http://127.0.0.1:{port}/api/workspaces",
                        body,
                        seconds=seconds,
                        threads=8,
                        headers=_admin_tokens(folder / f"data-{label}", port, 8),
                    )
                finally:
                    host.terminate()
                    host.wait(15)
    off_r, on_r = results["off"], results["on"]
    rows.append(
        (
            "intake: bare FastAPI, validation only",
            f"{bare_result['rps']:.0f} accepted/s",
            f"p50 {bare_result['p50_ms']:.1f} ms, p99 {bare_result['p99_ms']:.1f} ms",
        )
    )
    rows.append(
        (
            "intake: devhost, pre-flight off",
            f"{off_r['rps']:.0f} accepted/s",
            f"p50 {off_r['p50_ms']:.1f} ms, p99 {off_r['p99_ms']:.1f} ms; {off_r['errors']} errors of {off_r['n']:.0f}"
            + _first_error(off_r),
        )
    )
    rows.append(
        (
            "intake ratio (target ≥ 0.7)",
            f"{off_r['rps'] / bare_result['rps']:.2f}",
            "devhost ÷ bare, same run, 8 clients",
        )
    )
    rows.append(
        (
            "intake: devhost, pre-flight on",
            f"{on_r['rps']:.0f} accepted/s",
            f"p50 {on_r['p50_ms']:.1f} ms, p99 {on_r['p99_ms']:.1f} ms; {on_r['errors']} errors of {on_r['n']:.0f}"
            + _first_error(on_r),
        )
    )
    return rows


# ----- cold start -------------------------------------------------------------------------------

COLD_APP = textwrap.dedent(
    """
    import asyncio, json, resource, time, os
    # The Functions Python worker has imported azure.functions before it loads the app: only what the
    # app adds on top is the app's cold start.
    import azure.functions
    rss_worker = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    import function_app
    imported = time.perf_counter() - started
    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_worker
    import httpx
    async def first() -> int:
        transport = httpx.ASGITransport(app=function_app.app._asgi_middleware._app) if hasattr(function_app.app, "_asgi_middleware") else None
        from handlers.api import create_api
        api = create_api(lambda: function_app.container)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://x") as client:
            r = await client.get("/api/health")
            return r.status_code
    t = time.perf_counter()
    status = asyncio.run(first())
    served = time.perf_counter() - t
    print(json.dumps({"import_s": imported, "first_request_s": served, "status": status,
                      "rss_import_mb": rss_import,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_worker}))
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


def _run_json(code: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run(
        [PY, "-c", code], cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_cold(runs: int) -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {"VENDING_DATA_DIR": tmp}
        apps = [_run_json(COLD_APP, env) for _ in range(runs)]
        mls = [_run_json(COLD_ML) for _ in range(runs)]
    imp = statistics.median(a["import_s"] for a in apps) * 1000
    first = statistics.median(a["first_request_s"] for a in apps) * 1000
    rss = statistics.median(a["rss_import_mb"] for a in apps)
    rss_after = statistics.median(a["rss_mb"] for a in apps)
    ml = statistics.median(m["import_s"] for m in mls) * 1000
    ml_rss = statistics.median(m["rss_mb"] for m in mls)
    return [
        (
            "cold import of function_app on top of azure.functions (target ≤ 250 ms, ≤ 60 MB)",
            f"{imp:.0f} ms",
            f"+{rss:.0f} MB peak RSS over azure.functions' own; median of {runs}",
        ),
        ("first HTTP request after import", f"{first:.0f} ms", f"+{rss_after:.0f} MB peak RSS after it"),
        ("import azure.ai.ml alone (never on the HTTP path)", f"{ml:.0f} ms", f"peak RSS {ml_rss:.0f} MB"),
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


def _service_run(example: Path, n: int, *, latency: float, workers: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Vend `n` workspaces of `example` in a service process against an emulator process of its own.

    Returns the service's own figures (bench/service_run.py) and the emulator's: its CPU-seconds and
    peak memory over the run, and its calls by kind and resource type.
    """
    from bench.emulator_process import Emulator

    with tempfile.TemporaryDirectory() as tmp, Emulator(Path(tmp), {"latency_s": latency, "quota": QUOTA}) as emu:
        cpu_before = emu.cpu_s()
        out = subprocess.run(
            [PY, "-m", "bench.service_run", str(example), str(n), str(latency / 4), str(workers)],
            check=False,
            cwd=ROOT,
            env={**os.environ, **emu.env(), "VENDING_DATA_DIR": str(Path(tmp) / "service")},
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"bench.service_run failed:\n{out.stderr[-3000:]}")
        service = json.loads(out.stdout.strip().splitlines()[-1])
        cloud = {"cpu_s": emu.cpu_s() - cpu_before, "rss_mb": emu.peak_rss_mb(), "calls": emu.stats()["calls_by_type"]}
    return service, cloud


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


def arm_bound(calls: dict[str, int], critical_s: float) -> tuple[float, str]:
    """The shortest a run can take: its critical path, or the time ARM's token buckets take to admit its calls.

    One subscription and one principal (the service's identity): each kind of call beyond a full
    bucket waits for the bucket's refill (emulator/throttling.py, Azure's published sizes and rates).
    """
    from emulator.throttling import ThrottlingConfig

    limits = ThrottlingConfig()
    candidates = [(critical_s, "the critical path")]
    for kind, limit in (
        ("reads", limits.subscription_reads),
        ("writes", limits.subscription_writes),
        ("deletes", limits.subscription_deletes),
    ):
        beyond = calls[kind] - limit.size
        if beyond > 0:
            candidates.append(
                (beyond / limit.refill_per_s, f"{calls[kind]} {kind} at {limit.refill_per_s:g}/s after {limit.size}")
            )
    return max(candidates)


def bench_fanout(sizes: list[int], latency: float) -> list[tuple[str, str, str]]:
    rows = []
    for n in sizes:
        workers = max(8, min(64, n // 2))
        service, cloud = _service_run(ROOT / "examples" / "cpu-small.json", n, latency=latency, workers=workers)
        critical = service["chain"] * latency
        calls = _calls(cloud)
        bound, limit = arm_bound(calls, critical)
        rows.append(
            (
                f"fan-out: {n} concurrent request{'s' if n > 1 else ''} (target ≤ 1.2 × the bound at 200)",
                f"{service['makespan_s'] / bound:.2f} × bound",
                f"bound {bound:.1f} s ({limit}); {service['makespan_s'] / critical:.2f} × the critical path; "
                f"makespan {service['makespan_s']:.1f} s; critical path {service['chain']} steps × {latency:g} s; "
                f"{service['succeeded']}/{n} succeeded, {service['failed_on_429']} steps failed on a 429, "
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

    def per_workspace() -> list[tuple[str, str, str]]:
        rows, table = bench_per_workspace(1.0)
        by_type.append(table)
        return rows

    sections: list[tuple[str, Callable[[], list[tuple[str, str, str]]]]] = [
        ("cold start", lambda: bench_cold(2 if quick else 5)),
        ("engine", lambda: bench_overhead(5 if quick else 40)),
        ("per workspace", per_workspace),
        ("intake", lambda: bench_intake(3 if quick else 15)),
        ("fan-out", lambda: bench_fanout([1, 10] if quick else [1, 50, 200], 1.0)),
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
