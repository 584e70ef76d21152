"""Property-based tests of the connector state machine (controller.core.connector.step).

A hypothesis RuleBasedStateMachine drives ``step`` with arbitrary events and executes the
returned commands against a model of the hardware (contactor, lock, offered current), the
way the runtime does. An independent shadow model, built only from the events and the
emitted commands, restates the safety rule without reading the state machine's fields, and
follows the session events an adapter would see (``check_session_event``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from controller.core.connector import (
    AuthResult,
    AvailabilityChanged,
    Command,
    ConnectorState,
    CurrentLimitChanged,
    Deauthorized,
    EnergyMeasured,
    Event,
    FaultChanged,
    Lock,
    MeterReady,
    PausedBy,
    Phase,
    PhaseChanged,
    RemoteStart,
    RequestAuthorization,
    ReservationChanged,
    ResumeTx,
    SessionEvent,
    SessionEventKind,
    SetCurrentLimit,
    SettingsChanged,
    StartTx,
    StopCause,
    StopRequest,
    StopTx,
    SwitchContactor,
    Tick,
    TokenPresented,
    Unlock,
    VehicleChanged,
    derive_phase,
    initial_state,
    step,
)
from hal.base import FaultKind, VehicleState

# ----------------------------------------------------------------------------- alphabets

TAGS = ["CARD1", "CARD2", "CARD3"]
# In event lists, an AuthResult for PENDING answers whatever request is outstanding (random
# tags would almost always be stale answers); ``run_events`` substitutes the real tag.
PENDING = "<pending>"
PARENTS: list[str | None] = [None, "FAMILY", "FLEET"]
FAULTS: list[str | None] = [
    None,
    FaultKind.GROUND,
    FaultKind.OVER_CURRENT,
    FaultKind.HIGH_TEMPERATURE,
]
LIMITS = [0.0, -1.0, 0.5, 5.9, 5.999, 6.0, 6.001, 10.5, 16.0, 32.0, 63.7, 1e-9]
MAX_CURRENTS = [32.0, 32.0, 16.0, 6.0, 5.0, 0.0]
# IEC 61851-1: the control pilot cannot advertise less than 6 A; restated, not imported.
IEC_MIN_CURRENT_A = 6.0
PILOT_ERROR = (VehicleState.E, VehicleState.F)
ENERGIES = [0.0, 100.0, 499.9, 500.0, 500.1, 1000.0, 50.0]

tags = st.sampled_from(TAGS)
# Weighted towards the states in which charging happens; faults and E/F stay common enough.
_V = VehicleState
vehicle_states = st.sampled_from([_V.A, _V.B, _V.B, _V.C, _V.C, _V.C, _V.D, _V.E, _V.F])
fault_codes = st.sampled_from([None, None, None, *FAULTS[1:]])
availabilities = st.sampled_from([True, True, False])
limits = st.one_of(
    st.sampled_from(LIMITS),
    st.floats(min_value=-10.0, max_value=80.0, allow_nan=False, allow_infinity=False),
)
dts = st.sampled_from([0.0, 0.1, 1.0, 29.9, 30.0, 59.99, 60.0, 61.0, 500.0])

events: st.SearchStrategy[Event] = st.one_of(
    st.builds(VehicleChanged, vehicle_states),
    st.builds(TokenPresented, tags),
    st.builds(AuthResult, tags, st.booleans(), st.sampled_from(PARENTS)),
    st.builds(AuthResult, st.just(PENDING), st.booleans(), st.sampled_from(PARENTS)),
    st.builds(RemoteStart, tags),
    st.just(MeterReady()),
    st.builds(StopRequest, st.sampled_from(list(StopCause))),
    st.builds(FaultChanged, fault_codes),
    st.builds(AvailabilityChanged, availabilities),
    st.builds(
        ReservationChanged,
        st.one_of(st.none(), tags),
        st.one_of(st.none(), st.integers(1, 3)),
        st.sampled_from(PARENTS),
    ),
    st.builds(CurrentLimitChanged, limits),
    # Tick here carries a time *increment*; ``run_events`` turns it into a monotonic clock.
    st.builds(Tick, dts),
    st.builds(
        SettingsChanged,
        st.sampled_from([0.0, 1.0, 30.0, 60.0]),
        st.booleans(),
        st.booleans(),
    ),
)


# ----------------------------------------------------------------------------- model


@dataclass
class Model:
    """What the runtime and an outside observer know, built from events and commands only."""

    contactor: bool = False
    locked: bool = False
    offered_a: float = 0.0
    # shadow of the inputs
    vehicle: VehicleState = VehicleState.A
    fault: str | None = None
    operative: bool = True
    pending_inoperative: bool = False
    limit_a: float | None = None
    max_current_a: float = 32.0
    # shadow of authorization and transaction
    requested: set[str] = field(default_factory=set)  # RequestAuthorization emitted
    granted: set[str] = field(default_factory=set)  # accepted answers / remote starts
    tx_open: bool = False
    tx_tag: str | None = None
    starts: int = 0
    stops: int = 0
    # shadow of the reservation (5.13) and of the EV-side disconnect settings (4.10)
    reserved_tag: str | None = None
    reservation_id: int | None = None
    reserved_parent: str | None = None  # a group reservation: cards of this parent may use it
    # parents an accepted authorization answer gave each requested tag
    parents: dict[str, set[str | None]] = field(default_factory=dict)
    unlock_on_ev_disconnect: bool = True
    # the meter has answered once (MeterReady): before that nothing can be billed
    meter_ready: bool = False
    # what the session events have told an adapter so far
    ev_connected: bool = False
    session_auth: str | None = None  # AUTHORIZED, not yet used by a transaction or dropped
    session_tx: bool = False  # TRANSACTION_STARTED, not yet ENDED
    # last ENERGY_* of the open transaction: None = flowing, else who pauses it
    charging: tuple[PausedBy | None, FaultKind | None] | None = None
    session_starts: int = 0

    def __post_init__(self) -> None:
        self.ev_connected = self.vehicle.plugged

    def shadow_limit_a(self) -> float:
        return self.max_current_a if self.limit_a is None else min(self.max_current_a, self.limit_a)

    def shadow_permits_energy(self) -> bool:
        """The safety rule restated on the shadow model (IEC 61851-1: at least 6 A offered)."""
        return (
            self.tx_open
            and self.meter_ready
            and self.tx_tag in self.granted
            and self.vehicle in (VehicleState.C, VehicleState.D)
            and self.operative
            and self.fault is None
            and self.shadow_limit_a() >= IEC_MIN_CURRENT_A
        )

    def cancel_reservation(self) -> None:
        self.reserved_tag, self.reservation_id, self.reserved_parent = None, None, None

    def observe_event(self, ev: Event) -> None:
        match ev:
            case VehicleChanged(state=vs):
                self.vehicle = vs
            case FaultChanged(fault=code):
                self.fault = code
                if code is not None:
                    self.cancel_reservation()  # 5.13 (3): Faulted terminates a reservation
            case AvailabilityChanged(operative=op):
                if op:
                    self.operative, self.pending_inoperative = True, False
                elif self.tx_open:
                    self.pending_inoperative = True  # 5.2: Scheduled
                else:
                    self.operative = False
                    self.cancel_reservation()  # 5.13 (3): Unavailable terminates it
            case ReservationChanged(id_tag=tag, reservation_id=rid, parent_id_tag=parent):
                self.reserved_tag = tag
                self.reservation_id = rid if tag is not None else None
                self.reserved_parent = parent if tag is not None else None
            case SettingsChanged(unlock_on_ev_disconnect=unlock):
                self.unlock_on_ev_disconnect = unlock
            case AuthResult(id_tag=tag, accepted=ok, parent_id_tag=parent):
                if ok and tag in self.requested:
                    self.granted.add(tag)
                    self.parents.setdefault(tag, set()).add(parent)
            case RemoteStart(id_tag=tag):
                self.granted.add(tag)
            case CurrentLimitChanged(limit_a=limit):
                self.limit_a = limit
            case MeterReady():
                self.meter_ready = True
            case _:
                pass


def check_step(
    model: Model, old: ConnectorState, ev: Event, new: ConnectorState, cmds: list[Command]
) -> None:
    """Execute ``cmds`` on the model and check every invariant of one step."""
    model.observe_event(ev)

    # (d) Safe ordering: an opening contactor comes first, before StopTx and everything else;
    # a closing contactor comes last, after StartTx/Lock, followed only by the PhaseChanged.
    switches = [i for i, c in enumerate(cmds) if isinstance(c, SwitchContactor)]
    assert len(switches) <= 1, cmds
    if SwitchContactor(False) in cmds:
        i_open = cmds.index(SwitchContactor(False))
        assert i_open == 0, cmds
        for i, c in enumerate(cmds):
            if isinstance(c, StopTx):
                assert i_open < i, cmds
    if SwitchContactor(True) in cmds:
        i_close = cmds.index(SwitchContactor(True))
        # ... followed only by notifications: the charging state, then the phase.
        assert all(
            isinstance(c, PhaseChanged)
            or (isinstance(c, SessionEvent) and c.kind is SessionEventKind.ENERGY_FLOWING)
            for c in cmds[i_close + 1 :]
        ), cmds

    # (e) exactly one PhaseChanged per status change, none otherwise, always the new status.
    notes = [c for c in cmds if isinstance(c, PhaseChanged)]
    if (new.phase, new.condition) != (old.phase, old.condition):
        assert notes == [PhaseChanged(new.phase, new.condition)], (ev, cmds)
    else:
        assert notes == [], (ev, cmds)
    assert (new.phase, new.condition) == derive_phase(new)

    for i, c in enumerate(cmds):
        match c:
            case SessionEvent():
                check_session_event(model, ev, cmds, i)
            case SwitchContactor(on=on):
                assert model.contactor != on, f"redundant {c}"
                model.contactor = on
            case SetCurrentLimit(current_a=a):
                assert a != model.offered_a, f"redundant {c}"
                model.offered_a = a
            case Lock():
                model.locked = True
            case Unlock():
                model.locked = False
            case RequestAuthorization(id_tag=tag):
                model.requested.add(tag)
            case StartTx(id_tag=tag, reservation_id=rid):
                # (c) StartTx and StopTx strictly alternate.
                assert not model.tx_open, "StartTx while a transaction is open"
                assert model.contactor is False
                # Issue 9: no reading, no energy - meterStart needs a real reading.
                assert model.meter_ready, "StartTx before the meter answered"
                assert tag in model.granted, f"StartTx for never-authorized {tag}"
                assert model.operative and model.fault is None
                assert model.vehicle.plugged
                assert model.vehicle not in PILOT_ERROR
                # 5.13: no transaction for another idTag on a reserved connector, except a
                # card whose authorization gave the reservation's parent idTag; the
                # reservationId only (and always) for them; it ends the reservation.
                if model.reserved_tag is not None:
                    group = model.reserved_parent is not None and model.reserved_parent in (
                        model.parents.get(tag, set())
                    )
                    assert tag == model.reserved_tag or group, (c, model.reserved_tag)
                    assert rid == model.reservation_id, (c, model.reservation_id)
                else:
                    assert rid is None, c
                model.cancel_reservation()
                model.tx_open, model.tx_tag = True, tag
                model.starts += 1
            case StopTx():
                assert model.tx_open, "StopTx without a StartTx"
                assert model.contactor is False, "StopTx with the contactor closed"
                model.tx_open, model.tx_tag = False, None
                model.stops += 1
                if model.pending_inoperative:
                    model.operative, model.pending_inoperative = False, False
                    model.cancel_reservation()  # 5.13 (3)
            case PhaseChanged():
                pass
    assert model.starts - model.stops == (1 if model.tx_open else 0)

    # Session events: transactions and plug state as announced equal those commanded; the
    # announced charging state of an open transaction is "flowing" iff the contactor is closed.
    assert model.session_tx == model.tx_open, (ev, cmds)
    assert model.session_starts == model.starts, (ev, cmds)
    assert model.ev_connected == model.vehicle.plugged, (ev, cmds)
    if model.session_tx:
        assert model.charging is not None, ("charging state never announced", ev, cmds)
        assert (model.charging[0] is None) == model.contactor, (ev, cmds)
    # An announced authorization is pending exactly while the state holds one without a
    # transaction: none is dropped or replaced without a word.
    pending = new.authorized_tag if not new.tx_active else None
    assert model.session_auth == pending, (ev, cmds, new)
    # A stop with an idTag is a card's stop: announced as STOP_AUTHORIZED, and only then.
    by_card = [c.id_tag for c in cmds if isinstance(c, StopTx) and c.id_tag is not None]
    stop_auth = [
        c.id_tag
        for c in cmds
        if isinstance(c, SessionEvent) and c.kind is SessionEventKind.STOP_AUTHORIZED
    ]
    assert by_card == stop_auth, cmds

    # (h) 4.10: a transaction that ends with the cable unplugged at the EV side releases the
    # lock, except for reason EVDisconnected with UnlockConnectorOnEVSideDisconnect=false.
    stops = [c for c in cmds if isinstance(c, StopTx)]
    if stops and not model.vehicle.plugged:
        if stops[0].reason is StopCause.EV_DISCONNECTED and not model.unlock_on_ev_disconnect:
            assert model.locked, (ev, cmds)
        else:
            assert not model.locked, (ev, cmds)

    check_state(model, new)


def check_session_event(model: Model, ev: Event, cmds: list[Command], i: int) -> None:
    """One session event at position ``i`` of ``cmds``, after the commands before it ran."""
    se = cmds[i]
    assert isinstance(se, SessionEvent)
    kind = se.kind
    if kind is SessionEventKind.EV_CONNECTED:
        # EV_CONNECTED and EV_DISCONNECTED alternate, each on the pilot leaving / reaching A.
        assert not model.ev_connected and isinstance(ev, VehicleChanged) and ev.state.plugged
        model.ev_connected = True
    elif kind is SessionEventKind.EV_DISCONNECTED:
        assert model.ev_connected and isinstance(ev, VehicleChanged) and not ev.state.plugged
        model.ev_connected = False
    elif kind is SessionEventKind.AUTHORIZED:
        # At most one authorization at a time, never during a transaction, only for a tag
        # the backend (or the reader's answer) granted; ``remote`` says which.
        assert model.session_auth is None and not model.session_tx, (ev, cmds)
        assert isinstance(ev, AuthResult | RemoteStart) and se.id_tag == ev.id_tag, (ev, se)
        assert se.id_tag in model.granted
        assert se.remote == isinstance(ev, RemoteStart)
        model.session_auth = se.id_tag
    elif kind is SessionEventKind.AUTHORIZATION_CANCELLED:
        assert model.session_auth is not None and se.id_tag == model.session_auth, (ev, se)
        assert not model.session_tx
        assert se.timed_out == isinstance(ev, Tick)
        model.session_auth = None
    elif kind is SessionEventKind.TRANSACTION_STARTED:
        # TRANSACTION_STARTED and TRANSACTION_ENDED alternate: at most one is open.
        assert not model.session_tx, ("second TRANSACTION_STARTED", ev, cmds)
        if se.resumed:
            assert isinstance(ev, ResumeTx) and se.id_tag == ev.id_tag
            assert not any(isinstance(c, StartTx) for c in cmds)
        else:
            # Right after the StartTx it announces, for the authorization announced before.
            assert i > 0 and cmds[i - 1] == StartTx(se.id_tag or "", se.reservation_id), cmds
            assert model.session_auth == se.id_tag, (model.session_auth, se)
        model.session_auth = None
        model.session_tx, model.charging = True, None
        model.session_starts += 1
    elif kind is SessionEventKind.TRANSACTION_ENDED:
        assert model.session_tx, ("TRANSACTION_ENDED without a start", ev, cmds)
        # Every end carries its StopCause, the one of the StopTx just before it.
        assert isinstance(se.cause, StopCause)
        assert i > 0 and cmds[i - 1] == StopTx(se.cause, se.id_tag), cmds
        assert not model.contactor
        model.session_tx, model.charging = False, None
    elif kind is SessionEventKind.STOP_AUTHORIZED:
        # A card ends the open transaction in the same step, reason Local, with its idTag.
        assert model.session_tx
        assert isinstance(ev, TokenPresented | AuthResult) and se.id_tag == ev.id_tag
        ended = [
            c
            for c in cmds[i + 1 :]
            if isinstance(c, SessionEvent) and c.kind is SessionEventKind.TRANSACTION_ENDED
        ]
        assert ended and ended[0].cause is StopCause.LOCAL and ended[0].id_tag == se.id_tag
    elif kind is SessionEventKind.DEAUTHORIZED:
        assert model.session_tx and isinstance(ev, Deauthorized)
    elif kind is SessionEventKind.ENERGY_FLOWING:
        # Energy flows only in an open transaction with the contactor (just) closed.
        assert model.session_tx and model.contactor, (ev, cmds)
        assert model.charging != (None, None), ("repeated ENERGY_FLOWING", ev, cmds)
        model.charging = (None, None)
    elif kind is SessionEventKind.ENERGY_PAUSED:
        assert model.session_tx and not model.contactor, (ev, cmds)
        assert se.paused_by is not None
        assert model.charging != (se.paused_by, se.condition), ("repeated", ev, cmds)
        if se.condition is not None:
            assert se.paused_by is PausedBy.EVSE
        model.charging = (se.paused_by, se.condition)


def check_state(model: Model, s: ConnectorState) -> None:
    # (b) the hardware as commanded equals what the state believes.
    assert model.contactor == s.contactor_closed
    assert model.offered_a == s.offered_current_a
    assert model.locked == s.locked
    assert model.tx_open == s.tx_active
    assert model.vehicle == s.vehicle
    assert model.fault == s.fault
    assert model.operative == s.operative
    assert (model.reserved_tag, model.reservation_id) == (s.reserved_for, s.reservation_id)
    assert model.reserved_parent == s.reserved_parent
    # A running transaction always holds the cable.
    if model.tx_open:
        assert model.locked

    # (a) SAFETY, from the state's own fields ...
    if model.contactor:
        assert s.tx_active
        assert s.authorized_tag is not None
        assert s.vehicle in (VehicleState.C, VehicleState.D)
        assert s.operative
        assert s.fault is None
        assert s.offered_current_a > 0
        # ... from the independent shadow model ...
        assert model.shadow_permits_energy()
        # ... and the cable is locked while energised.
        assert model.locked
    # No reading, no energy: before the meter's first reading nothing starts or closes.
    if not model.meter_ready:
        assert not model.contactor and not model.tx_open and model.offered_a == 0.0
        if (
            s.authorized_tag is not None
            and model.vehicle in (VehicleState.B, VehicleState.C, VehicleState.D)
            and model.operative
            and model.fault is None
        ):
            assert s.phase is Phase.PREPARING, s  # the session waits for the meter
    # Conversely, energy is delivered whenever everything permits it (no spurious stall).
    if model.shadow_permits_energy() and model.tx_tag == s.authorized_tag:
        assert model.contactor

    # (f) no current offered without an authorized transaction or with a fault.
    if not (s.tx_active and s.authorized_tag is not None) or s.fault is not None:
        assert s.offered_current_a == 0.0
        assert model.offered_a == 0.0
    if not model.tx_open or model.fault is not None or model.vehicle in PILOT_ERROR:
        assert model.offered_a == 0.0
    assert 0.0 <= model.offered_a <= max(s.max_current_a, 0.0)
    # IEC 61851-1: either nothing or at least 6 A is offered; below the minimum nothing is.
    assert model.offered_a == 0.0 or model.offered_a >= IEC_MIN_CURRENT_A
    if model.shadow_limit_a() < IEC_MIN_CURRENT_A:
        assert model.offered_a == 0.0 and not model.contactor

    # (g) Charging iff the contactor is closed.
    assert (s.phase is Phase.CHARGING) == model.contactor
    assert (s.phase, s.condition) == derive_phase(s)
    # Faulted only for a real fault (4.9/7.6: EVCommunicationError is not one).
    assert (s.phase is Phase.FAULTED) == (model.fault is not None)
    if s.phase is Phase.FAULTED:
        assert not model.contactor
        assert s.condition == model.fault
    elif s.condition is not None:
        # 4.9: EVCommunicationError only as a warning with Preparing, SuspendedEV,
        # SuspendedEVSE and Finishing, and only while the pilot reports E/F.
        assert s.condition == FaultKind.EV_COMMUNICATION
        assert model.vehicle in PILOT_ERROR
        assert s.phase in (
            Phase.PREPARING,
            Phase.SUSPENDED_EV,
            Phase.SUSPENDED_EVSE,
            Phase.FINISHING,
        )
    if model.fault is None and model.vehicle in PILOT_ERROR and model.tx_open:
        # 7.6: EVCommunicationError "should go to the SuspendedEVSE state".
        assert (s.phase, s.condition) == (Phase.SUSPENDED_EVSE, FaultKind.EV_COMMUNICATION)
    # 4.9: a transaction kept over an EV-side unplug is SuspendedEV.
    if model.fault is None and model.tx_open and not model.vehicle.plugged:
        assert s.phase is Phase.SUSPENDED_EV


# ----------------------------------------------------------------------------- stateful


class ConnectorMachine(RuleBasedStateMachine):
    """Drive ``step`` with arbitrary events and apply the commands as the runtime would."""

    def __init__(self) -> None:
        super().__init__()
        self.s = initial_state()
        self.model = InvalidIdModel()
        self.now = 0.0
        self.trace: list[Event] = []

    @initialize(
        max_current_a=st.sampled_from(MAX_CURRENTS),
        operative=availabilities,
        vehicle=vehicle_states,
        meter_ready=st.booleans(),
    )
    def start(
        self, max_current_a: float, operative: bool, vehicle: VehicleState, meter_ready: bool
    ) -> None:
        self.s = initial_state(
            max_current_a=max_current_a,
            operative=operative,
            vehicle=vehicle,
            meter_ready=meter_ready,
        )
        self.model = InvalidIdModel(
            vehicle=vehicle,
            operative=operative,
            max_current_a=max_current_a,
            meter_ready=meter_ready,
        )
        check_state(self.model, self.s)

    def apply(self, ev: Event) -> None:
        old = self.s
        self.s, cmds = step(old, ev)
        self.trace.append(ev)
        check_invalid_id_step(self.model, old, ev, self.s, cmds)

    @rule(vs=vehicle_states)
    def vehicle(self, vs: VehicleState) -> None:
        self.apply(VehicleChanged(vs))

    @rule(tag=tags)
    def token(self, tag: str) -> None:
        self.apply(TokenPresented(tag))

    @rule(tag=tags, ok=st.booleans(), parent=st.sampled_from(PARENTS))
    def auth_result(self, tag: str, ok: bool, parent: str | None) -> None:
        self.apply(AuthResult(tag, ok, parent))

    @precondition(lambda self: self.s.authorizing is not None)
    @rule(ok=st.booleans(), parent=st.sampled_from(PARENTS))
    def answer_pending(self, ok: bool, parent: str | None) -> None:
        """The answer to the outstanding request (random AuthResults are mostly stale)."""
        assert self.s.authorizing is not None
        self.apply(AuthResult(self.s.authorizing, ok, parent))

    @rule(
        tag=tags,
        vs=st.sampled_from([VehicleState.B, VehicleState.C]),
        parent=st.sampled_from(PARENTS),
        clean=st.booleans(),
    )
    def session_start(self, tag: str, vs: VehicleState, parent: str | None, clean: bool) -> None:
        """Plug, tap, accepted: reach running transactions often enough to perturb them."""
        if clean:
            self.apply(FaultChanged(None))
            self.apply(AvailabilityChanged(True))
            self.apply(MeterReady())
        self.apply(VehicleChanged(vs))
        self.apply(TokenPresented(tag))
        if self.s.authorizing is not None:
            self.apply(AuthResult(self.s.authorizing, True, parent))

    @rule(tag=tags)
    def remote_start(self, tag: str) -> None:
        self.apply(RemoteStart(tag))

    @rule()
    def meter_ready(self) -> None:
        self.apply(MeterReady())

    @rule(reason=st.sampled_from(list(StopCause)))
    def stop_request(self, reason: StopCause) -> None:
        self.apply(StopRequest(reason))

    @rule(code=fault_codes)
    def fault(self, code: str | None) -> None:
        self.apply(FaultChanged(code))

    @rule(op=availabilities)
    def availability(self, op: bool) -> None:
        self.apply(AvailabilityChanged(op))

    @rule(
        tag=st.one_of(st.none(), tags),
        rid=st.one_of(st.none(), st.integers(1, 3)),
        parent=st.sampled_from(PARENTS),
    )
    def reservation(self, tag: str | None, rid: int | None, parent: str | None) -> None:
        self.apply(ReservationChanged(tag, rid, parent))

    @rule(limit=limits)
    def current_limit(self, limit: float) -> None:
        self.apply(CurrentLimitChanged(limit))

    @rule(dt=dts)
    def tick(self, dt: float) -> None:
        self.now += dt
        self.apply(Tick(self.now))

    @rule(
        timeout=st.sampled_from([0.0, 1.0, 30.0, 60.0]),
        stop=st.booleans(),
        unlock=st.booleans(),
    )
    def settings_changed(self, timeout: float, stop: bool, unlock: bool) -> None:
        self.apply(SettingsChanged(timeout, stop, unlock))

    @rule(limit=st.one_of(st.none(), st.sampled_from(ENERGIES)))
    def deauthorized(self, limit: float | None) -> None:
        self.apply(Deauthorized(limit))

    @rule(energy=st.sampled_from(ENERGIES))
    def energy(self, energy: float) -> None:
        self.apply(EnergyMeasured(energy))

    @rule(
        tag=tags,
        parent=st.sampled_from(PARENTS),
        deauth=st.booleans(),
        limit=st.one_of(st.none(), st.sampled_from(ENERGIES)),
    )
    def resume(self, tag: str, parent: str | None, deauth: bool, limit: float | None) -> None:
        """A transaction a restart left open (the runtime sends this once, at start)."""
        self.apply(ResumeTx(tag, parent, deauth, limit))

    @invariant()
    def consistent(self) -> None:
        check_state(self.model, self.s)


ConnectorMachine.TestCase.settings = settings(
    max_examples=250,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestConnectorMachine = ConnectorMachine.TestCase


# ----------------------------------------------------------------------------- sequences


def run_events(
    evs: list[Event],
    max_current_a: float = 32.0,
    operative: bool = True,
    vehicle: VehicleState = VehicleState.A,
    on_step: Callable[[ConnectorState, Event, ConnectorState, list[Command]], None] | None = None,
    meter_ready: bool = False,
) -> ConnectorState:
    """Run a list of events (Tick carries an increment) checking every step."""
    s = initial_state(
        max_current_a=max_current_a, operative=operative, vehicle=vehicle, meter_ready=meter_ready
    )
    model = Model(
        vehicle=vehicle, operative=operative, max_current_a=max_current_a, meter_ready=meter_ready
    )
    check_state(model, s)
    now = 0.0
    for ev in evs:
        if isinstance(ev, Tick):
            now += ev.now_s
            ev = Tick(now)
        elif isinstance(ev, AuthResult) and ev.id_tag == PENDING:
            ev = AuthResult(s.authorizing or TAGS[0], ev.accepted, ev.parent_id_tag)
        old = s
        s, cmds = step(old, ev)
        check_step(model, old, ev, s, cmds)
        if on_step is not None:
            on_step(old, ev, s, cmds)
    return s


def _session_start(tag: str, vs: VehicleState, clean: bool) -> list[Event]:
    prefix: list[Event] = (
        [FaultChanged(None), AvailabilityChanged(True), MeterReady()] if clean else []
    )
    return [*prefix, VehicleChanged(vs), TokenPresented(tag), AuthResult(PENDING, True)]


# Event lists with occasional "plug, tap, accepted" chunks, so that sessions are reached
# often enough for faults, limits, unplugging etc. to hit a running transaction.
event_lists = st.lists(
    st.one_of(
        events.map(lambda e: [e]),
        st.builds(
            _session_start,
            tags,
            st.sampled_from([VehicleState.B, VehicleState.C]),
            st.booleans(),
        ),
    ),
    max_size=25,
).map(lambda chunks: [e for chunk in chunks for e in chunk])


@settings(max_examples=300, deadline=None)
@given(
    evs=event_lists,
    max_current_a=st.sampled_from(MAX_CURRENTS),
    operative=st.booleans(),
    vehicle=vehicle_states,
    meter_ready=st.booleans(),
)
def test_random_event_sequences_are_safe(
    evs: list[Event],
    max_current_a: float,
    operative: bool,
    vehicle: VehicleState,
    meter_ready: bool,
) -> None:
    run_events(evs, max_current_a, operative, vehicle, meter_ready=meter_ready)


def _plug_and_authorize(tag: str) -> list[Event]:
    return [VehicleChanged(VehicleState.B), TokenPresented(tag), AuthResult(tag, True)]


@settings(max_examples=150, deadline=None)
@given(
    tag=tags,
    prefix=st.lists(events, max_size=10),
    middle=st.lists(events, max_size=15),
)
def test_closed_contactor_always_opens_before_stop(
    tag: str, prefix: list[Event], middle: list[Event]
) -> None:
    """Steer towards charging sessions, then perturb: the invariants hold throughout."""
    run_events(
        prefix
        + [FaultChanged(None), AvailabilityChanged(True), ReservationChanged(None), MeterReady()]
        + _plug_and_authorize(tag)
        + [VehicleChanged(VehicleState.C)]
        + middle
        + [StopRequest(StopCause.LOCAL), VehicleChanged(VehicleState.A)]
    )


# ----------------------------------------------------------------------------- OCPP properties
# Further properties checked with hypothesis. Each keeps the minimal counterexample of a bug it
# once found as an explicit @example (a regression test now). A property that still fails on
# controller/core/connector.py is a strict xfail; its @example makes the xfail deterministic.


def _reservation_id_only_for_reserved_tag(evs: list[Event]) -> None:
    """5.13: the reservationId goes in StartTx only for the reserved idTag, or for a card
    authorized with the reservation's parent idTag."""
    reserved: dict[str, str | None] = {"tag": None, "parent": None}

    def on_step(old: ConnectorState, ev: Event, new: ConnectorState, cmds: list[Command]) -> None:
        for c in cmds:
            if isinstance(c, StartTx) and c.reservation_id is not None:
                group = (
                    reserved["parent"] is not None and old.authorized_parent == (reserved["parent"])
                )
                by_parent = group or (
                    isinstance(ev, AuthResult) and ev.parent_id_tag == reserved["parent"]
                )
                assert c.id_tag == reserved["tag"] or by_parent, (c, reserved)
        if isinstance(ev, ReservationChanged):
            reserved["tag"] = ev.id_tag
            reserved["parent"] = ev.parent_id_tag if ev.id_tag is not None else None
        if any(isinstance(c, StartTx) for c in cmds):
            reserved["tag"] = new.reserved_for
            reserved["parent"] = new.reserved_parent

    run_events(evs, on_step=on_step)


def _unlocked_when_idle_and_unplugged(evs: list[Event]) -> None:
    """4.10/5.12: with UnlockConnectorOnEVSideDisconnect=true (the default, never changed
    here), a connector without a transaction and without a cable is not left locked."""

    def on_step(old: ConnectorState, ev: Event, new: ConnectorState, cmds: list[Command]) -> None:
        assert new.unlock_on_ev_disconnect
        if not new.tx_active and not new.vehicle.plugged:
            assert not new.locked, (ev, cmds)

    run_events(evs, on_step=on_step)


def _authorized_and_plugged_means_started(evs: list[Event]) -> None:
    """3.6: once authorized and plugged (pilot B-D, operative, no fault) a transaction runs."""

    def on_step(old: ConnectorState, ev: Event, new: ConnectorState, cmds: list[Command]) -> None:
        ready = (
            new.authorized_tag is not None
            and new.meter_ready  # issue 9: meterStart needs a real reading
            and new.vehicle in (VehicleState.B, VehicleState.C, VehicleState.D)
            and new.operative
            and new.fault is None
            # 5.13: not while the connector is reserved for another idTag
            and new.reserved_for in (None, new.authorized_tag)
        )
        assert new.tx_active or not ready, (ev, new)

    run_events(evs, on_step=on_step)


@settings(max_examples=100, deadline=None)
@given(evs=event_lists)
@example(
    evs=[
        ReservationChanged("CARD1", 1),
        VehicleChanged(VehicleState.B),
        RemoteStart("CARD2"),
    ]
)
def test_reservation_id_only_for_reserved_tag(evs: list[Event]) -> None:
    _reservation_id_only_for_reserved_tag(evs)


_unlock_true_events = event_lists.map(
    lambda evs: [
        SettingsChanged(e.connection_timeout_s, e.stop_on_ev_disconnect, True)
        if isinstance(e, SettingsChanged)
        else e
        for e in evs
    ]
)


@settings(max_examples=100, deadline=None)
@given(evs=_unlock_true_events)
@example(
    evs=[
        SettingsChanged(60.0, False, True),
        VehicleChanged(VehicleState.C),
        TokenPresented("CARD1"),
        AuthResult(PENDING, True),
        VehicleChanged(VehicleState.A),
        TokenPresented("CARD1"),
    ]
)
def test_unlocked_when_idle_and_unplugged(evs: list[Event]) -> None:
    _unlocked_when_idle_and_unplugged(evs)


@settings(max_examples=100, deadline=None)
@given(evs=event_lists)
@example(
    evs=[
        RemoteStart("CARD1"),
        VehicleChanged(VehicleState.E),
        VehicleChanged(VehicleState.B),
    ]
)
@example(
    evs=[
        RemoteStart("CARD1"),
        ReservationChanged("CARD2", 1),
        VehicleChanged(VehicleState.C),
        ReservationChanged(None),
    ]
)
def test_authorized_and_plugged_means_started(evs: list[Event]) -> None:
    _authorized_and_plugged_means_started(evs)


def _becoming_unavailable_or_faulted_ends_reservation(evs: list[Event]) -> None:
    """5.13 (3): a reservation is terminated when the connector is set to Faulted or
    Unavailable, also when a scheduled ChangeAvailability(Inoperative) (5.2) takes effect at
    the end of a transaction."""

    def on_step(old: ConnectorState, ev: Event, new: ConnectorState, cmds: list[Command]) -> None:
        if (old.operative and not new.operative) or (old.fault is None and new.fault is not None):
            assert (new.reserved_for, new.reservation_id) == (None, None), (ev, cmds, new)

    run_events(evs, on_step=on_step)


@settings(max_examples=100, deadline=None)
@given(evs=event_lists)
@example(
    evs=[
        VehicleChanged(VehicleState.B),
        RemoteStart("CARD1"),
        ReservationChanged("CARD2", 1),
        AvailabilityChanged(False),
        StopRequest(StopCause.REMOTE),
    ]
)
def test_becoming_unavailable_or_faulted_ends_reservation(evs: list[Event]) -> None:
    _becoming_unavailable_or_faulted_ends_reservation(evs)


# ----------------------------------------------------------------------------- invalidated idTag
# StartTransaction.conf not Accepted with StopTransactionOnInvalidId=false (3.5.4 / 4.8,
# errata 3.17): Deauthorized, with an optional MaxEnergyOnInvalidId register limit (9.1.14);
# ResumeTx re-attaches a transaction a restart left open. The shadow model restates when
# energy may flow: an invalidated idTag only within a remaining allowance.


@dataclass
class InvalidIdModel(Model):
    deauthorized: bool = False
    allowance_to: float | None = None  # register limit; None = no energy
    resumes: int = 0

    def shadow_permits_energy(self) -> bool:
        if self.deauthorized and self.allowance_to is None:
            return False
        return super().shadow_permits_energy()

    def observe_event(self, ev: Event) -> None:
        match ev:
            case Deauthorized(energy_limit_wh=limit) if self.tx_open:
                if self.deauthorized:
                    old = self.allowance_to
                    limit = None if old is None or limit is None else min(old, limit)
                self.deauthorized, self.allowance_to = True, limit
            case EnergyMeasured(energy_wh=e):
                if self.deauthorized and self.allowance_to is not None and e >= self.allowance_to:
                    self.allowance_to = None
            case ResumeTx(id_tag=tag, deauthorized=deauth, energy_limit_wh=limit):
                if (
                    not self.tx_open
                    and self.meter_ready
                    and self.vehicle.plugged
                    and self.vehicle not in PILOT_ERROR
                    and self.operative
                    and self.fault is None
                ):
                    # Counts as a start without StartTx: the transaction already exists.
                    self.granted.add(tag)
                    self.tx_open, self.tx_tag = True, tag
                    self.starts += 1
                    self.resumes += 1
                    self.deauthorized = deauth
                    self.allowance_to = limit if deauth else None
                    self.locked = True
            case _:
                super().observe_event(ev)


def check_invalid_id_step(
    model: InvalidIdModel,
    old: ConnectorState,
    ev: Event,
    new: ConnectorState,
    cmds: list[Command],
) -> None:
    was_open, was_deauthorized = model.tx_open, model.deauthorized
    # The first invalidation of an open transaction is announced (DEAUTHORIZED), once.
    newly = isinstance(ev, Deauthorized) and was_open and not was_deauthorized
    kinds = [c.kind for c in cmds if isinstance(c, SessionEvent)]
    assert (SessionEventKind.DEAUTHORIZED in kinds) == newly, (ev, cmds)
    if isinstance(ev, ResumeTx):
        model.observe_event(ev)
        assert not any(isinstance(c, StartTx | StopTx) for c in cmds), cmds
        assert new.tx_active == model.tx_open
        # Execute the commands without observing the event a second time.
        check_step(_NoObserve(model), old, ev, new, cmds)
    else:
        check_step(model, old, ev, new, cmds)
    if any(isinstance(c, StopTx) for c in cmds):
        model.deauthorized, model.allowance_to = False, None
    if was_open and model.tx_open and model.deauthorized and model.allowance_to is None:
        # 3.5.4 "only stop energy delivery": no energy, transaction kept.
        assert not model.contactor and model.offered_a == 0.0
        if model.fault is None and model.vehicle.plugged and model.vehicle not in PILOT_ERROR:
            assert new.phase is Phase.SUSPENDED_EVSE, (ev, new)
    assert new.deauthorized == (model.tx_open and model.deauthorized)
    check_state(model, new)


class _NoObserve:
    """Proxy that forwards everything to the model except observe_event."""

    def __init__(self, model: Model) -> None:
        object.__setattr__(self, "_m", model)

    def observe_event(self, ev: Event) -> None:
        pass

    def __getattr__(self, name: str) -> object:
        return getattr(object.__getattribute__(self, "_m"), name)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(object.__getattribute__(self, "_m"), name, value)


invalid_id_events: st.SearchStrategy[Event] = st.one_of(
    events,
    st.builds(Deauthorized, st.one_of(st.none(), st.sampled_from(ENERGIES))),
    st.builds(EnergyMeasured, st.sampled_from(ENERGIES)),
    st.builds(
        ResumeTx,
        tags,
        st.sampled_from(PARENTS),
        st.booleans(),
        st.one_of(st.none(), st.sampled_from(ENERGIES)),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.lists(invalid_id_events, max_size=12),
    tag=tags,
    middle=st.lists(invalid_id_events, max_size=25),
    resume=st.booleans(),
)
def test_invalidated_id_never_energised_beyond_allowance(
    prefix: list[Event], tag: str, middle: list[Event], resume: bool
) -> None:
    """Safety with Deauthorized / EnergyMeasured / ResumeTx: the contactor closes only for
    an authorized transaction, an invalidated one only within its allowance; a resumed
    transaction behaves like a started one (StartTx/StopTx balance, lock held)."""
    s = initial_state()
    model = InvalidIdModel()
    check_state(model, s)
    start: list[Event] = [
        FaultChanged(None),
        AvailabilityChanged(True),
        ReservationChanged(None),
        MeterReady(),
    ]
    start += [VehicleChanged(VehicleState.B), ResumeTx(tag)] if resume else _plug_and_authorize(tag)
    now = 0.0
    for ev in prefix + start + [VehicleChanged(VehicleState.C)] + middle:
        if isinstance(ev, Tick):
            now += ev.now_s
            ev = Tick(now)
        old = s
        s, cmds = step(old, ev)
        check_invalid_id_step(model, old, ev, s, cmds)


def test_deauthorized_example_allowance_then_suspended() -> None:
    s = initial_state(meter_ready=True)
    for ev in [VehicleChanged(VehicleState.C), RemoteStart("CARD1")]:
        s, _ = step(s, ev)
    assert s.contactor_closed
    s, cmds = step(s, Deauthorized(1500.0))
    # Allowance left: energy goes on; only the adapter hears of it.
    assert s.contactor_closed and cmds == [SessionEvent(SessionEventKind.DEAUTHORIZED)]
    s, cmds = step(s, EnergyMeasured(1499.0))
    assert s.contactor_closed
    s, cmds = step(s, EnergyMeasured(1500.0))
    assert not s.contactor_closed and s.tx_active
    assert cmds[0] == SwitchContactor(False)
    assert PhaseChanged(Phase.SUSPENDED_EVSE) in cmds
    s, _ = step(s, EnergyMeasured(0.0))  # latched: a lower reading does not re-enable
    assert not s.contactor_closed
    s, cmds = step(s, VehicleChanged(VehicleState.A))
    assert StopTx(StopCause.EV_DISCONNECTED) in cmds
    assert not s.deauthorized and s.energy_limit_wh is None
