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


def _load(url: str, make_body: Callable[[int], dict[str, Any]], *, seconds: float, threads: int) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    counter = iter(range(10**9))

    def worker() -> None:
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter)
                started = time.perf_counter()
                response = client.post(url, json=make_body(i))
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if response.status_code >= 300:
                        errors.append(response.status_code)

    started = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.monotonic() - started
    return {
        "rps": len(latencies) / wall,
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "errors": len(errors),
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


def bench_intake(seconds: float) -> list[tuple[str, str, str]]:
    from emulator.server import free_port

    example = json.loads((ROOT / "examples" / "cpu-small.json").read_text())

    def body(i: int) -> dict[str, Any]:
        return example | {"team": f"bench-{os.getpid() % 1000}-{i}"}

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
        results = {}
        for label, policy_file in (("off", off), ("on", on)):
            port = free_port()
            env = {
                "PORT": str(port),
                "VENDING_DATA_DIR": str(folder / f"data-{label}"),
                "VENDING_POLICY_FILE": str(policy_file),
                "VENDING_WORKERS": "1",
                "VENDING_EMULATOR_LATENCY_S": "5",
            }
            host = _serve([PY, "-m", "devhost"], env, port, folder / f"devhost-{label}.log")
            try:
                results[label] = _load(f"http://127.0.0.1:{port}/api/workspaces", body, seconds=seconds, threads=8)
            finally:
                host.terminate()
                host.wait(15)
    off_r, on_r = results["off"], results["on"]
    rows.append(
        (
            "intake: bare FastAPI, validation only",
            f"{bare_result['rps']:.0f} req/s",
            f"p50 {bare_result['p50_ms']:.1f} ms, p99 {bare_result['p99_ms']:.1f} ms",
        )
    )
    rows.append(
        (
            "intake: devhost, pre-flight off",
            f"{off_r['rps']:.0f} req/s",
            f"p50 {off_r['p50_ms']:.1f} ms, p99 {off_r['p99_ms']:.1f} ms; {off_r['errors']} errors of {off_r['n']:.0f}",
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
            f"{on_r['rps']:.0f} req/s",
            f"p50 {on_r['p50_ms']:.1f} ms, p99 {on_r['p99_ms']:.1f} ms; {on_r['errors']} errors of {on_r['n']:.0f}",
        )
    )
    return rows


# ----- cold start -------------------------------------------------------------------------------

COLD_APP = textwrap.dedent(
    """
    import asyncio, json, resource, time, os
    started = time.perf_counter()
    import function_app
    imported = time.perf_counter() - started
    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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
                      "rss_import_mb": rss_import, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
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
            "cold import of function_app (target < 250 ms, < 60 MB)",
            f"{imp:.0f} ms",
            f"peak RSS {rss:.0f} MB; median of {runs}",
        ),
        ("first HTTP request after import", f"{first:.0f} ms", f"peak RSS {rss_after:.0f} MB after it"),
        ("import azure.ai.ml alone (never on the HTTP path)", f"{ml:.0f} ms", f"peak RSS {ml_rss:.0f} MB"),
    ]


# ----- fan-out, engine overhead, memory ------------------------------------------------------------

FANOUT = textwrap.dedent(
    """
    import json, resource, sys, tempfile, threading, time
    from pathlib import Path
    n, latency, workers = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    from composition import Container
    from emulator.server import EmulatorServer
    from emulator.state import Config
    from handlers.queues import handle_step
    from devhost.workers import QueueWorkers
    from models.request import parse_request
    from models.settings import Settings
    from engine.planner import plan as make_plan
    tmp = Path(tempfile.mkdtemp())
    # Quota for everyone: the run measures scheduling, not the emulator's default 1000-vCPU limit.
    quota = {"westeurope": {"standardDSv2Family": 10**7}}
    emulator = EmulatorServer(data_dir=tmp / "emulator", config=Config(latency_s=latency, quota=quota)).start()
    settings = Settings(data_dir=tmp, emulator_url=emulator.url, emulator_ca_bundle=emulator.ca_bundle,
                        poll_s=latency / 4, retry_base_s=0.1, retry_cap_s=1.0, workers=workers)
    c = Container(settings)
    policy = c.policy
    c.swap(policy=policy.model_copy(update={"max_team_vcpus": 10**6,
        "preflight": policy.preflight.model_copy(update={"enabled": False})}))
    c.cloud  # import the SDKs before the clock starts
    pool = QueueWorkers(bus=c.bus, queue=settings.steps_queue, handle=lambda m: handle_step(body=m.body, engine=c.engine),
                        threads=workers, name="steps")
    pool.start()
    body = json.loads(Path("examples/cpu-small.json").read_text())
    started = time.monotonic()
    ids = [c.intake.submit(request=parse_request(body | {"team": f"fan-{i:03d}"}), requester="b", source="bench").record.id
           for i in range(n)]
    while not all(c.store.get_request(r).status.terminal for r in ids):
        time.sleep(0.1)
    makespan = time.monotonic() - started
    record = c.store.get_request(ids[0])
    depth = {}
    for step in record.plan.steps:
        depth[step.id] = 1 + max((depth[d] for d in step.depends_on), default=0)
    ok = sum(c.store.get_request(r).status.value == "succeeded" for r in ids)
    pool.stop()
    emulator.stop()
    print(json.dumps({"makespan_s": makespan, "chain": max(depth.values()), "steps": len(record.plan.steps),
                      "succeeded": ok, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)

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
    c.swap(policy=c.policy.model_copy(update={"max_team_vcpus": 10**6}))
    body = json.loads(Path("examples/gpu-research.json").read_text())
    ids = [c.intake.submit(request=parse_request(body | {"team": f"ovh-{i:03d}"}), requester="b", source="bench").record.id
           for i in range(n)]
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


def bench_fanout(sizes: list[int], latency: float) -> list[tuple[str, str, str]]:
    rows = []
    for n in sizes:
        workers = max(8, min(64, n // 2))
        result = _run_json(
            FANOUT.replace("sys.argv[1]", repr(str(n)))
            .replace("sys.argv[2]", repr(str(latency)))
            .replace("sys.argv[3]", repr(str(workers)))
        )
        critical = result["chain"] * latency
        rows.append(
            (
                f"fan-out: {n} concurrent request{'s' if n > 1 else ''} (target ≤ 1.1 at 200)",
                f"{result['makespan_s'] / critical:.2f} × critical path",
                f"makespan {result['makespan_s']:.1f} s; critical path {result['chain']} steps × {latency:g} s; "
                f"{result['succeeded']}/{n} succeeded; {workers} workers; peak RSS {result['rss_mb']:.0f} MB",
            )
        )
    return rows


def bench_overhead(n: int) -> list[tuple[str, str, str]]:
    result = _run_json(OVERHEAD.replace("sys.argv[1]", repr(str(n))))
    return [
        (
            "engine overhead per step run on SQLite (target < 5 ms)",
            f"{result['per_run_ms']:.2f} ms",
            f"{result['runs']} step runs of {n} requests, one thread, zero-cost cloud, store and bus on disk",
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run, not the record")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    args = parser.parse_args(argv)
    quick = args.quick
    sections: list[tuple[str, Callable[[], list[tuple[str, str, str]]]]] = [
        ("cold start", lambda: bench_cold(2 if quick else 5)),
        ("engine", lambda: bench_overhead(5 if quick else 40)),
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
    print(f"\n{machine}\n\n{table}")
    if not args.no_write and not quick:
        markdown = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
        page = ROOT / "docs" / "performance.md"
        text = page.read_text() if page.exists() else ""
        marker = "<!-- bench:results -->"
        block = (
            f"{marker}\nRun on {time.strftime('%Y-%m-%d')} on {machine} (`make bench`):\n\n"
            f"| measure | result | detail |\n|---|---|---|\n{markdown}\n{marker}"
        )
        if marker in text:
            head, _, rest = text.partition(marker)
            _, _, tail = rest.partition(marker)
            text = head + block + tail
        else:
            text = text + "\n" + block + "\n"
        page.write_text(text)
        print(f"\nwritten to {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
