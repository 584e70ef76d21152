"""Test helpers for store tests: what TxJournal with the OCPP 1.6 renderer queues for the
default backend, written directly (payloads as the test gives them)."""

from __future__ import annotations

from typing import Any

from controller.core.records import DEFAULT_BACKEND
from controller.storage.store import Store
from controller.storage.writes import EventKind, Outgoing

_KINDS = {
    "StartTransaction": EventKind.STARTED,
    "MeterValues": EventKind.SAMPLES,
    "StopTransaction": EventKind.ENDED,
}


def start_msgs(payload: dict[str, Any]) -> list[Outgoing]:
    """The StartTransaction of a new transaction (message 0)."""
    return [Outgoing(DEFAULT_BACKEND, "StartTransaction", payload, 0)]


def stop_msgs(payload: dict[str, Any], tx_seq: int = 1) -> list[Outgoing]:
    """A StopTransaction; its sequence number matters only to tests that check it."""
    return [Outgoing(DEFAULT_BACKEND, "StopTransaction", payload, tx_seq)]


def enqueue(
    store: Store,
    tx_key: int,
    action: str,
    payload: dict[str, Any],
    *,
    energy_wh: int | None = None,
    at: str | None = None,
) -> int:
    """Queue one message of a transaction with its next sequence number; returns its seq."""
    seq = store.next_tx_seq(tx_key, DEFAULT_BACKEND)
    seqs = store.append_tx_event(
        tx_key,
        _KINDS[action],
        [Outgoing(DEFAULT_BACKEND, action, payload, seq)],
        energy_wh=energy_wh,
        at=at,
    )
    return seqs[0]


def confirm_start(store: Store, seq: int, tx_key: int, csms_tx_id: int) -> None:
    """StartTransaction.conf: the CSMS's id stored, the delivered message dropped."""
    store.map_csms_tx_id(tx_key, DEFAULT_BACKEND, str(csms_tx_id), delivered_seq=seq)
