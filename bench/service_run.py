"""The service alone in a process, vending `n` workspaces of one example against an emulator in another process.

    python -m bench.service_run <example.json> <n> <poll_s> <workers> [<environments>]
        (with VENDING_EMULATOR_URL and _CA_BUNDLE; environments, e.g. `dev,prod`, are taken in turn, so the
        requests spread over the subscriptions policy gives them)

It submits the `n` requests at once (through intake, as the REST route does), runs the step workers
until every request has ended, and prints one JSON line: the makespan, the plan's critical path in
steps, how many succeeded, how many 429s reached a step, and the process's own cost: CPU-seconds
(getrusage), peak RSS and the seconds a step handler was busy (what Flex Consumption bills as
execution time when executions do not overlap).
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.identity import Caller
    from models.policy import Policy

ROOT = Path(__file__).resolve().parent.parent


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def unlimited(policy: Policy) -> Policy:
    """The policy with its limits out of the way: a run measures the service, not the team's vCPU limit or pre-flight."""
    return policy.model_copy(
        update={"max_team_vcpus": 10**6, "preflight": policy.preflight.model_copy(update={"enabled": False})}
    )


def bench_caller() -> Caller:
    """The platform team's admin, as the benchmarks submit: every team's requests are theirs to make."""
    from models.identity import AppRole, Caller

    return Caller(
        oid="00000000-0000-4000-8000-00000000b0b0",
        tid="5f1d3c2a-7b64-4e19-a8d0-3c2b1a0f9e87",
        name="Benchmark",
        roles=frozenset({AppRole.ADMIN.value}),
        auth="local",
    )


def main() -> int:
    from adapters.sqlite_store import SqliteStore
    from cloud.common import THROTTLE_CODES
    from composition import Container
    from devhost.workers import QueueWorkers
    from handlers.queues import handle_step
    from models.errors import TransientError
    from models.records import RequestStatus
    from models.request import parse_request
    from models.settings import Settings

    example, n, poll_s, workers = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    environments = sys.argv[5].split(",") if len(sys.argv) > 5 else []
    tmp = Path(tempfile.mkdtemp(prefix="bench-service-"))
    settings = Settings(data_dir=tmp, poll_s=poll_s, retry_base_s=0.1, retry_cap_s=1.0, workers=workers)
    if not settings.emulator_url:
        raise SystemExit("VENDING_EMULATOR_URL is not set: start an emulator with bench.emulator_process")
    c = Container(settings)
    c.swap(policy=unlimited(c.policy))
    platform = bench_caller()
    from cloud.clients import Clients

    # A warm instance: the SDKs imported and intake with its ARM reader built before the clock starts (the devhost's warm-up).
    c.cloud  # noqa: B018
    c.intake  # noqa: B018
    c.resource_reader  # noqa: B018
    Clients.warm()

    busy = [0.0]
    lock = threading.Lock()

    def handle(body: bytes) -> None:
        started = time.perf_counter()
        try:
            handle_step(body=body, engine=c.engine)
        finally:
            with lock:
                busy[0] += time.perf_counter() - started

    pool = QueueWorkers(
        bus=c.bus, queue=settings.steps_queue, handle=lambda m: handle(m.body), threads=workers, name="steps"
    )
    pool.start()
    body = json.loads(example.read_text())
    cpu_before = _cpu_s()
    started = time.monotonic()
    ids = []
    accepted_s = []  # when each submission was answered, from the first one's start
    refused = 0  # submissions answered 503 (ARM throttled intake's reads) and sent again, as a client would
    for i in range(n):
        env = {"environment": environments[i % len(environments)]} if environments else {}
        request = parse_request(body | {"workspace_name": f"bench-{example.stem[:12]}-{i:03d}"} | env)
        while True:
            try:
                ids.append(
                    c.intake.submit(
                        request=request, caller=platform, source="bench", idempotency_key=f"bench-{i}"
                    ).record.id
                )
                accepted_s.append(time.monotonic() - started)
                break
            except TransientError:
                refused += 1
                time.sleep(1.0)
    # Whether every request has ended, from the store's status column: reading and validating all the records
    # every 50 ms took a quarter of this process's CPU (py-spy), CPU the step workers beside it then lacked.
    store = c.store
    if not isinstance(store, SqliteStore):
        raise SystemExit("bench.service_run reads the SQLite store's status column: run it with VENDING_STORE=sqlite")
    pending = set(ids)
    while pending:
        time.sleep(0.05)
        rows = store.db.conn().execute("SELECT id, status FROM requests").fetchall()
        pending -= {row["id"] for row in rows if RequestStatus(row["status"]).terminal}
    makespan = time.monotonic() - started
    cpu = _cpu_s() - cpu_before
    records = [c.store.get_request(r) for r in ids]
    pool.stop()
    first = records[0]
    assert first is not None
    # When each of the first request's steps started and finished, from the first submission (seconds).
    epoch = first.created_at
    timeline = {
        s.step_id: [
            round(((s.started_at or epoch) - epoch).total_seconds(), 2),
            round(((s.finished_at or epoch) - epoch).total_seconds(), 2),
            s.attempt,
        ]
        for s in c.store.get_steps(first.id)
    }
    timeline["(request ended)"] = [round((first.updated_at - epoch).total_seconds(), 2)] * 2 + [0]
    # The critical path counts the steps that wait for a long-running operation (the emulator's latency); a
    # resource group, a datastore and role assignments answer at once.
    slow = {"storage", "key-vault", "insights", "registry", "workspace", "compute"}
    depth: dict[str, int] = {}
    for step in first.plan.steps:
        depth[step.id] = int(step.kind.value in slow) + max((depth[d] for d in step.depends_on), default=0)
    steps = [s for r in ids for s in c.store.get_steps(r)]
    failed_on_429 = sum(
        1
        for s in steps
        if s.status.value == "failed" and s.error is not None and s.error.code.lower() in THROTTLE_CODES
    )
    # Steps ARM throttled, as their events tell it: a retry after a 429, or a wait while that kind of call cools down.
    throttled_steps = {
        (e.request_id, e.step)
        for r in ids
        for e in c.store.list_events(r)
        if e.step
        and (
            (e.error_code or "").lower() in THROTTLE_CODES
            or "ARM is throttling" in (e.message or "")
            or "throttled" in (e.message or "").lower()
        )
    }
    print(
        json.dumps(
            {
                "makespan_s": makespan,
                "chain": max(depth.values()),
                "steps": len(first.plan.steps),
                "succeeded": sum(r is not None and r.status.value == "succeeded" for r in records),
                "failed_on_429": failed_on_429,
                "retries": sum(s.retries for s in steps),
                "intake_refused": refused,
                "throttled_steps": len(throttled_steps),
                "cpu_s": cpu,
                "busy_s": busy[0],
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "timeline": timeline,
                "first_accepted_s": accepted_s[0],
                "accepted_s": accepted_s[:5],
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
