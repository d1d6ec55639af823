"""ChatOps end to end on the devhost: a signed Slack command and a signed Teams message are planned,
confirmed, provisioned and announced once in their conversation; a failure names its step and the fix;
replays (also after a restart), stale Teams activities and other teams' requests are refused.

Local receivers stand in for Slack's response_url, the Slack Web API and the Teams Workflows URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml

from models.identity import DEFAULT_DIRECTORY
from tests.capture import Capture, capture_server
from tests.conftest import ROOT, poll
from tests.e2e.conftest import Devhost, started_devhost

SLACK_SECRET = "slack-signing-secret-for-tests-0123"
TEAMS_SECRET = base64.b64encode(b"teams-outgoing-webhook-secret-01").decode()
ADA_SLACK, ADA_AAD, ADA_PRINCIPAL = (
    "U0ADA",
    "6a1c2e3f-4b5d-4e6f-8a7b-9c0d1e2f3a4b",
    "0c9a3f5e-2b1d-4e6f-8a7b-9c0d1e2f3a4b",
)
BOB_SLACK, BOB_PRINCIPAL = "U0BOB", "0c9a3f5e-2b1d-4e6f-8a7b-000000000b0b"
CHATOPS_GROUP = "0c9a3f5e-2b1d-4e6f-8a7b-0000000c4a70"
FAULTS = """
faults:
  - {type: Microsoft.KeyVault/vaults, method: PUT, name: "kv-chatfail*", status: 403, code: RequestDisallowedByPolicy,
     message: "Resource 'kv' was disallowed by policy 'no-vaults-here'.", times: null}
"""


@pytest.fixture(scope="module")
def chatops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devhost, Capture]]:
    data = tmp_path_factory.mktemp("chatops")
    policy = yaml.safe_load((ROOT / "policy" / "default.yaml").read_text())
    # The chat teams, by their Entra group: Ada is in it (the local directory below says so), Bob is not.
    policy["teams"].update({team: {"groups": [CHATOPS_GROUP]} for team in ("chatslack", "chatteams", "chatfail")})
    policy["chat_users"] = [
        # Vending.Admin until the composition root gives Chat the authoriser with the directory's membership
        # (DESIGN section 9); then Ada acts as the chat teams' member she is, with the default role.
        {
            "slack_user": ADA_SLACK,
            "teams_user": ADA_AAD,
            "principal": ADA_PRINCIPAL,
            "name": "Ada",
            "roles": ["Vending.Admin"],
        },
        {"slack_user": BOB_SLACK, "principal": BOB_PRINCIPAL, "name": "Bob"},
    ]
    (data / "policy.yaml").write_text(yaml.safe_dump(policy))
    directory = yaml.safe_load(DEFAULT_DIRECTORY.read_text())
    directory["groups"]["chatops"] = CHATOPS_GROUP
    directory["users"]["ada"] = {
        "object_id": ADA_PRINCIPAL,
        "name": "Ada",
        "username": "ada@vending.example",
        "groups": ["chatops"],
        "roles": ["Workspaces.Request"],
    }
    directory["users"]["bob"]["object_id"] = BOB_PRINCIPAL
    (data / "directory.yaml").write_text(yaml.safe_dump(directory))
    (data / "faults.yaml").write_text(FAULTS)
    with capture_server() as receiver:
        receiver.reply = b'{"ok": true, "ts": "1700000000.000100"}'
        env = {
            "VENDING_POLICY_FILE": str(data / "policy.yaml"),
            "VENDING_EMULATOR_FAULTS": str(data / "faults.yaml"),
            "SLACK_SIGNING_SECRET": SLACK_SECRET,
            "SLACK_BOT_TOKEN": "xoxb-test-token-0123456789",
            "SLACK_API_URL": f"{receiver.url}/slack-api/",
            "TEAMS_OUTGOING_WEBHOOK_SECRET": TEAMS_SECRET,
            "TEAMS_WORKFLOWS_URL": f"{receiver.url}/teams-workflow",
            "VENDING_EMULATOR_LATENCY_S": "0.2",
            "VENDING_AUTH_DIRECTORY_FILE": str(data / "directory.yaml"),
        }
        with started_devhost(data, **env) as host:
            yield host, receiver


def _slack(host: Devhost, path: str, form: dict[str, str], *, secret: str = SLACK_SECRET) -> httpx.Response:
    body = urlencode(form)
    stamp = str(int(time.time()))
    mac = hmac.new(secret.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": stamp,
        "x-slack-signature": f"v0={mac}",
    }
    return host.http.post(path, content=body, headers=headers)


def _teams(
    host: Devhost, text: str, *, message_id: str, secret: str = TEAMS_SECRET, sent: datetime | None = None
) -> httpx.Response:
    body = json.dumps(
        {
            "type": "message",
            "id": message_id,
            "timestamp": (sent or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
            "text": f"<at>Vending</at> {text}",
            "from": {"id": "29:1abc", "name": "Ada", "aadObjectId": ADA_AAD},
            "conversation": {"id": "19:channel@thread.skype"},
        }
    ).encode()
    return _signed_teams(host, body, secret=secret)


def _signed_teams(host: Devhost, body: bytes, *, secret: str = TEAMS_SECRET) -> httpx.Response:
    mac = base64.b64encode(hmac.new(base64.b64decode(secret), body, hashlib.sha256).digest()).decode()
    return host.http.post(
        "/api/chat/teams/messages",
        content=body,
        headers={"content-type": "application/json", "authorization": f"HMAC {mac}"},
    )


def _texts(messages: list[Any]) -> list[str]:
    return [json.dumps(m) for m in messages]


def _wait_request(host: Devhost, team: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        items = host.http.get("/api/workspaces", params={"team": team}).json()["items"]
        return items[0] if items and items[0]["status"] in ("succeeded", "failed") else None

    return poll(finished, timeout=120, every=0.2, what=f"the {team} request to finish")


def _told(host: Devhost, request_id: str) -> dict[str, Any]:
    """Wait until the devhost's store records the request's announcements as done (no further post follows)."""
    from adapters.sqlite_store import SqliteStore

    store = SqliteStore(host.data_dir / "state.db")

    def done() -> dict[str, Any] | None:
        record = store.get_request(request_id)
        state = record.notification if record else None
        return state.model_dump(exclude_none=True) if state is not None and state.done else None

    return poll(done, timeout=60, every=0.1, what="the announcement to be recorded")


def test_a_slack_command_is_planned_confirmed_provisioned_and_announced_once(
    chatops: tuple[Devhost, Capture],
) -> None:
    host, receiver = chatops
    response_url = f"{receiver.url}/slack-response/1"
    command = {
        "command": "/mlws",
        "text": 'create region=westeurope team=chatslack env=dev profile=cpu-small cost-center="CC 1042"',
        "user_id": ADA_SLACK,
        "channel_id": "C0VISION",
        "response_url": response_url,
        "trigger_id": "1.2.slack",
    }
    planned = _slack(host, "/api/chat/slack/commands", command)
    assert planned.status_code == 200, planned.text
    answer = planned.json()
    assert answer["response_type"] == "ephemeral" and "Create mlw-chatslack-dev?" in answer["text"]
    confirm = next(
        e
        for b in answer["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e.get("action_id") == "confirm_create"
    )
    payload = {
        "type": "block_actions",
        "user": {"id": ADA_SLACK},
        "channel": {"id": "C0VISION"},
        "response_url": response_url,
        "trigger_id": "1.3.slack",
        "actions": [{"action_id": "confirm_create", "value": confirm["value"]}],
    }
    clicked = _slack(host, "/api/chat/slack/interactions", {"payload": json.dumps(payload)})
    assert clicked.status_code == 200
    started = poll(lambda: receiver.bodies("/slack-response/1"), what="the confirmation's answer")
    assert "Provisioning mlw-chatslack-dev has started" in started[0]["text"] and started[0]["replace_original"]
    record = _wait_request(host, "chatslack")
    assert record["status"] == "succeeded"
    ready = poll(
        lambda: [m for m in receiver.bodies("/slack-response/1") if "mlw-chatslack-dev is ready" in m["text"]],
        what="the announcement",
    )
    assert _told(host, record["id"])["status"] == "delivered"  # recorded: nothing is posted after this
    ready = [m for m in receiver.bodies("/slack-response/1") if "mlw-chatslack-dev is ready" in m["text"]]
    assert len(ready) == 1 and ready[0]["response_type"] == "in_channel"
    assert "https://ml.azure.com/home?wsid=" in json.dumps(ready[0]["blocks"])
    # A second click on the same button does not create a second workspace.
    again = _slack(host, "/api/chat/slack/interactions", {"payload": json.dumps({**payload, "trigger_id": "1.4"})})
    assert again.status_code == 200
    assert len(host.http.get("/api/workspaces", params={"team": "chatslack"}).json()["items"]) == 1


def test_a_teams_message_is_planned_confirmed_provisioned_and_announced_once(chatops: tuple[Devhost, Capture]) -> None:
    host, receiver = chatops
    ask = "create team=chatteams env=dev region=westeurope profile=cpu-small cost-center=CC-7"
    planned = _teams(host, ask, message_id="m1")
    assert planned.status_code == 200, planned.text
    card = planned.json()["attachments"][0]["content"]
    assert card["type"] == "AdaptiveCard" and "confirm=yes" in json.dumps(card)
    confirmed = _teams(host, ask + " confirm=yes", message_id="m2")
    assert "Provisioning mlw-chatteams-dev has started" in json.dumps(confirmed.json())
    record = _wait_request(host, "chatteams")
    assert record["status"] == "succeeded"
    posted = poll(lambda: receiver.bodies("/teams-workflow"), what="the Workflows post")
    assert _told(host, record["id"])["status"] == "delivered"  # recorded: nothing is posted after this
    posted = [m for m in receiver.bodies("/teams-workflow") if "mlw-chatteams-dev" in json.dumps(m)]
    assert len(posted) == 1
    content = posted[0]["attachments"][0]
    assert content["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert content["content"]["actions"][0]["url"].startswith("https://ml.azure.com/home?wsid=")


def test_a_failed_request_names_the_step_and_the_fix(chatops: tuple[Devhost, Capture]) -> None:
    host, receiver = chatops
    _teams(
        host,
        "create team=chatfail env=dev region=westeurope profile=cpu-small cost-center=CC-9 confirm=yes",
        message_id="f1",
    )
    record = _wait_request(host, "chatfail")
    assert record["status"] == "failed"
    posted = poll(
        lambda: [m for m in receiver.bodies("/teams-workflow") if "mlw-chatfail-dev" in json.dumps(m)],
        what="the failure post",
    )
    text = json.dumps(posted[0])
    assert "could not be provisioned" in text and "key-vault" in text and "policy" in text.lower()


def test_forged_stale_unsigned_and_unconfigured_requests_do_nothing(
    chatops: tuple[Devhost, Capture], tmp_path: Path
) -> None:
    host, _ = chatops
    form = {"command": "/mlws", "text": "help", "user_id": ADA_SLACK, "response_url": "https://hooks.slack.com/x"}
    forged = _slack(host, "/api/chat/slack/commands", form, secret="not-the-secret")
    assert forged.status_code == 401 and forged.headers["content-type"] == "application/problem+json"
    stale_stamp = str(int(time.time()) - 600)
    body = urlencode(form)
    mac = hmac.new(SLACK_SECRET.encode(), f"v0:{stale_stamp}:{body}".encode(), hashlib.sha256).hexdigest()
    stale = host.http.post(
        "/api/chat/slack/commands",
        content=body,
        headers={"x-slack-request-timestamp": stale_stamp, "x-slack-signature": f"v0={mac}"},
    )
    assert stale.status_code == 401 and "older than five minutes" in stale.json()["detail"]
    fresh = _slack(host, "/api/chat/slack/commands", form)
    assert fresh.status_code == 200 and "Usage" in json.dumps(fresh.json())
    replay = host.http.post(
        "/api/chat/slack/commands", content=fresh.request.content, headers=dict(fresh.request.headers)
    )
    assert replay.status_code == 401 and "already received" in replay.json()["detail"]
    teams_forged = _teams(
        host, "help", message_id="x", secret=base64.b64encode(b"wrong-secret-0123456789abcdef01").decode()
    )
    assert teams_forged.status_code == 401
    with started_devhost(tmp_path) as bare:  # no chat secrets configured
        for path in ("/api/chat/slack/commands", "/api/chat/slack/interactions", "/api/chat/teams/messages"):
            answer = bare.http.post(path, content=b"text=help")
            assert answer.status_code == 503 and "is not configured" in answer.json()["title"]


def test_a_replayed_or_stale_teams_activity_is_refused(chatops: tuple[Devhost, Capture]) -> None:
    host, _ = chatops
    first = _teams(host, "help", message_id="r1")
    assert first.status_code == 200 and "Usage" in json.dumps(first.json())
    replay = _signed_teams(host, first.request.content)
    assert replay.status_code == 401 and "already received" in replay.json()["detail"]
    stale = _teams(host, "help", message_id="r2", sent=datetime.fromtimestamp(time.time() - 600, UTC))
    assert stale.status_code == 401 and "older than five minutes" in stale.json()["detail"]


def test_another_teams_requests_are_hidden_and_its_plans_refused(chatops: tuple[Devhost, Capture]) -> None:
    host, receiver = chatops
    made = _teams(
        host,
        "create team=chatteams env=test region=westeurope profile=cpu-small cost-center=CC-8 confirm=yes",
        message_id="h1",
    )
    assert "has started" in json.dumps(made.json()), made.text
    request_id = _request_id(made.json())
    form = {"command": "/mlws", "user_id": BOB_SLACK, "response_url": f"{receiver.url}/slack-response/bob"}
    status = _slack(host, "/api/chat/slack/commands", {**form, "text": f"status {request_id}"})
    missing = _slack(host, "/api/chat/slack/commands", {**form, "text": "status 01J0NOTHERE0000000000000000"})
    assert status.status_code == 200 and "there is no request" in status.json()["text"]
    assert status.json()["text"] == missing.json()["text"].replace("01J0NOTHERE0000000000000000", request_id)
    listed = _slack(host, "/api/chat/slack/commands", {**form, "text": "list chatteams"})
    assert "cannot show the requests of team 'chatteams'" in listed.json()["text"] and request_id not in listed.text
    planned = _slack(
        host,
        "/api/chat/slack/commands",
        {**form, "text": "create team=chatteams env=prod region=westeurope profile=cpu-small cost-center=CC-8"},
    )
    assert "That team is not yours." in planned.json()["text"] and "confirm_create" not in planned.text


def _request_id(answer: dict[str, Any]) -> str:
    text = json.dumps(answer)
    start = text.index("Request `") + len("Request `")
    return text[start : text.index("`", start)]


def test_a_signed_slack_request_replayed_after_a_restart_is_refused(tmp_path: Path) -> None:
    env = {"SLACK_SIGNING_SECRET": SLACK_SECRET}
    form = {"command": "/mlws", "text": "help", "user_id": ADA_SLACK, "response_url": "https://hooks.slack.com/x"}
    with started_devhost(tmp_path, **env) as before:
        fresh = _slack(before, "/api/chat/slack/commands", form)
        assert fresh.status_code == 200
    with started_devhost(tmp_path, **env) as after:
        replay = after.http.post(
            "/api/chat/slack/commands", content=fresh.request.content, headers=dict(fresh.request.headers)
        )
        assert replay.status_code == 401 and "already received" in replay.json()["detail"]
