"""OCPP 2.0.1 TransactionEvent messages (E01-E09) from the core's transaction and session
events, rendered for the version-neutral journal.

The transaction is the core's: it starts when the driver is authorized and the EV is
connected and ends at the unplug or the stop authorization, i.e. TxStartPoint
PowerPathClosed and TxStopPoint EVConnected,Authorized (the 1.6-compatible pair of Part 2
E 1.1.2; the device model reports them read-only). seqNo is the journal's per-transaction
sequence number: 0 for Started, one more for every message (E01.FR.07, durable across
restarts); transactionId is the charger's own id, made when the start is journaled (E01.FR.08).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.core.connector import PausedBy, Phase, SessionEvent, SessionEventKind, StopCause
from controller.core.control import StationControl
from controller.core.port import Sample, TxStart, TxStop
from controller.core.records import DEFAULT_BACKEND
from controller.csms.measurands import measured
from controller.ocpp201 import status as status201
from controller.ocpp201.dm import DeviceModel
from hal.base import MeterReading

LOG = logging.getLogger(__name__)

Rendered = tuple[str, dict[str, Any]]
ACTION = "TransactionEvent"

# The charging state a connector phase shows at the start of a transaction. An EV that has
# not drawn energy yet is EVConnected, not SuspendedEV (which reports that the EV suspended
# a transfer, E01.FR.19), until it first charged.
_PHASE_STATE = {
    Phase.CHARGING: "Charging",
    Phase.SUSPENDED_EVSE: "SuspendedEVSE",
}
# Why a transaction ended, as (triggerReason, stoppedReason) (E06, E07, E09, B11/B12).
_ENDED: dict[StopCause, tuple[str, str]] = {
    StopCause.LOCAL: ("StopAuthorized", "Local"),
    StopCause.EV_DISCONNECTED: ("EVCommunicationLost", "EVDisconnected"),
    StopCause.REMOTE: ("RemoteStop", "Remote"),
    StopCause.DE_AUTHORIZED: ("Deauthorized", "DeAuthorized"),
    StopCause.MASTER_PASS: ("StopAuthorized", "MasterPass"),  # C16, TC_C_14_CS
    StopCause.HARD_RESET: ("ResetCommand", "ImmediateReset"),
    StopCause.SOFT_RESET: ("ResetCommand", "ImmediateReset"),
    StopCause.REBOOT: ("AbnormalCondition", "Reboot"),
    StopCause.POWER_LOSS: ("AbnormalCondition", "PowerLoss"),
    StopCause.EMERGENCY_STOP: ("AbnormalCondition", "EmergencyStop"),
    # 2.0.1 has no unlock stop (F05 refuses an unlock during a transaction); a 1.6 unlock.
    StopCause.UNLOCK_COMMAND: ("UnlockCommand", "Other"),
    StopCause.OTHER: ("AbnormalCondition", "Other"),
}


def ended_reasons(cause: StopCause) -> tuple[str, str]:
    """(triggerReason, stoppedReason) of a transaction that ended for ``cause``."""
    return _ENDED.get(cause, ("AbnormalCondition", "Other"))


def sampled_values(sample: Sample, measurands: list[str]) -> list[dict[str, Any]]:
    """SampledValueType entries (2.0.1 section 2.45): numbers, with unitOfMeasure."""
    out: list[dict[str, Any]] = []
    for m in measured(sample, measurands):
        value: dict[str, Any] = {
            "value": round(m.value, m.decimals) if m.decimals else round(m.value),
            "context": sample.context,
            "measurand": m.measurand,
            "location": "Outlet",
        }
        if m.phase is not None:
            value["phase"] = m.phase
        if m.unit is not None:
            value["unitOfMeasure"] = {"unit": m.unit}
        out.append(value)
    return out


def meter_value(sample: Sample, measurands: list[str]) -> dict[str, Any] | None:
    values = sampled_values(sample, measurands)
    return {"timestamp": sample.timestamp, "sampledValue": values} if values else None


@dataclass
class _TxSeen:
    """What the CSMS was told of one running transaction (kept in memory: after a restart
    the first charging state is sent again, which is harmless)."""

    connector_id: int
    charging_state: str | None = None
    ended: bool = False
    # The offer ceiling (A) the CSMS last heard of through ChargingRateChanged.
    reported_limit_a: float | None = None


@dataclass
class _Session:
    """What happened on a connector before its transaction started: the trigger of Started."""

    trigger: str = "Authorized"
    id_token_type: str = "ISO14443"
    # RequestStartTransaction's remoteStartId and idToken (F01.FR.25, F02.FR.01/21).
    remote_start_id: int | None = None
    id_token: dict[str, Any] | None = None


@dataclass(frozen=True)
class RemoteStart:
    """A RequestStartTransaction the station is about to begin on a connector."""

    remote_start_id: int
    id_token: dict[str, Any]  # the CSMS's IdTokenType: its type goes into the TransactionEvent
    parent_id_tag: str | None = None  # its groupIdToken (a group reservation admits it)


@dataclass
class TxMessages201:
    """Implements ``controller.storage.journal.TxRenderer`` for an OCPP 2.0.1 backend.

    ``online()`` tells whether the CSMS link is up: an event journaled while it is not is
    sent with ``offline`` true (E04, E08). Session events are fed through ``note`` in the
    order the state machine emitted them."""

    model: DeviceModel
    station: StationControl
    online: Callable[[], bool]
    backend: str = DEFAULT_BACKEND
    _tx: dict[str, _TxSeen] = field(default_factory=dict)  # by transactionId
    _session: dict[int, _Session] = field(default_factory=dict)  # by connector
    _remote: dict[int, RemoteStart] = field(default_factory=dict)  # by connector
    # Connectors the station authorizes itself, without an idToken (AuthCtrlr.Enabled false).
    _no_auth: set[int] = field(default_factory=set)

    # ------------------------------------------------------------ session events

    def remote_start(self, connector_id: int, request: RemoteStart) -> None:
        """RequestStartTransaction is about to authorize ``connector_id``: the remote
        authorization that follows carries its remoteStartId and idToken type."""
        self._remote[connector_id] = request

    def no_authorization(self, connector_id: int) -> None:
        """AuthCtrlr.Enabled false: the remote authorization that follows on
        ``connector_id`` is the station's own, for nobody's idToken: the transaction's
        idToken is empty with type NoAuthorization (C02.FR.01, AuthCtrlr.Enabled)."""
        self._no_auth.add(connector_id)

    def note(self, connector_id: int, event: SessionEvent) -> None:
        """Remember what a later Started reports (CablePluggedIn when the cable came last,
        Authorized or RemoteStart when the authorization did)."""
        session = self._session.setdefault(connector_id, _Session())
        if event.kind is SessionEventKind.EV_CONNECTED:
            # F02.FR.21: after RequestStartTransaction the next TransactionEvent says
            # RemoteStart, even when the cable that came later started the transaction.
            if session.trigger != "RemoteStart":
                session.trigger = "CablePluggedIn"
        elif (
            event.kind is SessionEventKind.AUTHORIZED
            and event.remote
            and connector_id in self._no_auth
        ):
            # The cable started it (CablePluggedIn stays the trigger); no remoteStartId.
            self._no_auth.discard(connector_id)
            self._remote.pop(connector_id, None)
            session.id_token_type = "NoAuthorization"
            session.remote_start_id = None
            session.id_token = None
        elif event.kind is SessionEventKind.AUTHORIZED:
            session.trigger = "RemoteStart" if event.remote else "Authorized"
            # A remote start's idToken is the CSMS's, with its type (F01.FR.04, F02.FR.05).
            # Any authorization settles what a RequestStartTransaction left for the connector.
            remote = self._remote.pop(connector_id, None)
            if not event.remote:
                remote = None
            session.remote_start_id = None if remote is None else remote.remote_start_id
            session.id_token = None if remote is None else remote.id_token
            if remote is not None:
                session.id_token_type = str(remote.id_token["type"])
            else:
                session.id_token_type = "Central" if event.remote else "ISO14443"
        elif event.kind in (
            SessionEventKind.EV_DISCONNECTED,
            SessionEventKind.AUTHORIZATION_CANCELLED,
        ):
            self._session.pop(connector_id, None)
            self._remote.pop(connector_id, None)
            self._no_auth.discard(connector_id)
        elif event.kind is SessionEventKind.TRANSACTION_ENDED:
            # Once the core ended it, nothing but its Ended (journaled after the last meter
            # read) is sent for the transaction.
            self._session.pop(connector_id, None)
            for seen in self._tx.values():
                if seen.connector_id == connector_id:
                    seen.ended = True

    # ------------------------------------------------------------ TxRenderer

    def started(self, tx: TxStart, tx_id: str, seq: int) -> Rendered:
        """TransactionEvent Started (E01.FR.05): evse, idToken and reservationId once
        (E01.FR.16, E03.FR.01, E01.FR.13), the start reading (E01.FR.09)."""
        session = self._session.pop(tx.connector_id, _Session())
        view = self.station.view(tx.connector_id)
        state = _PHASE_STATE.get(view.phase, "EVConnected")
        self._tx[tx_id] = _TxSeen(tx.connector_id, state)
        evse_id, connector_id = status201.evse_of(tx.connector_id)
        payload = self._event("Started", tx.timestamp, session.trigger, seq)
        payload["transactionInfo"] = {"transactionId": tx_id, "chargingState": state}
        if session.remote_start_id is not None:
            # F01.FR.25 / F02.FR.01: the first TransactionEvent of a remote start's transaction.
            payload["transactionInfo"]["remoteStartId"] = session.remote_start_id
        payload["evse"] = {"id": evse_id, "connectorId": connector_id}
        payload["idToken"] = {"idToken": tx.id_tag[:36], "type": session.id_token_type}
        token = session.id_token
        if token is not None and "additionalInfo" in token and token["idToken"] == tx.id_tag:
            payload["idToken"]["additionalInfo"] = token["additionalInfo"]
        if tx.reservation_id is not None:
            payload["reservationId"] = tx.reservation_id
        begin = self._begin_sample(tx, view.live_reading)
        if begin is not None:
            payload["meterValue"] = [begin]
        return ACTION, payload

    def samples(
        self, connector_id: int, tx_id: str, seq: int, samples: list[Sample]
    ) -> Rendered | None:
        """Updated with MeterValuePeriodic (TxUpdatedMeasurands) or MeterValueClock
        (AlignedDataCtrlr.Measurands) samples (E02.FR.10, J01); nothing when none is set."""
        if not samples:
            return None
        context = samples[0].context
        if context == "Sample.Clock":
            trigger, measurands = "MeterValueClock", self._list("AlignedDataCtrlr", "Measurands")
        else:
            trigger = "MeterValuePeriodic" if context == "Sample.Periodic" else "Trigger"
            measurands = self._list("SampledDataCtrlr", "TxUpdatedMeasurands")
        values = [mv for s in samples if (mv := meter_value(s, measurands))]
        if not values:
            return None
        payload = self._event("Updated", samples[-1].timestamp, trigger, seq)
        payload["transactionInfo"] = {"transactionId": tx_id}
        payload["meterValue"] = values
        return ACTION, payload

    def updated(
        self, connector_id: int, tx_id: str, seq: int, event: SessionEvent, at: str
    ) -> Rendered | None:
        """Updated for a change of the charging state (E01.FR.18, ChargingStateChanged) or
        of the authorization (Deauthorized, C15/E05); other events tell the CSMS nothing
        new within a transaction."""
        seen = self._tx.setdefault(tx_id, _TxSeen(connector_id))
        if seen.ended:
            return None
        if event.kind is SessionEventKind.DEAUTHORIZED:
            payload = self._event("Updated", at, "Deauthorized", seq)
            payload["transactionInfo"] = {"transactionId": tx_id}
            return ACTION, payload
        if event.kind is SessionEventKind.LIMIT_CHANGED:
            return self._rate_changed(seen, tx_id, seq, event, at)
        state = self._charging_state(connector_id, event)
        if state == "SuspendedEV" and seen.charging_state == "EVConnected":
            state = "EVConnected"  # not charged yet (see _PHASE_STATE)
        if state is None or state == seen.charging_state:
            return None
        seen.charging_state = state
        payload = self._event("Updated", at, "ChargingStateChanged", seq)
        payload["transactionInfo"] = {"transactionId": tx_id, "chargingState": state}
        return ACTION, payload

    def _rate_changed(
        self, seen: _TxSeen, tx_id: str, seq: int, event: SessionEvent, at: str
    ) -> Rendered | None:
        """Updated ChargingRateChanged when the limit the transaction may be offered moved
        by more than SmartChargingCtrlr.LimitChangeSignificance percent from what the CSMS
        last heard (K11.FR.04, K13.FR.03; TriggerReasonEnumType): a profile, a local limit
        or the site share."""
        if event.limit_a is None:
            return None
        if seen.reported_limit_a is None:
            # The ceiling at the start is what the CSMS had (its profiles or none).
            seen.reported_limit_a = event.previous_limit_a or 0.0
        base = seen.reported_limit_a
        try:
            significance = float(
                self.model.get_decimal("SmartChargingCtrlr", "LimitChangeSignificance")
            )
        except (KeyError, ValueError, ArithmeticError):
            significance = 0.0
        change = abs(event.limit_a - base)
        if change == 0 or (base > 0 and change * 100 / base <= significance):
            return None
        seen.reported_limit_a = event.limit_a
        payload = self._event("Updated", at, "ChargingRateChanged", seq)
        payload["transactionInfo"] = {"transactionId": tx_id}
        return ACTION, payload

    def triggered(
        self, connector_id: int, tx_id: str, seq: int, at: str, reading: MeterReading | None
    ) -> Rendered:
        """Updated for TriggerMessage(TransactionEvent) (F06.FR.07): triggerReason Trigger,
        the current chargingState, the evse, and the live reading of TxUpdatedMeasurands
        with context Trigger (none while the meter is silent: no sample is invented)."""
        seen = self._tx.get(tx_id)
        view = self.station.view(connector_id)
        state = seen.charging_state if seen is not None else None
        if state is None:
            state = _PHASE_STATE.get(view.phase, "EVConnected" if view.plugged else "Idle")
        payload = self._event("Updated", at, "Trigger", seq)
        payload["transactionInfo"] = {"transactionId": tx_id, "chargingState": state}
        evse_id, evse_connector = status201.evse_of(connector_id)
        payload["evse"] = {"id": evse_id, "connectorId": evse_connector}
        if reading is not None:
            sample = Sample(reading, at, "Trigger", view.offered_current_a, view.offered_power_w)
            value = meter_value(sample, self._list("SampledDataCtrlr", "TxUpdatedMeasurands"))
            if value is not None:
                payload["meterValue"] = [value]
        return ACTION, payload

    def ended(self, stop: TxStop, tx_id: str, seq: int) -> Rendered:
        """TransactionEvent Ended (E06) with the stoppedReason (always, also Local, which
        Part 2 E 1.5 allows to omit) and the TxEndedMeasurands of the transaction's samples
        (E06.FR.11)."""
        seen = self._tx.pop(tx_id, None)
        trigger, stopped = ended_reasons(stop.reason)
        payload = self._event("Ended", stop.timestamp, trigger, seq)
        info: dict[str, Any] = {"transactionId": tx_id, "stoppedReason": stopped}
        connector_id = seen.connector_id if seen is not None else None
        if connector_id is not None:
            try:
                plugged = self.station.view(connector_id).plugged
            except KeyError:
                plugged = False
            state = "EVConnected" if plugged else "Idle"
            if seen is None or state != seen.charging_state:
                info["chargingState"] = state
        payload["transactionInfo"] = info
        if stop.id_tag is not None and stop.reason is StopCause.LOCAL:
            # E07.FR.02: the idToken that ended the authorization.
            payload["idToken"] = {"idToken": stop.id_tag[:36], "type": "ISO14443"}
        values = self._ended_values(stop.transaction_data)
        if not any(s.context == "Transaction.End" for s in stop.transaction_data):
            # Closed after a restart (or a silent meter): the end register is meterStop.
            end = self._register_only(
                stop.meter_stop_wh,
                stop.timestamp,
                "Transaction.End",
                self._list("SampledDataCtrlr", "TxEndedMeasurands"),
            )
            if end is not None:
                values.append(end)
        if values:
            payload["meterValue"] = values
        return ACTION, payload

    def aligned_measurands(self) -> list[str]:
        """AlignedDataCtrlr.Measurands (clock-aligned samples, J01)."""
        return self._list("AlignedDataCtrlr", "Measurands")

    # ------------------------------------------------------------ helpers

    def _event(self, kind: str, at: str, trigger: str, seq: int) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "eventType": kind,
            "timestamp": at,
            "triggerReason": trigger,
            "seqNo": seq,
        }
        if not self.online():
            payload["offline"] = True
        return payload

    def _list(self, component: str, variable: str) -> list[str]:
        try:
            return self.model.get_list(component, variable)
        except KeyError:
            return []

    def _charging_state(self, connector_id: int, event: SessionEvent) -> str | None:
        if event.kind is SessionEventKind.ENERGY_FLOWING:
            return "Charging"
        if event.kind is not SessionEventKind.ENERGY_PAUSED:
            return None
        if event.paused_by is PausedBy.EVSE:
            return "SuspendedEVSE"
        try:
            plugged = self.station.view(connector_id).plugged
        except KeyError:
            plugged = True
        return "SuspendedEV" if plugged else "Idle"

    def _begin_sample(self, tx: TxStart, reading: Any) -> dict[str, Any] | None:
        measurands = self._list("SampledDataCtrlr", "TxStartedMeasurands")
        if reading is None:
            return self._register_only(
                tx.meter_start_wh, tx.timestamp, "Transaction.Begin", measurands
            )
        return meter_value(Sample(reading, tx.timestamp, "Transaction.Begin"), measurands)

    @staticmethod
    def _register_only(
        energy_wh: int, at: str, context: str, measurands: list[str]
    ) -> dict[str, Any] | None:
        """A MeterValue of the energy register alone (when no full reading is at hand),
        if the measurands ask for it."""
        if "Energy.Active.Import.Register" not in measurands:
            return None
        value = {
            "value": energy_wh,
            "context": context,
            "measurand": "Energy.Active.Import.Register",
            "location": "Outlet",
            "unitOfMeasure": {"unit": "Wh"},
        }
        return {"timestamp": at, "sampledValue": [value]}

    def _ended_values(self, samples: list[Sample]) -> list[dict[str, Any]]:
        """TxEndedMeasurands of the begin and end readings, and of the periodic ones at most
        every SampledDataCtrlr.TxEndedInterval (0: none); AlignedDataCtrlr.TxEndedMeasurands
        of the clock-aligned ones at most every AlignedDataCtrlr.TxEndedInterval."""
        sampled = self._list("SampledDataCtrlr", "TxEndedMeasurands")
        aligned = self._list("AlignedDataCtrlr", "TxEndedMeasurands")
        sampled_every = self._int("SampledDataCtrlr", "TxEndedInterval")
        aligned_every = self._int("AlignedDataCtrlr", "TxEndedInterval")
        out: list[dict[str, Any]] = []
        last_at: dict[str, str] = {}
        for s in samples:
            if s.context == "Sample.Clock":
                measurands, every = aligned, aligned_every
            elif s.context == "Sample.Periodic":
                measurands, every = sampled, sampled_every
            else:
                measurands, every = sampled, None
            if every is not None:
                if every <= 0 or not _spaced(last_at.get(s.context), s.timestamp, every):
                    continue
                last_at[s.context] = s.timestamp
            mv = meter_value(s, measurands)
            if mv is not None:
                out.append(mv)
        return out

    def _int(self, component: str, variable: str) -> int:
        try:
            return self.model.get_int(component, variable)
        except (KeyError, ValueError):
            return 0


def _spaced(previous: str | None, at: str, interval_s: int) -> bool:
    """Whether ``at`` is at least ``interval_s`` after ``previous`` (ISO 8601 UTC)."""
    if previous is None:
        return True
    try:
        delta = datetime.fromisoformat(at) - datetime.fromisoformat(previous)
    except ValueError:
        return True
    return delta.total_seconds() >= interval_s
