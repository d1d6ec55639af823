"""Shared SQLite plumbing: one connection per thread, WAL, immediate transactions."""

from __future__ import annotations

import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path


def ts(value: datetime | None) -> str | None:
    """Format a time so that text order is time order."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(value: str | None) -> datetime | None:
    """Read a time written by `ts`."""
    if value is None:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


class SqliteDatabase:
    """A SQLite file shared by threads (one connection each) and by processes (WAL, busy timeout)."""

    def __init__(self, path: Path | str, schema: str) -> None:
        if str(path) == ":memory:":
            # Threads need their own connections, and shared-cache memory databases answer lock
            # conflicts with errors instead of waiting; a private temporary file behaves like production.
            self._tmp = tempfile.TemporaryDirectory(prefix="vending-")
            path = Path(self._tmp.name) / "db.sqlite"
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # One writer at a time inside this process: threads queue on a lock instead of polling
        # SQLite's busy handler, which sleeps in steps of up to 100 ms. Other processes still
        # meet the busy timeout.
        self._writer = threading.Lock()
        self.conn().executescript(schema)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def conn(self) -> sqlite3.Connection:
        """Return this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a write transaction that holds the write lock from its first statement."""
        conn = self.conn()
        with self._writer:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")
