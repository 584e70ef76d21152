"""Example-based tests of the connector state machine against OCPP 1.6 (edition 2).

Each test names the section of the specification it checks. Section numbers refer to
/work/shared/ocpp-spec/1.6/ocpp-1.6-edition-2.md.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from controller.core.connector import (
    AuthResult,
    AvailabilityChanged,
    Command,
    ConnectorState,
    CurrentLimitChanged,
    Event,
    FaultChanged,
    Lock,
    MeterReady,
    Phase,
    PhaseChanged,
    RemoteStart,
    RequestAuthorization,
    ReservationChanged,
    SessionEvent,
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
    can_start_remotely,
    derive_phase,
)
from controller.core.connector import initial_state as _initial_state
from controller.core.connector import step as _step
from hal.base import FaultKind, VehicleState

A, B, C, D, E, F = (
    VehicleState.A,
    VehicleState.B,
    VehicleState.C,
    VehicleState.D,
    VehicleState.E,
    VehicleState.F,
)
OPEN = SwitchContactor(False)


def initial_state(**kwargs: object) -> ConnectorState:
    """A connector whose meter has answered (the usual case); the tests of "no reading, no
    energy" (issue 9) start from ``_initial_state()`` instead."""
    return _initial_state(meter_ready=True, **kwargs)  # type: ignore[arg-type]


CLOSE = SwitchContactor(True)


def step(s: ConnectorState, event: Event) -> tuple[ConnectorState, list[Command]]:
    """``step`` without the session events: these tests pin the commands that move hardware
    and report status; tests/core/test_session_events.py pins the session events."""
    s, cmds = _step(s, event)
    return s, [c for c in cmds if not isinstance(c, SessionEvent)]


def run(s: ConnectorState, *events: Event) -> tuple[ConnectorState, list[Command]]:
    """Apply events in order; return the final state and the commands of the last event."""
    cmds: list[Command] = []
    for ev in events:
        s, cmds = step(s, ev)
    return s, cmds


def notifies(cmds: Iterable[Command]) -> list[PhaseChanged]:
    return [c for c in cmds if isinstance(c, PhaseChanged)]


def charging(
    tag: str = "CARD1", parent: str | None = None, s: ConnectorState | None = None
) -> ConnectorState:
    """A connector in a running, charging local transaction for ``tag``."""
    s, _ = run(
        s if s is not None else initial_state(),
        VehicleChanged(B),
        TokenPresented(tag),
        AuthResult(tag, True, parent),
        VehicleChanged(C),
    )
    assert s.phase is Phase.CHARGING
    assert s.contactor_closed and s.tx_active
    return s


def assert_consistent(s: ConnectorState) -> None:
    assert (s.phase, s.condition) == derive_phase(s)
    assert s.contactor_closed == (s.phase is Phase.CHARGING)


# ----------------------------------------------------------------------------- sessions


def test_full_local_session_4_8_start_4_10_stop_4_9_status() -> None:
    """4.8 StartTransaction, 4.9 status A->B->D->C->F->A, 4.10 StopTransaction reason Local."""
    s = initial_state()
    assert s.phase is Phase.AVAILABLE and not s.contactor_closed

    s, cmds = step(s, VehicleChanged(B))  # A2: plug inserted
    assert cmds == [PhaseChanged(Phase.PREPARING)]

    s, cmds = step(s, TokenPresented("CARD1"))
    assert cmds == [RequestAuthorization("CARD1")]  # still Preparing: no PhaseChanged
    assert s.phase is Phase.PREPARING

    s, cmds = step(s, AuthResult("CARD1", True))
    # B4: all prerequisites met, EV (state B) not yet charging.
    assert cmds == [
        StartTx("CARD1", None),
        Lock(),
        SetCurrentLimit(32.0),
        PhaseChanged(Phase.SUSPENDED_EV),
    ]
    assert s.tx_active and s.locked and not s.contactor_closed

    s, cmds = step(s, VehicleChanged(C))  # D3: EV requests energy
    assert cmds == [CLOSE, PhaseChanged(Phase.CHARGING)]
    assert s.contactor_closed

    s, cmds = step(s, TokenPresented("CARD1"))  # C6: same card stops the transaction
    assert cmds == [
        OPEN,
        SetCurrentLimit(0.0),
        StopTx(StopCause.LOCAL, "CARD1"),
        PhaseChanged(Phase.FINISHING),
    ]
    assert cmds.index(OPEN) < cmds.index(StopTx(StopCause.LOCAL, "CARD1"))
    assert not s.contactor_closed and not s.tx_active and s.locked

    s, cmds = step(s, VehicleChanged(A))  # F1: all user actions completed
    assert cmds == [Unlock(), PhaseChanged(Phase.AVAILABLE)]
    assert not s.locked
    assert_consistent(s)


def test_tap_before_plug_3_6_then_plug_starts_transaction() -> None:
    """4.9 A2 (present idTag) then 4.8: the transaction starts when the cable is plugged."""
    s, cmds = step(initial_state(), TokenPresented("CARD1"))
    assert cmds == [RequestAuthorization("CARD1"), PhaseChanged(Phase.PREPARING)]

    s, cmds = step(s, AuthResult("CARD1", True))
    assert cmds == []  # authorized, waiting for the plug; status unchanged
    assert s.authorized_tag == "CARD1" and not s.tx_active

    s, cmds = step(s, VehicleChanged(B))
    assert cmds == [
        StartTx("CARD1", None),
        Lock(),
        SetCurrentLimit(32.0),
        PhaseChanged(Phase.SUSPENDED_EV),
    ]
    s, cmds = step(s, VehicleChanged(C))
    assert cmds == [CLOSE, PhaseChanged(Phase.CHARGING)]
    assert_consistent(s)


def test_second_tap_before_plug_cancels_4_9_b1() -> None:
    """4.9 B1: second presentation of the idTag ends the intended usage."""
    s, _ = run(initial_state(), TokenPresented("CARD1"), AuthResult("CARD1", True))
    s, cmds = step(s, TokenPresented("CARD1"))
    assert cmds == [PhaseChanged(Phase.AVAILABLE)]
    assert s.authorized_tag is None
    s, cmds = step(s, VehicleChanged(B))
    assert not any(isinstance(c, StartTx) for c in cmds)


def test_connection_timeout_9_1_6_cancels_pending_authorization() -> None:
    """9.1.6 ConnectionTimeOut / 4.9 B1: no plug within the timeout -> back to Available."""
    s, _ = run(
        initial_state(),
        SettingsChanged(connection_timeout_s=30.0, stop_on_ev_disconnect=True),
        Tick(100.0),
        TokenPresented("CARD1"),
        AuthResult("CARD1", True),
    )
    assert s.phase is Phase.PREPARING and s.authorized_at_s == 100.0

    s, cmds = step(s, Tick(129.9))
    assert cmds == [] and s.authorized_tag == "CARD1"

    s, cmds = step(s, Tick(130.0))
    assert cmds == [PhaseChanged(Phase.AVAILABLE)]
    assert s.authorized_tag is None

    s, cmds = step(s, VehicleChanged(B))  # plugging in later no longer starts anything
    assert cmds == [PhaseChanged(Phase.PREPARING)]
    assert not s.tx_active


def test_connection_timeout_zero_disables_the_timeout_9_1_6() -> None:
    s, _ = run(
        initial_state(),
        SettingsChanged(connection_timeout_s=0.0, stop_on_ev_disconnect=True),
        TokenPresented("CARD1"),
        AuthResult("CARD1", True),
        Tick(10_000.0),
    )
    assert s.authorized_tag == "CARD1"


def test_rejected_authorization_4_1_never_starts() -> None:
    """4.1 Authorize: a rejected idTag does not start a transaction nor close the contactor."""
    s, _ = run(initial_state(), VehicleChanged(B), TokenPresented("BAD"))
    s, cmds = step(s, AuthResult("BAD", False))
    assert cmds == []
    assert not s.tx_active and s.authorized_tag is None and s.authorizing is None
    s, cmds = step(s, VehicleChanged(C))
    assert cmds == []
    assert not s.contactor_closed and s.phase is Phase.PREPARING
    # A new card may be presented afterwards.
    s, cmds = step(s, TokenPresented("GOOD"))
    assert cmds == [RequestAuthorization("GOOD")]


def test_remote_start_5_11_and_remote_stop_5_12() -> None:
    """5.11 RemoteStartTransaction starts for the given idTag; 5.12 stop with reason Remote."""
    s, _ = step(initial_state(), VehicleChanged(B))
    assert can_start_remotely(s)
    s, cmds = step(s, RemoteStart("APP"))
    assert cmds == [
        StartTx("APP", None),
        Lock(),
        SetCurrentLimit(32.0),
        PhaseChanged(Phase.SUSPENDED_EV),
    ]
    s, cmds = step(s, VehicleChanged(C))
    assert cmds == [CLOSE, PhaseChanged(Phase.CHARGING)]
    assert not can_start_remotely(s)

    s, cmds = step(s, StopRequest(StopCause.REMOTE))
    assert cmds == [
        OPEN,
        SetCurrentLimit(0.0),
        StopTx(StopCause.REMOTE, None),
        PhaseChanged(Phase.FINISHING),
    ]
    assert not s.tx_active and not s.contactor_closed
    s, cmds = step(s, VehicleChanged(A))
    assert cmds == [Unlock(), PhaseChanged(Phase.AVAILABLE)]


def test_remote_start_before_plug_5_11() -> None:
    s, cmds = step(initial_state(), RemoteStart("APP"))
    assert cmds == [PhaseChanged(Phase.PREPARING)]
    s, cmds = step(s, VehicleChanged(C))
    assert cmds == [
        StartTx("APP", None),
        Lock(),
        SetCurrentLimit(32.0),
        CLOSE,
        PhaseChanged(Phase.CHARGING),
    ]


def test_remote_start_refused_while_transaction_running_5_11() -> None:
    s = charging()
    assert not can_start_remotely(s)
    s2, cmds = step(s, RemoteStart("OTHER"))
    assert cmds == [] and s2 == s


def test_stop_request_without_transaction_cancels_authorization() -> None:
    s, _ = run(initial_state(), TokenPresented("CARD1"), AuthResult("CARD1", True))
    s, cmds = step(s, StopRequest(StopCause.REMOTE))
    assert cmds == [PhaseChanged(Phase.AVAILABLE)]
    assert not any(isinstance(c, StopTx) for c in cmds)


# ----------------------------------------------------------------------------- EV disconnect


def test_unplug_while_charging_stops_with_ev_disconnected_4_10() -> None:
    """4.10 StopTransactionOnEVSideDisconnect=true: stopped with reason EVDisconnected."""
    s = charging()
    s, cmds = step(s, VehicleChanged(A))
    assert cmds == [
        OPEN,
        SetCurrentLimit(0.0),
        StopTx(StopCause.EV_DISCONNECTED, None),
        Unlock(),  # UnlockConnectorOnEVSideDisconnect defaults to true
        PhaseChanged(Phase.AVAILABLE),
    ]
    assert not s.tx_active and not s.locked and not s.finishing


def test_unplug_with_unlock_on_ev_disconnect_false_keeps_lock_4_10() -> None:
    s, _ = step(
        initial_state(),
        SettingsChanged(60.0, stop_on_ev_disconnect=True, unlock_on_ev_disconnect=False),
    )
    s = charging(s=s)
    s, cmds = step(s, VehicleChanged(A))
    assert StopTx(StopCause.EV_DISCONNECTED, None) in cmds
    assert Unlock() not in cmds and s.locked


def test_unplug_with_stop_on_ev_disconnect_false_keeps_transaction_4_9_4_10() -> None:
    """4.10 StopTransactionOnEVSideDisconnect=false: transaction stays open, cable stays locked.

    4.9: the status is SuspendedEV (NoError). Reconnecting allows energy transfer again.
    """
    s, _ = step(initial_state(), SettingsChanged(60.0, stop_on_ev_disconnect=False))
    s = charging(s=s)
    s, cmds = step(s, VehicleChanged(A))
    assert cmds == [OPEN, SetCurrentLimit(0.0), PhaseChanged(Phase.SUSPENDED_EV)]
    assert s.tx_active and s.locked and not s.contactor_closed
    assert (s.phase, s.condition) == (Phase.SUSPENDED_EV, None)

    s, cmds = step(s, VehicleChanged(B))  # reconnected: no new transaction
    assert not any(isinstance(c, StartTx) for c in cmds)
    assert cmds == [SetCurrentLimit(32.0)]  # still SuspendedEV: no PhaseChanged
    s, cmds = step(s, VehicleChanged(C))
    assert cmds == [CLOSE, PhaseChanged(Phase.CHARGING)]


# ----------------------------------------------------------------------------- faults


def test_fault_while_charging_opens_contactor_4_9_c9() -> None:
    """4.9 C9: a fault opens the contactor, status Faulted with the error code.

    The transaction itself stays open while the fault lasts (no StopTx).
    """
    s = charging()
    s, cmds = step(s, FaultChanged(FaultKind.GROUND))
    assert cmds == [OPEN, SetCurrentLimit(0.0), PhaseChanged(Phase.FAULTED, FaultKind.GROUND)]
    assert s.tx_active and not s.contactor_closed and s.offered_current_a == 0.0
    assert (s.phase, s.condition) == (Phase.FAULTED, FaultKind.GROUND)

    # Presenting another card or a remote start during the fault is refused.
    s2, cmds = step(s, RemoteStart("X"))
    assert cmds == [] and s2 == s

    # Stopping during the fault: contactor is already open, transaction ends, still Faulted.
    s_stop, cmds = step(s, StopRequest(StopCause.EMERGENCY_STOP))
    assert cmds == [StopTx(StopCause.EMERGENCY_STOP, None)]
    assert not s_stop.tx_active and s_stop.phase is Phase.FAULTED


def test_fault_cleared_returns_to_pre_fault_state_4_9() -> None:
    """4.9 'Fault is resolved and status returns to the pre-fault state'."""
    s, _ = step(charging(), FaultChanged(FaultKind.HIGH_TEMPERATURE))
    s, cmds = step(s, FaultChanged(None))
    assert cmds == [SetCurrentLimit(32.0), CLOSE, PhaseChanged(Phase.CHARGING)]
    assert s.contactor_closed

    s, cmds = run(initial_state(), FaultChanged(FaultKind.OTHER))
    assert cmds == [PhaseChanged(Phase.FAULTED, FaultKind.OTHER)]
    s, cmds = step(s, TokenPresented("CARD1"))
    assert cmds == []  # no authorization while faulted
    s, cmds = step(s, FaultChanged(None))
    assert cmds == [PhaseChanged(Phase.AVAILABLE)]


def test_fault_while_authorized_cancels_authorization_4_9_b9() -> None:
    s, _ = run(initial_state(), TokenPresented("CARD1"), AuthResult("CARD1", True))
    s, cmds = step(s, FaultChanged(FaultKind.GROUND))
    assert s.authorized_tag is None
    s, cmds = run(s, FaultChanged(None), VehicleChanged(C))
    assert not s.tx_active and not s.contactor_closed


def test_fault_code_change_is_notified_once() -> None:
    s, _ = step(initial_state(), FaultChanged(FaultKind.GROUND))
    s, cmds = step(s, FaultChanged(FaultKind.OVER_CURRENT))
    assert cmds == [PhaseChanged(Phase.FAULTED, FaultKind.OVER_CURRENT)]
    s, cmds = step(s, FaultChanged(FaultKind.OVER_CURRENT))
    assert cmds == []


@pytest.mark.parametrize("pilot", [E, F])
def test_pilot_error_e_f_opens_contactor_4_9(pilot: VehicleState) -> None:
    """Pilot state E/F: contactor opens; 4.9 says EVCommunicationError SHALL only be used with
    Preparing, SuspendedEV, SuspendedEVSE and Finishing (a warning), so not Faulted."""
    s = charging()
    s, cmds = step(s, VehicleChanged(pilot))
    # 7.6: EVCommunicationError "should go to the SuspendedEVSE state" (issue 9 item 4:
    # a silent EVSE board is the charger's side, not the EV's).
    assert cmds == [
        OPEN,
        SetCurrentLimit(0.0),
        PhaseChanged(Phase.SUSPENDED_EVSE, FaultKind.EV_COMMUNICATION),
    ]
    assert not s.contactor_closed and s.tx_active and s.offered_current_a == 0.0
    assert s.phase is not Phase.FAULTED
    s, cmds = step(s, VehicleChanged(C))
    assert cmds == [SetCurrentLimit(32.0), CLOSE, PhaseChanged(Phase.CHARGING)]


@pytest.mark.parametrize("pilot", [E, F])
def test_pilot_error_blocks_authorization(pilot: VehicleState) -> None:
    s, cmds = step(initial_state(), VehicleChanged(pilot))
    assert cmds == [PhaseChanged(Phase.PREPARING, FaultKind.EV_COMMUNICATION)]
    assert not can_start_remotely(s)
    s2, cmds = step(s, TokenPresented("CARD1"))
    assert cmds == [] and s2 == s
    s2, cmds = step(s, RemoteStart("CARD1"))
    assert cmds == [] and s2 == s
    s, cmds = step(s, VehicleChanged(B))  # pilot recovered: the warning is cleared
    assert cmds == [PhaseChanged(Phase.PREPARING)]
    assert can_start_remotely(s)


# ----------------------------------------------------------------------------- availability


def test_change_availability_inoperative_during_tx_is_scheduled_5_2() -> None:
    """5.2 ChangeAvailability: Scheduled during a transaction, applied when it ends (C8)."""
    s = charging()
    s, cmds = step(s, AvailabilityChanged(False))
    assert cmds == []  # deferred: keeps charging
    assert s.contactor_closed and s.operative and s.pending_operative is False

    s, cmds = step(s, TokenPresented("CARD1"))
    assert cmds == [
        OPEN,
        SetCurrentLimit(0.0),
        StopTx(StopCause.LOCAL, "CARD1"),
        PhaseChanged(Phase.UNAVAILABLE),
    ]
    assert not s.operative and s.pending_operative is None

    s, cmds = step(s, VehicleChanged(A))
    assert cmds == [Unlock()]  # still Unavailable: no PhaseChanged
    s, cmds = step(s, TokenPresented("CARD1"))
    assert cmds == []
    assert not can_start_remotely(s)

    s, cmds = step(s, AvailabilityChanged(True))  # H1
    assert cmds == [PhaseChanged(Phase.AVAILABLE)]


def test_change_availability_operative_cancels_scheduled_change_5_2() -> None:
    s, _ = run(charging(), AvailabilityChanged(False), AvailabilityChanged(True))
    assert s.pending_operative is None
    s, cmds = step(s, StopRequest(StopCause.REMOTE))
    assert PhaseChanged(Phase.FINISHING) in cmds and s.operative


def test_change_availability_inoperative_when_idle_is_immediate_5_2() -> None:
    s, cmds = step(initial_state(), AvailabilityChanged(False))  # A8
    assert cmds == [PhaseChanged(Phase.UNAVAILABLE)]
    s, cmds = run(s, VehicleChanged(C), RemoteStart("APP"), TokenPresented("CARD1"))
    assert not s.tx_active and not s.contactor_closed and s.phase is Phase.UNAVAILABLE


# ----------------------------------------------------------------------------- reservations


def test_reservation_5_13_reserved_other_card_refused_reserved_card_starts() -> None:
    """5.13 ReserveNow: Reserved (A7); other idTags refused; reservationId in StartTx (G2)."""
    s, cmds = step(initial_state(), ReservationChanged("RES", 7))
    assert cmds == [PhaseChanged(Phase.RESERVED)]

    s2, cmds = step(s, TokenPresented("OTHER"))
    assert cmds == [] and s2 == s

    s, cmds = step(s, TokenPresented("RES"))
    assert cmds == [RequestAuthorization("RES")]
    s, cmds = step(s, AuthResult("RES", True))
    assert cmds == [PhaseChanged(Phase.PREPARING)]
    s, cmds = step(s, VehicleChanged(B))
    assert StartTx("RES", 7) in cmds
    assert s.reserved_for is None and s.reservation_id is None  # reservation consumed


def test_reservation_cancelled_or_expired_5_1_returns_available() -> None:
    """5.1 CancelReservation / 4.9 G1."""
    s, _ = step(initial_state(), ReservationChanged("RES", 7))
    s, cmds = step(s, ReservationChanged(None, 7))
    assert cmds == [PhaseChanged(Phase.AVAILABLE)]
    assert s.reservation_id is None
    s, cmds = step(s, TokenPresented("OTHER"))
    assert cmds == [RequestAuthorization("OTHER"), PhaseChanged(Phase.PREPARING)]


def test_remote_start_other_tag_on_reserved_connector_5_13() -> None:
    """5.13: charging is refused for other idTags; reservationId only for the reserved idTag."""
    s, _ = run(initial_state(), ReservationChanged("RES", 7), VehicleChanged(B))
    s2, cmds = step(s, RemoteStart("OTHER"))
    starts = [c for c in cmds if isinstance(c, StartTx)]
    assert all(c.reservation_id is None or c.id_tag == "RES" for c in starts)
    assert cmds == [] and s2 == s  # ignored: the reservation still holds

    s, cmds = step(s, RemoteStart("RES"))
    assert cmds == [
        StartTx("RES", 7),
        Lock(),
        SetCurrentLimit(32.0),
        PhaseChanged(Phase.SUSPENDED_EV),
    ]
    assert s.reserved_for is None and s.reservation_id is None


def test_authorized_before_reservation_for_other_tag_5_13() -> None:
    s, _ = run(
        initial_state(),
        TokenPresented("CARD1"),
        AuthResult("CARD1", True),
        ReservationChanged("RES", 7),
    )
    s, cmds = step(s, VehicleChanged(B))
    starts = [c for c in cmds if isinstance(c, StartTx)]
    assert all(c.reservation_id is None or c.id_tag == "RES" for c in starts)
    assert starts == [] and cmds == []  # no transaction for CARD1 on a connector reserved for RES
    assert not s.tx_active and s.reserved_for == "RES" and s.phase is Phase.PREPARING
    s, cmds = step(s, VehicleChanged(C))
    assert cmds == [] and not s.contactor_closed


@pytest.mark.parametrize(
    "cancel", [FaultChanged(FaultKind.GROUND), AvailabilityChanged(False)], ids=repr
)
def test_fault_or_inoperative_cancels_reservation_5_13(cancel: Event) -> None:
    """5.13: a reservation is terminated when the connector becomes Faulted or Unavailable."""
    s, _ = step(initial_state(), ReservationChanged("RES", 7))
    s, cmds = step(s, cancel)
    assert s.reserved_for is None and s.reservation_id is None
    assert s.phase in (Phase.FAULTED, Phase.UNAVAILABLE)
    s, cmds = run(s, FaultChanged(None), AvailabilityChanged(True))
    assert s.phase is Phase.AVAILABLE  # not Reserved again
    s, cmds = run(s, RemoteStart("OTHER"), VehicleChanged(B))
    assert StartTx("OTHER", None) in cmds


# ----------------------------------------------------------------------------- smart charging


def test_current_limit_zero_suspends_evse_3_13_4_9_c5_e3() -> None:
    """3.13 smart charging limit 0 -> SuspendedEVSE (C5), raised again -> Charging (E3)."""
    s = charging()
    s, cmds = step(s, CurrentLimitChanged(0.0))
    assert cmds == [OPEN, SetCurrentLimit(0.0), PhaseChanged(Phase.SUSPENDED_EVSE)]
    assert not s.contactor_closed and s.tx_active and s.offered_current_a == 0.0

    s, cmds = step(s, CurrentLimitChanged(16.0))
    assert cmds == [SetCurrentLimit(16.0), CLOSE, PhaseChanged(Phase.CHARGING)]
    assert s.contactor_closed and s.offered_current_a == 16.0


def test_current_limit_is_capped_and_lowered_before_anything_else_3_13() -> None:
    s = charging()
    s, cmds = step(s, CurrentLimitChanged(100.0))
    assert cmds == []  # capped at the connector maximum: nothing changes
    s, cmds = step(s, CurrentLimitChanged(10.5))
    assert cmds == [SetCurrentLimit(10.5)]  # no status change -> no PhaseChanged
    s, cmds = step(s, CurrentLimitChanged(-3.0))  # negative treated as 0
    assert cmds == [OPEN, SetCurrentLimit(0.0), PhaseChanged(Phase.SUSPENDED_EVSE)]
    assert s.limit_a == 0.0


def test_suspended_evse_has_precedence_over_suspended_ev_4_9() -> None:
    """4.9: if suspended both by EV and EVSE, SuspendedEVSE has precedence."""
    s, _ = run(charging(), VehicleChanged(B))
    assert s.phase is Phase.SUSPENDED_EV  # C4
    s, cmds = step(s, CurrentLimitChanged(0.0))
    assert cmds == [SetCurrentLimit(0.0), PhaseChanged(Phase.SUSPENDED_EVSE)]


# ----------------------------------------------------------------------------- notifications


def test_status_notification_4_9_once_per_change_never_without_change() -> None:
    s = initial_state()
    events: list[Event] = [
        Tick(1.0),
        SettingsChanged(60.0, True),
        VehicleChanged(B),
        VehicleChanged(B),
        TokenPresented("CARD1"),
        AuthResult("CARD1", True),
        CurrentLimitChanged(20.0),
        VehicleChanged(C),
        VehicleChanged(D),
        VehicleChanged(C),
        Tick(2.0),
        StopRequest(StopCause.LOCAL),
        VehicleChanged(A),
        VehicleChanged(A),
    ]
    seen: list[Phase] = []
    for ev in events:
        old = s
        s, cmds = step(s, ev)
        n = notifies(cmds)
        if (s.phase, s.condition) == (old.phase, old.condition):
            assert n == [], ev
        else:
            assert n == [PhaseChanged(s.phase, s.condition)], ev
            seen.append(s.phase)
        assert_consistent(s)
    assert seen == [
        Phase.PREPARING,
        Phase.SUSPENDED_EV,
        Phase.CHARGING,
        Phase.FINISHING,
        Phase.AVAILABLE,
    ]


def test_notify_for_ticks_and_settings_never() -> None:
    s = charging()
    for ev in (Tick(5.0), Tick(500.0), SettingsChanged(1.0, False, False)):
        s, cmds = step(s, ev)
        assert cmds == []


# ----------------------------------------------------------------------------- authorization


def test_stale_auth_result_is_ignored_4_1() -> None:
    s, _ = run(initial_state(), VehicleChanged(B), TokenPresented("CARD1"))
    s2, cmds = step(s, AuthResult("OTHER", True))
    assert cmds == [] and s2 == s

    # Authorization abandoned by unplugging; its late answer must not authorize.
    s, _ = step(s, VehicleChanged(A))
    assert s.authorizing is None
    s, cmds = run(s, AuthResult("CARD1", True), VehicleChanged(B))
    assert s.authorized_tag is None and not s.tx_active
    assert not any(isinstance(c, StartTx) for c in cmds)


def test_duplicate_auth_result_is_ignored() -> None:
    s, _ = run(
        initial_state(), VehicleChanged(B), TokenPresented("CARD1"), AuthResult("CARD1", True)
    )
    s2, cmds = step(s, AuthResult("CARD1", True))
    assert cmds == [] and s2 == s


def test_same_parent_id_tag_stops_transaction_3_10() -> None:
    """3.10 Parent idTag: another token of the same group stops the transaction."""
    s = charging("CARD1", parent="FAMILY")
    s, cmds = step(s, TokenPresented("CARD2"))
    assert cmds == [RequestAuthorization("CARD2")]
    assert s.contactor_closed  # still charging while the card is checked

    s, cmds = step(s, AuthResult("CARD2", True, "FAMILY"))
    assert cmds == [
        OPEN,
        SetCurrentLimit(0.0),
        StopTx(StopCause.LOCAL, "CARD2"),
        PhaseChanged(Phase.FINISHING),
    ]


@pytest.mark.parametrize(
    "result",
    [
        AuthResult("CARD2", True, "OTHERS"),
        AuthResult("CARD2", True, None),
        AuthResult("CARD2", False, "FAMILY"),
    ],
)
def test_other_card_without_matching_parent_does_not_stop_3_10(result: AuthResult) -> None:
    s = charging("CARD1", parent="FAMILY")
    s, _ = step(s, TokenPresented("CARD2"))
    s, cmds = step(s, result)
    assert cmds == []
    assert s.tx_active and s.contactor_closed and s.authorizing is None


def test_remote_started_transaction_not_stopped_by_parent_match_3_10() -> None:
    s, _ = run(initial_state(), RemoteStart("APP"), VehicleChanged(C))
    s, _ = run(s, TokenPresented("CARD2"), AuthResult("CARD2", True, "FAMILY"))
    assert s.tx_active and s.contactor_closed


# ----------------------------------------------------------------------------- unlock


def test_stop_request_unlock_command_5_18_unlocks() -> None:
    """5.18 UnlockConnector: stop with reason UnlockCommand, contactor open first, unlock."""
    s = charging()
    s, cmds = step(s, StopRequest(StopCause.UNLOCK_COMMAND))
    assert cmds == [
        OPEN,
        SetCurrentLimit(0.0),
        StopTx(StopCause.UNLOCK_COMMAND, None),
        Unlock(),
        PhaseChanged(Phase.FINISHING),
    ]
    assert not s.locked and not s.tx_active


def test_unlock_command_after_transaction_5_18() -> None:
    s, _ = step(charging(), StopRequest(StopCause.LOCAL))
    assert s.locked
    s, cmds = step(s, StopRequest(StopCause.UNLOCK_COMMAND))
    assert cmds == [Unlock()]
    s, cmds = step(s, StopRequest(StopCause.UNLOCK_COMMAND))
    assert cmds == []  # already unlocked


@pytest.mark.parametrize("unlock_on_ev_disconnect", [True, False])
@pytest.mark.parametrize(
    "stop",
    [
        TokenPresented("CARD1"),
        StopRequest(StopCause.REMOTE),
        StopRequest(StopCause.UNLOCK_COMMAND),
        StopRequest(StopCause.HARD_RESET),
    ],
    ids=repr,
)
def test_stop_after_ev_side_disconnect_unlocks_4_10(
    stop: Event, unlock_on_ev_disconnect: bool
) -> None:
    """4.10: with StopTransactionOnEVSideDisconnect=false the cable stays locked 'until the
    user presents the identifier'; ending the transaction (any reason) then unlocks."""
    s, _ = step(
        initial_state(),
        SettingsChanged(60.0, False, unlock_on_ev_disconnect),
    )
    s, _ = step(charging(s=s), VehicleChanged(A))
    assert s.tx_active and s.locked
    s, cmds = step(s, stop)
    assert any(isinstance(c, StopTx) for c in cmds)
    assert Unlock() in cmds and not s.locked
    assert cmds.count(Unlock()) == 1
    assert cmds.index(Unlock()) > cmds.index(next(c for c in cmds if isinstance(c, StopTx)))
    assert s.phase is Phase.AVAILABLE and not s.tx_active


@pytest.mark.parametrize("unlock_on_ev_disconnect", [True, False])
def test_ev_disconnected_stop_after_ev_side_disconnect_4_10(
    unlock_on_ev_disconnect: bool,
) -> None:
    """A transaction kept over an EV-side unplug and ended with reason EVDisconnected unlocks
    only if UnlockConnectorOnEVSideDisconnect is true."""
    s, _ = step(initial_state(), SettingsChanged(60.0, False, unlock_on_ev_disconnect))
    s, _ = step(charging(s=s), VehicleChanged(A))
    s, cmds = step(s, StopRequest(StopCause.EV_DISCONNECTED))
    assert StopTx(StopCause.EV_DISCONNECTED, None) in cmds and not s.tx_active
    assert (Unlock() in cmds) is unlock_on_ev_disconnect
    assert s.locked is not unlock_on_ev_disconnect


def test_authorized_then_pilot_recovers_starts_transaction_3_6() -> None:
    s, _ = run(
        initial_state(),
        TokenPresented("CARD1"),
        AuthResult("CARD1", True),
        VehicleChanged(E),
    )
    s, cmds = step(s, VehicleChanged(B))
    assert StartTx("CARD1", None) in cmds and s.tx_active


def test_remote_start_then_pilot_error_then_recovery_starts_transaction_3_6() -> None:
    s, cmds = run(initial_state(), RemoteStart("APP"), VehicleChanged(E))
    assert not any(isinstance(c, StartTx) for c in cmds)
    assert (s.phase, s.condition) == (Phase.PREPARING, FaultKind.EV_COMMUNICATION)
    s, cmds = step(s, VehicleChanged(C))
    assert cmds == [
        StartTx("APP", None),
        Lock(),
        SetCurrentLimit(32.0),
        CLOSE,
        PhaseChanged(Phase.CHARGING),
    ]


# ----------------------------------------------------------------------------- new session


def test_card_presented_in_finishing_starts_new_transaction_4_9() -> None:
    """A card presented in Finishing (cable still plugged) starts a new transaction."""
    s, _ = step(charging(), StopRequest(StopCause.LOCAL))
    assert s.phase is Phase.FINISHING and s.locked
    s, cmds = step(s, TokenPresented("CARD2"))
    assert cmds == [RequestAuthorization("CARD2")]
    s, cmds = step(s, AuthResult("CARD2", True))
    assert cmds == [
        StartTx("CARD2", None),
        SetCurrentLimit(32.0),
        CLOSE,
        PhaseChanged(Phase.CHARGING),
    ]
    assert s.tx_active and s.contactor_closed and s.locked and not s.finishing


def test_remote_start_in_finishing_starts_new_transaction_5_11() -> None:
    s, _ = step(charging(), StopRequest(StopCause.LOCAL))
    assert can_start_remotely(s)
    s, cmds = step(s, RemoteStart("APP"))
    assert cmds == [
        StartTx("APP", None),
        SetCurrentLimit(32.0),
        CLOSE,
        PhaseChanged(Phase.CHARGING),
    ]


@pytest.mark.parametrize(
    "authorize",
    [
        (TokenPresented("CARD1"), AuthResult("CARD1", True)),
        (RemoteStart("CARD1"),),
    ],
    ids=["local", "remote"],
)
def test_other_card_while_authorized_is_ignored(authorize: tuple[Event, ...]) -> None:
    s, _ = run(initial_state(), *authorize)
    assert s.authorized_tag == "CARD1" and not s.tx_active
    for ev in (TokenPresented("CARD2"), RemoteStart("CARD2")):
        s2, cmds = step(s, ev)
        assert cmds == [] and s2 == s
    s, cmds = step(s, VehicleChanged(B))
    assert StartTx("CARD1", None) in cmds


# ----------------------------------------------------------------------------- minimum current


def test_limit_below_iec_61851_minimum_offers_nothing() -> None:
    """IEC 61851-1: below 6 A the pilot cannot advertise a current: nothing is offered."""
    s = charging()
    s, cmds = step(s, CurrentLimitChanged(5.9))
    assert cmds == [OPEN, SetCurrentLimit(0.0), PhaseChanged(Phase.SUSPENDED_EVSE)]
    assert s.offered_current_a == 0.0 and s.tx_active and not s.contactor_closed
    s, cmds = step(s, CurrentLimitChanged(6.0))
    assert cmds == [SetCurrentLimit(6.0), CLOSE, PhaseChanged(Phase.CHARGING)]
    s, cmds = step(s, CurrentLimitChanged(0.5))
    assert cmds == [OPEN, SetCurrentLimit(0.0), PhaseChanged(Phase.SUSPENDED_EVSE)]


def test_connector_maximum_below_minimum_never_charges() -> None:
    s, cmds = run(
        initial_state(max_current_a=5.0), VehicleChanged(B), RemoteStart("APP"), VehicleChanged(C)
    )
    assert s.tx_active and not s.contactor_closed and s.offered_current_a == 0.0
    assert s.phase is Phase.SUSPENDED_EVSE


# ----------------------------------------------------------------------------- invalid idTag
# 3.5.4 / 4.8 with errata 3.17, 9.1.14 MaxEnergyOnInvalidId, 9.1.24 StopTransactionOnInvalidId


from controller.core.connector import Deauthorized, EnergyMeasured, ResumeTx  # noqa: E402


def test_deauthorized_without_allowance_suspends_energy_keeps_tx() -> None:
    """3.5.4: StopTransactionOnInvalidId=false -> only stop energy delivery (SuspendedEVSE,
    7.7 errata 3.64); the transaction and the cable lock stay."""
    s, cmds = step(charging(), Deauthorized(None))
    assert cmds == [OPEN, SetCurrentLimit(0.0), PhaseChanged(Phase.SUSPENDED_EVSE)]
    assert s.tx_active and s.locked and s.deauthorized
    # Pilot B (the car stops asking once the offer is 0) and back: still no energy.
    s, cmds = run(s, VehicleChanged(B), VehicleChanged(C))
    assert not s.contactor_closed
    s, cmds = step(s, TokenPresented("CARD1"))  # the owner ends it
    assert StopTx(StopCause.LOCAL, "CARD1") in cmds
    assert not s.deauthorized


def test_deauthorized_ignored_without_transaction() -> None:
    s, cmds = step(initial_state(), Deauthorized(None))
    assert cmds == [] and not s.deauthorized


def test_resume_tx_runs_without_start_tx() -> None:
    s, cmds = run(initial_state(), VehicleChanged(B), ResumeTx("CARD1", "FLEET"))
    assert s.tx_active and s.authorized_tag == "CARD1" and s.authorized_parent == "FLEET"
    assert not any(isinstance(c, StartTx) for c in cmds)
    assert Lock() in cmds
    s, cmds = step(s, VehicleChanged(C))
    assert s.contactor_closed and cmds[-2:] == [CLOSE, PhaseChanged(Phase.CHARGING)]


@pytest.mark.parametrize(
    "setup",
    [
        [VehicleChanged(A)],
        [VehicleChanged(E)],
        [VehicleChanged(B), FaultChanged(FaultKind.GROUND)],
        [VehicleChanged(B), AvailabilityChanged(False)],
    ],
)
def test_resume_tx_refused_when_connector_cannot_charge(setup: list[Event]) -> None:
    s, _ = run(initial_state(), *setup)
    s, cmds = step(s, ResumeTx("CARD1"))
    assert not s.tx_active and not s.contactor_closed
    assert not any(isinstance(c, Lock | StartTx) for c in cmds)


def test_resume_tx_keeps_invalidation() -> None:
    s, _ = run(initial_state(), VehicleChanged(C), ResumeTx("CARD1", None, True, 2000.0))
    assert s.contactor_closed  # allowance left
    s, cmds = step(s, EnergyMeasured(2000.0))
    assert not s.contactor_closed and s.phase is Phase.SUSPENDED_EVSE
    s, _ = run(initial_state(), VehicleChanged(C), ResumeTx("CARD1", None, True, None))
    assert not s.contactor_closed and s.phase is Phase.SUSPENDED_EVSE


# ------------------------------------------------------------------ no reading, no energy
# Issue 9: a connector whose meter has not answered since start has no register to take
# meterStart from: the session waits (Preparing), no transaction starts, the contactor and
# the pilot stay off. MeterReady (the first good reading) lets it go on.


def test_no_transaction_before_the_meter_answered_card_first() -> None:
    s = _initial_state()
    s, cmds = run(s, VehicleChanged(B), TokenPresented("CARD1"), AuthResult("CARD1", True))
    assert cmds == []  # authorized and plugged, but no StartTx, no current, no Lock
    assert not s.tx_active and not s.contactor_closed and s.offered_current_a == 0.0
    assert (s.phase, s.condition) == (Phase.PREPARING, None)
    s, cmds = step(s, VehicleChanged(C))
    assert not s.tx_active and not s.contactor_closed and s.offered_current_a == 0.0
    s, cmds = step(s, MeterReady())
    assert cmds == [
        StartTx("CARD1", None),
        Lock(),
        SetCurrentLimit(32.0),
        CLOSE,
        PhaseChanged(Phase.CHARGING),
    ]


def test_no_remote_start_before_the_meter_answered() -> None:
    s = _initial_state()
    s, cmds = run(s, RemoteStart("APP"), VehicleChanged(C))
    assert not s.tx_active and not s.contactor_closed
    assert s.phase is Phase.PREPARING
    s, cmds = step(s, MeterReady())
    assert StartTx("APP", None) in cmds and CLOSE in cmds


def test_waiting_session_ends_when_the_meter_fault_comes() -> None:
    """The meter never answers: after the runtime's failed-read bound it is Faulted
    (PowerMeterFailure), and the waiting authorization is dropped (nothing started)."""
    s = _initial_state()
    s, _ = run(s, VehicleChanged(C), TokenPresented("CARD1"), AuthResult("CARD1", True))
    s, cmds = step(s, FaultChanged(FaultKind.METER))
    assert cmds == [PhaseChanged(Phase.FAULTED, FaultKind.METER)]
    assert s.authorized_tag is None and not s.tx_active
    s, cmds = run(s, FaultChanged(None), MeterReady())
    assert not s.tx_active and not any(isinstance(c, StartTx) for c in cmds)


def test_resume_needs_a_meter_reading() -> None:
    s, _ = run(_initial_state(), VehicleChanged(C))
    s, cmds = step(s, ResumeTx("CARD1"))
    assert not s.tx_active and cmds == []
    s, cmds = run(s, MeterReady(), ResumeTx("CARD1"))
    assert s.tx_active and CLOSE in cmds
