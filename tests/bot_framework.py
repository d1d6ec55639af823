"""A loopback Bot Framework for tests: the OpenID metadata and keys, the token endpoint, and a Bot Connector.

The shapes are bot-docs' (articles/rest-api/bot-framework-rest-connector-authentication.md and
bot-framework-rest-connector-api-reference.md): the metadata names the keys, each key lists its
endorsements, the token endpoint answers client credentials, and the connector answers a posted
activity with its id. Tokens Teams would send are signed here with a test RSA key.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.capture import serving
from tests.tokens import public_jwk, rsa_key

APP_ID = "b1c2d3e4-0f1a-4b2c-9d3e-4f5a6b7c8d9e"
APP_PASSWORD = "bot-password-for-tests-0123456789"
ISSUER = "https://api.botframework.com"
CONVERSATION = "19:approvers@thread.tacv2"
KID = "bf-key-1"


@dataclass
class Seen:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeBotFramework:
    """The Bot Framework's endpoints on one loopback server; what was asked is kept in `seen`."""

    url: str = ""
    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=lambda: {KID: rsa_key(KID)})
    endorsements: list[str] = field(default_factory=lambda: ["msteams"])
    seen: list[Seen] = field(default_factory=list)
    statuses: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # connector answers to give first
    token_lifetime_s: int = 3600
    lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 0

    @property
    def service_url(self) -> str:
        """The tenant's Bot Connector, as an activity's serviceUrl names it (with its trailing slash)."""
        return f"{self.url}/connector/"

    @property
    def openid_url(self) -> str:
        return f"{self.url}/v1/.well-known/openidconfiguration"

    @property
    def token_url(self) -> str:
        return f"{self.url}/botframework.com/oauth2/v2.0/token"

    def requests(self, method: str, prefix: str = "/connector/") -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.method == method and s.path.startswith(prefix)]

    def posted_cards(self) -> list[dict[str, Any]]:
        """The cards posted to the connector (Send to Conversation)."""
        return [s.body["attachments"][0]["content"] for s in self.requests("POST")]

    def updated_cards(self) -> list[dict[str, Any]]:
        """The cards put in place of posted ones (Update Activity)."""
        return [s.body["attachments"][0]["content"] for s in self.requests("PUT")]

    def env(self) -> dict[str, str]:
        """The settings that point the service's bot here."""
        return {
            "TEAMS_BOT_APP_ID": APP_ID,
            "TEAMS_BOT_APP_PASSWORD": APP_PASSWORD,
            "TEAMS_BOT_OPENID_URL": self.openid_url,
            "TEAMS_BOT_TOKEN_URL": self.token_url,
        }

    # ----- tokens Teams would send -----

    def token(
        self,
        *,
        service_url: str | None = None,
        kid: str = KID,
        key: rsa.RSAPrivateKey | None = None,
        **overrides: Any,
    ) -> str:
        """A Bot Connector token for the bot, signed with the published key unless `key` says otherwise."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": APP_ID,
            "nbf": now - 10,
            "exp": now + 3600,
            "serviceurl": service_url or self.service_url,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, key or self.keys[kid], algorithm="RS256", headers={"kid": kid})


def invoke(
    *,
    service_url: str,
    card_action: dict[str, Any],
    user: str,
    tenant: str,
    reason: str | None = None,
    activity_id: str | None = None,
    verb: str | None = None,
) -> dict[str, Any]:
    """An `adaptiveCard/action` invoke as Teams sends it when a card's Action.Execute is clicked."""
    data = dict(card_action["data"])
    if reason is not None:
        data["reason"] = reason  # Action.Execute merges the card's inputs into its data
    return {
        "type": "invoke",
        "name": "adaptiveCard/action",
        "id": activity_id or f"f:{uuid.uuid4().hex}",
        "timestamp": "2026-12-02T10:00:00.000Z",
        "channelId": "msteams",
        "serviceUrl": service_url,
        "from": {"id": "29:1abc", "name": "Someone", "aadObjectId": user},
        "recipient": {"id": f"28:{APP_ID}", "name": "Vending"},
        "conversation": {"id": CONVERSATION, "conversationType": "channel", "tenantId": tenant},
        "channelData": {"tenant": {"id": tenant}},
        "value": {
            "action": {"type": "Action.Execute", "verb": verb or card_action["verb"], "data": data},
            "trigger": "manual",
        },
    }


def action(card: dict[str, Any], verb: str) -> dict[str, Any]:
    """The card's Action.Execute with this verb."""
    found: dict[str, Any] = next(a for a in card["actions"] if a.get("verb") == verb)
    return found


@contextmanager
def bot_framework() -> Iterator[FakeBotFramework]:
    """Serve a fake Bot Framework on loopback while the block runs."""
    fake = FakeBotFramework()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> Any:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            ctype = self.headers.get("content-type", "")
            if "x-www-form-urlencoded" in ctype:
                body: Any = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            else:
                body = json.loads(raw) if raw else None
            with fake.lock:
                fake.seen.append(Seen(self.command, unquote(self.path), dict(self.headers), body))
            return body

        def do_GET(self) -> None:
            self._record()
            if self.path == "/v1/.well-known/openidconfiguration":
                self._answer(
                    200,
                    {
                        "issuer": ISSUER,
                        "authorization_endpoint": "https://invalid.botframework.com",
                        "jwks_uri": f"{fake.url}/v1/.well-known/keys",
                        "id_token_signing_alg_values_supported": ["RS256"],
                        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                    },
                )
            elif self.path == "/v1/.well-known/keys":
                keys = [public_jwk(k, kid, endorsements=fake.endorsements) for kid, k in fake.keys.items()]
                self._answer(200, {"keys": keys})
            else:
                self._answer(404)

        def do_POST(self) -> None:
            body = self._record()
            if self.path.startswith("/botframework.com/"):
                ok = (
                    isinstance(body, dict)
                    and body.get("grant_type") == "client_credentials"
                    and body.get("client_id") == APP_ID
                    and body.get("client_secret") == APP_PASSWORD
                    and body.get("scope") == "https://api.botframework.com/.default"
                )
                if not ok:
                    self._answer(401, {"error": "invalid_client"})
                    return
                self._answer(
                    200,
                    {
                        "token_type": "Bearer",
                        "expires_in": fake.token_lifetime_s,
                        "ext_expires_in": fake.token_lifetime_s,
                        "access_token": f"bot-token-{uuid.uuid4().hex}",
                    },
                )
                return
            self._connector()

        def do_PUT(self) -> None:
            self._record()
            self._connector()

        def _connector(self) -> None:
            with fake.lock:
                queued = fake.statuses.pop(0) if fake.statuses else None
                fake._next += 1
                number = fake._next
            if queued is not None:
                self._answer(queued[0], {"error": {"code": "Busy", "message": "queued answer"}}, queued[1])
                return
            if not self.headers.get("authorization", "").startswith("Bearer bot-token-"):
                self._answer(401, {"error": {"code": "Unauthorized", "message": "no bot token"}})
                return
            if self.command == "PUT":
                self._answer(200, {"id": self.path.rsplit("/", 1)[-1]})
            else:
                self._answer(201, {"id": f"1700000000{number:03d}"})

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as url:
        fake.url = url
        yield fake
