"""Who is calling (DESIGN section 9): the caller, the app roles, the auth settings and the token shapes.

The shapes follow Microsoft's documents, so that the embedded issuer and Microsoft Entra ID are read
by the same code:
- access token claims (v2.0): https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference
- validating them: https://learn.microsoft.com/entra/identity-platform/access-tokens#validate-tokens
- the OpenID discovery document: https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderMetadata
  and https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc#fetch-the-openid-configuration-document
- the key set: RFC 7517 (https://www.rfc-editor.org/rfc/rfc7517)
- the token endpoint's answers: RFC 6749 sections 5.1 and 5.2
- a refused bearer token: RFC 6750 section 3 (https://www.rfc-editor.org/rfc/rfc6750#section-3)
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.errors import TransientError, VendingError

DEFAULT_DIRECTORY = Path(__file__).resolve().parent.parent / "policy" / "directory.example.yaml"
# Where the devhost mounts its embedded issuer; the CLI finds the token endpoint under it.
LOCAL_ISSUER_PATH = "/identity"
ENTRA_AUTHORITY = "https://login.microsoftonline.com"

GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
ObjectId = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, pattern=GUID)]
"""A Microsoft Entra object id (user, group, service principal) or tenant id: a GUID, lowercase."""

AuthMethod = Literal["entra", "easyauth", "local", "chat", "queue"]
"""How a caller was authenticated: an Entra bearer token, App Service Authentication's principal
header, a token of the devhost's embedded issuer, a chat platform's signature, or the queue's RBAC."""


def is_object_id(value: str) -> bool:
    """Say whether a value is a GUID, the form of every Entra object id."""
    return re.match(GUID, value.strip()) is not None


class AppRole(StrEnum):
    """The app roles of the API's app registration (DESIGN section 9, docs/security.md)."""

    REQUEST = "Workspaces.Request"  # ask for workspaces for one's own teams
    APPROVE = "Workspaces.Approve"  # approve requests for the teams one approves for
    READ_ALL = "Workspaces.ReadAll"  # read every team's requests (the platform team)
    OPERATOR = "Vending.Operator"  # dead letters, replay, sweeps
    ADMIN = "Vending.Admin"  # act for every team; still confined by policy


class Caller(BaseModel):
    """Who is calling, as every door sees it once authenticated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    oid: ObjectId = Field(description="The caller's immutable object id; recorded as the requester.")
    tid: ObjectId = Field(description="The tenant the caller signed in to.")
    name: str = Field(
        description="For display only (name, else preferred_username, else the oid); never for decisions."
    )
    username: str | None = Field(None, description="preferred_username, for display only.")
    roles: frozenset[str] = Field(default_factory=frozenset, description="App roles assigned to the caller.")
    groups: frozenset[ObjectId] = Field(default_factory=frozenset, description="Group object ids from the token.")
    groups_overage: bool = Field(
        False, description="The token had too many groups to list them: ask Microsoft Graph for membership."
    )
    auth: AuthMethod

    def has_role(self, role: AppRole) -> bool:
        """Say whether the caller holds an app role."""
        return role.value in self.roles


class AuthenticationError(VendingError):
    """The caller could not be authenticated: answer 401 with `www_authenticate`; never retry as is.

    `reason` is safe to show: it names what is wrong, never a token or a claim value the caller sent.
    """

    status_code = 401

    def __init__(self, reason: str, *, error: Literal["invalid_token"] | None = "invalid_token") -> None:
        self.reason = reason
        self.error = error
        super().__init__(reason)

    @property
    def www_authenticate(self) -> str:
        """The `WWW-Authenticate` value (RFC 6750 section 3); no error code when no credentials came."""
        if self.error is None:
            return 'Bearer realm="workspace-vending"'
        # error_description allows %x20-21 / %x23-5B / %x5D-7E only: no quote, no backslash, ASCII.
        description = "".join(c for c in self.reason if " " <= c <= "~" and c not in '"\\')
        return f'Bearer realm="workspace-vending", error="{self.error}", error_description="{description}"'


class AuthUnavailableError(TransientError):
    """The issuer's discovery document or keys cannot be fetched now: answer 503, the caller may retry."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s, code="AuthUnavailable")


def check_key_url(url: str, what: str) -> str:
    """Return `url` if keys may be fetched from it: https, or http to loopback only (tests, the devhost)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and _loopback(host):
        return url
    raise ValueError(f"{what} must be an https URL (http only on loopback), not {url!r}")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AuthSettings(BaseSettings):
    """How callers are authenticated; environment variables are `VENDING_AUTH_<NAME>` unless noted."""

    model_config = SettingsConfigDict(env_prefix="VENDING_AUTH_", extra="ignore", populate_by_name=True)

    mode: Literal["entra", "easyauth", "local"] = Field(
        "local",
        description="entra: validate bearer tokens; easyauth: trust App Service Authentication's principal "
        "header when it is on, else as entra; local: tokens of the devhost's embedded issuer.",
    )
    tenant_id: ObjectId | None = Field(
        None, description="The Entra tenant (directory) id; tokens of others are refused."
    )
    audience: str | None = Field(None, description="The API's application ID URI, e.g. api://workspace-vending.")
    client_id: str | None = Field(
        None, description="The API's application (client) id: the audience of v2.0 access tokens."
    )
    issuer: str | None = Field(None, description="Default: https://login.microsoftonline.com/<tenant>/v2.0.")
    jwks_url: str | None = Field(None, description="Default: jwks_uri of the issuer's OpenID discovery document.")
    leeway_s: float = Field(60.0, ge=0, le=300, description="Clock skew allowed on exp, nbf and iat.")
    directory_file: Path = Field(DEFAULT_DIRECTORY, description="The devhost's local directory (users, groups, roles).")
    http_timeout_s: float = Field(5.0, gt=0, le=60, description="How long a discovery or key set fetch may take.")
    # Microsoft suggests looking for new keys every 24 hours, and again when a token names an unknown key:
    # https://learn.microsoft.com/entra/identity-platform/access-tokens#validate-the-signature
    jwks_refresh_s: float = Field(86400.0, gt=0, description="How long fetched keys are used before a refresh.")
    jwks_refetch_min_s: float = Field(
        300.0, ge=0, description="At most one fetch per this interval for tokens naming an unknown key."
    )
    fetch_retry_s: float = Field(5.0, ge=0, description="After a failed fetch, how long before trying again.")
    # Set by App Service: "True" when App Service Authentication (Easy Auth) runs in front of the app.
    # https://learn.microsoft.com/azure/app-service/reference-app-settings#authentication--authorization
    website_auth_enabled: bool = Field(False, validation_alias=AliasChoices("WEBSITE_AUTH_ENABLED"))
    # Set by App Service on every app (read-only); the embedded issuer must never serve there.
    website_site_name: str | None = Field(None, validation_alias=AliasChoices("WEBSITE_SITE_NAME"))

    @model_validator(mode="after")
    def _resolve(self) -> AuthSettings:
        if self.issuer is None and self.tenant_id is not None:
            self.issuer = f"{ENTRA_AUTHORITY}/{self.tenant_id}/v2.0"
        if self.issuer is not None:
            check_key_url(self.issuer, "VENDING_AUTH_ISSUER")
        if self.jwks_url is not None:
            check_key_url(self.jwks_url, "VENDING_AUTH_JWKS_URL")
        if self.mode == "local" and self.website_site_name:
            raise ValueError(
                "VENDING_AUTH_MODE=local is the devhost's embedded issuer and is refused on App Service; "
                "set VENDING_AUTH_MODE to easyauth or entra"
            )
        if self.mode in ("entra", "easyauth") and (self.tenant_id is None or not self.audiences):
            raise ValueError(
                f"VENDING_AUTH_MODE={self.mode} needs VENDING_AUTH_TENANT_ID and "
                "VENDING_AUTH_AUDIENCE or VENDING_AUTH_CLIENT_ID"
            )
        return self

    @property
    def audiences(self) -> frozenset[str]:
        """Every `aud` value accepted: the application ID URI and the client id, those that are set."""
        return frozenset(a for a in (self.audience, self.client_id) if a)

    @property
    def discovery_url(self) -> str | None:
        """The issuer's OpenID discovery document."""
        return f"{self.issuer.rstrip('/')}/.well-known/openid-configuration" if self.issuer else None


class OpenIdConfiguration(BaseModel):
    """The fields of an OpenID discovery document that this service reads or serves."""

    model_config = ConfigDict(extra="ignore")

    issuer: str
    jwks_uri: str
    token_endpoint: str | None = None
    grant_types_supported: list[str] | None = None
    token_endpoint_auth_methods_supported: list[str] | None = None
    id_token_signing_alg_values_supported: list[str] | None = None
    claims_supported: list[str] | None = None


class JsonWebKey(BaseModel):
    """One public key of a key set (RFC 7517); Entra's v2.0 keys also name their `issuer`."""

    model_config = ConfigDict(extra="ignore")

    kty: str
    kid: str | None = None
    use: str | None = None
    alg: str | None = None
    n: str | None = None
    e: str | None = None
    x5t: str | None = None
    x5c: list[str] | None = None
    issuer: str | None = None
    # The Bot Framework's keys also list the channels each key is endorsed for (bot-docs,
    # articles/rest-api/bot-framework-rest-connector-authentication.md, "Get the list of valid signing keys").
    endorsements: list[str] | None = None


class JsonWebKeySet(BaseModel):
    """A key set as served at `jwks_uri`."""

    model_config = ConfigDict(extra="ignore")

    keys: list[JsonWebKey]


class ClaimSource(BaseModel):
    """Where a distributed claim can be read (the groups overage points at Microsoft Graph)."""

    model_config = ConfigDict(extra="ignore")

    endpoint: str | None = None


class AccessTokenClaims(BaseModel):
    """The claims of an Entra v2.0 access token that this service reads (or the embedded issuer signs)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    iss: str
    aud: str | list[str]
    exp: int
    nbf: int | None = None
    iat: int | None = None
    sub: str | None = None
    oid: str | None = None
    tid: str | None = None
    name: str | None = None
    preferred_username: str | None = None
    roles: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    # Group overage: no `groups`, and `_claim_names: {"groups": "src1"}` points into `_claim_sources`.
    claim_names: dict[str, str] = Field(default_factory=dict, alias="_claim_names")
    claim_sources: dict[str, ClaimSource] = Field(default_factory=dict, alias="_claim_sources")
    ver: str | None = None
    uti: str | None = None

    @property
    def groups_overage(self) -> bool:
        """Say whether the token says the caller's groups were too many to include."""
        return "groups" in self.claim_names


class TokenResponse(BaseModel):
    """A token endpoint's successful answer (RFC 6749 section 5.1)."""

    model_config = ConfigDict(extra="ignore")

    access_token: SecretStr
    token_type: Literal["Bearer", "bearer"] = "Bearer"  # noqa: S105 - a token type, not a secret
    expires_in: int = Field(gt=0)
    scope: str | None = None

    def wire(self) -> dict[str, str | int]:
        """Return the JSON body for the client that asked for the token (the only place it is revealed)."""
        body: dict[str, str | int] = {
            "access_token": self.access_token.get_secret_value(),
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        if self.scope:
            body["scope"] = self.scope
        return body


class TokenError(BaseModel):
    """A token endpoint's refusal (RFC 6749 section 5.2)."""

    error: Literal["invalid_request", "invalid_grant", "unsupported_grant_type", "invalid_scope"]
    error_description: str
