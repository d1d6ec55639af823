"""No secret, ever: settings, cloud answers and callback URLs full of secrets, and none of them anywhere.

The devhost runs with secret settings, exports telemetry to a stand-in ingestion endpoint, and the
emulator answers with errors that quote keys, SAS signatures, bearer tokens and webhook URLs. The
request's callback URL carries a token and its receiver fails once. Then every event (API,
events.jsonl, Azure Monitor), every exported span, log and metric, every devhost log line and every
error message the API shows is searched for each secret.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.capture import capture_server
from tests.conftest import ROOT, example, poll
from tests.e2e.conftest import started_devhost
from tests.e2e.test_devhost import _wait
from tests.e2e.test_telemetry import QUIET
from tests.ingestion import ingestion_server
from tests.loopback import loopback_policy_file

SERVICE_BUS_KEY = "SbKey0123456789SECRETabcdefghijklmnopqrstu="
TABLES_KEY = "TablesKey0123456789SECRETabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/ab=="
SAS_SIGNATURE = "SasSig0123SECRET%2Fabc"
CLOUD_KEY = "CloudKeySECRET0123456789"
HOOK_TOKEN = "HookSECRET0123456789"
BEARER = "eyJhbGciOiJSUzI1NiJ9.SECRETTOKENpayload.c2lnbmF0dXJl"
CALLBACK_TOKEN = "CallbackSECRET0123456789"
FUNCTION_KEY = "FnKeySECRET0123456789abcdef=="  # what a caller used to put in ?code=, and may still

FAULTS = f"""
faults:
  - {{type: Microsoft.Storage/storageAccounts, method: PUT, status: 500, code: InternalServerError,
     message: "Backend failed; retry with https://stvending.blob.core.windows.net/c?sv=2024-01-01&sig={SAS_SIGNATURE}&se=2030 or AccountKey={CLOUD_KEY};",
     times: 1}}
  - {{type: Microsoft.KeyVault/vaults, method: PUT, status: 429, code: TooManyRequests,
     message: "Throttled. Tell https://hooks.slack.com/services/T0AAAA/B0BBBB/{HOOK_TOKEN} (Authorization: Bearer {BEARER})",
     retry_after_s: 1, times: 1}}
"""


def test_no_secret_reaches_an_event_a_span_a_log_line_or_an_error_message(tmp_path: Path) -> None:
    (tmp_path / "faults.yaml").write_text(FAULTS)
    policy = (ROOT / "policy" / "default.yaml").read_text()
    assert "datastore_credentials: identity" in policy
    (tmp_path / "base-policy.yaml").write_text(
        policy.replace("datastore_credentials: identity", "datastore_credentials: account_key")
    )
    policy_file = loopback_policy_file(tmp_path / "base-policy.yaml", tmp_path)  # the receiver is on loopback
    settings = {
        "ServiceBusConnection": (
            "Endpoint=sb://vending-test.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
            f"SharedAccessKey={SERVICE_BUS_KEY}"
        ),
        "TablesConnection": (
            f"DefaultEndpointsProtocol=https;AccountName=stvending;AccountKey={TABLES_KEY};"
            "EndpointSuffix=core.windows.net"
        ),
        "VENDING_EMULATOR_FAULTS": str(tmp_path / "faults.yaml"),
        "VENDING_POLICY_FILE": str(policy_file),
        "VENDING_EMULATOR_LATENCY_S": "0.3",
    }
    with ingestion_server() as ingestion, capture_server() as receiver:
        receiver.statuses = [503]  # the callback receiver is down once
        callback = f"{receiver.url}/hooks/{CALLBACK_TOKEN}?token={CALLBACK_TOKEN}"
        env = {**QUIET, **settings, "APPLICATIONINSIGHTS_CONNECTION_STRING": ingestion.connection_string}
        with started_devhost(tmp_path, **env) as host:
            body = example("cpu-small.json") | {"team": "secrets", "callback_url": callback}
            rid = host.http.post("/api/workspaces", params={"code": FUNCTION_KEY}, json=body).json()["id"]
            host.http.get("/api/health", params={"code": FUNCTION_KEY, "sig": SAS_SIGNATURE, "token": CALLBACK_TOKEN})
            view = _wait(host, rid)
            assert view["status"] == "succeeded", view
            poll(lambda: len(receiver.received) == 2, timeout=60, what="the callback, retried once")
            emulator = host.emulator()
            account = view["names"]["storage_account"]
            keys = emulator.post(
                f"/subscriptions/{view['names']['subscription_id']}/resourceGroups/{view['names']['resource_group']}"
                f"/providers/Microsoft.Storage/storageAccounts/{account}/listKeys?api-version=2023-05-01",
                headers={"Authorization": "Bearer emulator"},
            ).json()
            storage_key = keys["keys"][0]["value"]
            events = host.http.get(f"/api/workspaces/{rid}/events").json()["items"]
            names = [e["name"] for e in events]
            assert "WorkspaceStepRetrying" in names  # the secret-laden errors were met, and retried
            poll(
                lambda: len([e for e in ingestion.events() if e["properties"].get("request_id") == rid]) == len(events),
                timeout=30,
                what="the custom events",
            )
            shown = {
                "view": json.dumps(view),
                "events API": json.dumps(events),
                "list": host.http.get("/api/workspaces").text,
            }
        shown["events.jsonl"] = (tmp_path / "events.jsonl").read_text()
        shown["devhost log"] = (tmp_path / "devhost.log").read_text()
        shown["Azure Monitor"] = "\n".join(ingestion.bodies)
    secrets = {
        "Service Bus key": SERVICE_BUS_KEY,
        "Tables key": TABLES_KEY,
        "SAS signature": SAS_SIGNATURE,
        "key in a cloud error": CLOUD_KEY,
        "Slack webhook token": HOOK_TOKEN,
        "bearer token": BEARER,
        "callback URL token": CALLBACK_TOKEN,
        "function key in a query string": FUNCTION_KEY,
        "storage account key": storage_key,
    }
    for where, text in shown.items():
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} appears in the {where}"
    # What is left says what happened, with the secrets masked.
    assert "AccountKey=***" in shown["events API"] and "sig=***" in shown["events API"]
    assert "https://hooks.slack.com/***" in shown["Azure Monitor"]
    assert "code=***" in shown["Azure Monitor"]  # the HTTP door's request telemetry, its query masked
    assert "storage" in shown["devhost log"] and len(ingestion.of("RemoteDependencyData")) > 10
