"""Durable SQLite store: settings, transactions, the transaction-message outbox, the
Authorization Cache and the Local Authorization List."""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from controller.core.records import StoreError, TagInfo, TxRecord

# The schema is defined (and changed) only in controller/storage/migrations.py.
from controller.core.timestamps import shift_iso, shift_timestamps
from controller.storage.migrations import SchemaError, migrate
from controller.storage.spill import SpillFile

_Op = tuple[str, tuple[Any, ...]]

LOG = logging.getLogger(__name__)

#: Unconfirmed MeterValues kept in memory while the database is not writable (about 1.5 KiB
#: each): 5000 is 3.5 days of 60 s samples on one connector while also offline.
MAX_MEMORY_METER_VALUES = 5000

_INSERT_TX = (
    "INSERT INTO transactions (tx_key, connector_id, id_tag, reservation_id, meter_start_wh,"
    " started_at, last_meter_wh, last_meter_at, boot_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class QueuedMessage:
    """A transaction-related CALL waiting for its confirmation."""

    seq: int
    tx_key: int | None
    action: str
    payload: dict[str, Any]
    attempts: int


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


class Store:
    """SQLite in WAL mode with synchronous=FULL: a committed row survives power loss."""

    def __init__(self, path: str | Path, *, spill_dir: str | Path | None = None) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        # Creates or upgrades the schema (each step one transaction); raises SchemaTooNew
        # for a database from a newer evsed and MigrationError when a step failed.
        try:
            migrate(self._db, self.path)
        except BaseException:
            self._db.close()
            raise
        # Degraded mode (database not writable: disk full, I/O error). Transaction
        # records and outbox messages are then kept in memory on top of the database,
        # with keys continuing the database's, and every write is remembered as SQL with
        # explicit keys (``_ops``) so that flush() can replay them in order. Invariant: the
        # overlay is empty whenever ``degraded`` is False. Lost on a crash.
        self.degraded = False
        self.degraded_reason = ""
        # Pending writes by op id, in order; an op that a later one made moot (an older
        # meter reading, a message confirmed while still in memory) is deleted, so the
        # journal stays bounded while the CSMS keeps confirming.
        self._ops: dict[int, _Op] = {}
        self._op_ids = itertools.count()
        self._meter_op: dict[int, int] = {}  # tx_key -> op id of its latest reading
        self._insert_op: dict[int, int] = {}  # in-memory seq -> op id of its INSERT
        self.dropped_meter_values = 0  # oldest in-memory MeterValues dropped at the cap
        self._mem_tx: dict[int, TxRecord] = {}  # created or changed while degraded
        self._mem_settings: dict[str, str | None] = {}  # set (None: deleted) while degraded
        self._setting_op: dict[str, int] = {}  # key -> op id of its latest write
        self._mem_outbox: dict[int, QueuedMessage] = {}  # queued while degraded, by seq
        self._mem_gone: set[int] = set()  # database outbox rows deleted while degraded
        self._mem_attempts: dict[int, int] = {}  # attempts of database rows while degraded
        self._next_tx_key = 0
        self._next_seq = 0
        self._listeners: list[Callable[[bool], None]] = []
        # Keys used by pending writes a previous process left in the spill file.
        self._spilled_tx_key = 0
        self._spilled_seq = 0
        self._spill: SpillFile | None = None
        if spill_dir is not None and self.path != ":memory:":
            self._spill = SpillFile(Path(spill_dir) / (Path(self.path).name + ".spill"))
            self._recover_spill()

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
                for sql, params in ops.values():
                    db.execute(sql, params)
                self._mark_spill_applied(db, generation)
        except StoreError as exc:
            self._ops.update(ops)
            self._op_ids = itertools.count(max(ops) + 1)
            self._restore_overlay(ops)
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
        LOG.warning(
            "%d pending writes from before the restart (database was not writable) applied",
            len(ops),
        )
        self._spill.remove()

    def _restore_overlay(self, ops: dict[int, _Op]) -> None:
        """Rebuild the in-memory view of the spilled writes (the database is still not
        writable), as the crashed process had it: a transaction it began must be recovered,
        a message it saw confirmed must not be sent again, a CSMS transactionId, the latest
        reading and a setting must be read back before flush() can write them."""
        for op_id, (sql, params) in ops.items():
            if sql == _INSERT_TX:
                key = int(params[0])
                self._spilled_tx_key = max(self._spilled_tx_key, key)
                self._mem_tx[key] = TxRecord(
                    tx_key=key,
                    connector_id=int(params[1]),
                    id_tag=str(params[2]),
                    reservation_id=params[3],
                    meter_start_wh=int(params[4]),
                    started_at=str(params[5]),
                    csms_tx_id=None,
                    last_meter_wh=int(params[6]),
                    last_meter_at=str(params[7]),
                    meter_stop_wh=None,
                    stopped_at=None,
                    stop_reason=None,
                    boot_id=str(params[8]),
                )
            elif sql.startswith("UPDATE transactions SET last_meter_wh"):
                energy_wh, at, key = params
                tx = self.get_transaction(int(key))
                if tx is not None and tx.open:
                    self._mem_tx[tx.tx_key] = replace(
                        tx, last_meter_wh=int(energy_wh), last_meter_at=str(at)
                    )
                self._meter_op[int(key)] = op_id
            elif sql.startswith("UPDATE transactions SET meter_stop_wh"):
                stop_wh, stopped_at, reason, _, _, key = params
                tx = self.get_transaction(int(key))
                if tx is not None and tx.open:
                    self._mem_tx[tx.tx_key] = replace(
                        tx,
                        meter_stop_wh=int(stop_wh),
                        stopped_at=str(stopped_at),
                        stop_reason=reason,
                        last_meter_wh=int(stop_wh),
                        last_meter_at=str(stopped_at),
                    )
            elif sql.startswith("UPDATE transactions SET csms_tx_id"):
                tx = self.get_transaction(int(params[1]))
                if tx is not None:
                    self._mem_tx[tx.tx_key] = replace(tx, csms_tx_id=params[0])
            elif sql.startswith("INSERT INTO outbox"):
                seq, key, action, payload = int(params[0]), params[1], str(params[2]), params[3]
                self._spilled_seq = max(self._spilled_seq, seq)
                self._mem_outbox[seq] = QueuedMessage(
                    seq, None if key is None else int(key), action, json.loads(payload), 0
                )
                self._insert_op[seq] = op_id
            elif sql.startswith("DELETE FROM outbox"):
                seq = int(params[0])
                if self._mem_outbox.pop(seq, None) is None:
                    self._mem_gone.add(seq)
                    self._mem_attempts.pop(seq, None)
            elif sql.startswith("UPDATE outbox SET attempts"):
                seq = int(params[0])
                msg = self._mem_outbox.get(seq)
                if msg is not None:
                    self._mem_outbox[seq] = replace(msg, attempts=msg.attempts + 1)
                    continue
                row = self._db.execute("SELECT attempts FROM outbox WHERE seq = ?", (seq,))
                found = row.fetchone()
                if found is not None and seq not in self._mem_gone:
                    self._mem_attempts[seq] = self._mem_attempts.get(seq, int(found[0])) + 1
            elif sql in (self._SET_SETTING, self._DELETE_SETTING):
                name = str(params[0])
                self._mem_settings[name] = None if len(params) < 2 else str(params[1])
                self._setting_op[name] = op_id

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

    # ------------------------------------------------------------------ settings

    def get_setting(self, key: str) -> str | None:
        if key in self._mem_settings:
            return self._mem_settings[key]
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    _SET_SETTING = (
        "INSERT INTO settings (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
    )
    _DELETE_SETTING = "DELETE FROM settings WHERE key = ?"

    def set_setting(self, key: str, value: str) -> None:
        self._write_setting(key, value)

    def delete_setting(self, key: str) -> None:
        self._write_setting(key, None)

    def _write_setting(self, key: str, value: str | None) -> None:
        """A setting (OCPP key, availability, ...) is kept like transaction data when the
        database is not writable: in memory, replayed by flush(), spilled if possible."""
        op: _Op = (
            (self._SET_SETTING, (key, value))
            if value is not None
            else (
                self._DELETE_SETTING,
                (key,),
            )
        )
        if not self.degraded:
            try:
                with self._tx() as db:
                    db.execute(*op)
                return
            except StoreError as exc:
                self._degrade(exc)
        self._mem_settings[key] = value
        self._drop_op(self._setting_op.get(key))  # only the latest value matters
        self._setting_op[key] = self._op(*op)

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

    # ------------------------------------------------------------------ transactions

    def begin_transaction(
        self,
        *,
        connector_id: int,
        id_tag: str,
        meter_start_wh: int,
        started_at: str,
        reservation_id: int | None,
        start_payload: dict[str, Any],
        boot_id: str = "",
    ) -> int:
        """Record a new transaction and queue its StartTransaction in one commit (in
        memory when the database cannot be written)."""
        row = (
            connector_id,
            id_tag,
            reservation_id,
            meter_start_wh,
            started_at,
            meter_start_wh,  # last_meter_wh
            started_at,  # last_meter_at
            boot_id,
        )
        if not self.degraded:
            try:
                with self._tx() as db:
                    # tx_key NULL: SQLite assigns the next key (AUTOINCREMENT).
                    cur = db.execute(_INSERT_TX, (None, *row))
                    tx_key = int(cur.lastrowid or 0)
                    self._enqueue(db, tx_key, "StartTransaction", start_payload)
                return tx_key
            except StoreError as exc:
                self._degrade(exc)
        tx_key = self._next_tx_key
        self._next_tx_key += 1
        self._mem_tx[tx_key] = TxRecord(
            tx_key=tx_key,
            connector_id=connector_id,
            id_tag=id_tag,
            reservation_id=reservation_id,
            meter_start_wh=meter_start_wh,
            started_at=started_at,
            csms_tx_id=None,
            last_meter_wh=meter_start_wh,
            last_meter_at=started_at,
            meter_stop_wh=None,
            stopped_at=None,
            stop_reason=None,
            boot_id=boot_id,
        )
        self._op(_INSERT_TX, (tx_key, *row))
        self._mem_enqueue(tx_key, "StartTransaction", start_payload)
        return tx_key

    def record_meter(self, tx_key: int, energy_wh: int, at: str) -> None:
        """Persist the latest reading of an open transaction (used after power loss)."""
        sql = (
            "UPDATE transactions SET last_meter_wh = ?, last_meter_at = ?"
            " WHERE tx_key = ? AND stopped_at IS NULL"
        )
        if not self.degraded:
            try:
                with self._tx() as db:
                    db.execute(sql, (energy_wh, at, tx_key))
                return
            except StoreError as exc:
                self._degrade(exc)
        self._mem_update_meter(tx_key, energy_wh, at)

    def enqueue_tx_message(
        self,
        tx_key: int | None,
        action: str,
        payload: dict[str, Any],
        *,
        energy_wh: int | None = None,
        at: str | None = None,
    ) -> int:
        """Queue a transaction-related CALL; optionally persist the reading in the same commit."""
        if not self.degraded:
            try:
                with self._tx() as db:
                    if tx_key is not None and energy_wh is not None and at is not None:
                        db.execute(
                            "UPDATE transactions SET last_meter_wh = ?, last_meter_at = ?"
                            " WHERE tx_key = ? AND stopped_at IS NULL",
                            (energy_wh, at, tx_key),
                        )
                    return self._enqueue(db, tx_key, action, payload)
            except StoreError as exc:
                self._degrade(exc)
        if tx_key is not None and energy_wh is not None and at is not None:
            self._mem_update_meter(tx_key, energy_wh, at)
        return self._mem_enqueue(tx_key, action, payload)

    def end_transaction(
        self,
        tx_key: int,
        *,
        meter_stop_wh: int,
        stopped_at: str,
        reason: str,
        stop_payload: dict[str, Any],
    ) -> bool:
        """Close a transaction and queue its StopTransaction in one commit.

        Returns False (and queues nothing) when it was already closed: a transaction
        never gets two StopTransactions.
        """
        sql = (
            "UPDATE transactions SET meter_stop_wh = ?, stopped_at = ?, stop_reason = ?,"
            " last_meter_wh = ?, last_meter_at = ? WHERE tx_key = ? AND stopped_at IS NULL"
        )
        params = (meter_stop_wh, stopped_at, reason, meter_stop_wh, stopped_at, tx_key)
        if not self.degraded:
            try:
                with self._tx() as db:
                    cur = db.execute(sql, params)
                    if cur.rowcount != 1:
                        return False
                    self._enqueue(db, tx_key, "StopTransaction", stop_payload)
                    return True
            except StoreError as exc:
                self._degrade(exc)
        tx = self.get_transaction(tx_key)
        if tx is None or not tx.open:
            return False
        self._mem_tx[tx_key] = replace(
            tx,
            meter_stop_wh=meter_stop_wh,
            stopped_at=stopped_at,
            stop_reason=reason,
            last_meter_wh=meter_stop_wh,
            last_meter_at=stopped_at,
        )
        self._op(sql, params)
        self._mem_enqueue(tx_key, "StopTransaction", stop_payload)
        return True

    def get_transaction(self, tx_key: int) -> TxRecord | None:
        if tx_key in self._mem_tx:
            return self._mem_tx[tx_key]
        row = self._db.execute("SELECT * FROM transactions WHERE tx_key = ?", (tx_key,)).fetchone()
        return None if row is None else _tx_record(row)

    def open_transactions(self) -> list[TxRecord]:
        rows = self._db.execute(
            "SELECT * FROM transactions WHERE stopped_at IS NULL ORDER BY tx_key"
        ).fetchall()
        return [t for t in self._merged(_tx_record(r) for r in rows) if t.open]

    def transactions(self, limit: int = 100) -> list[TxRecord]:
        rows = self._db.execute(
            "SELECT * FROM transactions ORDER BY tx_key DESC LIMIT ?", (limit,)
        ).fetchall()
        merged = self._merged(_tx_record(r) for r in rows)
        return sorted(merged, key=lambda t: t.tx_key, reverse=True)[:limit]

    def _merged(self, records: Iterable[TxRecord]) -> list[TxRecord]:
        """Database records overlaid with the in-memory ones (degraded mode), by tx_key."""
        by_key = {t.tx_key: t for t in records}
        by_key.update(self._mem_tx)
        return [by_key[k] for k in sorted(by_key)]

    def confirm_start(self, seq: int, tx_key: int, csms_tx_id: int) -> None:
        """Map the CSMS transactionId and drop the confirmed StartTransaction atomically."""
        if not self.degraded:
            try:
                with self._tx() as db:
                    db.execute(
                        "UPDATE transactions SET csms_tx_id = ? WHERE tx_key = ?",
                        (csms_tx_id, tx_key),
                    )
                    db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
                return
            except StoreError as exc:
                self._degrade(exc)
        tx = self.get_transaction(tx_key)
        if tx is not None:
            self._mem_tx[tx_key] = replace(tx, csms_tx_id=csms_tx_id)
        self._op("UPDATE transactions SET csms_tx_id = ? WHERE tx_key = ?", (csms_tx_id, tx_key))
        self._mem_delete(seq)

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

    def _enqueue(
        self, db: sqlite3.Connection, tx_key: int | None, action: str, payload: dict[str, Any]
    ) -> int:
        cur = db.execute(
            "INSERT INTO outbox (tx_key, action, payload, created_at) VALUES (?, ?, ?, ?)",
            (tx_key, action, json.dumps(payload, separators=(",", ":")), time.time()),
        )
        return int(cur.lastrowid or 0)

    def outbox_head(self) -> QueuedMessage | None:
        """The oldest queued message (see ``outbox_batch``)."""
        batch = self.outbox_batch(0, 1)
        return batch[0] if batch else None

    def outbox_batch(self, after_seq: int, limit: int) -> list[QueuedMessage]:
        """Up to ``limit`` queued messages with seq > ``after_seq``, oldest first: database
        rows, then those kept in memory (their seqs continue the database's, so this is the
        order of enqueueing). One query instead of one per message during a replay."""
        out: list[QueuedMessage] = []
        for row in self._db.execute(
            "SELECT * FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit + len(self._mem_gone)),
        ):
            seq = int(row["seq"])
            if seq in self._mem_gone:
                continue
            out.append(
                QueuedMessage(
                    seq=seq,
                    tx_key=None if row["tx_key"] is None else int(row["tx_key"]),
                    action=str(row["action"]),
                    payload=json.loads(row["payload"]),
                    attempts=self._mem_attempts.get(seq, int(row["attempts"])),
                )
            )
            if len(out) == limit:
                return out
        for seq, msg in self._mem_outbox.items():
            if len(out) == limit:
                break
            if seq > after_seq:
                out.append(msg)
        return out

    def outbox_delete(self, seq: int, *, durable: bool = True) -> None:
        """Drop a confirmed message (see ``outbox_delete_many``)."""
        self.outbox_delete_many([seq], durable=durable)

    def outbox_delete_many(self, seqs: Sequence[int], *, durable: bool = True) -> None:
        """Drop confirmed messages in one commit. ``durable=False`` skips the fsync: only
        for messages whose re-delivery after a crash is harmless (MeterValues); it halves
        replay time on SD cards. Start/Stop confirmations must stay durable."""
        if not seqs:
            return
        if not self.degraded:
            try:
                if not durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")
                try:
                    with self._tx() as db:
                        db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
                finally:
                    if not durable:
                        self._db.execute("PRAGMA synchronous=FULL")
                return
            except StoreError as exc:
                self._degrade(exc)
        for seq in seqs:
            self._mem_delete(seq)

    def outbox_mark_attempt(self, seq: int) -> int:
        if not self.degraded:
            try:
                with self._tx() as db:
                    db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (seq,))
                    row = db.execute("SELECT attempts FROM outbox WHERE seq = ?", (seq,)).fetchone()
                return 0 if row is None else int(row["attempts"])
            except StoreError as exc:
                self._degrade(exc)
        self._op("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (seq,))
        msg = self._mem_outbox.get(seq)
        if msg is not None:
            self._mem_outbox[seq] = replace(msg, attempts=msg.attempts + 1)
            return msg.attempts + 1
        row = self._db.execute("SELECT attempts FROM outbox WHERE seq = ?", (seq,)).fetchone()
        if row is None or seq in self._mem_gone:
            return 0
        attempts = self._mem_attempts.get(seq, int(row["attempts"])) + 1
        self._mem_attempts[seq] = attempts
        return attempts

    def outbox_count(self) -> int:
        stored = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        return stored - len(self._mem_gone) + len(self._mem_outbox)

    # ------------------------------------------------------------------ degraded mode

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        """Called with True when the store turns degraded, False when it recovered."""
        self._listeners.append(listener)

    def memory_messages(self) -> int:
        """Outbox messages held only in memory (lost on a crash)."""
        return len(self._mem_outbox)

    def _degrade(self, exc: Exception) -> None:
        """A transaction write failed: from now on keep transaction data in memory."""
        if self.degraded:
            return
        stored_tx = self._db.execute(
            "SELECT MAX(n) FROM (SELECT MAX(tx_key) AS n FROM transactions"
            " UNION ALL SELECT seq FROM sqlite_sequence WHERE name = 'transactions')"
        ).fetchone()[0]
        stored_seq = self._db.execute(
            "SELECT MAX(n) FROM (SELECT MAX(seq) AS n FROM outbox"
            " UNION ALL SELECT seq FROM sqlite_sequence WHERE name = 'outbox')"
        ).fetchone()[0]
        self._next_tx_key = max(int(stored_tx or 0), self._spilled_tx_key) + 1
        self._next_seq = max(int(stored_seq or 0), self._spilled_seq) + 1
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
                for sql, params in self._ops.values():
                    db.execute(sql, params)
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
        self._spilled_tx_key = self._spilled_seq = 0
        self._ops.clear()
        self._mem_settings.clear()
        self._setting_op.clear()
        self._meter_op.clear()
        self._insert_op.clear()
        self._mem_tx.clear()
        self._mem_outbox.clear()
        self._mem_gone.clear()
        self._mem_attempts.clear()
        self.degraded = False
        self.degraded_reason = ""
        for listener in list(self._listeners):
            listener(False)
        return True

    def _op(self, sql: str, params: tuple[Any, ...]) -> int:
        op_id = next(self._op_ids)
        self._ops[op_id] = (sql, params)
        if self._spill is not None:
            self._spill.add(op_id, (sql, params))
        return op_id

    def _drop_op(self, op_id: int | None) -> None:
        if op_id is not None and self._ops.pop(op_id, None) is not None and self._spill:
            self._spill.drop(op_id)

    def _mem_enqueue(self, tx_key: int | None, action: str, payload: dict[str, Any]) -> int:
        seq = self._next_seq
        self._next_seq += 1
        self._mem_outbox[seq] = QueuedMessage(seq, tx_key, action, payload, 0)
        self._insert_op[seq] = self._op(
            "INSERT INTO outbox (seq, tx_key, action, payload, created_at) VALUES (?, ?, ?, ?, ?)",
            (seq, tx_key, action, json.dumps(payload, separators=(",", ":")), time.time()),
        )
        if action == "MeterValues":
            self._cap_memory_meter_values()
        return seq

    def _cap_memory_meter_values(self) -> None:
        """Bound the memory a long disk-full period takes: beyond MAX_MEMORY_METER_VALUES
        unconfirmed MeterValues in memory, drop the oldest. Billing does not depend on them
        (StopTransaction carries meterStop, and the transaction row the latest reading);
        Start/StopTransaction are never dropped."""
        meter_seqs = [s for s, m in self._mem_outbox.items() if m.action == "MeterValues"]
        excess = len(meter_seqs) - MAX_MEMORY_METER_VALUES
        for seq in meter_seqs[: max(0, excess)]:
            del self._mem_outbox[seq]
            self._drop_op(self._insert_op.pop(seq, None))
            self.dropped_meter_values += 1
            if self.dropped_meter_values == 1 or self.dropped_meter_values % 1000 == 0:
                LOG.error(
                    "database still not writable: %d oldest queued MeterValues dropped to "
                    "bound memory (%d kept)",
                    self.dropped_meter_values,
                    MAX_MEMORY_METER_VALUES,
                )

    def _mem_delete(self, seq: int) -> None:
        if self._mem_outbox.pop(seq, None) is not None:
            # Never written: forgetting its INSERT is the whole delete.
            self._drop_op(self._insert_op.pop(seq, None))
            return
        exists = self._db.execute("SELECT 1 FROM outbox WHERE seq = ?", (seq,)).fetchone()
        if exists is not None and seq not in self._mem_gone:
            self._op("DELETE FROM outbox WHERE seq = ?", (seq,))
            self._mem_gone.add(seq)
            self._mem_attempts.pop(seq, None)

    def _mem_update_meter(self, tx_key: int, energy_wh: int, at: str) -> None:
        tx = self.get_transaction(tx_key)
        if tx is None or not tx.open:
            return
        self._mem_tx[tx_key] = replace(tx, last_meter_wh=energy_wh, last_meter_at=at)
        previous = self._meter_op.get(tx_key)
        if previous is not None:
            self._drop_op(previous)  # only the latest reading matters
        self._meter_op[tx_key] = self._op(
            "UPDATE transactions SET last_meter_wh = ?, last_meter_at = ?"
            " WHERE tx_key = ? AND stopped_at IS NULL",
            (energy_wh, at, tx_key),
        )

    def integrity_ok(self) -> bool:
        row = self._db.execute("PRAGMA quick_check").fetchone()
        return row is not None and row[0] == "ok"


def _tx_record(row: sqlite3.Row) -> TxRecord:
    return TxRecord(
        tx_key=int(row["tx_key"]),
        connector_id=int(row["connector_id"]),
        id_tag=str(row["id_tag"]),
        reservation_id=row["reservation_id"],
        meter_start_wh=int(row["meter_start_wh"]),
        started_at=str(row["started_at"]),
        csms_tx_id=row["csms_tx_id"],
        last_meter_wh=int(row["last_meter_wh"]),
        last_meter_at=str(row["last_meter_at"]),
        meter_stop_wh=row["meter_stop_wh"],
        stopped_at=row["stopped_at"],
        stop_reason=row["stop_reason"],
        boot_id=str(row["boot_id"]),
    )


def open_store(path: str | Path, *, spill_dir: str | Path | None = None) -> Store:
    """Open the database; a corrupt file is moved aside so the charger still starts.

    A database from a newer evsed, or one whose migration failed, is not corrupt: it holds
    billing records and queued messages this code cannot safely use or would have to drop.
    It is left as it is and SchemaError propagates: the daemon refuses to start and says why.
    """
    try:
        store = Store(path, spill_dir=spill_dir)
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
    return Store(path, spill_dir=spill_dir)
