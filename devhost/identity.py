"""The devhost's embedded identity provider: a local directory, one RSA key, Entra-shaped access tokens.

As the ARM emulator is the embedded cloud, this is the embedded Microsoft Entra ID: an OpenID issuer
with a discovery document, a key set and a token endpoint, for the users of a local directory file
(policy/directory.example.yaml by default). The REST API validates its tokens with exactly the
code that validates Entra's (adapters/auth.py, mode local: mode entra with this issuer's URL and
audience).

It is a development convenience: the token endpoint hands a token to anyone who names a directory
user, with no password. It is mounted only by the devhost, never in Azure, and AuthSettings refuses
mode local on App Service.

The signing key is generated on first start and kept in the data directory, created with mode 0600
(never readable by others, not even for a moment); it is not rotated. Tokens follow the v2.0
access token shape: https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import httpx
import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from adapters.secrets import SecretFileError, create_secret_file, read_secret_file
from models.errors import VendingError
from models.identity import (
    LOCAL_ISSUER_PATH,
    AccessTokenClaims,
    AppRole,
    AuthSettings,
    ClaimSource,
    JsonWebKey,
    JsonWebKeySet,
    ObjectId,
    OpenIdConfiguration,
    TokenResponse,
    check_key_url,
    is_object_id,
)

KEY_FILE = "local-issuer-key.pem"
TOKEN_LIFETIME_S = 3600
GRAPH_MEMBER_OBJECTS = "https://graph.microsoft.com/v1.0/users/{oid}/getMemberObjects"


class DirectoryModel(BaseModel):
    """Base for the directory file's models: a typo is an error at start, not a silent default."""

    model_config = ConfigDict(extra="forbid")


class DirectoryUser(DirectoryModel):
    """One user who can sign in locally."""

    object_id: ObjectId
    name: str = Field(min_length=1, description="The display name (the name claim).")
    username: str = Field(min_length=1, description="The sign-in name (the preferred_username claim).")
    groups: list[str] = Field(
        default_factory=list, description="The user's groups: names from the directory's groups, or object ids."
    )
    roles: list[AppRole] = Field(default_factory=list, description="App roles assigned to the user.")
    groups_overage: bool = Field(
        False, description="Sign tokens with the group overage claim instead of the groups, as Entra does past 200."
    )


class DirectoryApplication(DirectoryModel):
    """The API's app registration, as the local tokens name it."""

    client_id: ObjectId = Field(description="The application (client) id: the aud of v2.0 access tokens.")
    app_id_uri: str = Field(min_length=1, description="The application ID URI, e.g. api://workspace-vending.")


class Directory(DirectoryModel):
    """The local directory: a tenant, the API's registration, groups and users."""

    tenant_id: ObjectId
    application: DirectoryApplication
    groups: dict[str, ObjectId] = Field(default_factory=dict, description="Group name -> group object id.")
    nested_groups: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Group name -> the groups it is a member of (names), as Entra nests groups; membership is transitive.",
    )
    users: dict[str, DirectoryUser]

    @model_validator(mode="after")
    def _consistent(self) -> Directory:
        for login, user in self.users.items():
            unknown = [g for g in user.groups if g not in self.groups and not is_object_id(g)]
            if unknown:
                raise ValueError(f"users.{login}.groups: no group named {', '.join(unknown)} in groups")
        for child, parents in self.nested_groups.items():
            unknown = [g for g in [child, *parents] if g not in self.groups]
            if unknown:
                raise ValueError(f"nested_groups.{child}: no group named {', '.join(unknown)} in groups")
        ids = [u.object_id for u in self.users.values()] + list(self.groups.values())
        if len(ids) != len(set(ids)):
            raise ValueError("every user and group needs an object id of its own")
        return self

    def group_ids(self, user: DirectoryUser) -> list[str]:
        """Return the object ids of a user's groups, transitively (as Entra's groups claim lists them)."""
        return self._closure([self.groups.get(g) or g.strip().lower() for g in user.groups])

    def parent_group_ids(self, group_id: str) -> list[str]:
        """Return the object ids of the groups a group is a member of, transitively."""
        return [g for g in self._closure([group_id.strip().lower()]) if g != group_id.strip().lower()]

    def _closure(self, start: list[str]) -> list[str]:
        names = {gid: name for name, gid in self.groups.items()}
        out: list[str] = []
        todo = list(start)
        while todo:
            gid = todo.pop(0)
            if gid in out:
                continue
            out.append(gid)
            todo += [self.groups[p] for p in self.nested_groups.get(names.get(gid, ""), [])]
        return out

    def find(self, name: str) -> DirectoryUser | None:
        """Return the user signing in as `name` (the directory's key or the username), if any."""
        wanted = name.strip().lower()
        for login, user in self.users.items():
            if wanted in (login.lower(), user.username.lower()):
                return user
        return None


class LocalMembership:
    """Group membership from the local directory: what Microsoft Graph's `checkMemberGroups` answers in Azure."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    def member_groups(self, *, principal: str, groups: list[str]) -> frozenset[str]:
        """Return which of `groups` the directory user or group with object id `principal` belongs to, transitively."""
        wanted = principal.strip().lower()
        user = next((u for u in self.directory.users.values() if u.object_id == wanted), None)
        if user is not None:
            mine = set(self.directory.group_ids(user))
        elif wanted in self.directory.groups.values():
            mine = set(self.directory.parent_group_ids(wanted))
        else:
            return frozenset()
        return frozenset(g for g in groups if g.strip().lower() in mine)


class LocalIdentityError(ValueError):
    """The directory file or the signing key cannot be used: the devhost does not start."""


def load_directory(path: Path) -> Directory:
    """Read the local directory from a YAML (or JSON) file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LocalIdentityError(f"cannot read the directory file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise LocalIdentityError(f"the directory file {path} is not valid YAML: {exc}") from exc
    try:
        return Directory.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors())
        raise LocalIdentityError(f"the directory file {path} is not valid: {problems}") from exc


def load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    """Return the signing key kept at `path`, generating it (mode 0600 from creation) on first use."""
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # A second devhost starting at the same moment keeps the first key (adapters/secrets.py).
        create_secret_file(path, pem)
    try:
        loaded = serialization.load_pem_private_key(read_secret_file(path), password=None)
    except SecretFileError as exc:
        raise LocalIdentityError(f"the signing key cannot be used: {exc}") from exc
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise LocalIdentityError(f"{path} does not hold an RSA private key")
    return loaded


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class TokenRequest(BaseModel):
    """A token endpoint request (form fields); the password is accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    grant_type: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    scope: str | None = None
    client_id: str | None = None


class TokenRequestError(VendingError):
    """A token request refused (RFC 6749 section 5.2): the handler answers 400 with `error`."""

    def __init__(
        self, error: Literal["invalid_request", "invalid_grant", "unsupported_grant_type"], description: str
    ) -> None:
        self.error: Literal["invalid_request", "invalid_grant", "unsupported_grant_type"] = error
        self.description = description
        super().__init__(description)


class LocalIssuer:
    """Sign Entra-shaped access tokens for the users of a local directory."""

    def __init__(
        self,
        *,
        directory: Directory,
        key: rsa.RSAPrivateKey,
        issuer: str,
        clock: Callable[[], float] = time.time,
        lifetime_s: int = TOKEN_LIFETIME_S,
    ) -> None:
        self.directory = directory
        self.issuer = check_key_url(issuer.rstrip("/"), "the local issuer")
        self.path = urlsplit(self.issuer).path or "/"
        self._key = key
        self._clock = clock
        self.lifetime_s = lifetime_s
        numbers = key.public_key().public_numbers()
        self._public = {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}
        # The key id is the key's RFC 7638 thumbprint: stable for the key, different for another.
        canonical = json.dumps(self._public, separators=(",", ":"), sort_keys=True).encode()
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()

    @classmethod
    def open(
        cls, *, directory_file: Path, data_dir: Path, base_url: str, clock: Callable[[], float] = time.time
    ) -> LocalIssuer:
        """Load the directory and the signing key (made on first start); issue as `<base_url>/identity`."""
        return cls(
            directory=load_directory(directory_file),
            key=load_or_create_key(data_dir / KEY_FILE),
            issuer=base_url.rstrip("/") + LOCAL_ISSUER_PATH,
            clock=clock,
        )

    @property
    def jwks_uri(self) -> str:
        """Where the key set is served."""
        return f"{self.issuer}/keys"

    @property
    def token_endpoint(self) -> str:
        """Where tokens are asked for."""
        return f"{self.issuer}/token"

    def openid_configuration(self) -> OpenIdConfiguration:
        """Return the discovery document served at `<issuer>/.well-known/openid-configuration`."""
        return OpenIdConfiguration(
            issuer=self.issuer,
            jwks_uri=self.jwks_uri,
            token_endpoint=self.token_endpoint,
            grant_types_supported=["password"],
            token_endpoint_auth_methods_supported=["none"],
            id_token_signing_alg_values_supported=["RS256"],
            claims_supported=[
                "iss",
                "aud",
                "exp",
                "nbf",
                "iat",
                "sub",
                "oid",
                "tid",
                "name",
                "preferred_username",
                "roles",
                "groups",
                "ver",
            ],
        )

    def jwks(self) -> JsonWebKeySet:
        """Return the key set: the one public key."""
        return JsonWebKeySet(keys=[JsonWebKey(use="sig", alg="RS256", kid=self.kid, **self._public)])

    def client(self) -> httpx.Client:
        """Return an HTTP client that fetches this issuer's discovery document and key set in the process.

        The authenticator reads them as it reads Entra's, over HTTP requests and responses; only the
        socket is left out, so that a server never waits on a request to itself.
        """
        documents = {
            f"{self.path}/.well-known/openid-configuration": self.openid_configuration,
            f"{self.path}/keys": self.jwks,
        }

        def answer(request: httpx.Request) -> httpx.Response:
            document = documents.get(request.url.path) if request.method == "GET" else None
            if document is None:
                return httpx.Response(404, json={"error": "not_found"})
            return httpx.Response(200, json=document().model_dump(mode="json", exclude_none=True))

        return httpx.Client(transport=httpx.MockTransport(answer), base_url=self.issuer)

    def validation_settings(self, settings: AuthSettings) -> AuthSettings:
        """Return `settings` made to trust this issuer: its URL, tenant and audiences (keys by discovery)."""
        return settings.model_copy(
            update={
                "mode": "local",
                "issuer": self.issuer,
                "tenant_id": self.directory.tenant_id,
                "audience": self.directory.application.app_id_uri,
                "client_id": self.directory.application.client_id,
                "jwks_url": None,
            }
        )

    def token(self, request: TokenRequest) -> TokenResponse:
        """Answer a token request: grant_type=password and a directory user's name."""
        if request.grant_type != "password":
            raise TokenRequestError("unsupported_grant_type", "the local issuer accepts grant_type=password only")
        if not request.username:
            raise TokenRequestError("invalid_request", "name the directory user in 'username'")
        user = self.directory.find(request.username)
        if user is None:
            raise TokenRequestError("invalid_grant", f"no user '{request.username[:64]}' in the local directory")
        return self.issue(user)

    def issue(self, user: DirectoryUser) -> TokenResponse:
        """Sign an access token for a directory user, valid for `lifetime_s`."""
        now = int(self._clock())
        app = self.directory.application
        groups = self.directory.group_ids(user)
        claims = AccessTokenClaims(
            iss=self.issuer,
            aud=app.client_id,  # v2.0 access tokens carry the API's client id
            exp=now + self.lifetime_s,
            nbf=now,
            iat=now,
            sub=user.object_id,
            oid=user.object_id,
            tid=self.directory.tenant_id,
            name=user.name,
            preferred_username=user.username,
            roles=[r.value for r in user.roles],
            groups=[] if user.groups_overage else groups,
            claim_names={"groups": "src1"} if user.groups_overage else {},
            claim_sources={"src1": ClaimSource(endpoint=GRAPH_MEMBER_OBJECTS.format(oid=user.object_id))}
            if user.groups_overage
            else {},
            ver="2.0",
            uti=secrets.token_urlsafe(16),
        )
        # Entra leaves out claims that have no value; so does this issuer.
        payload = {k: v for k, v in claims.model_dump(by_alias=True, exclude_none=True).items() if v not in ([], {})}
        token = jwt.encode(payload, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})
        return TokenResponse(
            access_token=SecretStr(token), expires_in=self.lifetime_s, scope=f"{app.app_id_uri}/.default"
        )
