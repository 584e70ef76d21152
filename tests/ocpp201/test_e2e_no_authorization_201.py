"""OCPP 2.0.1 AuthCtrlr.Enabled false over a real WebSocket against the dev CSMS: a car
plugged in charges without a card, the transaction's idToken empty with type NoAuthorization
(AuthCtrlr.Enabled in Part 2's referenced variables, C02.FR.01); its idTokenInfo is never
cached (C02.FR.03); a card presented first keeps its own idToken."""

from __future__ import annotations

from typing import Any

from controller.dev.devcsms import DevCsms
from tests.conftest import CARD
from tests.ocpp201.test_e2e_authorization import authorizes, tap_and_wait
from tests.ocpp201.test_e2e_boot import accepted, client, start, wait_status
from tests.ocpp201.test_e2e_transactions import answered_events, assert_one_transaction, events

DISABLED = {"AuthCtrlr": {"Enabled": False}}  # first-boot value ([ocpp.AuthCtrlr])


async def test_plug_in_charges_with_no_authorization(charger: Any, csms: DevCsms) -> None:
    """Enabled false: plugging in starts the transaction (triggerReason CablePluggedIn,
    idToken "" of type NoAuthorization, C02.FR.01), no AuthorizeRequest; unplugging ends
    it; nothing cached for the empty token (C02.FR.03). Enabled true again (SetVariables
    would do the same): a cable alone starts nothing."""
    h = await start(charger, csms, ocpp=DISABLED)
    await accepted(h)
    await wait_status(h, 1, "Available")
    h.plug()
    await h.advance(1)
    await h.settle(lambda: h.connector().hw.contactor.closed)
    await h.settle(lambda: len(answered_events(csms)) >= 1)
    started = events(h)[0]
    assert started["eventType"] == "Started"
    assert started["triggerReason"] == "CablePluggedIn"
    assert started["idToken"] == {"idToken": "", "type": "NoAuthorization"}
    assert "remoteStartId" not in started["transactionInfo"]
    assert authorizes(h) == []
    h.unplug()
    await h.settle(lambda: answered_events(csms)[-1]["eventType"] == "Ended")
    assert_one_transaction(answered_events(csms))
    assert h.app.store.cache_count() == 0

    model = client(h).device_model
    assert model is not None
    model.set_internal("AuthCtrlr", "Enabled", "true")
    h.plug()
    await h.advance(5)
    assert not h.connector().hw.contactor.closed
    assert len({e["transactionInfo"]["transactionId"] for e in events(h)}) == 1


async def test_card_first_keeps_its_id_token(charger: Any, csms: DevCsms) -> None:
    """Enabled false with a card presented before the cable: one transaction, with the
    card's idToken (AuthCtrlr.Enabled: "If an idToken was provided, then it will be put in
    the idToken field"), not a second NoAuthorization one."""
    h = await start(charger, csms, ocpp=DISABLED)
    await accepted(h)
    await wait_status(h, 1, "Available")
    await tap_and_wait(h)
    h.plug()
    await h.advance(1)
    await h.settle(lambda: h.connector().hw.contactor.closed)
    await h.settle(lambda: len(answered_events(csms)) >= 1)
    await h.advance(3)
    assert events(h)[0]["idToken"] == {"idToken": CARD, "type": "ISO14443"}
    assert {e["eventType"] for e in events(h)} <= {"Started", "Updated"}
    assert len({e["transactionInfo"]["transactionId"] for e in events(h)}) == 1
