"""Transaction-message durability end to end: in-process charger against the real dev CSMS.

Spec references (OCPP 1.6 edition 2 plus errata; the errata win):

* 3.7 Transaction-related messages: queue while offline, deliver in chronological order,
  one at a time; 3.7.1 retry failed messages TransactionMessageAttempts times, waiting
  TransactionMessageRetryInterval x (number of preceding transmissions).
* 3.5 / 3.5.1 / 3.5.4 offline authorization (Authorization Cache, AllowOfflineTxForUnknownId).
* 4.8 Start Transaction, 4.10 Stop Transaction, 7.36 Reason (Reboot / PowerLoss).
* Errata 3.18: transaction messages for a transaction that never got a transactionId
  carry transactionId = -1.
* OCPP-J 4.1.1 synchronicity (one CALL in flight), OCPP-J 4.1.4 with errata 3.1/3.7:
  a CALL message id is never reused by the same sender, on any connection.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from controller.dev.devcsms import CALLRESULT, DevCsms, Frame
from controller.storage.store import Store
from tests.conftest import CARD, STATION_ID

TX_ACTIONS = ("StartTransaction", "MeterValues", "StopTransaction")
MV10 = {"MeterValueSampleInterval": 10}


# --------------------------------------------------------------------------- helpers


def tx_frames(csms: DevCsms) -> list[Frame]:
    """Transaction-related CALLs as received on the wire (black-holed ones included)."""
    return [f for f in csms.received if f.action in TX_ACTIONS]


def answered(csms: DevCsms) -> list[Frame]:
    """Transaction-related CALLs the CSMS confirmed with a CALLRESULT, in arrival order."""
    ok = {r.unique_id for r in csms.sent_results if r.message_type == CALLRESULT}
    return [f for f in tx_frames(csms) if f.unique_id in ok]


def logical_key(f: Frame) -> tuple[str, str]:
    """What identifies one transaction message independent of its (re)transmission."""
    if f.action == "MeterValues":
        return f.action, f.payload["meterValue"][0]["timestamp"]
    return f.action, f.payload["timestamp"]


def start_ids(csms: DevCsms) -> list[int]:
    """transactionIds the CSMS handed out in StartTransaction.conf."""
    return [
        int(r.payload["transactionId"])
        for r in csms.sent_results
        if r.action == "StartTransaction" and r.message_type == CALLRESULT
    ]


def energy(f: Frame) -> int:
    for sv in f.payload["meterValue"][0]["sampledValue"]:
        if sv.get("measurand") == "Energy.Active.Import.Register":
            return int(sv["value"])
    raise AssertionError(f"no energy register in {f.payload}")


def assert_exactly_once_in_order(csms: DevCsms, *, tx_id: int) -> list[Frame]:
    """One transaction: Start, MeterValues..., Stop; each confirmed exactly once, in order."""
    ok = answered(csms)
    keys = [logical_key(f) for f in ok]
    assert len(keys) == len(set(keys)), f"a message was confirmed twice: {keys}"
    actions = [f.action for f in ok]
    assert actions[0] == "StartTransaction", actions
    assert actions[-1] == "StopTransaction", actions
    assert set(actions[1:-1]) <= {"MeterValues"}, actions
    assert actions.count("StartTransaction") == 1
    assert actions.count("StopTransaction") == 1
    for f in ok[1:]:
        assert f.payload["transactionId"] == tx_id, (f.action, f.payload)
    stamps = [k[1] for k in keys[1:-1]]
    assert stamps == sorted(stamps), "MeterValues out of chronological order"
    energies = [energy(f) for f in ok[1:-1]]
    assert energies == sorted(energies)
    if energies:
        assert ok[-1].payload["meterStop"] >= energies[-1]
    assert ok[-1].payload["meterStop"] >= ok[0].payload["meterStart"]
    return ok


def assert_unique_message_ids(csms: DevCsms) -> None:
    """OCPP-J 4.1.4 + errata 3.7: a CALL id is never used twice by the charge point."""
    ids = [f.unique_id for f in csms.received]
    dupes = {i for i in ids if ids.count(i) > 1}
    assert not dupes, f"message ids reused: {dupes}"


async def go_offline(h: Any, csms: DevCsms) -> None:
    """The CSMS drops the station and refuses it until ``come_back``."""
    csms.refuse_connections = True
    await csms.disconnect(STATION_ID)
    await h.settle(lambda: h.app.port.connection_state() != "accepted")


async def come_back(h: Any, csms: DevCsms, timeout_s: float = 10.0) -> None:
    """Accept again; move the manual clock so the reconnect back-off elapses."""
    csms.refuse_connections = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while h.app.port.connection_state() != "accepted":
        assert loop.time() < deadline, "charger did not reconnect"
        await h.advance(0.25, step_s=0.25)
        await asyncio.sleep(0.02)


async def drained(h: Any, timeout_s: float = 10.0) -> None:
    await h.settle(lambda: h.app.port.queued_messages() == 0, timeout_s=timeout_s)


async def start_session(h: Any, csms: DevCsms, *, online: bool = True) -> None:
    h.plug()
    await h.advance(2)
    h.tap()
    if online:
        await csms.wait_for(lambda f: f.action == "StartTransaction")
    await h.settle(lambda: h.connector().hw.contactor.closed)


# --------------------------------------------------------------------------- (a) CSMS away


async def test_csms_outage_mid_transaction_delivers_queue_once_in_order(
    csms: DevCsms, charger: Any
) -> None:
    """3.7: charging goes on offline; queued MeterValues and StopTransaction follow later.

    OCTT: TC_036_CS, TC_038_CS (1.6); TC_E_40_CS, TC_E_44_CS (2.0.1)
    """
    h = await charger(csms, ocpp=MV10)
    await start_session(h, csms)
    await h.advance(30)
    await drained(h)
    online_mv = len(h.frames("MeterValues"))
    assert online_mv == 3

    await go_offline(h, csms)
    await h.advance(60)  # reconnect attempts are refused meanwhile
    assert h.app.port.connection_state() != "accepted"
    assert h.connector().hw.contactor.closed, "charging must not stop when the CSMS is gone"
    assert h.app.port.queued_messages() == 6
    assert len(h.frames("MeterValues")) == online_mv

    h.tap()  # local stop while offline
    await h.settle(lambda: h.app.port.queued_messages() == 7)
    assert not h.connector().hw.contactor.closed
    assert h.frames("StopTransaction") == []

    await come_back(h, csms)
    await drained(h)
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    (tx_id,) = start_ids(csms)
    ok = assert_exactly_once_in_order(csms, tx_id=tx_id)
    assert [f.action for f in ok].count("MeterValues") == 9
    # Nothing was sent twice at all (no outstanding call when the link dropped).
    assert len(tx_frames(csms)) == len(ok)
    mv_stamps = [logical_key(f)[1] for f in ok if f.action == "MeterValues"]
    assert len(set(mv_stamps)) == 9
    assert stop.payload["reason"] == "Local"
    assert stop.payload["idTag"] == CARD
    assert csms.max_outstanding_calls == 1
    assert_unique_message_ids(csms)


# --------------------------------------------------------------------------- (b) offline start


async def test_offline_start_unknown_id_gets_transaction_id_on_reconnect(
    csms: DevCsms, charger: Any
) -> None:
    """3.5.4 AllowOfflineTxForUnknownId: the id from StartTransaction.conf is mapped later.

    OCTT: TC_037_1_CS (1.6); TC_C_26_CS (2.0.1)
    """
    h = await charger(csms, ocpp={**MV10, "AllowOfflineTxForUnknownId": True})
    await go_offline(h, csms)
    await start_session(h, csms, online=False)
    await h.advance(35)
    assert h.app.port.queued_messages() == 4  # Start + 3 MeterValues
    assert tx_frames(csms) == []

    await come_back(h, csms)
    await drained(h)
    # Still charging: the next MeterValues goes out live with the mapped id.
    await h.advance(10)
    await drained(h)
    h.tap()
    await csms.wait_for(lambda f: f.action == "StopTransaction")
    await drained(h)

    (tx_id,) = start_ids(csms)
    ok = assert_exactly_once_in_order(csms, tx_id=tx_id)
    assert all(f.payload.get("transactionId") != -1 for f in ok)
    assert [f.action for f in ok].count("MeterValues") >= 4
    assert csms.max_outstanding_calls == 1
    assert_unique_message_ids(csms)


async def test_offline_start_with_cached_card(csms: DevCsms, charger: Any) -> None:
    """3.5.1: a card accepted online (Authorize.conf) is cached; LocalAuthorizeOffline uses it.

    AllowOfflineTxForUnknownId stays false, so only the cache can authorize the card.
    OCTT: TC_037_1_CS, TC_039_CS (1.6); TC_E_43_CS (2.0.1)
    """
    h = await charger(csms, ocpp={**MV10, "LocalAuthorizeOffline": True})
    # First session online fills the cache via Authorize.conf.
    await start_session(h, csms)
    assert len(h.frames("Authorize")) == 1
    h.tap()
    await csms.wait_for(lambda f: f.action == "StopTransaction")
    h.unplug()
    await h.advance(2)
    await drained(h)
    assert h.app.store.cache_get(CARD)[0] == "Accepted"
    first_tx = start_ids(csms)[0]
    csms.clear_records()

    await go_offline(h, csms)
    await start_session(h, csms, online=False)
    await h.advance(25)
    h.tap()
    await h.settle(lambda: h.app.port.queued_messages() == 4)  # Start, 2 x MV, Stop
    assert h.frames("Authorize") == []

    await come_back(h, csms)
    await drained(h)
    (tx_id,) = start_ids(csms)
    assert tx_id != first_tx
    ok = assert_exactly_once_in_order(csms, tx_id=tx_id)
    assert [f.action for f in ok] == [
        "StartTransaction",
        "MeterValues",
        "MeterValues",
        "StopTransaction",
    ]
    assert csms.max_outstanding_calls == 1


async def test_offline_unknown_card_refused_without_allow_offline(
    csms: DevCsms, charger: Any
) -> None:
    """3.5.4: with AllowOfflineTxForUnknownId false an unknown card does not start anything."""
    h = await charger(csms, ocpp=MV10)
    await go_offline(h, csms)
    h.plug()
    await h.advance(2)
    h.tap("DEADBEEF")
    await h.advance(5)
    assert not h.connector().hw.contactor.closed
    assert h.app.port.queued_messages() == 0
    assert h.app.store.transactions() == []


# --------------------------------------------------------------------------- (c) CALLERROR


@pytest.mark.parametrize("action", TX_ACTIONS)
async def test_callerror_once_is_retried_and_confirmed_once(
    csms: DevCsms, charger: Any, action: str
) -> None:
    """3.7.1: a CALLERROR is a failure to process; the message is resent after
    TransactionMessageRetryInterval and the transaction is still delivered exactly once.

    OCTT: TC_E_51_CS (2.0.1)
    """
    h = await charger(csms, ocpp=MV10)
    csms.error_actions_once = {action: "InternalError"}
    await start_session(h, csms)
    await h.advance(21)
    h.tap()
    await h.settle(lambda: not h.connector().hw.contactor.closed)
    # Default TransactionMessageRetryInterval is 30 s (x1 after the first failure).
    for _ in range(8):
        await h.advance(5)
        if h.app.port.queued_messages() == 0:
            break
    await drained(h)
    assert action not in csms.error_actions_once, "the error was never injected"

    errors = [r for r in csms.sent_results if r.message_type != CALLRESULT]
    assert [(r.action, r.error_code) for r in errors] == [(action, "InternalError")]
    failed = [f for f in tx_frames(csms) if f.unique_id == errors[0].unique_id]
    assert len(failed) == 1
    resent = [
        f
        for f in tx_frames(csms)
        if logical_key(f) == logical_key(failed[0]) and f is not failed[0]
    ]
    assert len(resent) == 1, "resent exactly once"
    assert resent[0].unique_id != failed[0].unique_id
    # The retry waited TransactionMessageRetryInterval (30 s of charger time) - the
    # resend carries the same payload (apart from the transactionId filled in at send).
    strip = {"transactionId"}
    assert {k: v for k, v in resent[0].payload.items() if k not in strip} == {
        k: v for k, v in failed[0].payload.items() if k not in strip
    }

    (tx_id,) = start_ids(csms)  # exactly one accepted StartTransaction
    assert_exactly_once_in_order(csms, tx_id=tx_id)
    assert csms.max_outstanding_calls == 1
    assert_unique_message_ids(csms)


async def test_start_dropped_after_attempts_then_transaction_id_minus_one(
    csms: DevCsms, charger: Any
) -> None:
    """3.7.1 + errata 3.18: after TransactionMessageAttempts failures the StartTransaction
    is discarded, and the transaction's other messages carry transactionId -1.

    OCTT: TC_E_50_CS (2.0.1)
    """
    h = await charger(
        csms,
        ocpp={
            **MV10,
            "TransactionMessageAttempts": 2,
            "TransactionMessageRetryInterval": 5,
        },
    )
    csms.error_actions = {"StartTransaction": "InternalError"}
    await start_session(h, csms)
    await h.advance(6)  # retry after 5 s x 1, fails again -> dropped
    await h.settle(lambda: len(h.frames("StartTransaction")) == 2)
    csms.error_actions = {}
    await h.advance(15)
    h.tap()
    await csms.wait_for(lambda f: f.action == "StopTransaction")
    await drained(h)

    assert len(h.frames("StartTransaction")) == 2  # not a third time
    assert start_ids(csms) == []
    later = [f for f in answered(csms) if f.action != "StartTransaction"]
    assert [f.action for f in later][-1] == "StopTransaction"
    assert len(later) >= 3
    assert all(f.payload["transactionId"] == -1 for f in later)


# --------------------------------------------------------------------------- (d) black hole


async def test_black_hole_timeout_resends_with_new_message_id(csms: DevCsms, charger: Any) -> None:
    """OCPP-J 4.1.1/4.1.4: no answer within response_timeout_s (2 s real time here) is a
    failure; the message is resent later with a new message id, and only once confirmed.

    OCTT: TC_E_42_CS (2.0.1)
    """
    h = await charger(csms, ocpp=MV10)
    await start_session(h, csms)
    await drained(h)
    csms.black_hole = True
    await h.advance(10)
    lost = await csms.wait_for(lambda f: f.action == "MeterValues" and f.black_holed)
    # After the (real time) response timeout the message waits for its resend; a timeout is
    # not a CALLERROR, so it does not count as a failed attempt (OCPP-J errata 3.3).
    await h.settle(lambda: h.app.adapter.tx_message_timeouts >= 1, timeout_s=5)
    assert h.app.store.outbox_head().attempts == 0
    assert h.app.port.queued_messages() == 1
    csms.black_hole = False
    await h.advance(30)  # TransactionMessageRetryInterval x 1
    await drained(h)
    h.tap()
    await csms.wait_for(lambda f: f.action == "StopTransaction")
    await drained(h)

    again = [
        f
        for f in h.frames("MeterValues")
        if logical_key(f) == logical_key(lost) and not f.black_holed
    ]
    assert len(again) == 1
    assert again[0].unique_id != lost.unique_id
    assert again[0].payload == lost.payload
    (tx_id,) = start_ids(csms)
    ok = assert_exactly_once_in_order(csms, tx_id=tx_id)
    assert [f.action for f in ok].count("MeterValues") == 4
    assert csms.max_outstanding_calls == 1
    assert_unique_message_ids(csms)


async def test_black_hole_start_transaction_not_duplicated(csms: DevCsms, charger: Any) -> None:
    """A StartTransaction that timed out is sent again; the CSMS only confirms one."""
    h = await charger(csms, ocpp={**MV10, "LocalPreAuthorize": True})
    # Cache the card first (Authorize.conf), so the black-holed phase needs no Authorize.
    h.tap()
    await csms.wait_for(lambda f: f.action == "Authorize")
    h.tap()  # cancel the pending authorization (second tap before plugging in)
    await h.advance(1)
    csms.black_hole = True
    await start_session(h, csms, online=False)
    lost = await csms.wait_for(lambda f: f.action == "StartTransaction" and f.black_holed)
    await h.settle(lambda: h.app.adapter.tx_message_timeouts >= 1, timeout_s=5)
    csms.black_hole = False
    await h.advance(30)
    await drained(h)
    h.tap()
    await csms.wait_for(lambda f: f.action == "StopTransaction")
    await drained(h)
    starts = h.frames("StartTransaction")
    assert len(starts) == 2
    assert starts[1].unique_id != lost.unique_id
    (tx_id,) = start_ids(csms)
    assert_exactly_once_in_order(csms, tx_id=tx_id)
    assert_unique_message_ids(csms)


# --------------------------------------------------------------------------- (e) restart


def _open_tx(tmp_path: Path) -> Any:
    store = Store(tmp_path / "evsed.db")
    try:
        (tx,) = store.open_transactions()
        return tx
    finally:
        store.close()


@pytest.mark.parametrize(("boot_id", "reason"), [("boot-1", "Reboot"), ("boot-2", "PowerLoss")])
async def test_crash_recovery_stops_with_last_persisted_reading(
    csms: DevCsms, charger: Any, tmp_path: Path, boot_id: str, reason: str
) -> None:
    """4.10 / 7.36: a transaction left open by a crash is stopped at the next start, with
    reason Reboot (same OS boot) or PowerLoss (different boot) and the last stored reading.

    OCTT: TC_032_2_CS (1.6, the PowerLoss case)
    """
    h1 = await charger(csms, ocpp=MV10, boot_id="boot-1")
    await start_session(h1, csms)
    await h1.advance(35)
    await drained(h1)
    mvs = h1.frames("MeterValues")
    assert len(mvs) == 3
    await h1.advance(4)  # energy flows after the last sample: not persisted, not billed
    await h1.app.stop(reason=None)  # a crash: the transaction stays open
    assert h1.frames("StopTransaction") == []

    tx = _open_tx(tmp_path)
    assert tx.last_meter_wh == energy(mvs[-1])
    assert tx.last_meter_at == mvs[-1].payload["meterValue"][0]["timestamp"]
    assert tx.boot_id == "boot-1"

    h2 = await charger(csms, ocpp=MV10, boot_id=boot_id)
    stop = await csms.wait_for(lambda f: f.action == "StopTransaction")
    await drained(h2)
    assert stop.payload["reason"] == reason
    assert stop.payload["meterStop"] == tx.last_meter_wh
    assert stop.payload["timestamp"] == tx.last_meter_at
    assert "idTag" not in stop.payload
    (tx_id,) = start_ids(csms)
    assert stop.payload["transactionId"] == tx_id
    assert_exactly_once_in_order(csms, tx_id=tx_id)
    assert h2.app.store.open_transactions() == []

    # A third start finds nothing to recover: never a second StopTransaction.
    await h2.app.stop(reason=None)
    h3 = await charger(csms, ocpp=MV10, boot_id=boot_id)
    await h3.advance(5)
    await drained(h3)
    assert len(h3.frames("StopTransaction")) == 1
    assert len(h3.frames("StartTransaction")) == 1
    assert csms.max_outstanding_calls == 1
    assert_unique_message_ids(csms)


async def test_crash_while_offline_recovers_whole_transaction(
    csms: DevCsms, charger: Any, tmp_path: Path
) -> None:
    """Crash before StartTransaction was ever delivered: after the restart Start, the queued
    MeterValues and the recovery StopTransaction go out in order with the mapped id."""
    h1 = await charger(csms, ocpp={**MV10, "AllowOfflineTxForUnknownId": True})
    await go_offline(h1, csms)
    await start_session(h1, csms, online=False)
    await h1.advance(25)
    assert h1.app.port.queued_messages() == 3
    await h1.app.stop(reason=None)
    tx = _open_tx(tmp_path)
    assert tx.shown_tx_id() is None

    csms.refuse_connections = False
    h2 = await charger(csms, ocpp=MV10, boot_id="boot-1")
    await csms.wait_for(lambda f: f.action == "StopTransaction")
    await drained(h2)
    (tx_id,) = start_ids(csms)
    ok = assert_exactly_once_in_order(csms, tx_id=tx_id)
    assert [f.action for f in ok] == [
        "StartTransaction",
        "MeterValues",
        "MeterValues",
        "StopTransaction",
    ]
    assert ok[-1].payload["reason"] == "Reboot"
    assert ok[-1].payload["meterStop"] == energy(ok[-2]) == tx.last_meter_wh
    # BootNotification of the new process comes before any transaction message.
    boots = [i for i, f in enumerate(csms.received) if f.action == "BootNotification"]
    first_tx = csms.received.index(ok[0])
    assert boots[0] < first_tx
    assert_unique_message_ids(csms)


async def test_crash_after_queued_local_stop_sends_that_stop_only(
    csms: DevCsms, charger: Any
) -> None:
    """A StopTransaction queued before the crash is delivered after it; recovery does not
    add a second one (the transaction is already closed in the store)."""
    h1 = await charger(csms, ocpp=MV10)
    await start_session(h1, csms)
    await h1.advance(15)
    await drained(h1)
    await go_offline(h1, csms)
    await h1.advance(10)
    h1.tap()
    await h1.settle(lambda: h1.app.port.queued_messages() == 2)  # MV + Stop
    await h1.app.stop(reason=None)

    csms.refuse_connections = False
    h2 = await charger(csms, ocpp=MV10, boot_id="boot-1")
    await csms.wait_for(lambda f: f.action == "StopTransaction")
    await drained(h2)
    await h2.advance(5)
    stops = h2.frames("StopTransaction")
    assert len(stops) == 1
    assert stops[0].payload["reason"] == "Local"
    (tx_id,) = start_ids(csms)
    assert_exactly_once_in_order(csms, tx_id=tx_id)


# --------------------------------------------------------------------------- (f) message ids


async def test_message_ids_unique_across_restarts(csms: DevCsms, charger: Any) -> None:
    """OCPP-J errata 3.7: ids differ from all ids used before, on any connection."""
    for boot in ("boot-1", "boot-1", "boot-2"):
        h = await charger(csms, ocpp=MV10, boot_id=boot)
        await start_session(h, csms)
        await h.advance(15)
        await drained(h)
        await h.app.stop(reason=None)
    h = await charger(csms, ocpp=MV10, boot_id="boot-2")
    await h.advance(2)
    await drained(h)
    assert len(h.frames("BootNotification")) == 4
    assert len(h.frames("StopTransaction")) == 3
    assert len(csms.received) > 20
    assert_unique_message_ids(csms)


async def test_unanswered_stop_transaction_is_never_discarded(csms: DevCsms, charger: Any) -> None:
    """3.7.1 + OCPP-J errata 3.3: a CSMS that does not answer reports no failure to process,
    so a timed-out StopTransaction must stay queued (no billing data lost)."""
    h = await charger(
        csms,
        ocpp={**MV10, "TransactionMessageAttempts": 1, "TransactionMessageRetryInterval": 1},
    )
    await start_session(h, csms)
    await drained(h)
    csms.black_hole = True
    h.tap()
    await csms.wait_for(lambda f: f.action == "StopTransaction" and f.black_holed)
    # Wait (real time) for the 2 s response timeout to be handled either way.
    await h.settle(lambda: h.app.adapter.tx_message_timeouts >= 1, timeout_s=5)
    csms.black_hole = False
    for _ in range(5):
        await h.advance(1)
    await drained(h)
    stops = [f for f in answered(csms) if f.action == "StopTransaction"]
    assert len(stops) == 1, "the StopTransaction was discarded after a timeout"


async def test_status_light_shows_offline_while_the_csms_is_unreachable(
    csms: DevCsms, charger: Any
) -> None:
    """An idle connector's light tells the user that only local cards work (the CSMS is
    away); a running session keeps showing "charging"."""
    from hal.base import IndicatorState

    h = await charger(csms)
    light = h.connector().hw.indicator
    await h.settle(lambda: light.state is IndicatorState.AVAILABLE)
    await go_offline(h, csms)
    await h.settle(lambda: light.state is IndicatorState.OFFLINE)
    await come_back(h, csms)
    await h.settle(lambda: light.state is IndicatorState.AVAILABLE)

    await start_session(h, csms)
    await h.settle(lambda: light.state is IndicatorState.CHARGING)
    await go_offline(h, csms)
    await h.advance(5)
    assert light.state is IndicatorState.CHARGING


async def test_standalone_status_light_never_shows_offline(charger: Any) -> None:
    from hal.base import IndicatorState

    h = await charger(None)
    light = h.connector().hw.indicator
    await h.settle(lambda: light.state is IndicatorState.AVAILABLE)
    await h.advance(5)
    assert IndicatorState.OFFLINE not in light.history
