"""Unclean stops (crash, kill, power loss): how much energy is lost, and resuming.

* The last reading of a running transaction is persisted at least every
  MeterValueSampleInterval (with the MeterValues that carries it) and at least every 60 s
  when that interval is 0 or longer, but never while the register stands still (flash
  wear). Crash recovery bills that reading (4.10 / 7.36 Reboot / PowerLoss), so an unclean
  stop loses at most one persist interval of energy.
* ``[station] resume_transactions = true``: a transaction left open is re-attached at the
  next start when the vehicle is still plugged in - no second StartTransaction, the same
  transactionId, one StopTransaction with the normal reason later. Otherwise it is closed
  with Reboot / PowerLoss as before.

"Still plugged in" across a restart: a new App builds new simulated drivers, so the test
plugs the new sim vehicle in as the drivers are built, before the station starts (as a real
pilot would read state B at power-up). The sim meter keeps its register in a state file, as
a real meter's non-volatile register survives the restart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import controller.app
from controller.app import App
from controller.config import parse
from controller.dev.devcsms import DevCsms
from controller.runtime.clock import ManualClock
from controller.runtime.station import Station
from controller.storage.store import Store
from hal.base import FaultKind, VehicleState
from tests.conftest import CARD, STATION_ID, Harness, charger_config
from tests.e2e.test_e2e_durability import (
    assert_exactly_once_in_order,
    assert_unique_message_ids,
    drained,
    energy,
    start_ids,
    start_session,
)

POWER_W = 11000.0  # what the simulated car draws (16 A x 3 x 230 V offered)
WH_PER_S = POWER_W / 3600


def _open_tx(tmp_path: Path) -> Any:
    store = Store(tmp_path / "evsed.db")
    try:
        (tx,) = store.open_transactions()
        return tx
    finally:
        store.close()


def count_record_meter(h: Harness) -> list[int]:
    """Wrap Store.record_meter of the running charger; returns the list of written Wh."""
    writes: list[int] = []
    store = h.app.store
    real = store.record_meter

    def wrapped(tx_key: int, energy_wh: int, at: str) -> None:
        writes.append(energy_wh)
        real(tx_key, energy_wh, at)

    store.record_meter = wrapped  # type: ignore[method-assign]
    return writes


# --------------------------------------------------------------------------- persist cadence


@pytest.mark.parametrize(
    ("sample_s", "bound_s", "writes"),
    [
        (0, 60, 4),  # no MeterValues: persisted every 60 s by record_meter
        (10, 10, 0),  # every MeterValues persists it; no extra writes
        (30, 30, 0),
        (120, 60, 2),  # at 60 and 180 s; the MeterValues at 120 s persisted that one
        (600, 60, 4),
    ],
)
async def test_crash_loses_at_most_one_persist_interval(
    csms: DevCsms,
    charger: Any,
    tmp_path: Path,
    sample_s: int,
    bound_s: int,
    writes: int,
) -> None:
    h = await charger(csms, ocpp={"MeterValueSampleInterval": sample_s})
    recorded = count_record_meter(h)
    await start_session(h, csms)
    assert h.app.station.persist_interval_s() == bound_s
    await h.advance(bound_s * 5 - 1)  # crash just before the 5th persist: the worst case
    await h.app.stop(reason=None)  # crash: the transaction stays open
    register = h.rig().meter.energy_wh
    tx = _open_tx(tmp_path)
    lost_wh = register - tx.last_meter_wh
    # One persist interval plus the 1 s tick granularity and rounding.
    assert 0 <= lost_wh <= (bound_s + 1) * WH_PER_S + 1, (lost_wh, tx)
    assert len(recorded) == writes, recorded
    assert recorded == sorted(recorded)

    # The recovery StopTransaction bills exactly that reading.
    h2 = await charger(csms, ocpp={"MeterValueSampleInterval": sample_s})
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    await drained(h2)
    assert stop.payload["reason"] == "Reboot"
    assert stop.payload["meterStop"] == tx.last_meter_wh


@pytest.mark.parametrize("sample_s", [0, 10])
async def test_no_persist_writes_without_energy_flow(
    csms: DevCsms, charger: Any, sample_s: int
) -> None:
    """Idle charger, and a transaction whose car takes no energy: no record_meter writes."""
    h = await charger(csms, ocpp={"MeterValueSampleInterval": sample_s})
    recorded = count_record_meter(h)
    await h.advance(300)  # nothing plugged
    h.plug()
    await h.advance(2)
    h.rig().vehicle.set_state(VehicleState.B)  # plugged, not asking for energy
    h.tap()
    await csms.wait_for(lambda f: f.action == "StartTransaction")
    await h.advance(2)
    assert h.connector().state.phase.value == "SuspendedEV"
    assert h.connector().tx_key is not None
    await h.advance(600)
    assert recorded == []
    # Once energy flows the reading is persisted again (within the interval).
    h.rig().vehicle.set_state(VehicleState.C)
    await h.advance(61)
    if sample_s == 0:
        assert len(recorded) == 1
    else:
        assert recorded == []  # the MeterValues carried it
    tx = h.app.store.get_transaction(h.connector().tx_key)
    assert h.rig().meter.energy_wh - tx.last_meter_wh <= 11 * WH_PER_S + 1


# --------------------------------------------------------------------------- resume


@pytest.fixture
async def resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Any]]:
    """Factory like ``charger`` with a persistent meter register, ``[station]
    resume_transactions`` and optionally the vehicle plugged in at start."""
    wanted = {"resume": False}

    def make_station(**kwargs: Any) -> Station:
        # Until app.py passes Config.resume_transactions to the Station (then a no-op).
        kwargs.setdefault("resume_transactions", wanted["resume"])
        return Station(**kwargs)

    monkeypatch.setattr(controller.app, "Station", make_station)
    apps: list[App] = []
    clocks: list[ManualClock] = []

    async def factory(
        csms: DevCsms,
        *,
        boot_id: str = "boot-1",
        plugged: bool = False,
        resume: bool = True,
        ocpp: dict[str, Any] | None = None,
        meter_silent: bool = False,
    ) -> Harness:
        data = charger_config(tmp_path, csms.url, ocpp=ocpp)
        data["station"]["resume_transactions"] = resume
        data["connectors"][0]["meter"]["state_file"] = str(tmp_path / "meter.json")
        config = parse(data)
        assert config.resume_transactions is resume
        wanted["resume"] = resume
        # Wall time goes on across the restart (30 s of downtime).
        start = clocks[-1].utc_now() + timedelta(seconds=30) if clocks else None
        clock = ManualClock(start)
        clocks.append(clock)
        app = App(config, clock=clock, boot_id=boot_id)
        build = app._build_devices

        def build_plugged() -> Any:
            hardware, reader = build()
            for hw in hardware:
                if plugged:
                    hw.vehicle.plug()  # the car never left
                if meter_silent:
                    hw.meter.fail(True)  # e.g. the meter boots slower than the Pi
            return hardware, reader

        app._build_devices = build_plugged  # type: ignore[method-assign]
        await app.start()
        apps.append(app)
        h = Harness(app, clock, csms)
        await csms.wait_connected(STATION_ID, timeout_s=5)
        await h.settle(lambda: app.port is not None and app.port.connection_state() == "accepted")
        return h

    yield factory
    for app in apps:
        if app.store is not None:
            await app.stop(reason=None)


async def test_resume_with_vehicle_still_plugged(csms: DevCsms, resumable: Any) -> None:
    h1 = await resumable(csms, ocpp={"MeterValueSampleInterval": 10})
    await start_session(h1, csms)
    await h1.advance(25)
    await drained(h1)
    tx_key = h1.connector().tx_key
    await h1.app.stop(reason=None)  # crash
    before = len(h1.frames("MeterValues"))

    h2 = await resumable(csms, plugged=True, ocpp={"MeterValueSampleInterval": 10})
    c = h2.connector()
    await h2.settle(lambda: c.hw.contactor.closed)
    assert c.tx_key == tx_key
    assert c.state.phase.value == "Charging"
    assert c.state.authorized_tag == CARD
    await h2.advance(25)
    await drained(h2)
    assert len(h2.frames("MeterValues")) == before + 2
    assert h2.frames("StopTransaction") == []
    assert len(h2.app.store.open_transactions()) == 1

    h2.tap()  # the driver's card still stops it: normal reason
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    await drained(h2)
    assert stop.payload["reason"] == "Local"
    assert stop.payload["idTag"] == CARD
    (tx_id,) = start_ids(csms)
    ok = assert_exactly_once_in_order(csms, tx_id=tx_id)
    assert [f.action for f in ok].count("StartTransaction") == 1
    assert stop.payload["meterStop"] >= energy(ok[-2])
    # Energy of both runs is billed: 25 s + 25 s at 11 kW (plus the 2 s before the tap).
    billed = stop.payload["meterStop"] - ok[0].payload["meterStart"]
    assert billed >= 50 * POWER_W / 3600 - 2
    assert h2.app.store.open_transactions() == []
    assert_unique_message_ids(csms)

    # Another restart finds nothing to resume or close.
    await h2.app.stop(reason=None)
    h3 = await resumable(csms, plugged=True)
    await h3.advance(5)
    await drained(h3)
    assert len(h3.frames("StopTransaction")) == 1
    assert len(h3.frames("StartTransaction")) == 1
    assert h3.connector().tx_key is None


@pytest.mark.parametrize(("boot_id", "reason"), [("boot-1", "Reboot"), ("boot-2", "PowerLoss")])
async def test_resume_with_vehicle_gone_closes(
    csms: DevCsms, resumable: Any, tmp_path: Path, boot_id: str, reason: str
) -> None:
    h1 = await resumable(csms, ocpp={"MeterValueSampleInterval": 10})
    await start_session(h1, csms)
    await h1.advance(25)
    await drained(h1)
    await h1.app.stop(reason=None)
    tx = _open_tx(tmp_path)

    h2 = await resumable(csms, boot_id=boot_id, plugged=False)
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    await drained(h2)
    assert stop.payload["reason"] == reason
    assert stop.payload["meterStop"] == tx.last_meter_wh
    assert h2.connector().tx_key is None
    assert not h2.connector().hw.contactor.closed
    (tx_id,) = start_ids(csms)
    assert_exactly_once_in_order(csms, tx_id=tx_id)
    # Plugging in later does not revive it.
    h2.plug()
    await h2.advance(5)
    assert not h2.connector().hw.contactor.closed
    assert len(h2.frames("StopTransaction")) == 1


async def test_resume_needs_a_fresh_meter_reading(
    csms: DevCsms, resumable: Any, tmp_path: Path
) -> None:
    """Issue 9: no reading, no energy - also after a restart. A meter silent at the restart
    means the transaction cannot go on (the bill would have no register to continue from):
    it is closed with the last persisted reading, and the contactor never closes."""
    h1 = await resumable(csms, ocpp={"MeterValueSampleInterval": 10})
    await start_session(h1, csms)
    await h1.advance(25)
    await drained(h1)
    await h1.app.stop(reason=None)  # crash
    tx = _open_tx(tmp_path)

    h2 = await resumable(csms, plugged=True, meter_silent=True)
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    await drained(h2)
    assert stop.payload["reason"] == "Reboot"
    assert stop.payload["meterStop"] == tx.last_meter_wh
    assert h2.connector().tx_key is None
    await h2.advance(5)
    assert not h2.connector().hw.contactor.closed
    assert h2.connector().state.condition is FaultKind.METER
    assert len(h2.frames("StartTransaction")) == 1  # nothing started without a reading


async def test_resume_disabled_closes_even_if_plugged(csms: DevCsms, resumable: Any) -> None:
    h1 = await resumable(csms, resume=False, ocpp={"MeterValueSampleInterval": 10})
    await start_session(h1, csms)
    await h1.advance(15)
    await h1.app.stop(reason=None)
    h2 = await resumable(csms, resume=False, plugged=True)
    assert h2.app.station.resume_transactions is False
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    assert stop.payload["reason"] == "Reboot"


async def test_resume_invalidated_transaction_stays_suspended(
    csms: DevCsms, resumable: Any
) -> None:
    """A transaction whose idTag the CSMS invalidated (StopTransactionOnInvalidId=false)
    does not get energy back by a restart."""
    ocpp = {"MeterValueSampleInterval": 10, "StopTransactionOnInvalidId": False}
    csms.invalid_id_tags = {CARD}
    h1 = await resumable(csms, ocpp=ocpp)
    h1.plug()
    await h1.advance(2)
    h1.app.station.begin_remote(1, CARD)
    await csms.wait_for(lambda f: f.action == "StartTransaction")
    await h1.settle(lambda: h1.connector().state.deauthorized)
    assert not h1.connector().hw.contactor.closed
    await h1.app.stop(reason=None)

    h2 = await resumable(csms, plugged=True, ocpp=ocpp)
    c = h2.connector()
    await h2.advance(5)
    assert c.tx_key is not None
    assert c.state.deauthorized
    assert c.state.phase.value == "SuspendedEVSE"
    assert not c.hw.contactor.closed
    h2.unplug()
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    assert stop.payload["reason"] == "EVDisconnected"
    assert h2.app.store.settings_with_prefix("tx.deauthorized.") == {}
