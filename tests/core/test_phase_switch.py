"""Phase switching (issue 12 item 4) in the pure connector state machine: examples and a
hypothesis state machine whose invariant is "the phase relay never switches while the
contactor is closed or current is offered, nor before the pause has passed, and nothing
is offered again before the relay settled"."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from controller.core.connector import (
    AuthResult,
    Command,
    ConnectorState,
    CurrentLimitChanged,
    Event,
    FaultChanged,
    MeterReady,
    Phase,
    PhasesWanted,
    SetCurrentLimit,
    StopCause,
    StopRequest,
    SwitchContactor,
    SwitchPhases,
    SwitchStage,
    Tick,
    TokenPresented,
    VehicleChanged,
    initial_state,
    step,
)
from controller.core.safety import contactor_permitted, offered_current_a
from hal.base import FaultKind, VehicleState

PAUSE_S = 3.0
SETTLE_S = 1.0


def _charging(phase_switch: bool = True) -> ConnectorState:
    s = initial_state(phase_switch=phase_switch, meter_ready=True)
    for ev in (
        VehicleChanged(VehicleState.C),
        TokenPresented("CARD"),
        AuthResult("CARD", True),
    ):
        s, _ = step(s, ev)
    assert s.contactor_closed and s.offered_current_a == 32.0
    return s


def _run(s: ConnectorState, evs: list[Event]) -> tuple[ConnectorState, list[list[Command]]]:
    out = []
    for ev in evs:
        s, cmds = step(s, ev)
        out.append(cmds)
    return s, out


def test_switch_to_one_phase_pauses_switches_settles_and_resumes() -> None:
    s = _charging()
    s, cmds = step(s, PhasesWanted(1))
    # Contactor open first, offer withdrawn, nothing switched yet.
    assert cmds[:2] == [SwitchContactor(False), SetCurrentLimit(0.0)]
    assert not any(isinstance(c, SwitchPhases) for c in cmds)
    assert s.switching is SwitchStage.PAUSING and s.phase is Phase.SUSPENDED_EVSE
    # The pause counts from the first tick (the event came between ticks).
    s, steps = _run(s, [Tick(0.5), Tick(1.5), Tick(2.5), Tick(3.4)])
    assert all(not any(isinstance(c, SwitchPhases) for c in cmds) for cmds in steps)
    assert s.phases == 3 and not s.contactor_closed
    s, cmds = step(s, Tick(3.5))
    assert cmds == [SwitchPhases(1)]
    assert s.phases == 1 and s.switching is SwitchStage.SETTLING
    s, cmds = step(s, Tick(4.0))
    assert cmds == [] and not s.contactor_closed
    s, cmds = step(s, Tick(4.5))
    # Settled: offered again and closed by the normal rules, closing last.
    assert cmds[:2] == [SetCurrentLimit(32.0), SwitchContactor(True)]
    assert s.switching is None and s.contactor_closed and s.phase is Phase.CHARGING


def test_back_to_three_phases() -> None:
    s = _charging()
    s, _ = _run(s, [PhasesWanted(1), Tick(0.0), Tick(3.0), Tick(4.0)])
    assert s.phases == 1 and s.contactor_closed
    s, _ = _run(s, [PhasesWanted(3), Tick(5.0), Tick(7.9)])
    assert s.phases == 1 and not s.contactor_closed
    s, cmds = step(s, Tick(8.0))
    assert cmds == [SwitchPhases(3)] and s.phases == 3


def test_wanting_the_old_phases_back_during_the_pause_switches_nothing() -> None:
    s = _charging()
    s, _ = _run(s, [PhasesWanted(1), Tick(0.0), Tick(1.0)])
    s, cmds = step(s, PhasesWanted(3))
    assert s.switching is None and s.phases == 3
    assert cmds[:2] == [SetCurrentLimit(32.0), SwitchContactor(True)]


def test_no_profile_number_other_than_one_means_three() -> None:
    s = _charging()
    s, cmds = step(s, PhasesWanted(2))
    assert cmds == [] and s.phases_wanted == 3 and s.contactor_closed


def test_without_a_phase_switch_nothing_happens() -> None:
    s = _charging(phase_switch=False)
    s, cmds = step(s, PhasesWanted(1))
    assert cmds == [] and s.contactor_closed and s.phases_wanted == 3
    s, cmds = step(s, Tick(10.0))
    assert cmds == []


def test_idle_connector_switches_after_the_pause_too() -> None:
    s = initial_state(phase_switch=True)
    s, _ = _run(s, [PhasesWanted(1), Tick(1.0), Tick(3.9)])
    assert s.phases == 3
    s, cmds = step(s, Tick(4.0))
    assert cmds == [SwitchPhases(1)]


def test_a_contactor_fault_holds_the_relay() -> None:
    s = _charging()
    s, _ = _run(s, [FaultChanged(FaultKind.POWER_SWITCH), PhasesWanted(1), Tick(0), Tick(10)])
    assert s.phases == 3 and s.switching is None
    s, _ = _run(s, [FaultChanged(None), Tick(11), Tick(14)])
    assert s.phases == 1


def test_a_switch_pending_blocks_the_close_of_a_new_session() -> None:
    s = initial_state(phase_switch=True, meter_ready=True)
    s, _ = _run(s, [PhasesWanted(1), Tick(0.0), VehicleChanged(VehicleState.C)])
    s, cmds = _run(s, [TokenPresented("CARD"), AuthResult("CARD", True)])
    assert s.tx_active and not s.contactor_closed and not contactor_permitted(s)
    assert offered_current_a(s) == 0.0
    s, _ = _run(s, [Tick(3.0), Tick(4.0)])
    assert s.phases == 1 and s.contactor_closed


# ----------------------------------------------------------------------------- property


class PhaseSwitchMachine(RuleBasedStateMachine):
    """Arbitrary sessions, limits, faults and wanted phases on a connector with a relay;
    the commands drive a model of the hardware, checked after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.s = initial_state(phase_switch=True)
        # Hardware model, driven by the commands only.
        self.relay = 3
        self.closed = False
        self.offered = 0.0
        # When the hardware last had current offered or the contactor closed; an end
        # between ticks counts from the next tick (events carry no time of their own).
        self.dead_since: float | None = 0.0
        self.dead_pending = False
        self.switched_at: float | None = None
        self.switches = 0

    @initialize(pause=st.sampled_from([0.0, 1.0, 3.0]), settle=st.sampled_from([0.0, 1.0]))
    def start(self, pause: float, settle: float) -> None:
        self.s = initial_state(
            phase_switch=True, phase_switch_pause_s=pause, phase_switch_settle_s=settle
        )
        self.pause, self.settle = pause, settle

    def apply(self, ev: Event) -> None:
        if isinstance(ev, Tick):
            self.now = ev.now_s
            if self.dead_pending:
                self.dead_since, self.dead_pending = self.now, False
        self.s, cmds = step(self.s, ev)
        for cmd in cmds:
            match cmd:
                case SwitchPhases(phases=n):
                    # THE invariant: never under load, never before the pause has passed.
                    assert not self.closed and self.offered == 0.0, cmds
                    assert not self.dead_pending and self.dead_since is not None
                    assert self.now - self.dead_since >= self.pause - 1e-9
                    assert n in (1, 3) and n != self.relay
                    assert not any(c == SwitchContactor(True) for c in cmds)
                    self.relay, self.switched_at = n, self.now
                    self.switches += 1
                case SwitchContactor(on=on):
                    self.closed = on
                case SetCurrentLimit(current_a=a):
                    self.offered = a
                case _:
                    pass
            if self.closed or self.offered > 0:
                # Nothing offered again before the relay settled.
                if self.switched_at is not None:
                    assert self.now - self.switched_at >= self.settle - 1e-9
                self.dead_since, self.dead_pending = None, False
            elif self.dead_since is None and not self.dead_pending:
                if isinstance(ev, Tick):
                    self.dead_since = self.now
                else:
                    self.dead_pending = True

    @rule(n=st.sampled_from([1, 2, 3]))
    def wanted(self, n: int) -> None:
        self.apply(PhasesWanted(n))

    @rule(dt=st.sampled_from([0.0, 0.4, 1.0, 2.5, 5.0]))
    def tick(self, dt: float) -> None:
        self.apply(Tick(self.now + dt))

    @rule(vs=st.sampled_from(list(VehicleState)))
    def vehicle(self, vs: VehicleState) -> None:
        self.apply(VehicleChanged(vs))

    @rule()
    def session(self) -> None:
        for ev in (MeterReady(), VehicleChanged(VehicleState.C), TokenPresented("CARD")):
            self.apply(ev)
        self.apply(AuthResult("CARD", True))

    @rule(limit=st.sampled_from([0.0, 5.0, 6.0, 16.0, 32.0]))
    def limit(self, limit: float) -> None:
        self.apply(CurrentLimitChanged(limit))

    @rule(fault=st.sampled_from([None, FaultKind.GROUND, FaultKind.POWER_SWITCH]))
    def fault(self, fault: FaultKind | None) -> None:
        self.apply(FaultChanged(fault))

    @rule()
    def stop(self) -> None:
        self.apply(StopRequest(StopCause.REMOTE))

    @invariant()
    def consistent(self) -> None:
        assert self.relay == self.s.phases
        assert self.closed == self.s.contactor_closed
        assert self.offered == self.s.offered_current_a
        if self.s.switching is not None:
            assert not self.closed and self.offered == 0.0
        if self.s.switching is None and self.s.fault is not FaultKind.POWER_SWITCH:
            assert self.s.phases == self.s.phases_wanted


PhaseSwitchMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPhaseSwitchMachine = PhaseSwitchMachine.TestCase
