"""The store's writes as typed operations: applied to SQLite in one commit, or kept in memory
and in the spill file while the database is not writable, and replayed in order later."""

from __future__ import annotations

import enum
import json
import os
from dataclasses import asdict, fields
from sqlite3 import Connection
from typing import Any

from controller.core.records import DEFAULT_BACKEND, TxRecord
from controller.core.values import value


class EventKind(enum.StrEnum):
    """What a journaled transaction message reports, in the charger's words: the store and
    the outbox pump decide by it (samples may be dropped at the memory cap and are deleted
    in batches), never by a protocol's action name."""

    STARTED = "started"
    SAMPLES = "samples"
    # Anything else within a transaction (2.0.1 TransactionEvent Updated for a charging
    # state, an authorization change): never dropped, unlike samples at the memory cap.
    UPDATED = "updated"
    ENDED = "ended"
    # Not of a transaction, but delivered with the same guarantee: queued durably, in order,
    # removed on confirmation (security whitepaper A04.FR.02).
    SECURITY = "security"
    # A monitoring event (2.0.1 NotifyEvent) queued with the same guarantee (N07.FR.04).
    NOTICE = "notice"


@value
class Outgoing:
    """One backend's message for a transaction event, as its adapter rendered it;
    ``tx_seq`` is that backend's sequence number of the message within the transaction
    (0 for the start, then 1, 2, ... without gaps: OCPP 2.0.1 seqNo)."""

    backend: str
    action: str
    payload: dict[str, Any]
    tx_seq: int


def new_tx_id() -> str:
    """The charger's own transaction id: unique without coordination (a reset database or
    a replaced SD card must not reuse one), 32 characters (OCPP 2.0.1 allows 36)."""
    return os.urandom(16).hex()  # as random as uuid4, without building a UUID object


# ------------------------------------------------------------------------------ operations
# Each operation writes with explicit keys, so replaying it later gives the rows it would
# have given at once. ``apply`` runs inside the caller's transaction.


@value
class BeginTx:
    tx_key: int
    tx_id: str
    connector_id: int
    id_tag: str
    reservation_id: int | None
    meter_start_wh: int
    started_at: str
    boot_id: str

    def record(self) -> TxRecord:
        """The transaction as this write leaves it (open, at its start reading)."""
        return TxRecord(
            tx_key=self.tx_key,
            connector_id=self.connector_id,
            id_tag=self.id_tag,
            reservation_id=self.reservation_id,
            meter_start_wh=self.meter_start_wh,
            started_at=self.started_at,
            last_meter_wh=self.meter_start_wh,
            last_meter_at=self.started_at,
            meter_stop_wh=None,
            stopped_at=None,
            stop_reason=None,
            boot_id=self.boot_id,
            tx_id=self.tx_id,
        )

    def apply(self, db: Connection) -> None:
        db.execute(
            "INSERT INTO transactions (tx_key, tx_id, connector_id, id_tag, reservation_id,"
            " meter_start_wh, started_at, last_meter_wh, last_meter_at, boot_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.tx_key,
                self.tx_id,
                self.connector_id,
                self.id_tag,
                self.reservation_id,
                self.meter_start_wh,
                self.started_at,
                self.meter_start_wh,
                self.started_at,
                self.boot_id,
            ),
        )


@value
class TxProgress:
    """The latest reading of an open transaction (what a restart after power loss bills)."""

    tx_key: int
    energy_wh: int
    at: str

    def apply(self, db: Connection) -> None:
        db.execute(
            "UPDATE transactions SET last_meter_wh = ?, last_meter_at = ?"
            " WHERE tx_key = ? AND stopped_at IS NULL",
            (self.energy_wh, self.at, self.tx_key),
        )


@value
class EndTx:
    tx_key: int
    meter_stop_wh: int
    stopped_at: str
    reason: str

    def apply(self, db: Connection) -> None:
        db.execute(
            "UPDATE transactions SET meter_stop_wh = ?, stopped_at = ?, stop_reason = ?,"
            " last_meter_wh = ?, last_meter_at = ? WHERE tx_key = ? AND stopped_at IS NULL",
            (
                self.meter_stop_wh,
                self.stopped_at,
                self.reason,
                self.meter_stop_wh,
                self.stopped_at,
                self.tx_key,
            ),
        )


@value
class MapTxId:
    """A backend's own id of the transaction (OCPP 1.6: StartTransaction.conf)."""

    tx_key: int
    backend: str
    csms_tx_id: str

    def apply(self, db: Connection) -> None:
        db.execute(
            "INSERT INTO tx_backend (tx_key, backend, csms_tx_id) VALUES (?, ?, ?)"
            " ON CONFLICT (tx_key, backend) DO UPDATE SET csms_tx_id = excluded.csms_tx_id",
            (self.tx_key, self.backend, self.csms_tx_id),
        )


@value
class Enqueue:
    """A message into a backend's outbox; ``tx_seq`` is its number within the transaction
    (None: queued before schema 3). While it is queued it is the backend's highest number."""

    seq: int
    backend: str
    tx_key: int | None
    tx_seq: int | None
    kind: str | None
    action: str
    payload: str  # JSON, as stored
    created_at: float

    def apply(self, db: Connection) -> None:
        db.execute(
            "INSERT INTO outbox (seq, backend, tx_key, tx_seq, kind, action, payload, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.seq,
                self.backend,
                self.tx_key,
                self.tx_seq,
                self.kind,
                self.action,
                self.payload,
                self.created_at,
            ),
        )


@value
class Delete:
    """A delivered (or given up) message leaves its outbox; its number is remembered in the
    same commit, so that the transaction's next message of that backend never reuses it."""

    seq: int

    def apply(self, db: Connection) -> None:
        db.execute(
            "INSERT INTO tx_backend (tx_key, backend, next_seq)"
            " SELECT tx_key, backend, tx_seq + 1 FROM outbox"
            " WHERE seq = ? AND tx_key IS NOT NULL AND tx_seq IS NOT NULL"
            " ON CONFLICT (tx_key, backend) DO UPDATE SET"
            " next_seq = MAX(next_seq, excluded.next_seq)",
            (self.seq,),
        )
        db.execute("DELETE FROM outbox WHERE seq = ?", (self.seq,))


@value
class MarkAttempt:
    seq: int

    def apply(self, db: Connection) -> None:
        db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (self.seq,))


@value
class PutSetting:
    """Set (or, with None, delete) a setting."""

    key: str
    value: str | None

    def apply(self, db: Connection) -> None:
        if self.value is None:
            db.execute("DELETE FROM settings WHERE key = ?", (self.key,))
        else:
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (self.key, self.value),
            )


@value
class PutProfile:
    """Install (or replace) a backend's charging profile; ``body`` is its JSON."""

    backend: str
    profile_id: int
    connector_id: int
    purpose: str
    stack_level: int
    tx_key: int | None
    body: str

    def apply(self, db: Connection) -> None:
        db.execute(
            "INSERT INTO charging_profiles (backend, profile_id, connector_id, purpose,"
            " stack_level, tx_key, body) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (backend, profile_id) DO UPDATE SET connector_id ="
            " excluded.connector_id, purpose = excluded.purpose, stack_level ="
            " excluded.stack_level, tx_key = excluded.tx_key, body = excluded.body",
            (
                self.backend,
                self.profile_id,
                self.connector_id,
                self.purpose,
                self.stack_level,
                self.tx_key,
                self.body,
            ),
        )


@value
class DropProfile:
    backend: str
    profile_id: int

    def apply(self, db: Connection) -> None:
        db.execute(
            "DELETE FROM charging_profiles WHERE backend = ? AND profile_id = ?",
            (self.backend, self.profile_id),
        )


Op = (
    BeginTx
    | TxProgress
    | EndTx
    | MapTxId
    | Enqueue
    | Delete
    | MarkAttempt
    | PutSetting
    | PutProfile
    | DropProfile
)

_TYPES: dict[str, type[Op]] = {
    cls.__name__: cls
    for cls in (
        BeginTx,
        TxProgress,
        EndTx,
        MapTxId,
        Enqueue,
        Delete,
        MarkAttempt,
        PutSetting,
        PutProfile,
        DropProfile,
    )
}


def to_json(op: Op) -> dict[str, Any]:
    return {"type": type(op).__name__, **asdict(op)}


def from_json(entry: dict[str, Any]) -> Op:
    """An operation as ``to_json`` wrote it; ValueError/KeyError/TypeError if malformed."""
    cls = _TYPES[str(entry["type"])]
    return cls(**{f.name: entry[f.name] for f in fields(cls)})


# ------------------------------------------------------------------------------ schema 2 spill
# A charger updated while its disk was full has a spill file of the previous release: SQL text
# and parameters for the schema-2 tables. These are that release's statements, verbatim and
# frozen; each is read as the operation it meant. Nothing else is ever recognised by its SQL.

_V2_INSERT_TX = (
    "INSERT INTO transactions (tx_key, connector_id, id_tag, reservation_id, meter_start_wh,"
    " started_at, last_meter_wh, last_meter_at, boot_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_V2_METER = (
    "UPDATE transactions SET last_meter_wh = ?, last_meter_at = ?"
    " WHERE tx_key = ? AND stopped_at IS NULL"
)
_V2_END = (
    "UPDATE transactions SET meter_stop_wh = ?, stopped_at = ?, stop_reason = ?,"
    " last_meter_wh = ?, last_meter_at = ? WHERE tx_key = ? AND stopped_at IS NULL"
)
_V2_CSMS_ID = "UPDATE transactions SET csms_tx_id = ? WHERE tx_key = ?"
_V2_ENQUEUE = "INSERT INTO outbox (seq, tx_key, action, payload, created_at) VALUES (?, ?, ?, ?, ?)"
_V2_DELETE = "DELETE FROM outbox WHERE seq = ?"
_V2_ATTEMPT = "UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?"
_V2_SET = (
    "INSERT INTO settings (key, value) VALUES (?, ?) "
    "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
)
_V2_UNSET = "DELETE FROM settings WHERE key = ?"
_V2_KINDS = {
    "StartTransaction": EventKind.STARTED,
    "MeterValues": EventKind.SAMPLES,
    "StopTransaction": EventKind.ENDED,
}


def from_v2(sql: str, params: list[Any]) -> Op:
    """The operation a schema-2 spill entry meant; ValueError for anything else."""
    p = params
    if sql == _V2_INSERT_TX:
        return BeginTx(int(p[0]), new_tx_id(), int(p[1]), str(p[2]), p[3], int(p[4]), str(p[5]),
                       str(p[8]))  # fmt: skip
    if sql == _V2_METER:
        return TxProgress(int(p[2]), int(p[0]), str(p[1]))
    if sql == _V2_END:
        return EndTx(int(p[5]), int(p[0]), str(p[1]), str(p[2]))
    if sql == _V2_CSMS_ID:
        return MapTxId(int(p[1]), DEFAULT_BACKEND, str(p[0]))
    if sql == _V2_ENQUEUE:
        kind = _V2_KINDS.get(str(p[2]))
        return Enqueue(
            seq=int(p[0]),
            backend=DEFAULT_BACKEND,
            tx_key=None if p[1] is None else int(p[1]),
            tx_seq=None,
            kind=None if kind is None else kind.value,
            action=str(p[2]),
            payload=json.dumps(json.loads(p[3]), separators=(",", ":")),
            created_at=float(p[4]),
        )
    if sql == _V2_DELETE:
        return Delete(int(p[0]))
    if sql == _V2_ATTEMPT:
        return MarkAttempt(int(p[0]))
    if sql == _V2_SET:
        return PutSetting(str(p[0]), str(p[1]))
    if sql == _V2_UNSET:
        return PutSetting(str(p[0]), None)
    raise ValueError(f"not a schema-2 store write: {sql[:60]!r}")
