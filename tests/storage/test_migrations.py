"""Schema migrations (controller/storage/migrations.py): a database built at every earlier version,
with realistic rows, is brought to the current one with its data intact; a newer database is
refused and left untouched; a failing or interrupted migration leaves the old version."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from controller.storage import migrations
from controller.storage.migrations import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    MigrationError,
    SchemaTooNew,
    current_version,
    migrate,
)
from controller.storage.store import LocalListTooLong, Store, open_store
from controller.storage.writes import EventKind
from tests.journal16 import start_msgs

REPO = Path(__file__).resolve().parents[2]

# The schema script of evsed before migrations (controller/storage/store.py at a916286), verbatim:
# the v1 databases in the field were created by exactly this, then meta.schema_version = '1'.
LEGACY_V1_SCRIPT = """
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

T0 = "2026-03-01T08:00:00.000+00:00"
T1 = "2026-03-01T09:30:00.000+00:00"
T2 = "2026-03-02T18:00:00.000+00:00"
T3 = "2026-03-02T18:20:00.000+00:00"


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    return db


def build_v1(path: Path) -> None:
    """A database as evsed before migrations left it."""
    db = _connect(path)
    db.executescript(LEGACY_V1_SCRIPT)
    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1')")
    db.close()


def build_at(path: Path, version: int) -> None:
    """A database at ``version`` as that evsed release created it (0: an empty file)."""
    if version == 0:
        _connect(path).close()
        return
    if version == 1:
        build_v1(path)
        return
    db = _connect(path)
    migrate(db, str(path), MIGRATIONS[:version])
    db.close()


def populate(path: Path) -> None:
    """Realistic rows, in SQL every version before the current one understands: a closed
    session whose StopTransaction is still queued, an open one started offline (no
    transactionId yet) with queued Start and MeterValues, OCPP keys set by the CSMS, a
    local list and an Authorization Cache (version 1: with entries that differ only in
    case)."""
    db = _connect(path)
    version = current_version(db)
    db.execute("BEGIN")
    stop = {"transactionId": 501, "meterStop": 8400, "timestamp": T1, "reason": "Local"}
    start = {"connectorId": 2, "idTag": "DEADBEEF", "meterStart": 20000, "timestamp": T2}
    mv = {"connectorId": 2, "meterValue": [{"timestamp": T3, "sampledValue": [{"value": "1"}]}]}
    if version < 3:
        tx = (
            "INSERT INTO transactions (tx_key, connector_id, id_tag, reservation_id,"
            " meter_start_wh, started_at, csms_tx_id, last_meter_wh, last_meter_at,"
            " meter_stop_wh, stopped_at, stop_reason, boot_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        db.execute(tx, (1, 1, "04A1B2C3", None, 1000, T0, 501, 8400, T1, 8400, T1, "Local", "b1"))
        db.execute(tx, (2, 2, "DEADBEEF", 7, 20000, T2, None, 21500, T3, None, None, None, "b2"))
        outbox = (
            "INSERT INTO outbox (seq, tx_key, action, payload, attempts, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)"
        )
        rows: list[tuple[Any, ...]] = [
            (11, 1, "StopTransaction", json.dumps(stop), 3, 1772355000.0),
            (12, 2, "StartTransaction", json.dumps(start), 0, 1772474400.0),
            (13, 2, "MeterValues", json.dumps(mv), 1, 1772475600.0),
        ]
    else:
        # Schema 3: the charger's own ids, the CSMS id per backend, kinds on the outbox.
        tx = (
            "INSERT INTO transactions (tx_key, tx_id, connector_id, id_tag, reservation_id,"
            " meter_start_wh, started_at, last_meter_wh, last_meter_at, meter_stop_wh,"
            " stopped_at, stop_reason, boot_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        db.execute(
            tx, (1, "a" * 32, 1, "04A1B2C3", None, 1000, T0, 8400, T1, 8400, T1, "Local", "b1")
        )
        db.execute(
            tx, (2, "b" * 32, 2, "DEADBEEF", 7, 20000, T2, 21500, T3, None, None, None, "b2")
        )
        db.execute("INSERT INTO tx_backend VALUES (1, 'csms', '501', 1), (2, 'csms', NULL, 1)")
        outbox = (
            "INSERT INTO outbox (seq, tx_key, action, payload, attempts, created_at, kind)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        rows = [
            (11, 1, "StopTransaction", json.dumps(stop), 3, 1772355000.0, "ended"),
            (12, 2, "StartTransaction", json.dumps(start), 0, 1772474400.0, "started"),
            (13, 2, "MeterValues", json.dumps(mv), 1, 1772475600.0, "samples"),
        ]
    db.executemany(outbox, rows)
    settings = [
        ("cfg.HeartbeatInterval", "900"),
        ("cfg.AuthorizationKey", "0123456789abcdef"),
        ("availability.2", "Inoperative"),
        ("clock.last_good_utc", T3),
    ]
    db.executemany("INSERT INTO settings (key, value) VALUES (?, ?)", settings)
    db.execute("INSERT INTO meta (key, value) VALUES ('local_list_version', '42')")
    db.executemany(
        "INSERT INTO local_list VALUES (?, ?, ?, ?)",
        [("AA11BB22", "Accepted", "FLEET", None), ("cc33dd44", "Blocked", None, None)],
    )
    cache = [
        # Three spellings of one card: the most recently used one (Blocked) must survive.
        ("CAFE0001", "Accepted", None, "2026-12-31T00:00:00Z", 1772000000.0),
        ("cafe0001", "Blocked", "PARENT", None, 1772300000.0),
        ("Cafe0001", "Expired", None, None, 1772100000.0),
        # A tie on last_used: decided by BINARY order, upper case first.
        ("beef0002", "Invalid", None, None, 1772000000.0),
        ("BEEF0002", "Accepted", None, None, 1772000000.0),
        ("12345678", "Accepted", None, None, 1771000000.0),
    ]
    if current_version(db) >= 2:
        # From version 2 on the cache compares idTags case-insensitively: one row per card,
        # the ones that version 2's migration keeps.
        cache = [cache[1], cache[4], cache[5]]
    db.executemany("INSERT INTO auth_cache VALUES (?, ?, ?, ?, ?)", cache)
    db.execute("COMMIT")
    db.close()


def fingerprint(path: Path) -> str:
    """Bytes of the database and its WAL: unchanged means nothing was written."""
    h = hashlib.sha256()
    for suffix in ("", "-wal"):
        p = Path(f"{path}{suffix}")
        h.update(p.read_bytes() if p.exists() else b"-")
    return h.hexdigest()


def schema_of(path: Path) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            " ORDER BY type, name"
        ).fetchall()
    finally:
        db.close()
    # ALTER TABLE RENAME quotes the new name: compare the definitions, not the spelling.
    return [(t, n, (s or "").replace('"auth_cache"', "auth_cache")) for t, n, s in rows]


def version_rows(path: Path) -> list[tuple[int, str]]:
    db = sqlite3.connect(path)
    try:
        return [
            (int(v), str(d))
            for v, d in db.execute("SELECT version, description FROM schema_version ORDER BY 1")
        ]
    finally:
        db.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "evsed.db"


# --------------------------------------------------------------------------- the list itself


def test_migrations_are_consecutive_from_one() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
    assert SCHEMA_VERSION == 4


def test_frozen_v1_statements_create_the_legacy_schema(tmp_path: Path) -> None:
    """Migration 0 -> 1 is the pre-migrations schema, exactly."""
    legacy, frozen = tmp_path / "legacy.db", tmp_path / "frozen.db"
    build_v1(legacy)
    build_at(frozen, 0)  # empty
    db = _connect(frozen)
    migrate(db, str(frozen), MIGRATIONS[:1])
    db.close()
    assert [row for row in schema_of(frozen) if row[1] != "schema_version"] == schema_of(legacy)
    assert version_rows(frozen) == [(1, MIGRATIONS[0].description)]


# --------------------------------------------------------------------------- every earlier version


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_migrate_populated_database_from(version: int, db_path: Path) -> None:
    build_at(db_path, version)
    populate(db_path)
    s = Store(db_path)
    try:
        # Transactions: the closed one complete, the open one still open and recoverable.
        closed, still_open = s.get_transaction(1), s.get_transaction(2)
        assert closed is not None and still_open is not None
        assert (closed.shown_tx_id(), closed.meter_stop_wh, closed.stop_reason) == (
            501,
            8400,
            "Local",
        )
        assert [t.tx_key for t in s.open_transactions()] == [2]
        assert still_open.reservation_id == 7
        assert (still_open.last_meter_wh, still_open.last_meter_at) == (21500, T3)
        assert still_open.boot_id == "b2" and still_open.shown_tx_id() is None
        # Schema 3: the CSMS id is the 'csms' backend's (text), each transaction has its own
        # unique text id, and the backend's next message of it is number 1.
        assert closed.csms_tx_ids == {"csms": "501"} and still_open.csms_tx_ids == {}
        assert len({closed.tx_id, still_open.tx_id}) == 2
        assert all(len(t.tx_id) == 32 and int(t.tx_id, 16) >= 0 for t in (closed, still_open))
        assert s.next_tx_seq(1, "csms") == s.next_tx_seq(2, "csms") == 1
        # The outbox, in order, with its attempt counts; new rows continue the sequences.
        # Messages queued before schema 3 report their event kind and carry no number.
        kinds = [(m.kind, m.tx_seq, m.backend) for m in s.outbox_batch(0, 10)]
        assert kinds == [
            (EventKind.ENDED, None, "csms"),
            (EventKind.STARTED, None, "csms"),
            (EventKind.SAMPLES, None, "csms"),
        ]
        order = []
        while (msg := s.outbox_head()) is not None:
            order.append((msg.seq, msg.action, msg.tx_key, msg.attempts))
            s.outbox_delete(msg.seq)
        assert order == [
            (11, "StopTransaction", 1, 3),
            (12, "StartTransaction", 2, 0),
            (13, "MeterValues", 2, 1),
        ]
        key = s.begin_transaction(
            connector_id=1,
            id_tag="04A1B2C3",
            meter_start_wh=8400,
            started_at=T3,
            reservation_id=None,
            messages=start_msgs({}),
        )
        assert key == 3
        head = s.outbox_head()
        assert head is not None and head.seq == 14
        # Settings and the local list as they were.
        assert s.get_setting("cfg.HeartbeatInterval") == "900"
        assert s.get_setting("availability.2") == "Inoperative"
        assert s.settings_with_prefix("cfg.") == {
            "cfg.HeartbeatInterval": "900",
            "cfg.AuthorizationKey": "0123456789abcdef",
        }
        assert s.local_list_version() == 42
        assert s.local_list_get("aa11bb22") == ("Accepted", "FLEET", None)
        assert s.local_list_count() == 2
        # The cache: case duplicates merged, the most recently used entry kept.
        rows = {r.id_tag: r for r in s.cache_rows()}
        assert sorted(rows) == ["12345678", "BEEF0002", "cafe0001"]
        assert s.cache_get("CAFE0001") == ("Blocked", "PARENT", None)
        assert rows["cafe0001"].last_used == 1772300000.0
        assert s.cache_get("beef0002") == ("Accepted", None, None)
        assert s.integrity_ok()
    finally:
        s.close()
    assert current_version(sqlite3.connect(db_path)) == SCHEMA_VERSION
    # A version-1 database gets its version row on upgrade; later ones were created with it.
    assert [v for v, _ in version_rows(db_path)] == list(range(1, SCHEMA_VERSION + 1))


@pytest.mark.parametrize("version", range(0, SCHEMA_VERSION))
def test_migrated_schema_equals_fresh_schema(version: int, tmp_path: Path) -> None:
    fresh, old = tmp_path / "fresh.db", tmp_path / "old.db"
    Store(fresh).close()
    build_at(old, version)
    Store(old).close()
    assert schema_of(old) == schema_of(fresh)


def test_fresh_database_records_every_version_and_no_backup(db_path: Path) -> None:
    Store(db_path).close()
    assert version_rows(db_path) == [(m.version, m.description) for m in MIGRATIONS]
    assert list(db_path.parent.glob("*.pre-v*")) == []
    db = sqlite3.connect(db_path)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
        str(SCHEMA_VERSION),
    )
    db.close()


def test_v1_cut_off_while_being_created_is_completed(db_path: Path) -> None:
    """v1 created its tables one autocommitted statement at a time and wrote the version row
    last: a power cut in between left some tables and no version. That is version 0."""
    db = _connect(db_path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO settings VALUES ('cfg.HeartbeatInterval', '60')")
    db.close()
    s = Store(db_path)
    try:
        assert s.get_setting("cfg.HeartbeatInterval") == "60"
        assert s.open_transactions() == [] and s.outbox_count() == 0 and s.cache_count() == 0
    finally:
        s.close()
    assert current_version(sqlite3.connect(db_path)) == SCHEMA_VERSION


# --------------------------------------------------------------------------- case-insensitive cache


def test_cache_is_case_insensitive_after_migration(db_path: Path) -> None:
    build_at(db_path, 1)
    s = Store(db_path)
    try:
        s.cache_put("ABC", "Accepted", None, None, used_at=100.0)
        assert s.cache_get("abc") == ("Accepted", None, None)
        s.cache_put("abc", "Blocked", None, None, used_at=200.0)  # the same entry
        assert s.cache_count() == 1
        assert s.cache_get("ABC") == ("Blocked", None, None)
        s.cache_touch("aBc", 300.0)
        assert [r.last_used for r in s.cache_rows()] == [300.0]
        s.cache_set_status("abc", "Expired")
        assert s.cache_get("ABC") == ("Expired", None, None)
        s.cache_put("NEW", "Accepted", None, None, used_at=400.0, evict=["abc"])
        assert [r.id_tag for r in s.cache_rows()] == ["NEW"]
        s.cache_delete("new")
        assert s.cache_count() == 0
        # A local list entry takes an idTag out of the cache, whatever its case.
        s.cache_put("DD00EE11", "Accepted", None, None)
        s.local_list_apply(1, [("dd00ee11", ("Accepted", None, None))], full=True, max_entries=5)
        assert s.cache_get("DD00EE11") is None
        with pytest.raises(LocalListTooLong):
            s.local_list_apply(2, [("X", ("Accepted", None, None))], full=False, max_entries=1)
    finally:
        s.close()


def test_fresh_store_cache_get_finds_other_case(db_path: Path) -> None:
    s = Store(db_path)
    try:
        s.cache_put("ABC", "Accepted", "PARENT", "2030-01-01T00:00:00Z")
        assert s.cache_get("abc") == ("Accepted", "PARENT", "2030-01-01T00:00:00Z")
    finally:
        s.close()


# --------------------------------------------------------------------------- newer databases


def _make_newer(db_path: Path, version: int) -> None:
    Store(db_path).close()
    db = _connect(db_path)
    db.execute(
        "INSERT INTO schema_version VALUES (?, '2031-01-01T00:00:00Z', 'from the future')",
        (version,),
    )
    db.execute("CREATE TABLE future_things (x)")
    db.execute("INSERT INTO settings VALUES ('cfg.HeartbeatInterval', '77')")
    db.close()


def test_newer_database_is_refused_and_left_untouched(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _make_newer(db_path, SCHEMA_VERSION + 1)
    before = fingerprint(db_path)
    with pytest.raises(SchemaTooNew) as info:
        Store(db_path)
    assert info.value.found == SCHEMA_VERSION + 1 and info.value.known == SCHEMA_VERSION
    with pytest.raises(SchemaTooNew):
        open_store(db_path)  # not "corrupt": nothing is moved aside
    message = str(info.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"only up to {SCHEMA_VERSION}" in message
    assert "install the newer evsed" in message
    assert any(r.levelname == "CRITICAL" and "newer evsed" in r.message for r in caplog.records)
    assert fingerprint(db_path) == before
    assert sorted(p.name for p in db_path.parent.iterdir() if "corrupt" in p.name) == []
    assert list(db_path.parent.glob("*.pre-v*")) == []
    db = sqlite3.connect(db_path)
    assert db.execute("SELECT value FROM settings WHERE key = 'cfg.HeartbeatInterval'").fetchone()
    db.close()


def test_newer_database_hint_names_the_backup_of_that_upgrade(db_path: Path) -> None:
    _make_newer(db_path, SCHEMA_VERSION + 1)
    Path(f"{db_path}.pre-v{SCHEMA_VERSION + 1}").write_bytes(b"")
    with pytest.raises(SchemaTooNew) as info:
        Store(db_path)
    assert f"{db_path}.pre-v{SCHEMA_VERSION + 1} is the database as it was" in str(info.value)


def test_newer_v1_style_version_row_is_refused(db_path: Path) -> None:
    """Only meta.schema_version (no version table) but a higher number: still refused."""
    db = _connect(db_path)
    db.executescript(LEGACY_V1_SCRIPT)
    db.execute("INSERT INTO meta VALUES ('schema_version', '9')")
    db.close()
    with pytest.raises(SchemaTooNew):
        Store(db_path)


def test_evsed_run_refuses_a_newer_database(db_path: Path, tmp_path: Path) -> None:
    """The real daemon: exit status 1, a clear log line, the file unchanged."""
    _make_newer(db_path, 7)
    before = fingerprint(db_path)
    config = tmp_path / "evsed.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [station]
            id = "CP-MIGRATE"
            storage = "{db_path}"
            [api]
            port = 0
            [[connectors]]
            contactor = {{ driver = "sim" }}
            meter = {{ driver = "sim" }}
            vehicle = {{ driver = "sim" }}
            """
        ),
        encoding="utf-8",
    )
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "evsed"), "run", "-c", str(config), "--no-restart"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr  # not restarted (RestartPreventExitStatus)
    assert "CRITICAL" in result.stderr
    assert "schema version 7, but this evsed knows only up to" in result.stderr
    assert "Traceback" not in result.stderr
    assert fingerprint(db_path) == before
    assert [p.name for p in tmp_path.iterdir() if "corrupt" in p.name] == []


# --------------------------------------------------------------------------- failures


def _with_failure(at: int, sql: str = "INSERT INTO no_such_table VALUES (1)") -> tuple:
    """The real migrations with ``sql`` injected before statement ``at`` of the last one."""
    last = MIGRATIONS[-1]
    broken = Migration(
        last.version, last.description, last.statements[:at] + (sql,) + last.statements[at:]
    )
    return MIGRATIONS[:-1] + (broken,)


def _v1_cache(db_path: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT * FROM auth_cache ORDER BY id_tag").fetchall()
    finally:
        db.close()


@pytest.mark.parametrize("at", range(len(MIGRATIONS[-1].statements) + 1))
def test_failure_mid_migration_rolls_back(at: int, db_path: Path) -> None:
    build_at(db_path, SCHEMA_VERSION - 1)
    populate(db_path)
    cache_before, schema_before = _v1_cache(db_path), schema_of(db_path)
    db = _connect(db_path)
    with pytest.raises(MigrationError) as info:
        migrate(db, str(db_path), _with_failure(at))
    assert not db.in_transaction
    assert current_version(db) == SCHEMA_VERSION - 1
    db.close()
    assert f"unchanged at version {SCHEMA_VERSION - 1}" in str(info.value)
    assert "no such table: no_such_table" in str(info.value)
    assert schema_of(db_path) == schema_before  # no half-built table, no version table
    assert _v1_cache(db_path) == cache_before
    # The next start with the real migrations succeeds.
    s = Store(db_path)
    try:
        assert s.cache_get("CAFE0001") == ("Blocked", "PARENT", None)
    finally:
        s.close()


_KILL_CHILD = textwrap.dedent(
    """
    import os, signal, sqlite3, sys
    from controller.storage.migrations import MIGRATIONS, Migration, migrate

    path, at, version = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA cache_size=1")  # spill dirty pages to the WAL before the commit
    db.create_function("power_cut", 0, lambda: os.kill(os.getpid(), signal.SIGKILL))
    chain = list(MIGRATIONS)
    target = chain[version - 1]
    steps = target.statements[:at] + ("SELECT power_cut()",) + target.statements[at:]
    chain[version - 1] = Migration(target.version, target.description, steps)
    migrate(db, path, tuple(chain))
    print("not killed", flush=True)
    """
)


def kill_mid_upgrade(db_path: Path, at: int, version: int = SCHEMA_VERSION) -> None:
    """Upgrade ``db_path`` to the last schema in a real process and SIGKILL it before
    statement ``at`` of migration ``version`` (its dirty pages already in the WAL)."""
    child = subprocess.run(
        [sys.executable, "-c", _KILL_CHILD, str(db_path), str(at), str(version)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr


@pytest.mark.parametrize("at", range(1, len(MIGRATIONS[-1].statements) + 1))
def test_power_cut_mid_migration_leaves_old_version(at: int, db_path: Path) -> None:
    """SIGKILL in the middle of the last migration (a real process, real WAL file): the next
    open finds the old version with its data, and then migrates."""
    build_at(db_path, SCHEMA_VERSION - 1)
    populate(db_path)
    cache_before, schema_before = _v1_cache(db_path), schema_of(db_path)
    kill_mid_upgrade(db_path, at)
    assert Path(f"{db_path}-wal").exists()
    db = sqlite3.connect(db_path)
    assert current_version(db) == SCHEMA_VERSION - 1
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    assert schema_of(db_path) == schema_before
    assert _v1_cache(db_path) == cache_before
    s = Store(db_path)
    try:
        assert s.cache_get("cafe0001") == ("Blocked", "PARENT", None)
        assert [t.tx_key for t in s.open_transactions()] == [2]
    finally:
        s.close()


def test_backup_failure_migrates_nothing(db_path: Path) -> None:
    build_at(db_path, 1)
    populate(db_path)
    before = schema_of(db_path)
    Path(f"{db_path}.pre-v{SCHEMA_VERSION}.tmp").mkdir()  # the copy cannot be written
    with pytest.raises(MigrationError, match="no backup before migrating"):
        Store(db_path)
    assert schema_of(db_path) == before
    assert not Path(f"{db_path}.pre-v{SCHEMA_VERSION}").exists()


# --------------------------------------------------------------------------- idempotency, backup


def test_opening_twice_migrates_once(db_path: Path) -> None:
    build_at(db_path, 1)
    populate(db_path)
    Store(db_path).close()
    rows = version_rows(db_path)
    backup = Path(f"{db_path}.pre-v{SCHEMA_VERSION}")
    assert backup.exists()
    backup.unlink()
    before = fingerprint(db_path)
    s = Store(db_path)  # up to date: a read, no write, no new backup
    s.close()
    assert version_rows(db_path) == rows
    assert not backup.exists()
    assert fingerprint(db_path) == before
    s = open_store(db_path)
    try:
        assert s.cache_count() == 3
    finally:
        s.close()


def test_backup_is_the_old_database_standalone_and_only_latest_is_kept(db_path: Path) -> None:
    build_at(db_path, 1)
    populate(db_path)
    old_backup = Path(f"{db_path}.pre-v1")
    old_backup.write_bytes(b"an earlier upgrade's copy")
    other = db_path.parent / "other.db.pre-v1"  # another database's backup stays
    other.write_bytes(b"x")
    Store(db_path).close()
    backup = Path(f"{db_path}.pre-v{SCHEMA_VERSION}")
    assert sorted(p.name for p in db_path.parent.glob("*.pre-v*")) == [
        backup.name,
        other.name,
    ]
    assert not Path(f"{backup}-wal").exists() and not Path(f"{backup}.tmp").exists()
    copy = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert current_version(copy) == 1
        assert len(copy.execute("SELECT * FROM auth_cache").fetchall()) == 6  # unmerged
        assert copy.execute("SELECT COUNT(*) FROM outbox").fetchone() == (3,)
    finally:
        copy.close()
    # Restoring it is a file copy: the restored database migrates again to the same data.
    restored = db_path.parent / "restored.db"
    restored.write_bytes(backup.read_bytes())
    s = Store(restored)
    try:
        assert sorted(r.id_tag for r in s.cache_rows()) == ["12345678", "BEEF0002", "cafe0001"]
    finally:
        s.close()


def test_memory_database_migrates_without_backup(tmp_path: Path) -> None:
    s = Store(":memory:")
    try:
        s.cache_put("ABC", "Accepted", None, None)
        assert s.cache_get("abc") is not None
    finally:
        s.close()


def test_concurrent_open_migrates_once(db_path: Path) -> None:
    """Two connections racing: the version is re-read under the write lock."""
    build_at(db_path, 1)
    first, second = _connect(db_path), _connect(db_path)
    migrate(first, str(db_path))
    # ``second`` read version 1 before; applying the last migration now must be a no-op.
    migrations._apply(second, str(db_path), MIGRATIONS[-1])
    assert [v for v, _ in version_rows(db_path)] == list(range(1, SCHEMA_VERSION + 1))
    first.close()
    second.close()
