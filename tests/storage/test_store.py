"""Unit tests of controller/storage/store.py: the durable transaction journal behind OCPP 1.6.

OCPP 1.6 section 3.7 ("Transaction-related messages") requires that transaction-related
messages are queued while offline and delivered in chronological order; section 4.10
(Stop Transaction) allows exactly one StopTransaction per transaction. The store is where
both guarantees are made durable: a transaction row and its outbox message are written in
one SQLite commit (WAL, synchronous=FULL).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from controller.storage.store import Store, open_store
from tests.journal16 import confirm_start, enqueue, start_msgs, stop_msgs

REPO = Path(__file__).resolve().parents[2]

T0 = "2026-01-01T12:00:00.000+00:00"
T1 = "2026-01-01T12:01:00.000+00:00"
T2 = "2026-01-01T12:02:00.000+00:00"


def _start_payload(meter_start: int = 1000, at: str = T0) -> dict[str, Any]:
    return {"connectorId": 1, "idTag": "04A1B2C3", "meterStart": meter_start, "timestamp": at}


def _begin(store: Store, *, connector_id: int = 1, meter_start: int = 1000, boot_id: str = "b1"):
    return store.begin_transaction(
        connector_id=connector_id,
        id_tag="04A1B2C3",
        meter_start_wh=meter_start,
        started_at=T0,
        reservation_id=None,
        messages=start_msgs(_start_payload(meter_start)),
        boot_id=boot_id,
    )


def _end(store: Store, tx_key: int, meter_stop: int = 1500, reason: str = "Local") -> bool:
    return store.end_transaction(
        tx_key,
        meter_stop_wh=meter_stop,
        stopped_at=T2,
        reason=reason,
        messages=stop_msgs({"meterStop": meter_stop, "timestamp": T2, "reason": reason}),
    )


def _mv(energy: int, at: str = T1) -> dict[str, Any]:
    return {
        "connectorId": 1,
        "meterValue": [{"timestamp": at, "sampledValue": [{"value": str(energy)}]}],
    }


def _drain(store: Store) -> list[tuple[str, dict[str, Any]]]:
    """Pop the whole outbox head-first, as the pump does."""
    out = []
    while (msg := store.outbox_head()) is not None:
        out.append((msg.action, msg.payload))
        store.outbox_delete(msg.seq)
    return out


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "evsed.db"


@pytest.fixture
def store(db_path: Path):
    s = Store(db_path)
    yield s
    s.close()


# --------------------------------------------------------------------------- transactions


def test_begin_transaction_writes_row_and_start_message(store: Store) -> None:
    """4.8: the transaction and its StartTransaction.req are recorded together."""
    key = _begin(store)
    tx = store.get_transaction(key)
    assert tx is not None and tx.open
    assert tx.meter_start_wh == tx.last_meter_wh == 1000
    assert tx.last_meter_at == T0
    assert tx.shown_tx_id() is None
    assert tx.boot_id == "b1"
    head = store.outbox_head()
    assert head is not None
    assert (head.action, head.tx_key, head.attempts) == ("StartTransaction", key, 0)
    assert head.payload == _start_payload()
    assert store.outbox_count() == 1
    assert [t.tx_key for t in store.open_transactions()] == [key]


def test_begin_transaction_is_atomic(store: Store) -> None:
    """A failure while queueing the StartTransaction leaves no orphan transaction row."""
    with pytest.raises(TypeError):
        store.begin_transaction(
            connector_id=1,
            id_tag="04A1B2C3",
            meter_start_wh=1000,
            started_at=T0,
            reservation_id=None,
            messages=start_msgs({"unserialisable": {1, 2}}),
        )
    assert store.open_transactions() == []
    assert store.transactions() == []
    assert store.outbox_count() == 0
    # The connection is usable afterwards (the failed unit of work was rolled back).
    assert not store._db.in_transaction
    key = _begin(store)
    assert store.get_transaction(key) is not None


def test_end_transaction_writes_stop_and_closes_atomically(store: Store) -> None:
    key = _begin(store)
    assert _end(store, key, 1500, "Local") is True
    tx = store.get_transaction(key)
    assert tx is not None and not tx.open
    assert (tx.meter_stop_wh, tx.stopped_at, tx.stop_reason) == (1500, T2, "Local")
    assert tx.last_meter_wh == 1500
    assert store.open_transactions() == []
    assert [a for a, _ in _drain(store)] == ["StartTransaction", "StopTransaction"]


def test_end_transaction_failure_keeps_transaction_open(store: Store) -> None:
    """If the StopTransaction cannot be queued, the transaction is not closed either."""
    key = _begin(store)
    with pytest.raises(TypeError):
        store.end_transaction(
            key,
            meter_stop_wh=1500,
            stopped_at=T2,
            reason="Local",
            messages=stop_msgs({"bad": object()}),
        )
    tx = store.get_transaction(key)
    assert tx is not None and tx.open and tx.meter_stop_wh is None
    assert store.outbox_count() == 1  # only the StartTransaction
    # ...so a later (recovery) stop still works, exactly once.
    assert _end(store, key, 1400, "Reboot") is True


def test_end_transaction_twice_queues_one_stop(store: Store) -> None:
    """4.10: never two StopTransactions for one transaction; the first stop wins."""
    key = _begin(store)
    assert _end(store, key, 1500, "Local") is True
    assert _end(store, key, 1600, "Reboot") is False
    assert _end(store, key, 1700, "PowerLoss") is False
    tx = store.get_transaction(key)
    assert tx is not None
    assert (tx.meter_stop_wh, tx.stop_reason) == (1500, "Local")
    actions = [a for a, _ in _drain(store)]
    assert actions.count("StopTransaction") == 1


def test_end_transaction_unknown_key_returns_false(store: Store) -> None:
    assert _end(store, 4711) is False
    assert store.outbox_count() == 0


def test_end_transaction_after_stop_was_delivered_still_returns_false(store: Store) -> None:
    """The guard is the transaction row, not the outbox: a delivered stop is not re-queued."""
    key = _begin(store)
    assert _end(store, key) is True
    _drain(store)
    assert _end(store, key, 2000, "Reboot") is False
    assert store.outbox_count() == 0


def test_record_meter_only_updates_open_transactions(store: Store) -> None:
    key = _begin(store)
    store.record_meter(key, 1234, T1)
    tx = store.get_transaction(key)
    assert tx is not None and (tx.last_meter_wh, tx.last_meter_at) == (1234, T1)
    _end(store, key, 1500)
    store.record_meter(key, 9999, T2)
    tx = store.get_transaction(key)
    assert tx is not None and tx.last_meter_wh == 1500


def test_enqueue_meter_values_persists_reading_in_same_commit(store: Store) -> None:
    """The reading used after a power loss is the one of the last queued MeterValues."""
    key = _begin(store)
    seq = enqueue(store, key, "MeterValues", _mv(1100), energy_wh=1100, at=T1)
    assert seq > 0
    tx = store.get_transaction(key)
    assert tx is not None and (tx.last_meter_wh, tx.last_meter_at) == (1100, T1)
    # Without a reading, only the message is queued.
    enqueue(store, key, "MeterValues", _mv(1200))
    tx = store.get_transaction(key)
    assert tx is not None and tx.last_meter_wh == 1100
    assert store.outbox_count() == 3


def test_enqueue_is_atomic_with_reading(store: Store) -> None:
    key = _begin(store)
    with pytest.raises(TypeError):
        enqueue(store, key, "MeterValues", {"bad": {1}}, energy_wh=1300, at=T1)
    tx = store.get_transaction(key)
    assert tx is not None and tx.last_meter_wh == 1000  # reading rolled back too
    assert store.outbox_count() == 1


# --------------------------------------------------------------------------- outbox


def test_outbox_is_fifo_across_transactions(store: Store) -> None:
    """3.7: transaction-related messages go out in chronological order."""
    a = _begin(store, connector_id=1)
    enqueue(store, a, "MeterValues", _mv(1100), energy_wh=1100, at=T1)
    b = _begin(store, connector_id=2, meter_start=500)
    enqueue(store, b, "MeterValues", _mv(600), energy_wh=600, at=T1)
    enqueue(store, a, "MeterValues", _mv(1200), energy_wh=1200, at=T1)
    _end(store, a, 1300)
    _end(store, b, 700)
    order = []
    while (msg := store.outbox_head()) is not None:
        order.append((msg.action, msg.tx_key))
        store.outbox_delete(msg.seq)
    assert order == [
        ("StartTransaction", a),
        ("MeterValues", a),
        ("StartTransaction", b),
        ("MeterValues", b),
        ("MeterValues", a),
        ("StopTransaction", a),
        ("StopTransaction", b),
    ]


def test_outbox_sequence_never_reused(store: Store) -> None:
    """AUTOINCREMENT: a new message after the queue ran empty still sorts after old ones."""
    key = _begin(store)
    first = store.outbox_head()
    assert first is not None
    _drain(store)
    seq = enqueue(store, key, "MeterValues", _mv(1100))
    assert seq > first.seq


def test_outbox_mark_attempt_counts_and_persists(db_path: Path) -> None:
    """3.7.1: the attempt count (TransactionMessageAttempts) survives a restart."""
    s = Store(db_path)
    _begin(s)
    head = s.outbox_head()
    assert head is not None
    assert s.outbox_mark_attempt(head.seq) == 1
    assert s.outbox_mark_attempt(head.seq) == 2
    assert s.outbox_mark_attempt(999) == 0  # gone: nothing to count
    s.close()
    s = Store(db_path)
    head2 = s.outbox_head()
    assert head2 is not None and head2.attempts == 2
    s.close()


def test_confirm_start_maps_id_and_deletes_in_one_commit(store: Store) -> None:
    """6.46 StartTransaction.conf: the id mapping and the dequeue are one unit of work."""
    key = _begin(store)
    enqueue(store, key, "MeterValues", _mv(1100), energy_wh=1100, at=T1)
    head = store.outbox_head()
    assert head is not None and head.action == "StartTransaction"

    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    try:
        confirm_start(store, head.seq, key, 42)
    finally:
        store._db.set_trace_callback(None)
    upper = [s.strip().upper() for s in statements]
    assert upper[0].startswith("BEGIN")
    assert upper[-1] == "COMMIT"
    assert sum(s == "COMMIT" for s in upper) == 1
    assert any(s.startswith("INSERT INTO TX_BACKEND") for s in upper)
    assert any(s.startswith("DELETE FROM OUTBOX") for s in upper)

    tx = store.get_transaction(key)
    assert tx is not None and tx.shown_tx_id() == 42
    nxt = store.outbox_head()
    assert nxt is not None and nxt.action == "MeterValues"


def test_confirm_start_rolls_back_both_on_failure(store: Store) -> None:
    """If the commit fails halfway, neither the mapping nor the delete is visible."""
    key = _begin(store)
    head = store.outbox_head()
    assert head is not None
    store._db.execute(
        "CREATE TRIGGER fail_delete BEFORE DELETE ON outbox BEGIN"
        " SELECT RAISE(ABORT, 'injected'); END"
    )
    with pytest.raises(sqlite3.DatabaseError):
        confirm_start(store, head.seq, key, 7)
    tx = store.get_transaction(key)
    assert tx is not None and tx.shown_tx_id() is None
    assert store.outbox_count() == 1
    store._db.execute("DROP TRIGGER fail_delete")


# --------------------------------------------------------------------------- settings / cache


def test_settings_round_trip(db_path: Path) -> None:
    s = Store(db_path)
    assert s.get_setting("ocpp.HeartbeatInterval") is None
    s.set_setting("ocpp.HeartbeatInterval", "300")
    s.set_setting("ocpp.HeartbeatInterval", "60")  # upsert
    s.set_setting("ocpp.MeterValueSampleInterval", "10")
    s.set_setting("availability.1", "Inoperative")
    s.set_setting("oc_x", "not matched by the prefix 'ocp'")  # LIKE wildcards not used
    s.set_setting("unicode", "Zählerstand ✓")
    assert s.get_setting("ocpp.HeartbeatInterval") == "60"
    assert s.settings_with_prefix("ocpp.") == {
        "ocpp.HeartbeatInterval": "60",
        "ocpp.MeterValueSampleInterval": "10",
    }
    assert s.settings_with_prefix("oc_") == {"oc_x": "not matched by the prefix 'ocp'"}
    s.delete_setting("availability.1")
    s.delete_setting("never-set")
    s.close()
    s = Store(db_path)
    assert s.get_setting("ocpp.HeartbeatInterval") == "60"
    assert s.get_setting("availability.1") is None
    assert s.get_setting("unicode") == "Zählerstand ✓"
    s.close()


def test_auth_cache(db_path: Path) -> None:
    """3.5.2 Authorization Cache: put, update, get, ClearCache (5.4), persistence."""
    s = Store(db_path)
    assert s.cache_get("04A1B2C3") is None
    s.cache_put("04A1B2C3", "Accepted", None, None)
    s.cache_put("DEADBEEF", "Accepted", "PARENT1", "2030-01-01T00:00:00Z")
    assert s.cache_get("04A1B2C3") == ("Accepted", None, None)
    s.cache_put("04A1B2C3", "Blocked", "P2", "2027-01-01T00:00:00Z")
    assert s.cache_get("04A1B2C3") == ("Blocked", "P2", "2027-01-01T00:00:00Z")
    s.close()
    s = Store(db_path)
    assert s.cache_get("DEADBEEF") == ("Accepted", "PARENT1", "2030-01-01T00:00:00Z")
    s.cache_clear()
    assert s.cache_get("DEADBEEF") is None
    assert s.cache_get("04A1B2C3") is None
    s.close()


# --------------------------------------------------------------------------- persistence


def test_everything_survives_reopen(db_path: Path) -> None:
    s = Store(db_path)
    a = _begin(s)
    enqueue(s, a, "MeterValues", _mv(1100), energy_wh=1100, at=T1)
    b = _begin(s, connector_id=2)
    _end(s, b, 1050)
    head = s.outbox_head()
    assert head is not None
    confirm_start(s, head.seq, a, 17)
    s.close()

    s = Store(db_path)
    tx_a = s.get_transaction(a)
    assert tx_a is not None and tx_a.open and tx_a.shown_tx_id() == 17
    assert tx_a.last_meter_wh == 1100
    assert [t.tx_key for t in s.open_transactions()] == [a]
    assert [(m[0]) for m in _drain(s)] == ["MeterValues", "StartTransaction", "StopTransaction"]
    assert s.get_setting("nothing") is None
    s.close()


def test_reopen_does_not_reset_schema_version(db_path: Path) -> None:
    s = Store(db_path)
    s._db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    s.close()
    s = Store(db_path)
    row = s._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert row[0] == "1"
    s.close()


def test_wal_and_synchronous_full(store: Store, db_path: Path) -> None:
    """A committed row must survive power loss: WAL plus synchronous=FULL (level 2)."""
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert store._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    _begin(store)
    assert Path(f"{db_path}-wal").exists()
    # WAL mode is persistent in the file: another connection sees it too.
    other = sqlite3.connect(db_path)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    finally:
        other.close()
    assert store.integrity_ok()


def test_autocommit_mode_no_implicit_transaction(store: Store) -> None:
    """Every write commits at once; nothing lingers in an open implicit transaction."""
    _begin(store)
    store.set_setting("k", "v")
    store.cache_put("04A1B2C3", "Accepted", None, None)
    assert not store._db.in_transaction


# --------------------------------------------------------------------------- corruption


def test_open_store_moves_garbage_file_aside(db_path: Path) -> None:
    garbage = os.urandom(8192)
    db_path.write_bytes(b"this is not a database at all\x00" + garbage)
    s = open_store(db_path)
    try:
        asides = sorted(db_path.parent.glob("evsed.db.corrupt-*"))
        assert len(asides) == 1
        assert asides[0].read_bytes().startswith(b"this is not a database at all")
        # A fresh, working database took its place.
        assert s.integrity_ok()
        assert s.open_transactions() == [] and s.outbox_count() == 0
        key = _begin(s)
        assert s.get_transaction(key) is not None
    finally:
        s.close()
    s = open_store(db_path)  # and it opens cleanly next time, nothing moved
    s.close()
    assert len(list(db_path.parent.glob("evsed.db.corrupt-*"))) == 1


def test_open_store_moves_damaged_pages_aside(db_path: Path) -> None:
    """A valid header with trashed pages fails the integrity check or the schema read."""
    s = Store(db_path)
    for i in range(200):
        s.set_setting(f"key{i}", "x" * 200)
    s._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s.close()
    data = bytearray(db_path.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    for off in range(page, len(data), page):  # every page but the header page
        data[off : off + 64] = os.urandom(64)
    db_path.write_bytes(bytes(data))
    s = open_store(db_path)
    try:
        asides = list(db_path.parent.glob("evsed.db.corrupt-*"))
        mains = [p for p in asides if not p.name.endswith(("-wal", "-shm"))]
        assert len(mains) == 1, asides
        assert mains[0].stat().st_size == len(data)  # the evidence is kept intact
        assert s.integrity_ok()
        assert s.get_setting("key1") is None
        s.set_setting("fresh", "1")
    finally:
        s.close()


def test_open_store_healthy_db_is_kept(db_path: Path) -> None:
    s = open_store(db_path)
    key = _begin(s)
    s.close()
    s = open_store(db_path)
    try:
        assert s.get_transaction(key) is not None
        assert list(db_path.parent.glob("*.corrupt-*")) == []
    finally:
        s.close()


# --------------------------------------------------------------------------- SIGKILL durability


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from controller.storage.store import Store
    from tests.journal16 import enqueue, start_msgs

    s = Store(sys.argv[1])
    mode = sys.argv[2]
    if mode == "once":
        key = s.begin_transaction(
            connector_id=1, id_tag="04A1B2C3", meter_start_wh=1000,
            started_at="2026-01-01T12:00:00.000+00:00", reservation_id=None,
            messages=start_msgs({"connectorId": 1, "idTag": "04A1B2C3", "meterStart": 1000,
                                 "timestamp": "2026-01-01T12:00:00.000+00:00"}),
            boot_id="boot-x",
        )
        enqueue(s, key, "MeterValues", {"connectorId": 1, "meterValue": []},
                energy_wh=1234, at="2026-01-01T12:01:00.000+00:00")
        print(json.dumps({"tx_key": key}), flush=True)
        time.sleep(60)
    else:
        key = s.begin_transaction(
            connector_id=1, id_tag="04A1B2C3", meter_start_wh=0, started_at="t0",
            reservation_id=None, messages=start_msgs({"n": 0}),
        )
        n = 0
        while True:
            n += 1
            enqueue(s, key, "MeterValues", {"n": n}, energy_wh=n, at=str(n))
            print(n, flush=True)
    """
)


def _spawn_child(db_path: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db_path), mode],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def test_committed_row_survives_sigkill(db_path: Path) -> None:
    """SIGKILL right after a commit: the row (only in the WAL, never checkpointed) is there."""
    proc = _spawn_child(db_path, "once")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        tx_key = json.loads(line)["tx_key"]
        assert Path(f"{db_path}-wal").stat().st_size > 0
    finally:
        _kill(proc)
    assert proc.returncode == -signal.SIGKILL

    s = open_store(db_path)
    try:
        assert list(db_path.parent.glob("*.corrupt-*")) == []
        tx = s.get_transaction(tx_key)
        assert tx is not None and tx.open
        assert (tx.last_meter_wh, tx.boot_id) == (1234, "boot-x")
        actions = [a for a, _ in _drain(s)]
        assert actions == ["StartTransaction", "MeterValues"]
    finally:
        s.close()


def test_sigkill_during_write_loop_loses_no_acknowledged_commit(db_path: Path) -> None:
    """Kill a writer mid-stream: every commit it reported is durable, none is half-done."""
    proc = _spawn_child(db_path, "loop")
    acknowledged = 0
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 10
        while acknowledged < 50 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged = int(line)
        assert acknowledged >= 50, proc.stderr.read() if proc.stderr else ""
    finally:
        _kill(proc)

    s = open_store(db_path)
    try:
        assert s.integrity_ok()
        assert list(db_path.parent.glob("*.corrupt-*")) == []
        (tx,) = s.open_transactions()
        rows = s._db.execute(
            "SELECT payload FROM outbox WHERE action = 'MeterValues' ORDER BY seq"
        ).fetchall()
        ns = [json.loads(r[0])["n"] for r in rows]
        assert ns == list(range(1, len(ns) + 1))  # a gap-free prefix
        assert len(ns) >= acknowledged
        # The persisted reading belongs to the last queued MeterValues (same commit).
        assert tx.last_meter_wh == ns[-1]
    finally:
        s.close()


def test_outbox_batch_reads_ahead_in_order_and_deletes_in_one_commit(db_path: Path) -> None:
    """Section 3.7 order holds for the replay's read-ahead: ``outbox_batch`` returns the
    messages after a seq, oldest first, and ``outbox_delete_many`` drops several at once."""
    store = Store(db_path)
    tx_key = _begin(store)
    for energy in range(1001, 1011):
        enqueue(store, tx_key, "MeterValues", _mv(energy), energy_wh=energy, at=T1)
    _end(store, tx_key)
    first = store.outbox_batch(0, 4)
    assert [m.action for m in first] == ["StartTransaction"] + ["MeterValues"] * 3
    seqs = [m.seq for m in first]
    assert seqs == sorted(seqs)
    rest = store.outbox_batch(seqs[-1], 100)
    assert [m.action for m in rest] == ["MeterValues"] * 7 + ["StopTransaction"]
    assert rest[0].seq > seqs[-1]
    assert [m.payload["meterValue"][0]["sampledValue"][0]["value"] for m in rest[:7]] == [
        str(e) for e in range(1004, 1011)
    ]
    store.outbox_delete_many([m.seq for m in first + rest[:7]], durable=False)
    assert store.outbox_count() == 1
    head = store.outbox_head()
    assert head is not None and head.action == "StopTransaction"
    store.close()
    reopened = Store(db_path)  # the non-durable deletes were still committed
    assert reopened.outbox_count() == 1
    assert reopened.outbox_batch(0, 10)[0].action == "StopTransaction"
    reopened.close()
