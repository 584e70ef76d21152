"""Durable SQLite store: settings, transactions, the transaction-message outbox, the
Authorization Cache and the Local Authorization List."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transactions (
    tx_key INTEGER PRIMARY KEY AUTOINCREMENT,
    connector_id INTEGER NOT NULL,
    id_tag TEXT NOT NULL,
    reservation_id INTEGER,
    meter_start_wh INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    csms_tx_id INTEGER,
    last_meter_wh INTEGER NOT NULL,
    last_meter_at TEXT NOT NULL,
    meter_stop_wh INTEGER,
    stopped_at TEXT,
    stop_reason TEXT,
    boot_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS transactions_open ON transactions (stopped_at);
CREATE TABLE IF NOT EXISTS auth_cache (
    id_tag TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    parent_id_tag TEXT,
    expiry_date TEXT,
    last_used REAL NOT NULL
);
-- Local Authorization List (OCPP 1.6 3.5.2); idTags are CiString20 (errata 3.74): NOCASE.
-- Its version lives in meta.local_list_version.
CREATE TABLE IF NOT EXISTS local_list (
    id_tag TEXT PRIMARY KEY COLLATE NOCASE,
    status TEXT NOT NULL,
    parent_id_tag TEXT,
    expiry_date TEXT
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tx_key INTEGER,
    action TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class TxRecord:
    """One transaction as stored; ``csms_tx_id`` is None until StartTransaction.conf."""

    tx_key: int
    connector_id: int
    id_tag: str
    reservation_id: int | None
    meter_start_wh: int
    started_at: str
    csms_tx_id: int | None
    last_meter_wh: int
    last_meter_at: str
    meter_stop_wh: int | None
    stopped_at: str | None
    stop_reason: str | None
    boot_id: str

    @property
    def open(self) -> bool:
        return self.stopped_at is None


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


# (status, parent idTag, expiry date): an IdTagInfo as stored in the cache or the local list.
TagInfo = tuple[str, str | None, str | None]


class LocalListTooLong(Exception):
    """A SendLocalList would leave more entries than allowed; nothing was changed."""


class StoreError(Exception):
    """The database could not be written (disk full, I/O error); the caller keeps charging."""


class Store:
    """SQLite in WAL mode with synchronous=FULL: a committed row survives power loss."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        # executescript commits on its own; the schema statements are idempotent.
        self._db.executescript(_SCHEMA)
        with self._tx():
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable unit of work (BEGIN IMMEDIATE ... COMMIT)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(str(exc)) from exc
        try:
            yield self._db
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StoreError(str(exc)) from exc

    # ------------------------------------------------------------------ settings

    def get_setting(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_setting(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def delete_setting(self, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM settings WHERE key = ?", (key,))

    def settings_with_prefix(self, prefix: str) -> dict[str, str]:
        rows = self._db.execute(
            "SELECT key, value FROM settings WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
        ).fetchall()
        return {str(r["key"]): str(r["value"]) for r in rows}

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
        """Record a new transaction and queue its StartTransaction in one commit."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO transactions (connector_id, id_tag, reservation_id, meter_start_wh,"
                " started_at, last_meter_wh, last_meter_at, boot_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    connector_id,
                    id_tag,
                    reservation_id,
                    meter_start_wh,
                    started_at,
                    meter_start_wh,
                    started_at,
                    boot_id,
                ),
            )
            tx_key = int(cur.lastrowid or 0)
            self._enqueue(db, tx_key, "StartTransaction", start_payload)
        return tx_key

    def record_meter(self, tx_key: int, energy_wh: int, at: str) -> None:
        """Persist the latest reading of an open transaction (used after power loss)."""
        with self._tx() as db:
            db.execute(
                "UPDATE transactions SET last_meter_wh = ?, last_meter_at = ?"
                " WHERE tx_key = ? AND stopped_at IS NULL",
                (energy_wh, at, tx_key),
            )

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
        with self._tx() as db:
            if tx_key is not None and energy_wh is not None and at is not None:
                db.execute(
                    "UPDATE transactions SET last_meter_wh = ?, last_meter_at = ?"
                    " WHERE tx_key = ? AND stopped_at IS NULL",
                    (energy_wh, at, tx_key),
                )
            return self._enqueue(db, tx_key, action, payload)

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
        with self._tx() as db:
            cur = db.execute(
                "UPDATE transactions SET meter_stop_wh = ?, stopped_at = ?, stop_reason = ?,"
                " last_meter_wh = ?, last_meter_at = ? WHERE tx_key = ? AND stopped_at IS NULL",
                (meter_stop_wh, stopped_at, reason, meter_stop_wh, stopped_at, tx_key),
            )
            if cur.rowcount != 1:
                return False
            self._enqueue(db, tx_key, "StopTransaction", stop_payload)
            return True

    def get_transaction(self, tx_key: int) -> TxRecord | None:
        row = self._db.execute("SELECT * FROM transactions WHERE tx_key = ?", (tx_key,)).fetchone()
        return None if row is None else _tx_record(row)

    def open_transactions(self) -> list[TxRecord]:
        rows = self._db.execute(
            "SELECT * FROM transactions WHERE stopped_at IS NULL ORDER BY tx_key"
        ).fetchall()
        return [_tx_record(r) for r in rows]

    def transactions(self, limit: int = 100) -> list[TxRecord]:
        rows = self._db.execute(
            "SELECT * FROM transactions ORDER BY tx_key DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_tx_record(r) for r in rows]

    def confirm_start(self, seq: int, tx_key: int, csms_tx_id: int) -> None:
        """Map the CSMS transactionId and drop the confirmed StartTransaction atomically."""
        with self._tx() as db:
            db.execute(
                "UPDATE transactions SET csms_tx_id = ? WHERE tx_key = ?", (csms_tx_id, tx_key)
            )
            db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

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
        with self._tx() as db:
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
        with self._tx() as db:
            db.execute(
                "UPDATE auth_cache SET last_used = ? WHERE id_tag = ? AND last_used <= ?",
                (used_at, id_tag, used_at - min_age_s),
            )

    def cache_set_status(self, id_tag: str, status: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE auth_cache SET status = ? WHERE id_tag = ?", (status, id_tag))

    def cache_delete(self, id_tag: str) -> None:
        with self._tx() as db:
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
        row = self._db.execute("SELECT * FROM outbox ORDER BY seq LIMIT 1").fetchone()
        if row is None:
            return None
        return QueuedMessage(
            seq=int(row["seq"]),
            tx_key=None if row["tx_key"] is None else int(row["tx_key"]),
            action=str(row["action"]),
            payload=json.loads(row["payload"]),
            attempts=int(row["attempts"]),
        )

    def outbox_delete(self, seq: int, *, durable: bool = True) -> None:
        """Drop a confirmed message. ``durable=False`` skips the fsync: for messages whose
        re-delivery after a crash is harmless (MeterValues), it halves replay time on SD
        cards. Start/Stop confirmations must stay durable."""
        if durable:
            with self._tx() as db:
                db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            return
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._tx() as db:
                db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    def outbox_mark_attempt(self, seq: int) -> int:
        with self._tx() as db:
            db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (seq,))
            row = db.execute("SELECT attempts FROM outbox WHERE seq = ?", (seq,)).fetchone()
        return 0 if row is None else int(row["attempts"])

    def outbox_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

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


def open_store(path: str | Path) -> Store:
    """Open the database; a corrupt file is moved aside so the charger still starts."""
    try:
        store = Store(path)
        if store.integrity_ok():
            return store
        store.close()
        reason = "integrity check failed"
    except sqlite3.DatabaseError as exc:
        reason = str(exc)
    aside = f"{path}.corrupt-{time.time_ns()}"
    LOG.error("database %s unusable (%s); moved to %s, starting fresh", path, reason, aside)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return Store(path)
