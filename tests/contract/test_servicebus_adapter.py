"""The Service Bus adapter at the SDK boundary: the real ServiceBusMessage objects it hands the SDK.

No Service Bus emulator runs here (the official one needs Docker), so the client is a small fake
that records what the SDK's sender would send; the messages themselves are the SDK's own type.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import (
    MessagingEntityNotFoundError,
    ServiceBusConnectionError,
    ServiceBusServerBusyError,
)

from adapters.servicebus_bus import ServiceBusBus
from engine.steps import encode_step_message
from models.errors import PermanentError, TransientError
from models.messages import StepMessage


class FakeSender:
    def __init__(self, queue: str, failures: list[Exception]) -> None:
        self.queue = queue
        self.sent: list[ServiceBusMessage] = []
        self.failures = failures
        self.closed = False

    def send_messages(self, message: ServiceBusMessage, **_: Any) -> None:
        if self.failures:
            raise self.failures.pop(0)
        assert isinstance(message, ServiceBusMessage)
        self.sent.append(message)

    def close(self) -> None:
        self.closed = True


class FakeClient:
    def __init__(self) -> None:
        self.senders: list[FakeSender] = []
        self.failures: list[Exception] = []

    def get_queue_sender(self, queue_name: str) -> FakeSender:
        sender = FakeSender(queue_name, self.failures)
        self.senders.append(sender)
        return sender

    def close(self) -> None:
        pass


def test_step_messages_carry_ids_schedule_correlation_and_trace() -> None:
    client = FakeClient()
    bus = ServiceBusBus(client=client)
    due = datetime(2026, 11, 28, 12, 0, tzinfo=UTC) + timedelta(seconds=30)
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    msg = StepMessage(request_id="01REQ", step_id="storage", attempt=3, traceparent=trace)
    bus.send("steps", encode_step_message(msg, at=due))
    bus.send("steps", encode_step_message(msg.model_copy(update={"attempt": 4})))
    [sender] = client.senders  # reused across sends
    first, second = sender.sent
    assert first.message_id == "01REQ/storage/3" and second.message_id == "01REQ/storage/4"
    assert first.correlation_id == "01REQ"
    assert first.scheduled_enqueue_time_utc == due and second.scheduled_enqueue_time_utc is None
    assert first.content_type == "application/json"
    props = {k.decode() if isinstance(k, bytes) else k: v for k, v in first.application_properties.items()}
    assert props == {"request_id": "01REQ", "step_id": "storage", "attempt": "3", "traceparent": trace}
    assert StepMessage.model_validate_json(b"".join(first.body)) == msg


def test_transient_errors_drop_the_sender_and_permanent_ones_say_what_to_do() -> None:
    client = FakeClient()
    bus = ServiceBusBus(client=client)
    message = encode_step_message(StepMessage(request_id="r", step_id="s", attempt=1))
    client.failures.extend([ServiceBusConnectionError(message="gone"), ServiceBusServerBusyError(message="busy")])
    with pytest.raises(TransientError):
        bus.send("steps", message)
    with pytest.raises(TransientError):
        bus.send("steps", message)
    bus.send("steps", message)
    assert [s.closed for s in client.senders] == [True, True, False]  # a broken sender is not reused
    client.failures.append(MessagingEntityNotFoundError(message="no such queue"))
    with pytest.raises(PermanentError, match="queue does not exist"):
        bus.send("steps", message)


def test_configuration_errors_are_clear() -> None:
    with pytest.raises(PermanentError, match="fullyQualifiedNamespace"):
        ServiceBusBus()


def test_what_goes_over_the_wire_to_an_amqp_peer() -> None:
    """The real SDK, our adapter, a real AMQP 1.0 connection on loopback: what the broker would receive."""
    import json
    import subprocess
    import sys
    import time

    from emulator.server import free_port
    from tests.conftest import ROOT

    port = free_port()
    peer = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "amqp_peer.py"), f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert peer.stdout is not None
        assert "listening" in peer.stdout.readline()
        bus = ServiceBusBus(
            connection_string=(
                f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=RootManageSharedAccessKey;"
                "SharedAccessKey=not-a-real-key;UseDevelopmentEmulator=true"
            )
        )
        trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=30)
        msg = StepMessage(request_id="01REQ", step_id="storage", attempt=3, traceparent=trace)
        bus.send("steps", encode_step_message(msg, at=due))
        bus.send("steps", encode_step_message(msg.model_copy(update={"attempt": 4})))
        bus.close()
        deadline = time.monotonic() + 20
        seen = []
        while len(seen) < 2 and time.monotonic() < deadline:
            line = peer.stdout.readline()
            if line:
                seen.append(json.loads(line))
    finally:
        peer.kill()
        peer.wait(5)
    first, second = seen
    assert first["to"].endswith("/steps")
    assert (first["message_id"], first["correlation_id"], first["content_type"]) == (
        "01REQ/storage/3",
        "01REQ",
        "application/json",
    )
    assert first["properties"] == {"request_id": "01REQ", "step_id": "storage", "attempt": "3", "traceparent": trace}
    assert first["annotations"]["x-opt-scheduled-enqueue-time"] == f"timestamp({int(due.timestamp() * 1000)})"
    assert json.loads(first["body"]) == msg.model_dump()
    assert second["message_id"] == "01REQ/storage/4" and "x-opt-scheduled-enqueue-time" not in second["annotations"]
