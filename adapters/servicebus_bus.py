"""The production bus: Azure Service Bus (`azure-servicebus`).

In Azure the Functions host receives and settles messages; this adapter sends them (deterministic
message ids for duplicate detection, the request id as correlation id, the trace context and ids as
application properties, scheduled enqueue times for Wait and Retry and for the retry copies of
messages whose handling failed) and serves the operators' dead-letter tools. It can also receive,
so the devhost can run against a real namespace.
Senders are kept and reused across invocations; a broken connection drops the cached sender.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, TypeVar

from engine.ports import DeadLetter, OutgoingMessage, ReceivedMessage
from models.errors import PermanentError, TransientError, VendingError
from models.messages import text_properties

T = TypeVar("T")


def translate(exc: Exception, *, what: str) -> VendingError:
    """Translate an azure-servicebus error into our transient or permanent error."""
    from azure.servicebus.exceptions import (
        MessageSizeExceededError,
        MessagingEntityDisabledError,
        MessagingEntityNotFoundError,
        ServiceBusAuthenticationError,
        ServiceBusAuthorizationError,
    )

    if isinstance(exc, VendingError):
        return exc
    name = type(exc).__name__
    if isinstance(exc, MessagingEntityNotFoundError):
        return PermanentError(f"{what} failed: the queue does not exist; check the queue name settings.", code=name)
    if isinstance(exc, MessagingEntityDisabledError):
        return PermanentError(f"{what} failed: the queue is disabled; an operator must enable it.", code=name)
    if isinstance(exc, (ServiceBusAuthenticationError, ServiceBusAuthorizationError)):
        return PermanentError(
            f"{what} failed: the service's identity may not use the namespace; grant it Azure Service Bus Data "
            "Sender/Receiver.",
            code=name,
        )
    if isinstance(exc, MessageSizeExceededError):
        return PermanentError(f"{what} failed: the message is larger than the queue allows.", code=name)
    # Connection, timeout, server busy, quota (queue full) and unknown Service Bus errors clear by themselves.
    return TransientError(f"{what} failed: {name}: {str(exc)[:200]}; retrying.", code=name)


class ServiceBusBus:
    """`Bus` on Azure Service Bus."""

    def __init__(
        self,
        *,
        client: Any = None,
        fully_qualified_namespace: str | None = None,
        connection_string: str | None = None,
        credential: Any = None,
        max_wait_s: float = 5.0,
    ) -> None:
        if client is None:
            client = self._build(fully_qualified_namespace, connection_string, credential)
        self.client = client
        self.max_wait_s = max_wait_s
        self._senders: dict[str, Any] = {}
        self._receivers: dict[str, Any] = {}
        self._locked: dict[str, Any] = {}  # lock token -> (receiver, message) for settlement
        self._lock = threading.Lock()

    @staticmethod
    def _build(namespace: str | None, connection_string: str | None, credential: Any) -> Any:
        from azure.servicebus import ServiceBusClient

        if connection_string:
            return ServiceBusClient.from_connection_string(connection_string, retry_total=1)
        if not namespace:
            raise PermanentError(
                "no Service Bus namespace: set ServiceBusConnection__fullyQualifiedNamespace (identity) "
                "or ServiceBusConnection (connection string)",
                code="ServiceBusNotConfigured",
            )
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        return ServiceBusClient(namespace, credential, retry_total=1)

    def _sender(self, queue: str) -> Any:
        with self._lock:
            if queue not in self._senders:
                self._senders[queue] = self.client.get_queue_sender(queue_name=queue)
            return self._senders[queue]

    def _forget_sender(self, queue: str) -> None:
        with self._lock:
            sender = self._senders.pop(queue, None)
        if sender is not None:
            with suppress(Exception):  # it is already broken
                sender.close()

    def send(self, queue: str, message: OutgoingMessage) -> None:
        """Send one message; Service Bus drops it if its id was seen within the duplicate-detection window."""
        from azure.servicebus import ServiceBusMessage

        msg = ServiceBusMessage(
            message.body,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            application_properties=dict(message.application_properties),  # type: ignore[arg-type]
            scheduled_enqueue_time_utc=message.scheduled_at.astimezone(UTC) if message.scheduled_at else None,
            content_type="application/json",
        )
        try:
            self._sender(queue).send_messages(msg)
        except Exception as exc:
            error = translate(exc, what=f"sending {message.message_id} to '{queue}'")
            if isinstance(error, TransientError):
                self._forget_sender(queue)
            raise error from exc

    # ----- receiving (devhost against a namespace, and operators' dead-letter tools) ----------

    def receive(self, queue: str, *, max_messages: int = 1, wait_s: float = 0.0) -> list[ReceivedMessage]:
        """Receive under peek-lock."""
        with self._lock:
            receiver = self._receivers.get(queue)
        if receiver is None:  # one receiver per queue, kept: opening a link per receive would leak them
            receiver = self._call(
                f"opening a receiver on '{queue}'", lambda: self.client.get_queue_receiver(queue_name=queue)
            )
            with self._lock:
                self._receivers[queue] = receiver
        got = self._call(
            f"receiving from '{queue}'",
            lambda: receiver.receive_messages(max_message_count=max_messages, max_wait_time=wait_s or None),
        )
        out = []
        for m in got:
            token = str(m.lock_token)
            with self._lock:
                self._locked[token] = (receiver, m)
            out.append(_received(queue, m, token))
        return out

    def _settle(self, message: ReceivedMessage, action: Callable[[Any, Any], None]) -> None:
        with self._lock:
            held = self._locked.pop(message.lock_token, None)
        if held is None:
            raise TransientError(f"message {message.message_id} is not locked by this process", code="MessageLockLost")
        receiver, raw = held
        self._call(f"settling {message.message_id}", lambda: action(receiver, raw))

    def complete(self, message: ReceivedMessage) -> None:
        """Remove a locked message for good."""
        self._settle(message, lambda r, m: r.complete_message(m))

    def abandon(self, message: ReceivedMessage) -> None:
        """Release the lock so the message is delivered again."""
        self._settle(message, lambda r, m: r.abandon_message(m))

    def dead_letter(self, message: ReceivedMessage, *, reason: str, description: str) -> None:
        """Move a locked message to the dead-letter queue with a reason."""
        self._settle(message, lambda r, m: r.dead_letter_message(m, reason=reason, error_description=description))

    @contextmanager
    def _dead_letter_receiver(self, queue: str) -> Iterator[Any]:
        from azure.servicebus import ServiceBusSubQueue

        receiver = self._call(
            f"opening the dead-letter queue of '{queue}'",
            lambda: self.client.get_queue_receiver(queue_name=queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER),
        )
        try:
            yield receiver
        finally:
            receiver.close()

    def dead_letters(self, queue: str) -> list[DeadLetter]:
        """Peek at the queue's dead letters (nothing is locked or removed)."""
        with self._dead_letter_receiver(queue) as receiver:
            peeked = self._call(
                f"peeking the dead letters of '{queue}'", lambda: receiver.peek_messages(max_message_count=250)
            )
        return [_dead_letter(queue, m) for m in peeked]

    def remove_dead_letter(self, queue: str, message_id: str, *, sequence: int | None = None) -> bool:
        """Complete the dead letter with this message id (and sequence number, when given); False when there is none."""
        with self._dead_letter_receiver(queue) as receiver:
            for _ in range(20):
                batch = self._call(
                    f"reading the dead letters of '{queue}'",
                    lambda: receiver.receive_messages(max_message_count=50, max_wait_time=self.max_wait_s),
                )
                if not batch:
                    return False
                for m in batch:
                    if m.message_id == message_id and sequence in (None, m.sequence_number):
                        receiver.complete_message(m)
                        return True
                    receiver.abandon_message(m)
        return False

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:
            raise translate(exc, what=what) from exc

    def close(self) -> None:
        """Close senders and the client."""
        for queue in list(self._senders):
            self._forget_sender(queue)
        for receiver in self._receivers.values():
            with suppress(Exception):
                receiver.close()
        self.client.close()


def _props(m: Any) -> dict[str, str]:
    return text_properties(m.application_properties)


def _body(m: Any) -> bytes:
    body = m.body
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    return b"".join(bytes(part) for part in body)


def _received(queue: str, m: Any, token: str) -> ReceivedMessage:
    return ReceivedMessage(
        queue=queue,
        message_id=str(m.message_id),
        body=_body(m),
        correlation_id=m.correlation_id,
        application_properties=_props(m),
        delivery_count=int(m.delivery_count or 1),
        lock_token=token,
        locked_until=m.locked_until_utc or datetime.now(UTC),
        enqueued_at=m.enqueued_time_utc or datetime.now(UTC),
    )


def _dead_letter(queue: str, m: Any) -> DeadLetter:
    return DeadLetter(
        queue=queue,
        message_id=str(m.message_id),
        body=_body(m),
        reason=str(m.dead_letter_reason or ""),
        description=str(m.dead_letter_error_description or ""),
        delivery_count=int(m.delivery_count or 0),
        dead_lettered_at=m.enqueued_time_utc or datetime.now(UTC),
        application_properties=_props(m),
        # Dead-lettering keeps a message's EnqueuedTimeUtc: when the queue first took it in.
        enqueued_at=m.enqueued_time_utc,
        sequence=m.sequence_number,
    )
