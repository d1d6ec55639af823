"""The Teams bot's pure parts: the seal of a card's buttons, the card, and the Bot Connector token checks.

Each verifier test breaks one of bot-docs' rules (articles/rest-api/bot-framework-rest-connector-authentication.md,
"Step 4: Verify the JWT token") and would pass if that check were removed. Keys are served by an
in-process transport (httpx.MockTransport): no network.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from adapters.teams_bot import (
    AdaptiveCardInvokeResponse,
    BotActivity,
    BotFrameworkVerifier,
    CardSeal,
    approval_card,
)
from models.approvals import ApprovalDecision, ApprovalState, CostEstimate, Triggered
from models.records import RequestRecord, RequestStatus
from tests.bot_framework import APP_ID, ISSUER, KID
from tests.tokens import public_jwk, rsa_key

OPENID = "https://login.botframework.com/v1/.well-known/openidconfiguration"
KEYS = "https://login.botframework.com/v1/.well-known/keys"
SERVICE_URL = "https://smba.trafficmanager.net/emea/"
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


class Remembered:
    """The store's replay guard, in memory."""

    def __init__(self) -> None:
        self.keys: set[tuple[str, str]] = set()

    def remember_once(self, scope: str, key: str, *, now: datetime, until: datetime) -> bool:
        if (scope, key) in self.keys:
            return False
        self.keys.add((scope, key))
        return True


def record(*, outcome: str = "pending", decisions: list[ApprovalDecision] | None = None) -> RequestRecord:
    state = ApprovalState(
        operation="create",
        requested_by="1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01",
        requested_at=NOW,
        due_at=NOW + timedelta(hours=72),
        rules=[
            Triggered(
                rule="prod-gpu",
                description="GPU compute in production",
                reasons=["environment prod", "compute gpu is Standard_NC6s_v3 (GPU)"],
                approvers="team",
                approvals=1,
                groups=["5f0b7c1e-8a55-4a3e-9a9e-2d4b1f0c7a11"],
            )
        ],
        estimate=CostEstimate(
            currency="USD", as_of=date(2026, 12, 1), source="test", monthly_idle=0.0, monthly_max=2233.8
        ),
        outcome=outcome,  # type: ignore[arg-type]
        decisions=decisions or [],
    )
    return RequestRecord(
        id="req-1",
        status=RequestStatus.AWAITING_APPROVAL,
        team="fraud-detection",
        environment="prod",
        workspace_name="mlw-fraud-gpu",
        requester="1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01",
        requester_name="Alice Fraser",
        approval=state,
        created_at=NOW,
        updated_at=NOW,
    )


def texts(card: dict[str, Any]) -> str:
    found: list[str] = []
    for element in card["body"]:
        if element["type"] == "TextBlock":
            found.append(element["text"])
        elif element["type"] == "FactSet":
            found += [f"{f['title']}: {f['value']}" for f in element["facts"]]
    return "\n".join(found)


# ----- the seal ---------------------------------------------------------------------------------


def test_a_seal_opens_only_for_its_request_round_and_verb() -> None:
    seal = CardSeal(b"service-secret")
    token = seal.seal("req-1", 1, "approve")
    assert seal.opens("req-1", 1, "approve", token)
    assert not seal.opens("req-2", 1, "approve", token)  # another request
    assert not seal.opens("req-1", 2, "approve", token)  # another approval round
    assert not seal.opens("req-1", 1, "deny", token)  # another verb
    assert not seal.opens("req-1", 1, "delete", token)  # a verb the card never has
    assert not seal.opens("req-1", 1, "approve", token[:-2] + "AA")
    assert not CardSeal(b"another-secret").opens("req-1", 1, "approve", token)


# ----- the card ---------------------------------------------------------------------------------


def test_the_waiting_card_says_what_waits_and_asks_with_sealed_buttons() -> None:
    seal = CardSeal(b"service-secret")
    card = approval_card(record(), seal)
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.5"
    shown = texts(card)
    for expected in (
        "Approval needed: mlw-fraud-gpu",
        "Team: fraud-detection",
        "Environment: prod",
        "Workspace: mlw-fraud-gpu",
        "Requested by: Alice Fraser",
        "USD 2,234/month at most (0 idle), prices of 2026-12-01",
        "Decide by: 2026-12-05 09:00 UTC",
        "**prod-gpu** (GPU compute in production): environment prod; compute gpu is Standard_NC6s_v3 (GPU)",
        "Still needed: 1 more for prod-gpu",
    ):
        assert expected in shown, shown
    reason = next(e for e in card["body"] if e["type"] == "Input.Text")
    assert reason["id"] == "reason"
    actions = {a["verb"]: a for a in card["actions"]}
    assert set(actions) == {"approve", "deny"}
    for verb, act in actions.items():
        assert act["type"] == "Action.Execute"
        data = act["data"]
        assert (data["request_id"], data["round"]) == ("req-1", 1)
        assert seal.opens("req-1", 1, verb, data["seal"])
    assert not seal.opens("req-1", 1, "deny", actions["approve"]["data"]["seal"])


def test_a_decided_card_names_who_decided_and_has_no_buttons() -> None:
    decided = record(
        outcome="approved",
        decisions=[
            ApprovalDecision(
                by="7e1a2b3c-4d5e-4f6a-8b7c-9d0e1f2a3b07",
                name="Fiona Lead",
                decision="approve",
                reason="budgeted",
                at=NOW + timedelta(minutes=5),
                door="teams",
                rules=["prod-gpu"],
            )
        ],
    )
    card = approval_card(decided, CardSeal(b"k"))
    assert "actions" not in card
    assert not [e for e in card["body"] if e["type"] == "Input.Text"]
    shown = texts(card)
    assert "Approved: mlw-fraud-gpu" in shown
    assert "Approved by Fiona Lead at 2026-12-02 09:05 UTC: budgeted" in shown


def test_the_invoke_response_is_the_universal_actions_shape() -> None:
    body = AdaptiveCardInvokeResponse(value={"type": "AdaptiveCard"}).body()
    assert body == {
        "statusCode": 200,
        "type": "application/vnd.microsoft.card.adaptive",
        "value": {"type": "AdaptiveCard"},
    }


# ----- the verifier -----------------------------------------------------------------------------


def keys_transport(*, endorsements: list[str] | None = None, hits: list[str] | None = None) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        if hits is not None:
            hits.append(str(request.url))
        if str(request.url) == OPENID:
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": KEYS})
        if str(request.url) == KEYS:
            extra = {"endorsements": endorsements} if endorsements is not None else {}
            return httpx.Response(200, json={"keys": [public_jwk(rsa_key(KID), KID, **extra)]})
        return httpx.Response(404)

    return httpx.MockTransport(answer)


def verifier(**kw: Any) -> BotFrameworkVerifier:
    transport = keys_transport(endorsements=kw.pop("endorsements", ["msteams", "skype"]), hits=kw.pop("hits", None))
    return BotFrameworkVerifier(app_id=APP_ID, openid_url=OPENID, http=httpx.Client(transport=transport))


def activity(**overrides: Any) -> BotActivity:
    body = {
        "type": "invoke",
        "name": "adaptiveCard/action",
        "id": f"f:{time.monotonic_ns()}",
        "channelId": "msteams",
        "serviceUrl": SERVICE_URL,
        "conversation": {"id": "19:approvers@thread.tacv2"},
    } | overrides
    return BotActivity.model_validate(body)


def token(*, kid: str = KID, key_name: str = KID, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": APP_ID, "nbf": now - 10, "exp": now + 3600, "serviceurl": SERVICE_URL} | overrides
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, rsa_key(key_name), algorithm="RS256", headers={"kid": kid})


def test_a_genuine_token_passes_and_its_activity_is_remembered() -> None:
    check, replays, seen = verifier(), Remembered(), activity()
    assert check.refusal(f"Bearer {token()}", seen, replays=replays) is None
    again = check.refusal(f"Bearer {token()}", seen, replays=replays)
    assert again is not None and again.status == 401 and "already received" in again.reason


@pytest.mark.parametrize(
    ("authorization", "why"),
    [
        # Each header is made when the test runs, not when the module is collected: a token's times are
        # relative to now, and a long run would otherwise bring a "not yet valid" token inside the skew.
        (lambda: None, "Bearer"),
        (lambda: f"Basic {token()}", "Bearer"),
        (lambda: f"Bearer {token(iss='https://sts.windows.net/d6d49420-f39b-4df7-a1dc-d59a935871db/')}", "iss"),
        (lambda: f"Bearer {token(aud='another-bot-app-id')}", "another bot"),
        (lambda: f"Bearer {token(exp=int(time.time()) - 400, nbf=int(time.time()) - 4000)}", "expired"),
        (lambda: f"Bearer {token(nbf=int(time.time()) + 900)}", "not valid yet"),
        (lambda: f"Bearer {token(exp=None)}", "'exp'"),
        (lambda: f"Bearer {token(kid='unknown-kid', key_name='unknown-kid')}", "does not publish"),
        (lambda: f"Bearer {token(key_name='forger')}", "signature"),  # the published kid, another key
        (lambda: f"Bearer {token(serviceurl='https://evil.example/')}", "serviceUrl"),
        (lambda: f"Bearer {token(serviceurl=None)}", "serviceUrl"),
    ],
    ids=[
        "no-token",
        "not-bearer",
        "wrong-issuer",
        "wrong-audience",
        "expired",
        "not-yet-valid",
        "no-expiry",
        "unknown-kid",
        "forged-signature",
        "service-url-mismatch",
        "no-service-url",
    ],
)
def test_each_token_rule_refuses(authorization: Callable[[], str | None], why: str) -> None:
    refused = verifier().refusal(authorization(), activity(), replays=Remembered())
    assert refused is not None and refused.status == 401, refused
    assert why in refused.reason


def test_a_small_clock_skew_is_allowed() -> None:
    # Five minutes of skew (bot-docs, step 4.5): a token expired a minute ago still passes.
    late = token(exp=int(time.time()) - 60)
    assert verifier().refusal(f"Bearer {late}", activity(), replays=Remembered()) is None


def test_the_activity_service_url_must_match_the_token() -> None:
    refused = verifier().refusal(
        f"Bearer {token()}", activity(serviceUrl="https://smba.trafficmanager.net/amer/"), replays=Remembered()
    )
    assert refused is not None and refused.status == 401 and "serviceUrl" in refused.reason


def test_the_signing_key_must_endorse_the_teams_channel() -> None:
    refused = verifier(endorsements=["skype"]).refusal(f"Bearer {token()}", activity(), replays=Remembered())
    assert refused is not None and refused.status == 403 and "endorsed" in refused.reason
    other = verifier().refusal(f"Bearer {token()}", activity(channelId="webchat"), replays=Remembered())
    assert other is not None and other.status == 403


def test_an_activity_without_an_id_is_refused() -> None:
    refused = verifier().refusal(f"Bearer {token()}", activity(id=None), replays=Remembered())
    assert refused is not None and "no id" in refused.reason


def test_keys_are_fetched_once_and_not_for_every_request() -> None:
    hits: list[str] = []
    check = verifier(hits=hits)
    for _ in range(3):
        assert check.refusal(f"Bearer {token()}", activity(), replays=Remembered()) is None
    assert hits == [OPENID, KEYS]


def test_a_single_tenant_bot_asks_its_own_tenant_for_tokens() -> None:
    from models.settings import BOT_TOKEN_URL, Settings

    tenant = "5f1d3c2a-7b64-4e19-a8d0-3c2b1a0f9e87"
    assert Settings().teams_bot_token_endpoint == BOT_TOKEN_URL
    single = Settings(teams_bot_tenant_id=tenant)
    assert single.teams_bot_token_endpoint == f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
    chosen = Settings(teams_bot_tenant_id=tenant, teams_bot_token_url="http://127.0.0.1:1/token")
    assert chosen.teams_bot_token_endpoint == "http://127.0.0.1:1/token"  # an explicit URL is kept
