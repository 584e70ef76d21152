"""When the contactor may be closed and how much current may be offered: the safety rule.

Every layer that keeps a connector safe, and where it lives:

1. This rule (``contactor_permitted``) is the only condition under which the state machine
   commands the contactor closed: a running transaction, its idTag not invalidated (or
   within its MaxEnergyOnInvalidId allowance), a meter that has answered since start (no
   reading, no energy), the vehicle asking for energy (pilot C/D), the connector operative,
   no fault, no phase switch in progress, and at least 6 A to offer. ``core/connector.py``
   ``_settle`` puts an opening first and a closing last among a step's commands, and a
   lowered current before anything else (a raise after). The phase relay (``SwitchPhases``)
   moves only after the contactor has been open and nothing offered for the connector's
   pause, never in a step that closes.
2. No close without a durable transaction: ``runtime/station.py`` refuses to switch on while
   no transaction is recorded (StartTransaction is committed, fsync, before the pilot offers
   current) and raises InternalError instead.
3. Open at start and at stop: the station commands every contactor open before it reads
   anything, and on stop opens each one on its own, whatever failed before.
4. Read-back before READY: ``app.py`` sends READY=1 to systemd only after every contactor was
   commanded open and reads open.
5. Weld latch: ``hal/gpio.py`` feedback supervision reports a welded contact (or one that
   does not close) as PowerSwitchFailure and does not drive the coil again until the
   feedback agrees.
6. Safe-off: ``ops/safeoff.py`` opens every contactor and sets pilot boards to 0 A from the
   configuration alone, after every stop or crash (systemd ExecStopPost=) and once at boot.
7. Watchdog: systemd restarts evsed when its tick loop stops making progress; a restart is
   (3) and (6) again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hal.base import VehicleState

if TYPE_CHECKING:
    from controller.core.connector import ConnectorState

# IEC 61851-1: a pilot cannot advertise less than 6 A; below that, nothing is offered.
MIN_CURRENT_A = 6.0


def energy_allowed(s: ConnectorState) -> bool:
    """Whether the transaction's idTag still entitles it to energy.

    A transaction whose idTag the CSMS invalidated (``Deauthorized``) counts as authorized
    for energy delivery only while a MaxEnergyOnInvalidId allowance remains (9.1.14: the
    operator chose to let the EV charge enough to drive away); without one, or once it is
    used up, energy delivery stops (SuspendedEVSE) while the transaction stays open.
    """
    return not s.deauthorized or s.energy_limit_wh is not None


def wants_current(s: ConnectorState) -> bool:
    """Whether current would be offered given a limit of 6 A or more: a transaction that may
    draw energy and a vehicle plugged in without a pilot error (charging, or paused by the
    EV). What a site limit is shared among (core/loadshare.py)."""
    return (
        s.tx_active
        and s.meter_ready
        and s.authorized_tag is not None
        and energy_allowed(s)
        and s.operative
        and s.fault is None
        and s.vehicle not in (VehicleState.A, VehicleState.E, VehicleState.F)
    )


def offered_current_a(s: ConnectorState) -> float:
    """Current offered to the vehicle: the limit while a transaction may draw energy, else 0."""
    if not wants_current(s) or s.switching is not None:
        return 0.0  # nothing while the phase relay is about to move, moves or settles
    limit = s.max_current_a if s.limit_a is None else min(s.max_current_a, s.limit_a)
    return limit if limit >= MIN_CURRENT_A else 0.0


def contactor_permitted(s: ConnectorState) -> bool:
    """The safety rule (layer 1 above)."""
    return (
        s.tx_active
        and s.meter_ready
        and s.authorized_tag is not None
        and energy_allowed(s)
        and s.vehicle.requests_energy
        and s.operative
        and s.fault is None
        and s.switching is None
        and offered_current_a(s) > 0
    )
