"""OCPP 2.0.1 customer information over a real WebSocket (N09, N10): what the charger keeps
about an idToken, reported as NotifyCustomerInformation pages and cleared on request."""

from __future__ import annotations

from typing import Any

from controller.dev.devcsms import DevCsms
from controller.ocpp201 import rpc as rpc201
from controller.ocpp201.customer import CLEARED
from tests.conftest import CARD, STATION_ID, Harness
from tests.ocpp201.test_e2e_boot import accepted, start, wait_status
from tests.ocpp201.test_e2e_transactions import events

TOKEN = {"idToken": CARD, "type": "ISO14443"}


async def ask(csms: DevCsms, payload: dict[str, Any]) -> dict[str, Any]:
    frame = await csms.call_raw(STATION_ID, "CustomerInformation", payload)
    assert frame[0] == 3, frame
    rpc201.validate(3, "CustomerInformation", frame[2])
    answer: dict[str, Any] = frame[2]
    return answer


async def report_of(h: Harness, request_id: int) -> str:
    def pages() -> list[dict[str, Any]]:
        return [
            f.payload
            for f in h.frames("NotifyCustomerInformation")
            if f.payload["requestId"] == request_id
        ]

    await h.settle(lambda: bool(pages()) and not pages()[-1]["tbc"])
    sent = pages()
    assert [p["seqNo"] for p in sent] == list(range(len(sent)))
    for payload in sent:
        rpc201.validate(2, "NotifyCustomerInformation", payload)
    return "".join(p["data"] for p in sent)


async def session(h: Harness) -> None:
    h.plug()
    await h.advance(1)
    h.tap()
    await h.settle(lambda: len(events(h)) >= 1)
    await h.advance(30)
    h.tap()
    await h.settle(lambda: events(h)[-1]["eventType"] == "Ended")


async def test_report_then_clear_then_nothing(charger: Any, csms: DevCsms) -> None:
    """TC_N_27_CS (N09.FR.02/05): the cache entry and the transaction of the idToken are
    reported; TC_N_32_CS (N10.FR.06): cleared without a report, one message says so; the
    transaction record keeps its energy but not the idToken; TC_N_28_CS (N09.FR.06): a
    report now finds nothing."""
    h = await start(charger, csms)
    await accepted(h)
    await wait_status(h, 1, "Available")
    await session(h)
    assert await ask(csms, {"requestId": 1, "report": True, "clear": False, "idToken": TOKEN}) == {
        "status": "Accepted"
    }
    text = await report_of(h, 1)
    assert "Authorization cache: Accepted" in text
    tx_id = events(h)[0]["transactionInfo"]["transactionId"]
    assert f"Transaction {tx_id}" in text
    assert await ask(csms, {"requestId": 2, "report": False, "clear": True, "idToken": TOKEN}) == {
        "status": "Accepted"
    }
    assert "cleared" in await report_of(h, 2)
    store = h.app.store
    assert store is not None
    assert store.cache_get(CARD) is None
    (record,) = store.transactions(limit=5)
    assert record.id_tag == CLEARED and record.meter_stop_wh is not None
    assert await ask(csms, {"requestId": 3, "report": True, "clear": False, "idToken": TOKEN}) == {
        "status": "Accepted"
    }
    assert "No data found" in await report_of(h, 3)


async def test_clear_and_report_and_unknown_references(charger: Any, csms: DevCsms) -> None:
    """TC_N_30_CS (N10.FR.03): clear and report sends the cleared data; TC_N_31_CS /
    TC_N_62_CS / TC_N_63_CS (N10.FR.04): no data for an unknown token, a customerIdentifier
    or a customerCertificate (evsed keeps none): one message saying so."""
    h = await start(charger, csms)
    await accepted(h)
    await wait_status(h, 1, "Available")
    await session(h)
    both = {"requestId": 4, "report": True, "clear": True, "idToken": TOKEN}
    assert await ask(csms, both) == {"status": "Accepted"}
    text = await report_of(h, 4)
    assert text.startswith("Cleared") and "Transaction" in text
    unknown = {"idToken": "NOBODY", "type": "ISO14443"}
    certificate = {
        "hashAlgorithm": "SHA256",
        "issuerNameHash": "a" * 64,
        "issuerKeyHash": "b" * 64,
        "serialNumber": "01",
    }
    for request_id, reference in (
        (5, {"idToken": unknown}),
        (6, {"customerIdentifier": "customer-42"}),
        (7, {"customerCertificate": certificate}),
    ):
        payload = {"requestId": request_id, "report": True, "clear": True, **reference}
        assert await ask(csms, payload) == {"status": "Accepted"}
        assert "No data found" in await report_of(h, request_id)


async def test_invalid_and_rejected_requests(charger: Any, csms: DevCsms) -> None:
    """TC_N_33_CS / N09.FR.09: no reference or two references: Invalid; N09.FR.07 /
    N10.FR.07: neither report nor clear: Rejected; nothing is sent for them."""
    h = await start(charger, csms)
    await accepted(h)
    none = {"requestId": 8, "report": True, "clear": False}
    assert (await ask(csms, none))["status"] == "Invalid"
    two = {**none, "idToken": TOKEN, "customerIdentifier": "x"}
    assert (await ask(csms, two))["status"] == "Invalid"
    idle = {"requestId": 9, "report": False, "clear": False, "idToken": TOKEN}
    assert (await ask(csms, idle))["status"] == "Rejected"
    await h.advance(1)
    assert h.frames("NotifyCustomerInformation") == []
