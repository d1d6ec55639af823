"""Shared SQLite plumbing: one connection per thread, WAL, immediate transactions, faults as `TransientError`.

SQLite errors that mean "this file cannot be written, or reached, right now" (read-only, disk full,
disk I/O error, locked past the busy timeout, cannot open) are translated here, at the adapter
boundary, for every statement the stores and the bus run: their callers see a `TransientError`
naming the file and what to fix, never a `sqlite3.OperationalError`.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from models.errors import TransientError


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


@dataclass(frozen=True)
class _Fault:
    code: str
    retry_after_s: float
    sentence: str


_LOCKED = _Fault(
    "StoreLocked",
    2.0,
    "the SQLite database {path} stayed locked by another connection for more than {timeout:g} s: "
    "another process (a second devhost, a long query) is holding it",
)
# Primary result codes (https://www.sqlite.org/rescode.html); extended codes keep these in their low byte.
_FAULTS = {
    8: _Fault(  # SQLITE_READONLY
        "StoreReadOnly",
        30.0,
        "the SQLite database {path} is read-only for this service: make the file, its -wal and -shm files "
        "and their folder writable by the user the service runs as, or set VENDING_DATA_DIR to a writable folder",
    ),
    13: _Fault(  # SQLITE_FULL
        "StoreFull",
        30.0,
        "the disk that holds the SQLite database {path} is full: free space on it",
    ),
    10: _Fault(  # SQLITE_IOERR
        "StoreIOError",
        5.0,
        "the SQLite database {path} could not be read or written (disk I/O error): check the disk and "
        "the file system it is on",
    ),
    5: _LOCKED,  # SQLITE_BUSY
    6: _LOCKED,  # SQLITE_LOCKED
    14: _Fault(  # SQLITE_CANTOPEN
        "StoreCannotOpen",
        30.0,
        "the SQLite database {path} cannot be opened: check that its folder exists and that the service "
        "may read and write there",
    ),
}


def store_fault(exc: sqlite3.Error, *, path: str, busy_timeout_s: float) -> TransientError | None:
    """Return the `TransientError` that a SQLite error on `path` means, or None when it is no such fault."""
    code = getattr(exc, "sqlite_errorcode", None)
    fault = _FAULTS.get(code & 0xFF) if isinstance(code, int) else None
    if fault is None:
        return None
    name = getattr(exc, "sqlite_errorname", "")
    sentence = fault.sentence.format(path=path, timeout=busy_timeout_s)
    return TransientError(f"{sentence} (SQLite: {exc}, {name}).", retry_after_s=fault.retry_after_s, code=fault.code)


class _Connection(sqlite3.Connection):
    """A connection whose faults surface as `TransientError`."""

    db_path = ""
    busy_timeout_s = 0.0
    generation = 0
    database: SqliteDatabase | None = None

    def raise_fault(self, exc: sqlite3.Error) -> None:
        """Raise the `TransientError` that `exc` means, when it is a fault; else return, for the caller to re-raise."""
        error = store_fault(exc, path=self.db_path, busy_timeout_s=self.busy_timeout_s)
        if error is None:
            return
        if self.database is not None:
            self.database.reopen()
        raise error from exc

    def cursor(self, factory: Any = None) -> Any:
        """Return a cursor whose statements and fetches translate faults."""
        return super().cursor(factory or _Cursor)

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        """Run one statement, translating faults."""
        return self.cursor().execute(sql, parameters)  # type: ignore[no-any-return]

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> _Cursor:
        """Run one statement for each set of parameters, translating faults."""
        return self.cursor().executemany(sql, parameters)  # type: ignore[no-any-return]

    def executescript(self, sql_script: str, /) -> _Cursor:
        """Run a script, translating faults."""
        return self.cursor().executescript(sql_script)  # type: ignore[no-any-return]


class _Cursor(sqlite3.Cursor):
    """A cursor of a `_Connection`: a fault in a statement or a fetch surfaces as `TransientError`."""

    def _raise_fault(self, exc: sqlite3.Error) -> None:
        conn = self.connection
        if isinstance(conn, _Connection):
            conn.raise_fault(exc)

    def execute(self, sql: str, parameters: Any = (), /) -> Self:
        """Run one statement, translating faults."""
        try:
            return super().execute(sql, parameters)
        except sqlite3.Error as exc:
            self._raise_fault(exc)
            raise

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> Self:
        """Run one statement for each set of parameters, translating faults."""
        try:
            return super().executemany(sql, seq_of_parameters)
        except sqlite3.Error as exc:
            self._raise_fault(exc)
            raise

    def executescript(self, sql_script: str, /) -> Self:
        """Run a script, translating faults."""
        try:
            super().executescript(sql_script)
        except sqlite3.Error as exc:
            self._raise_fault(exc)
            raise
        return self

    def fetchone(self) -> Any:
        """Return the next row, translating faults."""
        try:
            return super().fetchone()
        except sqlite3.Error as exc:
            self._raise_fault(exc)
            raise

    def fetchmany(self, size: int | None = 1) -> list[Any]:
        """Return the next rows, translating faults."""
        try:
            return super().fetchmany(size)
        except sqlite3.Error as exc:
            self._raise_fault(exc)
            raise

    def fetchall(self) -> list[Any]:
        """Return the remaining rows, translating faults."""
        try:
            return super().fetchall()
        except sqlite3.Error as exc:
            self._raise_fault(exc)
            raise

    def __next__(self) -> Any:
        """Return the next row, translating faults."""
        try:
            return super().__next__()
        except sqlite3.Error as exc:
            self._raise_fault(exc)
            raise


_PROBE_SCHEMA = "CREATE TABLE IF NOT EXISTS vending_probe (id INTEGER PRIMARY KEY, at TEXT NOT NULL)"


class SqliteDatabase:
    """A SQLite file shared by threads (one connection each) and by processes (WAL, busy timeout)."""

    def __init__(self, path: Path | str, schema: str, *, busy_timeout_s: float = 30.0) -> None:
        if str(path) == ":memory:":
            # Threads need their own connections, and shared-cache memory databases answer lock
            # conflicts with errors instead of waiting; a private temporary file behaves like production.
            self._tmp = tempfile.TemporaryDirectory(prefix="vending-")
            path = Path(self._tmp.name) / "db.sqlite"
        self.path = str(path)
        self.busy_timeout_s = busy_timeout_s
        folder = Path(self.path).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransientError(
                f"the folder {folder} of the SQLite database {self.path} cannot be created "
                f"({exc.strerror or exc}): create it, or set VENDING_DATA_DIR to a folder the service may write.",
                retry_after_s=30.0,
                code="StoreCannotOpen",
            ) from exc
        self._local = threading.local()
        # One writer at a time inside this process: threads queue on a lock instead of polling
        # SQLite's busy handler, which sleeps in steps of up to 100 ms. Other processes still
        # meet the busy timeout.
        self._writer = threading.Lock()
        self._generation = 0
        self.conn().executescript(schema)

    def _connect(self) -> _Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
                factory=_Connection,
            )
        except sqlite3.Error as exc:
            if error := store_fault(exc, path=self.path, busy_timeout_s=self.busy_timeout_s):
                raise error from exc
            raise
        conn.db_path = self.path
        conn.busy_timeout_s = self.busy_timeout_s
        conn.generation = self._generation
        conn.database = self
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def reopen(self) -> None:
        """Make every thread open a fresh connection on its next use.

        Called on every fault: a connection opened while its file was read-only or out of reach stays
        so after the file is fixed; a fresh one sees the file as it is now.
        """
        self._generation += 1

    def conn(self) -> sqlite3.Connection:
        """Return this thread's connection (a fresh one after a fault)."""
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.generation != self._generation and not conn.in_transaction:
            self._local.conn = None
            conn.close()
            conn = None
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _rollback(self, conn: sqlite3.Connection) -> None:
        # SQLite itself rolls a transaction back on some faults (a full disk, an I/O error); a
        # ROLLBACK then would fail and hide the fault that matters.
        if not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except (sqlite3.Error, TransientError):
            self.reopen()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run a write transaction that holds the write lock from its first statement."""
        conn = self.conn()
        if not self._writer.acquire(timeout=self.busy_timeout_s):
            raise TransientError(
                f"the SQLite database {self.path} has had a write waiting for more than {self.busy_timeout_s:g} s "
                "behind this process's other writers: a write is stuck, or another process holds the file.",
                retry_after_s=2.0,
                code="StoreLocked",
            )
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                self._rollback(conn)
                raise
            try:
                conn.execute("COMMIT")
            except BaseException:
                self._rollback(conn)
                raise
        finally:
            self._writer.release()

    def _probe_once(self) -> None:
        self.conn().execute("SELECT count(*) FROM sqlite_schema").fetchone()
        with self.transaction() as conn:
            conn.execute(_PROBE_SCHEMA)
            conn.execute(
                "INSERT INTO vending_probe (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                (ts(datetime.now(UTC)),),
            )

    def probe(self) -> None:
        """Read and write the database once, now; raise `TransientError` saying what is wrong and what to do."""
        try:
            self._probe_once()
        except TransientError:
            # This thread's connection may date from before the file was fixed: ask a fresh one.
            self._probe_once()
