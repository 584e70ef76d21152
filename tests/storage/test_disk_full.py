"""Disk full (issue 4 item 8): charging continues on an in-memory journal, the condition
is reported (connector 0 OtherError/StorageFull, /api/status), and once the disk takes
data again everything is written out in order without duplicates."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controller.dev.devcsms import DevCsms
from controller.runtime.station import STORAGE_PROBE_INTERVAL_S
from controller.storage import store as store_mod
from controller.storage.store import Store
from tests.journal16 import confirm_start, enqueue, start_msgs, stop_msgs

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "COMMIT")


def _csms_ids(store: Store) -> dict[int, str]:
    """The CSMS transaction ids as written to the database (not the in-memory overlay)."""
    rows = store._db.execute(
        "SELECT tx_key, csms_tx_id FROM tx_backend WHERE csms_tx_id IS NOT NULL"
    )
    return {int(r[0]): str(r[1]) for r in rows}


class FullDisk:
    """Wraps a store's live connection: while ``full``, every statement that would write
    fails the way SQLite does on a full disk (SQLITE_FULL, at the statement or COMMIT)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn: sqlite3.Connection = store._db
        self.full = False
        self.failures = 0
        store._db = self  # type: ignore[assignment]

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if self.full and sql.lstrip().upper().startswith(_WRITES):
            self.failures += 1
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, params: Any) -> sqlite3.Cursor:
        if self.full:
            self.failures += 1
            raise sqlite3.OperationalError("database or disk is full")
        return self.conn.executemany(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def api_status(h: Any, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{h.app.api.port}/api/status") as resp:
        assert resp.status == 200
        data: dict[str, Any] = await resp.json()
        return data


def cp_statuses(csms: DevCsms) -> list[dict[str, Any]]:
    return [
        f.payload
        for f in csms.received
        if f.action == "StatusNotification" and f.payload["connectorId"] == 0
    ]


def tx_frames(csms: DevCsms) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f.action, f.payload)
        for f in csms.received
        if f.action in ("StartTransaction", "MeterValues", "StopTransaction")
    ]


async def test_session_on_full_disk_then_recovery(
    csms: DevCsms, charger: Any, http: aiohttp.ClientSession
) -> None:
    h = await charger(csms)
    store: Store = h.app.store
    disk = FullDisk(store)
    assert (await api_status(h, http))["csms"]["storage"] == "ok"

    disk.full = True
    h.plug()
    await h.advance(2)
    h.tap()
    start = await csms.wait_for(lambda f: f.action == "StartTransaction")
    assert disk.failures > 0 and store.degraded
    # A transaction kept in the in-memory journal may deliver energy.
    await h.settle(lambda: h.connector().hw.contactor.closed)
    assert h.connector().state.condition is None
    await h.settle(lambda: any(p["errorCode"] == "OtherError" for p in cp_statuses(csms)))
    report = next(p for p in cp_statuses(csms) if p["errorCode"] == "OtherError")
    assert report["vendorErrorCode"] == "StorageFull"
    assert report["info"] == "database not writable; data kept in memory"
    assert (await api_status(h, http))["csms"]["storage"] == "degraded"

    await h.advance(300, step_s=10)  # MeterValues every 60 s; probes fail meanwhile
    h.tap()
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    await h.settle(lambda: store.outbox_count() == 0)
    assert store.degraded
    assert not h.connector().hw.contactor.closed
    sent = tx_frames(csms)
    actions = [a for a, _ in sent]
    assert actions[0] == "StartTransaction" and actions[-1] == "StopTransaction"
    assert actions.count("StartTransaction") == 1 and actions.count("StopTransaction") == 1
    assert actions.count("MeterValues") >= 4
    tx_id = stop.payload["transactionId"]
    assert tx_id != -1
    assert all(p["transactionId"] == tx_id for a, p in sent if a != "StartTransaction")
    assert stop.payload["meterStop"] - start.payload["meterStart"] >= 900
    # Nothing of it reached the file yet.
    assert store._db.execute("SELECT COUNT(*) FROM transactions").fetchone()[0] == 0

    # Space is freed: the next probe writes the journal out and the condition clears.
    disk.full = False
    await h.advance(STORAGE_PROBE_INTERVAL_S + 2)
    await h.settle(lambda: not store.degraded)
    await h.settle(lambda: cp_statuses(csms)[-1]["errorCode"] == "NoError")
    assert (await api_status(h, http))["csms"]["storage"] == "ok"
    row = store._db.execute("SELECT * FROM transactions").fetchall()
    assert len(row) == 1
    assert _csms_ids(store) == {1: str(tx_id)} and row[0]["stopped_at"] is not None
    assert row[0]["meter_stop_wh"] == stop.payload["meterStop"]
    assert store.outbox_count() == 0
    assert store._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    await h.advance(120, step_s=10)
    assert tx_frames(csms) == sent  # nothing sent twice

    # Durable again: the next session is stored before it is sent.
    h.unplug()
    await h.advance(2)
    h.plug()
    await h.advance(2)
    h.tap()
    await h.settle(lambda: h.connector().hw.contactor.closed)
    keys = [r[0] for r in store._db.execute("SELECT tx_key FROM transactions ORDER BY tx_key")]
    assert keys == [1, 2]


async def test_disk_fills_during_session(csms: DevCsms, charger: Any) -> None:
    """A durable transaction whose samples and stop land in memory: one StopTransaction,
    stored on recovery; a transaction key never collides with a stored one."""
    h = await charger(csms)
    store: Store = h.app.store
    disk = FullDisk(store)
    h.plug()
    await h.advance(2)
    h.tap()
    await csms.wait_for(lambda f: f.action == "StartTransaction")
    await h.settle(lambda: h.connector().hw.contactor.closed)
    await h.settle(lambda: store.outbox_count() == 0)
    await h.advance(60, step_s=10)

    disk.full = True
    await h.advance(130, step_s=10)  # samples now go to memory (and one probe fails)
    assert store.degraded
    assert h.connector().hw.contactor.closed
    h.tap()
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    await h.settle(lambda: store.outbox_count() == 0)
    # A second session while still full gets the next key after the stored one.
    h.unplug()
    await h.advance(2)
    h.plug()
    await h.advance(2)
    h.tap()
    await h.settle(lambda: len(h.frames("StartTransaction")) == 2)
    await h.settle(lambda: h.connector().hw.contactor.closed)
    assert h.connector().tx_key == 2

    disk.full = False
    await h.advance(STORAGE_PROBE_INTERVAL_S + 2)
    await h.settle(lambda: not store.degraded)
    rows = store._db.execute("SELECT * FROM transactions ORDER BY tx_key").fetchall()
    assert [r["tx_key"] for r in rows] == [1, 2]
    assert rows[0]["meter_stop_wh"] == stop.payload["meterStop"]
    assert rows[1]["stopped_at"] is None and 2 in _csms_ids(store)
    h.tap()
    await h.settle(lambda: len(h.frames("StopTransaction")) == 2)
    await h.settle(lambda: store.outbox_count() == 0)
    assert store.open_transactions() == []
    assert len(h.frames("StartTransaction")) == 2


def test_store_overlay_order_and_replay(tmp_path: Path) -> None:
    """Unit level: keys continue the database's, the outbox drains durable rows first,
    and flush() replays everything exactly once."""
    store = Store(tmp_path / "s.db")
    disk = FullDisk(store)
    kw: dict[str, Any] = {"meter_start_wh": 0, "reservation_id": None, "messages": start_msgs({})}
    k1 = store.begin_transaction(connector_id=1, id_tag="A", started_at="t0", **kw)
    disk.full = True
    enqueue(store, k1, "MeterValues", {"n": 1}, energy_wh=5, at="t1")
    k2 = store.begin_transaction(connector_id=2, id_tag="B", started_at="t2", **kw)
    assert store.degraded and k2 == k1 + 1
    assert store.end_transaction(
        k1, meter_stop_wh=9, stopped_at="t3", reason="Local", messages=stop_msgs({})
    )
    assert not store.end_transaction(
        k1, meter_stop_wh=9, stopped_at="t3", reason="Local", messages=stop_msgs({})
    )
    assert [t.tx_key for t in store.open_transactions()] == [k2]
    order = []
    while (msg := store.outbox_head()) is not None:
        order.append((msg.action, msg.tx_key))
        if msg.action == "StartTransaction" and msg.tx_key is not None:
            confirm_start(store, msg.seq, msg.tx_key, 100 + msg.tx_key)
        else:
            store.outbox_delete(msg.seq)
        if len(order) == 2:
            assert not store.flush()  # still full: nothing changes
    assert order == [
        ("StartTransaction", k1),
        ("MeterValues", k1),
        ("StartTransaction", k2),
        ("StopTransaction", k1),
    ]
    disk.full = False
    assert store.flush() and not store.degraded
    t1, t2 = store.get_transaction(k1), store.get_transaction(k2)
    assert t1 is not None and t1.stopped_at == "t3" and t1.shown_tx_id() == 100 + k1
    assert t2 is not None and t2.open and t2.shown_tx_id() == 100 + k2
    assert store.outbox_count() == 0
    assert store.begin_transaction(connector_id=1, id_tag="C", started_at="t4", **kw) == k2 + 1


def test_outbox_batch_merges_memory_and_database_rows(tmp_path: Path) -> None:
    """The replay's read-ahead sees the degraded view: database rows not deleted while
    degraded, then the messages kept in memory, in enqueue order."""
    store = Store(tmp_path / "s.db")
    disk = FullDisk(store)
    kw: dict[str, Any] = {"meter_start_wh": 0, "reservation_id": None, "messages": start_msgs({})}
    k1 = store.begin_transaction(connector_id=1, id_tag="A", started_at="t0", **kw)
    enqueue(store, k1, "MeterValues", {"n": 1}, energy_wh=5, at="t1")
    disk.full = True
    enqueue(store, k1, "MeterValues", {"n": 2}, energy_wh=6, at="t2")
    assert store.degraded
    head = store.outbox_head()
    assert head is not None and head.action == "StartTransaction"
    store.outbox_delete_many([head.seq])  # deleted while degraded: hidden, not yet gone
    batch = store.outbox_batch(0, 10)
    assert [(m.action, m.payload.get("n")) for m in batch] == [
        ("MeterValues", 1),
        ("MeterValues", 2),
    ]
    assert store.outbox_batch(batch[0].seq, 10) == batch[1:]
    assert store.outbox_batch(0, 1) == batch[:1]
    disk.full = False
    assert store.flush()
    assert [m.payload for m in store.outbox_batch(0, 10)] == [{"n": 1}, {"n": 2}]


def test_memory_journal_stays_bounded_on_a_long_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Days of sampling on a full disk must not grow memory without bound: only the latest
    reading per transaction is kept as a pending write, messages confirmed while in memory
    leave no trace, and beyond the cap the oldest MeterValues are dropped - never the
    Start/StopTransaction, and the stop reading (billing) stays exact."""
    monkeypatch.setattr(store_mod, "MAX_MEMORY_METER_VALUES", 10)
    store = Store(tmp_path / "s.db")
    disk = FullDisk(store)
    kw: dict[str, Any] = {"reservation_id": None, "messages": start_msgs({"start": 1})}
    disk.full = True
    k1 = store.begin_transaction(
        connector_id=1, id_tag="A", started_at="t0", meter_start_wh=100, **kw
    )
    for i in range(1, 26):
        enqueue(store, k1, "MeterValues", {"n": i}, energy_wh=100 + i, at=f"m{i}")
    assert store.end_transaction(
        k1, meter_stop_wh=126, stopped_at="t9", reason="Local", messages=stop_msgs({"stop": 1})
    )
    kept = [m.payload for m in store.outbox_batch(0, 100)]
    assert kept == [{"start": 1}] + [{"n": i} for i in range(16, 26)] + [{"stop": 1}]
    assert store.dropped_meter_values == 15
    # One INSERT (tx) + one reading + 12 INSERTs (outbox) + the stop UPDATE.
    assert len(store._ops) == 15
    # Confirmed while in memory: nothing to write for them any more.
    head = store.outbox_head()
    assert head is not None
    confirm_start(store, head.seq, k1, 77)
    store.outbox_delete_many([m.seq for m in store.outbox_batch(0, 5)], durable=False)
    assert len(store._ops) == 15 - 1 - 5 + 1  # the csms id UPDATE was added
    disk.full = False
    assert store.flush()
    rows = store._db.execute("SELECT * FROM transactions").fetchall()
    assert [(r["meter_start_wh"], r["meter_stop_wh"]) for r in rows] == [(100, 126)]
    assert _csms_ids(store) == {k1: "77"}
    assert [m.payload for m in store.outbox_batch(0, 100)] == [{"n": i} for i in range(21, 26)] + [
        {"stop": 1}
    ]


# --------------------------------------------------------------------------- spill file


@pytest.fixture
def full_at_open(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """While state["full"]: every write transaction of any Store fails like SQLITE_FULL,
    from the first one in the constructor on (FullDisk wraps a store only after it)."""
    state = {"full": False}
    original = Store._tx

    def tx(self: Store) -> Any:
        if state["full"]:
            raise store_mod.StoreError("database or disk is full")
        return original(self)

    monkeypatch.setattr(Store, "_tx", tx)
    return state


def _offline_session_on_full_disk(store: Store) -> int:
    kw: dict[str, Any] = {"reservation_id": None, "messages": start_msgs({"start": 1})}
    key = store.begin_transaction(
        connector_id=1, id_tag="A", started_at="t0", meter_start_wh=100, boot_id="b1", **kw
    )
    enqueue(store, key, "MeterValues", {"n": 1}, energy_wh=150, at="t1")
    enqueue(store, key, "MeterValues", {"n": 2}, energy_wh=180, at="t2")
    return key


def test_crash_while_degraded_keeps_pending_writes_in_the_spill_file(
    tmp_path: Path, full_at_open: dict[str, bool]
) -> None:
    """A crash or watchdog restart while the disk is full must not lose the open
    transaction (it would never get its StopTransaction): the pending writes are in the
    runtime directory (tmpfs) and the next process applies them before anything else."""
    run_dir = tmp_path / "run"
    store = Store(tmp_path / "s.db", spill_dir=run_dir)
    full_at_open["full"] = True
    key = _offline_session_on_full_disk(store)
    assert store.degraded and (run_dir / "s.db.spill").exists()
    # The process dies here (nothing flushed, nothing closed cleanly).
    full_at_open["full"] = False
    after = Store(tmp_path / "s.db", spill_dir=run_dir)
    assert not after.degraded
    (tx,) = after.open_transactions()
    assert (tx.tx_key, tx.last_meter_wh, tx.last_meter_at, tx.boot_id) == (key, 180, "t2", "b1")
    assert [m.payload for m in after.outbox_batch(0, 10)] == [{"start": 1}, {"n": 1}, {"n": 2}]
    assert not (run_dir / "s.db.spill").exists()


def test_restart_on_a_still_full_disk_keeps_the_spill_ahead_of_new_writes(
    tmp_path: Path, full_at_open: dict[str, bool]
) -> None:
    run_dir = tmp_path / "run"
    store = Store(tmp_path / "s.db", spill_dir=run_dir)
    full_at_open["full"] = True
    first = _offline_session_on_full_disk(store)
    after = Store(tmp_path / "s.db", spill_dir=run_dir)  # still full
    assert after.degraded
    kw: dict[str, Any] = {"reservation_id": None, "messages": start_msgs({"start": 2})}
    second = after.begin_transaction(
        connector_id=2, id_tag="B", started_at="t5", meter_start_wh=7, boot_id="b2", **kw
    )
    assert second == first + 1  # keys continue after the spilled ones
    full_at_open["full"] = False
    assert after.flush()
    keys = [t.tx_key for t in after.open_transactions()]
    assert keys == [first, second]
    assert [m.payload for m in after.outbox_batch(0, 10)] == [
        {"start": 1},
        {"n": 1},
        {"n": 2},
        {"start": 2},
    ]
    assert not (run_dir / "s.db.spill").exists()


def test_spill_applied_once_even_if_the_crash_comes_before_the_file_is_removed(
    tmp_path: Path, full_at_open: dict[str, bool]
) -> None:
    run_dir = tmp_path / "run"
    store = Store(tmp_path / "s.db", spill_dir=run_dir)
    full_at_open["full"] = True
    _offline_session_on_full_disk(store)
    spill = run_dir / "s.db.spill"
    saved = spill.read_bytes()
    full_at_open["full"] = False
    assert store.flush()
    spill.write_bytes(saved)  # as if the process died between the commit and the unlink
    store.close()
    again = Store(tmp_path / "s.db", spill_dir=run_dir)
    assert len(again.open_transactions()) == 1
    assert again.outbox_count() == 3
    assert not spill.exists()


def test_torn_last_spill_line_is_ignored(tmp_path: Path, full_at_open: dict[str, bool]) -> None:
    run_dir = tmp_path / "run"
    store = Store(tmp_path / "s.db", spill_dir=run_dir)
    full_at_open["full"] = True
    _offline_session_on_full_disk(store)
    spill = run_dir / "s.db.spill"
    with spill.open("a") as f:
        f.write('{"op": 99, "sql": "INSERT INTO')  # killed mid-write
    full_at_open["full"] = False
    after = Store(tmp_path / "s.db", spill_dir=run_dir)
    assert after.outbox_count() == 3 and len(after.open_transactions()) == 1


def test_settings_written_on_a_full_disk_are_kept_and_replayed(tmp_path: Path) -> None:
    """ChangeAvailability / ChangeConfiguration persist settings: on a full disk they are
    answered from memory (not refused with an error) and written once the disk has room;
    repeated writes of one key leave one pending write."""
    store = Store(tmp_path / "s.db")
    store.set_setting("availability.1", "Operative")
    store.set_setting("ocpp.HeartbeatInterval", "300")
    disk = FullDisk(store)
    disk.full = True
    store.set_setting("availability.1", "Inoperative")
    store.delete_setting("ocpp.HeartbeatInterval")
    for i in range(50):
        store.set_setting("clock.last_good_utc", f"2026-06-01T10:00:{i:02d}.000+00:00")
    assert store.degraded
    assert store.get_setting("availability.1") == "Inoperative"
    assert store.get_setting("ocpp.HeartbeatInterval") is None
    assert store.settings_with_prefix("ocpp.") == {}
    assert len(store._ops) == 3
    disk.full = False
    assert store.flush()
    reopened = Store(tmp_path / "s.db")
    assert reopened.get_setting("availability.1") == "Inoperative"
    assert reopened.get_setting("ocpp.HeartbeatInterval") is None
    assert reopened.get_setting("clock.last_good_utc") == "2026-06-01T10:00:49.000+00:00"


def test_restart_on_a_still_full_disk_sees_the_spilled_writes(
    tmp_path: Path, full_at_open: dict[str, bool]
) -> None:
    """After a crash on a full disk, a process that starts while the disk is still full must
    see what the spill file holds: the transaction begun in memory (else it is never
    recovered or stopped), the latest reading, the CSMS transactionId and the messages
    confirmed before the crash (else the StartTransaction is sent again and the CSMS opens
    a second transaction)."""
    run_dir = tmp_path / "run"
    store = Store(tmp_path / "s.db", spill_dir=run_dir)
    kw: dict[str, Any] = {"reservation_id": None, "boot_id": "b1"}
    durable = store.begin_transaction(
        connector_id=1, id_tag="A", started_at="t0", meter_start_wh=10,
        messages=start_msgs({"start": 1}), **kw,
    )  # fmt: skip
    full_at_open["full"] = True
    head = store.outbox_head()
    assert head is not None
    confirm_start(store, head.seq, durable, 77)  # confirmed while the disk is full
    store.record_meter(durable, 55, "t1")
    store.set_setting("availability.1", "Inoperative")
    in_memory = _offline_session_on_full_disk(store)
    assert store.degraded
    # The process dies here; the next one starts on a disk that is still full.
    after = Store(tmp_path / "s.db", spill_dir=run_dir)
    assert after.degraded
    tx = after.get_transaction(durable)
    assert tx is not None and (tx.shown_tx_id(), tx.last_meter_wh, tx.last_meter_at) == (
        77,
        55,
        "t1",
    )
    assert [t.tx_key for t in after.open_transactions()] == [durable, in_memory]
    assert after.get_setting("availability.1") == "Inoperative"
    queued = after.outbox_batch(0, 10)
    assert [m.payload for m in queued] == [{"start": 1}, {"n": 1}, {"n": 2}]
    assert [m.tx_key for m in queued] == [in_memory] * 3
    assert after.outbox_count() == 3
    # Confirmed after the restart, then the disk takes data again: nothing twice.
    confirm_start(after, queued[0].seq, in_memory, 78)
    after.outbox_delete(queued[1].seq)
    full_at_open["full"] = False
    assert after.flush()
    assert [m.payload for m in after.outbox_batch(0, 10)] == [{"n": 2}]
    rows = after._db.execute("SELECT tx_key, last_meter_wh FROM transactions")
    assert [tuple(r) for r in rows] == [(durable, 55), (in_memory, 180)]
    assert _csms_ids(after) == {durable: "77", in_memory: "78"}
    assert not (run_dir / "s.db.spill").exists()


async def test_meter_values_dropped_at_the_cap_while_retried_are_not_resent_endlessly(
    csms: DevCsms, charger: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A MeterValues the CSMS refuses (CALLERROR) is tried TransactionMessageAttempts times.
    If the memory cap drops it meanwhile (long full disk), it has no attempt count any more:
    it must not be resent without a pause for ever."""
    monkeypatch.setattr(store_mod, "MAX_MEMORY_METER_VALUES", 1)
    h = await charger(
        csms, ocpp={"TransactionMessageAttempts": 3, "TransactionMessageRetryInterval": 50}
    )
    disk = FullDisk(h.app.store)
    disk.full = True
    h.plug()
    await h.advance(2)
    h.tap()
    await csms.wait_for(lambda f: f.action == "StartTransaction")
    await h.settle(lambda: h.connector().hw.contactor.closed)
    csms.error_actions["MeterValues"] = "InternalError"
    first = await _advance_until(h, lambda: len(h.frames("MeterValues")) >= 1)
    refused = h.frames("MeterValues")[0].payload["meterValue"]
    # Retried after 50 s, then after 100 s; the next sample (60 s) pushes it out of memory.
    await h.advance(300 - first)
    same = [f for f in h.frames("MeterValues") if f.payload["meterValue"] == refused]
    assert len(same) <= 3


async def _advance_until(h: Any, predicate: Any, limit_s: int = 120) -> int:
    for waited_s in range(1, limit_s + 1):
        await h.advance(1)
        if predicate():
            return waited_s
    raise AssertionError("condition not reached")
