"""Microsoft Teams: outgoing-webhook verification, Adaptive Card replies, and Workflows posts.

An outgoing webhook signs each request with HMAC-SHA256 over the raw body, keyed with the base64
security token Teams issued, and sends `Authorization: HMAC <base64 signature>`; it is compared in
constant time. Results are posted to a Teams Workflows webhook URL (the Office 365 connectors are
retired) as a message with an Adaptive Card attachment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import re
from typing import TYPE_CHECKING, Any

from engine.chat import USAGE, Reply
from models.errors import PermanentError, TransientError
from models.redact import register

if TYPE_CHECKING:
    import httpx

CARD = "application/vnd.microsoft.card.adaptive"
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

    def post(self, reply_to: dict[str, Any], reply: Reply, delivery_id: str) -> None:
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

    def post(self, reply_to: dict[str, Any], reply: Any, delivery_id: str) -> None:
        """Dispatch on the conversation's kind."""
        kind = reply_to.get("kind")
        if kind == "slack":
            self.slack.post(reply_to, reply, delivery_id)
        elif kind == "teams":
            self.teams.post(reply_to, reply, delivery_id)
        else:
            raise PermanentError(f"unknown chat kind {kind!r} to reply to", code="ChatUnknown")
