"""Microsoft Teams: outgoing-webhook verification, Adaptive Card replies, and Workflows posts.

An outgoing webhook signs each request with HMAC-SHA256 over the raw body, keyed with the base64
security token Teams issued, and sends `Authorization: HMAC <base64 signature>`; it is compared in
constant time. Teams calls synchronously and waits five seconds for the answer (Microsoft Learn,
"Create Outgoing Webhooks": msteams-platform/webhooks-and-connectors/how-to/add-outgoing-webhook.md).

The body is a Bot Framework activity ("Your service receives messages in a standard Azure bot
service messaging schema", ibid.). Two of its fields make a replay window, and both are inside the
signed body, so they cannot be changed without breaking the signature (Bot Framework Activity
schema, specs/botframework-activity/botframework-activity.md):
- `timestamp`: "the exact UTC time when the activity occurred", recorded by the channel, ISO 8601
  with `Z` (A2040, A2043). The spec warns bots off rejecting activities by timestamp because they
  may arrive out of order (A2042); an outgoing webhook's request is made while Teams waits five
  seconds for its answer, so one older than the window is not a delivery but a replay.
- `id`: "uniquely identifies the activity on the channel", designed for de-duplication (A2030,
  A2033). It is remembered, with the conversation id, in the store for the window (`remember_once`):
  every instance refuses it again, also after a restart.

Results are posted to a Teams Workflows webhook URL (the Office 365 connectors are retired) as a
message with an Adaptive Card attachment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine.chat import USAGE, Replays, Reply
from models.errors import PermanentError, TransientError
from models.records import ChatConversation, SlackConversation, TeamsConversation
from models.redact import register

if TYPE_CHECKING:
    import httpx

CARD = "application/vnd.microsoft.card.adaptive"
MAX_AGE_S = 300  # the window either side of now; Teams itself waits five seconds for an answer
REPLAY_MARGIN_S = 60  # remembered past the window: instances' clocks differ (see adapters/slack.py)
REPLAY_SCOPE = "teams-activity"
_MENTION = re.compile(r"<at>.*?</at>", re.S)
_TAGS = re.compile(r"<[^>]+>")


def verify(secret_b64: str, body: bytes, authorization: str | None) -> str | None:
    """Return why a Teams outgoing-webhook request is refused, or None when its HMAC matches."""
    if not authorization or not authorization.startswith("HMAC "):
        return "the request is not signed (Authorization: HMAC <signature> is required)."
    try:
        key = base64.b64decode(secret_b64, validate=True)
        given = base64.b64decode(authorization[5:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return "the signature is not base64."
    expected = hmac.new(key, body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, given):
        return "the signature does not match the body; check TEAMS_OUTGOING_WEBHOOK_SECRET."
    return None


class TeamsVerifier:
    """Check that a request comes from Teams: the HMAC, the activity's age, and its id not seen before."""

    def __init__(self, secret_b64: str, *, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret_b64
        self.clock = clock

    def refusal(self, body: bytes, authorization: str | None, *, replays: Replays) -> str | None:
        """Return why the request is refused, or None when it is genuine and new (its id is then remembered)."""
        why = verify(self._secret, body, authorization)
        if why:
            return why
        try:
            activity = json.loads(body)
        except ValueError:
            return "the body is not a Teams activity (not JSON)."
        if not isinstance(activity, dict):
            return "the body is not a Teams activity (not a JSON object)."
        activity_id = activity.get("id")
        if not isinstance(activity_id, str) or not activity_id:
            return "the activity has no id, so a replay could not be told apart; it is refused."
        occurred = _timestamp(activity.get("timestamp"))
        if occurred is None:
            return "the activity has no UTC timestamp (ISO 8601), so its age is unknown; it is refused."
        now = datetime.fromtimestamp(self.clock(), UTC)
        if now - occurred > timedelta(seconds=MAX_AGE_S):
            return "the activity is older than five minutes; it may be a replay."
        if occurred - now > timedelta(seconds=MAX_AGE_S):
            return "the activity's timestamp is more than five minutes ahead; check the service's clock."
        thread = activity.get("conversation")
        conversation = thread.get("id") if isinstance(thread, dict) else None
        first = replays.remember_once(
            REPLAY_SCOPE,
            f"{conversation or ''}/{activity_id}",
            now=now,
            until=occurred + timedelta(seconds=MAX_AGE_S + REPLAY_MARGIN_S),
        )
        if not first:
            return "this activity was already received (the same id); a replay is refused."
        return None


def _timestamp(value: object) -> datetime | None:
    """Read an activity's `timestamp` (e.g. 2026-01-01T09:18:44.2114686Z); None unless it is a zoned ISO 8601 time."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def command_text(activity: dict[str, Any]) -> str:
    """Return the command in a Teams message: the bot's @mention, HTML and entities removed."""
    text = str(activity.get("text") or "")
    text = _MENTION.sub(" ", text)
    text = _TAGS.sub(" ", text.replace("<br>", "\n"))
    return " ".join(html.unescape(text).replace("\xa0", " ").split())


def card(reply: Reply) -> dict[str, Any]:
    """Render a reply as an Adaptive Card."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": reply.title,
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
            **({} if reply.ok else {"color": "Attention"}),
        }
    ]
    body += [{"type": "TextBlock", "text": line, "wrap": True} for line in reply.lines]
    if reply.fields:
        body.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in reply.fields]})
    body += [
        {"type": "TextBlock", "text": f"{p.field}: {p.message}", "wrap": True, "color": "Attention"}
        for p in reply.problems
    ]
    if reply.usage:
        body.append({"type": "TextBlock", "text": "Usage (mention me, then the command):", "weight": "Bolder"})
        body.append({"type": "TextBlock", "text": USAGE, "wrap": True, "fontType": "Monospace"})
    out: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.4",
        "body": body,
    }
    if reply.link:
        out["actions"] = [{"type": "Action.OpenUrl", "title": reply.link[0], "url": reply.link[1]}]
    return out


def message(reply: Reply) -> dict[str, Any]:
    """Build a Teams message carrying the reply's card (the outgoing-webhook answer and the Workflows post)."""
    return {
        "type": "message",
        "text": reply.title,
        "attachments": [{"contentType": CARD, "contentUrl": None, "content": card(reply)}],
    }


class TeamsPoster:
    """Post a reply to a Teams Workflows webhook URL."""

    def __init__(
        self, *, workflows_url: str | None, timeout_s: float = 10.0, client: httpx.Client | None = None
    ) -> None:
        self.workflows_url = workflows_url
        self.timeout_s = timeout_s
        self._client = client

    @property
    def client(self) -> httpx.Client:
        """The HTTP client, made on first use (httpx stays off the HTTP path's imports)."""
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self.timeout_s, follow_redirects=False)
        return self._client

    def post(self, reply_to: TeamsConversation, reply: Reply, delivery_id: str) -> None:
        """Post the card; raise Transient/Permanent."""
        url = self.workflows_url
        if not url:
            raise PermanentError(
                "there is no Teams Workflows webhook URL to post results to; set TEAMS_WORKFLOWS_URL.",
                code="TeamsNotConfigured",
            )
        register(url)
        import httpx

        try:
            resp = self.client.post(url, json=message(reply), headers={"X-Vending-Delivery": delivery_id})
        except httpx.TransportError as exc:
            raise TransientError(f"Teams did not answer: {type(exc).__name__}", code="TeamsUnreachable") from exc
        if resp.status_code < 300:
            return
        if resp.status_code == 429 or resp.status_code >= 500:
            raise TransientError(f"Teams answered {resp.status_code}", code="TeamsUnavailable")
        raise PermanentError(
            f"Teams refused the card ({resp.status_code}); check TEAMS_WORKFLOWS_URL and the flow.", code="TeamsRefused"
        )


class ChatPosters:
    """Post to whichever chat a request came from."""

    def __init__(self, *, slack: Any, teams: TeamsPoster) -> None:
        self.slack = slack
        self.teams = teams

    def post(self, reply_to: ChatConversation, reply: Any, delivery_id: str) -> None:
        """Dispatch on the conversation's kind."""
        if isinstance(reply_to, SlackConversation):
            self.slack.post(reply_to, reply, delivery_id)
        else:
            self.teams.post(reply_to, reply, delivery_id)
