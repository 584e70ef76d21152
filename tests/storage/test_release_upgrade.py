"""A database written by the last release (tests/fixtures/release-schema2.db, made by that
release's own code: see make_release_db.py) is opened by this evsed and every transaction in
it is finished exactly once, with the right transactionId, in order; the authorization
cache, the local list, the OCPP keys and the availability survive - also when the upgrade
to schema 3 was killed half-way (SIGKILL, a real process and WAL). A spill file that release
left after its disk filled (make_release_spill.py) is applied after the upgrade.

The fixture: transaction 1 confirmed as CSMS id 101 and stopped (StopTransaction queued);
transaction 2 confirmed as 102, open, two MeterValues queued, last reading persisted at
1,022,400 Wh, then the power went (another boot id); transaction 3 entirely offline on
connector 2 (Start, MeterValues, Stop queued, no id yet).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from controller.dev.devcsms import DevCsms
from controller.storage.migrations import MIGRATIONS, current_version
from controller.storage.store import Store
from controller.storage.writes import EventKind
from tests.conftest import STATION_ID
from tests.storage.test_migrations import kill_mid_upgrade

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE = FIXTURES / "release-schema2.db"
FULL_DISK = FIXTURES / "release-schema2-full-disk.db"
REPO = Path(__file__).resolve().parents[2]


def tx_frames(csms: DevCsms) -> list[Any]:
    return [
        f
        for f in csms.received
        if f.action in ("StartTransaction", "MeterValues", "StopTransaction")
        and f.payload.get("transactionId", 0) != -1
    ]


def _kill_mid_upgrade(db_path: Path, at: int) -> None:
    """SIGKILL during the upgrade to schema 3 (the journal): the file is still a sound
    schema-2 database."""
    kill_mid_upgrade(db_path, at, version=3)
    db = sqlite3.connect(db_path)
    try:
        assert current_version(db) == 2
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()


# None: a clean upgrade; a number: killed before that statement of migration 3 (after the
# new column, after the id table is filled, after the old column is dropped, at the end).
KILLED_AT = [None, 1, 5, 6, len(MIGRATIONS[2].statements)]


@pytest.mark.parametrize("killed_at", KILLED_AT)
async def test_release_database_finishes_every_transaction_once(
    csms: DevCsms, charger: Any, tmp_path: Path, killed_at: int | None
) -> None:
    shutil.copyfile(FIXTURE, tmp_path / "evsed.db")
    if killed_at is not None:
        _kill_mid_upgrade(tmp_path / "evsed.db", killed_at)
    h = await charger(csms, connectors=2, boot_id="boot-after-upgrade")
    store = h.app.store
    await h.settle(lambda: store.outbox_count() == 0 and not store.open_transactions())

    frames = tx_frames(csms)
    by_tx: dict[Any, list[str]] = {}
    for f in frames:
        key = f.payload.get("transactionId", f.payload.get("idTag"))
        by_tx.setdefault(key, []).append(f.action)

    # 1: only its queued StopTransaction, with the id the CSMS gave it before the upgrade.
    stop1 = [
        f for f in frames if f.action == "StopTransaction" and f.payload["transactionId"] == 101
    ]
    assert len(stop1) == 1
    assert stop1[0].payload["meterStop"] == 1_011_000 and stop1[0].payload["reason"] == "Local"
    assert by_tx[101] == ["StopTransaction"]

    # 2: its two MeterValues, then closed by this start as PowerLoss (another boot) with the
    # last persisted reading and that reading's time.
    assert by_tx[102] == ["MeterValues", "MeterValues", "StopTransaction"]
    stop2 = frames[[i for i, f in enumerate(frames) if f.payload.get("transactionId") == 102][-1]]
    assert stop2.payload["reason"] == "PowerLoss"
    assert stop2.payload["meterStop"] == 1_022_400
    assert stop2.payload["timestamp"] == "2026-11-30T11:02:11.000+00:00"

    # 3: started now at the CSMS, which gives it an id; its MeterValues and Stop carry it.
    starts = [f for f in frames if f.action == "StartTransaction"]
    assert len(starts) == 1 and starts[0].payload["idTag"] == "DEADBEEF"
    assert starts[0].payload["meterStart"] == 500_000 and starts[0].payload["connectorId"] == 2
    tx3 = next(
        f.payload["transactionId"]
        for f in frames
        if f.action == "StopTransaction" and f.payload["transactionId"] not in (101, 102)
    )
    assert tx3 not in (101, 102)
    assert by_tx[tx3] == ["MeterValues", "StopTransaction"]
    stop3 = [
        f for f in frames if f.action == "StopTransaction" and f.payload["transactionId"] == tx3
    ]
    assert stop3[0].payload["meterStop"] == 507_000
    assert stop3[0].payload["reason"] == "EVDisconnected"
    assert sum(f.action == "StopTransaction" for f in frames) == 3

    # The store: every transaction closed with the id the CSMS knows it by.
    rows = {t.tx_key: t for t in store.transactions()}
    assert rows[1].shown_tx_id() == 101 and rows[2].shown_tx_id() == 102
    assert rows[3].shown_tx_id() == tx3
    assert [rows[k].stop_reason for k in (1, 2, 3)] == ["Local", "PowerLoss", "EVDisconnected"]

    # Authorization data, OCPP keys and availability survived.
    # (04A1B2C3's entry was refreshed by the StopTransaction.conf idTagInfo, 3.5.1.)
    assert store.cache_get("04a1b2c3") is not None
    assert store.cache_get("cafe0001") == ("Blocked", "FLEET", None)
    assert store.local_list_version() == 7
    assert store.local_list_get("list0002") == ("Expired", "FLEET", None)
    assert h.app.settings.get("MeterValueSampleInterval") == "30"
    assert h.app.settings.get("LocalAuthListEnabled") == "true"
    statuses = {
        f.payload["connectorId"]: f.payload["status"]
        for f in csms.received
        if f.action == "StatusNotification"
    }
    assert statuses[2] == "Unavailable" and statuses[1] == "Available"
    assert csms.connected(STATION_ID)


def _full_disk_copy(tmp_path: Path) -> tuple[Path, Path]:
    """The full-disk fixture as the next start finds it: the database and, in the service's
    runtime directory, the spill file named after it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copyfile(FULL_DISK, tmp_path / "evsed.db")
    shutil.copyfile(f"{FULL_DISK}.spill", run_dir / "evsed.db.spill")
    return tmp_path / "evsed.db", run_dir


def test_release_spill_file_is_applied_after_the_upgrade(tmp_path: Path) -> None:
    """The schema-2 SQL in the spill file is read as the typed writes it meant and applied
    to the upgraded database in one commit: nothing lost, nothing applied twice."""
    db_path, run_dir = _full_disk_copy(tmp_path)
    store = Store(db_path, spill_dir=run_dir)
    try:
        assert not store.degraded and not (run_dir / "evsed.db.spill").exists()
        t1, t2 = store.get_transaction(1), store.get_transaction(2)
        assert t1 is not None and t2 is not None
        # 1: the stop written while the disk was full; its CSMS id from before.
        assert (t1.meter_stop_wh, t1.stopped_at, t1.stop_reason) == (
            2_012_000,
            "2026-11-30T09:37:00.000+00:00",
            "Local",
        )
        assert t1.csms_tx_ids == {"csms": "201"}
        # 2: begun on the full disk, confirmed there, reading persisted; it gets its own id.
        assert t2.open and t2.connector_id == 2 and t2.id_tag == "CAFE0001"
        assert t2.csms_tx_ids == {"csms": "202"}
        assert (t2.last_meter_wh, t2.last_meter_at) == (303_700, "2026-11-30T10:30:00.000+00:00")
        assert len(t2.tx_id) == 32 and t2.tx_id != t1.tx_id
        # The outbox: the MeterValues confirmed on the full disk is gone, so is the confirmed
        # StartTransaction of 2; the attempt counted on the full disk is kept.
        queued = [
            (m.seq, m.tx_key, m.action, m.kind, m.attempts) for m in store.outbox_batch(0, 20)
        ]
        assert queued == [
            (3, 1, "MeterValues", EventKind.SAMPLES, 0),
            (4, 1, "MeterValues", EventKind.SAMPLES, 0),
            (5, 1, "StopTransaction", EventKind.ENDED, 0),
            (7, 2, "MeterValues", EventKind.SAMPLES, 1),
        ]
        assert store.get_setting("cfg.HeartbeatInterval") == "600"
        # New rows continue after the keys the spill used.
        assert (
            store.begin_transaction(
                connector_id=1, id_tag="X", meter_start_wh=1, started_at="t", reservation_id=None
            )
            == 3
        )
    finally:
        store.close()
    # Opening again applies nothing twice (the spill file is gone; the generation is noted).
    again = Store(db_path, spill_dir=run_dir)
    try:
        assert [m.seq for m in again.outbox_batch(0, 20)] == [3, 4, 5, 7]
    finally:
        again.close()


async def test_release_spill_file_session_is_delivered_once(
    csms: DevCsms, charger: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: the charger started after the upgrade delivers what the release kept
    only in its spill file, with the transaction ids the CSMS gave before, exactly once, and
    closes the transaction that was open on the full disk as PowerLoss."""
    _, run_dir = _full_disk_copy(tmp_path)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(run_dir))
    h = await charger(csms, connectors=2, boot_id="boot-after-upgrade")
    store = h.app.store
    await h.settle(lambda: store.outbox_count() == 0 and not store.open_transactions())
    frames = tx_frames(csms)
    sent = [(f.action, f.payload.get("transactionId")) for f in frames]
    assert sent == [
        ("MeterValues", 201),
        ("MeterValues", 201),
        ("StopTransaction", 201),
        ("MeterValues", 202),
        ("StopTransaction", 202),
    ]
    assert frames[2].payload["meterStop"] == 2_012_000
    assert frames[4].payload["reason"] == "PowerLoss"
    assert frames[4].payload["meterStop"] == 303_700
