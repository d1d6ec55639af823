"""Whether the store and the bus can be read and written now: the checks behind `GET /api/health`.

A part checks itself when it has a `probe()` method (`engine.ports.Probe`): the SQLite store and bus
write and read a row of their database, the Tables store an entity of its index table.
"""

from __future__ import annotations

from engine.ports import Probe


def probe(part: object) -> bool:
    """Check that `part` can be read and written now, raising why not; return False when it has no check."""
    if isinstance(part, Probe):
        part.probe()
        return True
    return False
