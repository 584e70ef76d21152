"""Pure charging state machine of one connector: (state, event) -> (new state, commands).

It speaks the charger's own words (connector phase, session events, stop cause, fault kind);
each protocol adapter maps them onto its messages (controller/ocpp16/status.py for OCPP 1.6;
a 2.0.1 adapter derives TransactionEvent trigger reasons from the session events).
"""

from __future__ import annotations

import enum
from dataclasses import replace

from controller.core.reservations import same_token
from controller.core.safety import contactor_permitted, offered_current_a
from controller.core.values import value
from hal.base import FaultKind, VehicleState


class Phase(enum.StrEnum):
    """Where a connector is in a charging session, as the charger sees it.

    The values are the labels the local API and status page show.
    """

    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EV = "SuspendedEV"
    SUSPENDED_EVSE = "SuspendedEVSE"
    FINISHING = "Finishing"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


class StopCause(enum.StrEnum):
    """Why a transaction ended."""

    EMERGENCY_STOP = "EmergencyStop"
    EV_DISCONNECTED = "EVDisconnected"
    HARD_RESET = "HardReset"
    LOCAL = "Local"
    OTHER = "Other"
    POWER_LOSS = "PowerLoss"
    REBOOT = "Reboot"
    REMOTE = "Remote"
    SOFT_RESET = "SoftReset"
    UNLOCK_COMMAND = "UnlockCommand"
    DE_AUTHORIZED = "DeAuthorized"
    MASTER_PASS = "MasterPass"  # a master pass token stopped it (2.0.1 C16)


class SessionEventKind(enum.StrEnum):
    """What happened in a charging session, as the charger sees it (EVerest's session
    events). Each adapter turns them into its own messages; the comment names the OCPP
    2.0.1 trigger reason each one leads to."""

    EV_CONNECTED = "EVConnected"  # cable plugged in (pilot left A): CablePluggedIn
    EV_DISCONNECTED = "EVDisconnected"  # cable out (pilot back to A): EVCommunicationLost
    # A driver (card) or the CSMS (remote start) authorized a session: Authorized / RemoteStart
    AUTHORIZED = "Authorized"
    # An authorization that started no transaction was dropped (second tap, unplug, fault,
    # inoperative, stop request); ``timed_out``: ConnectionTimeOut, EVConnectTimeout
    AUTHORIZATION_CANCELLED = "AuthorizationCancelled"
    STOP_AUTHORIZED = "StopAuthorized"  # a card ended the running transaction
    # The CSMS invalidated the running transaction's idTag; it goes on: Deauthorized
    DEAUTHORIZED = "Deauthorized"
    TRANSACTION_STARTED = "TransactionStarted"
    TRANSACTION_ENDED = "TransactionEnded"
    # The transaction's charging state (ChargingStateChanged): announced right after the
    # start and on every change until the end; flowing exactly while the contactor is closed
    ENERGY_FLOWING = "EnergyFlowing"
    ENERGY_PAUSED = "EnergyPaused"
    # The ceiling a running transaction may be offered (smart-charging limit, at most the
    # hardware) changed: ChargingRateChanged when significant (LimitChangeSignificance)
    LIMIT_CHANGED = "LimitChanged"


class PausedBy(enum.StrEnum):
    """Which side holds energy back in a running transaction (2.0.1 chargingState)."""

    EV = "EV"  # energy offered, the vehicle does not ask for it (pilot B), or unplugged
    EVSE = "EVSE"  # nothing offered: limit, invalidated idTag, fault, pilot error, inoperative


# ----------------------------------------------------------------------------- events


@value
class VehicleChanged:
    state: VehicleState


@value
class TokenPresented:
    """A card was presented locally at this connector."""

    id_tag: str


@value
class AuthResult:
    """The outcome of authorizing ``id_tag`` (cache, local list or CSMS)."""

    id_tag: str
    accepted: bool
    parent_id_tag: str | None = None


@value
class RemoteStart:
    """RemoteStartTransaction already accepted (and authorized if so configured);
    ``parent_id_tag``: the token's group (2.0.1 groupIdToken), for a group reservation."""

    id_tag: str
    parent_id_tag: str | None = None


@value
class StopRequest:
    """Stop the running transaction, for remote stop, reset, unlock, emergency, ..."""

    reason: StopCause


@value
class FaultChanged:
    """A fault appeared or cleared (None)."""

    fault: FaultKind | None


@value
class AvailabilityChanged:
    operative: bool


@value
class ReservationChanged:
    """Reserve for ``id_tag`` (None cancels or expires the reservation); a card whose parent
    idTag is ``parent_id_tag`` may use it too (5.13)."""

    id_tag: str | None
    reservation_id: int | None = None
    parent_id_tag: str | None = None


@value
class CurrentLimitChanged:
    """Maximum current the EVSE may offer (smart charging); 0 suspends charging."""

    limit_a: float


@value
class PhasesWanted:
    """The number of phases the composite schedule asks for (its ``numberPhases``; the
    wired phases without a profile). Only a connector with a phase switch acts on it: 1
    selects one phase, anything else all three (the relay knows no other position)."""

    phases: int


@value
class Tick:
    """Time passes; ``now_s`` is the injected monotonic clock."""

    now_s: float


@value
class SettingsChanged:
    """Configuration that changes how events are interpreted."""

    connection_timeout_s: float
    stop_on_ev_disconnect: bool
    unlock_on_ev_disconnect: bool = True


@value
class Deauthorized:
    """StartTransaction.conf: the idTag of the running transaction is not Accepted, and
    StopTransactionOnInvalidId is false (OCPP 1.6 3.5.4 / 4.8 with errata 3.17): the
    transaction goes on, energy delivery stops - once the meter register reaches
    ``energy_limit_wh`` (MaxEnergyOnInvalidId, 9.1.14), at once when it is None."""

    energy_limit_wh: float | None = None


@value
class EnergyMeasured:
    """The connector's energy import register (Wh), to enforce a MaxEnergyOnInvalidId limit."""

    energy_wh: float


@value
class MeterReady:
    """The connector's meter gave its first good reading since start (or replacement).

    Until then the connector has no register to bill from ("no reading, no energy"): a
    session may be authorized and plugged (Preparing) but no transaction starts and the
    contactor stays open. A meter that never answers ends as a PowerMeterFailure fault.
    """


@value
class ResumeTx:
    """Re-attach a transaction a restart left open (``[station] resume_transactions``).

    No StartTx is emitted: the transaction already exists (and is known to the CSMS). It
    runs again only if the connector could start one now (plugged, operative, no fault);
    otherwise the event is ignored and the runtime closes the transaction. ``deauthorized``
    and ``energy_limit_wh`` restore a ``Deauthorized`` received before the restart.
    """

    id_tag: str
    parent_id_tag: str | None = None
    deauthorized: bool = False
    energy_limit_wh: float | None = None


Event = (
    VehicleChanged
    | TokenPresented
    | AuthResult
    | RemoteStart
    | StopRequest
    | FaultChanged
    | AvailabilityChanged
    | ReservationChanged
    | CurrentLimitChanged
    | PhasesWanted
    | Tick
    | SettingsChanged
    | Deauthorized
    | EnergyMeasured
    | MeterReady
    | ResumeTx
)

# ----------------------------------------------------------------------------- commands


@value
class SwitchContactor:
    on: bool


@value
class SwitchPhases:
    """Move the phase relay to ``phases`` (1 or 3). Issued only after the contactor has
    been open and nothing offered for the connector's ``phase_switch_pause_s``."""

    phases: int


@value
class SetCurrentLimit:
    """Current advertised to the vehicle on the control pilot; 0 = no energy offered."""

    current_a: float


@value
class Lock:
    pass


@value
class Unlock:
    pass


@value
class RequestAuthorization:
    id_tag: str


@value
class StartTx:
    id_tag: str
    reservation_id: int | None = None


@value
class StopTx:
    reason: StopCause
    id_tag: str | None = None


@value
class PhaseChanged:
    """The connector's phase or condition changed: adapters report it (1.6 statuses)."""

    phase: Phase
    condition: FaultKind | None = None


@value
class SessionEvent:
    """Something happened in the connector's session: adapters report it (2.0.1
    TransactionEvent trigger reasons); it moves no hardware.

    Fields beyond ``kind`` are set for the kinds named next to them.
    """

    kind: SessionEventKind
    # AUTHORIZED, AUTHORIZATION_CANCELLED, STOP_AUTHORIZED, TRANSACTION_STARTED,
    # TRANSACTION_ENDED (the card that ended it, None when not ended by a card)
    id_tag: str | None = None
    parent_id_tag: str | None = None  # AUTHORIZED (local authorization only)
    remote: bool = False  # AUTHORIZED: by the CSMS (remote start), not at the reader
    timed_out: bool = False  # AUTHORIZATION_CANCELLED: nobody plugged in in time
    reservation_id: int | None = None  # TRANSACTION_STARTED: the reservation it ends
    # TRANSACTION_STARTED: re-attached after a restart; the backend knows it already
    resumed: bool = False
    cause: StopCause | None = None  # TRANSACTION_ENDED, always
    paused_by: PausedBy | None = None  # ENERGY_PAUSED, always
    # ENERGY_PAUSED: the fault (or pilot error) that holds energy back (AbnormalCondition)
    condition: FaultKind | None = None
    # LIMIT_CHANGED: the ceiling before and after the change, A per phase
    previous_limit_a: float | None = None
    limit_a: float | None = None

    def __post_init__(self) -> None:
        if self.kind is SessionEventKind.TRANSACTION_ENDED and self.cause is None:
            raise ValueError("TRANSACTION_ENDED needs its StopCause")
        if self.kind is SessionEventKind.ENERGY_PAUSED and self.paused_by is None:
            raise ValueError("ENERGY_PAUSED needs the side that pauses")
        if (
            self.kind in (SessionEventKind.AUTHORIZED, SessionEventKind.STOP_AUTHORIZED)
            and self.id_tag is None
        ):
            raise ValueError(f"{self.kind} needs the idTag")


Command = (
    SwitchContactor
    | SwitchPhases
    | SetCurrentLimit
    | Lock
    | Unlock
    | RequestAuthorization
    | StartTx
    | StopTx
    | PhaseChanged
    | SessionEvent
)

# ----------------------------------------------------------------------------- state

#: Defaults of a connector's phase switch timing ([[connectors]] phase_switch_pause_s /
#: phase_switch_settle_s; README "Phase switching" says why).
PHASE_SWITCH_PAUSE_S = 3.0
PHASE_SWITCH_SETTLE_S = 1.0


class SwitchStage(enum.StrEnum):
    """Where a phase switch is: nothing offered and the contactor open throughout."""

    PAUSING = "pausing"  # waiting phase_switch_pause_s with nothing offered
    SETTLING = "settling"  # relay moved; waiting phase_switch_settle_s before offering again


@value
class ConnectorState:
    """Everything the state machine knows about one connector; immutable."""

    max_current_a: float = 32.0
    vehicle: VehicleState = VehicleState.A
    operative: bool = True
    # ChangeAvailability(Inoperative) during a transaction is Scheduled: applied at its end.
    pending_operative: bool | None = None
    fault: FaultKind | None = None
    # The meter has answered at least once since start: until then nothing can be billed,
    # so no transaction starts and the contactor stays open (safe default: not ready).
    meter_ready: bool = False
    reserved_for: str | None = None
    reservation_id: int | None = None
    reserved_parent: str | None = None  # the reservation's parent idTag (group reservation)
    limit_a: float | None = None  # smart-charging limit; None = no limit
    # Authorization
    authorizing: str | None = None  # idTag waiting for AuthResult
    authorized_tag: str | None = None  # authorized, waiting for plug (or tx running)
    authorized_parent: str | None = None
    authorized_at_s: float | None = None
    # Transaction
    tx_active: bool = False
    finishing: bool = False  # transaction ended, cable still plugged
    # The CSMS invalidated the idTag of the running transaction (Deauthorized): energy only
    # while the register is below energy_limit_wh (MaxEnergyOnInvalidId); None = no energy.
    deauthorized: bool = False
    energy_limit_wh: float | None = None
    # Outputs as last commanded
    contactor_closed: bool = False
    offered_current_a: float = 0.0
    locked: bool = False
    phase: Phase = Phase.AVAILABLE
    # The fault, or a warning such as a pilot error during a transaction, shown with phase.
    condition: FaultKind | None = None
    # Settings
    connection_timeout_s: float = 60.0
    stop_on_ev_disconnect: bool = True
    unlock_on_ev_disconnect: bool = True
    now_s: float = 0.0
    # Phase switching (a connector with a phase relay): the phases switched in now, the
    # phases the schedule wants, and the switch in progress. While ``switching`` is set no
    # current is offered and the contactor stays open (core/safety.py).
    phase_switch: bool = False
    phases: int = 3
    phases_wanted: int = 3
    switching: SwitchStage | None = None
    # When the stage began (injected monotonic clock); None: at the next Tick (a pause
    # begun between ticks is counted from the next one, so it is never shorter).
    switching_since_s: float | None = None
    phase_switch_pause_s: float = PHASE_SWITCH_PAUSE_S
    phase_switch_settle_s: float = PHASE_SWITCH_SETTLE_S


def derive_phase(s: ConnectorState) -> tuple[Phase, FaultKind | None]:
    """The phase of a state and its condition: the fault, or a pilot error as a warning
    (OCPP 1.6 4.9 / 7.6 shaped these rules; the 1.6 adapter's mapping is one to one)."""
    if s.fault is not None:
        return Phase.FAULTED, s.fault
    pilot_error = s.vehicle in (VehicleState.E, VehicleState.F)
    if s.tx_active:
        by = paused_by(s)
        if by is None:
            return Phase.CHARGING, None
        if pilot_error:
            # A pilot error is a warning, not a fault (shown with SuspendedEVSE).
            return Phase.SUSPENDED_EVSE, FaultKind.EV_COMMUNICATION
        return (Phase.SUSPENDED_EV if by is PausedBy.EV else Phase.SUSPENDED_EVSE), None
    if not s.operative:
        return Phase.UNAVAILABLE, None
    if s.finishing and s.vehicle.plugged:
        return Phase.FINISHING, None
    if s.reserved_for is not None and s.authorized_tag is None and not pilot_error:
        # Only the reserved driver moves it on (1.6 4.9 G2 "Reservation identity is
        # presented"); a cable plugged in meanwhile does not (2.0.1 errata G01.FR.09).
        return Phase.RESERVED, None
    if pilot_error:
        return Phase.PREPARING, FaultKind.EV_COMMUNICATION
    if s.vehicle.plugged or s.authorized_tag is not None or s.authorizing is not None:
        return Phase.PREPARING, None
    return Phase.AVAILABLE, None


def paused_by(s: ConnectorState) -> PausedBy | None:
    """In a running transaction, the side that holds energy back; None while it flows."""
    if s.fault is not None or s.vehicle in (VehicleState.E, VehicleState.F):
        # The charger (board silent, pilot error, fault) is the side that cannot offer.
        return PausedBy.EVSE
    if contactor_permitted(s):
        return None
    if not s.vehicle.plugged:
        return PausedBy.EV  # EV side unplugged, transaction kept
    if offered_current_a(s) <= 0:
        return PausedBy.EVSE
    return PausedBy.EV


def _charging_state(s: ConnectorState) -> tuple[PausedBy | None, FaultKind | None] | None:
    """What ENERGY_FLOWING / ENERGY_PAUSED announce: None without a transaction."""
    if not s.tx_active:
        return None
    by = paused_by(s)
    return by, (None if by is None else s.condition)


def initial_state(
    *,
    max_current_a: float = 32.0,
    operative: bool = True,
    vehicle: VehicleState = VehicleState.A,
    now_s: float = 0.0,
    meter_ready: bool = False,
    phases: int = 3,
    phase_switch: bool = False,
    phase_switch_pause_s: float = PHASE_SWITCH_PAUSE_S,
    phase_switch_settle_s: float = PHASE_SWITCH_SETTLE_S,
) -> ConnectorState:
    """``phases``: the phases switched in at start (the wired ones, or where the phase
    relay is); ``phase_switch``: the connector has a phase relay."""
    s = ConnectorState(
        max_current_a=max_current_a,
        operative=operative,
        now_s=now_s,
        meter_ready=meter_ready,
        phases=phases,
        phases_wanted=phases,
        phase_switch=phase_switch,
        phase_switch_pause_s=phase_switch_pause_s,
        phase_switch_settle_s=phase_switch_settle_s,
    )
    s = replace(s, vehicle=vehicle)
    phase, condition = derive_phase(s)
    return replace(s, phase=phase, condition=condition)


def reservation_admits(s: ConnectorState, id_tag: str, parent_id_tag: str | None) -> bool:
    """Whether the connector's reservation (if any) lets this driver charge (5.13): the
    reserved idTag, or a card with the reservation's parent idTag."""
    if s.reserved_for is None:
        return True
    if same_token(id_tag, s.reserved_for):
        return True
    return (
        s.reserved_parent is not None
        and parent_id_tag is not None
        and same_token(parent_id_tag, s.reserved_parent)
    )


def idle(s: ConnectorState) -> bool:
    """A new user could start here (status Available, but for a reservation): operative, no
    fault, no transaction or session being prepared or finished, nothing plugged in."""
    return (
        s.operative
        and s.fault is None
        and not s.tx_active
        and not s.finishing
        and s.authorized_tag is None
        and s.authorizing is None
        and s.vehicle is VehicleState.A
    )


def can_start_remotely(s: ConnectorState) -> bool:
    """Whether RemoteStartTransaction for this connector would be Accepted."""
    return (
        s.operative
        and s.fault is None
        and not s.tx_active
        and s.vehicle not in (VehicleState.E, VehicleState.F)
    )


def tick_due_at_s(s: ConnectorState) -> float | None:
    """When a ``Tick`` next changes this state (monotonic seconds), or None while time alone
    changes nothing: the runtime may sleep until then instead of ticking (quiet when idle).

    A step at an earlier time changes nothing either; a Tick at or after the time does what
    a Tick on every interval would have done.
    """
    due: list[float] = []
    if (
        not s.tx_active
        and s.authorized_tag is not None
        and s.authorized_at_s is not None
        and s.connection_timeout_s > 0
    ):
        due.append(s.authorized_at_s + s.connection_timeout_s)  # ConnectionTimeOut
    since_s = s.switching_since_s
    if s.switching is not None and since_s is None:
        due.append(s.now_s)  # the pause counts from the next Tick: at once
    elif s.fault is FaultKind.POWER_SWITCH and s.switching is not SwitchStage.SETTLING:
        pass  # maybe welded: the relay holds where it is until the fault clears (an event)
    elif s.switching is not None and since_s is not None:
        if s.switching is SwitchStage.SETTLING:
            due.append(since_s + s.phase_switch_settle_s)
        else:
            due.append(since_s + s.phase_switch_pause_s)
    elif s.phase_switch and s.phases_wanted != s.phases:
        due.append(s.now_s)  # a switch waiting to begin
    return min(due) if due else None


def step(s: ConnectorState, event: Event) -> tuple[ConnectorState, list[Command]]:
    """Apply one event; return the new state and the commands the runtime must execute.

    Commands come in a safe order: the contactor opens before anything else happens and
    closes only after everything else (e.g. transaction start, lock) has been issued. Only
    notifications follow a closing: the charging state (ENERGY_*), then PhaseChanged. The
    other session events sit where they happen, e.g. TRANSACTION_STARTED right after StartTx.
    """
    new, cmds = _apply(s, event)
    return _settle(s, new, cmds)


def _start_if_ready(s: ConnectorState, cmds: list[Command]) -> ConnectorState:
    """A transaction starts once authorized and plugged (OCPP 1.6 section 3.6) and the
    meter has given a reading to take meterStart from."""
    if (
        s.authorized_tag is not None
        and s.meter_ready
        and not s.tx_active
        and s.vehicle.plugged
        and s.vehicle not in (VehicleState.E, VehicleState.F)
        and s.operative
        and s.fault is None
    ):
        if not reservation_admits(s, s.authorized_tag, s.authorized_parent):
            return s  # reserved for somebody else (5.13)
        rid = s.reservation_id if s.reserved_for is not None else None
        cmds.append(StartTx(s.authorized_tag, rid))
        cmds.append(
            SessionEvent(
                SessionEventKind.TRANSACTION_STARTED, id_tag=s.authorized_tag, reservation_id=rid
            )
        )
        if not s.locked:
            cmds.append(Lock())
        return replace(
            s,
            tx_active=True,
            finishing=False,
            reserved_for=None,
            reservation_id=None,
            reserved_parent=None,
            locked=True,
        )
    return s


def _end_tx(
    s: ConnectorState, reason: StopCause, cmds: list[Command], id_tag: str | None = None
) -> ConnectorState:
    # The contactor is opened by _settle, ahead of the StopTx command.
    cmds.append(StopTx(reason, id_tag))
    cmds.append(SessionEvent(SessionEventKind.TRANSACTION_ENDED, id_tag=id_tag, cause=reason))
    s = replace(
        s,
        tx_active=False,
        authorized_tag=None,
        authorized_parent=None,
        authorized_at_s=None,
        authorizing=None,
        finishing=s.vehicle.plugged,
        deauthorized=False,
        energy_limit_wh=None,
    )
    ev_unplug = reason is StopCause.EV_DISCONNECTED
    if not s.vehicle.plugged and s.locked and (s.unlock_on_ev_disconnect or not ev_unplug):
        # The EV side was unplugged earlier and the transaction was kept: release now (4.10).
        cmds.append(Unlock())
        s = replace(s, locked=False)
    if s.pending_operative is not None:
        s = replace(s, operative=s.pending_operative, pending_operative=None)
        if not s.operative:
            s = replace(s, reserved_for=None, reservation_id=None, reserved_parent=None)  # 5.13
    return s


def _ceiling_a(s: ConnectorState) -> float:
    """The most a transaction may be offered: the smart-charging limit, at most the hardware."""
    return s.max_current_a if s.limit_a is None else min(s.limit_a, s.max_current_a)


def _drop_authorization(s: ConnectorState, cmds: list[Command], timed_out: bool = False) -> None:
    """Announce that the caller drops an authorization that started no transaction."""
    if s.authorized_tag is not None and not s.tx_active:
        cmds.append(
            SessionEvent(
                SessionEventKind.AUTHORIZATION_CANCELLED,
                id_tag=s.authorized_tag,
                timed_out=timed_out,
            )
        )


def _stop_authorized(s: ConnectorState, tag: str, cmds: list[Command]) -> ConnectorState:
    """A card (the starting one, or one with the same parent idTag) ends the transaction."""
    cmds.append(SessionEvent(SessionEventKind.STOP_AUTHORIZED, id_tag=tag))
    return _end_tx(s, StopCause.LOCAL, cmds, tag)


def _apply(s: ConnectorState, event: Event) -> tuple[ConnectorState, list[Command]]:
    cmds: list[Command] = []
    match event:
        case VehicleChanged(state=vs):
            was_plugged = s.vehicle.plugged
            s = replace(s, vehicle=vs)
            if was_plugged and not vs.plugged:
                cmds.append(SessionEvent(SessionEventKind.EV_DISCONNECTED))
                if s.tx_active and s.stop_on_ev_disconnect:
                    s = _end_tx(s, StopCause.EV_DISCONNECTED, cmds)
                s = replace(s, finishing=False)
                if not s.tx_active:
                    _drop_authorization(s, cmds)
                    s = replace(s, authorized_tag=None, authorizing=None, authorized_at_s=None)
                    if s.locked and s.unlock_on_ev_disconnect:
                        cmds.append(Unlock())
                        s = replace(s, locked=False)
            else:
                if vs.plugged and not was_plugged:
                    cmds.append(SessionEvent(SessionEventKind.EV_CONNECTED))
                # Also after a pilot error (E/F) recovers to B/C.
                s = _start_if_ready(s, cmds)
        case TokenPresented(id_tag=tag):
            if s.tx_active:
                if tag == s.authorized_tag:
                    s = _stop_authorized(s, tag, cmds)
                elif s.authorizing is None:
                    # A different card may stop it if it shares the parent idTag.
                    cmds.append(RequestAuthorization(tag))
                    s = replace(s, authorizing=tag)
            elif s.authorized_tag is not None:
                if tag == s.authorized_tag:
                    # Second tap before plugging in cancels the pending authorization.
                    _drop_authorization(s, cmds)
                    s = replace(
                        s, authorized_tag=None, authorized_parent=None, authorized_at_s=None
                    )
                # Another card while one is authorized (locally or remotely): ignored.
            elif (
                s.operative
                and s.fault is None
                and s.authorizing is None
                and s.vehicle not in (VehicleState.E, VehicleState.F)
                and (
                    s.reserved_for is None
                    or same_token(tag, s.reserved_for)
                    # Another card of the group may use it: its parent idTag comes with the
                    # authorization (list, cache or Authorize.conf; 5.13). Without a parent
                    # in the reservation another card is refused without asking anyone.
                    or s.reserved_parent is not None
                )
            ):
                cmds.append(RequestAuthorization(tag))
                s = replace(s, authorizing=tag)
        case AuthResult(id_tag=tag, accepted=ok, parent_id_tag=parent):
            if s.authorizing != tag:
                return s, cmds  # stale answer
            s = replace(s, authorizing=None)
            if s.tx_active:
                if (
                    ok
                    and parent is not None
                    and s.authorized_parent is not None
                    and parent == s.authorized_parent
                ):
                    s = _stop_authorized(s, tag, cmds)
            elif (
                ok
                and s.operative
                and s.fault is None
                and s.authorized_tag is None
                and reservation_admits(s, tag, parent)
            ):
                s = replace(
                    s, authorized_tag=tag, authorized_parent=parent, authorized_at_s=s.now_s
                )
                cmds.append(
                    SessionEvent(SessionEventKind.AUTHORIZED, id_tag=tag, parent_id_tag=parent)
                )
                s = _start_if_ready(s, cmds)
        case RemoteStart(id_tag=tag, parent_id_tag=parent):
            if (
                can_start_remotely(s)
                and s.authorized_tag is None
                and reservation_admits(s, tag, parent)
            ):
                s = replace(
                    s, authorized_tag=tag, authorized_parent=parent, authorized_at_s=s.now_s
                )
                cmds.append(SessionEvent(SessionEventKind.AUTHORIZED, id_tag=tag, remote=True))
                s = _start_if_ready(s, cmds)
        case StopRequest(reason=reason):
            if s.tx_active:
                s = _end_tx(s, reason, cmds)
            else:
                _drop_authorization(s, cmds)
                s = replace(s, authorized_tag=None, authorizing=None, authorized_at_s=None)
            if reason is StopCause.UNLOCK_COMMAND and s.locked:
                cmds.append(Unlock())
                s = replace(s, locked=False)
        case FaultChanged(fault=fault):
            s = replace(s, fault=fault)
            if fault is not None:
                s = replace(s, reserved_for=None, reservation_id=None, reserved_parent=None)  # 5.13
                if not s.tx_active:
                    _drop_authorization(s, cmds)
                    s = replace(s, authorized_tag=None, authorizing=None, authorized_at_s=None)
        case AvailabilityChanged(operative=op):
            if s.tx_active and not op:
                s = replace(s, pending_operative=False)
            else:
                s = replace(s, operative=op, pending_operative=None)
                if not op:
                    _drop_authorization(s, cmds)
                    s = replace(
                        s,
                        authorized_tag=None,
                        authorizing=None,
                        authorized_at_s=None,
                        reserved_for=None,
                        reservation_id=None,
                        reserved_parent=None,
                    )
        case ReservationChanged(id_tag=tag, reservation_id=rid, parent_id_tag=parent):
            s = replace(
                s,
                reserved_for=tag,
                reservation_id=rid if tag is not None else None,
                reserved_parent=parent if tag is not None else None,
            )
            s = _start_if_ready(s, cmds)  # an authorized, plugged driver may go now
        case CurrentLimitChanged(limit_a=limit):
            before = _ceiling_a(s)
            s = replace(s, limit_a=max(0.0, limit))
            if s.tx_active and _ceiling_a(s) != before:
                cmds.append(
                    SessionEvent(
                        SessionEventKind.LIMIT_CHANGED,
                        previous_limit_a=before,
                        limit_a=_ceiling_a(s),
                    )
                )
        case PhasesWanted(phases=n):
            if s.phase_switch:
                s = replace(s, phases_wanted=1 if n == 1 else 3)
        case Tick(now_s=now):
            s = replace(s, now_s=now)
            if (
                not s.tx_active
                and s.authorized_tag is not None
                and s.authorized_at_s is not None
                and s.connection_timeout_s > 0
                and now - s.authorized_at_s >= s.connection_timeout_s
            ):
                # ConnectionTimeOut (9.1.6): the driver never plugged in.
                _drop_authorization(s, cmds, timed_out=True)
                s = replace(s, authorized_tag=None, authorized_parent=None, authorized_at_s=None)
            if s.switching is not None and s.switching_since_s is None:
                s = replace(s, switching_since_s=now)  # the pause counts from here
        case Deauthorized(energy_limit_wh=limit):
            if s.tx_active:
                if s.deauthorized:
                    # A second invalidation never extends the allowance.
                    old = s.energy_limit_wh
                    limit = None if old is None or limit is None else min(old, limit)
                else:
                    cmds.append(SessionEvent(SessionEventKind.DEAUTHORIZED))
                s = replace(s, deauthorized=True, energy_limit_wh=limit)
        case EnergyMeasured(energy_wh=energy):
            if (
                s.tx_active
                and s.deauthorized
                and s.energy_limit_wh is not None
                and energy >= s.energy_limit_wh
            ):
                # Allowance used up; latched, so a register glitch cannot re-enable energy.
                s = replace(s, energy_limit_wh=None)
        case MeterReady():
            s = replace(s, meter_ready=True)
            s = _start_if_ready(s, cmds)  # a session waiting for the meter goes now
        case ResumeTx(id_tag=tag, parent_id_tag=parent):
            if (
                not s.tx_active
                and s.meter_ready
                and s.vehicle.plugged
                and s.vehicle not in (VehicleState.E, VehicleState.F)
                and s.operative
                and s.fault is None
            ):
                cmds.append(
                    SessionEvent(SessionEventKind.TRANSACTION_STARTED, id_tag=tag, resumed=True)
                )
                if not s.locked:
                    cmds.append(Lock())
                s = replace(
                    s,
                    tx_active=True,
                    finishing=False,
                    authorized_tag=tag,
                    authorized_parent=parent,
                    authorized_at_s=s.now_s,
                    authorizing=None,
                    locked=True,
                    deauthorized=event.deauthorized,
                    energy_limit_wh=event.energy_limit_wh if event.deauthorized else None,
                )
        case SettingsChanged():
            s = replace(
                s,
                connection_timeout_s=event.connection_timeout_s,
                stop_on_ev_disconnect=event.stop_on_ev_disconnect,
                unlock_on_ev_disconnect=event.unlock_on_ev_disconnect,
            )
    if s.phase_switch:
        s = _advance_phase_switch(s, isinstance(event, Tick), cmds)
    return s, cmds


def _advance_phase_switch(s: ConnectorState, tick: bool, cmds: list[Command]) -> ConnectorState:
    """Begin, go on with or give up a phase switch.

    The relay moves only once nothing has been offered and the contactor has been open for
    ``phase_switch_pause_s`` (counted on ticks; a pause begun between ticks counts from the
    next one); then ``phase_switch_settle_s`` passes before current is offered again and the
    contactor closes by the normal rules. Wanting the old phases back during the pause ends
    it without switching. A latched contactor fault (PowerSwitchFailure: maybe welded) holds
    the relay where it is: it must never switch a live circuit.
    """
    now = s.now_s
    if s.switching is SwitchStage.SETTLING:
        assert s.switching_since_s is not None
        if now - s.switching_since_s < s.phase_switch_settle_s:
            return s
        s = replace(s, switching=None, switching_since_s=None)
    if s.switching is None:
        if s.phases_wanted == s.phases or s.fault is FaultKind.POWER_SWITCH:
            return s
        # Begin: this step's _settle opens the contactor and withdraws the offer.
        return replace(s, switching=SwitchStage.PAUSING, switching_since_s=now if tick else None)
    # PAUSING
    if s.phases_wanted == s.phases:
        return replace(s, switching=None, switching_since_s=None)  # not needed any more
    if (
        s.switching_since_s is None
        or now - s.switching_since_s < s.phase_switch_pause_s
        or s.fault is FaultKind.POWER_SWITCH
        or s.contactor_closed
        or s.offered_current_a > 0
    ):
        return s
    cmds.append(SwitchPhases(s.phases_wanted))
    return replace(s, phases=s.phases_wanted, switching=SwitchStage.SETTLING, switching_since_s=now)


def _settle(
    old: ConnectorState, s: ConnectorState, cmds: list[Command]
) -> tuple[ConnectorState, list[Command]]:
    """Derive outputs (contactor, offered current, status) and order the commands."""
    want_closed = contactor_permitted(s)
    offer_a = offered_current_a(s)
    head: list[Command] = []
    tail: list[Command] = []
    if s.contactor_closed and not want_closed:
        head.append(SwitchContactor(False))
    if offer_a != s.offered_current_a:
        # Lower the offer before anything else; raise it after the rest.
        (head if offer_a < s.offered_current_a else tail).append(SetCurrentLimit(offer_a))
    if want_closed and not s.contactor_closed:
        tail.append(SwitchContactor(True))
    s = replace(s, contactor_closed=want_closed, offered_current_a=offer_a)
    phase, condition = derive_phase(s)
    notify: list[Command] = []
    if (phase, condition) != (old.phase, old.condition):
        s = replace(s, phase=phase, condition=condition)
    # The charging state changes with the contactor and the offer, decided just above.
    charging = _charging_state(s)
    if charging is not None and charging != _charging_state(old):
        by, why = charging
        notify.append(
            SessionEvent(SessionEventKind.ENERGY_FLOWING)
            if by is None
            else SessionEvent(SessionEventKind.ENERGY_PAUSED, paused_by=by, condition=why)
        )
    if (phase, condition) != (old.phase, old.condition):
        notify.append(PhaseChanged(phase, condition))
    return s, head + cmds + tail + notify
