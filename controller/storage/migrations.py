"""Schema migrations of the SQLite store: an ordered list, each applied with its version bump
in one transaction, a backup before upgrading, and a refusal to touch newer databases."""

from __future__ import annotations

import glob
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    """Takes the schema from ``version - 1`` to ``version``. Released migrations are frozen:
    never edit one, add the next (a charger in the field may be at any earlier version)."""

    version: int
    description: str
    statements: tuple[str, ...]


# Version 1: the schema evsed created before there were migrations, exactly as it was (it
# recorded itself as meta.schema_version = '1'). IF NOT EXISTS because v1 created its tables
# one autocommitted statement at a time: a database cut off half-way is completed here.
V1_STATEMENTS: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS transactions (
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
)""",
    "CREATE INDEX IF NOT EXISTS transactions_open ON transactions (stopped_at)",
    """CREATE TABLE IF NOT EXISTS auth_cache (
    id_tag TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    parent_id_tag TEXT,
    expiry_date TEXT,
    last_used REAL NOT NULL
)""",
    # Local Authorization List (OCPP 1.6 3.5.2); idTags are CiString20 (errata 3.74): NOCASE.
    # Its version lives in meta.local_list_version.
    """CREATE TABLE IF NOT EXISTS local_list (
    id_tag TEXT PRIMARY KEY COLLATE NOCASE,
    status TEXT NOT NULL,
    parent_id_tag TEXT,
    expiry_date TEXT
)""",
    """CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tx_key INTEGER,
    action TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
)""",
)

# Version 2: Authorization Cache idTags are CiString20 too (errata 3.74), so "04a1b2c3" must
# find the entry of "04A1B2C3". SQLite cannot change a column's collation in place: the table
# is rebuilt (sqlite.org/lang_altertable.html, "other kinds of table schema changes"). Entries
# that differ only in case become one: the most recently used wins (ties: the upper-case one,
# which sorts first in BINARY order).
V2_STATEMENTS: tuple[str, ...] = (
    """CREATE TABLE auth_cache_v2 (
    id_tag TEXT PRIMARY KEY COLLATE NOCASE,
    status TEXT NOT NULL,
    parent_id_tag TEXT,
    expiry_date TEXT,
    last_used REAL NOT NULL
)""",
    """INSERT INTO auth_cache_v2 (id_tag, status, parent_id_tag, expiry_date, last_used)
SELECT id_tag, status, parent_id_tag, expiry_date, last_used FROM (
    SELECT *, row_number() OVER (
        PARTITION BY id_tag COLLATE NOCASE ORDER BY last_used DESC, id_tag
    ) AS newest
    FROM auth_cache
) WHERE newest = 1""",
    "DROP TABLE auth_cache",
    "ALTER TABLE auth_cache_v2 RENAME TO auth_cache",
)

# Version 3: a version-neutral transaction journal for several protocols and backends.
# - transactions.tx_id: the charger's own text id (OCPP 2.0.1 transactionId): 128 random
#   bits, unique without an index (one would cost every begin a B-tree write; the only
#   lookups by it are among the few open transactions).
# - tx_backend: per transaction and backend, that backend's id of it (the OCPP 1.6 integer
#   transactionId becomes text here) and the sequence number of its next message (2.0.1
#   seqNo, advanced in the commit that queues the message).
# - outbox.backend: whose queue a message is in; outbox.kind: the event it reports (started,
#   samples, ended) so that the store never decides by a protocol's action name;
#   outbox.tx_seq: its sequence number (NULL for messages queued before this version).
# The single backend of earlier versions is 'csms'; its next sequence number is 1 (its
# StartTransaction, delivered or queued, was message 0). No index on outbox.backend: a
# backend's queue is read from its last seq on in rowid order, and a second index would
# cost every durable enqueue and delete another B-tree update.
V3_STATEMENTS: tuple[str, ...] = (
    "ALTER TABLE transactions ADD COLUMN tx_id TEXT",
    "UPDATE transactions SET tx_id = lower(hex(randomblob(16)))",
    """CREATE TABLE tx_backend (
    tx_key INTEGER NOT NULL REFERENCES transactions (tx_key),
    backend TEXT NOT NULL,
    csms_tx_id TEXT,
    next_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tx_key, backend)
) WITHOUT ROWID""",
    """INSERT INTO tx_backend (tx_key, backend, csms_tx_id, next_seq)
SELECT tx_key, 'csms', CAST(csms_tx_id AS TEXT), 1 FROM transactions""",
    "ALTER TABLE transactions DROP COLUMN csms_tx_id",
    "ALTER TABLE outbox ADD COLUMN backend TEXT NOT NULL DEFAULT 'csms'",
    "ALTER TABLE outbox ADD COLUMN kind TEXT",
    "ALTER TABLE outbox ADD COLUMN tx_seq INTEGER",
    """UPDATE outbox SET kind = CASE action WHEN 'StartTransaction' THEN 'started'
    WHEN 'MeterValues' THEN 'samples' WHEN 'StopTransaction' THEN 'ended' END""",
)

# Version 4: installed charging profiles (smart charging), per backend: each backend's profile
# ids are its own. ``body`` is the version-neutral profile as JSON (storage/profiles.py); the
# other columns are what replacing and clearing select by.
V4_STATEMENTS: tuple[str, ...] = (
    """CREATE TABLE charging_profiles (
    backend TEXT NOT NULL,
    profile_id INTEGER NOT NULL,
    connector_id INTEGER NOT NULL,
    purpose TEXT NOT NULL,
    stack_level INTEGER NOT NULL,
    tx_key INTEGER,
    body TEXT NOT NULL,
    PRIMARY KEY (backend, profile_id)
) WITHOUT ROWID""",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "baseline schema (evsed before migrations)", V1_STATEMENTS),
    Migration(2, "auth_cache idTags compare case-insensitively (CiString20)", V2_STATEMENTS),
    Migration(
        3,
        "version-neutral journal: text transaction ids per backend, outbox per backend",
        V3_STATEMENTS,
    ),
    Migration(4, "installed charging profiles per backend", V4_STATEMENTS),
)

SCHEMA_VERSION = MIGRATIONS[-1].version

# The version table: one row per applied migration, so the history (when, by which evsed) can
# be read with plain SQL. Bookkeeping of the runner, created in a migration's transaction.
_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL, description TEXT NOT NULL)"
)

# Errors that mean the file itself is damaged: open_store moves such a file aside.
_CORRUPT_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class SchemaError(Exception):
    """The database cannot be brought to this code's schema; the file was left untouched."""


class SchemaTooNew(SchemaError):
    """The database was written by a newer evsed (a downgrade): not corruption, not ours to
    change. The daemon refuses to start rather than move it aside and lose its records."""

    def __init__(self, path: str, found: int, known: int) -> None:
        self.path = path
        self.found = found
        self.known = known
        backup = f"{path}.pre-v{found}"
        hint = (
            f"; {backup} is the database as it was before that upgrade (restoring it loses"
            " everything recorded since)"
            if os.path.exists(backup)
            else ""
        )
        super().__init__(
            f"database {path} has schema version {found}, but this evsed knows only up to"
            f" {known}: it was written by a newer evsed. Not starting, so that its transactions"
            f" and queued messages stay intact: install the newer evsed again{hint}"
        )


class MigrationError(SchemaError):
    """A migration failed and was rolled back: the database is still at the old version."""


def _table_exists(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def current_version(db: sqlite3.Connection) -> int:
    """The schema version of an open database: 0 for an empty one (works read-only)."""
    if _table_exists(db, "schema_version"):
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)
    if _table_exists(db, "meta"):
        # Before the version table, v1 wrote meta.schema_version right after its tables; a
        # database without that row was cut off while being created: version 0, redo it.
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            return 0
        try:
            return int(row[0])
        except (TypeError, ValueError):
            raise SchemaError(f"unreadable schema version {row[0]!r} in meta") from None
    return 0


def migrate(
    db: sqlite3.Connection,
    path: str,
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> int:
    """Bring the database at ``path`` (open as ``db``, autocommit mode) to the last version of
    ``migrations``; returns the version it was at. Raises SchemaTooNew for a newer database
    and MigrationError (after a rollback) when a migration fails; sqlite3.DatabaseError for a
    corrupt file."""
    latest = migrations[-1].version
    found = current_version(db)
    if found > latest:
        raise SchemaTooNew(path, found, latest)
    if found == latest:
        return found
    if found > 0 and path != ":memory:":
        backup(db, path, latest)
        LOG.warning(
            "database %s: migrating schema version %d to %d (backup %s.pre-v%d)",
            path,
            found,
            latest,
            path,
            latest,
        )
    for migration in migrations:
        if migration.version > found:
            _apply(db, path, migration)
    return found


def _apply(db: sqlite3.Connection, path: str, migration: Migration) -> None:
    """One migration and its version row in one transaction: a power cut at any point leaves
    either the old version with its data or the new one (WAL commit is atomic)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        # Re-read under the write lock: another process may have migrated meanwhile.
        at = current_version(db)
        if at >= migration.version:
            db.execute("ROLLBACK")
            return
        if at != migration.version - 1:
            raise SchemaError(f"migration {migration.version} needs version {at + 1} first")
        for sql in migration.statements:
            db.execute(sql)
        db.execute(_VERSION_TABLE)
        if at > 0 and db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
            # A v1 database from before the version table: record what it was found at.
            db.execute(
                "INSERT INTO schema_version (version, applied_at, description)"
                " VALUES (?, '', 'found in meta.schema_version')",
                (at,),
            )
        db.execute(
            "INSERT INTO schema_version (version, applied_at, description) VALUES (?, ?, ?)",
            (
                migration.version,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                migration.description,
            ),
        )
        # Kept equal to the version table for anything that reads the v1 location.
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (str(migration.version),),
        )
        db.execute("COMMIT")
    except BaseException as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.DatabaseError) and exc.sqlite_errorcode in _CORRUPT_CODES:
            raise
        if isinstance(exc, sqlite3.Error):
            raise MigrationError(
                f"database {path}: migration to schema version {migration.version}"
                f" ({migration.description}) failed and was rolled back, the database is"
                f" unchanged at version {migration.version - 1}: {exc}"
            ) from exc
        raise


def backup_path(path: str, version: int) -> str:
    return f"{path}.pre-v{version}"


def backup(db: sqlite3.Connection, path: str, version: int) -> str:
    """Copy the database (WAL content included, via the SQLite backup API) to
    ``<path>.pre-v<version>`` before migrating; older ``.pre-v*`` copies are removed. Written
    to a temporary name and renamed, so a power cut never leaves a half copy under the real
    name. Raises MigrationError when the copy cannot be written (then nothing is migrated)."""
    target = backup_path(path, version)
    tmp = f"{target}.tmp"
    try:
        if os.path.exists(tmp):
            os.remove(tmp)
        copy = sqlite3.connect(tmp)
        try:
            db.backup(copy)
            # The copy inherits WAL mode from the header; one self-contained file is simpler
            # to keep, move and restore.
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        for old in glob.glob(glob.escape(path) + ".pre-v*"):
            if old != target:
                os.remove(old)
        dir_fd = os.open(Path(path).parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except (OSError, sqlite3.Error) as exc:
        raise MigrationError(
            f"database {path}: no backup before migrating ({exc}); nothing was migrated."
            " Free some space (or fix the permissions) in its directory"
        ) from exc
    return target
