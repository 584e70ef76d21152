"""OCPP 2.0.1 GetTransactionStatus (E14): whether a transaction is ongoing and whether
transaction messages are still queued."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller.ocpp201.client import Ocpp201Client


async def get_transaction_status(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """E14.FR.01-08: by transactionId, ongoingIndicator and messagesInQueue of that
    transaction; without one, only whether any transaction message is queued."""
    store, backend = client.store, client.backend
    tx_id = payload.get("transactionId")
    if tx_id is None:  # E14.FR.06-08
        return {"messagesInQueue": store.tx_messages_queued(backend)}
    record = store.transaction_by_tx_id(str(tx_id))
    if record is None:  # E14.FR.01
        return {"ongoingIndicator": False, "messagesInQueue": False}
    return {  # E14.FR.02-05
        "ongoingIndicator": record.open,
        "messagesInQueue": store.tx_messages_queued(backend, record.tx_key),
    }


ROUTES = {"GetTransactionStatus": get_transaction_status}
