"""The session events of the connector state machine, session by session.

An adapter derives OCPP 2.0.1 TransactionEvent trigger reasons from these (E01-E07, F01-F03
in /work/shared/ocpp-spec/2.0.1/OCPP-2.0.1_edition3_part2_specification.md); the 1.6
adapter ignores them. The commands that move hardware are pinned in test_connector.py.
"""

from __future__ import annotations

import pytest

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
    MeterReady,
    PausedBy,
    RemoteStart,
    ReservationChanged,
    ResumeTx,
    SessionEvent,
    SessionEventKind,
    SettingsChanged,
    StartTx,
    StopCause,
    StopRequest,
    StopTx,
    SwitchContactor,
    Tick,
    TokenPresented,
    VehicleChanged,
    initial_state,
    step,
)
from hal.base import FaultKind, VehicleState

K = SessionEventKind
A, B, C, E = VehicleState.A, VehicleState.B, VehicleState.C, VehicleState.E
CARD = "CARD1"

EV_CONNECTED = SessionEvent(K.EV_CONNECTED)
EV_DISCONNECTED = SessionEvent(K.EV_DISCONNECTED)
FLOWING = SessionEvent(K.ENERGY_FLOWING)
PAUSED_BY_EV = SessionEvent(K.ENERGY_PAUSED, paused_by=PausedBy.EV)
PAUSED_BY_EVSE = SessionEvent(K.ENERGY_PAUSED, paused_by=PausedBy.EVSE)


def session_events(cmds: list[Command]) -> list[SessionEvent]:
    return [c for c in cmds if isinstance(c, SessionEvent)]


class Connector:
    """A connector whose meter has answered; ``do`` returns the session events of a step."""

    def __init__(self, s: ConnectorState | None = None) -> None:
        self.s = s if s is not None else initial_state(meter_ready=True)
        self.cmds: list[Command] = []

    def do(self, event: Event) -> list[SessionEvent]:
        self.s, self.cmds = step(self.s, event)
        return session_events(self.cmds)


def started(tag: str = CARD, reservation_id: int | None = None) -> SessionEvent:
    return SessionEvent(K.TRANSACTION_STARTED, id_tag=tag, reservation_id=reservation_id)


def ended(cause: StopCause, tag: str | None = None) -> SessionEvent:
    return SessionEvent(K.TRANSACTION_ENDED, id_tag=tag, cause=cause)


def test_normal_session_plug_tap_charge_suspend_resume_unplug() -> None:
    """E02 (cable plugin first): CablePluggedIn, Authorized, ChargingStateChanged for
    Charging / SuspendedEV / Charging, then EVCommunicationLost with stoppedReason
    EVDisconnected."""
    c = Connector()
    assert c.do(VehicleChanged(B)) == [EV_CONNECTED]
    assert c.do(TokenPresented(CARD)) == []  # asking is not yet an authorization
    assert c.do(AuthResult(CARD, True)) == [
        SessionEvent(K.AUTHORIZED, id_tag=CARD),
        started(),
        PAUSED_BY_EV,  # energy offered, the EV (state B) does not take it yet
    ]
    assert c.do(VehicleChanged(C)) == [FLOWING]
    # Announced after the contactor closed, as the last hardware command.
    assert c.cmds.index(FLOWING) > c.cmds.index(SwitchContactor(True))
    assert c.do(VehicleChanged(B)) == [PAUSED_BY_EV]  # the EV suspends
    assert c.cmds[0] == SwitchContactor(False)
    assert c.do(VehicleChanged(C)) == [FLOWING]  # and resumes
    assert c.do(Tick(10.0)) == []
    assert c.do(VehicleChanged(A)) == [EV_DISCONNECTED, ended(StopCause.EV_DISCONNECTED)]
    # Each TRANSACTION_* right after the command that records it.
    i = c.cmds.index(ended(StopCause.EV_DISCONNECTED))
    assert c.cmds[i - 1] == StopTx(StopCause.EV_DISCONNECTED)


def test_tap_first_then_plug_starts_on_plug() -> None:
    """E03 (IdToken first): Authorized before the cable, the transaction with it."""
    c = Connector()
    c.do(TokenPresented(CARD))
    assert c.do(AuthResult(CARD, True, "FLEET")) == [
        SessionEvent(K.AUTHORIZED, id_tag=CARD, parent_id_tag="FLEET")
    ]
    assert c.do(VehicleChanged(C)) == [EV_CONNECTED, started(), FLOWING]
    assert c.cmds.index(started()) == c.cmds.index(StartTx(CARD)) + 1


def test_rejected_card_is_no_session_event() -> None:
    c = Connector()
    c.do(VehicleChanged(B))
    c.do(TokenPresented(CARD))
    assert c.do(AuthResult(CARD, False)) == []


def test_remote_start_and_remote_stop() -> None:
    """F01: triggerReason RemoteStart (AUTHORIZED with remote); F03: RemoteStop."""
    c = Connector()
    assert c.do(RemoteStart(CARD)) == [SessionEvent(K.AUTHORIZED, id_tag=CARD, remote=True)]
    assert c.do(VehicleChanged(C)) == [EV_CONNECTED, started(), FLOWING]
    assert c.do(StopRequest(StopCause.REMOTE)) == [ended(StopCause.REMOTE)]
    assert c.do(VehicleChanged(A)) == [EV_DISCONNECTED]  # after the end: no transaction word


def test_remote_start_on_plugged_connector_with_reservation() -> None:
    c = Connector()
    c.do(ReservationChanged(CARD, 7))
    assert c.do(VehicleChanged(B)) == [EV_CONNECTED]
    assert c.do(RemoteStart(CARD)) == [
        SessionEvent(K.AUTHORIZED, id_tag=CARD, remote=True),
        started(reservation_id=7),  # E01.FR.13: this transaction ends a reservation
        PAUSED_BY_EV,
    ]


def test_stop_by_the_same_card() -> None:
    """E06/E07: StopAuthorized, stoppedReason Local, the card's idToken."""
    c = Connector()
    for ev in (VehicleChanged(C), TokenPresented(CARD), AuthResult(CARD, True)):
        c.do(ev)
    assert c.s.contactor_closed
    assert c.do(TokenPresented(CARD)) == [
        SessionEvent(K.STOP_AUTHORIZED, id_tag=CARD),
        ended(StopCause.LOCAL, CARD),
    ]
    assert c.cmds[0] == SwitchContactor(False)
    assert c.do(VehicleChanged(A)) == [EV_DISCONNECTED]


def test_stop_by_a_card_of_the_same_group() -> None:
    """C09 / 1.6 3.10: another card with the same parent (group) idTag ends it."""
    c = Connector()
    for ev in (VehicleChanged(C), TokenPresented(CARD), AuthResult(CARD, True, "FLEET")):
        c.do(ev)
    assert c.do(TokenPresented("CARD2")) == []  # being asked about
    assert c.do(AuthResult("CARD2", True, "FLEET")) == [
        SessionEvent(K.STOP_AUTHORIZED, id_tag="CARD2"),
        ended(StopCause.LOCAL, "CARD2"),
    ]


def test_other_card_without_the_group_stops_nothing() -> None:
    c = Connector()
    for ev in (VehicleChanged(C), TokenPresented(CARD), AuthResult(CARD, True, "FLEET")):
        c.do(ev)
    c.do(TokenPresented("CARD2"))
    assert c.do(AuthResult("CARD2", True, "OTHER")) == []
    assert c.s.contactor_closed


def test_fault_mid_session_pauses_and_resumes_energy() -> None:
    """AbnormalCondition: ENERGY_PAUSED by the EVSE names the fault; the transaction goes
    on and energy flows again once the fault clears."""
    c = Connector()
    for ev in (VehicleChanged(C), TokenPresented(CARD), AuthResult(CARD, True)):
        c.do(ev)
    assert c.do(FaultChanged(FaultKind.GROUND)) == [
        SessionEvent(K.ENERGY_PAUSED, paused_by=PausedBy.EVSE, condition=FaultKind.GROUND)
    ]
    assert c.cmds[0] == SwitchContactor(False) and c.s.tx_active
    assert c.do(FaultChanged(FaultKind.OVER_CURRENT)) == [
        SessionEvent(K.ENERGY_PAUSED, paused_by=PausedBy.EVSE, condition=FaultKind.OVER_CURRENT)
    ]
    assert c.do(FaultChanged(None)) == [FLOWING]
    assert c.do(StopRequest(StopCause.EMERGENCY_STOP)) == [ended(StopCause.EMERGENCY_STOP)]


def test_pilot_error_pauses_with_ev_communication() -> None:
    c = Connector()
    for ev in (VehicleChanged(C), RemoteStart(CARD)):
        c.do(ev)
    assert c.do(VehicleChanged(E)) == [
        SessionEvent(K.ENERGY_PAUSED, paused_by=PausedBy.EVSE, condition=FaultKind.EV_COMMUNICATION)
    ]
    assert c.do(VehicleChanged(C)) == [FLOWING]  # E is still "plugged": no EV_* event


def test_smart_charging_limit_pauses_by_the_evse() -> None:
    """SuspendedEVSE: nothing offered (limit 0), then SuspendedEV once offered again."""
    c = Connector()
    for ev in (VehicleChanged(B), RemoteStart(CARD)):
        c.do(ev)
    assert c.do(CurrentLimitChanged(0.0)) == [limit_changed(32.0, 0.0), PAUSED_BY_EVSE]
    assert c.do(CurrentLimitChanged(16.0)) == [limit_changed(0.0, 16.0), PAUSED_BY_EV]
    assert c.do(VehicleChanged(C)) == [FLOWING]
    # A lower rate still flows; only the ceiling is news (ChargingRateChanged).
    assert c.do(CurrentLimitChanged(10.0)) == [limit_changed(16.0, 10.0)]


def limit_changed(before_a: float, after_a: float) -> SessionEvent:
    return SessionEvent(K.LIMIT_CHANGED, previous_limit_a=before_a, limit_a=after_a)


def test_limit_changes_of_a_running_transaction_only() -> None:
    """LIMIT_CHANGED (2.0.1 ChargingRateChanged, K11.FR.04): only while a transaction runs,
    only when the ceiling (the limit, at most the hardware) moves."""
    c = Connector()
    assert c.do(CurrentLimitChanged(10.0)) == []  # no transaction
    for ev in (VehicleChanged(C), RemoteStart(CARD)):
        c.do(ev)
    assert c.do(CurrentLimitChanged(40.0)) == [limit_changed(10.0, 32.0)]
    assert c.do(CurrentLimitChanged(50.0)) == []  # still the hardware's 32 A


def test_deauthorized_once_then_paused_when_the_allowance_is_used() -> None:
    """Deauthorized (E05): announced once; energy stops when the allowance is used up."""
    c = Connector()
    for ev in (VehicleChanged(C), TokenPresented(CARD), AuthResult(CARD, True)):
        c.do(ev)
    assert c.do(Deauthorized(1500.0)) == [SessionEvent(K.DEAUTHORIZED)]
    assert c.do(Deauthorized(1200.0)) == []  # a second invalidation is no news
    assert c.do(EnergyMeasured(1200.0)) == [PAUSED_BY_EVSE]
    assert c.do(StopRequest(StopCause.DE_AUTHORIZED)) == [ended(StopCause.DE_AUTHORIZED)]


def test_unplug_with_transaction_kept() -> None:
    """StopTransactionOnEVSideDisconnect=false: EV gone, transaction open, paused by the EV."""
    c = Connector()
    c.do(SettingsChanged(60.0, stop_on_ev_disconnect=False))
    for ev in (VehicleChanged(C), RemoteStart(CARD)):
        c.do(ev)
    assert c.do(VehicleChanged(A)) == [EV_DISCONNECTED, PAUSED_BY_EV]
    assert c.s.tx_active
    assert c.do(VehicleChanged(C)) == [EV_CONNECTED, FLOWING]


@pytest.mark.parametrize(
    ("cancel", "timed_out"),
    [
        (TokenPresented(CARD), False),  # second tap
        (StopRequest(StopCause.REMOTE), False),
        (FaultChanged(FaultKind.GROUND), False),
        (AvailabilityChanged(False), False),
        (Tick(60.0), True),  # ConnectionTimeOut: EVConnectTimeout
    ],
)
def test_authorization_without_transaction_is_cancelled(cancel: Event, timed_out: bool) -> None:
    c = Connector()
    c.do(TokenPresented(CARD))
    c.do(AuthResult(CARD, True))
    assert c.do(cancel) == [
        SessionEvent(K.AUTHORIZATION_CANCELLED, id_tag=CARD, timed_out=timed_out)
    ]
    assert c.s.authorized_tag is None


def test_authorized_then_unplugged_before_the_meter_answered() -> None:
    """No reading, no transaction: plugged and authorized, then unplugged -> cancelled."""
    c = Connector(initial_state())
    c.do(VehicleChanged(B))
    c.do(TokenPresented(CARD))
    assert c.do(AuthResult(CARD, True)) == [SessionEvent(K.AUTHORIZED, id_tag=CARD)]
    assert c.do(VehicleChanged(A)) == [
        EV_DISCONNECTED,
        SessionEvent(K.AUTHORIZATION_CANCELLED, id_tag=CARD),
    ]
    assert c.do(MeterReady()) == []


def test_power_loss_resume() -> None:
    """A transaction a restart left open is re-attached: TRANSACTION_STARTED with resumed
    (the backend knows it; no Started message), then its charging state."""
    c = Connector()
    assert c.do(VehicleChanged(C)) == [EV_CONNECTED]
    assert c.do(ResumeTx(CARD, "FLEET")) == [
        SessionEvent(K.TRANSACTION_STARTED, id_tag=CARD, resumed=True),
        FLOWING,
    ]
    assert not any(isinstance(cmd, StartTx) for cmd in c.cmds)
    assert c.do(TokenPresented(CARD)) == [
        SessionEvent(K.STOP_AUTHORIZED, id_tag=CARD),
        ended(StopCause.LOCAL, CARD),
    ]


def test_resume_of_an_invalidated_transaction_starts_paused() -> None:
    c = Connector()
    c.do(VehicleChanged(C))
    assert c.do(ResumeTx(CARD, deauthorized=True)) == [
        SessionEvent(K.TRANSACTION_STARTED, id_tag=CARD, resumed=True),
        PAUSED_BY_EVSE,
    ]


def test_resume_refused_is_silent() -> None:
    """Not plugged: nothing resumes (the runtime closes it) and nothing is announced."""
    c = Connector()
    assert c.do(ResumeTx(CARD)) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": K.TRANSACTION_ENDED},
        {"kind": K.ENERGY_PAUSED},
        {"kind": K.AUTHORIZED},
        {"kind": K.STOP_AUTHORIZED},
    ],
)
def test_events_carry_what_their_kind_needs(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SessionEvent(**kwargs)  # type: ignore[arg-type]
