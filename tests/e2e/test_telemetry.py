"""Telemetry end to end: the devhost exports to a stand-in ingestion endpoint through the real exporters.

One request that waits, retries and succeeds; its custom events, spans and metrics arrive with one
operation id, and the events API, events.jsonl and the CLI timeline tell the same story.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.commands import timeline_line
from emulator.server import free_port
from tests.conftest import assert_closes_the_timeline, example, poll
from tests.e2e.conftest import Devhost, started_devhost
from tests.e2e.test_devhost import _wait
from tests.ingestion import Ingestion, ingestion_server

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
DIMENSIONS = {"request_id", "team", "environment", "workspace", "status"}
STEP_DIMENSIONS = DIMENSIONS | {"step", "kind", "attempt"}

# No traffic leaves the machine: Microsoft's own SDK channels are off, exports are quick.
QUIET = {
    "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
    "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
    "OTEL_BSP_SCHEDULE_DELAY": "200",
    "OTEL_BLRP_SCHEDULE_DELAY": "200",
    "OTEL_METRIC_EXPORT_INTERVAL": "500",
}
FAULTS = """
faults:
  - {type: Microsoft.Storage/storageAccounts, method: PUT, status: 429, code: TooManyRequests,
     message: "The request is being throttled.", retry_after_s: 1, times: 1}
"""


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devhost, Ingestion, str]]:
    data = tmp_path_factory.mktemp("telemetry")
    (data / "faults.yaml").write_text(FAULTS)
    with ingestion_server() as ingestion:
        env = {
            **QUIET,
            "APPLICATIONINSIGHTS_CONNECTION_STRING": ingestion.connection_string,
            "VENDING_EMULATOR_FAULTS": str(data / "faults.yaml"),
            "VENDING_EMULATOR_LATENCY_S": "0.5",
        }
        with started_devhost(data, **env) as host:
            resp = host.http.post(
                "/api/workspaces",
                json=example("cpu-small.json") | {"team": "telemetry"},
                headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
            )
            assert resp.status_code == 202, resp.text
            rid = resp.json()["id"]
            view = _wait(host, rid)
            assert view["status"] == "succeeded", view
            events = host.http.get(f"/api/workspaces/{rid}/events").json()["items"]
            poll(
                lambda: len([e for e in ingestion.events() if e["properties"].get("request_id") == rid]) == len(events),
                timeout=30,
                what="every custom event to reach the ingestion endpoint",
            )
            poll(
                lambda: (
                    {"vending.step.duration", "vending.request.duration"}
                    <= {m["name"] for e in ingestion.of("MetricData") for m in e["data"]["baseData"]["metrics"]}
                ),
                timeout=30,
                what="the metrics",
            )
            yield host, ingestion, rid


def test_custom_events_arrive_with_their_dimensions_in_order(observed: tuple[Devhost, Ingestion, str]) -> None:
    host, ingestion, rid = observed
    api_events = host.http.get(f"/api/workspaces/{rid}/events").json()["items"]
    sent = [e for e in ingestion.events() if e["properties"].get("request_id") == rid]
    assert sorted(e["name"] for e in sent) == sorted(e["name"] for e in api_events)
    names = [e["name"] for e in api_events]
    assert names[0] == "WorkspaceRequestAccepted"
    assert_closes_the_timeline(names, "WorkspaceProvisioned")
    assert "WorkspaceStepRetrying" in names and "WorkspaceStepWaiting" in names  # it waited and retried
    for event in sent:
        props = event["properties"]
        assert set(props) >= DIMENSIONS, props
        if props.get("step"):
            assert set(props) >= STEP_DIMENSIONS, props
        assert props["team"] == "telemetry" and props["workspace"] == "mlw-telemetry-dev"
    retry = next(e for e in sent if e["name"] == "WorkspaceStepRetrying")
    assert retry["properties"]["step"] == "storage" and retry["properties"]["error_code"] == "TooManyRequests"
    assert "throttled" in retry["properties"]["detail"]
    # Per step, the events arrive in the order they happened (their timestamps agree with the API's).
    by_step: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for event in sorted(sent, key=lambda e: e["time"]):
        by_step[event["properties"].get("step", "")].append((event["name"], event["properties"].get("attempt", "")))
    expected: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for event in api_events:
        expected[event.get("step") or ""].append((event["name"], str(event.get("attempt") or "")))
    assert by_step == expected
    assert by_step["storage"][:3] == [
        ("WorkspaceStepStarted", "1"),
        ("WorkspaceStepRetrying", "1"),
        ("WorkspaceStepStarted", "2"),
    ]


def test_one_operation_spans_the_http_door_the_queue_hops_and_every_step(
    observed: tuple[Devhost, Ingestion, str],
) -> None:
    host, ingestion, rid = observed
    steps = {s["id"] for s in host.http.get(f"/api/workspaces/{rid}").json()["steps"]}
    requests = ingestion.of("RequestData")
    post = [r for r in requests if r["data"]["baseData"]["name"] == "POST /api/workspaces"]
    assert len(post) == 1 and post[0]["tags"]["ai.operation.id"] == TRACE_ID
    assert post[0]["tags"]["ai.operation.parentId"] == "00f067aa0ba902b7"  # the caller's span
    step_spans = [r for r in requests if r["data"]["baseData"]["name"].startswith("step ")]
    assert {r["data"]["baseData"]["name"][5:] for r in step_spans} == steps
    assert {r["tags"]["ai.operation.id"] for r in step_spans} == {TRACE_ID}
    assert {r["tags"]["ai.operation.parentId"] for r in step_spans} == {post[0]["data"]["baseData"]["id"]}
    # The ARM calls each step made are dependencies in the same operation, under its step's span.
    # (azure-ai-ml's pollers, left to finish on their own threads once a step returned Wait, poll
    # long-running operations outside any request: those are the only ARM calls without a parent.)
    arm = [d for d in ingestion.of("RemoteDependencyData") if "/subscriptions/" in d["data"]["baseData"]["name"]]
    traced = [d for d in arm if d["tags"].get("ai.operation.parentId")]
    background = [d["data"]["baseData"]["name"] for d in arm if not d["tags"].get("ai.operation.parentId")]
    assert all("/operations/" in name for name in background), background
    assert traced and {d["tags"]["ai.operation.id"] for d in traced} == {TRACE_ID}
    roots = {r["data"]["baseData"]["id"] for r in step_spans} | {post[0]["data"]["baseData"]["id"]}
    parent_of = {
        d["data"]["baseData"]["id"]: d["tags"].get("ai.operation.parentId")
        for d in ingestion.of("RemoteDependencyData")
    }

    def under_a_step(span_id: str | None) -> bool:
        while span_id is not None and span_id not in roots:
            span_id = parent_of.get(span_id)
        return span_id in roots

    assert all(under_a_step(d["tags"]["ai.operation.parentId"]) for d in traced)
    # Log lines written while working on the request carry its id, in the same operation.
    logs = [m for m in ingestion.of("MessageData") if m["data"]["baseData"]["properties"].get("request_id") == rid]
    assert any("provisioned in" in m["data"]["baseData"]["message"] for m in logs)
    assert {m["tags"]["ai.operation.id"] for m in logs} == {TRACE_ID}
    # Every custom event of the request belongs to the operation too.
    assert {e["operation_id"] for e in ingestion.events() if e["properties"].get("request_id") == rid} == {TRACE_ID}


def test_metrics_record_durations_outcomes_retries_and_queue_latency(observed: tuple[Devhost, Ingestion, str]) -> None:
    _, ingestion, _ = observed
    metrics: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for envelope in ingestion.of("MetricData"):
        base = envelope["data"]["baseData"]
        for metric in base["metrics"]:
            metrics[metric["name"]].append({**metric, **base.get("properties", {})})
    assert {
        "vending.request.duration",
        "vending.step.duration",
        "vending.step.outcomes",
        "vending.step.retries",
        "vending.step.queue_latency",
    } <= set(metrics)
    assert {m["kind"] for m in metrics["vending.step.duration"]} >= {"storage", "workspace", "compute"}
    assert any(m["kind"] == "storage" and m["error_code"] == "TooManyRequests" for m in metrics["vending.step.retries"])
    assert any(m["status"] == "succeeded" and m["team"] == "telemetry" for m in metrics["vending.request.duration"])


def test_the_events_api_the_event_log_and_the_cli_tell_the_same_story(observed: tuple[Devhost, Ingestion, str]) -> None:
    host, _, rid = observed
    api_events = host.http.get(f"/api/workspaces/{rid}/events").json()["items"]
    logged = [
        json.loads(line)
        for line in (host.data_dir / "events.jsonl").read_text().splitlines()
        if json.loads(line)["request_id"] == rid and not json.loads(line)["name"].startswith("Vending")
    ]
    assert [(e["name"], e.get("step"), e.get("attempt")) for e in logged] == [
        (e["name"], e.get("step"), e.get("attempt")) for e in api_events
    ]
    out = host.cli("status", rid)
    assert out.returncode == 0, out.stderr
    timeline = out.stdout.split("timeline:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert timeline == [timeline_line(e) for e in api_events]
    assert any("WorkspaceStepRetrying  storage (attempt 1)  TooManyRequests" in line for line in timeline)
    assert any("WorkspaceStepWaiting  workspace" in line for line in timeline)


def _submit(host: Devhost, body: dict[str, Any]) -> httpx.Response:
    """POST a request as a client should: a 503 says "try again shortly", so it is sent again (same key).

    A devhost just started may still be loading the Azure SDKs when the first submission's confinement
    read must answer within its 5 s budget; that read fails closed, with 503, and the client retries.
    """
    headers = {"Idempotency-Key": f"telemetry-{body['team']}"}
    for _ in range(5):
        answer = host.http.post("/api/workspaces", json=body, headers=headers)
        if answer.status_code != 503:
            return answer
        time.sleep(float(answer.headers.get("Retry-After", "1")))
    return answer


def test_an_unreachable_ingestion_endpoint_never_stops_provisioning_and_is_reported_once(tmp_path: Path) -> None:
    down = f"InstrumentationKey=00000000-0000-0000-0000-00000000dead;IngestionEndpoint=http://127.0.0.1:{free_port()}/"
    with started_devhost(tmp_path, **QUIET, APPLICATIONINSIGHTS_CONNECTION_STRING=down) as host:
        for team in ("down-one", "down-two"):
            answer = _submit(host, example("cpu-small.json") | {"team": team})
            assert answer.status_code == 202, answer.text
            rid = answer.json()["id"]
            assert _wait(host, rid)["status"] == "succeeded"
        poll(
            lambda: "telemetry export to Azure Monitor failed" in (tmp_path / "devhost.log").read_text(),
            timeout=30,
            what="the export failure to be reported",
        )
    log = (tmp_path / "devhost.log").read_text()
    assert log.count("telemetry export to Azure Monitor failed") == 1, log[-3000:]
