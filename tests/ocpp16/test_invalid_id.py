"""StartTransaction.conf with a non-Accepted idTagInfo for a running transaction.

OCPP 1.6 edition 2, 3.5.4 (moved to 4.8 by errata 3.17): when the authorization status in
the StartTransaction.conf is not Accepted and the transaction is still ongoing, the Charge
Point SHOULD

* StopTransactionOnInvalidId = true (9.1.24): stop the transaction, reason DeAuthorized;
* StopTransactionOnInvalidId = false: only stop energy delivery to the vehicle
  (7.7 with errata 3.64: SuspendedEVSE, "as the result of StartTransaction.conf indicating
  that charging is not allowed"); the transaction stays open until the EV leaves or the
  driver stops it;
* MaxEnergyOnInvalidId (9.1.14, optional): the energy in Wh still delivered after the
  invalidation, so that the EV can drive away.

The transactions are started offline (AllowOfflineTxForUnknownId, 3.5.4), so the dev CSMS
can only say "Invalid" in the StartTransaction.conf sent after the reconnect.
"""

from __future__ import annotations

from typing import Any

import pytest

import controller.app
import controller.config
from controller.dev.devcsms import DevCsms
from controller.ocpp16 import settings as settings_mod
from controller.ocpp16.settings import KeyDef
from tests.conftest import CARD
from tests.e2e.test_e2e_durability import (
    assert_exactly_once_in_order,
    come_back,
    drained,
    energy,
    go_offline,
    start_ids,
    start_session,
)

OFFLINE_UNKNOWN = {"MeterValueSampleInterval": 10, "AllowOfflineTxForUnknownId": True}
POWER_W = 11000.0  # the simulated car's on-board charger (16 A x 3 x 230 V offered)


@pytest.fixture
def max_energy_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offer the optional MaxEnergyOnInvalidId key (9.1.14) even before settings.py
    defines it (a no-op once it does)."""
    real = settings_mod.core_keys

    def keys(number_of_connectors: int, **options: Any) -> list[KeyDef]:
        out = real(number_of_connectors, **options)
        if not any(k.name == "MaxEnergyOnInvalidId" for k in out):
            out.append(KeyDef("MaxEnergyOnInvalidId", "int", "0", min_value=0))
        return out

    monkeypatch.setattr(controller.app, "core_keys", keys)
    monkeypatch.setattr(controller.config, "core_keys", keys)


async def invalidated_offline_session(h: Any, csms: DevCsms) -> None:
    """Start offline with an unknown card; on reconnect the CSMS says it is Invalid."""
    await go_offline(h, csms)
    await start_session(h, csms, online=False)
    await h.advance(15)
    assert h.connector().hw.contactor.closed
    csms.invalid_id_tags = {CARD}
    await come_back(h, csms)
    await csms.wait_for(lambda f: f.action == "StartTransaction")
    await drained(h)


def statuses(h: Any) -> list[str]:
    return [
        f.payload["status"] for f in h.frames("StatusNotification") if f.payload["connectorId"] == 1
    ]


async def test_invalid_id_stops_with_deauthorized(csms: DevCsms, charger: Any) -> None:
    """StopTransactionOnInvalidId = true (the default): stop, reason DeAuthorized."""
    h = await charger(csms, ocpp=OFFLINE_UNKNOWN)
    await invalidated_offline_session(h, csms)
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    await drained(h)
    assert stop.payload["reason"] == "DeAuthorized"
    assert not h.connector().hw.contactor.closed
    assert h.app.store.open_transactions() == []
    (tx_id,) = start_ids(csms)
    assert_exactly_once_in_order(csms, tx_id=tx_id)


async def test_invalid_id_suspends_energy_until_unplug(csms: DevCsms, charger: Any) -> None:
    """StopTransactionOnInvalidId = false: energy stops (SuspendedEVSE), the transaction
    stays open - MeterValues go on with the same transactionId - until the EV leaves."""
    h = await charger(csms, ocpp={**OFFLINE_UNKNOWN, "StopTransactionOnInvalidId": False})
    await invalidated_offline_session(h, csms)
    await h.settle(lambda: not h.connector().hw.contactor.closed)
    c = h.connector()
    assert c.state.phase.value == "SuspendedEVSE"
    assert c.state.offered_current_a == 0.0
    assert c.tx_key is not None
    register = h.rig().meter.energy_wh
    await h.advance(60)
    await drained(h)
    assert h.rig().meter.energy_wh == register, "energy flowed after the invalidation"
    assert not c.hw.contactor.closed
    assert h.frames("StopTransaction") == []
    assert len(h.app.store.open_transactions()) == 1
    await h.settle(lambda: statuses(h)[-1:] == ["SuspendedEVSE"])
    assert "SuspendedEVSE" in statuses(h)

    # A restart of the status machinery (a tick, a new sample) never re-enables energy.
    await h.advance(30)
    assert not c.hw.contactor.closed

    h.unplug()
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    await drained(h)
    assert stop.payload["reason"] == "EVDisconnected"
    assert h.app.store.open_transactions() == []
    (tx_id,) = start_ids(csms)
    ok = assert_exactly_once_in_order(csms, tx_id=tx_id)
    assert [f.action for f in ok].count("MeterValues") >= 9
    assert stop.payload["meterStop"] == round(register)
    # The invalidation marker of the closed transaction is gone again.
    assert h.app.store.settings_with_prefix("tx.deauthorized.") == {}


async def test_invalid_id_driver_can_still_stop_with_card(csms: DevCsms, charger: Any) -> None:
    """The owner presenting the card ends the suspended transaction (3.5.4: the cable stays
    locked until then)."""
    h = await charger(csms, ocpp={**OFFLINE_UNKNOWN, "StopTransactionOnInvalidId": False})
    await invalidated_offline_session(h, csms)
    await h.settle(lambda: not h.connector().hw.contactor.closed)
    assert h.rig().lock.locked
    h.tap()
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    assert stop.payload["reason"] == "Local"
    assert stop.payload["idTag"] == CARD


@pytest.mark.usefixtures("max_energy_key")
async def test_max_energy_on_invalid_id_then_suspended(csms: DevCsms, charger: Any) -> None:
    """MaxEnergyOnInvalidId = 500: 500 Wh more after the invalidation, then SuspendedEVSE;
    the transaction stays open until the EV is unplugged."""
    h = await charger(
        csms,
        ocpp={
            **OFFLINE_UNKNOWN,
            "StopTransactionOnInvalidId": False,
            "MaxEnergyOnInvalidId": 500,
        },
    )
    await invalidated_offline_session(h, csms)
    c = h.connector()
    await h.settle(lambda: c.state.deauthorized)
    at_invalidation = h.rig().meter.energy_wh
    assert c.hw.contactor.closed, "the allowance is delivered"
    assert c.state.phase.value == "Charging"

    # 500 Wh at 11 kW take 164 s.
    await h.advance(150)
    assert c.hw.contactor.closed
    await h.advance(30)
    await h.settle(lambda: not c.hw.contactor.closed)
    assert c.state.phase.value == "SuspendedEVSE"
    delivered = h.rig().meter.energy_wh - at_invalidation
    # Checked once per tick (1 s): at most one tick of energy beyond the allowance.
    assert 500 <= delivered <= 500 + POWER_W / 3600 + 1, delivered

    await h.advance(60)
    assert h.rig().meter.energy_wh - at_invalidation == pytest.approx(delivered)
    assert h.frames("StopTransaction") == []
    h.unplug()
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    await drained(h)
    assert stop.payload["reason"] == "EVDisconnected"
    (tx_id,) = start_ids(csms)
    ok = assert_exactly_once_in_order(csms, tx_id=tx_id)
    assert stop.payload["meterStop"] >= energy(ok[-2])


@pytest.mark.usefixtures("max_energy_key")
async def test_max_energy_ignored_when_stop_on_invalid_id(csms: DevCsms, charger: Any) -> None:
    """MaxEnergyOnInvalidId only matters when the transaction is not stopped."""
    h = await charger(csms, ocpp={**OFFLINE_UNKNOWN, "MaxEnergyOnInvalidId": 500})
    await invalidated_offline_session(h, csms)
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    assert stop.payload["reason"] == "DeAuthorized"
    assert not h.connector().hw.contactor.closed
