"""Callers for tests: a signed-in user of the local directory, and an authoriser for tests about other things.

Tests about authorisation use the real `Authorizer` and real tokens (tests/unit/test_authz.py,
tests/contract/test_trust.py, tests/e2e/test_attacks.py). Tests about provisioning, messaging or
stores use teams made up on the spot, which no policy lists: they give their container `PermitAll`,
which allows every act, and `Unconfined`, which holds a request to nothing, and call as `PLATFORM`.
"""

from __future__ import annotations

from composition import Container
from engine.authz import Act, ApprovalAsk, Decision
from engine.confinement import Confinement
from models.identity import AppRole, Caller
from models.plan import Plan
from models.request import WorkspaceRequest

ALICE_OID = "1f3a5c7e-9b2d-4e6f-8a1c-3e5a7c9e1b01"
"""alice of the local directory (policy/directory.example.yaml): the caller `bearer` signs for by default."""

ADMIN_OID = "5b7e9a1c-3f6b-4cad-8e5a-7c9e1b3d5f05"
"""admin of the local directory (Vending.Admin): who `sender` signs onboarding messages as by default."""

PLATFORM = Caller(
    oid="00000000-0000-4000-8000-00000000a11a",
    tid="5f1d3c2a-7b64-4e19-a8d0-3c2b1a0f9e87",
    name="Test Platform",
    roles=frozenset({AppRole.ADMIN.value}),
    auth="local",
)


class PermitAll:
    """An authoriser that allows every act of every caller on every team (for tests about other things)."""

    def authorize(
        self, caller: Caller, act: Act, *, team: str | None = None, approval: ApprovalAsk | None = None
    ) -> Decision:
        """Allow (an approval counts for every rule)."""
        return Decision(True, "PermitAll", "allowed", rules=tuple(sorted(approval.rules)) if approval else ())

    def teams_of(self, caller: Caller) -> frozenset[str]:
        """No team in particular."""
        return frozenset()

    def visible_teams(self, caller: Caller) -> frozenset[str] | None:
        """Every team."""
        return None


class Unconfined(Confinement):
    """Confinement that holds nothing, beside `PermitAll` in tests about other things (made-up teams, principals).

    Confinement has tests of its own (tests/unit/test_confinement.py, tests/e2e/test_attacks.py).
    """

    def __init__(self) -> None:
        """Need no policy, directory, store or cloud."""

    def check(self, *, plan: Plan, request: WorkspaceRequest, budget_s: float | None = None) -> None:
        """Hold nothing."""


def bearer(container: Container, user: str = "alice") -> dict[str, str]:
    """Return the Authorization header of a token the container's embedded issuer signs for `user`."""
    issuer = container.local_issuer
    assert issuer is not None, "the container is not in VENDING_AUTH_MODE=local"
    found = issuer.directory.find(user)
    assert found is not None, f"no user {user} in the local directory"
    return {"Authorization": f"Bearer {issuer.issue(found).access_token.get_secret_value()}"}


def sender(container: Container, user: str = "admin") -> dict[str, str]:
    """Return the application properties that say an onboarding message was sent by `user`."""
    from handlers.queues import SENDER_PROPERTY

    return {SENDER_PROPERTY: bearer(container, user)["Authorization"]}
