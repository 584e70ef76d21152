"""The station seen from outside: a connector's view for adapters, the local API's status."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from controller.core.composite import EffectiveLimit
from controller.core.control import ConnectorView
from controller.core.port import CsmsPort
from controller.core.records import StationRecords
from controller.core.timestamps import iso_utc
from controller.runtime.clock import Clock
from controller.runtime.connector import ConnectorRuntime
from controller.runtime.faults import FaultEvent
from controller.runtime.reservations import Reservations


def view(c: ConnectorRuntime) -> ConnectorView:
    """One connector now, for adapters (statuses, triggered samples)."""
    return ConnectorView(
        connector_id=c.connector_id,
        phase=c.state.phase,
        condition=c.state.condition,
        tx_key=c.tx_key,
        plugged=c.state.vehicle.plugged,
        offered_current_a=c.state.offered_current_a,
        offered_power_w=c.offered_power_w,
        live_reading=c.live_reading,
        deauthorized=c.state.deauthorized,
    )


def snapshot(
    *,
    connectors: Iterable[ConnectorRuntime],
    store: StationRecords,
    clock: Clock,
    port: CsmsPort | None,
    faults: Iterable[FaultEvent],
    limits: Callable[[int], EffectiveLimit | None] = lambda _cid: None,
    reservations: Reservations | None = None,
) -> dict[str, Any]:
    """The data behind GET /api/status; ``faults`` newest first."""
    out = []
    for c in connectors:
        tx = store.get_transaction(c.tx_key) if c.tx_key is not None else None
        energy_wh = c.reading.energy_wh if c.reading else None
        live = c.live_reading
        held = reservations.on_connector(c.connector_id) if reservations is not None else None
        out.append(
            {
                "connector": c.connector_id,
                "status": c.state.phase.value,
                "error_code": "NoError" if c.state.condition is None else c.state.condition,
                "vehicle_state": c.state.vehicle.value,
                "contactor_closed": c.hw.contactor.closed,
                "offered_current_a": c.state.offered_current_a,
                # The charging limit and where it comes from (a charging profile or the
                # hardware maximum); below 6 A nothing is offered (SuspendedEVSE).
                "limit_a": None if (lim := limits(c.connector_id)) is None else float(lim.limit_a),
                "limit_source": None if lim is None else lim.source.kind.value,
                "transaction_id": None if tx is None else tx.shown_tx_id(),
                "transaction_key": c.tx_key,
                "id_tag": c.tx_id_tag if c.tx_key is not None else None,
                "energy_wh": None if energy_wh is None else round(energy_wh, 1),
                "session_energy_wh": (
                    round(energy_wh - c.tx_meter_start_wh, 1)
                    if energy_wh is not None and c.tx_key is not None
                    else None
                ),
                # A silent meter's last power is not the power now.
                "power_w": round(live.power_w, 1) if live else None,
                "meter_ok": live is not None,
                "meter_reading_at": c.reading_at,
                # The reservation this connector keeps (its own, or one for any connector).
                "reservation": None
                if held is None
                else {
                    "reservation_id": held.reservation_id,
                    "id_tag": held.id_tag,
                    "parent_id_tag": held.parent_id_tag,
                    "expiry": iso_utc(held.expiry),
                    "any_connector": held.any_connector,
                },
            }
        )
    return {
        "connectors": out,
        "clock": {
            "utc": iso_utc(clock.utc_now()),
            "trusted": getattr(clock, "trusted", True),
            "trust_source": getattr(clock, "trust_source", "system"),
        },
        "faults": [vars(event).copy() for event in faults],
        "csms": {
            "state": port.connection_state() if port else "none",
            "queued_messages": port.queued_messages() if port else 0,
            "storage": "degraded" if store.degraded else "ok",
        },
    }
