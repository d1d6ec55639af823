"""The embedded store: requests, steps and events in SQLite, with versioned conditional writes."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

from adapters.sqlite_base import SqliteDatabase, ts
from adapters.store_limits import check_take, read_takes, slide, write_takes
from adapters.store_rules import FINISHED_SQL, LIVE_SQL, UNFINISHED_SQL, due_of, key_reused, workspace_taken
from engine.ports import Page, VcpuLimit
from models.errors import LimitExceededError, StaleWriteError
from models.events import StatusEvent
from models.records import RequestRecord, RequestStatus, StepRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    status TEXT NOT NULL,
    workspace_key TEXT,
    idempotency_key TEXT UNIQUE,
    updated_at TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_team ON requests (team, id);
CREATE INDEX IF NOT EXISTS requests_status ON requests (status, id);
CREATE INDEX IF NOT EXISTS requests_workspace ON requests (workspace_key, status);
-- Who made a workspace: its key's requests, earliest first (created_at lives in the body). Like every
-- index here it is created when a database is opened, so databases made before it get it too.
CREATE INDEX IF NOT EXISTS requests_owner
    ON requests (lower(workspace_key), julianday(json_extract(body, '$.created_at')), id);
CREATE TABLE IF NOT EXISTS steps (
    request_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    due TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (request_id, step_id)
);
CREATE INDEX IF NOT EXISTS steps_due ON steps (status, due);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_request ON events (request_id, seq);
-- The vCPUs each live request holds against its team: the figure a create claims against.
CREATE TABLE IF NOT EXISTS team_vcpus (
    team TEXT NOT NULL,
    request_id TEXT NOT NULL,
    vcpus INTEGER NOT NULL,
    PRIMARY KEY (team, request_id)
);
-- Replay guards: a key seen in a scope is remembered until its time (epoch seconds) has passed.
CREATE TABLE IF NOT EXISTS remembered (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS remembered_until ON remembered (until);
-- Rate limits: each bucket's takes within its window (a JSON list of epoch seconds).
CREATE TABLE IF NOT EXISTS rate_buckets (
    bucket TEXT PRIMARY KEY,
    takes TEXT NOT NULL
);
"""
PURGE_BATCH = 100
STALLED_STEPS = (
    "SELECT steps.body FROM steps JOIN requests ON requests.id = steps.request_id"  # noqa: S608 - a fixed list
    " WHERE steps.status IN ('queued','running','waiting') AND steps.due < ?"
    " AND requests.status IN " + UNFINISHED_SQL + " ORDER BY steps.due LIMIT ?"
)


def _due(step: StepRecord) -> str:
    return ts(due_of(step)) or ""


class SqliteStore:
    """`Store` on a SQLite file (or `:memory:`), safe for threads and processes."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 30.0) -> None:
        self.db = SqliteDatabase(path, SCHEMA, busy_timeout_s=busy_timeout_s)

    def probe(self) -> None:
        """Read and write the database once, now; raise `TransientError` saying what is wrong."""
        self.db.probe()

    def create_request(
        self, record: RequestRecord, steps: list[StepRecord], *, vcpu_limit: VcpuLimit | None = None
    ) -> tuple[RequestRecord, bool]:
        """Insert a request and its steps atomically, honouring idempotency keys, name reservations and the team limit.

        One immediate transaction holds the write lock from its first statement, so the team's figure
        read here cannot change before the new request's share is added to it.
        """
        with self.db.transaction() as conn:
            if record.idempotency_key:
                row = conn.execute(
                    "SELECT body FROM requests WHERE idempotency_key = ?", (record.idempotency_key,)
                ).fetchone()
                if row:
                    existing = RequestRecord.model_validate_json(row["body"])
                    if existing.body_hash != record.body_hash:
                        raise key_reused(existing.id)
                    return existing, False
            if record.workspace_key and record.status.live:
                row = conn.execute(
                    f"SELECT id FROM requests WHERE workspace_key = ? AND status IN {LIVE_SQL}",  # noqa: S608 - fixed list
                    (record.workspace_key,),
                ).fetchone()
                if row:
                    raise workspace_taken(record, row["id"])
            if vcpu_limit is not None and record.vcpus and record.status.live:
                in_use = self._team_vcpus(conn, record.team)
                if in_use + record.vcpus > vcpu_limit.limit:
                    raise LimitExceededError(
                        team=record.team, asked=record.vcpus, in_use=in_use, limit=vcpu_limit.limit
                    )
            self._hold_vcpus(conn, record)
            conn.execute(
                "INSERT INTO requests (id, team, status, workspace_key, idempotency_key, updated_at, version, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.team,
                    record.status.value,
                    record.workspace_key,
                    record.idempotency_key,
                    ts(record.updated_at),
                    record.version,
                    record.model_dump_json(),
                ),
            )
            conn.executemany(
                "INSERT INTO steps (request_id, step_id, seq, status, due, version, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (s.request_id, s.step_id, i, s.status.value, _due(s), s.version, s.model_dump_json())
                    for i, s in enumerate(steps)
                ],
            )
        return record, True

    def get_request(self, request_id: str) -> RequestRecord | None:
        """Return one request, or None."""
        row = self.db.conn().execute("SELECT body FROM requests WHERE id = ?", (request_id,)).fetchone()
        return RequestRecord.model_validate_json(row["body"]) if row else None

    def find_by_idempotency_key(self, key: str) -> RequestRecord | None:
        """Return the request made with this idempotency key, or None."""
        row = self.db.conn().execute("SELECT body FROM requests WHERE idempotency_key = ?", (key,)).fetchone()
        return RequestRecord.model_validate_json(row["body"]) if row else None

    def workspace_owner(self, workspace_key: str) -> str | None:
        """Return the team of the first request recorded with this workspace key (lowercased), or None.

        Earliest by `created_at`, then by id; whatever its status became, except `rejected` (a
        rejected record names no workspace and never claimed one). Requests are never deleted, so
        the first owner stays the owner.
        """
        row = (
            self.db.conn()
            .execute(
                "SELECT team FROM requests WHERE lower(workspace_key) = ? AND status != 'rejected'"
                " ORDER BY julianday(json_extract(body, '$.created_at')), id LIMIT 1",
                (workspace_key.lower(),),
            )
            .fetchone()
        )
        return str(row["team"]) if row else None

    def list_requests(
        self,
        *,
        team: str | None = None,
        status: RequestStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """List requests newest first (ids are ULIDs, so id order is time order)."""
        clauses, args = [], []
        if team:
            clauses.append("team = ?")
            args.append(team)
        if status:
            clauses.append("status = ?")
            args.append(status.value)
        if cursor:
            clauses.append("id < ?")
            args.append(cursor)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = (
            self.db.conn()
            .execute(
                f"SELECT id, body FROM requests {where} ORDER BY id DESC LIMIT ?",  # noqa: S608 (fixed clauses)
                (*args, limit + 1),
            )
            .fetchall()
        )
        items = [RequestRecord.model_validate_json(r["body"]) for r in rows[:limit]]
        return Page(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    def live_requests(self, *, team: str) -> list[RequestRecord]:
        """Return the team's requests that hold resources."""
        rows = (
            self.db.conn()
            .execute(
                f"SELECT body FROM requests WHERE team = ? AND status IN {LIVE_SQL}",  # noqa: S608 - fixed list
                (team,),
            )
            .fetchall()
        )
        return [RequestRecord.model_validate_json(r["body"]) for r in rows]

    def update_request(self, record: RequestRecord) -> RequestRecord:
        """Write if the version is current; return the record with its new version."""
        new = record.model_copy(update={"version": record.version + 1})
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE requests SET status = ?, updated_at = ?, version = ?, body = ? WHERE id = ? AND version = ?",
                (new.status.value, ts(new.updated_at), new.version, new.model_dump_json(), record.id, record.version),
            )
            if cur.rowcount != 1:
                raise StaleWriteError(f"request {record.id} changed since version {record.version}")
            self._hold_vcpus(conn, new)
        return new

    @staticmethod
    def _hold_vcpus(conn: sqlite3.Connection, record: RequestRecord) -> None:
        """Make the team's figure hold the record's vCPUs while it is live, and give them back when not."""
        if record.status.live and record.vcpus:
            conn.execute(
                "INSERT OR REPLACE INTO team_vcpus (team, request_id, vcpus) VALUES (?, ?, ?)",
                (record.team, record.id, record.vcpus),
            )
        else:
            conn.execute("DELETE FROM team_vcpus WHERE team = ? AND request_id = ?", (record.team, record.id))

    @staticmethod
    def _team_vcpus(conn: sqlite3.Connection, team: str) -> int:
        row = conn.execute("SELECT COALESCE(SUM(vcpus), 0) AS n FROM team_vcpus WHERE team = ?", (team,)).fetchone()
        return int(row["n"])

    def team_vcpus(self, team: str) -> int:
        """Return the vCPUs the team's live requests hold."""
        return self._team_vcpus(self.db.conn(), team)

    def get_steps(self, request_id: str) -> list[StepRecord]:
        """Return every step of a request, in plan order."""
        rows = (
            self.db.conn().execute("SELECT body FROM steps WHERE request_id = ? ORDER BY seq", (request_id,)).fetchall()
        )
        return [StepRecord.model_validate_json(r["body"]) for r in rows]

    def get_step(self, request_id: str, step_id: str) -> StepRecord | None:
        """Return one step, or None."""
        row = (
            self.db.conn()
            .execute("SELECT body FROM steps WHERE request_id = ? AND step_id = ?", (request_id, step_id))
            .fetchone()
        )
        return StepRecord.model_validate_json(row["body"]) if row else None

    def update_step(self, step: StepRecord) -> StepRecord:
        """Write if the version is current (a compare-and-swap on the version)."""
        new = step.model_copy(update={"version": step.version + 1})
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE steps SET status = ?, due = ?, version = ?, body = ?"
                " WHERE request_id = ? AND step_id = ? AND version = ?",
                (
                    new.status.value,
                    _due(new),
                    new.version,
                    new.model_dump_json(),
                    step.request_id,
                    step.step_id,
                    step.version,
                ),
            )
            if cur.rowcount != 1:
                raise StaleWriteError(f"step {step.request_id}/{step.step_id} changed since version {step.version}")
        return new

    def add_steps(self, request_id: str, steps: list[StepRecord]) -> None:
        """Add step records after the request's others; a step that has a record already is left as it is."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT COALESCE(MAX(seq), -1) AS n FROM steps WHERE request_id = ?", (request_id,))
            first = int(row.fetchone()["n"]) + 1
            conn.executemany(
                "INSERT OR IGNORE INTO steps (request_id, step_id, seq, status, due, version, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (request_id, s.step_id, first + i, s.status.value, _due(s), s.version, s.model_dump_json())
                    for i, s in enumerate(steps)
                ],
            )

    def stalled_steps(self, *, before: datetime, limit: int = 500) -> list[StepRecord]:
        """Return unfinished requests' queued, waiting or running steps due (or leased) before `before`."""
        rows = (
            self.db.conn()
            .execute(
                STALLED_STEPS,
                (ts(before), limit),
            )
            .fetchall()
        )
        return [StepRecord.model_validate_json(r["body"]) for r in rows]

    def unfinished_requests(self, *, before: datetime, limit: int = 500) -> list[RequestRecord]:
        """Return requests with a run in flight, last changed before `before`."""
        rows = (
            self.db.conn()
            .execute(
                f"SELECT body FROM requests WHERE status IN {UNFINISHED_SQL} AND updated_at < ? LIMIT ?",  # noqa: S608
                (ts(before), limit),
            )
            .fetchall()
        )
        return [RequestRecord.model_validate_json(r["body"]) for r in rows]

    def pending_notifications(self, *, before: datetime, limit: int = 500) -> list[RequestRecord]:
        """Return finished requests, last changed before `before`, whose callback is still pending."""
        rows = (
            self.db.conn()
            .execute(
                f"SELECT body FROM requests WHERE (status IN {FINISHED_SQL}"  # noqa: S608
                " OR (json_extract(body, '$.notification.about') = 'approval' AND status != 'rejected'))"
                " AND updated_at < ? AND json_extract(body, '$.notification.status') = 'pending' LIMIT ?",
                (ts(before), limit),
            )
            .fetchall()
        )
        return [RequestRecord.model_validate_json(r["body"]) for r in rows]

    def append_event(self, event: StatusEvent) -> None:
        """Keep an event for the request's timeline."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO events (request_id, body) VALUES (?, ?)", (event.request_id, event.model_dump_json())
            )

    def list_events(self, request_id: str) -> list[StatusEvent]:
        """Return a request's events, oldest first."""
        rows = (
            self.db.conn()
            .execute("SELECT body FROM events WHERE request_id = ? ORDER BY seq", (request_id,))
            .fetchall()
        )
        return [StatusEvent.model_validate_json(r["body"]) for r in rows]

    def remember_once(self, scope: str, key: str, *, now: datetime, until: datetime) -> bool:
        """Remember `key` in `scope` until `until`; True the first time, False while it is remembered."""
        at = now.timestamp()
        with self.db.transaction() as conn:
            # Lazily, a few expired entries go with each write; the index keeps this cheap.
            conn.execute(
                "DELETE FROM remembered WHERE rowid IN (SELECT rowid FROM remembered WHERE until <= ? LIMIT ?)",
                (at, PURGE_BATCH),
            )
            row = conn.execute("SELECT until FROM remembered WHERE scope = ? AND key = ?", (scope, key)).fetchone()
            if row is not None and row["until"] > at:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO remembered (scope, key, until) VALUES (?, ?, ?)",
                (scope, key, until.timestamp()),
            )
        return True

    def take(self, bucket: str, *, now: datetime, limit: int, window_s: float) -> float | None:
        """Take one from the bucket's sliding window in one immediate transaction; None, or the seconds to wait."""
        check_take(limit, window_s)
        with self.db.transaction() as conn:
            row = conn.execute("SELECT takes FROM rate_buckets WHERE bucket = ?", (bucket,)).fetchone()
            takes, wait = slide(read_takes(row["takes"] if row else None), now=now, limit=limit, window_s=window_s)
            if wait is None:
                conn.execute(
                    "INSERT OR REPLACE INTO rate_buckets (bucket, takes) VALUES (?, ?)", (bucket, write_takes(takes))
                )
        return wait
