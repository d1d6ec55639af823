"""The Teams bot against a loopback Bot Framework: cards posted and updated, clicks verified and decided.

The fake (tests/bot_framework.py) serves the Bot Connector's OpenID metadata and keys, the token
endpoint and the connector itself; the service runs in process over real HTTP (uvicorn) with its queue
workers, so the approval card is posted by the notifications queue as it is in production.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from adapters.teams_bot import BotTokens, CardSeal, TeamsApprovals
from composition import Container
from devhost.runtime import queue_workers
from handlers.api import create_api
from models.errors import PermanentError, TransientError
from models.settings import DEFAULT_POLICY, Settings
from tests.bot_framework import APP_ID, APP_PASSWORD, CONVERSATION, FakeBotFramework, action, bot_framework, invoke
from tests.callers import bearer
from tests.conftest import example, poll, served
from tests.fakes import FakeCloud
from tests.tokens import rsa_key

FIONA_TEAMS = "aa11aa11-0000-4000-8000-00000000f10a"  # fiona's Teams user (from.aadObjectId)
FIONA = "7e1a2b3c-4d5e-4f6a-8b7c-9d0e1f2a3b07"
CAROL_TEAMS = "aa11aa11-0000-4000-8000-0000000ca201"  # carol: a fraud-detection member without the approve role
CAROL = "6a8f0b2d-4a7c-4dbe-9f6b-8d0f2c4e6a06"
STRANGER_TEAMS = "aa11aa11-0000-4000-8000-00000000dead"
TENANT = "5f1d3c2a-7b64-4e19-a8d0-3c2b1a0f9e87"  # the local directory's


@dataclass
class Bot:
    c: Container
    cloud: FakeCloud
    http: httpx.Client
    fake: FakeBotFramework

    def waiting(self, name: str = "mlw-fraud-gpu") -> tuple[str, dict[str, Any]]:
        """A prod GPU request as alice: it waits, and its card is posted to the approvers' channel."""
        body = example("cpu-small.json") | {"team": "fraud-detection", "environment": "prod", "workspace_name": name}
        body["compute"] = [{"name": "gpu", "vm_size": "Standard_NC6s_v3", "min_nodes": 0, "max_nodes": 1}]
        made = self.http.post("/api/workspaces", json=body, headers=bearer(self.c, "alice"))
        assert made.status_code == 202 and made.json()["status"] == "awaiting_approval", made.text
        rid: str = made.json()["id"]
        card = poll(
            lambda: next((c for c in self.fake.posted_cards() if _request_of(c) == rid), None),
            what="the approval card to be posted",
        )
        return rid, card

    def click(
        self,
        card: dict[str, Any],
        button: str,
        *,
        user: str,
        token: str | None = None,
        tenant: str = TENANT,
        **kw: Any,
    ) -> httpx.Response:
        """Click one of the card's buttons as a Teams user; `verb` sends another verb than the button's."""
        activity = invoke(
            service_url=self.fake.service_url, card_action=action(card, button), user=user, tenant=tenant, **kw
        )
        return self.http.post(
            "/api/chat/teams/bot",
            json=activity,
            headers={"authorization": f"Bearer {token or self.fake.token()}"},
        )

    def status(self, rid: str) -> str:
        got = self.http.get(f"/api/workspaces/{rid}", headers=bearer(self.c, "alice"))
        assert got.status_code == 200, got.text
        status: str = got.json()["status"]
        return status


def _request_of(card: dict[str, Any]) -> str | None:
    return next((a["data"]["request_id"] for a in card.get("actions", [])), None)


def _shown(card: dict[str, Any]) -> str:
    return "\n".join(e.get("text", "") for e in card["body"] if e["type"] == "TextBlock")


def policy_file(tmp: Path, fake: FakeBotFramework) -> Path:
    policy = yaml.safe_load(DEFAULT_POLICY.read_text())
    policy["approvals"]["channels"] = {"teams_conversation": CONVERSATION, "teams_service_url": fake.service_url}
    policy["chat_users"] = [
        {"teams_user": FIONA_TEAMS, "principal": FIONA, "name": "Fiona Lead", "roles": ["Workspaces.Approve"]},
        {"teams_user": CAROL_TEAMS, "principal": CAROL, "name": "Carol Diaz", "roles": ["Workspaces.Request"]},
    ]
    path = tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


@pytest.fixture
def bot(settings: Settings, tmp_path: Path) -> Iterator[Bot]:
    with bot_framework() as fake:
        configured = settings.model_copy(
            update={
                "policy_file": policy_file(tmp_path, fake),
                "teams_bot_app_id": APP_ID,
                "teams_bot_app_password": SecretStr(APP_PASSWORD),
                "teams_bot_openid_url": fake.openid_url,
                "teams_bot_token_url": fake.token_url,
            }
        )
        cloud = FakeCloud()
        container = Container(configured, cloud=cloud)
        container.swap(preflight=None)
        workers = queue_workers(container)
        for w in workers:
            w.start()
        try:
            with served(create_api(lambda: container)) as base, httpx.Client(base_url=base, timeout=30) as http:
                yield Bot(container, cloud, http, fake)
        finally:
            for w in workers:
                w.stop()


def test_the_card_is_posted_with_the_bots_token_and_an_approval_updates_it(bot: Bot) -> None:
    rid, card = bot.waiting()
    post = bot.fake.requests("POST")[0]
    assert post.path == f"/connector/v3/conversations/{CONVERSATION}/activities"
    assert post.headers["Authorization"].startswith("Bearer bot-token-")
    token_asks = bot.fake.requests("POST", "/botframework.com/")
    assert [t.body["grant_type"] for t in token_asks] == ["client_credentials"]
    assert "Still needed: 1 more for prod-gpu" in _shown(card)
    # The post's activity id is written to the record once the connector answered.
    record = poll(
        lambda: (
            (r := bot.c.store.get_request(rid)) is not None and r.approval is not None and r.approval.announced and r
        ),
        what="the posted card to be recorded",
    )
    assert record.approval is not None
    assert [(m.platform, m.channel, m.service_url) for m in record.approval.messages] == [
        ("teams", CONVERSATION, bot.fake.service_url)
    ]

    clicked = bot.click(card, "approve", user=FIONA_TEAMS, reason="budgeted")
    assert clicked.status_code == 200, clicked.text
    answer = clicked.json()
    assert (answer["statusCode"], answer["type"]) == (200, "application/vnd.microsoft.card.adaptive")
    assert "Approved by Fiona Lead" in _shown(answer["value"]) and "actions" not in answer["value"]
    poll(lambda: bot.status(rid) == "succeeded", what="the approved request to succeed")
    assert bot.cloud.calls
    update = poll(lambda: bot.fake.requests("PUT"), what="the card to be updated")[0]
    assert (
        update.path == f"/connector/v3/conversations/{CONVERSATION}/activities/{record.approval.messages[0].message_id}"
    )
    assert "Approved by Fiona Lead at" in _shown(update.body["attachments"][0]["content"])
    # One token for the post and the update: it is cached.
    assert len(bot.fake.requests("POST", "/botframework.com/")) == 1


def test_a_denial_needs_the_reason_input(bot: Bot) -> None:
    rid, card = bot.waiting()
    bare = bot.click(card, "deny", user=FIONA_TEAMS)
    assert bare.status_code == 200
    assert "say why the request is denied" in _shown(bare.json()["value"])
    assert bot.status(rid) == "awaiting_approval"
    denied = bot.click(card, "deny", user=FIONA_TEAMS, reason="no GPU budget this quarter")
    assert "Denied by Fiona Lead" in _shown(denied.json()["value"])
    assert bot.status(rid) == "denied"
    assert not bot.cloud.calls


def test_clicks_the_service_must_refuse(bot: Bot) -> None:
    rid, card = bot.waiting()
    other_rid, other_card = bot.waiting(name="mlw-fraud-gpu2")
    # A member of the team without the approve role: the authorisation function refuses, in a card.
    carol = bot.click(card, "approve", user=CAROL_TEAMS)
    assert carol.status_code == 200 and "Workspaces.Approve" in _shown(carol.json()["value"])
    # Fiona's object id, clicking from another tenant.
    elsewhere = bot.click(card, "approve", user=FIONA_TEAMS, tenant="0f0f0f0f-0000-4000-8000-000000000000")
    assert "another Microsoft Entra tenant" in _shown(elsewhere.json()["value"])
    # A Teams user the policy does not know.
    stranger = bot.click(card, "approve", user=STRANGER_TEAMS)
    assert "I do not know you yet" in _shown(stranger.json()["value"])
    # A card's seal pointed at another request.
    forged = action(card, "approve") | {"data": action(card, "approve")["data"] | {"request_id": other_rid}}
    pointed = bot.click({"actions": [forged]}, "approve", user=FIONA_TEAMS)
    assert "were not made by the service" in _shown(pointed.json()["value"])
    # The approve button's seal with the deny verb.
    swapped = bot.click(card, "approve", user=FIONA_TEAMS, verb="deny", reason="x")
    assert "were not made by the service" in _shown(swapped.json()["value"])
    # A token signed by another key under the published key id.
    bad = bot.click(card, "approve", user=FIONA_TEAMS, token=bot.fake.token(key=rsa_key("forger")))
    assert bad.status_code == 401 and bad.headers["content-type"].startswith("application/problem+json")
    # The same activity twice.
    first = bot.click(other_card, "approve", user=CAROL_TEAMS, activity_id="f:replayed")
    assert first.status_code == 200
    again = bot.click(other_card, "approve", user=FIONA_TEAMS, activity_id="f:replayed")
    assert again.status_code == 401 and "already received" in again.json()["detail"]
    assert (bot.status(rid), bot.status(other_rid)) == ("awaiting_approval", "awaiting_approval")


def test_other_activities_are_acknowledged_and_other_invokes_are_not_handled(bot: Bot) -> None:
    headers = {"authorization": f"Bearer {bot.fake.token()}"}
    base = {"channelId": "msteams", "serviceUrl": bot.fake.service_url, "conversation": {"id": CONVERSATION}}
    added = bot.http.post(
        "/api/chat/teams/bot", json=base | {"type": "conversationUpdate", "id": "a1"}, headers=headers
    )
    assert (added.status_code, added.content) == (200, b"")
    other = bot.http.post(
        "/api/chat/teams/bot", json=base | {"type": "invoke", "id": "a2", "name": "task/fetch"}, headers=headers
    )
    assert other.status_code == 200 and other.json()["statusCode"] == 400
    assert bot.http.post("/api/chat/teams/bot", content=b"not json", headers=headers).status_code == 400


def test_without_the_bot_the_endpoint_says_so(settings: Settings) -> None:
    container = Container(settings, cloud=FakeCloud())
    with served(create_api(lambda: container)) as base:
        answer = httpx.post(f"{base}/api/chat/teams/bot", json={"type": "invoke"})
    assert answer.status_code == 503 and "TEAMS_BOT_APP_ID" in answer.json()["detail"]


# ----- the poster's failures --------------------------------------------------------------------


def _poster(fake: FakeBotFramework, password: str = APP_PASSWORD) -> TeamsApprovals:
    http = httpx.Client(timeout=5)
    tokens = BotTokens(app_id=APP_ID, password=password, token_url=fake.token_url, http=http)
    return TeamsApprovals(tokens=tokens, seal=CardSeal(b"k"), http=http)


def _record(bot: Bot) -> Any:
    rid, _ = bot.waiting()
    return bot.c.store.get_request(rid)


def test_busy_and_refusing_connectors_are_told_apart(bot: Bot) -> None:
    record = _record(bot)
    poster = _poster(bot.fake)
    bot.fake.statuses.append((429, {"Retry-After": "7"}))
    with pytest.raises(TransientError) as busy:
        poster.announce(record, CONVERSATION, bot.fake.service_url, "d1")
    assert busy.value.retry_after_s == 7
    bot.fake.statuses.append((503, {}))
    with pytest.raises(TransientError):
        poster.announce(record, CONVERSATION, bot.fake.service_url, "d2")
    bot.fake.statuses.append((403, {}))
    with pytest.raises(PermanentError):
        poster.announce(record, CONVERSATION, bot.fake.service_url, "d3")
    posted = poster.announce(record, CONVERSATION, bot.fake.service_url, "d4")
    assert posted.platform == "teams" and posted.message_id
    with pytest.raises(TransientError):
        poster.announce(record, CONVERSATION, "http://127.0.0.1:9/connector/", "d5")  # nobody listens
    with pytest.raises(PermanentError):
        poster.announce(record, CONVERSATION, "http://connector.example/", "d6")  # the token never goes over http
    with pytest.raises(PermanentError):
        _poster(bot.fake, password="wrong").announce(record, CONVERSATION, bot.fake.service_url, "d7")
