"""The version-neutral reservation rules (controller/core/reservations.py) and the connector
state machine's side of them (OCPP 1.6 5.13; 2.0.1 H01-H04)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.core import connector as sm
from controller.core.reservations import (
    ConnectorSituation,
    Reservation,
    ReserveResult,
    decide,
    expired,
    holds,
    may_use,
    needs_parent,
)
from hal.base import FaultKind, VehicleState

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)


def res(rid: int, cid: int, tag: str = "A", parent: str | None = None) -> Reservation:
    return Reservation(rid, cid, tag, LATER, parent)


def free(cid: int, rid: int | None = None) -> ConnectorSituation:
    return ConnectorSituation(cid, idle=True, reservation_id=rid)


def busy(cid: int, rid: int | None = None) -> ConnectorSituation:
    return ConnectorSituation(cid, idle=False, reservation_id=rid)


def answer(request: Reservation, conns: list[ConnectorSituation], held: list[Reservation]) -> str:
    return decide(request, conns, held, now=NOW, any_connector_supported=True).value


# ----------------------------------------------------------------------------- who may use it


def test_may_use_reserved_tag_case_insensitive_or_same_parent() -> None:
    """5.13: the idTag, or a card whose parent idTag is the reservation's (IdToken is
    CiString20Type: errata 3.74/3.75)."""
    r = res(1, 1, "04a1b2c3", parent="FLEET")
    assert may_use(r, "04A1B2C3", None)
    assert may_use(r, "OTHER", "fleet")
    assert not may_use(r, "OTHER", "FAMILY")
    assert not may_use(r, "OTHER", None)
    # 3.10: a parent id is not compared against a presented token value.
    assert not may_use(r, "FLEET", None)
    assert not may_use(res(1, 1, "A"), "B", "A")


def test_needs_parent_only_for_group_reservations() -> None:
    """Another card is authorized (to learn its parent) only when the reservation has a
    parent idTag; otherwise it is refused without an Authorize.req (OCTT TC_046_1_CS)."""
    assert needs_parent(res(1, 1, "A", "G"), "B")
    assert not needs_parent(res(1, 1, "A", "G"), "a")
    assert not needs_parent(res(1, 1, "A"), "B")


def test_expired_at_the_expiry_date() -> None:
    r = res(1, 1)
    assert not expired(r, LATER - timedelta(seconds=1))
    assert expired(r, LATER)


# ----------------------------------------------------------------------------- the answer


def test_specific_connector_answers() -> None:
    """7.40 for one connector: Faulted, Unavailable, Occupied (busy, or reserved by another
    reservation), else Accepted; expired on arrival and unknown connectors are Rejected.

    OCTT: TC_048_1_CS, TC_048_2_CS, TC_048_3_CS (1.6)
    """
    faulted = ConnectorSituation(1, idle=False, faulted=True)
    unavailable = ConnectorSituation(1, idle=False, unavailable=True)
    both = ConnectorSituation(1, idle=False, faulted=True, unavailable=True)
    assert answer(res(1, 1), [free(1)], []) == "Accepted"
    assert answer(res(1, 1), [faulted], []) == "Faulted"
    assert answer(res(1, 1), [unavailable], []) == "Unavailable"
    assert answer(res(1, 1), [both], []) == "Faulted"
    assert answer(res(1, 1), [busy(1)], []) == "Occupied"
    assert answer(res(2, 1, "B"), [free(1, rid=1)], [res(1, 1)]) == "Occupied"
    assert answer(res(2, 1, "A"), [free(1, rid=1)], [res(1, 1)]) == "Occupied"  # same idTag
    assert answer(res(1, 3), [free(1)], []) == "Rejected"
    old = Reservation(1, 1, "A", NOW - timedelta(seconds=1))
    assert answer(old, [free(1)], []) == "Rejected"


def test_same_id_replaces_and_is_judged_without_the_old_one() -> None:
    """5.13: a request with a held reservationId replaces it: its own connector counts free."""
    held = [res(1, 1)]
    assert answer(res(1, 1, "B"), [free(1, rid=1), free(2)], held) == "Accepted"
    assert answer(res(1, 2, "B"), [free(1, rid=1), free(2)], held) == "Accepted"
    assert answer(res(1, 2, "B"), [free(1, rid=1), busy(2)], held) == "Occupied"


def test_connector_zero_answers() -> None:
    """5.13 connector 0: Accepted while more connectors are idle than connector-0
    reservations need; Faulted / Unavailable when every connector is; else Occupied;
    Rejected when not supported (9.3.1) and when the station is unavailable: Unavailable.

    OCTT: TC_049_CS, TC_050_1_CS..TC_050_4_CS (1.6, as we read them)
    """
    two = [free(1), free(2)]
    assert answer(res(5, 0), two, []) == "Accepted"
    assert answer(res(5, 0), two, [res(4, 0)]) == "Accepted"
    assert answer(res(5, 0), two, [res(3, 0), res(4, 0)]) == "Occupied"
    assert answer(res(5, 0), [free(1), busy(2)], [res(4, 0)]) == "Occupied"
    assert answer(res(5, 0), [free(1, rid=1), free(2)], [res(1, 1)]) == "Accepted"
    assert answer(res(5, 0), [free(1, rid=1), free(2)], [res(1, 1), res(2, 0)]) == "Occupied"
    faulted = [ConnectorSituation(i, idle=False, faulted=True) for i in (1, 2)]
    unavailable = [ConnectorSituation(i, idle=False, unavailable=True) for i in (1, 2)]
    mixed = [faulted[0], unavailable[1]]
    assert answer(res(5, 0), faulted, []) == "Faulted"
    assert answer(res(5, 0), unavailable, []) == "Unavailable"
    assert answer(res(5, 0), mixed, []) == "Occupied"
    not_supported = decide(res(5, 0), two, [], now=NOW, any_connector_supported=False)
    assert not_supported is ReserveResult.REJECTED
    station_off = decide(
        res(5, 0), two, [], now=NOW, any_connector_supported=True, station_operative=False
    )
    assert station_off is ReserveResult.UNAVAILABLE


def test_last_free_connector_kept_by_a_connector_zero_reservation_is_occupied() -> None:
    """A connector-0 reservation keeps one connector: reserving the last idle one for
    somebody else would break that promise (5.13), so it is Occupied."""
    held = [res(1, 0)]
    assert answer(res(2, 1, "B"), [free(1), busy(2)], held) == "Occupied"
    assert answer(res(2, 1, "B"), [free(1), free(2)], held) == "Accepted"
    # The reserved driver already uses connector 2: connector 1 is not needed for it.
    assert answer(res(2, 1, "B"), [free(1), busy(2, rid=1)], held) == "Accepted"


# ----------------------------------------------------------------------------- what is kept


def test_holds_only_when_needed_and_stable() -> None:
    """5.13 / 2.0.1 H01.FR.20: connectors are kept only once no more are idle than
    connector-0 reservations; a kept one stays kept; a used one stays with its driver."""
    r1, r2 = res(1, 0), res(2, 0, "B")
    assert holds([r1], [free(1), free(2)], {}) == {}
    assert holds([r1], [free(1), busy(2)], {}) == {1: 1}
    assert holds([r1], [free(1), free(2)], {1: 2}) == {}  # enough again: released
    assert holds([r1, r2], [free(1), free(2)], {2: 1}) == {2: 1, 1: 2}
    assert holds([r1, r2], [free(1), busy(2)], {}) == {1: 1}  # r2 waits for one
    # The driver of r1 authorized on connector 2 (not idle, still carrying r1).
    assert holds([r1], [free(1), busy(2, rid=1)], {1: 2}) == {1: 2}
    # A connector reserved specifically is not free for a connector-0 reservation.
    assert holds([r1, res(3, 1)], [free(1, rid=3), free(2)], {}) == {1: 2}


# ----------------------------------------------------------------------------- state machine


def ready(**kw: object) -> sm.ConnectorState:
    s = sm.initial_state(meter_ready=True)
    return sm.ConnectorState(**{**s.__dict__, **kw})  # type: ignore[arg-type]


def run(s: sm.ConnectorState, *events: sm.Event) -> tuple[sm.ConnectorState, list[sm.Command]]:
    out: list[sm.Command] = []
    for ev in events:
        s, cmds = sm.step(s, ev)
        out.extend(cmds)
    return s, out


def starts(cmds: list[sm.Command]) -> list[sm.StartTx]:
    return [c for c in cmds if isinstance(c, sm.StartTx)]


def test_group_card_uses_reservation_after_authorization() -> None:
    """5.13: a card that is not the reserved one is authorized (its parent idTag comes with
    the answer); with the reservation's parent it starts with the reservationId."""
    s, _ = run(ready(), sm.ReservationChanged("A", 7, "FLEET"))
    assert s.phase is sm.Phase.RESERVED
    s, cmds = run(s, sm.VehicleChanged(VehicleState.B), sm.TokenPresented("B"))
    assert sm.RequestAuthorization("B") in cmds
    assert s.phase is sm.Phase.RESERVED  # plugged, but only the reservation identity counts
    s, cmds = run(s, sm.AuthResult("B", True, "FLEET"))
    assert starts(cmds) == [sm.StartTx("B", 7)]
    assert (s.reserved_for, s.reservation_id, s.reserved_parent) == (None, None, None)


def test_other_group_refused_and_plain_reservation_asks_nobody() -> None:
    s, _ = run(ready(), sm.ReservationChanged("A", 7, "FLEET"), sm.VehicleChanged(VehicleState.B))
    s, cmds = run(s, sm.TokenPresented("C"), sm.AuthResult("C", True, "FAMILY"))
    assert starts(cmds) == [] and s.authorized_tag is None and s.phase is sm.Phase.RESERVED
    s, _ = run(ready(), sm.ReservationChanged("A", 8), sm.VehicleChanged(VehicleState.B))
    s, cmds = run(s, sm.TokenPresented("C"))
    assert cmds == [] and s.authorizing is None  # no Authorize.req (OCTT TC_046_1_CS)
    s, cmds = run(s, sm.TokenPresented("a"), sm.AuthResult("a", True))
    assert starts(cmds) == [sm.StartTx("a", 8)]  # idTags compare case-insensitively


def test_remote_start_only_for_the_reserved_tag() -> None:
    s, _ = run(ready(), sm.ReservationChanged("A", 9, "FLEET"), sm.VehicleChanged(VehicleState.B))
    s, cmds = run(s, sm.RemoteStart("B"))
    assert starts(cmds) == [] and s.authorized_tag is None
    s, cmds = run(s, sm.RemoteStart("A"))
    assert starts(cmds) == [sm.StartTx("A", 9)]


@pytest.mark.parametrize(
    "event",
    [sm.FaultChanged(FaultKind.GROUND), sm.AvailabilityChanged(False)],
    ids=["faulted", "unavailable"],
)
def test_fault_or_unavailable_ends_the_reservation(event: sm.Event) -> None:
    """5.13 (3) (2.0.1 H01.FR.16/17): the reservation is terminated, not kept for later."""
    s, _ = run(ready(), sm.ReservationChanged("A", 7, "FLEET"), event)
    assert (s.reserved_for, s.reservation_id, s.reserved_parent) == (None, None, None)
    s, _ = run(s, sm.FaultChanged(None), sm.AvailabilityChanged(True))
    assert s.phase is sm.Phase.AVAILABLE


def test_expiry_or_cancel_makes_it_available() -> None:
    """4.9 G1: Reserved -> Available when the reservation expires or is cancelled."""
    s, _ = run(ready(), sm.ReservationChanged("A", 7))
    s, cmds = run(s, sm.ReservationChanged(None))
    assert cmds == [sm.PhaseChanged(sm.Phase.AVAILABLE)]
