"""Group membership from Microsoft Graph: the `Membership` port in Azure (httpx, token from azure-identity).

One call per 20 groups, as Graph allows:
`POST https://graph.microsoft.com/v1.0/directoryObjects/{id}/checkMemberGroups` with
`{"groupIds": [...]}` (at most 20) answers `200 {"value": [<the ids among them the object is a member of>]}`,
transitively, for users, groups and service principals alike. See "directoryObject: checkMemberGroups",
https://learn.microsoft.com/graph/api/directoryobject-checkmembergroups (source:
microsoftgraph/microsoft-graph-docs-contrib, api-reference/v1.0/api/directoryobject-checkmembergroups.md).
The service's identity needs the application permissions User.Read.All and GroupMember.Read.All (or
Directory.Read.All), and Application.Read.All to ask about a service principal.

An object that does not exist (404) is a member of nothing. Throttling (429, with Retry-After), 5xx and
transport failures are transient; a refused token (401, 403) or a refused request is permanent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from adapters.webhook import retry_after_s
from models.errors import PermanentError, TransientError
from models.identity import check_key_url, is_object_id

GRAPH_URL = "https://graph.microsoft.com/v1.0"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
MAX_GROUPS_PER_CALL = 20  # "You can check up to a maximum of 20 groups per request."


class GraphMembership:
    """`Membership` over Microsoft Graph's `checkMemberGroups`."""

    def __init__(
        self,
        *,
        credential: Any | None = None,
        base_url: str = GRAPH_URL,
        scope: str = GRAPH_SCOPE,
        timeout_s: float = 5.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # The token goes wherever base_url points: https, or http to loopback only (the tests' fake Graph).
        self.base_url = check_key_url(base_url, "the Microsoft Graph URL").rstrip("/")
        if credential is None:
            from cloud.credentials import azure_credential

            credential = azure_credential(None)
        self.credential = credential
        self.scope = scope
        self.client = client or httpx.Client(timeout=timeout_s, follow_redirects=False)
        self.clock = clock

    def member_groups(self, *, principal: str, groups: list[str]) -> frozenset[str]:
        """Return which of `groups` the principal belongs to, transitively, asking 20 groups at a time."""
        wanted = list(dict.fromkeys(g.strip().lower() for g in groups if is_object_id(g)))
        if not wanted or not is_object_id(principal):
            return frozenset()  # no directory object has such an id: a member of nothing
        found: set[str] = set()
        for start in range(0, len(wanted), MAX_GROUPS_PER_CALL):
            found |= self._check(principal.strip().lower(), wanted[start : start + MAX_GROUPS_PER_CALL])
        return frozenset(g for g in groups if g.strip().lower() in found)

    def _check(self, principal: str, group_ids: list[str]) -> set[str]:
        url = f"{self.base_url}/directoryObjects/{quote(principal, safe='')}/checkMemberGroups"
        headers = {"Authorization": f"Bearer {self._token()}", "Content-Type": "application/json"}
        try:
            resp = self.client.post(url, json={"groupIds": group_ids}, headers=headers)
        except httpx.TransportError as exc:
            raise TransientError(
                f"Microsoft Graph did not answer a group membership check: {type(exc).__name__}",
                code="GraphUnavailable",
            ) from exc
        if resp.status_code == 200:
            try:
                value = resp.json().get("value")
            except (ValueError, AttributeError) as exc:
                raise TransientError(
                    "Microsoft Graph answered with a body that is not JSON", code="GraphUnavailable"
                ) from exc
            if not isinstance(value, list):
                raise TransientError("Microsoft Graph answered without a list of groups", code="GraphUnavailable")
            return {str(v).lower() for v in value}
        if resp.status_code == 404:
            return set()
        if resp.status_code in (408, 429) or resp.status_code >= 500:
            wait = retry_after_s(resp.headers.get("Retry-After"), now=self.clock())
            raise TransientError(
                f"Microsoft Graph answered {resp.status_code} to a group membership check",
                retry_after_s=wait,
                code="GraphUnavailable",
            )
        if resp.status_code in (401, 403):
            raise PermanentError(
                f"Microsoft Graph refused the service's identity ({resp.status_code}): grant it the application "
                "permissions User.Read.All and GroupMember.Read.All (and Application.Read.All)",
                code="GraphForbidden",
            )
        raise PermanentError(
            f"Microsoft Graph refused a group membership check with {resp.status_code}", code="GraphRefused"
        )

    def _token(self) -> str:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            return str(self.credential.get_token(self.scope).token)
        except ClientAuthenticationError as exc:
            raise PermanentError(
                f"the service's identity could not get a Microsoft Graph token: {type(exc).__name__}",
                code="GraphForbidden",
            ) from exc

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()
