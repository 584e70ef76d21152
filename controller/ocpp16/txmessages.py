"""OCPP 1.6 messages of transaction events (StartTransaction, MeterValues, StopTransaction),
rendered for the version-neutral journal and validated once, when they are queued."""

from __future__ import annotations

import logging
from typing import Any

from controller.core.connector import SessionEvent
from controller.core.port import Sample, TxStart, TxStop
from controller.core.records import DEFAULT_BACKEND
from controller.csms.rpc import CALL, CallError
from controller.ocpp16 import messages as build
from controller.ocpp16.rpc import validate
from controller.ocpp16.settings import Settings

LOG = logging.getLogger(__name__)

Rendered = tuple[str, dict[str, Any]]


def checked(action: str, payload: dict[str, Any]) -> Rendered:
    """Validate a journaled CALL once, at enqueue, so replay need not (rpc prevalidated).

    transactionId is filled in at send time, so a placeholder stands in for it here. An
    invalid payload is our bug: it is logged loudly but still kept – billing data is never
    dropped for it.
    """
    probe = {**payload, "transactionId": 0} if action != "StartTransaction" else payload
    try:
        validate(CALL, action, probe)
    except CallError as exc:
        LOG.error("journaled %s violates the OCPP 1.6 schema: %s", action, exc)
    return action, payload


class TxMessages16:
    """Implements ``controller.storage.journal.TxRenderer`` for an OCPP 1.6 backend. 1.6
    has no sequence numbers and identifies a transaction by the CSMS's transactionId, which
    the outbox rules fill in at send time (it may not be known yet when the event is
    journaled)."""

    def __init__(self, settings: Settings, backend: str = DEFAULT_BACKEND) -> None:
        self.settings = settings
        self._backend = backend

    @property
    def backend(self) -> str:
        return self._backend

    def started(self, tx: TxStart, tx_id: str, seq: int) -> Rendered:
        return checked("StartTransaction", build.start_transaction(tx))

    def samples(
        self, connector_id: int, tx_id: str, seq: int, samples: list[Sample]
    ) -> Rendered | None:
        payload = self.meter_values(connector_id, samples)
        return None if payload is None else checked("MeterValues", payload)

    def ended(self, stop: TxStop, tx_id: str, seq: int) -> Rendered:
        payload = build.stop_transaction(
            stop,
            self.settings.get_csl("StopTxnSampledData"),
            self.settings.get_csl("StopTxnAlignedData"),
        )
        return checked("StopTransaction", payload)

    def updated(
        self, connector_id: int, tx_id: str, seq: int, event: SessionEvent, at: str
    ) -> None:
        """1.6 has no message for a session event within a transaction."""
        return None

    def meter_values(self, connector_id: int, samples: list[Sample]) -> dict[str, Any] | None:
        """A MeterValues payload (without transactionId) with the configured measurands of
        periodic or clock-aligned samples; None when none of them is configured."""
        periodic = bool(samples) and samples[0].context == "Sample.Periodic"
        key = "MeterValuesSampledData" if periodic else "MeterValuesAlignedData"
        measurands = self.settings.get_csl(key)
        values = [mv for s in samples if (mv := build.meter_value(s, measurands))]
        if not values:
            return None
        return {"connectorId": connector_id, "meterValue": values}
