"""The embedded bus: Service Bus queue semantics on SQLite.

Peek-lock with lock expiry, delivery count, dead-letter after max deliveries (with a reason),
scheduled messages, and duplicate detection by message id within a window. Safe for many threads
in one process and for several processes on one file (the CLI's `onboard` sends to a running
devhost this way).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.sqlite_base import SqliteDatabase, parse_ts, ts
from engine.ports import DeadLetter, OutgoingMessage, ReceivedMessage
from models.errors import TransientError

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    correlation_id TEXT,
    properties TEXT NOT NULL,
    enqueued_at TEXT NOT NULL,
    visible_at TEXT NOT NULL,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    lock_token TEXT,
    locked_until TEXT,
    dead INTEGER NOT NULL DEFAULT 0,
    dead_reason TEXT,
    dead_description TEXT,
    dead_at TEXT
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, dead, visible_at);
CREATE TABLE IF NOT EXISTS seen_ids (
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (queue, message_id)
);
"""


class LockLostError(TransientError):
    """The message's lock expired (or it was settled) before this settlement."""


def _now() -> datetime:
    return datetime.now(UTC)


class SqliteBus:
    """`Bus` on a SQLite file (or `:memory:`)."""

    def __init__(
        self,
        path: Path | str,
        *,
        lock_s: float = 60.0,
        max_deliveries: int = 10,
        duplicate_window_s: float = 600.0,
        clock: Callable[[], datetime] = _now,
        busy_timeout_s: float = 30.0,
    ) -> None:
        self.db = SqliteDatabase(path, SCHEMA, busy_timeout_s=busy_timeout_s)
        self.lock = timedelta(seconds=lock_s)
        self.max_deliveries = max_deliveries
        self.duplicate_window = timedelta(seconds=duplicate_window_s)
        self.clock = clock
        # One condition per queue: a send wakes the receivers of its own queue only (waking every queue's idle
        # receivers made each of them query the database on every send to any queue).
        self._conditions: dict[str, threading.Condition] = {}
        self._conditions_lock = threading.Lock()

    def _arrived(self, queue: str) -> threading.Condition:
        with self._conditions_lock:
            return self._conditions.setdefault(queue, threading.Condition())

    def probe(self) -> None:
        """Read and write the database once, now; raise `TransientError` saying what is wrong."""
        self.db.probe()

    def send(self, queue: str, message: OutgoingMessage) -> None:
        """Enqueue unless the same message id was sent to this queue within the duplicate window."""
        now = self.clock()
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT seen_at FROM seen_ids WHERE queue = ? AND message_id = ?", (queue, message.message_id)
            ).fetchone()
            if row and row["seen_at"] > ts(now - self.duplicate_window):
                return
            conn.execute(
                "INSERT OR REPLACE INTO seen_ids (queue, message_id, seen_at) VALUES (?, ?, ?)",
                (queue, message.message_id, ts(now)),
            )
            conn.execute(
                "INSERT INTO messages (queue, message_id, body, correlation_id, properties, enqueued_at, visible_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    queue,
                    message.message_id,
                    message.body,
                    message.correlation_id,
                    json.dumps(message.application_properties),
                    ts(now),
                    ts(max(message.scheduled_at or now, now)),
                ),
            )
        arrived = self._arrived(queue)
        with arrived:
            arrived.notify_all()

    def receive(self, queue: str, *, max_messages: int = 1, wait_s: float = 0.0) -> list[ReceivedMessage]:
        """Lock up to `max_messages`; wait up to `wait_s` for one to become available."""
        deadline = self.clock() + timedelta(seconds=wait_s)
        while True:
            got = self._receive_now(queue, max_messages)
            now = self.clock()
            if got or now >= deadline:
                return got
            pause = min((deadline - now).total_seconds(), self._next_visible_in(queue, now), 0.25)
            arrived = self._arrived(queue)
            with arrived:
                arrived.wait(timeout=max(pause, 0.001))

    def _next_visible_in(self, queue: str, now: datetime) -> float:
        row = (
            self.db.conn()
            .execute(
                "SELECT MIN(CASE WHEN locked_until > visible_at THEN locked_until ELSE visible_at END) AS t"
                " FROM messages WHERE queue = ? AND dead = 0",
                (queue,),
            )
            .fetchone()
        )
        nxt = parse_ts(row["t"]) if row and row["t"] else None
        return max((nxt - now).total_seconds(), 0.0) if nxt else 3600.0

    def _receive_now(self, queue: str, max_messages: int) -> list[ReceivedMessage]:
        now = self.clock()
        out: list[ReceivedMessage] = []
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT * FROM messages WHERE queue = ? AND dead = 0 AND visible_at <= ?"
                " AND (locked_until IS NULL OR locked_until <= ?) ORDER BY visible_at, seq LIMIT ?",
                (queue, ts(now), ts(now), max_messages * 4),
            ).fetchall()
            for row in rows:
                if len(out) >= max_messages:
                    break
                if row["delivery_count"] >= self.max_deliveries:
                    conn.execute(
                        "UPDATE messages SET dead = 1, dead_reason = ?, dead_description = ?, dead_at = ?,"
                        " lock_token = NULL, locked_until = NULL WHERE seq = ?",
                        (
                            "MaxDeliveryCountExceeded",
                            f"Message could not be settled within {self.max_deliveries} deliveries.",
                            ts(now),
                            row["seq"],
                        ),
                    )
                    continue
                token = str(uuid.uuid4())
                until = now + self.lock
                conn.execute(
                    "UPDATE messages SET delivery_count = delivery_count + 1, lock_token = ?, locked_until = ?"
                    " WHERE seq = ?",
                    (token, ts(until), row["seq"]),
                )
                out.append(
                    ReceivedMessage(
                        queue=queue,
                        message_id=row["message_id"],
                        body=bytes(row["body"]),
                        correlation_id=row["correlation_id"],
                        application_properties=json.loads(row["properties"]),
                        delivery_count=row["delivery_count"] + 1,
                        lock_token=token,
                        locked_until=until,
                        enqueued_at=parse_ts(row["enqueued_at"]) or now,
                    )
                )
        return out

    def _settle(self, message: ReceivedMessage, sql: str, args: tuple[object, ...]) -> None:
        with self.db.transaction() as conn:
            cur = conn.execute(
                sql + " WHERE queue = ? AND lock_token = ? AND locked_until > ? AND dead = 0",
                (*args, message.queue, message.lock_token, ts(self.clock())),
            )
            if cur.rowcount != 1:
                raise LockLostError(f"the lock on message {message.message_id} expired or was already settled")

    def complete(self, message: ReceivedMessage) -> None:
        """Remove the message for good."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM messages WHERE queue = ? AND lock_token = ? AND locked_until > ? AND dead = 0",
                (message.queue, message.lock_token, ts(self.clock())),
            )
            if cur.rowcount != 1:
                raise LockLostError(f"the lock on message {message.message_id} expired or was already settled")

    def abandon(self, message: ReceivedMessage) -> None:
        """Release the lock: the message is delivered again at once."""
        self._settle(message, "UPDATE messages SET lock_token = NULL, locked_until = NULL", ())
        arrived = self._arrived(message.queue)
        with arrived:
            arrived.notify_all()

    def renew_lock(self, message: ReceivedMessage) -> None:
        """Extend the lock by another lock duration."""
        until = self.clock() + self.lock
        self._settle(message, "UPDATE messages SET locked_until = ?", (ts(until),))
        message.locked_until = until

    def dead_letter(self, message: ReceivedMessage, *, reason: str, description: str) -> None:
        """Move the message to the dead-letter queue with a reason."""
        self._settle(
            message,
            "UPDATE messages SET dead = 1, dead_reason = ?, dead_description = ?, dead_at = ?,"
            " lock_token = NULL, locked_until = NULL",
            (reason, description, ts(self.clock())),
        )

    def dead_letters(self, queue: str) -> list[DeadLetter]:
        """Return the queue's dead letters, oldest first."""
        rows = (
            self.db.conn()
            .execute("SELECT * FROM messages WHERE queue = ? AND dead = 1 ORDER BY dead_at, seq", (queue,))
            .fetchall()
        )
        return [
            DeadLetter(
                queue=queue,
                message_id=r["message_id"],
                body=bytes(r["body"]),
                reason=r["dead_reason"] or "",
                description=r["dead_description"] or "",
                delivery_count=r["delivery_count"],
                dead_lettered_at=parse_ts(r["dead_at"]) or self.clock(),
                application_properties=json.loads(r["properties"]),
                enqueued_at=parse_ts(r["enqueued_at"]),
                sequence=r["seq"],
            )
            for r in rows
        ]

    def remove_dead_letter(self, queue: str, message_id: str, *, sequence: int | None = None) -> bool:
        """Remove the dead letter with this message id (and sequence number, when given); False when there is none."""
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT seq FROM messages WHERE queue = ? AND dead = 1 AND message_id = ? AND (? IS NULL OR seq = ?)"
                " ORDER BY seq LIMIT 1",
                (queue, message_id, sequence, sequence),
            ).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM messages WHERE seq = ?", (row["seq"],))
        return True

    def counts(self, queue: str) -> dict[str, int]:
        """Return how many messages are active, scheduled, locked and dead-lettered."""
        now = ts(self.clock())
        row = (
            self.db.conn()
            .execute(
                "SELECT"
                " SUM(dead = 0 AND visible_at <= ? AND (locked_until IS NULL OR locked_until <= ?)) AS active,"
                " SUM(dead = 0 AND visible_at > ?) AS scheduled,"
                " SUM(dead = 0 AND locked_until > ?) AS locked,"
                " SUM(dead = 1) AS dead FROM messages WHERE queue = ?",
                (now, now, now, now, queue),
            )
            .fetchone()
        )
        return {k: int(row[k] or 0) for k in ("active", "scheduled", "locked", "dead")}
