"""The charging policy: how the runtime meters and when sessions start or end, as typed values."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChargingPolicy:
    """What the runtime needs to know of the configuration, in its own words.

    A protocol adapter fills it from its configuration (OCPP 1.6 keys, 2.0.1 device model
    variables) and hands a new one to the runtime whenever the CSMS changes a value, so
    that nothing below the adapter looks a setting up by a protocol's key name.
    """

    # Seconds between periodic samples of a running transaction; 0 = none.
    sample_interval_s: int = 0
    # Seconds between clock-aligned samples (on the wall clock's multiples); 0 = none.
    aligned_interval_s: int = 0
    # Seconds an authorization waits for the cable before it lapses; 0 = for ever.
    connection_timeout_s: float = 60.0
    # Whether unplugging at the EV side ends the transaction (else: suspended).
    stop_on_ev_disconnect: bool = True
    # Whether the cable lock is released when the EV side is unplugged.
    unlock_on_ev_disconnect: bool = True
    # Whether a transaction whose idTag the CSMS rejects at its start is stopped (else it
    # stays open without energy, after ``max_energy_on_invalid_id_wh``).
    stop_on_invalid_id: bool = True
    # Energy a rejected transaction may still draw; None = none at all.
    max_energy_on_invalid_id_wh: int | None = None
