"""Durable transaction journal: records starts, samples and stops as queued OCPP 1.6 CALLs."""

from __future__ import annotations

import logging
from typing import Any

from ocpp.messages import MessageType

from controller.core.port import Sample, TxStart, TxStop
from controller.core.records import StoreError
from controller.csms.rpc import CallError
from controller.ocpp16 import messages as build
from controller.ocpp16.rpc import validate
from controller.ocpp16.settings import Settings
from controller.runtime.clock import Clock
from controller.storage.store import Store

LOG = logging.getLogger(__name__)


def checked(action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Validate a journaled CALL once, at enqueue, so replay need not (rpc prevalidated).

    transactionId is filled in at send time, so a placeholder stands in for it here. An
    invalid payload is our bug: it is logged loudly but still kept – billing data is never
    dropped for it.
    """
    probe = {**payload, "transactionId": 0} if action != "StartTransaction" else payload
    try:
        validate(MessageType.Call, action, probe)
    except CallError as exc:
        LOG.error("journaled %s violates the OCPP 1.6 schema: %s", action, exc)
    return payload


class Journal:
    """Writes before sending: every transaction message lands in the outbox first.

    When the database cannot be written (disk full, I/O error) the store keeps the
    transaction records and outbox messages in memory instead (``Store.degraded``), with
    keys continuing the database's, so charging and the CSMS traffic go on; the station
    retries the write every 60 s and the store then writes them out in order. A crash
    while degraded loses what was only in memory.

    With a clock that is not confirmed yet (a Pi without RTC after a power cut), it notes
    what it stamped on that clock; when NTP or the CSMS confirms the time, those queued
    messages and transaction times are moved onto the confirmed timeline before they are
    sent (issue 4 item 7), so an offline session is billed at the hours it really ran.
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        boot_id: str = "",
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.boot_id = boot_id
        self._clock = clock
        self._untrusted_seqs: list[int] = []
        self._untrusted_started: set[int] = set()
        self._untrusted_stopped: set[int] = set()
        add_listener = getattr(clock, "add_trust_listener", None)
        if add_listener is not None:
            add_listener(self._on_time_confirmed)

    def _untrusted(self) -> bool:
        return self._clock is not None and not getattr(self._clock, "trusted", True)

    def _on_time_confirmed(self, shift_s: float) -> None:
        try:
            changed = self.store.shift_timestamps(
                shift_s,
                seqs=self._untrusted_seqs,
                started=self._untrusted_started,
                stopped=self._untrusted_stopped,
            )
        except StoreError:
            LOG.exception("could not move queued timestamps by %+.1f s", shift_s)
            changed = 0
        finally:
            self._untrusted_seqs.clear()
            self._untrusted_started.clear()
            self._untrusted_stopped.clear()
        if changed:
            LOG.warning(
                "time confirmed: %d queued message(s)/transaction(s) stamped on the unconfirmed"
                " clock moved by %+.1f s",
                changed,
                shift_s,
            )

    def start_transaction(self, tx: TxStart) -> int:
        tx_key = self.store.begin_transaction(
            connector_id=tx.connector_id,
            id_tag=tx.id_tag,
            meter_start_wh=tx.meter_start_wh,
            started_at=tx.timestamp,
            reservation_id=tx.reservation_id,
            start_payload=checked("StartTransaction", build.start_transaction(tx)),
            boot_id=self.boot_id,
        )
        if self._untrusted():
            self._untrusted_started.add(tx_key)
        return tx_key

    def stop_transaction(self, tx_key: int, stop: TxStop) -> bool:
        payload = build.stop_transaction(
            stop,
            self.settings.get_csl("StopTxnSampledData"),
            self.settings.get_csl("StopTxnAlignedData"),
        )
        stopped = self.store.end_transaction(
            tx_key,
            meter_stop_wh=stop.meter_stop_wh,
            stopped_at=stop.timestamp,
            reason=stop.reason.value,
            stop_payload=checked("StopTransaction", payload),
        )
        if stopped and stop.stamped_now and self._untrusted():
            self._untrusted_stopped.add(tx_key)
        return stopped

    def meter_values(
        self, connector_id: int, tx_key: int | None, samples: list[Sample]
    ) -> dict[str, Any] | None:
        """Queue transaction samples durably; return the payload of non-transaction ones."""
        periodic = bool(samples) and samples[0].context == "Sample.Periodic"
        key = "MeterValuesSampledData" if periodic else "MeterValuesAlignedData"
        measurands = self.settings.get_csl(key)
        values = [mv for s in samples if (mv := build.meter_value(s, measurands))]
        if not values:
            return None
        payload: dict[str, Any] = {"connectorId": connector_id, "meterValue": values}
        if tx_key is None:
            return payload
        last = samples[-1]
        try:
            seq = self.store.enqueue_tx_message(
                tx_key,
                "MeterValues",
                checked("MeterValues", payload),
                energy_wh=round(last.reading.energy_wh),
                at=last.timestamp,
            )
            if self._untrusted():
                self._untrusted_seqs.append(seq)
        except StoreError:
            # Not expected (a full disk switches the store to memory); charging goes on,
            # the reading is lost but the stop still carries the total.
            LOG.exception("could not queue MeterValues")
        return None
