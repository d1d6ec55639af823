"""Messages on the queues."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StepMessage(BaseModel):
    """Work on one step of one request; one per dispatch."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    step_id: str
    attempt: int
    traceparent: str | None = None

    @property
    def message_id(self) -> str:
        """Deterministic id: the bus and the engine both drop duplicates by it."""
        return f"{self.request_id}/{self.step_id}/{self.attempt}"
