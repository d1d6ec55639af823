"""The production store: Azure Table Storage (`azure-data-tables`), with the contract of the SQLite store.

Three tables, named from a prefix (`vending` by default):

- `<prefix>requests`: the partition is the request id. Row `request` holds the request record and
  rows `step-<step id>` its steps. One partition per request because the reads that matter most are
  "one request with all its steps" (a single partition query) and because a request and its steps
  can then be created in one entity-group transaction. Each step is its own entity with its own
  ETag, so steps of one request never contend with each other; only writers of the same step do.
- `<prefix>index`: pointers for the listings and the sweeper, and create-only claims.
  Pointer partitions are `all`, `team-<team>`, `status-<status>`, `live-<team>` (requests holding
  resources) and `notify` (finished requests whose callback is pending); each holds one row per
  request keyed by its inverted id, because Tables return rows in ascending key order and the
  listings want newest first (request ids are ULIDs, so id order is time order). The sweeper reads
  `status-accepted` and `status-provisioning`, which stay small, never a table scan. Claims are
  single entities: `key-<sha256 of the idempotency key>` and `workspace-<sha256 of the workspace
  key>`; inserting one is the create-only write that makes them exclusive. Who made a workspace is
  the entity `workspace-owner-<sha256 of the lowercased workspace key>` / `owner`, holding the team
  of the first request that claimed the key: inserted only if absent, never replaced or deleted.
- `<prefix>events`: the partition is the request id; rows sort in append order.

Replay guards and rate limits live in the index table too. A remembered key is the entity
`once-<scope>` / `<key>` with its `Until`: inserting it is the create-only write that makes "first
time" exclusive across instances (an insert conflict is a replay, unless the entry has expired, when
it is taken over with an ETag-conditional replace); expired entries of a scope are purged lazily, at
most once a minute per instance. A rate limit bucket is the entity `rate-<bucket>` / `window` holding
its sliding window's takes; a take is an ETag-conditional write, retried when another writer won
(412), so concurrent takes never exceed the limit together.

A team's vCPU figure is one entity in the index table, `vcpus-<team>` / `team`, listing the live
requests that hold vCPUs (`{request id: {vcpus, at}}`). A create adds its request to it with an
ETag-conditional write after checking the sum against the limit, so concurrent creates of one team
are serialised on that entity and can never exceed the limit together. The list can only ever say
too much (a crash after the claim, a release that failed): before refusing a create, and whenever
the figure is read, each holder is checked against its record and ones that no longer hold (not
live, or never written and older than the claim grace) are not counted.

The record is the truth and pointers are hints. A pointer is added before a record enters a listing
and removed after it leaves, and every listing reads the pointed record and keeps it only if it
belongs, so a pointer left behind by a crash is never wrong, only extra (and readers prune it).

Every status change is an ETag-conditional write: a step update replaces the entity only if it is
unchanged since the version the caller read. Step ETags are remembered per (step, version) from reads
and writes, so the common write needs no extra read; a version is written once, so an ETag
remembered for it is either still current or refused by the service (HTTP 412: `StaleWriteError`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter

from adapters.store_limits import check_take, read_takes, slide, write_takes
from adapters.store_rules import (
    IN_FLIGHT_STEPS,
    UNFINISHED,
    due_of,
    key_reused,
    notification_pending,
    workspace_taken,
)
from engine.ports import Page, VcpuLimit
from models.errors import (
    InvalidInputError,
    LimitExceededError,
    PermanentError,
    Problem,
    StaleWriteError,
    TransientError,
    VendingError,
)
from models.events import StatusEvent
from models.records import RequestRecord, RequestStatus, StepRecord

if TYPE_CHECKING:
    from azure.data.tables import TableClient, TableServiceClient

log = logging.getLogger(__name__)

REQUEST_ROW = "request"
STEP_ROW = "step-"
OWNER_ROW = "owner"
# Limits of the service: a string property holds 64 KiB (32 Ki UTF-16 code units), an entity 1 MiB,
# a transaction 100 entities and 4 MiB. Bodies are split into string properties `Body0`..`BodyN`
# (readable in Storage Explorer); 15 full chunks stay under the entity limit with room for the rest.
CHUNK_UNITS = 32_000
MAX_CHUNKS = 15
MAX_BODY_UNITS = CHUNK_UNITS * MAX_CHUNKS
BATCH_OPS = 100
BATCH_BYTES = 3_500_000
_SAFE_KEY = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
PURGE_EVERY = timedelta(minutes=1)
PURGE_BATCH = 100


def table_names(prefix: str = "vending") -> dict[str, str]:
    """Return the store's table names (letters and digits, 3 to 63 characters, a letter first)."""
    names = {"requests": f"{prefix}requests", "index": f"{prefix}index", "events": f"{prefix}events"}
    for name in names.values():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", name):
            raise PermanentError(
                f"table name '{name}' is not valid: the prefix must be letters and digits, starting with a letter, "
                "and short enough for names of at most 63 characters.",
                code="InvalidTablePrefix",
            )
    return names


def inverted(request_id: str) -> str:
    """Return a row key that sorts ascending in the reverse order of `request_id` (newest first)."""
    # Each byte b becomes the hex of 255-b; the closing "z" sorts after every hex digit, so an id
    # that is a prefix of another sorts after it, as it does in descending order.
    return "".join(f"{255 - b:02x}" for b in request_id.encode()) + "z"


def _key_part(text: str) -> str:
    # Keys may not hold / \ # ? or control characters: anything unusual is hashed.
    return text if _SAFE_KEY.match(text) else "h" + hashlib.sha256(text.encode()).hexdigest()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _owner_partition(workspace_key: str) -> str:
    """Return the partition of a workspace's owner entity (the key already lowercased)."""
    return f"workspace-owner-{_digest(workspace_key)}"


def _units(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2


def split_body(text: str) -> list[str]:
    """Split text into pieces of at most CHUNK_UNITS UTF-16 code units each."""
    if text.isascii():
        return [text[i : i + CHUNK_UNITS] for i in range(0, len(text), CHUNK_UNITS)] or [""]
    chunks, start, units = [], 0, 0
    for i, char in enumerate(text):
        width = 2 if ord(char) > 0xFFFF else 1
        if units + width > CHUNK_UNITS:
            chunks.append(text[start:i])
            start, units = i, 0
        units += width
    chunks.append(text[start:])
    return chunks


class RecordTooLargeError(PermanentError):
    """A record bigger than one table entity can hold."""

    def __init__(self, what: str, units: int) -> None:
        super().__init__(
            f"{what} is {units * 2:,} bytes once stored; a table entity holds at most {MAX_BODY_UNITS * 2:,}.",
            code="RecordTooLarge",
        )
        self.units = units


def _body_properties(text: str, what: str) -> dict[str, Any]:
    chunks = split_body(text)
    if len(chunks) > MAX_CHUNKS:
        raise RecordTooLargeError(what, _units(text))
    props: dict[str, Any] = {"BodyChunks": len(chunks)}
    props.update({f"Body{i}": chunk for i, chunk in enumerate(chunks)})
    return props


def _body(entity: Any) -> str:
    return "".join(entity[f"Body{i}"] for i in range(int(entity["BodyChunks"])))


def _etag(entity_or_meta: Any) -> str:
    meta = getattr(entity_or_meta, "metadata", entity_or_meta)
    return str(meta["etag"])


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value else None
    except ValueError:
        return None


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Translate azure-data-tables errors into the service's error classes."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceModifiedError,
        ServiceRequestError,
        ServiceResponseError,
    )

    try:
        yield
    except VendingError:
        raise
    except ResourceModifiedError as exc:
        raise StaleWriteError(f"{what}: the entity changed since it was read") from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientError(
            f"the state store cannot be reached ({what}): {type(exc).__name__}.", code="StoreUnavailable"
        ) from exc
    except ClientAuthenticationError as exc:
        raise PermanentError(
            f"the state store refused the service's identity ({what}); grant it Storage Table Data Contributor "
            "on the storage account, or fix the TablesConnection setting.",
            code="StoreAccessDenied",
        ) from exc
    except HttpResponseError as exc:
        status = exc.status_code or 0
        code = getattr(exc, "error_code", None) or str(status)
        if status == 403:
            raise PermanentError(
                f"the state store refused {what} (403 {code}); grant the service's identity Storage Table Data "
                "Contributor on the storage account.",
                code="StoreAccessDenied",
            ) from exc
        if status in (408, 429, 500, 502, 503, 504):
            raise TransientError(
                f"the state store is busy or failing ({what}: {status} {code}).",
                retry_after_s=_retry_after(exc),
                code="StoreUnavailable",
            ) from exc
        raise PermanentError(f"the state store refused {what}: {status} {code}.", code="StoreError") from exc


class _Etags:
    """A bounded map from (partition, row, version) to the ETag the service gave that version."""

    def __init__(self, size: int = 50_000) -> None:
        self._items: OrderedDict[tuple[str, str, int], str] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def put(self, partition: str, row: str, version: int, etag: str) -> None:
        with self._lock:
            self._items[(partition, row, version)] = etag
            self._items.move_to_end((partition, row, version))
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def pop(self, partition: str, row: str, version: int) -> str | None:
        with self._lock:
            return self._items.pop((partition, row, version), None)


def _memberships(record: RequestRecord) -> set[str]:
    """Return the pointer partitions a record belongs in, as it is now."""
    team = _key_part(record.team)
    parts = {"all", f"team-{team}", f"status-{record.status.value}"}
    if record.status.live:
        parts.add(f"live-{team}")
    if notification_pending(record):
        parts.add("notify")
    return parts


class _Holder(BaseModel):
    """One live request's share of its team's vCPU figure, and when it was claimed."""

    vcpus: int
    at: datetime


_Holders = TypeAdapter(dict[str, _Holder])


@dataclass(frozen=True)
class _Claim:
    partition: str
    etag: str


def connect(
    *,
    connection_string: str | None = None,
    endpoint: str | None = None,
    credential: Any = None,
    timeout_s: float = 10.0,
) -> TableServiceClient:
    """Build a `TableServiceClient` from a connection string or an endpoint and an Entra ID credential.

    Connections are pooled for many worker threads; the SDK retries a request at most twice, since the
    engine retries whole steps with its own backoff.
    """
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from azure.data.tables import TableServiceClient
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=64))
    session.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=64))
    options: dict[str, Any] = {
        "transport": RequestsTransport(session=session, session_owner=True),
        "retry_total": 2,
        "retry_backoff_factor": 0.2,
        "connection_timeout": timeout_s,
        "read_timeout": timeout_s,
    }
    if connection_string:
        return TableServiceClient.from_connection_string(connection_string, **options)
    if endpoint:
        return TableServiceClient(endpoint=endpoint, credential=credential, **options)
    raise PermanentError(
        "the Tables store needs TablesConnection (a connection string; UseDevelopmentStorage=true for Azurite) "
        "or TablesConnection__tableServiceUri (https://<account>.table.core.windows.net, with the managed identity).",
        code="StoreNotConfigured",
    )


class TablesStore:
    """`Store` on Azure Table Storage."""

    def __init__(
        self,
        service: TableServiceClient,
        *,
        prefix: str = "vending",
        page_size: int = 1000,
        claim_grace_s: float = 30.0,
        claim_wait_s: float = 2.0,
        create_tables: bool = True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.names = table_names(prefix)
        self.page_size = page_size
        self.claim_grace = timedelta(seconds=claim_grace_s)
        self.claim_wait_s = claim_wait_s
        self.clock = clock
        self._service = service
        self._etags = _Etags()
        self._event_lock = threading.Lock()
        self._last_event_ns = 0
        self._purged: dict[str, datetime] = {}
        self.url = str(service.url).rstrip("/")
        if create_tables:
            try:
                self._create_tables()
            except TransientError as exc:
                raise TransientError(
                    f"{exc} Is the Table service at {self.url} running?", code=exc.code, retry_after_s=exc.retry_after_s
                ) from exc
        self.requests: TableClient = service.get_table_client(self.names["requests"])
        self.index: TableClient = service.get_table_client(self.names["index"])
        self.events: TableClient = service.get_table_client(self.names["events"])

    def _create_tables(self) -> None:
        for name in self.names.values():
            try:
                with translated(f"creating table {name}"):
                    self._service.create_table_if_not_exists(name)
            except PermanentError as exc:
                if exc.code != "StoreAccessDenied":
                    raise
                # An identity with data rights only may not create tables (infra creates them then);
                # a wrong key or identity cannot read either, and that must stop the start.
                self._probe(name)
                log.info("table %s was not created here (%s); it exists and is readable", name, exc)

    def _probe(self, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        table = self._service.get_table_client(name)
        try:
            with translated(f"reading table {name}"):
                next(iter(table.query_entities("PartitionKey eq 'probe'", results_per_page=1)), None)
        except PermanentError as exc:
            if isinstance(exc.__cause__, ResourceNotFoundError):
                raise PermanentError(
                    f"table {name} does not exist and the service may not create it; deploy infra/ or grant "
                    "Storage Table Data Contributor.",
                    code="StoreTableMissing",
                ) from exc
            raise

    def close(self) -> None:
        """Close the connections."""
        self._service.close()

    def probe(self) -> None:
        """Write and read back one health entity in the index table; raise why not."""
        entity = {"PartitionKey": "probe", "RowKey": "health", "At": self.clock()}
        with translated("writing the health check entity"):
            self.index.upsert_entity(entity)
        with translated("reading the health check entity"):
            self.index.get_entity("probe", "health")

    # ----- entities ---------------------------------------------------------------------------

    def _request_entity(self, record: RequestRecord, *, creating: bool) -> dict[str, Any]:
        text = record.model_dump_json()
        try:
            body = _body_properties(text, f"request {record.id}")
        except RecordTooLargeError as exc:
            if not creating:
                raise
            raise InvalidInputError(
                [
                    Problem(
                        "(body)",
                        f"the request is too large to keep: {exc}; send fewer or shorter members, tags or "
                        "descriptions.",
                        "too_large",
                    )
                ],
                title="The request is too large.",
            ) from exc
        return {
            "PartitionKey": record.id,
            "RowKey": REQUEST_ROW,
            "Team": record.team,
            "Status": record.status.value,
            "UpdatedAt": record.updated_at,
            "Version": record.version,
            **body,
        }

    def _step_entity(self, step: StepRecord, seq: int | None = None) -> dict[str, Any]:
        entity = {
            "PartitionKey": step.request_id,
            "RowKey": STEP_ROW + step.step_id,
            "Status": step.status.value,
            "Due": due_of(step),
            "UpdatedAt": step.updated_at,
            "Version": step.version,
            **_body_properties(step.model_dump_json(), f"step {step.request_id}/{step.step_id}"),
        }
        if seq is not None:
            entity["Seq"] = seq
        return entity

    def _read_request(self, entity: Any) -> RequestRecord:
        # No ETag is remembered: a request update reads the entity anyway (its old status says which
        # pointers move), and requests are read far more often than steps, whose ETags the cache keeps.
        return RequestRecord.model_validate_json(_body(entity))

    def _read_step(self, entity: Any) -> StepRecord:
        step = StepRecord.model_validate_json(_body(entity))
        self._etags.put(step.request_id, STEP_ROW + step.step_id, step.version, _etag(entity))
        return step

    def _get(self, table: TableClient, partition: str, row: str) -> Any | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None

    # ----- requests ---------------------------------------------------------------------------

    def create_request(
        self, record: RequestRecord, steps: list[StepRecord], *, vcpu_limit: VcpuLimit | None = None
    ) -> tuple[RequestRecord, bool]:
        """Create a request and its steps, honouring idempotency keys, workspace name claims and the team limit.

        Order matters for crashes: claims first (key, workspace, the team's vCPUs, the workspace's
        owner), then pointers, then the steps and, in the last transaction, the request entity. Until
        that entity exists nothing is visible; claims left by a crash are taken over after
        `claim_grace_s`, except the owner entity, which stays (see `_own_workspace`).
        """
        request_entity = self._request_entity(record, creating=True)
        step_entities = [self._step_entity(s, seq=i) for i, s in enumerate(steps)]
        claims: list[_Claim] = []
        with translated(f"creating request {record.id}"):
            if record.idempotency_key:
                existing, claim = self._claim_key(record)
                if existing is not None:
                    return existing, False
                if claim:
                    claims.append(claim)
            try:
                if record.workspace_key and record.status.live:
                    claims.append(self._claim_workspace(record))
                self._hold_vcpus(record, vcpu_limit)
                if record.workspace_key and record.status.live:
                    self._own_workspace(record)  # never released: see `_own_workspace`
                for partition in _memberships(record):
                    self._add_pointer(partition, record)
                self._write_request(request_entity, step_entities)
            except BaseException:
                if self._written(record.id):
                    # The write went through though its answer was lost: the request exists, so its
                    # key, its name and its vCPUs stay claimed (the caller's retry finds it by its key).
                    raise
                for claim in claims:
                    self._release(claim)
                with suppress(Exception):  # a holder left behind is not counted once its claim grace is over
                    self._give_back_vcpus(record)
                raise
        # A create slower than the claim grace may have had its share pruned meanwhile: count it again.
        self._still_held(record)
        return record, True

    def _written(self, request_id: str) -> bool:
        try:
            return self.get_request(request_id) is not None
        except Exception:  # noqa: BLE001 - cannot tell: release as before; the record decides later
            return False

    def _still_held(self, record: RequestRecord) -> None:
        """Add a live record back to its team's figure if a pruner took it out (the figure never says too little)."""
        if record.vcpus and record.status.live:
            try:
                self._hold_vcpus(record, None)
            except Exception as exc:  # noqa: BLE001 - the record is written; log and let the next check see it
                log.warning("request %s could not be counted in its team's vCPUs: %s", record.id, exc)

    # ----- the team's vCPU figure -------------------------------------------------------------

    def _vcpus_entity(self, team: str) -> tuple[Any | None, dict[str, _Holder]]:
        entity = self._get(self.index, f"vcpus-{_key_part(team)}", "team")
        if entity is None:
            return None, {}
        return entity, _Holders.validate_json(_body(entity))

    def _write_vcpus(self, team: str, current: Any | None, holders: dict[str, _Holder]) -> bool:
        """Write the team's holders if the entity is unchanged since read; False when another writer won."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        entity = {
            "PartitionKey": f"vcpus-{_key_part(team)}",
            "RowKey": "team",
            "Team": team,
            "VcpusHeld": sum(h.vcpus for h in holders.values()),
            **_body_properties(_Holders.dump_json(holders).decode(), f"the vCPU figure of team {team}"),
        }
        try:
            if current is None:
                self.index.create_entity(entity)
            else:
                self.index.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=_etag(current), match_condition=MatchConditions.IfNotModified
                )
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def _still_holding(self, request_id: str, holder: _Holder) -> bool:
        if self.clock() - holder.at < self.claim_grace:
            return True  # claimed just now: being created, or being made live again before its record is written
        record = self.get_request(request_id)
        return record is not None and record.status.live

    def _held(self, holders: dict[str, _Holder]) -> dict[str, _Holder]:
        """Return the holders that still hold: their request is live, or is being created right now."""
        return {rid: h for rid, h in holders.items() if self._still_holding(rid, h)}

    def _hold_vcpus(self, record: RequestRecord, limit: VcpuLimit | None) -> None:
        """Add the record to its team's figure, checking the limit first when one is given."""
        if not (record.vcpus and record.status.live):
            return
        for attempt in range(60):
            current, holders = self._vcpus_entity(record.team)
            if record.id in holders and holders[record.id].vcpus == record.vcpus:
                return
            if limit is not None and sum(h.vcpus for h in holders.values()) + record.vcpus > limit.limit:
                holders = self._held(holders)  # what a crash or a failed release left is not counted
                in_use = sum(h.vcpus for h in holders.values())
                if in_use + record.vcpus > limit.limit:
                    raise LimitExceededError(team=record.team, asked=record.vcpus, in_use=in_use, limit=limit.limit)
            holders[record.id] = _Holder(vcpus=record.vcpus, at=self.clock())
            if self._write_vcpus(record.team, current, holders):
                return
            time.sleep(random.uniform(0.005, 0.02 * min(attempt + 1, 10)))  # noqa: S311 - jitter, not secrecy
        raise TransientError(
            f"the vCPU figure of team '{record.team}' is contended; send the request again.",
            retry_after_s=1.0,
            code="StoreBusy",
        )

    def _give_back_vcpus(self, record: RequestRecord) -> None:
        """Remove the record from its team's figure (nothing to do when it holds none)."""
        for _ in range(60):
            current, holders = self._vcpus_entity(record.team)
            if record.id not in holders:
                return
            del holders[record.id]
            if self._write_vcpus(record.team, current, holders):
                return
            time.sleep(random.uniform(0.005, 0.05))  # noqa: S311 - jitter, not secrecy
        raise TransientError(f"the vCPU figure of team '{record.team}' is contended.", code="StoreBusy")

    def team_vcpus(self, team: str) -> int:
        """Return the vCPUs the team's live requests hold (holders checked against their records)."""
        with translated(f"reading the vCPU figure of team {team}"):
            _, holders = self._vcpus_entity(team)
            return sum(h.vcpus for h in self._held(holders).values())

    def _write_request(self, request_entity: dict[str, Any], step_entities: list[dict[str, Any]]) -> None:
        from azure.data.tables import UpdateMode

        # Steps first, in as many transactions as the limits need; the request entity last. With up to
        # 99 steps (every plan short of 100 principals) all of it is a single atomic transaction.
        operations: list[tuple[Any, ...]] = [("upsert", e, {"mode": UpdateMode.REPLACE}) for e in step_entities]
        operations.append(("create", request_entity))
        batch: list[tuple[Any, ...]] = []
        size = 0
        for operation in operations:
            weight = sum(len(str(v)) * 2 for v in operation[1].values()) + 512
            if batch and (len(batch) == BATCH_OPS or size + weight > BATCH_BYTES):
                self.requests.submit_transaction(batch)
                batch, size = [], 0
            batch.append(operation)
            size += weight
        self.requests.submit_transaction(batch)

    def _claim(self, partition: str, row: str, properties: dict[str, Any]) -> tuple[str | None, Any]:
        """Insert a claim entity; return (its etag, None) when created, else (None, the existing entity)."""
        from azure.core.exceptions import ResourceExistsError

        entity = {"PartitionKey": partition, "RowKey": row, "ClaimedAt": self.clock(), **properties}
        try:
            return _etag(self.index.create_entity(entity)), None
        except ResourceExistsError:
            return None, self._get(self.index, partition, row)

    def _take_over(self, existing: Any, properties: dict[str, Any]) -> str | None:
        """Replace a claim nobody holds any more, if it is unchanged; return its new etag or None."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        entity = {
            "PartitionKey": existing["PartitionKey"],
            "RowKey": existing["RowKey"],
            "ClaimedAt": self.clock(),
            **properties,
        }
        try:
            meta = self.index.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=_etag(existing), match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return _etag(meta)

    def _fresh(self, claim: Any) -> bool:
        claimed_at = claim.get("ClaimedAt")
        return claimed_at is not None and self.clock() - claimed_at < self.claim_grace

    def _claim_key(self, record: RequestRecord) -> tuple[RequestRecord | None, _Claim | None]:
        key = record.idempotency_key or ""
        partition, row = f"key-{_digest(key)}", "idempotency"
        properties = {"RequestId": record.id, "BodyHash": record.body_hash or ""}
        for _ in range(5):
            etag, existing = self._claim(partition, row, properties)
            if etag is not None:
                return None, _Claim(partition, etag)
            if existing is None:
                continue  # released meanwhile: try again
            holder = self._wait_for(existing["RequestId"]) if self._fresh(existing) else None
            if holder is None:
                holder = self.get_request(existing["RequestId"])
            if holder is not None:
                if holder.body_hash != record.body_hash:
                    raise key_reused(holder.id)
                return holder, None
            if self._fresh(existing):
                raise TransientError(
                    "a request with this Idempotency-Key is still being created; send it again in a few seconds.",
                    retry_after_s=2.0,
                    code="IdempotencyKeyInFlight",
                )
            taken = self._take_over(existing, properties)  # its creator died before writing the request
            if taken is not None:
                return None, _Claim(partition, taken)
        raise TransientError("the Idempotency-Key is contended; send the request again.", code="IdempotencyKeyBusy")

    def _wait_for(self, request_id: str) -> RequestRecord | None:
        deadline = time.monotonic() + self.claim_wait_s
        while True:
            record = self.get_request(request_id)
            if record is not None or time.monotonic() >= deadline:
                return record
            time.sleep(0.05)

    def _claim_workspace(self, record: RequestRecord) -> _Claim:
        partition, row = f"workspace-{_digest(record.workspace_key or '')}", "workspace"
        properties = {"RequestId": record.id, "WorkspaceKey": record.workspace_key}
        for _ in range(5):
            etag, existing = self._claim(partition, row, properties)
            if etag is not None:
                return _Claim(partition, etag)
            if existing is None:
                continue
            holder = self.get_request(existing["RequestId"])
            if holder is not None and holder.status.live:
                raise workspace_taken(record, holder.id)
            if holder is None and self._fresh(existing):
                raise workspace_taken(record, existing["RequestId"])  # being created right now
            taken = self._take_over(existing, properties)  # its holder failed, or died before writing
            if taken is not None:
                return _Claim(partition, taken)
        raise TransientError("the workspace name is contended; send the request again.", code="WorkspaceNameBusy")

    def _own_workspace(self, record: RequestRecord) -> None:
        """Record the record's team as its workspace's owner, unless an owner is recorded already.

        Written after the workspace name claim and the team's vCPUs are held (a create refused for
        either records no owner, as on SQLite) and before the request entity, so no request can ever
        exist without its owner entity: a crash in between leaves an owner, never a request without one.

        It is never released, not even on this create's own failure paths. Left behind by a create of
        team X that failed or crashed before its request was written, it makes X the owner of a name
        X asked for first and no other team had asked for: at worst another team must choose another
        workspace name. Releasing it could be worse: when a create cannot tell whether its request
        was written (the answer was lost, the read back failed), a release would drop the owner of a
        workspace that may exist, and the next team to claim the name could then adopt it. So the
        choice fails closed. The name claim taken before it lets one create of a key through at a
        time; whichever inserts first is the owner, and every later create finds the entity and keeps
        it (insert-only: a conflict means an owner is recorded already).
        """
        from azure.core.exceptions import ResourceExistsError

        key = (record.workspace_key or "").lower()
        entity = {
            "PartitionKey": _owner_partition(key),
            "RowKey": OWNER_ROW,
            "Team": record.team,
            "RequestId": record.id,
            "WorkspaceKey": key,
            "ClaimedAt": self.clock(),
        }
        with suppress(ResourceExistsError):
            self.index.create_entity(entity)

    def workspace_owner(self, workspace_key: str) -> str | None:
        """Return the team of the first request recorded with this workspace key (lowercased), or None.

        One point read of the owner entity that creates insert (never a scan). A workspace whose
        requests all predate owner entities has none until a backfill writes it.
        """
        with translated("reading the owner of a workspace"):
            entity = self._get(self.index, _owner_partition(workspace_key.lower()), OWNER_ROW)
        return str(entity["Team"]) if entity is not None else None

    def _release(self, claim: _Claim) -> None:
        from azure.core import MatchConditions

        row = "idempotency" if claim.partition.startswith("key-") else "workspace"
        with suppress(Exception):
            self.index.delete_entity(
                claim.partition, row, etag=claim.etag, match_condition=MatchConditions.IfNotModified
            )

    def get_request(self, request_id: str) -> RequestRecord | None:
        """Return one request, or None."""
        with translated(f"reading request {request_id}"):
            entity = self._get(self.requests, request_id, REQUEST_ROW)
        return self._read_request(entity) if entity is not None else None

    def find_by_idempotency_key(self, key: str) -> RequestRecord | None:
        """Return the request made with this idempotency key, or None.

        A key claimed moments ago by a create still being written is waited for, and if its request
        is not there yet, the answer is "in flight" (`TransientError`), never "unused": a replay must
        not be judged as a new request while its original is being created.
        """
        with translated("reading an idempotency key"):
            claim = self._get(self.index, f"key-{_digest(key)}", "idempotency")
        if claim is None:
            return None
        fresh = self._fresh(claim)
        record = self._wait_for(claim["RequestId"]) if fresh else self.get_request(claim["RequestId"])
        if record is None and fresh:
            raise TransientError(
                "a request with this Idempotency-Key is still being created; send it again in a few seconds.",
                retry_after_s=2.0,
                code="IdempotencyKeyInFlight",
            )
        return record

    def update_request(self, record: RequestRecord) -> RequestRecord:
        """Write if the version is current; move the record's pointers around the write."""
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        new = record.model_copy(update={"version": record.version + 1})
        entity = self._request_entity(new, creating=False)
        with translated(f"updating request {record.id}"):
            current = self._get(self.requests, record.id, REQUEST_ROW)
            if current is None or current["Version"] != record.version:
                raise StaleWriteError(f"request {record.id} changed since version {record.version}")
            old = RequestRecord.model_validate_json(_body(current))
            before, after = _memberships(old), _memberships(new)
            for partition in after - before:
                self._add_pointer(partition, new)
            if new.status.live and (not old.status.live or new.vcpus > old.vcpus):
                self._hold_vcpus(new, None)  # held again before it counts as live: the figure never says too little
            self.requests.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=_etag(current), match_condition=MatchConditions.IfNotModified
            )
            if new.status.live and not old.status.live:
                self._still_held(new)
            for partition in before - after:
                self._drop_pointer(partition, record.id, up_to=record.version)
            if new.status.live and old.status.live and 0 < new.vcpus < old.vcpus:
                self._hold_vcpus(new, None)  # a revision that lowers the figure: lowered once it is written
            if old.status.live and (not new.status.live or not new.vcpus):
                try:
                    self._give_back_vcpus(new)
                except Exception as exc:  # noqa: BLE001 - the record is written; counted until a create checks again
                    log.warning("request %s kept its team's vCPUs after it ended: %s", record.id, exc)
        return new

    # ----- pointers ---------------------------------------------------------------------------

    def _add_pointer(self, partition: str, record: RequestRecord) -> None:
        """Make sure `partition` points at the record, labelled with a version never lower than before."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        row = inverted(record.id)
        entity: dict[str, Any] = {
            "PartitionKey": partition,
            "RowKey": row,
            "RequestId": record.id,
            "Team": record.team,
            "Label": record.version,
            "WrittenAt": self.clock(),
        }
        for _ in range(5):
            try:
                self.index.create_entity(entity)
                return
            except ResourceExistsError:
                pass
            current = self._get(self.index, partition, row)
            if current is None:
                continue
            if current["Label"] >= record.version:
                return
            try:
                self.index.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=_etag(current), match_condition=MatchConditions.IfNotModified
                )
                return
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
        raise TransientError(f"the listing entry for request {record.id} is contended; retrying.", code="StoreBusy")

    def _drop_pointer(self, partition: str, request_id: str, *, up_to: int) -> None:
        """Remove a pointer written at version `up_to` or before (a later writer's pointer stays)."""
        current = self._get(self.index, partition, inverted(request_id))
        if current is not None and current["Label"] <= up_to:
            self._delete_pointer(current)

    def _delete_pointer(self, pointer: Any) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        with suppress(ResourceModifiedError, ResourceNotFoundError):
            self.index.delete_entity(
                pointer["PartitionKey"],
                pointer["RowKey"],
                etag=_etag(pointer),
                match_condition=MatchConditions.IfNotModified,
            )

    def _pointed(self, partition: str, *, team: str | None = None, after: str | None = None) -> Iterator[RequestRecord]:
        """Yield the records a pointer partition lists, newest first, checked against the records themselves.

        The service pages its answers (at most `page_size` rows, or fewer when it runs out of time)
        and hands back continuation tokens, which the SDK's pager follows.
        """
        query, parameters = "PartitionKey eq @partition", {"partition": partition}
        if after is not None:
            query += " and RowKey gt @after"
            parameters["after"] = inverted(after)
        if team is not None:
            query += " and Team eq @team"
            parameters["team"] = team
        with translated(f"listing {partition}"):
            pages = self.index.query_entities(query, parameters=parameters, results_per_page=self.page_size).by_page()
            for page in pages:
                for pointer in page:
                    record = self.get_request(pointer["RequestId"])
                    if record is not None and partition in _memberships(record):
                        yield record
                    else:
                        self._prune(pointer, record)

    def _prune(self, pointer: Any, record: RequestRecord | None) -> None:
        """Delete a pointer that points at nothing or at a record that has moved on (both for good)."""
        if record is None:
            written = pointer.get("WrittenAt")
            if written is not None and self.clock() - written > self.claim_grace:
                self._delete_pointer(pointer)  # its creator died before writing the request
        elif pointer["Label"] < record.version:
            # A writer moving the record back into this partition raises the label first, which
            # changes the ETag and makes this delete fail; so only a stale pointer goes.
            self._delete_pointer(pointer)

    def list_requests(
        self,
        *,
        team: str | None = None,
        status: RequestStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """List requests newest first; the cursor is the last id of the previous page."""
        if status is not None:
            rows = self._pointed(f"status-{status.value}", team=team, after=cursor)
        elif team is not None:
            rows = self._pointed(f"team-{_key_part(team)}", after=cursor)
        else:
            rows = self._pointed("all", after=cursor)
        items: list[RequestRecord] = []
        more = False
        for record in rows:
            if len(items) == limit:
                more = True
                break
            items.append(record)
        return Page(items=items, next_cursor=items[-1].id if more and items else None)

    def live_requests(self, *, team: str) -> list[RequestRecord]:
        """Return the team's requests that hold resources."""
        return list(self._pointed(f"live-{_key_part(team)}"))

    def _unfinished(self) -> Iterator[RequestRecord]:
        for status in UNFINISHED:
            yield from self._pointed(f"status-{status.value}")

    def unfinished_requests(self, *, before: datetime, limit: int = 500) -> list[RequestRecord]:
        """Return accepted or provisioning requests last changed before `before`."""
        found = [r for r in self._unfinished() if r.updated_at < before]
        return found[:limit]

    def pending_notifications(self, *, before: datetime, limit: int = 500) -> list[RequestRecord]:
        """Return finished requests, last changed before `before`, whose callback is still pending."""
        return [r for r in self._pointed("notify") if r.updated_at < before][:limit]

    # ----- steps ------------------------------------------------------------------------------

    def get_steps(self, request_id: str) -> list[StepRecord]:
        """Return every step of a request, in plan order: one partition query, the request row included."""
        with translated(f"reading the steps of {request_id}"):
            entities = list(
                self.requests.query_entities(
                    "PartitionKey eq @id", parameters={"id": request_id}, results_per_page=self.page_size
                )
            )
        if not any(e["RowKey"] == REQUEST_ROW for e in entities):
            return []  # no request, or steps of a create that never finished
        steps = sorted((e for e in entities if e["RowKey"].startswith(STEP_ROW)), key=lambda e: e.get("Seq", 0))
        return [self._read_step(e) for e in steps]

    def get_step(self, request_id: str, step_id: str) -> StepRecord | None:
        """Return one step, or None."""
        with translated(f"reading step {request_id}/{step_id}"):
            entity = self._get(self.requests, request_id, STEP_ROW + step_id)
        return self._read_step(entity) if entity is not None else None

    def update_step(self, step: StepRecord) -> StepRecord:
        """Write if the version is current: an ETag-conditional merge (Seq stays as created)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        new = step.model_copy(update={"version": step.version + 1})
        row = STEP_ROW + step.step_id
        entity = self._step_entity(new)
        stale = StaleWriteError(f"step {step.request_id}/{step.step_id} changed since version {step.version}")
        with translated(f"updating step {step.request_id}/{step.step_id}"):
            etag = self._etags.pop(step.request_id, row, step.version)
            if not etag:
                current = self._get(self.requests, step.request_id, row)
                if current is None or current["Version"] != step.version:
                    raise stale
                etag = _etag(current)
            try:
                meta = self.requests.update_entity(
                    entity, mode=UpdateMode.MERGE, etag=etag, match_condition=MatchConditions.IfNotModified
                )
            except (ResourceModifiedError, ResourceNotFoundError) as exc:
                raise stale from exc
        self._etags.put(step.request_id, row, new.version, _etag(meta))
        return new

    def add_steps(self, request_id: str, steps: list[StepRecord]) -> None:
        """Add step records after the request's others; a step that has a record already is left as it is."""
        from azure.core.exceptions import ResourceExistsError

        with translated(f"adding steps to {request_id}"):
            first = len(self.get_steps(request_id))
            for i, step in enumerate(steps):
                try:
                    self.requests.create_entity(self._step_entity(step, seq=first + i))
                except ResourceExistsError:
                    continue

    def stalled_steps(self, *, before: datetime, limit: int = 500) -> list[StepRecord]:
        """Return unfinished requests' queued, waiting or running steps due (or leased) before `before`."""
        found = [
            step
            for record in self._unfinished()
            for step in self.get_steps(record.id)
            if step.status in IN_FLIGHT_STEPS and due_of(step) < before
        ]
        found.sort(key=due_of)
        return found[:limit]

    # ----- events -----------------------------------------------------------------------------

    def _event_row(self) -> str:
        # Rows sort in append order: nanoseconds, never repeating within this process, then a random
        # suffix that keeps two processes appending in the same nanosecond apart.
        with self._event_lock:
            self._last_event_ns = max(time.time_ns(), self._last_event_ns + 1)
            stamp = self._last_event_ns
        return f"{stamp:020d}-{os.urandom(4).hex()}"

    def append_event(self, event: StatusEvent) -> None:
        """Keep an event for the request's timeline."""
        entity = {
            "PartitionKey": event.request_id,
            "RowKey": self._event_row(),
            "Name": event.name.value,
            **_body_properties(event.model_dump_json(), f"an event of {event.request_id}"),
        }
        with translated(f"appending an event to {event.request_id}"):
            self.events.create_entity(entity)

    def list_events(self, request_id: str) -> list[StatusEvent]:
        """Return a request's events, oldest first."""
        with translated(f"reading the events of {request_id}"):
            entities = self.events.query_entities(
                "PartitionKey eq @id", parameters={"id": request_id}, results_per_page=self.page_size
            )
            return [StatusEvent.model_validate_json(_body(e)) for e in entities]

    # ----- replay guards and rate limits ------------------------------------------------------

    def remember_once(self, scope: str, key: str, *, now: datetime, until: datetime) -> bool:
        """Remember `key` in `scope` until `until`; True the first time, False while it is remembered.

        The insert is the exclusive act: of concurrent callers, one creates the entity and the others
        find it. An expired entry is taken over by an ETag-conditional replace, which only one wins.
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        partition, row = f"once-{_key_part(scope)}", _key_part(key)
        entity = {"PartitionKey": partition, "RowKey": row, "Until": until}
        with translated(f"remembering a {scope} key"):
            for _ in range(5):
                try:
                    self.index.create_entity(entity)
                    break
                except ResourceExistsError:
                    pass
                existing = self._get(self.index, partition, row)
                if existing is None:
                    continue  # purged meanwhile: insert again
                if existing["Until"] > now:
                    return False
                try:
                    self.index.update_entity(
                        entity,
                        mode=UpdateMode.REPLACE,
                        etag=_etag(existing),
                        match_condition=MatchConditions.IfNotModified,
                    )
                    break
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue  # another caller took it over first: look again
            else:
                raise TransientError(f"the {scope} replay guard is contended; send it again.", code="StoreBusy")
        self._purge_remembered(partition, now)
        return True

    def _purge_remembered(self, partition: str, now: datetime) -> None:
        """Delete some expired entries of a scope, at most once a minute per instance; never fail the caller."""
        from azure.core import MatchConditions

        last = self._purged.get(partition)
        if last is not None and now - last < PURGE_EVERY:
            return
        self._purged[partition] = now
        try:
            expired = self.index.query_entities(
                "PartitionKey eq @partition and Until le @now",
                parameters={"partition": partition, "now": now},
                results_per_page=PURGE_BATCH,
            )
            for entity in next(expired.by_page(), []):
                with suppress(Exception):  # taken over or purged by another instance meanwhile
                    self.index.delete_entity(
                        partition, entity["RowKey"], etag=_etag(entity), match_condition=MatchConditions.IfNotModified
                    )
        except Exception as exc:  # noqa: BLE001 - expired entries are harmless; the next purge tries again
            log.info("could not purge expired entries of %s: %s", partition, exc)

    def take(self, bucket: str, *, now: datetime, limit: int, window_s: float) -> float | None:
        """Take one from the bucket's sliding window with an ETag-conditional write; None, or the seconds to wait."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        check_take(limit, window_s)
        partition, row = f"rate-{_key_part(bucket)}", "window"
        with translated(f"taking from rate limit {bucket}"):
            for attempt in range(30):
                current = self._get(self.index, partition, row)
                takes, wait = slide(
                    read_takes(current.get("Takes") if current else None), now=now, limit=limit, window_s=window_s
                )
                if wait is not None:
                    return wait
                entity = {"PartitionKey": partition, "RowKey": row, "Bucket": bucket, "Takes": write_takes(takes)}
                try:
                    if current is None:
                        self.index.create_entity(entity)
                    else:
                        self.index.update_entity(
                            entity,
                            mode=UpdateMode.REPLACE,
                            etag=_etag(current),
                            match_condition=MatchConditions.IfNotModified,
                        )
                    return None
                except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
                    # Another take won (412 or 409): read the window again.
                    time.sleep(random.uniform(0.002, 0.01 * min(attempt + 1, 10)))  # noqa: S311 - jitter, not secrecy
        raise TransientError(f"the rate limit {bucket} is contended; try again.", retry_after_s=1.0, code="StoreBusy")
