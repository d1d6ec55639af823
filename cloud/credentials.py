"""Credentials: Microsoft Entra ID in Azure, a fixed bearer token for the local emulator."""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions


class EmulatorCredential:
    """A `TokenCredential` for the local ARM emulator, which checks only that a bearer token is sent."""

    def __init__(self, token: str = "workspace-vending-emulator") -> None:  # noqa: S107 - not a secret
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        """Return the fixed token, valid for an hour."""
        return AccessToken(self._token, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        """Return the fixed token, valid for an hour."""
        return AccessTokenInfo(self._token, int(time.time()) + 3600)

    def close(self) -> None:
        """Nothing to close."""


def azure_credential(client_id: str | None) -> Any:
    """Build the production credential: a user-assigned identity when a client id is set, else the default chain."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if client_id:
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential()
