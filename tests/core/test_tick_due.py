"""``tick_due_at_s``: the runtime may skip every Tick before the time it names (issue 16:
quiet when idle) because such a Tick changes nothing but the machine's clock, and may
sleep for good while it names none."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.core.connector import (
    AuthResult,
    ConnectorState,
    Event,
    FaultChanged,
    MeterReady,
    PhasesWanted,
    SwitchStage,
    Tick,
    TokenPresented,
    VehicleChanged,
    initial_state,
    step,
    tick_due_at_s,
)
from hal.base import FaultKind, VehicleState
from tests.core.test_connector_properties import event_lists

# Fractions of the way to the due time (or, with none due, seconds ahead) a skipped Tick
# may fall at.
BEFORE = st.sampled_from([0.0, 0.1, 0.5, 0.9, 0.999])
LATER_S = st.sampled_from([0.0, 1.0, 59.0, 3600.0, 86400.0])


def _walk(evs: list[Event], phase_switch: bool) -> list[ConnectorState]:
    """Every state a run of ``evs`` passes through (Tick carries an increment)."""
    s = initial_state(phase_switch=phase_switch, phase_switch_pause_s=3.0)
    states = [s]
    now = 0.0
    for ev in evs:
        if isinstance(ev, Tick):
            now += ev.now_s
            ev = Tick(now)
        elif isinstance(ev, AuthResult) and ev.id_tag == "<pending>":
            ev = AuthResult(s.authorizing or "CARD1", ev.accepted, ev.parent_id_tag)
        s, _ = step(s, ev)
        states.append(s)
    return states


phase_events = st.lists(
    st.one_of(
        st.builds(PhasesWanted, st.sampled_from([1, 3])),
        st.builds(FaultChanged, st.sampled_from([FaultKind.POWER_SWITCH, None])),
        st.builds(Tick, st.sampled_from([0.0, 1.0, 3.0])),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    evs=event_lists,
    wanted=phase_events,
    phase_switch=st.booleans(),
    fraction=BEFORE,
    later_s=LATER_S,
)
def test_a_tick_before_the_due_time_changes_only_the_clock(
    evs: list[Event],
    wanted: list[Event],
    phase_switch: bool,
    fraction: float,
    later_s: float,
) -> None:
    for s in _walk(wanted + evs + wanted, phase_switch):
        due_s = tick_due_at_s(s)
        if due_s is None:
            at_s = s.now_s + later_s
        elif due_s <= s.now_s:
            continue  # due now: the runtime ticks at once
        else:
            at_s = s.now_s + fraction * (due_s - s.now_s)
        after, cmds = step(s, Tick(at_s))
        assert cmds == [], (s, at_s, cmds)
        assert after == replace(s, now_s=at_s), (s, at_s)


def test_connection_timeout_is_due_when_the_authorization_expires() -> None:
    """ConnectionTimeOut (1.6 9.1.6): a card accepted with nothing plugged in."""
    s = initial_state(meter_ready=True)
    s, _ = step(s, Tick(10.0))
    s, _ = step(s, TokenPresented("CARD1"))
    s, _ = step(s, AuthResult("CARD1", True))
    assert s.authorized_tag == "CARD1"
    assert tick_due_at_s(s) == 10.0 + s.connection_timeout_s
    s, _ = step(s, Tick(10.0 + s.connection_timeout_s))
    assert s.authorized_tag is None
    assert tick_due_at_s(s) is None


def test_a_running_session_alone_needs_no_tick_from_the_machine() -> None:
    """The machine itself has no timer in a plain session; the runtime still ticks for the
    meter (Station._busy), not for the machine."""
    s = initial_state(meter_ready=True)
    for ev in (VehicleChanged(VehicleState.C), TokenPresented("CARD1"), AuthResult("CARD1", True)):
        s, _ = step(s, ev)
    assert s.tx_active and s.contactor_closed
    assert tick_due_at_s(s) is None


def test_phase_switch_pause_and_settle_are_due() -> None:
    s = initial_state(phase_switch=True, meter_ready=True, phase_switch_pause_s=3.0)
    s, _ = step(s, PhasesWanted(1))
    assert s.switching is SwitchStage.PAUSING and s.switching_since_s is None
    assert tick_due_at_s(s) == s.now_s  # the pause starts at the next Tick
    s, _ = step(s, Tick(5.0))
    assert tick_due_at_s(s) == 8.0
    s, _ = step(s, Tick(8.0))
    assert s.switching is SwitchStage.SETTLING
    assert tick_due_at_s(s) == 8.0 + s.phase_switch_settle_s


def test_a_welded_contactor_holds_the_relay_and_needs_no_tick() -> None:
    s = initial_state(phase_switch=True, meter_ready=True)
    s, _ = step(s, FaultChanged(FaultKind.POWER_SWITCH))
    s, _ = step(s, PhasesWanted(1))
    assert tick_due_at_s(s) is None
    s, _ = step(s, MeterReady())
    assert tick_due_at_s(s) is None
