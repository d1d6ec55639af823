"""Whether the store and the bus can be read and written now: the checks behind `GET /api/health`.

A part checks itself when it has a `probe()` method (the `Probe` protocol). Until the stores carry
one, the parts built on `SqliteDatabase` (the SQLite store and bus) are probed through it, and the
Tables store by writing and reading one entity in its index table.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from adapters.sqlite_base import SqliteDatabase
from adapters.tables_store import TablesStore, translated

PROBE_PARTITION = "probe"
PROBE_ROW = "health"


@runtime_checkable
class Probe(Protocol):
    """A part that can check itself with one cheap read and write."""

    def probe(self) -> None:
        """Read and write once, now; raise `TransientError` (or `PermanentError`) saying what is wrong."""
        ...


def probe_tables(store: TablesStore) -> None:
    """Write and read back the health entity of the Tables store's index table."""
    entity = {"PartitionKey": PROBE_PARTITION, "RowKey": PROBE_ROW, "At": datetime.now(UTC)}
    with translated("writing the health check entity"):
        store.index.upsert_entity(entity)
    with translated("reading the health check entity"):
        store.index.get_entity(PROBE_PARTITION, PROBE_ROW)


def probe(part: object) -> bool:
    """Check that `part` can be read and written now, raising why not; return False when it has no check."""
    if isinstance(part, Probe):
        part.probe()
        return True
    db = getattr(part, "db", None)
    if isinstance(db, SqliteDatabase):
        db.probe()
        return True
    if isinstance(part, TablesStore):
        probe_tables(part)
        return True
    return False
