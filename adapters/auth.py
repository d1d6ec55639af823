"""Authenticate a caller from request headers: an Entra (or embedded issuer) bearer token, or Easy Auth's principal.

One entry point, `Authenticator.authenticate(headers) -> Caller`. Everything that can go wrong is
translated here: a refused credential is `AuthenticationError` (401, with a `WWW-Authenticate`
value), an issuer whose discovery document or keys cannot be fetched is `AuthUnavailableError`
(a `TransientError`: 503, retry later). PyJWT and httpx errors never leave this module.

Bearer tokens (modes entra and local, and easyauth when Easy Auth is not in front): RS256 only, the
key named by `kid` from the issuer's key set, issuer, audience (the application ID URI or the
client id), `exp` and `nbf` required, `iat` checked when present, a small leeway; `oid` and `tid`
required and the tenant must be the configured one. Microsoft's validation rules:
https://learn.microsoft.com/entra/identity-platform/access-tokens#validate-tokens

Easy Auth (mode easyauth): App Service Authentication validates the token in front of the app and
passes the claims as `X-MS-CLIENT-PRINCIPAL`, base64 JSON `{auth_typ, name_typ, role_typ, claims:
[{typ, val}]}`; App Service does not let external requests set that header, so it is trusted only
when App Service says Easy Auth is on (`WEBSITE_AUTH_ENABLED=True`). Otherwise it is ignored and a
bearer token is required.
https://learn.microsoft.com/azure/app-service/configure-authentication-user-identities#decode-the-client-principal-header

The methods are synchronous (httpx.Client): call `authenticate` from a sync FastAPI dependency (run
in the thread pool) or a thread, never on the event loop, since in local mode the keys come from the
same server.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.identity import (
    AccessTokenClaims,
    AuthenticationError,
    AuthMethod,
    AuthSettings,
    AuthUnavailableError,
    Caller,
    JsonWebKey,
    JsonWebKeySet,
    OpenIdConfiguration,
    check_key_url,
    is_object_id,
)

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
MAX_TOKEN_CHARS = 16 * 1024  # a token with 200 groups is about 10 kB; anything far larger is not Entra's
MAX_DOCUMENT_BYTES = 1024 * 1024  # a discovery document or key set larger than this is refused, not read whole
PRINCIPAL_HEADER = "x-ms-client-principal"

# Claim types in X-MS-CLIENT-PRINCIPAL after App Service's default claims mapping. The long forms are
# the WS-Federation names Microsoft's own parsers read (Microsoft.Identity.Web ClaimConstants);
# roles also come as "roles", and the principal's `role_typ` names the type it used.
OBJECT_ID_TYPES = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
TENANT_ID_TYPES = ("http://schemas.microsoft.com/identity/claims/tenantid", "tid")
ROLE_TYPES = ("roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
GROUP_TYPES = ("groups", "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups")
# Group overage as a claim: `_claim_names` (JWT), `hasgroups` (implicit flow), `groups.link` (SAML).
# https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference#groups-overage-claim
OVERAGE_TYPES = ("hasgroups", "http://schemas.microsoft.com/claims/groups.link")
NAME_TYPES = ("name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")

M = TypeVar("M", bound=BaseModel)


class _PrincipalClaim(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    typ: str
    val: str


class _ClientPrincipal(BaseModel):
    """The decoded X-MS-CLIENT-PRINCIPAL header."""

    model_config = ConfigDict(extra="ignore")

    auth_typ: str
    name_typ: str | None = None
    role_typ: str | None = None
    claims: list[_PrincipalClaim] = Field(default_factory=list)

    def values(self, *types: str) -> list[str]:
        wanted = {t.lower() for t in types if t}
        return [c.val for c in self.claims if c.typ.lower() in wanted]

    def first(self, *types: str) -> str | None:
        found = self.values(*types)
        return found[0] if found else None


@dataclass(frozen=True)
class SigningKey:
    """One public key of the issuer, and the issuer it is published for (when the key set says)."""

    key: jwt.PyJWK
    issuer: str | None  # Entra's v2.0 key sets say which issuer may use each key
    endorsements: frozenset[str] | None = None  # the Bot Framework's key sets say which channels each key signs for


class KeySource(Protocol):
    """Where an issuer's keys are found and how often they are fetched (`AuthSettings`, or the Teams bot's)."""

    @property
    def issuer(self) -> str | None:
        """The issuer the discovery document must name."""
        ...

    @property
    def jwks_url(self) -> str | None:
        """The key set, when known without discovery."""
        ...

    @property
    def discovery_url(self) -> str | None:
        """The OpenID discovery document that names the key set."""
        ...

    @property
    def jwks_refresh_s(self) -> float:
        """How long fetched keys are used before a refresh."""
        ...

    @property
    def jwks_refetch_min_s(self) -> float:
        """At most one fetch per this interval for tokens naming an unknown key."""
        ...

    @property
    def fetch_retry_s(self) -> float:
        """After a failed fetch, how long before trying again."""
        ...


class SigningKeys:
    """The issuer's public keys: discovered, fetched over HTTP(S), cached, refreshed with limits.

    Keys are used for `jwks_refresh_s`, then fetched again. A token naming an unknown `kid` causes
    one fetch (the issuer may have rolled its keys), at most one per `jwks_refetch_min_s`, so a flood
    of made-up key ids cannot make the service fetch constantly. After a failed fetch the next try
    waits `fetch_retry_s`; keys fetched before keep being used meanwhile.
    """

    def __init__(self, settings: KeySource, *, http: httpx.Client, clock: Callable[[], float]) -> None:
        self._settings = settings
        self._http = http
        self._clock = clock
        self._lock = threading.Lock()
        self._jwks_url = settings.jwks_url
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at: float | None = None
        self._refetched_at = float("-inf")  # the last fetch made for an unknown kid
        self._retry_at = float("-inf")  # after a failed fetch, no other before this
        self.fetches = 0  # key set fetches attempted, for the operator's view and tests

    def get(self, kid: str) -> SigningKey:
        """Return the key named `kid`, fetching the key set when it is due or the key is unknown."""
        s = self._settings
        with self._lock:
            now = self._clock()
            if now < self._retry_at:
                if not self._keys:
                    raise AuthUnavailableError(
                        "the issuer's signing keys could not be fetched; try again shortly",
                        retry_after_s=max(1.0, self._retry_at - now),
                    )
            elif self._fetched_at is None or now - self._fetched_at >= s.jwks_refresh_s:
                try:
                    self._fetch(now)
                except AuthUnavailableError:
                    if kid not in self._keys:
                        raise
                    log.warning("the signing keys could not be refreshed; using those fetched before")
            elif kid not in self._keys and now - self._refetched_at >= s.jwks_refetch_min_s:
                self._refetched_at = now
                self._fetch(now)
            found = self._keys.get(kid)
        if found is None:
            raise AuthenticationError("the token is signed with a key this issuer does not publish")
        return found

    def _fetch(self, now: float) -> None:
        self.fetches += 1
        self._retry_at = now + self._settings.fetch_retry_s
        url = self._jwks_url or self._discover()
        keys = _usable_keys(self._get(url, JsonWebKeySet, "the signing key set"))
        if not keys:
            raise AuthUnavailableError(f"the key set at {_host(url)} holds no RS256 signing key")
        self._keys = keys
        self._jwks_url = url
        self._fetched_at = now
        self._retry_at = float("-inf")
        log.info("fetched %d signing keys from %s", len(keys), _host(url))

    def _discover(self) -> str:
        url = self._settings.discovery_url
        assert url is not None, "the issuer is checked when the authenticator is built"
        doc = self._get(url, OpenIdConfiguration, "the OpenID discovery document")
        # OpenID Connect Discovery 1.0 section 4.3: the issuer in the document is the one asked for.
        if doc.issuer.rstrip("/") != (self._settings.issuer or "").rstrip("/"):
            raise AuthUnavailableError(f"the discovery document at {_host(url)} names another issuer")
        try:
            return check_key_url(doc.jwks_uri, "the discovered jwks_uri")
        except ValueError as exc:
            raise AuthUnavailableError(str(exc)) from exc

    def _get(self, url: str, model: type[M], what: str) -> M:
        body = bytearray()
        try:
            with self._http.stream("GET", url, headers={"Accept": "application/json"}) as resp:
                if resp.status_code != 200:
                    raise AuthUnavailableError(f"{what} at {_host(url)} answered HTTP {resp.status_code}")
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise AuthUnavailableError(f"{what} at {_host(url)} is larger than 1 MiB")
        except httpx.HTTPError as exc:
            raise AuthUnavailableError(f"cannot fetch {what} from {_host(url)}: {type(exc).__name__}") from exc
        try:
            return model.model_validate_json(bytes(body))
        except ValidationError as exc:
            raise AuthUnavailableError(f"{what} at {_host(url)} is not valid JSON of the expected shape") from exc


def signing_key_id(token: str, *, reader: str) -> str:
    """Return the `kid` of a compact JWS signed with RS256, or refuse it (before any key is fetched).

    `reader` names who refuses ("API", "bot") in the refusal of header extensions.
    """
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise AuthenticationError("the bearer token is not a signed JWT")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthenticationError("the bearer token is not a signed JWT") from None
    if header.get("alg") != ALGORITHM:
        raise AuthenticationError("the token must be signed with RS256")
    if "crit" in header:
        # RFC 7515 section 4.1.11: extensions that must be understood; Entra's and the Bot Connector's carry none.
        raise AuthenticationError(f"the token asks for header extensions this {reader} does not support")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise AuthenticationError("the token does not name its signing key (kid)")
    return kid


def _usable_keys(key_set: JsonWebKeySet) -> dict[str, SigningKey]:
    keys: dict[str, SigningKey] = {}
    for jwk in key_set.keys:
        if not _signs_rs256(jwk):
            continue
        assert jwk.kid is not None
        try:
            key = jwt.PyJWK.from_dict(jwk.model_dump(exclude_none=True), algorithm=ALGORITHM)
        except jwt.PyJWTError:
            log.warning("skipped an RSA key that cannot be loaded (kid %s)", jwk.kid)
            continue
        endorsed = frozenset(jwk.endorsements) if jwk.endorsements is not None else None
        keys[jwk.kid] = SigningKey(key=key, issuer=jwk.issuer, endorsements=endorsed)
    return keys


def _signs_rs256(jwk: JsonWebKey) -> bool:
    return (
        jwk.kty == "RSA"
        and bool(jwk.kid)
        and jwk.use in (None, "sig")
        and jwk.alg in (None, ALGORITHM)
        and bool(jwk.n and jwk.e)
    )


def _host(url: str) -> str:
    return httpx.URL(url).host or url


class Authenticator:
    """Say who is calling, from the request's headers, or refuse."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.tenant_id is None or settings.issuer is None or not settings.audiences:
            raise ValueError(
                "the authenticator needs a tenant, an issuer and an audience; in local mode build it "
                "from LocalIssuer.validation_settings"
            )
        check_key_url(settings.issuer, "the issuer")
        if settings.jwks_url:
            check_key_url(settings.jwks_url, "the key set URL")
        self.settings = settings
        self.keys = SigningKeys(
            settings,
            http=http or httpx.Client(timeout=settings.http_timeout_s, follow_redirects=False),
            clock=clock,
        )

    @property
    def trusts_principal_header(self) -> bool:
        """Say whether X-MS-CLIENT-PRINCIPAL is read: mode easyauth, and App Service says Easy Auth is on."""
        return self.settings.mode == "easyauth" and self.settings.website_auth_enabled

    def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """Return the caller the headers prove, or raise AuthenticationError (401) or AuthUnavailableError (503)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        principal = lowered.get(PRINCIPAL_HEADER)
        if principal and self.trusts_principal_header:
            return self._from_principal(principal)
        # Without Easy Auth in front, anyone can send the principal header: it is not read at all.
        return self._from_bearer(lowered.get("authorization"))

    def authenticate_as_of(self, authorization: str | None, when: datetime) -> Caller:
        """Return the caller a bearer token proved at `when`: every check as usual, the times against `when`.

        For a message an operator replays after its sender's token expired: the token must have been
        valid when the bus took the message in (signature, issuer, audience and tenant checked now,
        against the issuer's current keys; `exp`, `nbf` and `iat` against `when`, with the leeway).
        Never used for a caller at the door.
        """
        return self._from_bearer(authorization, when=when)

    def _from_bearer(self, authorization: str | None, *, when: datetime | None = None) -> Caller:
        if not authorization or not authorization.strip():
            raise AuthenticationError(
                "sign in: send Authorization: Bearer <access token> (locally: python -m cli login <user>)",
                error=None,
            )
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer":
            raise AuthenticationError("only Bearer tokens are accepted", error=None)
        if not token:
            raise AuthenticationError("the bearer token is not a signed JWT")
        signing = self.keys.get(signing_key_id(token, reader="API"))
        claims = self._verified_claims(token, signing.key, when=when)
        if signing.issuer is not None and signing.issuer.replace("{tenantid}", claims.tid or "") != claims.iss:
            # Entra's rule for keys that name their issuer (access-tokens#validate-the-signing-key-issuer).
            raise AuthenticationError("the token's issuer may not use this signing key")
        return self._caller(
            oid=claims.oid,
            tid=claims.tid,
            name=claims.name,
            username=claims.preferred_username,
            roles=claims.roles,
            groups=claims.groups,
            overage=claims.groups_overage,
            auth="local" if self.settings.mode == "local" else "entra",
        )

    def _verified_claims(self, token: str, key: jwt.PyJWK, *, when: datetime | None = None) -> AccessTokenClaims:
        s = self.settings
        timed = when is None  # with `when`, the times are checked below against it instead of now
        try:
            payload = jwt.decode(
                token,
                key.key,
                algorithms=[ALGORITHM],
                audience=sorted(s.audiences),
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={
                    "require": ["exp", "nbf", "iss", "aud"],
                    "verify_exp": timed,
                    "verify_nbf": timed,
                    "verify_iat": timed,
                },
            )
            if when is not None:
                _valid_at(payload, when.timestamp(), s.leeway_s)
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("the token has expired; get a new one") from None
        except jwt.ImmatureSignatureError:
            raise AuthenticationError("the token is not valid yet (nbf or iat is in the future)") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError("the token is meant for another audience than this API") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError("the token comes from another issuer than this API trusts") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"the token has no '{exc.claim}' claim") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationError("the token's signature does not verify") from None
        except jwt.PyJWTError:
            raise AuthenticationError("the bearer token is not valid") from None
        try:
            return AccessTokenClaims.model_validate(payload)
        except ValidationError:
            raise AuthenticationError("the token's claims are not of the expected types") from None

    def _caller(
        self,
        *,
        oid: str | None,
        tid: str | None,
        name: str | None,
        username: str | None,
        roles: list[str],
        groups: list[str],
        overage: bool,
        auth: AuthMethod,
    ) -> Caller:
        if not oid or not is_object_id(oid):
            raise AuthenticationError("the credential has no object id (oid) claim")
        if not tid or not is_object_id(tid):
            raise AuthenticationError("the credential has no tenant id (tid) claim")
        if tid.strip().lower() != self.settings.tenant_id:
            raise AuthenticationError("the credential is from another tenant")
        return Caller(
            oid=oid,
            tid=tid,
            name=name or username or oid.strip().lower(),
            username=username,
            roles=frozenset(roles),
            # The policy names teams by group object id; a groups claim configured for names
            # (sAMAccountName) could never match one, so only GUIDs are kept.
            groups=frozenset(g for g in groups if is_object_id(g)),
            groups_overage=overage,
            auth=auth,
        )

    def _from_principal(self, header: str) -> Caller:
        value = header.strip()
        try:
            raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
            principal = _ClientPrincipal.model_validate_json(raw)
        except (binascii.Error, ValueError):
            raise AuthenticationError("the X-MS-CLIENT-PRINCIPAL header is not base64 JSON of a principal") from None
        if principal.auth_typ.lower() != "aad":
            raise AuthenticationError("only Microsoft Entra ID sign-ins are accepted")
        audiences = principal.values("aud")
        if audiences and not set(audiences) & self.settings.audiences:
            raise AuthenticationError("the signed-in token is meant for another audience than this API")
        overage = any(_names_groups(v) for v in principal.values("_claim_names")) or any(
            v.lower() == "true" or v.startswith("https://") for v in principal.values(*OVERAGE_TYPES)
        )
        return self._caller(
            oid=principal.first(*OBJECT_ID_TYPES),
            tid=principal.first(*TENANT_ID_TYPES),
            name=principal.first(*NAME_TYPES, principal.name_typ or ""),
            username=principal.first("preferred_username"),
            roles=principal.values(*ROLE_TYPES, principal.role_typ or ""),
            groups=principal.values(*GROUP_TYPES),
            overage=overage,
            auth="easyauth",
        )


def _valid_at(payload: Mapping[str, Any], at: float, leeway: float) -> None:
    """Check a token's exp, nbf and iat against the time `at` (seconds), as PyJWT checks them against now."""
    times = {name: payload.get(name) for name in ("exp", "nbf", "iat")}
    if any(v is not None and not isinstance(v, int | float) for v in times.values()):
        raise jwt.DecodeError("the token's times are not numbers")
    if times["exp"] is not None and at > times["exp"] + leeway:
        raise AuthenticationError("the token had expired when the message was sent; the sender must send it again")
    if times["nbf"] is not None and at < times["nbf"] - leeway:
        raise jwt.ImmatureSignatureError("nbf")
    if times["iat"] is not None and at < times["iat"] - leeway:
        raise jwt.ImmatureSignatureError("iat")


def _names_groups(value: str) -> bool:
    try:
        names = json.loads(value)
    except ValueError:
        return False
    return isinstance(names, dict) and "groups" in names
