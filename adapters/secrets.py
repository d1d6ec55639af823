"""Secrets the service keeps: files in the data directory, private from creation, and secrets in Azure Key Vault.

Files. A secret-bearing file (the callback signing secret, the devhost issuer's private key, the
CLI's token) is written to a new file opened with `O_CREAT | O_EXCL` and mode 0600, so it is
never readable by anyone else, not even for a moment (a write followed by a chmod would leave a
window, and a umask cannot widen it), then linked or renamed into place whole, so nobody reads a
half-written one. A folder made for it is made with mode 0700. Reading one opens it without
following a symbolic link and checks the open file's mode: a secret file that group or others may
read or write is refused, not tightened, because the secret may already have been read; the
message says to replace it (or, for one known not to have leaked, to run `chmod 600`). On
Windows, where modes mean little, the check is skipped.

Key Vault. In Azure, the callback signing secret is one per deployment, kept in the deployment's
Key Vault (infra/modules/keyvault.bicep) and read with the managed identity, which holds Key Vault
Secrets User on the vault. The secret is named by its URI,
`https://<vault>.vault.azure.net/secrets/<name>[/<version>]` (without a version: the current one).
The data-plane call is GET {vault}/secrets/{name}/{version}?api-version=7.4, answering
`{"value": ..., "id": ..., "attributes": {...}}` (Azure/azure-rest-api-specs,
specification/keyvault/data-plane/Microsoft.KeyVault/stable/7.4/secrets.json, operation GetSecret).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from models.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.keyvault.secrets import SecretClient

KEY_VAULT_API_VERSION = "7.4"  # the data-plane version the secret's shape was checked against (above)
PRIVATE = 0o600


class SecretFileError(PermanentError):
    """A secret file cannot be used as it is: readable by others, not a regular file, or unreadable."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="SecretFileRefused")


def _private_folder(path: Path) -> None:
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)


def _write_new(path: Path, data: bytes) -> Path:
    """Write `data` to a fresh file beside `path`, mode 0600 from its creation; return the fresh file's path."""
    _private_folder(path)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), PRIVATE)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return partial


def write_secret_file(path: Path, data: bytes) -> None:
    """Write a secret file, replacing any file there whole; it is mode 0600 from the moment it exists."""
    partial = _write_new(path, data)
    try:
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def create_secret_file(path: Path, data: bytes) -> bool:
    """Create a secret file unless one is there; return False when another writer's file was there first (kept)."""
    partial = _write_new(path, data)
    try:
        os.link(partial, path)  # fails, leaving the existing file alone, when `path` exists (even as a link)
    except FileExistsError:
        return False
    finally:
        partial.unlink(missing_ok=True)
    return True


def read_secret_file(path: Path) -> bytes:
    """Read a secret file; refuse one that others may read or write, a link, or anything but a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SecretFileError(
                f"the secret file {path} is a symbolic link; replace it with the file itself"
            ) from exc
        raise
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SecretFileError(f"the secret file {path} is not a regular file")
        loose = stat.S_IMODE(info.st_mode) & 0o077
        if os.name == "posix" and loose:
            raise SecretFileError(
                f"the secret file {path} may be read or changed by others (mode {stat.S_IMODE(info.st_mode):04o}), so "
                f"it may have leaked: delete it and restart to make a new one (callback receivers then need the new "
                f"secret), or, if you know nobody read it, run: chmod 600 {path}"
            )
        return file.read()


def load_or_create_secret(path: Path, make: Callable[[], bytes] = lambda: secrets.token_hex(32).encode()) -> bytes:
    """Return the secret kept at `path`, creating it with `make()` (mode 0600 from creation) on first use."""
    if not path.exists():
        create_secret_file(path, make())  # two processes starting at once: the first file wins, both read it
    return read_secret_file(path)


# ----- Key Vault ------------------------------------------------------------------------------------


def parse_secret_uri(uri: str) -> tuple[str, str, str | None]:
    """Split a Key Vault secret URI into the vault URL, the secret's name and its version (None: the current one)."""
    parts = urlsplit(uri)
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme != "https" or not parts.netloc or len(segments) not in (2, 3) or segments[0] != "secrets":
        raise ValueError(
            f"'{uri}' is not a Key Vault secret URI; expected https://<vault>.vault.azure.net/secrets/<name>[/<version>]"
        )
    return f"https://{parts.netloc}", segments[1], segments[2] if len(segments) == 3 else None


class KeyVaultSecret:
    """One secret in Azure Key Vault, read with a credential (the managed identity in Azure)."""

    def __init__(
        self,
        uri: str,
        *,
        credential: TokenCredential | None = None,
        client: SecretClient | None = None,
        **client_options: Any,
    ) -> None:
        self.vault_url, self.name, self.version = parse_secret_uri(uri)
        if client is None:
            from azure.keyvault.secrets import SecretClient

            if credential is None:
                from cloud.credentials import azure_credential

                credential = azure_credential(None)
            client_options.setdefault("api_version", KEY_VAULT_API_VERSION)
            client = SecretClient(self.vault_url, credential, **client_options)
        self.client = client

    def value(self) -> str:
        """Return the secret's value; PermanentError when it is missing or not allowed, TransientError otherwise."""
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
        )

        where = f"secret '{self.name}' in Key Vault {self.vault_url}"
        try:
            secret = self.client.get_secret(self.name, self.version)
        except ResourceNotFoundError as exc:
            raise PermanentError(
                f"the {where} does not exist; deploy infra/ (it creates it) or correct the secret URI",
                code="SecretMissing",
            ) from exc
        except ClientAuthenticationError as exc:
            raise PermanentError(
                f"the service's identity could not sign in to read the {where}: {type(exc).__name__}",
                code="SecretForbidden",
            ) from exc
        except HttpResponseError as exc:
            if exc.status_code == 403:
                raise PermanentError(
                    f"the service's identity may not read the {where}; grant it Key Vault Secrets User on the vault",
                    code="SecretForbidden",
                ) from exc
            if exc.status_code is not None and exc.status_code < 500 and exc.status_code != 429:
                raise PermanentError(
                    f"reading the {where} failed with {exc.status_code}", code="SecretUnreadable"
                ) from exc
            raise TransientError(
                f"reading the {where} failed with {exc.status_code}", code="SecretUnavailable"
            ) from exc
        except ServiceRequestError as exc:
            raise TransientError(
                f"Key Vault {self.vault_url} did not answer: {type(exc).__name__}", code="SecretUnavailable"
            ) from exc
        if not secret.value:
            raise PermanentError(f"the {where} is empty; set a value", code="SecretMissing")
        return secret.value

    def close(self) -> None:
        """Close the client's connections."""
        with contextlib.suppress(Exception):
            self.client.close()
