"""Reservation rules, version-neutral and pure: who may use a reservation, when it expires,
whether a new one can be made, and which connectors a reservation for "any connector" keeps.

Written from OCPP 1.6 section 3.11 and 5.13 (ReserveNow), 5.1 (CancelReservation), 7.40
(ReservationStatus) and 9.3.1 (ReserveConnectorZeroSupported); OCPP 2.0.1 H01-H04 state the
same rules for an EVSE (evseId absent = any EVSE, groupIdToken = parent idTag). The runtime
(controller/runtime/reservations.py) keeps the reservations and feeds the connector state
machines; the protocol adapters only translate requests and answers.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from controller.core.values import value

#: ``Reservation.connector_id`` of a reservation for any connector (1.6 connectorId 0,
#: 2.0.1 ReserveNowRequest without evseId).
ANY_CONNECTOR = 0


class ReserveResult(enum.StrEnum):
    """The answer to a reservation request (1.6 ReservationStatus 7.40, 2.0.1
    ReserveNowStatusEnumType: the same words)."""

    ACCEPTED = "Accepted"
    # The connector (all connectors, for any connector) is in use or reserved for another.
    OCCUPIED = "Occupied"
    FAULTED = "Faulted"
    UNAVAILABLE = "Unavailable"
    # Not configured to accept it (a reservation for any connector when that is not
    # supported), or already expired when it arrived.
    REJECTED = "Rejected"


class CancelResult(enum.StrEnum):
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"  # no reservation with that id


class ReservationEnd(enum.StrEnum):
    """Why a reservation ended (2.0.1 ReservationStatusUpdate reports EXPIRED and REMOVED)."""

    USED = "used"  # a transaction started with it (5.13 (1), H03.FR.09)
    CANCELLED = "cancelled"  # the CSMS cancelled it (H02)
    EXPIRED = "expired"  # its expiry passed (5.13 (2), H04.FR.01)
    # The connector faulted or went unavailable, or the whole station did (5.13 (3),
    # H01.FR.16/17).
    REMOVED = "removed"


@value
class Reservation:
    """One reservation: ``connector_id`` 0 = any connector; ``expiry`` is timezone-aware."""

    reservation_id: int
    connector_id: int
    id_tag: str
    expiry: datetime
    parent_id_tag: str | None = None

    @property
    def any_connector(self) -> bool:
        return self.connector_id == ANY_CONNECTOR


@value
class ConnectorSituation:
    """What the rules need to know of a connector.

    ``idle``: operative, no fault, no transaction, no session being prepared or finished,
    nothing plugged in: a new user could start here (status Available but for a
    reservation). ``faulted`` / ``unavailable``: status Faulted / Unavailable.
    ``reservation_id``: the reservation the connector's state machine holds, if any.
    """

    connector_id: int
    idle: bool
    faulted: bool = False
    unavailable: bool = False
    reservation_id: int | None = None


def same_token(a: str, b: str) -> bool:
    """idTags compare case-insensitively (IdToken is CiString20Type, 1.6 errata 3.74/3.75)."""
    return a.casefold() == b.casefold()


def may_use(reservation: Reservation, id_tag: str, parent_id_tag: str | None) -> bool:
    """Whether a driver with ``id_tag`` (whose parent idTag is ``parent_id_tag``, as the local
    list, the cache or Authorize.conf told) may use the reservation (5.13: "except when the
    incoming idTag or the parent idTag match the idTag or parent idTag of the reservation").

    The reservation's parent idTag is compared with the driver's parent idTag only: 3.10 says
    a parent id SHOULD NOT be compared against a presented token value.
    """
    if same_token(id_tag, reservation.id_tag):
        return True
    return (
        reservation.parent_id_tag is not None
        and parent_id_tag is not None
        and same_token(parent_id_tag, reservation.parent_id_tag)
    )


def needs_parent(reservation: Reservation, id_tag: str) -> bool:
    """Whether a card that is not the reserved one must be authorized to learn its parent
    idTag before the reservation can refuse or admit it (5.13; errata 4.12: Authorize.conf
    MAY contain it). Without a parent idTag in the reservation another card is refused at
    once, without an Authorize.req (OCTT TC_046_1_CS)."""
    return not same_token(id_tag, reservation.id_tag) and reservation.parent_id_tag is not None


def expired(reservation: Reservation, now: datetime) -> bool:
    """5.13 (2): the reservation ends when the time in expiryDate is reached."""
    return reservation.expiry <= now


def _in_use_by_holder(
    floating: Sequence[Reservation], connectors: Sequence[ConnectorSituation]
) -> dict[int, int]:
    """Reservations for any connector whose connector is already being used by the reserved
    driver (kept by the state machine, no longer idle): reservation id -> connector id."""
    ids = {r.reservation_id for r in floating}
    return {
        c.reservation_id: c.connector_id
        for c in connectors
        if c.reservation_id in ids and not c.idle
    }


def decide(
    request: Reservation,
    connectors: Sequence[ConnectorSituation],
    reservations: Iterable[Reservation],
    *,
    now: datetime,
    any_connector_supported: bool,
    station_operative: bool = True,
) -> ReserveResult:
    """The answer to ReserveNow (5.13) with ``reservations`` the ones the station holds.

    A request with the id of a held reservation replaces it (5.13): it is judged as if that
    one did not exist, and the caller replaces it only when the answer is Accepted (a refused
    replacement leaves the old reservation in place).

    For one connector: Faulted, then Unavailable, then Occupied (in use, reserved for
    another reservation, or the last idle connector that a reservation for any connector
    keeps free); else Accepted. For any connector (connectorId 0): Rejected unless supported
    (9.3.1); Accepted while more connectors are idle than reservations for any connector
    need; otherwise Faulted / Unavailable when every connector is, else Occupied. A request
    whose expiryDate has passed is Rejected.
    """
    others = [r for r in reservations if r.reservation_id != request.reservation_id]
    if expired(request, now):
        return ReserveResult.REJECTED
    if request.any_connector and not any_connector_supported:
        return ReserveResult.REJECTED
    if not station_operative:
        return ReserveResult.UNAVAILABLE
    specific = {r.connector_id for r in others if not r.any_connector}
    free = [c for c in connectors if c.idle and c.connector_id not in specific]
    floating = [r for r in others if r.any_connector]
    needs = len(floating) - len(_in_use_by_holder(floating, connectors))
    if request.any_connector:
        if len(free) > needs:
            return ReserveResult.ACCEPTED
        if connectors and all(c.faulted for c in connectors):
            return ReserveResult.FAULTED
        if connectors and all(c.unavailable for c in connectors):
            return ReserveResult.UNAVAILABLE
        return ReserveResult.OCCUPIED
    target = next((c for c in connectors if c.connector_id == request.connector_id), None)
    if target is None:
        return ReserveResult.REJECTED
    if target.faulted:
        return ReserveResult.FAULTED
    if target.unavailable:
        return ReserveResult.UNAVAILABLE
    if target not in free:
        return ReserveResult.OCCUPIED
    if len(free) - 1 < needs:
        # Taking it would leave a reservation for any connector without one (5.13).
        return ReserveResult.OCCUPIED
    return ReserveResult.ACCEPTED


def holds(
    reservations: Iterable[Reservation],
    connectors: Sequence[ConnectorSituation],
    current: Mapping[int, int],
) -> dict[int, int]:
    """Which connector each reservation for any connector keeps: reservation id ->
    connector id.

    5.13: "one connector remains available for the reserved idTag" at any time. While more
    connectors are idle than such reservations need, none is kept (anyone may use any of
    them, and the reserved driver still finds one). Once there are as many (or fewer), each
    keeps one idle connector, which then shows Reserved and refuses other cards (as 2.0.1
    H01.FR.20 reports it). A connector the reserved driver has started to use (authorized,
    plugged) stays kept until the transaction starts. ``current`` (the holds so far) is kept
    where still possible, so a connector does not flip between Reserved and Available; the
    rest is given in reservation-id and connector-id order. A reservation that finds no idle
    connector keeps none (it stays valid and takes the next one that becomes idle).
    """
    floating = sorted((r for r in reservations if r.any_connector), key=lambda r: r.reservation_id)
    busy = _in_use_by_holder(floating, connectors)
    specific = {r.connector_id for r in reservations if not r.any_connector}
    free = [
        c.connector_id
        for c in connectors
        if c.idle and c.connector_id not in specific and c.connector_id not in busy.values()
    ]
    waiting = [r for r in floating if r.reservation_id not in busy]
    out = dict(busy)
    if len(free) > len(waiting):
        return out
    taken: set[int] = set()
    for r in waiting:
        cid = current.get(r.reservation_id)
        if cid is not None and cid in free and cid not in taken:
            out[r.reservation_id] = cid
            taken.add(cid)
    rest = [cid for cid in free if cid not in taken]
    for r in waiting:
        if r.reservation_id not in out and rest:
            out[r.reservation_id] = rest.pop(0)
    return out
