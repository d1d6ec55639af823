"""Secrets the service keeps: files private from their creation, and the callback signing secret from Key Vault.

The Key Vault reader runs against a stand-in vault on loopback (TLS, the bearer challenge, the
GetSecret shape of the data-plane spec: Azure/azure-rest-api-specs,
specification/keyvault/data-plane/Microsoft.KeyVault/stable/7.4/secrets.json and
examples/GetSecret-example.json).
"""

from __future__ import annotations

import json
import os
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme
from azure.core.credentials import AccessToken

from adapters.secrets import (
    KeyVaultSecret,
    SecretFileError,
    create_secret_file,
    load_or_create_secret,
    parse_secret_uri,
    read_secret_file,
    write_secret_file,
)
from models.errors import PermanentError, TransientError

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_only
def test_a_fresh_secret_file_is_0600_whatever_the_umask_and_its_new_folder_0700(tmp_path: Path) -> None:
    old = os.umask(0)  # the most permissive umask: a write-then-chmod would leave the file 0666 for a moment
    try:
        path = tmp_path / "data" / "callback-signing-secret"
        value = load_or_create_secret(path)
    finally:
        os.umask(old)
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert len(value) == 64 and load_or_create_secret(path) == value  # kept, not made again
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left behind


@posix_only
def test_a_secret_file_others_may_read_is_refused_not_tightened(tmp_path: Path) -> None:
    path = tmp_path / "callback-signing-secret"
    path.write_bytes(b"s3cr3t-s3cr3t")
    path.chmod(0o644)
    with pytest.raises(SecretFileError) as info:
        load_or_create_secret(path)
    assert "mode 0644" in str(info.value) and f"chmod 600 {path}" in str(info.value)
    assert "s3cr3t" not in str(info.value)
    assert _mode(path) == 0o644  # left as found: the operator decides whether it leaked
    path.chmod(0o600)
    assert read_secret_file(path) == b"s3cr3t-s3cr3t"


@posix_only
def test_a_link_in_place_of_a_secret_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"x" * 16)
    target.chmod(0o600)
    (tmp_path / "secret").symlink_to(target)
    with pytest.raises(SecretFileError, match="symbolic link"):
        read_secret_file(tmp_path / "secret")
    assert create_secret_file(tmp_path / "secret", b"new") is False  # nor is it written through
    assert target.read_bytes() == b"x" * 16


def test_the_first_writer_wins_and_a_replacement_is_whole(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    assert create_secret_file(path, b"first") is True
    assert create_secret_file(path, b"second") is False
    assert read_secret_file(path) == b"first"
    write_secret_file(path, b"replaced")
    assert read_secret_file(path) == b"replaced"
    if os.name == "posix":
        assert _mode(path) == 0o600


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    seen: list[bytes] = []
    threads = [threading.Thread(target=lambda: seen.append(load_or_create_secret(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1 and len(seen) == 8


def test_secret_uris_name_a_vault_a_secret_and_perhaps_a_version() -> None:
    assert parse_secret_uri("https://kv-vend.vault.azure.net/secrets/callback-signing-secret") == (
        "https://kv-vend.vault.azure.net",
        "callback-signing-secret",
        None,
    )
    assert parse_secret_uri("https://kv.vault.azure.net/secrets/s/0123abcd/")[2] == "0123abcd"
    for bad in ("http://kv.vault.azure.net/secrets/s", "https://kv.vault.azure.net/keys/s", "kv/secrets/s"):
        with pytest.raises(ValueError, match="not a Key Vault secret URI"):
            parse_secret_uri(bad)


# ----- a stand-in Key Vault ---------------------------------------------------------------------------

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
TOKEN = "kv-access-token-0123456789"


class Vault:
    """Secrets by name, the requests seen, and an optional status to answer with instead."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.requests: list[dict[str, Any]] = []
        self.status: int | None = None


@contextmanager
def key_vault(folder: Path) -> Iterator[tuple[Vault, str, str]]:
    """Serve the Key Vault GetSecret operation over TLS on loopback; yield the vault, its URL and a CA bundle path."""
    vault = Vault()
    ca = trustme.CA()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            auth = self.headers.get("Authorization", "")
            vault.requests.append({"path": url.path, "query": parse_qs(url.query), "authorization": auth})
            if auth != f"Bearer {TOKEN}":
                # The bearer challenge (Key Vault authentication): where to get a token, and for which resource.
                challenge = f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", resource="https://vault.azure.net"'
                return self._answer(401, {"error": {"code": "Unauthorized"}}, {"WWW-Authenticate": challenge})
            parts = [p for p in url.path.split("/") if p]
            name = parts[1] if len(parts) >= 2 and parts[0] == "secrets" else ""
            if vault.status is not None:
                return self._answer(
                    vault.status, {"error": {"code": "Forbidden", "message": "Caller is not authorized"}}
                )
            if name not in vault.secrets:
                return self._answer(
                    404,
                    {"error": {"code": "SecretNotFound", "message": f"A secret with (name/id) {name} was not found"}},
                )
            version = "4387e9f3d6e14c459867679a90fd0f79"
            base = f"https://{self.headers['Host']}"
            return self._answer(
                200,
                {
                    "value": vault.secrets[name],
                    "id": f"{base}/secrets/{name}/{version}",
                    "attributes": {
                        "enabled": True,
                        "created": 1493938410,
                        "updated": 1493938410,
                        "recoveryLevel": "Recoverable+Purgeable",
                    },
                },
            )

        def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    bundle = folder / "vault-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    try:
        yield vault, f"https://127.0.0.1:{server.server_address[1]}", str(bundle)
    finally:
        server.shutdown()
        server.server_close()


class Credential:
    """A token credential that records the scopes and tenant it is asked for (the managed identity in Azure)."""

    def __init__(self) -> None:
        self.asked: list[tuple[tuple[str, ...], str | None]] = []

    def get_token(self, *scopes: str, tenant_id: str | None = None, **kwargs: Any) -> AccessToken:
        self.asked.append((scopes, tenant_id))
        return AccessToken(TOKEN, int(time.time()) + 3600)


def _reader(url: str, bundle: str, credential: Credential, name: str = "callback-signing-secret") -> KeyVaultSecret:
    # The stand-in vault is at 127.0.0.1, not *.vault.azure.net: the SDK's check that the challenge's
    # resource matches the vault's domain is turned off for it, and only for it.
    return KeyVaultSecret(
        f"{url}/secrets/{name}",
        credential=credential,  # type: ignore[arg-type]
        connection_verify=bundle,
        verify_challenge_resource=False,
        retry_total=0,
    )


def test_the_signing_secret_is_read_from_key_vault_with_the_identity(tmp_path: Path) -> None:
    credential = Credential()
    with key_vault(tmp_path) as (vault, url, bundle):
        vault.secrets["callback-signing-secret"] = "one-per-deployment-0123456789abcdef"
        assert _reader(url, bundle, credential).value() == "one-per-deployment-0123456789abcdef"
        challenge, authorised = vault.requests
    assert challenge["authorization"] == "" and authorised["authorization"] == f"Bearer {TOKEN}"
    assert authorised["path"].rstrip("/") == "/secrets/callback-signing-secret"
    assert authorised["query"]["api-version"] == ["7.4"]
    assert credential.asked == [(("https://vault.azure.net/.default",), TENANT)]


def test_a_missing_secret_or_a_refused_identity_is_permanent_and_says_what_to_do(tmp_path: Path) -> None:
    with key_vault(tmp_path) as (vault, url, bundle):
        with pytest.raises(PermanentError, match="does not exist; deploy infra/") as missing:
            _reader(url, bundle, Credential(), name="nope").value()
        assert missing.value.code == "SecretMissing"
        vault.status = 403
        with pytest.raises(PermanentError, match="grant it Key Vault Secrets User"):
            _reader(url, bundle, Credential()).value()
        vault.status = 503
        with pytest.raises(TransientError):
            _reader(url, bundle, Credential()).value()


def test_a_vault_that_does_not_answer_is_transient(tmp_path: Path) -> None:
    with key_vault(tmp_path) as (_, url, bundle):
        pass  # stopped: nothing listens there any more
    with pytest.raises(TransientError, match="did not answer"):
        _reader(url, bundle, Credential()).value()
