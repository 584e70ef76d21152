"""A database written by the last release (tests/fixtures/release-schema2.db, made by that
release's own code: see make_release_db.py) is opened by this evsed and every transaction in
it is finished exactly once, with the right transactionId, in order; the authorization
cache, the local list, the OCPP keys and the availability survive.

The fixture: transaction 1 confirmed as CSMS id 101 and stopped (StopTransaction queued);
transaction 2 confirmed as 102, open, two MeterValues queued, last reading persisted at
1,022,400 Wh, then the power went (another boot id); transaction 3 entirely offline on
connector 2 (Start, MeterValues, Stop queued, no id yet).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from controller.dev.devcsms import DevCsms
from tests.conftest import STATION_ID

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "release-schema2.db"


def tx_frames(csms: DevCsms) -> list[Any]:
    return [
        f
        for f in csms.received
        if f.action in ("StartTransaction", "MeterValues", "StopTransaction")
        and f.payload.get("transactionId", 0) != -1
    ]


async def test_release_database_finishes_every_transaction_once(
    csms: DevCsms, charger: Any, tmp_path: Path
) -> None:
    shutil.copyfile(FIXTURE, tmp_path / "evsed.db")
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
    assert rows[1].csms_tx_id == 101 and rows[2].csms_tx_id == 102
    assert rows[3].csms_tx_id == tx3
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
