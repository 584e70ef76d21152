"""OCPP 2.0.1 idTokenInfo.evseId over a real WebSocket against the dev CSMS (C01.FR.19-21):
an IdToken the CSMS accepts for some EVSEs only charges there and nowhere else, whether the
limit comes in the AuthorizeResponse or in a TransactionEventResponse; such a token is not
cached (the cache keeps no evseId)."""

from __future__ import annotations

from typing import Any

from controller.dev.devcsms import DevCsms
from tests.conftest import CARD
from tests.ocpp201.test_e2e_authorization import authorizes, cached
from tests.ocpp201.test_e2e_boot import accepted, start, wait_status
from tests.ocpp201.test_e2e_transactions import answered_events, assert_one_transaction, events


async def test_authorize_limited_to_another_evse_does_not_charge_here(
    charger: Any, csms: DevCsms
) -> None:
    """C01.FR.20/21: Authorize answers Accepted with evseId [2]. At EVSE 1 the card starts
    nothing (no transaction, contactor open); at EVSE 2 it charges. C01.FR.19: the limit
    gone (no evseId), it charges at EVSE 1 again. A limited answer is not cached."""
    csms.id_token_infos[CARD] = {"status": "Accepted", "evseId": [2]}
    h = await start(charger, csms, connectors=2)
    await accepted(h)
    await wait_status(h, 1, "Available")
    await wait_status(h, 2, "Available")

    h.plug(1)
    await h.advance(1)
    h.tap()
    await h.settle(lambda: len(authorizes(h)) == 1)
    await h.settle(lambda: h.connector(1).state.authorizing is None)
    await h.advance(2)
    assert not h.connector(1).hw.contactor.closed
    assert h.connector(1).tx_key is None
    assert events(h) == []
    assert cached(h) is None
    h.unplug(1)
    await h.advance(1)

    h.plug(2)
    await h.advance(1)
    h.tap()
    await h.settle(lambda: h.connector(2).hw.contactor.closed)
    await h.settle(lambda: len(answered_events(csms)) >= 1)
    assert events(h)[0]["evse"]["id"] == 2
    assert cached(h) is None
    h.tap()  # the same card stops it
    await h.settle(lambda: not h.connector(2).hw.contactor.closed)
    h.unplug(2)
    await h.settle(lambda: answered_events(csms)[-1]["eventType"] == "Ended")

    del csms.id_token_infos[CARD]  # accepted at every EVSE again (C01.FR.19)
    h.plug(1)
    await h.advance(1)
    h.tap()
    await h.settle(lambda: h.connector(1).hw.contactor.closed)
    assert cached(h) is not None and cached(h)[0] == "Accepted"  # type: ignore[index]


async def test_transaction_event_answer_limited_to_another_evse_deauthorizes(
    charger: Any, csms: DevCsms
) -> None:
    """E05 / C01.FR.21: the Started event of a transaction on EVSE 1 is answered Accepted
    with evseId [2] (after a CALLERROR and a retry, E13): the transaction is deauthorized
    and ends Deauthorized / DeAuthorized (StopTxOnInvalidId true), as for a token that is
    not Accepted."""
    h = await start(charger, csms, connectors=2)
    await accepted(h)
    await wait_status(h, 1, "Available")
    csms.error_actions_once["TransactionEvent"] = "InternalError"
    h.plug(1)
    await h.advance(1)
    h.tap()
    await h.settle(lambda: len(events(h)) == 1)
    await h.settle(lambda: any(r.error_code == "InternalError" for r in csms.sent_results))
    assert h.connector(1).hw.contactor.closed
    csms.id_token_infos[CARD] = {"status": "Accepted", "evseId": [2]}
    await h.advance(31)  # MessageAttemptInterval[TransactionEvent]
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended", timeout_s=10)
    sent = answered_events(csms)
    assert_one_transaction(sent)
    ended = sent[-1]
    assert ended["triggerReason"] == "Deauthorized"
    assert ended["transactionInfo"]["stoppedReason"] == "DeAuthorized"
    assert not h.connector(1).hw.contactor.closed
