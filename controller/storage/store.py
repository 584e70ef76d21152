"""Durable SQLite store: settings, the transaction journal with each backend's outbox,
installed charging profiles, the Authorization Cache and the Local Authorization List."""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from controller.core.charging_profiles import ChargingProfile
from controller.core.records import DEFAULT_BACKEND, StoreError, TagInfo, TxRecord

# The schema is defined (and changed) only in controller/storage/migrations.py.
from controller.core.timestamps import shift_iso, shift_timestamps
from controller.storage.migrations import SchemaError, migrate
from controller.storage.profiles import profile_from_json, profile_to_json
from controller.storage.spill import SpillFile
from controller.storage.writes import (
    BeginTx,
    Delete,
    DropProfile,
    EndTx,
    Enqueue,
    EventKind,
    MapTxId,
    MarkAttempt,
    Op,
    Outgoing,
    PutProfile,
    PutSetting,
    TxProgress,
    new_tx_id,
)

LOG = logging.getLogger(__name__)

# Compact JSON as stored in the outbox; one encoder, not one per call (json.dumps with
# arguments builds a new encoder every time: measurable on the durable enqueue path).
_encode_json = json.JSONEncoder(separators=(",", ":")).encode

#: Unconfirmed MeterValues kept in memory while the database is not writable (about 1.5 KiB
#: each): 5000 is 3.5 days of 60 s samples on one connector while also offline.
MAX_MEMORY_METER_VALUES = 5000

#: A transaction row with every backend's id of it (one query, also for the ops CLI, which
#: reads the database without a Store).
TX_SELECT = (
    "SELECT t.*, (SELECT json_group_object(b.backend, b.csms_tx_id) FROM tx_backend AS b"
    " WHERE b.tx_key = t.tx_key AND b.csms_tx_id IS NOT NULL) AS csms_tx_ids"
    " FROM transactions AS t"
)


def tx_record(row: sqlite3.Row) -> TxRecord:
    """A TxRecord from a row of ``TX_SELECT``."""
    return TxRecord(
        tx_key=int(row["tx_key"]),
        connector_id=int(row["connector_id"]),
        id_tag=str(row["id_tag"]),
        reservation_id=row["reservation_id"],
        meter_start_wh=int(row["meter_start_wh"]),
        started_at=str(row["started_at"]),
        last_meter_wh=int(row["last_meter_wh"]),
        last_meter_at=str(row["last_meter_at"]),
        meter_stop_wh=row["meter_stop_wh"],
        stopped_at=row["stopped_at"],
        stop_reason=row["stop_reason"],
        boot_id=str(row["boot_id"]),
        tx_id=str(row["tx_id"] or ""),
        csms_tx_ids=json.loads(row["csms_tx_ids"] or "{}"),
    )


@dataclass(frozen=True)
class QueuedMessage:
    """A message in a backend's outbox, waiting for its confirmation. ``kind`` is the
    transaction event it reports, ``tx_seq`` its number within the transaction (None for
    messages queued before schema 3)."""

    seq: int
    tx_key: int | None
    action: str
    payload: dict[str, Any]
    attempts: int
    backend: str = DEFAULT_BACKEND
    kind: EventKind | None = None
    tx_seq: int | None = None


def _queued(op: Enqueue) -> QueuedMessage:
    return QueuedMessage(
        seq=op.seq,
        tx_key=op.tx_key,
        action=op.action,
        payload=json.loads(op.payload),
        attempts=0,
        backend=op.backend,
        kind=None if op.kind is None else EventKind(op.kind),
        tx_seq=op.tx_seq,
    )


@dataclass(frozen=True)
class CacheRow:
    """One Authorization Cache entry with the (wall clock) time it was last used."""

    id_tag: str
    status: str
    parent_id_tag: str | None
    expiry_date: str | None
    last_used: float


class LocalListTooLong(Exception):
    """A SendLocalList would leave more entries than allowed; nothing was changed."""


@dataclass(frozen=True)
class StoreTuning:
    """Knobs for many stores in one process (evsed fleet); a charger keeps the defaults.

    ``durable`` False: synchronous=NORMAL (WAL still keeps the file consistent, the last
    commits may be lost on a power cut: fine for a simulated charger, never for a real one).
    ``cache_kib``: SQLite's page cache bound per connection (None: SQLite's 2 MiB default).
    ``cached_statements``: prepared statements kept per connection (Python's default 128
    holds ~130 KiB after the migrations; the steady state uses a few dozen).
    """

    durable: bool = True
    cache_kib: int | None = None
    cached_statements: int = 128


class Store:
    """SQLite in WAL mode with synchronous=FULL: a committed row survives power loss.

    Every write to the journal, the outbox and the settings is a typed operation
    (controller/storage/writes.py) with explicit keys. Normally the operations of one call
    are applied in one commit. When the database cannot be written (disk full, I/O error)
    the store is *degraded*: the operations are kept in order in memory and in the spill
    file, an overlay answers reads as if they had been written, and ``flush`` applies them
    in one commit once the disk takes data again.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        spill_dir: str | Path | None = None,
        tuning: StoreTuning | None = None,
    ) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        tuning = tuning or StoreTuning()
        self._db = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=tuning.cached_statements,
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if tuning.durable else 'NORMAL'}")
        if tuning.cache_kib is not None:
            self._db.execute(f"PRAGMA cache_size=-{int(tuning.cache_kib)}")
        self._db.execute("PRAGMA foreign_keys=ON")
        # Creates or upgrades the schema (each step one transaction); raises SchemaTooNew
        # for a database from a newer evsed and MigrationError when a step failed.
        try:
            migrate(self._db, self.path)
        except BaseException:
            self._db.close()
            raise
        # Degraded mode. Invariant: the overlay is empty whenever ``degraded`` is False.
        self.degraded = False
        self.degraded_reason = ""
        # Pending writes by op id, in order; an op that a later one made moot (an older
        # meter reading, a message confirmed while still in memory, an overwritten setting)
        # is deleted, so the journal stays bounded while the CSMS keeps confirming.
        self._ops: dict[int, Op] = {}
        self._op_ids = itertools.count()
        self._progress_op: dict[int, int] = {}  # tx_key -> op id of its latest reading
        self._insert_op: dict[int, int] = {}  # in-memory seq -> op id of its Enqueue
        self._setting_op: dict[str, int] = {}  # key -> op id of its latest write
        self.dropped_meter_values = 0  # oldest in-memory samples dropped at the cap
        # The overlay: what the pending writes changed.
        self._mem_tx: dict[int, TxRecord] = {}  # created or changed while degraded
        self._mem_settings: dict[str, str | None] = {}  # set (None: deleted)
        # (backend, profile id) -> body (None: removed)
        self._mem_profiles: dict[tuple[str, int], str | None] = {}
        self._mem_outbox: dict[int, QueuedMessage] = {}  # queued while degraded, by seq
        self._mem_gone: set[int] = set()  # database outbox rows deleted while degraded
        self._mem_attempts: dict[int, int] = {}  # attempts of database rows while degraded
        # Keys and sequence numbers are handed out from memory (this process is the only
        # writer): no query per write. The highest keys in use, the database's or pending.
        self._high_tx_key = self._stored_max(
            "SELECT MAX(tx_key) AS n FROM transactions", "transactions"
        )
        self._high_seq = self._stored_max("SELECT MAX(seq) AS n FROM outbox", "outbox")
        # (tx_key, backend) -> the sequence number of the backend's next message of that
        # transaction; read once per transaction (next_tx_seq), then kept up to date.
        self._next_seq: dict[tuple[int, str], int] = {}
        self._listeners: list[Callable[[bool], None]] = []
        self._spill: SpillFile | None = None
        if spill_dir is not None and self.path != ":memory:":
            self._spill = SpillFile(Path(spill_dir) / (Path(self.path).name + ".spill"))
            self._recover_spill()
        if tuning.cache_kib is not None:
            # What the migrations left in the page cache beyond the bound: ~80 KiB per store.
            self._db.execute("PRAGMA shrink_memory")

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
        self._db.close()

    def _recover_spill(self) -> None:
        """Apply the pending writes a crashed process left in the spill file, in one commit;
        if the database is still not writable, keep them ahead of anything new."""
        assert self._spill is not None
        generation, ops = self._spill.load()
        if not ops:
            self._spill.remove()
            return
        applied = self._db.execute(
            "SELECT value FROM meta WHERE key = 'spill_generation'"
        ).fetchone()
        if applied is not None and applied[0] == generation:
            LOG.info("spill file %s was already applied; removed", self._spill.path)
            self._spill.remove()
            return
        try:
            with self._tx() as db:
                for op in ops.values():
                    op.apply(db)
                self._mark_spill_applied(db, generation)
        except StoreError as exc:
            # Rebuild the overlay as the crashed process had it: a transaction it began
            # must be recovered, a message it saw confirmed must not be sent again, a CSMS
            # transaction id, the latest reading and a setting must read back.
            self._op_ids = itertools.count(max(ops) + 1)
            for op_id, op in ops.items():
                self._ops[op_id] = op
                self._view(op_id, op)
            LOG.error(
                "%d pending writes from before the restart kept in %s: the database is"
                " still not writable",
                len(ops),
                self._spill.path,
            )
            self._degrade(exc)
            return
        except sqlite3.Error as exc:
            aside = self._spill.path.with_suffix(f".failed-{time.time_ns()}")
            LOG.error(
                "spill file %s cannot be applied (%s); kept as %s", self._spill.path, exc, aside
            )
            self._spill.close()
            os.replace(self._spill.path, aside)
            return
        # The spilled writes used keys beyond what was read at open.
        self._high_tx_key = self._stored_max(
            "SELECT MAX(tx_key) AS n FROM transactions", "transactions"
        )
        self._high_seq = self._stored_max("SELECT MAX(seq) AS n FROM outbox", "outbox")
        LOG.warning(
            "%d pending writes from before the restart (database was not writable) applied",
            len(ops),
        )
        self._spill.remove()

    @staticmethod
    def _mark_spill_applied(db: sqlite3.Connection, generation: str) -> None:
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('spill_generation', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (generation,),
        )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable unit of work (BEGIN IMMEDIATE ... COMMIT)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(str(exc)) from exc
        try:
            yield self._db
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                # SQLITE_FULL / SQLITE_IOERR surface at the INSERT as often as at COMMIT.
                raise StoreError(str(exc)) from exc
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StoreError(str(exc)) from exc

    def _commit(self, ops: Sequence[Op]) -> None:
        """Apply ``ops`` in one commit; when the database cannot be written, keep them."""
        if not self.degraded:
            try:
                with self._tx() as db:
                    for op in ops:
                        op.apply(db)
                return
            except StoreError as exc:
                self._degrade(exc)
        for op in ops:
            self._keep(op)

    # ------------------------------------------------------------------ settings

    def get_setting(self, key: str) -> str | None:
        if key in self._mem_settings:
            return self._mem_settings[key]
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_setting(self, key: str, value: str) -> None:
        """A setting (OCPP key, availability, ...) is kept like transaction data when the
        database is not writable: in memory, replayed by flush(), spilled if possible."""
        self._commit([PutSetting(key, value)])

    def delete_setting(self, key: str) -> None:
        self._commit([PutSetting(key, None)])

    def set_settings(self, values: Mapping[str, str]) -> None:
        """Several settings in one commit: all or none survive a crash (OCPP 2.0.1
        SetVariables applies a request's accepted values together)."""
        self._commit([PutSetting(key, value) for key, value in values.items()])

    def settings_with_prefix(self, prefix: str) -> dict[str, str]:
        rows = self._db.execute(
            "SELECT key, value FROM settings WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
        ).fetchall()
        out = {str(r["key"]): str(r["value"]) for r in rows}
        for key, value in self._mem_settings.items():
            if key.startswith(prefix):
                if value is None:
                    out.pop(key, None)
                else:
                    out[key] = value
        return out

    # ------------------------------------------------------------------ transaction journal

    def begin_transaction(
        self,
        *,
        connector_id: int,
        id_tag: str,
        meter_start_wh: int,
        started_at: str,
        reservation_id: int | None,
        messages: Sequence[Outgoing] = (),
        boot_id: str = "",
        tx_id: str | None = None,
    ) -> int:
        """Record a new transaction and queue each backend's message of its start in one
        commit (in memory when the database cannot be written); returns its key."""
        tx_key = self._next_tx_key()
        begin = BeginTx(
            tx_key=tx_key,
            tx_id=tx_id or new_tx_id(),
            connector_id=connector_id,
            id_tag=id_tag,
            reservation_id=reservation_id,
            meter_start_wh=meter_start_wh,
            started_at=started_at,
            boot_id=boot_id,
        )
        for m in messages:
            self._next_seq[(tx_key, m.backend)] = 0  # a new transaction: nothing to look up
        self._commit([begin, *self._enqueues(tx_key, EventKind.STARTED, messages)])
        return tx_key

    def next_tx_seq(self, tx_key: int, backend: str) -> int:
        """The sequence number the backend's next message of this transaction gets: one
        past its highest queued message, or past the highest one ever removed (a removal
        records it in tx_backend.next_seq in the same commit)."""
        key = (tx_key, backend)
        cached = self._next_seq.get(key)
        if cached is not None:
            return cached
        row = self._db.execute(
            "SELECT MAX(n) FROM (SELECT next_seq AS n FROM tx_backend"
            " WHERE tx_key = ?1 AND backend = ?2 UNION ALL SELECT MAX(tx_seq) + 1 FROM outbox"
            " WHERE tx_key = ?1 AND backend = ?2)",
            key,
        ).fetchone()
        stored = 0 if row[0] is None else int(row[0])
        pending = [
            m.tx_seq + 1
            for m in self._mem_outbox.values()
            if m.tx_seq is not None and (m.tx_key, m.backend) == key
        ]
        self._next_seq[key] = max([stored, *pending])
        return self._next_seq[key]

    def record_meter(self, tx_key: int, energy_wh: int, at: str) -> None:
        """Persist the latest reading of an open transaction (used after power loss)."""
        self._commit([TxProgress(tx_key, energy_wh, at)])

    def append_tx_event(
        self,
        tx_key: int,
        kind: EventKind,
        messages: Sequence[Outgoing],
        *,
        energy_wh: int | None = None,
        at: str | None = None,
    ) -> list[int]:
        """Queue each backend's message of a transaction event, and persist the reading it
        carries, in one commit; returns the outbox seqs."""
        enqueues = self._enqueues(tx_key, kind, messages)
        ops: list[Op] = [*enqueues]
        if energy_wh is not None and at is not None:
            ops.insert(0, TxProgress(tx_key, energy_wh, at))
        self._commit(ops)
        return [e.seq for e in enqueues]

    def enqueue(self, kind: EventKind, messages: Sequence[Outgoing]) -> list[int]:
        """Queue messages that belong to no transaction (security events) in one commit,
        delivered like transaction messages; returns the outbox seqs."""
        enqueues = self._enqueues(None, kind, messages)
        self._commit(enqueues)
        return [e.seq for e in enqueues]

    def end_transaction(
        self,
        tx_key: int,
        *,
        meter_stop_wh: int,
        stopped_at: str,
        reason: str,
        messages: Sequence[Outgoing] = (),
    ) -> bool:
        """Close a transaction and queue each backend's message of its end in one commit.

        Returns False (and queues nothing) when it was already closed: a transaction
        never ends twice.
        """
        if not self._is_open(tx_key):
            return False
        end = EndTx(tx_key, meter_stop_wh, stopped_at, reason)
        self._commit([end, *self._enqueues(tx_key, EventKind.ENDED, messages)])
        # An ended transaction gets no more messages: keep the counters of open ones only.
        for key in [k for k in self._next_seq if k[0] == tx_key]:
            del self._next_seq[key]
        return True

    def map_csms_tx_id(
        self, tx_key: int, backend: str, csms_tx_id: str, *, delivered_seq: int | None = None
    ) -> None:
        """Store the backend's id of the transaction and, in the same commit, drop the
        delivered message that brought it (OCPP 1.6: StartTransaction.conf)."""
        ops: list[Op] = [MapTxId(tx_key, backend, csms_tx_id)]
        if delivered_seq is not None:
            ops.append(Delete(delivered_seq))
        self._commit(ops)

    def _is_open(self, tx_key: int) -> bool:
        if tx_key in self._mem_tx:
            return self._mem_tx[tx_key].open
        row = self._db.execute(
            "SELECT 1 FROM transactions WHERE tx_key = ? AND stopped_at IS NULL", (tx_key,)
        ).fetchone()
        return row is not None

    def get_transaction(self, tx_key: int) -> TxRecord | None:
        if tx_key in self._mem_tx:
            return self._mem_tx[tx_key]
        row = self._db.execute(TX_SELECT + " WHERE t.tx_key = ?", (tx_key,)).fetchone()
        return None if row is None else tx_record(row)

    def open_transactions(self) -> list[TxRecord]:
        rows = self._db.execute(
            TX_SELECT + " WHERE t.stopped_at IS NULL ORDER BY t.tx_key"
        ).fetchall()
        return [t for t in self._merged(tx_record(r) for r in rows) if t.open]

    def transaction_by_tx_id(self, tx_id: str) -> TxRecord | None:
        """The transaction with the charger's own id ``tx_id`` (2.0.1 transactionId)."""
        for record in self._mem_tx.values():
            if record.tx_id == tx_id:
                return record
        row = self._db.execute(TX_SELECT + " WHERE t.tx_id = ?", (tx_id,)).fetchone()
        return None if row is None else tx_record(row)

    def customer_transactions(self, id_tag: str) -> list[TxRecord]:
        """The recorded transactions of one idTag (case-insensitive), oldest first."""
        rows = self._db.execute(
            TX_SELECT + " WHERE t.id_tag = ? COLLATE NOCASE ORDER BY t.tx_key", (id_tag,)
        ).fetchall()
        merged = self._merged(tx_record(r) for r in rows)
        return [t for t in merged if t.id_tag.casefold() == id_tag.casefold()]

    def forget_customer_transactions(self, id_tag: str, replacement: str) -> int:
        """Replace the idTag of the ended transactions of ``id_tag`` by ``replacement`` (a
        customer's data cleared, 2.0.1 N10); the energy, times and ids stay for billing, and
        an open transaction keeps it until it ends. Returns the number changed."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE transactions SET id_tag = ? WHERE id_tag = ? COLLATE NOCASE"
                " AND stopped_at IS NOT NULL",
                (replacement, id_tag),
            )
        return int(cursor.rowcount)

    def tx_messages_queued(self, backend: str, tx_key: int | None = None) -> bool:
        """Whether the backend has transaction messages still to deliver: of transaction
        ``tx_key``, or of any transaction."""
        gone = self._mem_gone
        for seq, msg in self._mem_outbox.items():
            if msg.backend == backend and msg.tx_key is not None and seq not in gone:
                if tx_key is None or msg.tx_key == tx_key:
                    return True
        where = (
            "backend = ? AND tx_key IS NOT NULL"
            if tx_key is None
            else ("backend = ? AND tx_key = ?")
        )
        params: tuple[Any, ...] = (backend,) if tx_key is None else (backend, tx_key)
        for row in self._db.execute(f"SELECT seq FROM outbox WHERE {where}", params):
            if int(row["seq"]) not in gone:
                return True
        return False

    def transactions(self, limit: int = 100) -> list[TxRecord]:
        rows = self._db.execute(TX_SELECT + " ORDER BY t.tx_key DESC LIMIT ?", (limit,)).fetchall()
        merged = self._merged(tx_record(r) for r in rows)
        return sorted(merged, key=lambda t: t.tx_key, reverse=True)[:limit]

    def _merged(self, records: Iterable[TxRecord]) -> list[TxRecord]:
        """Database records overlaid with the in-memory ones (degraded mode), by tx_key."""
        by_key = {t.tx_key: t for t in records}
        by_key.update(self._mem_tx)
        return [by_key[k] for k in sorted(by_key)]

    def _stored_max(self, sql: str, table: str) -> int:
        """The highest key of ``table`` ever used (AUTOINCREMENT remembers deleted ones)."""
        row = self._db.execute(
            f"SELECT MAX(n) FROM ({sql} UNION ALL SELECT seq FROM sqlite_sequence WHERE name = ?)",
            (table,),
        ).fetchone()
        return int(row[0] or 0)

    def _next_tx_key(self) -> int:
        self._high_tx_key += 1
        return self._high_tx_key

    def _enqueues(
        self, tx_key: int | None, kind: EventKind, messages: Sequence[Outgoing]
    ) -> list[Enqueue]:
        if not messages:
            return []
        first = self._high_seq + 1
        self._high_seq += len(messages)
        now = time.time()
        enqueues = []
        for i, m in enumerate(messages):
            payload = _encode_json(m.payload)
            enqueues.append(
                Enqueue(first + i, m.backend, tx_key, m.tx_seq, kind, m.action, payload, now)
            )
            if tx_key is not None and m.tx_seq is not None:
                key = (tx_key, m.backend)
                self._next_seq[key] = max(self.next_tx_seq(*key), m.tx_seq + 1)
        return enqueues

    def shift_timestamps(
        self,
        shift_s: float,
        *,
        seqs: Iterable[int] = (),
        started: Iterable[int] = (),
        stopped: Iterable[int] = (),
    ) -> int:
        """Move timestamps stamped on an untrusted clock onto the confirmed timeline, in one
        commit: queued messages ``seqs``, every queued message and time field of the
        transactions ``started`` (begun on that clock), and the StopTransaction, stop time
        and last reading time of the transactions ``stopped``. Returns the rows changed."""
        seq_set, started_set, stopped_set = set(seqs), set(started), set(stopped)
        if not shift_s or not (seq_set or started_set or stopped_set):
            return 0
        if self.degraded:
            LOG.warning("database not writable: queued timestamps not moved by %+.1f s", shift_s)
            return 0
        changed = 0
        with self._tx() as db:
            rows = db.execute("SELECT seq, tx_key, action, payload FROM outbox").fetchall()
            for row in rows:
                tx_key = row["tx_key"]
                if not (
                    row["seq"] in seq_set
                    or tx_key in started_set
                    or (tx_key in stopped_set and row["action"] == "StopTransaction")
                ):
                    continue
                payload = shift_timestamps(json.loads(row["payload"]), shift_s)
                db.execute(
                    "UPDATE outbox SET payload = ? WHERE seq = ?",
                    (json.dumps(payload, separators=(",", ":")), row["seq"]),
                )
                changed += 1
            for tx_key in started_set | stopped_set:
                tx = db.execute(
                    "SELECT started_at, last_meter_at, stopped_at FROM transactions"
                    " WHERE tx_key = ?",
                    (tx_key,),
                ).fetchone()
                if tx is None:
                    continue
                started_at = tx["started_at"]
                if tx_key in started_set:
                    started_at = shift_iso(started_at, shift_s)
                stopped_at = tx["stopped_at"]
                db.execute(
                    "UPDATE transactions SET started_at = ?, last_meter_at = ?, stopped_at = ?"
                    " WHERE tx_key = ?",
                    (
                        started_at,
                        shift_iso(tx["last_meter_at"], shift_s),
                        None if stopped_at is None else shift_iso(stopped_at, shift_s),
                        tx_key,
                    ),
                )
                changed += 1
        return changed

    # ------------------------------------------------------------------ charging profiles

    def profiles(self, backend: str = DEFAULT_BACKEND) -> list[ChargingProfile]:
        """The backend's installed charging profiles (with those kept in memory while the
        disk is full); a damaged row is logged and skipped."""
        rows = {
            int(r["profile_id"]): str(r["body"])
            for r in self._db.execute(
                "SELECT profile_id, body FROM charging_profiles WHERE backend = ?", (backend,)
            )
        }
        for (b, profile_id), body in self._mem_profiles.items():
            if b != backend:
                continue
            if body is None:
                rows.pop(profile_id, None)
            else:
                rows[profile_id] = body
        out = []
        for profile_id, body in sorted(rows.items()):
            try:
                out.append(profile_from_json(body))
            except (ValueError, KeyError, TypeError) as exc:
                LOG.error("charging profile %d unreadable (%s): ignored", profile_id, exc)
        return out

    def save_profiles(
        self,
        backend: str,
        put: Sequence[ChargingProfile] = (),
        drop: Iterable[int] = (),
    ) -> None:
        """Install ``put`` and remove the profile ids ``drop``, in one commit."""
        ops: list[Op] = [DropProfile(backend, profile_id) for profile_id in drop]
        ops += [
            PutProfile(
                backend=backend,
                profile_id=p.profile_id,
                connector_id=p.connector_id,
                purpose=p.purpose.value,
                stack_level=p.stack_level,
                tx_key=p.tx_key,
                body=profile_to_json(p),
            )
            for p in put
        ]
        if ops:
            self._commit(ops)

    # ------------------------------------------------------------------ authorization cache

    def cache_get(self, id_tag: str) -> tuple[str, str | None, str | None] | None:
        """(status, parent idTag, expiry date) of a cached idTagInfo, or None."""
        row = self._db.execute(
            "SELECT status, parent_id_tag, expiry_date FROM auth_cache WHERE id_tag = ?",
            (id_tag,),
        ).fetchone()
        if row is None:
            return None
        return str(row["status"]), row["parent_id_tag"], row["expiry_date"]

    def cache_put(
        self,
        id_tag: str,
        status: str,
        parent_id_tag: str | None,
        expiry_date: str | None,
        *,
        used_at: float | None = None,
        evict: Iterable[str] = (),
    ) -> None:
        """Insert or update an entry; ``evict`` entries are removed in the same commit."""
        with self._cache_write(), self._tx() as db:
            db.executemany("DELETE FROM auth_cache WHERE id_tag = ?", [(t,) for t in evict])
            db.execute(
                "INSERT INTO auth_cache (id_tag, status, parent_id_tag, expiry_date, last_used)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(id_tag) DO UPDATE SET"
                " status = excluded.status, parent_id_tag = excluded.parent_id_tag,"
                " expiry_date = excluded.expiry_date, last_used = excluded.last_used",
                (
                    id_tag,
                    status,
                    parent_id_tag,
                    expiry_date,
                    time.time() if used_at is None else used_at,
                ),
            )

    @contextmanager
    def _cache_write(self) -> Iterator[None]:
        """Authorization Cache upkeep is best effort: a full disk must not fail an
        authorization (the decision is made already); the write is skipped."""
        try:
            yield
        except StoreError as exc:
            LOG.warning("authorization cache not updated (%s)", exc)

    def cache_rows(self) -> list[CacheRow]:
        rows = self._db.execute(
            "SELECT id_tag, status, parent_id_tag, expiry_date, last_used FROM auth_cache"
        ).fetchall()
        return [
            CacheRow(
                str(r["id_tag"]),
                str(r["status"]),
                r["parent_id_tag"],
                r["expiry_date"],
                float(r["last_used"]),
            )
            for r in rows
        ]

    def cache_last_used(self, id_tag: str) -> float | None:
        """When the entry was last used (wall clock seconds), or None if there is none."""
        row = self._db.execute(
            "SELECT last_used FROM auth_cache WHERE id_tag = ?", (id_tag,)
        ).fetchone()
        return None if row is None else float(row["last_used"])

    def cache_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM auth_cache").fetchone()[0])

    def cache_touch(self, id_tag: str, used_at: float, *, min_age_s: float = 0.0) -> None:
        """Record a use (for LRU eviction); skipped when the last one is under ``min_age_s``."""
        with self._cache_write(), self._tx() as db:
            db.execute(
                "UPDATE auth_cache SET last_used = ? WHERE id_tag = ? AND last_used <= ?",
                (used_at, id_tag, used_at - min_age_s),
            )

    def cache_set_status(self, id_tag: str, status: str) -> None:
        with self._cache_write(), self._tx() as db:
            db.execute("UPDATE auth_cache SET status = ? WHERE id_tag = ?", (status, id_tag))

    def cache_delete(self, id_tag: str) -> None:
        with self._cache_write(), self._tx() as db:
            db.execute("DELETE FROM auth_cache WHERE id_tag = ?", (id_tag,))

    def cache_clear(self) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM auth_cache")

    # ------------------------------------------------------------------ local authorization list

    def local_list_get(self, id_tag: str) -> TagInfo | None:
        """(status, parent idTag, expiry date) of a list entry (case-insensitive), or None."""
        row = self._db.execute(
            "SELECT status, parent_id_tag, expiry_date FROM local_list WHERE id_tag = ?",
            (id_tag,),
        ).fetchone()
        if row is None:
            return None
        return str(row["status"]), row["parent_id_tag"], row["expiry_date"]

    def local_list_entries(self) -> dict[str, TagInfo]:
        rows = self._db.execute("SELECT * FROM local_list ORDER BY id_tag").fetchall()
        return {
            str(r["id_tag"]): (str(r["status"]), r["parent_id_tag"], r["expiry_date"]) for r in rows
        }

    def local_list_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM local_list").fetchone()[0])

    def local_list_version(self) -> int:
        """The version stored with the last accepted SendLocalList (0 if none ever was)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'local_list_version'").fetchone()
        return 0 if row is None else int(row["value"])

    def local_list_apply(
        self,
        version: int,
        entries: Sequence[tuple[str, TagInfo | None]],
        *,
        full: bool,
        max_entries: int,
    ) -> None:
        """Apply a SendLocalList in one commit: a Full update replaces the list, a
        Differential one upserts (info given) or deletes (info None) entries. Listed idTags
        leave the Authorization Cache (3.5.3). Raises LocalListTooLong (and changes nothing)
        when the result would exceed ``max_entries``."""
        with self._tx() as db:
            if full:
                db.execute("DELETE FROM local_list")
            for id_tag, info in entries:
                if info is None:
                    db.execute("DELETE FROM local_list WHERE id_tag = ?", (id_tag,))
                    continue
                db.execute(
                    "INSERT INTO local_list (id_tag, status, parent_id_tag, expiry_date)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT(id_tag) DO UPDATE SET"
                    " id_tag = excluded.id_tag, status = excluded.status,"
                    " parent_id_tag = excluded.parent_id_tag, expiry_date = excluded.expiry_date",
                    (id_tag, *info),
                )
                db.execute("DELETE FROM auth_cache WHERE id_tag = ? COLLATE NOCASE", (id_tag,))
            count = int(db.execute("SELECT COUNT(*) FROM local_list").fetchone()[0])
            if count > max_entries:
                raise LocalListTooLong(f"{count} entries, at most {max_entries}")
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('local_list_version', ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(version),),
            )

    # ------------------------------------------------------------------ outbox

    def outbox_head(self, backend: str = DEFAULT_BACKEND) -> QueuedMessage | None:
        """The backend's oldest queued message (see ``outbox_batch``)."""
        batch = self.outbox_batch(0, 1, backend)
        return batch[0] if batch else None

    def outbox_batch(
        self, after_seq: int, limit: int, backend: str = DEFAULT_BACKEND
    ) -> list[QueuedMessage]:
        """Up to ``limit`` of the backend's queued messages with seq > ``after_seq``, oldest
        first: database rows, then those kept in memory (their seqs continue the
        database's, so this is the order of enqueueing). One query instead of one per
        message during a replay."""
        out: list[QueuedMessage] = []
        for row in self._db.execute(
            "SELECT * FROM outbox WHERE backend = ? AND seq > ? ORDER BY seq LIMIT ?",
            (backend, after_seq, limit + len(self._mem_gone)),
        ):
            seq = int(row["seq"])
            if seq in self._mem_gone:
                continue
            kind = row["kind"]
            out.append(
                QueuedMessage(
                    seq=seq,
                    tx_key=None if row["tx_key"] is None else int(row["tx_key"]),
                    action=str(row["action"]),
                    payload=json.loads(row["payload"]),
                    attempts=self._mem_attempts.get(seq, int(row["attempts"])),
                    backend=backend,
                    kind=None if kind is None else EventKind(kind),
                    tx_seq=row["tx_seq"],
                )
            )
            if len(out) == limit:
                return out
        for seq, msg in self._mem_outbox.items():
            if len(out) == limit:
                break
            if seq > after_seq and msg.backend == backend:
                out.append(msg)
        return out

    def outbox_delete(self, seq: int, *, durable: bool = True) -> None:
        """Drop a confirmed message (see ``outbox_delete_many``)."""
        self.outbox_delete_many([seq], durable=durable)

    def outbox_delete_many(self, seqs: Sequence[int], *, durable: bool = True) -> None:
        """Drop confirmed messages in one commit. ``durable=False`` skips the fsync: only
        for messages whose re-delivery after a crash is harmless (samples); it halves
        replay time on SD cards. Start/stop confirmations must stay durable."""
        if not seqs:
            return
        ops = [Delete(s) for s in seqs]
        if durable or self.degraded:
            self._commit(ops)
            return
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._commit(ops)
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    def outbox_mark_attempt(self, seq: int) -> int:
        """Count a failed delivery; returns the attempts so far (0: no longer queued)."""
        if not self.degraded:
            try:
                with self._tx() as db:
                    MarkAttempt(seq).apply(db)
                    row = db.execute("SELECT attempts FROM outbox WHERE seq = ?", (seq,)).fetchone()
                return 0 if row is None else int(row["attempts"])
            except StoreError as exc:
                self._degrade(exc)
        self._keep(MarkAttempt(seq))
        msg = self._mem_outbox.get(seq)
        if msg is not None:
            return msg.attempts
        return self._mem_attempts.get(seq, 0)

    def outbox_count(self, backend: str | None = None) -> int:
        """Queued messages of one backend, or of all."""
        if backend is None:
            stored = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            return stored - len(self._mem_gone) + len(self._mem_outbox)
        stored = int(
            self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE backend = ?", (backend,)
            ).fetchone()[0]
        )
        gone = 0
        if self._mem_gone:
            marks = ",".join("?" * len(self._mem_gone))
            gone = int(
                self._db.execute(
                    f"SELECT COUNT(*) FROM outbox WHERE backend = ? AND seq IN ({marks})",
                    (backend, *self._mem_gone),
                ).fetchone()[0]
            )
        mem = sum(1 for m in self._mem_outbox.values() if m.backend == backend)
        return stored - gone + mem

    # ------------------------------------------------------------------ degraded mode

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """Called with True when the store turns degraded, False when it recovered."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[bool], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def memory_messages(self) -> int:
        """Outbox messages held only in memory (lost on a crash)."""
        return len(self._mem_outbox)

    def _degrade(self, exc: Exception) -> None:
        """A write failed: from now on keep the writes in memory (and the spill file)."""
        if self.degraded:
            return
        self.degraded = True
        self.degraded_reason = str(exc)
        LOG.error(
            "database %s not writable (%s): transaction data kept in memory until it is%s",
            self.path,
            exc,
            f" and in {self._spill.path}" if self._spill else "; a crash now loses it",
        )
        for listener in list(self._listeners):
            listener(True)

    def flush(self) -> bool:
        """Probe write: replay what was kept in memory, in order, in one commit. True
        when the store is (again) fully durable."""
        if not self.degraded:
            return True
        try:
            with self._tx() as db:
                for op in self._ops.values():
                    op.apply(db)
                if self._spill is not None and self._spill.generation:
                    self._mark_spill_applied(db, self._spill.generation)
                # A write even with nothing to replay proves the disk takes data again.
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('storage_probe', ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (str(time.time()),),
                )
        except StoreError as exc:
            LOG.debug("database still not writable (%s)", exc)
            return False
        LOG.warning(
            "database writable again: %d pending writes stored, %d messages made durable",
            len(self._ops),
            len(self._mem_outbox),
        )
        if self._spill is not None:
            self._spill.remove()
        self._ops.clear()
        self._progress_op.clear()
        self._insert_op.clear()
        self._setting_op.clear()
        self._mem_tx.clear()
        self._mem_settings.clear()
        self._mem_profiles.clear()
        self._mem_outbox.clear()
        self._mem_gone.clear()
        self._mem_attempts.clear()
        self.degraded = False
        self.degraded_reason = ""
        for listener in list(self._listeners):
            listener(False)
        return True

    def _keep(self, op: Op) -> None:
        """Keep a write that could not be committed: drop what it makes moot, record it
        (and spill it), and show it in the overlay."""
        if isinstance(op, Delete):
            if op.seq in self._mem_outbox:
                # Never written: forgetting its Enqueue is the whole delete.
                del self._mem_outbox[op.seq]
                self._drop_op(self._insert_op.pop(op.seq, None))
                return
            if op.seq in self._mem_gone or not self._stored_message(op.seq):
                return
        elif isinstance(op, MarkAttempt):
            if op.seq not in self._mem_outbox and (
                op.seq in self._mem_gone or not self._stored_message(op.seq)
            ):
                return
        elif isinstance(op, TxProgress):
            tx = self.get_transaction(op.tx_key)
            if tx is None or not tx.open:
                return
            self._drop_op(self._progress_op.get(op.tx_key))  # only the latest reading matters
        elif isinstance(op, PutSetting):
            self._drop_op(self._setting_op.get(op.key))  # only the latest value matters
        op_id = next(self._op_ids)
        self._ops[op_id] = op
        if self._spill is not None:
            self._spill.add(op_id, op)
        self._view(op_id, op)
        if isinstance(op, Enqueue) and op.kind == EventKind.SAMPLES:
            self._cap_memory_samples()

    def _view(self, op_id: int, op: Op) -> None:
        """Show a pending write in the overlay (also for writes read back from the spill)."""
        if isinstance(op, BeginTx):
            self._high_tx_key = max(self._high_tx_key, op.tx_key)  # keys from the spill
            self._mem_tx[op.tx_key] = op.record()
        elif isinstance(op, TxProgress):
            self._progress_op[op.tx_key] = op_id
            tx = self.get_transaction(op.tx_key)
            if tx is not None and tx.open:
                self._mem_tx[tx.tx_key] = replace(
                    tx, last_meter_wh=op.energy_wh, last_meter_at=op.at
                )
        elif isinstance(op, EndTx):
            tx = self.get_transaction(op.tx_key)
            if tx is not None and tx.open:
                self._mem_tx[tx.tx_key] = replace(
                    tx,
                    meter_stop_wh=op.meter_stop_wh,
                    stopped_at=op.stopped_at,
                    stop_reason=op.reason,
                    last_meter_wh=op.meter_stop_wh,
                    last_meter_at=op.stopped_at,
                )
        elif isinstance(op, MapTxId):
            tx = self.get_transaction(op.tx_key)
            if tx is not None:
                ids = {**tx.csms_tx_ids, op.backend: op.csms_tx_id}
                self._mem_tx[tx.tx_key] = replace(tx, csms_tx_ids=ids)
        elif isinstance(op, Enqueue):
            self._high_seq = max(self._high_seq, op.seq)  # seqs from the spill
            self._mem_outbox[op.seq] = _queued(op)
            self._insert_op[op.seq] = op_id
            if op.tx_key is not None and op.tx_seq is not None:
                key = (op.tx_key, op.backend)
                self._next_seq[key] = max(self.next_tx_seq(*key), op.tx_seq + 1)
        elif isinstance(op, Delete):
            if self._mem_outbox.pop(op.seq, None) is None:
                self._mem_gone.add(op.seq)
                self._mem_attempts.pop(op.seq, None)
        elif isinstance(op, MarkAttempt):
            msg = self._mem_outbox.get(op.seq)
            if msg is not None:
                self._mem_outbox[op.seq] = replace(msg, attempts=msg.attempts + 1)
            elif op.seq not in self._mem_gone:
                row = self._db.execute(
                    "SELECT attempts FROM outbox WHERE seq = ?", (op.seq,)
                ).fetchone()
                if row is not None:
                    stored = self._mem_attempts.get(op.seq, int(row[0]))
                    self._mem_attempts[op.seq] = stored + 1
        elif isinstance(op, PutSetting):
            self._mem_settings[op.key] = op.value
            self._setting_op[op.key] = op_id
        elif isinstance(op, PutProfile):
            self._mem_profiles[(op.backend, op.profile_id)] = op.body
        elif isinstance(op, DropProfile):
            self._mem_profiles[(op.backend, op.profile_id)] = None

    def _stored_message(self, seq: int) -> bool:
        row = self._db.execute("SELECT 1 FROM outbox WHERE seq = ?", (seq,)).fetchone()
        return row is not None

    def _drop_op(self, op_id: int | None) -> None:
        if op_id is not None and self._ops.pop(op_id, None) is not None and self._spill:
            self._spill.drop(op_id)

    def _cap_memory_samples(self) -> None:
        """Bound the memory a long disk-full period takes: beyond MAX_MEMORY_METER_VALUES
        unconfirmed samples in memory, drop the oldest. Billing does not depend on them
        (the end carries the meter stop, and the transaction row the latest reading);
        starts and ends are never dropped."""
        sample_seqs = [s for s, m in self._mem_outbox.items() if m.kind is EventKind.SAMPLES]
        excess = len(sample_seqs) - MAX_MEMORY_METER_VALUES
        for seq in sample_seqs[: max(0, excess)]:
            del self._mem_outbox[seq]
            self._drop_op(self._insert_op.pop(seq, None))
            self.dropped_meter_values += 1
            if self.dropped_meter_values == 1 or self.dropped_meter_values % 1000 == 0:
                LOG.error(
                    "database still not writable: %d oldest queued samples dropped to "
                    "bound memory (%d kept)",
                    self.dropped_meter_values,
                    MAX_MEMORY_METER_VALUES,
                )

    def integrity_ok(self) -> bool:
        row = self._db.execute("PRAGMA quick_check").fetchone()
        return row is not None and row[0] == "ok"


def open_store(
    path: str | Path, *, spill_dir: str | Path | None = None, tuning: StoreTuning | None = None
) -> Store:
    """Open the database; a corrupt file is moved aside so the charger still starts.

    A database from a newer evsed, or one whose migration failed, is not corrupt: it holds
    billing records and queued messages this code cannot safely use or would have to drop.
    It is left as it is and SchemaError propagates: the daemon refuses to start and says why.
    """
    try:
        store = Store(path, spill_dir=spill_dir, tuning=tuning)
        if store.integrity_ok():
            return store
        store.close()
        reason = "integrity check failed"
    except SchemaError as exc:
        LOG.critical("%s", exc)
        raise
    except sqlite3.DatabaseError as exc:
        reason = str(exc)
    aside = f"{path}.corrupt-{time.time_ns()}"
    LOG.error("database %s unusable (%s); moved to %s, starting fresh", path, reason, aside)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return Store(path, spill_dir=spill_dir, tuning=tuning)
