"""ARM error responses, in ARM's `{"error": {"code", "message"}}` shape."""

from __future__ import annotations

from typing import Any


class ArmError(Exception):
    """An ARM error response."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        super().__init__(f"{status} {code}: {message}")

    def body(self) -> dict[str, Any]:
        """Return the ARM error body."""
        return {"error": {"code": self.code, "message": self.message}}
