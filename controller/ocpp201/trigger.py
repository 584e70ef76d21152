"""OCPP 2.0.1 TriggerMessage (F06): which messages the station sends on request, each after
the answer (F06.FR.04) and with current information only (F06.FR.09)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from controller.core.port import Sample
from controller.core.timestamps import iso_utc
from controller.csms.rpc import CallError, CallTimeout, ConnectionLost
from controller.ocpp201 import firmware as firmware201
from controller.ocpp201 import logs as logs201
from controller.ocpp201 import status as status201
from controller.ocpp201.certificates import trigger_sign_station_certificate
from controller.ocpp201.remote import connectors_of
from controller.ocpp201.transactions import meter_value

if TYPE_CHECKING:
    from controller.ocpp201.client import Ocpp201Client

LOG = logging.getLogger(__name__)

ACCEPTED, REJECTED, NOT_IMPLEMENTED = "Accepted", "Rejected", "NotImplemented"
# A MeterValue needs one value at least: with no AlignedDataCtrlr.Measurands configured,
# the energy register (what every meter has) is the most recent measurement to give.
FALLBACK_MEASURAND = "Energy.Active.Import.Register"

# ``trigger(client, evse)`` starts sending the message (``evse``: the request's EVSEType or
# None) and returns the answer's status. A feature module that produces one of the other
# messages (firmware, logs, certificates) adds or replaces its entry.
Trigger = Callable[["Ocpp201Client", "dict[str, Any] | None"], str]


async def _best_effort(action: str, sending: Awaitable[Any]) -> None:
    """A triggered message is sent once: a failure is logged, not retried (it reports a
    moment that has passed, F06.FR.09)."""
    try:
        await sending
    except (CallError, CallTimeout, ConnectionLost) as exc:
        LOG.info("triggered %s not delivered: %s", action, exc)


def _send(client: Ocpp201Client, action: str, payload: dict[str, Any]) -> None:
    client.spawn(
        _best_effort(action, client.call(action, client.time.guard(action, payload))),
        name=f"trigger-{action}",
    )


def _targets(client: Ocpp201Client, evse: dict[str, Any] | None) -> list[int] | None:
    """The connectors a message for ``evse`` covers: all without one (F06.FR.11), else
    those of the EVSE (and connector); None for an EVSE or connector the station lacks."""
    station = client.station
    if evse is None:
        return list(station.connector_ids())
    found = connectors_of(station, int(evse["id"]), evse.get("connectorId"))
    return found or None


def boot_notification(client: Ocpp201Client, evse: dict[str, Any] | None) -> str:
    """F06.FR.17: Rejected once a boot was Accepted; while Pending, the boot goes now."""
    return ACCEPTED if client.trigger_boot() else REJECTED


def heartbeat(client: Ocpp201Client, evse: dict[str, Any] | None) -> str:
    client.spawn(_best_effort("Heartbeat", client.send_heartbeat()), name="trigger-Heartbeat")
    return ACCEPTED


def status_notification(client: Ocpp201Client, evse: dict[str, Any] | None) -> str:
    """The status of the given connector (F06.FR.13), of every connector of the given EVSE,
    or, without evse, of every connector (F06.FR.11; F06.FR.12 would allow Rejected)."""
    targets = _targets(client, evse)
    if targets is None:
        return REJECTED
    for cid in targets:
        client.spawn(
            _best_effort("StatusNotification", client.send_status(cid)),
            name="trigger-StatusNotification",
        )
    return ACCEPTED


def meter_values(client: Ocpp201Client, evse: dict[str, Any] | None) -> str:
    """F06.FR.06: one MeterValuesRequest per EVSE with the latest reading of the
    AlignedDataCtrlr.Measurands, context Trigger; Rejected when no meter of the EVSE(s)
    answers (a sample is a measurement, none is invented)."""
    targets = _targets(client, evse)
    if targets is None:
        return REJECTED
    measurands = _measurands(client)
    now = iso_utc(client.clock.utc_now())
    payloads = []
    for cid in targets:
        view = client.station.view(cid)
        if view.live_reading is None:
            continue
        sample = Sample(
            view.live_reading, now, "Trigger", view.offered_current_a, view.offered_power_w
        )
        value = meter_value(sample, measurands) or meter_value(sample, [FALLBACK_MEASURAND])
        if value is not None:
            evse_id, _ = status201.evse_of(cid)
            payloads.append({"evseId": evse_id, "meterValue": [value]})
    if not payloads:
        return REJECTED
    for payload in payloads:
        _send(client, "MeterValues", payload)
    return ACCEPTED


def _measurands(client: Ocpp201Client) -> list[str]:
    model = client.device_model
    if model is None:
        return [FALLBACK_MEASURAND]
    try:
        return model.get_list("AlignedDataCtrlr", "Measurands")
    except KeyError:
        return [FALLBACK_MEASURAND]


def transaction_event(client: Ocpp201Client, evse: dict[str, Any] | None) -> str:
    """F06.FR.07: TransactionEvent Updated with triggerReason Trigger for the running
    transaction of the EVSE (of every EVSE without one), journaled like every message of
    the transaction (its seqNo, delivered once, also after an outage); Rejected when none
    runs there."""
    targets = _targets(client, evse)
    renderer = client.transactions
    if targets is None or renderer is None:
        return REJECTED
    now = iso_utc(client.clock.utc_now())
    queued = False
    for cid in targets:
        view = client.station.view(cid)
        if view.tx_key is None:
            continue
        reading = view.live_reading

        def render(tx_id: str, seq: int, cid: int = cid, reading: Any = reading) -> Any:
            return renderer.triggered(cid, tx_id, seq, now, reading)

        queued = client.journal.record_message(view.tx_key, client.backend, render) or queued
    if not queued:
        return REJECTED
    client.pump.wake()
    return ACCEPTED


TRIGGERS: dict[str, Trigger] = {
    "BootNotification": boot_notification,
    "Heartbeat": heartbeat,
    "StatusNotification": status_notification,
    "MeterValues": meter_values,
    "TransactionEvent": transaction_event,
    "FirmwareStatusNotification": firmware201.trigger_firmware_status,
    "LogStatusNotification": logs201.trigger_log_status,
    "SignChargingStationCertificate": trigger_sign_station_certificate,  # A02
}


async def trigger_message(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """F06: the answer's status; the message itself is sent after it (F06.FR.04), for
    whatever was Accepted (F06.FR.10). An EVSE that is not relevant to the message is
    ignored (F06.FR.03); a message the station does not produce is NotImplemented
    (F06.FR.08: SignV2GCertificate, SignCombinedCertificate,
    PublishFirmwareStatusNotification)."""
    requested = str(payload["requestedMessage"])
    trigger = TRIGGERS.get(requested)
    if trigger is None:
        LOG.info("TriggerMessage %s: not implemented", requested)
        return {"status": NOT_IMPLEMENTED}
    status = trigger(client, payload.get("evse"))
    LOG.info("TriggerMessage %s: %s", requested, status)
    return {"status": status}


ROUTES = {"TriggerMessage": trigger_message}
