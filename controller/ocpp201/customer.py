"""OCPP 2.0.1 customer information (N09 get, N10 clear): what the charger keeps about an
idToken (authorization cache entry, local list entry, transactions, reservations), reported
as NotifyCustomerInformation pages and, on request, cleared."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from controller.core.timestamps import iso_utc
from controller.csms.rpc import CallError, CallTimeout, ConnectionLost
from controller.ocpp201.authorization import token_key

if TYPE_CHECKING:
    from controller.ocpp201.client import Ocpp201Client

LOG = logging.getLogger(__name__)

# NotifyCustomerInformationRequest.data is at most 512 characters per message.
PAGE_CHARS = 512
# What a cleared transaction record shows instead of the idToken (its energy, times and ids
# stay: they are the operator's billing record, not the customer's data).
CLEARED = "(cleared)"
_REFERENCES = ("idToken", "customerCertificate", "customerIdentifier")


async def customer_information(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """N09/N10: Invalid without exactly one customer reference (N09.FR.09), Rejected when
    neither report nor clear is asked (N09.FR.07, N10.FR.07), else Accepted and the
    NotifyCustomerInformation pages follow the answer (N09.FR.05/06, N10.FR.03/04/06)."""
    given = [name for name in _REFERENCES if name in payload]
    if len(given) != 1:
        return {"status": "Invalid", "statusInfo": {"reasonCode": "InvalidValue"}}
    report, clear = bool(payload["report"]), bool(payload["clear"])
    if not report and not clear:
        return {"status": "Rejected", "statusInfo": {"reasonCode": "InvalidValue"}}
    lines: list[str] = []
    if "idToken" in payload:
        lines = _about_token(client, payload["idToken"])
        if clear and lines:
            _clear_token(client, payload["idToken"])
    # evsed keeps no customer certificates (no ISO 15118) and no customer identifiers
    # beyond the idTokens: nothing is stored about those references.
    if not lines:
        text = "No data found for this customer."
    elif report:
        text = "\n".join(lines)
        if clear:
            text = "Cleared (the local authorization list is kept, N10.FR.02):\n" + text
    else:
        text = "Customer data cleared (the local authorization list is kept, N10.FR.02)."
    client.spawn(_notify(client, int(payload["requestId"]), text), name="customer-info")
    return {"status": "Accepted"}


def _about_token(client: Ocpp201Client, id_token: dict[str, Any]) -> list[str]:
    key = token_key(id_token)
    raw = str(id_token.get("idToken", ""))
    store = client.store
    lines = []
    cached = store.cache_get(key)
    if cached is not None:
        status, group, expiry = cached
        lines.append(f"Authorization cache: {status}, group {group or '-'}, expiry {expiry or '-'}")
    listed = store.local_list_get(key)
    if listed is not None:
        status, group, expiry = listed
        lines.append(
            f"Local authorization list: {status}, group {group or '-'}, expiry {expiry or '-'}"
        )
    for tx in store.customer_transactions(raw):
        energy_wh = (tx.meter_stop_wh if tx.meter_stop_wh is not None else tx.last_meter_wh) - (
            tx.meter_start_wh
        )
        lines.append(
            f"Transaction {tx.tx_id}: EVSE {tx.connector_id}, {tx.started_at} to "
            f"{tx.stopped_at or 'ongoing'}, {energy_wh} Wh"
            + (f", stopped {tx.stop_reason}" if tx.stop_reason else "")
        )
    for reservation in client.station.current_reservations():
        if reservation.id_tag.casefold() == raw.casefold():
            lines.append(
                f"Reservation {reservation.reservation_id}: until {iso_utc(reservation.expiry)}"
            )
    return lines


def _clear_token(client: Ocpp201Client, id_token: dict[str, Any]) -> None:
    """N10.FR.03/06: the cache entry and the idToken of ended transactions go; the local
    list stays (the CSMS manages it, N10.FR.02), a running transaction keeps its idToken
    until it ends (it is needed to stop it), and a reservation stays until used or ended."""
    key = token_key(id_token)
    raw = str(id_token.get("idToken", ""))
    client.store.cache_delete(key)
    changed = client.store.forget_customer_transactions(raw, CLEARED)
    LOG.warning(
        "customer data of an idToken cleared: cache entry, %d transaction record(s)", changed
    )


async def _notify(client: Ocpp201Client, request_id: int, text: str) -> None:
    """The text in pages of at most PAGE_CHARS characters, seqNo from 0, tbc on all but the
    last (NotifyCustomerInformationRequest)."""
    pages = [text[i : i + PAGE_CHARS] for i in range(0, len(text), PAGE_CHARS)] or [""]
    generated_at = iso_utc(client.clock.utc_now())
    for seq_no, page in enumerate(pages):
        payload = {
            "data": page,
            "tbc": seq_no < len(pages) - 1,
            "seqNo": seq_no,
            "generatedAt": generated_at,
            "requestId": request_id,
        }
        try:
            await client.call("NotifyCustomerInformation", payload)
        except (CallError, CallTimeout, ConnectionLost) as exc:
            LOG.warning(
                "NotifyCustomerInformation %d/%d not delivered: %s", seq_no, len(pages), exc
            )
            return


ROUTES = {"CustomerInformation": customer_information}
