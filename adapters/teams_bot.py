"""The Teams bot that asks approvers: an Adaptive Card with Approve and Deny, Teams' clicks verified and decided.

An outgoing webhook "cannot use any card actions except for openURL" (msteams-docs,
msteams-platform/webhooks-and-connectors/how-to/add-outgoing-webhook.md), so approvals in Teams need a
bot. Four parts, each behind what the rest of the service needs of it:

- `TeamsApprovals` posts the approval card proactively through the Bot Connector REST API and updates
  it once decided (`adapters.approvers.TeamsApprovalPoster`), with an access token of the bot's own
  (client credentials, `BotTokens`).
- `BotFrameworkVerifier` says whether a request to the bot's endpoint comes from the Bot Connector:
  the JWT it sends, checked as bot-docs says, and the activity not seen before.
- `CardSeal` signs what each button asks (request, approval round, verb), so a card cannot be made up
  or pointed at another request.
- `ApprovalCardActions` answers Teams' `adaptiveCard/action` invoke: who clicked (the policy's chat
  users), the decision by the one authorisation function (`engine.approvals.Approvals`), and the card
  that replaces the clicked one.

Bot Framework's token does not sign the activity's body, only who sent it and its `serviceUrl`: the
clicking user is trusted as the Bot Connector says, like every bot does, and authorised afresh.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.auth import ALGORITHM, SigningKeys, signing_key_id
from engine.approvals import Decided
from engine.chat import Replays, chat_caller
from models.approvals import MAX_REASON, ApprovalMessage, ApprovalState
from models.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from models.identity import AuthenticationError, Caller, check_key_url
from models.policy import Policy
from models.records import RequestRecord
from models.redact import register

log = logging.getLogger(__name__)

AUTH_DOC = "bot-docs articles/rest-api/bot-framework-rest-connector-authentication.md"
# "The token contains an "issuer" claim with value of https://api.botframework.com" (AUTH_DOC, step 4.3).
BOT_ISSUER = "https://api.botframework.com"
# Client credentials for the Bot Connector: scope https://api.botframework.com/.default (AUTH_DOC, step 1).
BOT_SCOPE = "https://api.botframework.com/.default"
# "Industry-standard clock-skew is 5 minutes" (AUTH_DOC, step 4.5).
CLOCK_SKEW_S = 300.0
CHANNEL = "msteams"  # the only channel this bot serves; the signing key must endorse it
CARD = "application/vnd.microsoft.card.adaptive"
ERROR = "application/vnd.microsoft.error"
INVOKE = "adaptiveCard/action"
REPLAY_SCOPE = "teams-bot-activity"
TOKEN_MARGIN_S = 300.0  # a cached token is renewed this long before it expires
DOOR = "teams"
Verb = Literal["approve", "deny"]


# ----- wire shapes ------------------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ChannelAccount(_Wire):
    """Who sent or receives an activity; Teams adds the user's Entra object id."""

    id: str | None = None
    name: str | None = None
    aad_object_id: str | None = Field(None, alias="aadObjectId")


class ConversationAccount(_Wire):
    """The conversation an activity belongs to."""

    id: str | None = None
    tenant_id: str | None = Field(None, alias="tenantId")


class TenantInfo(_Wire):
    """The Entra tenant of a Teams activity."""

    id: str | None = None


class TeamsChannelData(_Wire):
    """Teams' channel data: the user's tenant is `channelData.tenant.id`.

    msteams-docs, msteams-platform/messaging-extensions/how-to/action-commands/create-task-module.md
    (the invoke's `from.aadObjectId` and `channelData.tenant.id`).
    """

    tenant: TenantInfo | None = None


class BotActivity(_Wire):
    """The Bot Framework activity Teams posts to the bot (bot-docs, articles/rest-api/bot-framework-rest-connector-api-reference.md)."""

    type: str
    id: str | None = None
    name: str | None = None
    channel_id: str | None = Field(None, alias="channelId")
    service_url: str | None = Field(None, alias="serviceUrl")
    from_: ChannelAccount | None = Field(None, alias="from")
    conversation: ConversationAccount | None = None
    recipient: ChannelAccount | None = None
    channel_data: TeamsChannelData | None = Field(None, alias="channelData")
    value: Any = None

    @property
    def tenant(self) -> str | None:
        """Return the user's tenant: Teams' channel data, else the conversation's."""
        found = self.channel_data.tenant.id if self.channel_data and self.channel_data.tenant else None
        return found or (self.conversation.tenant_id if self.conversation else None)


class ExecuteAction(_Wire):
    """The `Action.Execute` a user clicked: its verb, and its data with the card's inputs merged in."""

    type: str | None = None
    verb: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class AdaptiveCardInvokeValue(_Wire):
    """The `value` of an `adaptiveCard/action` invoke.

    Request format: https://learn.microsoft.com/adaptive-cards/authoring-cards/universal-action-model#request-format
    (msteams-docs, msteams-platform/task-modules-and-cards/cards/Universal-actions-for-adaptive-cards/Sequential-Workflows.md).
    """

    action: ExecuteAction
    trigger: str | None = None


class CardData(_Wire):
    """What each button of an approval card carries: the request, the round, the seal; `reason` is the card's input."""

    request_id: str = Field(min_length=1, max_length=200)
    round: int = Field(ge=1)
    seal: str = Field(min_length=1, max_length=200)
    reason: str | None = Field(None, description="The Input.Text 'reason', merged into the data by Action.Execute.")


class AdaptiveCardInvokeResponse(_Wire):
    """The answer to an `adaptiveCard/action` invoke: the card that replaces the clicked one.

    msteams-docs, msteams-platform/task-modules-and-cards/cards/Universal-actions-for-adaptive-cards/Sequential-Workflows.md
    ("Sample invoke response to return adaptive card": statusCode 200, type application/vnd.microsoft.card.adaptive,
    value the card); https://learn.microsoft.com/adaptive-cards/authoring-cards/universal-action-model#response-format.
    """

    status_code: int = Field(200, alias="statusCode")
    type: str = CARD
    value: dict[str, Any]

    def body(self) -> dict[str, Any]:
        """Return the JSON body Teams reads."""
        return self.model_dump(by_alias=True)


class Attachment(_Wire):
    """A card attached to a message."""

    content_type: str = Field(CARD, alias="contentType")
    content: dict[str, Any]


class BotMessage(_Wire):
    """The message activity the bot posts (Send to Conversation) or puts in place (Update Activity)."""

    type: Literal["message"] = "message"
    id: str | None = None
    summary: str | None = None
    attachments: list[Attachment]


class ResourceResponse(_Wire):
    """The Bot Connector's answer to a post: the new activity's id."""

    id: str | None = None


class TokenResponse(_Wire):
    """The token endpoint's answer to a client-credentials request (AUTH_DOC, step 2)."""

    token_type: str = "Bearer"  # noqa: S105 - a token type, not a secret
    expires_in: float = Field(gt=0)
    access_token: str = Field(min_length=1)


# ----- the seal of a card's buttons -------------------------------------------------------------


class CardSeal:
    """Sign and check what a button asks: this request, this approval round, this verb (HMAC-SHA256)."""

    CONTEXT = b"workspace-vending/teams-approval-card/v1"

    def __init__(self, secret: bytes) -> None:
        # A key of its own, derived from the service's secret: a card's seal is never a callback's signature.
        self._key = hmac.new(secret, self.CONTEXT, hashlib.sha256).digest()

    def seal(self, request_id: str, round_: int, verb: Verb) -> str:
        """Return the seal of one button."""
        return self._mac(request_id, round_, verb)

    def opens(self, request_id: str, round_: int, verb: str, seal: str) -> bool:
        """Say whether `seal` was made for exactly this request, round and verb."""
        if verb not in ("approve", "deny"):
            return False
        return hmac.compare_digest(self._mac(request_id, round_, verb), seal)

    def _mac(self, request_id: str, round_: int, verb: str) -> str:
        mac = hmac.new(self._key, f"{request_id}\n{round_}\n{verb}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


# ----- the card ---------------------------------------------------------------------------------


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _decided_by(state: ApprovalState) -> list[str]:
    lines = []
    for d in state.decisions:
        verb = "Approved" if d.decision == "approve" else "Denied"
        lines.append(f"{verb} by {d.name or d.by} at {_when(d.at)}" + (f": {d.reason}" if d.reason else ""))
    return lines


HEADLINES = {
    "pending": "Approval needed",
    "approved": "Approved",
    "denied": "Denied",
    "expired": "Expired: nobody decided in time",
    "withdrawn": "Withdrawn by its requester",
}


def approval_card(record: RequestRecord, seal: CardSeal, *, notice: str | None = None) -> dict[str, Any]:
    """Render a request's approval as an Adaptive Card: Approve and Deny while it waits, who decided once it is decided.

    `notice` leads the card (why a click was refused, or what it did).
    """
    state = record.approval
    assert state is not None, "only a request that needs approval has an approval card"
    workspace = record.workspace_name or (record.request.workspace_name if record.request else None) or record.id
    body: list[dict[str, Any]] = []
    if notice:
        body.append(_text(notice, weight="Bolder", color="Attention" if state.outcome == "pending" else "Good"))
    body.append(
        _text(
            f"{HEADLINES[state.outcome]}: {workspace}",
            size="Medium",
            weight="Bolder",
            color={"approved": "Good", "denied": "Attention"}.get(state.outcome, "Default"),
        )
    )
    facts = [
        ("Team", record.team),
        ("Environment", record.environment),
        ("Workspace", workspace),
        ("Requested by", record.requester_name or record.requester),
        ("Request", record.id),
    ]
    if state.operation == "update" and state.change is not None:
        facts.append(("Revision", f"{state.change.number}: {state.change.summary or 'a change'}"))
    if state.estimate is not None:
        facts.append(("Estimate", state.estimate.summary()))
    facts.append(("Decide by" if state.outcome == "pending" else "Was due", _when(state.due_at)))
    body.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in facts]})
    body.append(_text("Why it waits", weight="Bolder"))
    for rule in state.rules:
        about = f" ({rule.description})" if rule.description else ""
        body.append(_text(f"**{rule.rule}**{about}: {'; '.join(rule.reasons)}"))
    body += [_text(line, isSubtle=True) for line in _decided_by(state)]
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        # Universal Actions need the schema version 1.5 in Teams (msteams-docs,
        # msteams-platform/task-modules-and-cards/cards/Universal-actions-for-adaptive-cards/Work-with-Universal-Actions-for-Adaptive-Cards.md).
        "version": "1.5",
        "body": body,
    }
    if state.outcome != "pending":
        return card
    missing = ", ".join(f"{n} more for {t.rule}" for t, n in state.missing())
    body.append(_text(f"Still needed: {missing}", weight="Bolder"))
    body.append(
        {
            "type": "Input.Text",
            "id": "reason",
            "label": "Reason (required to deny; the requester is told)",
            "isMultiline": True,
            "maxLength": MAX_REASON,
        }
    )
    buttons: list[tuple[str, Verb, str]] = [("Approve", "approve", "positive"), ("Deny", "deny", "destructive")]
    card["actions"] = [
        {
            "type": "Action.Execute",
            "title": title,
            "verb": verb,
            "style": style,
            "data": {"request_id": record.id, "round": state.round, "seal": seal.seal(record.id, state.round, verb)},
        }
        for title, verb, style in buttons
    ]
    return card


def refusal_card(reason: str) -> dict[str, Any]:
    """Render a refusal that shows nothing of a request (a card that is not ours, a user the service does not know)."""
    return {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.5",
        "body": [_text("Not done", size="Medium", weight="Bolder", color="Attention"), _text(reason)],
    }


# ----- verifying the Bot Connector's requests ---------------------------------------------------


@dataclass(frozen=True)
class BotKeySource:
    """Where the Bot Connector's signing keys are named: its OpenID metadata (an `adapters.auth.KeySource`)."""

    discovery_url: str
    issuer: str = BOT_ISSUER
    jwks_url: str | None = None
    # "The list of keys is relatively stable and may be cached for long periods of time" (AUTH_DOC, step 3).
    jwks_refresh_s: float = 86400.0
    jwks_refetch_min_s: float = 300.0
    fetch_retry_s: float = 5.0


@dataclass(frozen=True)
class Refusal:
    """Why a request to the bot is refused, and the HTTP status that says so."""

    status: int
    reason: str


class BotFrameworkVerifier:
    """Check that a request comes from the Bot Connector for this bot, and that its activity is new.

    Each rule is AUTH_DOC's "Step 4: Verify the JWT token" unless noted.
    """

    def __init__(
        self,
        *,
        app_id: str,
        openid_url: str,
        http: httpx.Client,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app_id = app_id
        self.clock = clock
        self.keys = SigningKeys(
            BotKeySource(check_key_url(openid_url, "TEAMS_BOT_OPENID_URL")), http=http, clock=monotonic
        )

    def refusal(self, authorization: str | None, activity: BotActivity, *, replays: Replays) -> Refusal | None:
        """Return why the request is refused, or None when it is genuine and new (its id is then remembered)."""
        try:
            claims, endorsed = self._claims(authorization)
        except AuthenticationError as exc:
            return Refusal(401, exc.reason)
        # 7. "The token contains a "serviceUrl" claim with value that matches the serviceUrl property at the
        # root of the Activity". The article spells the claim serviceUrl; tokens may carry it as `serviceurl`,
        # so the claim is found whatever its case.
        service_url = next((v for k, v in claims.items() if k.lower() == "serviceurl"), None)
        if not isinstance(service_url, str) or not activity.service_url or service_url != activity.service_url:
            return Refusal(401, "the token's serviceUrl is not the activity's serviceUrl")
        # Endorsements: the signing key must be endorsed for the activity's channel, else 403 (AUTH_DOC, step 3).
        if activity.channel_id != CHANNEL or endorsed is None or CHANNEL not in endorsed:
            return Refusal(403, f"the token's signing key is not endorsed for the channel '{activity.channel_id}'")
        if not activity.id:
            return Refusal(401, "the activity has no id, so a replay could not be told apart; it is refused")
        now = datetime.fromtimestamp(self.clock(), UTC)
        # An activity id "uniquely identifies the activity on the channel" (the Activity schema, as
        # adapters/teams.py); remembered until its token could no longer be used, in the shared store.
        conversation = activity.conversation.id if activity.conversation else ""
        until = datetime.fromtimestamp(float(claims["exp"]), UTC) + timedelta(seconds=CLOCK_SKEW_S + 60)
        if not replays.remember_once(REPLAY_SCOPE, f"{conversation}/{activity.id}", now=now, until=max(until, now)):
            return Refusal(401, "this activity was already received (the same id); a replay is refused")
        return None

    def _claims(self, authorization: str | None) -> tuple[dict[str, Any], frozenset[str] | None]:
        """Return the verified claims of the bearer token and the channels its signing key is endorsed for."""
        # 1. "The token was sent in the HTTP Authorization header with "Bearer" scheme."
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("send Authorization: Bearer <the Bot Connector's token>")
        # 2. "The token is valid JSON that conforms to the JWT standard"; 6. signed with the algorithm of
        # id_token_signing_alg_values_supported (RS256) "... with a key listed in the OpenID keys document".
        signing = self.keys.get(signing_key_id(token, reader="bot"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                signing.key.key,
                algorithms=[ALGORITHM],
                audience=self.app_id,  # 4. "an "audience" claim with a value equal to the bot's Microsoft App ID"
                issuer=BOT_ISSUER,  # 3.
                leeway=CLOCK_SKEW_S,  # 5. "within its validity period", with the 5 minutes of clock skew
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationError("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError("the token is meant for another bot (aud is not TEAMS_BOT_APP_ID)") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError("the token is not the Bot Connector's (iss)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"the token has no '{exc.claim}' claim") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationError("the token's signature does not verify") from None
        except jwt.PyJWTError:
            raise AuthenticationError("the bearer token is not valid") from None
        return claims, signing.endorsements


# ----- the bot's own token, and the Bot Connector -----------------------------------------------


def _retry_after(response: httpx.Response) -> float | None:
    """Read Retry-After: seconds, or an HTTP date."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _failed(what: str, response: httpx.Response, *, code: str) -> TransientError | PermanentError:
    """Translate an HTTP failure: 429 and 5xx pass (retry later, as Retry-After says); any other is permanent."""
    status = response.status_code
    if status == 429 or status >= 500:
        return TransientError(f"{what} answered {status}", retry_after_s=_retry_after(response), code=f"{code}Busy")
    return PermanentError(f"{what} refused the request ({status})", code=f"{code}Refused")


class BotTokens:
    """The bot's access token for the Bot Connector: client credentials, cached until shortly before it expires (AUTH_DOC, step 1-2)."""

    def __init__(
        self,
        *,
        app_id: str,
        password: str,
        token_url: str,
        http: httpx.Client,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app_id = app_id
        self._password = password
        self.token_url = check_key_url(token_url, "TEAMS_BOT_TOKEN_URL")  # the password goes there: https only
        self._http = http
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._until = float("-inf")
        self.fetches = 0
        register(password)

    def get(self) -> str:
        """Return a token valid for a while yet, asking for a new one when the cached one is due."""
        with self._lock:
            if self._token is not None and self._clock() < self._until:
                return self._token
            self.fetches += 1
            try:
                response = self._http.post(
                    self.token_url,
                    data={
                        "grant_type": "client_credentials",
                        "client_id": self.app_id,
                        "client_secret": self._password,
                        "scope": BOT_SCOPE,
                    },
                )
            except httpx.TransportError as exc:
                raise TransientError(
                    f"the bot's token endpoint did not answer: {type(exc).__name__}", code="BotTokenUnreachable"
                ) from exc
            if response.status_code != 200:
                raise _failed("the bot's token endpoint", response, code="BotToken")
            try:
                answer = TokenResponse.model_validate_json(response.content)
            except ValidationError as exc:
                raise TransientError("the bot's token endpoint answered no token", code="BotTokenBusy") from exc
            register(answer.access_token)
            self._token = answer.access_token
            self._until = self._clock() + max(answer.expires_in - TOKEN_MARGIN_S, answer.expires_in / 2)
            return self._token

    def forget(self) -> None:
        """Drop the cached token (the Bot Connector refused it)."""
        with self._lock:
            self._token = None


class TeamsApprovals:
    """Post approval cards to a Teams channel and update them once decided (an `adapters.approvers.TeamsApprovalPoster`).

    bot-docs, articles/rest-api/bot-framework-rest-connector-api-reference.md: Send to Conversation
    (POST /v3/conversations/{conversationId}/activities, answering the new activity's id) and Update
    Activity (PUT /v3/conversations/{conversationId}/activities/{activityId}), on the tenant's serviceUrl.
    """

    def __init__(self, *, tokens: BotTokens, seal: CardSeal, http: httpx.Client) -> None:
        self.tokens = tokens
        self.seal = seal
        self._http = http

    def announce(self, record: RequestRecord, conversation: str, service_url: str, delivery_id: str) -> ApprovalMessage:
        """Post the approval card; return where it is (conversation and activity id)."""
        url = f"{_base(service_url)}/v3/conversations/{quote(conversation, safe='')}/activities"
        answer = self._send("POST", url, _message(record, self.seal), delivery_id)
        if not answer.id:
            raise PermanentError("the Bot Connector posted the card but named no activity id", code="TeamsNoActivityId")
        return ApprovalMessage(platform="teams", channel=conversation, message_id=answer.id, service_url=service_url)

    def settle(self, record: RequestRecord, message: ApprovalMessage) -> None:
        """Update the card with the outcome and who decided."""
        if not message.service_url:
            raise PermanentError("the posted card has no service URL to update it at", code="TeamsNoServiceUrl")
        url = (
            f"{_base(message.service_url)}/v3/conversations/{quote(message.channel, safe='')}"
            f"/activities/{quote(message.message_id, safe='')}"
        )
        update = _message(record, self.seal).model_copy(update={"id": message.message_id})
        self._send("PUT", url, update, f"{record.id}:approval-settle:{message.message_id}")

    def _send(self, method: str, url: str, message: BotMessage, delivery_id: str) -> ResourceResponse:
        # The bot's token goes only to a Bot Connector URL over TLS (AUTH_DOC: "Do NOT send the token over
        # unsecured channels"); plain http is allowed to loopback alone, for tests and the devhost.
        try:
            check_key_url(url, "the Teams service URL")
        except ValueError as exc:
            raise PermanentError(str(exc), code="TeamsServiceUrl") from exc
        token = self.tokens.get()
        try:
            response = self._http.request(
                method,
                url,
                json=message.model_dump(by_alias=True, exclude_none=True),
                headers={"Authorization": f"Bearer {token}", "X-Vending-Delivery": delivery_id},
            )
        except httpx.TransportError as exc:
            raise TransientError(
                f"the Bot Connector did not answer: {type(exc).__name__}", code="TeamsUnreachable"
            ) from exc
        if response.status_code == 401:
            self.tokens.forget()  # the next try asks for a new token
        if response.status_code >= 300:
            raise _failed("the Bot Connector", response, code="Teams")
        try:
            return ResourceResponse.model_validate_json(response.content or b"{}")
        except ValidationError:
            return ResourceResponse()


def _base(service_url: str) -> str:
    return service_url.rstrip("/")


def _message(record: RequestRecord, seal: CardSeal) -> BotMessage:
    state = record.approval
    assert state is not None
    workspace = record.workspace_name or record.id
    return BotMessage(
        summary=f"{HEADLINES[state.outcome]}: {workspace} ({record.team}, {record.environment})",
        attachments=[Attachment(content=approval_card(record, seal))],
    )


# ----- answering a click ------------------------------------------------------------------------


class Deciding(Protocol):
    """What a click asks of the approvals (`engine.approvals.Approvals`)."""

    def approve(self, request_id: str, *, caller: Caller, door: str, reason: str | None = None) -> Decided:
        """Record a yes."""
        ...

    def deny(self, request_id: str, *, caller: Caller, door: str, reason: str) -> Decided:
        """Record a no, with its reason."""
        ...


class Records(Protocol):
    """Where a clicked card's request is read."""

    def get_request(self, request_id: str) -> RequestRecord | None:
        """Return the request, or None."""
        ...


class ApprovalCardActions:
    """Answer Approve and Deny on an approval card: seal, user, tenant, then the one authorisation function decides."""

    def __init__(self, *, approvals: Deciding, records: Records, policy: Callable[[], Policy], seal: CardSeal) -> None:
        self.approvals = approvals
        self.records = records
        self.policy = policy
        self.seal = seal

    def act(self, activity: BotActivity) -> AdaptiveCardInvokeResponse:
        """Decide the click an `adaptiveCard/action` invoke carries; answer the card that replaces the clicked one."""
        try:
            value = AdaptiveCardInvokeValue.model_validate(activity.value)
            data = CardData.model_validate(value.action.data)
        except ValidationError:
            return _refused("This card is not one of the service's approval cards.")
        verb = value.action.verb or ""
        if not self.seal.opens(data.request_id, data.round, verb, data.seal):
            log.warning("a Teams card action with a seal that does not open (request %s)", data.request_id)
            return _refused("This card's buttons were not made by the service for this request; nothing was done.")
        record = self.records.get_request(data.request_id)
        if record is None or record.approval is None:
            return _refused(f"There is no request {data.request_id} waiting for approval.")
        if record.approval.round != data.round:
            return self._card(record, "This card is of an earlier approval of this request; decide on the current one.")
        policy = self.policy()
        tenant = activity.tenant
        if tenant is None or tenant.lower() != str(policy.tenant_id):
            return _refused("This click comes from another Microsoft Entra tenant than the service's.")
        sender = activity.from_.aad_object_id if activity.from_ else None
        user = policy.chat_user(teams=sender) if sender else None
        if user is None:
            return _refused(
                "I do not know you yet: ask the platform team to add your Teams user (your Entra object id) to the "
                "policy's chat_users."
            )
        caller = chat_caller(user, tenant=policy.tenant_id)
        reason = (data.reason or "").strip() or None
        try:
            if verb == "approve":
                decided = self.approvals.approve(record.id, caller=caller, door=DOOR, reason=reason)
            else:
                decided = self.approvals.deny(record.id, caller=caller, door=DOOR, reason=reason or "")
        except InvalidInputError as exc:
            return self._card(record, "; ".join(p.message for p in exc.problems) or str(exc))
        except (ForbiddenError, NotFoundError, ConflictError) as exc:
            return self._card(record, f"Not done: {exc}")
        except TransientError as exc:
            log.warning("a Teams approval click on %s was not recorded: %s", record.id, exc)
            return self._card(record, "The service is busy; nothing was recorded. Try again in a moment.")
        return AdaptiveCardInvokeResponse(value=approval_card(decided.record, self.seal, notice=_did(decided, verb)))

    def _card(self, record: RequestRecord, notice: str) -> AdaptiveCardInvokeResponse:
        fresh = self.records.get_request(record.id) or record
        return AdaptiveCardInvokeResponse(value=approval_card(fresh, self.seal, notice=notice))


def _did(decided: Decided, verb: str) -> str:
    if not decided.recorded:
        return f"You had already {'approved' if verb == 'approve' else 'denied'} this request."
    if decided.outcome == "pending":
        needed = ", ".join(f"{n} more for {rule}" for rule, n in decided.still_needed)
        return f"Your approval is recorded; still needed: {needed}."
    return f"You {'approved' if verb == 'approve' else 'denied'} this request."


def _refused(reason: str) -> AdaptiveCardInvokeResponse:
    return AdaptiveCardInvokeResponse(value=refusal_card(reason))


def not_handled(name: str | None) -> dict[str, Any]:
    """Return the invoke response for an invoke this bot does not handle (an error, as the response format allows)."""
    return AdaptiveCardInvokeResponse(
        statusCode=400, type=ERROR, value={"code": "BadRequest", "message": f"this bot does not handle '{name}'"}
    ).body()


# ----- the parts together -----------------------------------------------------------------------


class TeamsBot:
    """The bot's verifier, its token, the seal of its cards and the poster of approval cards, sharing one HTTP client."""

    def __init__(
        self,
        *,
        app_id: str,
        password: str,
        openid_url: str,
        token_url: str,
        card_secret: bytes,
        http: httpx.Client | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.http = http or httpx.Client(timeout=timeout_s, follow_redirects=False)
        self.verifier = BotFrameworkVerifier(app_id=app_id, openid_url=openid_url, http=self.http)
        self.tokens = BotTokens(app_id=app_id, password=password, token_url=token_url, http=self.http)
        self.seal = CardSeal(card_secret)
        self.approvals = TeamsApprovals(tokens=self.tokens, seal=self.seal, http=self.http)

    def actions(self, *, approvals: Deciding, records: Records, policy: Callable[[], Policy]) -> ApprovalCardActions:
        """Return what answers the approval cards' buttons."""
        return ApprovalCardActions(approvals=approvals, records=records, policy=policy, seal=self.seal)


__all__ = [
    "INVOKE",
    "AdaptiveCardInvokeResponse",
    "ApprovalCardActions",
    "BotActivity",
    "BotFrameworkVerifier",
    "BotTokens",
    "CardSeal",
    "Refusal",
    "TeamsApprovals",
    "TeamsBot",
    "approval_card",
    "not_handled",
    "refusal_card",
]
