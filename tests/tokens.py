"""A test's own token issuer: its RSA keys, its discovery document and key set served on loopback, and tokens it signs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
APP_ID_URI = "api://workspace-vending-test"
ALICE = "690222be-ff1a-4d56-abd1-7e4f7d38e474"
FRAUD_GROUP = "3a8e5c1f-2d47-4b96-8e0a-6f1c2d3b4a51"

_KEYS: dict[str, rsa.RSAPrivateKey] = {}


def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """One RSA key per name for the whole session (generating keys is slow)."""
    if name not in _KEYS:
        _KEYS[name] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _KEYS[name]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    return {"kty": "RSA", "use": "sig", "kid": kid, "n": b64url(n), "e": b64url(e), **extra}


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS put together by hand, for tokens no library would sign (alg none, HS256 with a public key)."""
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(payload).encode())
    return f"{head}.{body}.{b64url(signature)}"


def hs256_with(secret: bytes, header: dict[str, Any], payload: dict[str, Any]) -> str:
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(payload).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


@dataclass
class TestIssuer:
    """An Entra-like issuer at `<base>/<tenant>/v2.0` whose discovery and keys a test serves and changes."""

    __test__ = False  # not a test class

    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=lambda: {"key-1": rsa_key("key-1")})
    base: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    fail_with: int | None = None  # answer every request with this status
    key_issuer: str | None = None  # the `issuer` property Entra puts on each key, when set
    document_issuer: str | None = None  # the issuer the discovery document names, when not its own

    @property
    def issuer(self) -> str:
        return f"{self.base}/{TENANT}/v2.0"

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get(f"/{TENANT}/v2.0/.well-known/openid-configuration")
        def discovery() -> Response:
            self.hits["discovery"] += 1
            if self.fail_with:
                return Response(status_code=self.fail_with)
            return JSONResponse(
                {
                    "issuer": self.document_issuer or self.issuer,
                    "jwks_uri": f"{self.base}/{TENANT}/discovery/v2.0/keys",
                    "token_endpoint": f"{self.base}/{TENANT}/oauth2/v2.0/token",
                    "id_token_signing_alg_values_supported": ["RS256"],
                }
            )

        @app.get(f"/{TENANT}/discovery/v2.0/keys")
        def keys() -> Response:
            self.hits["keys"] += 1
            if self.fail_with:
                return Response(status_code=self.fail_with)
            extra = {"issuer": self.key_issuer} if self.key_issuer else {}
            return JSONResponse({"keys": [public_jwk(k, kid, **extra) for kid, k in self.keys.items()]})

        return app

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "oid": ALICE,
            "tid": TENANT,
            "sub": "HKZpfaHyWadeOouYlitjrI-KffTm222X5rrV3xDqfKQ",
            "name": "Alice Fraser",
            "preferred_username": "alice@contoso.example",
            "roles": ["Workspaces.Request"],
            "groups": [FRAUD_GROUP],
            "ver": "2.0",
            "uti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, *, kid: str = "key-1", key: rsa.RSAPrivateKey | None = None, **claims: Any) -> str:
        signing = key or self.keys.get(kid) or rsa_key(kid)
        return jwt.encode(self.claims(**claims), signing, algorithm="RS256", headers={"kid": kid})


class LateApp:
    """An ASGI app whose real app is set once the server's URL is known (issuers need their own URL)."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.app is not None, "set LateApp.app before sending requests"
        await self.app(scope, receive, send)


class FakeClock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
