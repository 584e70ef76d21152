"""Reservations at runtime: kept durably, fed to the connector state machines, expired on the
injected clock; the rules themselves are pure (controller/core/reservations.py).

Each reservation is one settings row ``reservation.<reservationId>`` holding a small JSON
object (connector, idTag, parent idTag, expiry). Settings writes are durable (WAL,
synchronous=FULL) and survive a full disk through the store's degraded mode, and they need
no schema change.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime

from controller.core import connector as sm
from controller.core import reservations as rules
from controller.core.records import StationRecords, StoreError
from controller.core.reservations import (
    CancelResult,
    Reservation,
    ReservationEnd,
    ReserveResult,
)
from controller.core.timestamps import iso_utc, parse_iso
from controller.runtime.clock import Clock
from controller.runtime.connector import ConnectorRuntime

LOG = logging.getLogger(__name__)

PREFIX = "reservation."


def encode(r: Reservation) -> str:
    return json.dumps(
        {
            "connector": r.connector_id,
            "id_tag": r.id_tag,
            "parent_id_tag": r.parent_id_tag,
            "expiry": iso_utc(r.expiry),
        },
        sort_keys=True,
    )


def decode(reservation_id: int, text: str) -> Reservation | None:
    try:
        data = json.loads(text)
        expiry = parse_iso(str(data["expiry"]))
        if expiry is None:
            return None
        parent = data.get("parent_id_tag")
        return Reservation(
            reservation_id=reservation_id,
            connector_id=int(data["connector"]),
            id_tag=str(data["id_tag"]),
            expiry=expiry,
            parent_id_tag=None if parent is None else str(parent),
        )
    except (ValueError, KeyError, TypeError):
        return None


class Reservations:
    """The station's reservations: which exist, which connector each one keeps, and the
    events that tell the connectors' state machines.

    A reservation for one connector lives in that connector's state machine (status
    Reserved) until it is used, cancelled, expires, or the connector faults or goes
    unavailable (the state machine drops it then, 5.13 (3); this class notices and forgets
    it). A reservation for any connector is placed on a connector only when it must be kept
    free (``rules.holds``), or when its driver starts to use one (``claim``).
    """

    def __init__(
        self,
        *,
        connectors: dict[int, ConnectorRuntime],
        store: StationRecords,
        clock: Clock,
        dispatch: Callable[[int, sm.Event], None],
        station_operative: Callable[[], bool],
    ) -> None:
        self._connectors = connectors
        self._store = store
        self._clock = clock
        self._dispatch = dispatch
        self._station_operative = station_operative
        self._by_id: dict[int, Reservation] = {}
        self._holds: dict[int, int] = {}  # reservation for any connector -> connector kept
        self._syncing = False
        self._listeners: list[Callable[[Reservation, ReservationEnd], None]] = []

    @contextlib.contextmanager
    def _batch(self) -> Iterator[None]:
        """Several events to the state machines as one change: ``sync`` (which the station
        runs after every event) waits until the end."""
        outer = self._syncing
        self._syncing = True
        try:
            yield
        finally:
            self._syncing = outer
        if not outer:
            self.sync()

    # ------------------------------------------------------------------ queries

    def all(self) -> list[Reservation]:
        return sorted(self._by_id.values(), key=lambda r: r.reservation_id)

    def on_connector(self, connector_id: int) -> Reservation | None:
        """The reservation the connector keeps now (its own, or one for any connector)."""
        rid = self._connectors[connector_id].state.reservation_id
        return None if rid is None else self._by_id.get(rid)

    def _situations(self) -> list[rules.ConnectorSituation]:
        out = []
        for c in self._connectors.values():
            s = c.state
            out.append(
                rules.ConnectorSituation(
                    connector_id=c.connector_id,
                    idle=sm.idle(s),
                    faulted=s.fault is not None,
                    unavailable=not s.operative and s.fault is None,
                    reservation_id=s.reservation_id,
                )
            )
        return out

    # ------------------------------------------------------------------ requests

    def restore(self) -> None:
        """At start: the reservations still valid come back (status Reserved again, as 2.0.1
        B11.FR.05 asks), expired ones and ones a recorded transaction used are deleted."""
        now = self._clock.utc_now()
        used = {
            tx.reservation_id
            for tx in self._store.open_transactions()
            if tx.reservation_id is not None
        }
        with self._batch():
            self._restore(now, used)

    def _restore(self, now: datetime, used: set[int]) -> None:
        for key, text in sorted(self._store.settings_with_prefix(PREFIX).items()):
            suffix = key[len(PREFIX) :]
            r = decode(int(suffix), text) if suffix.lstrip("-").isdigit() else None
            if r is None:
                LOG.warning("dropping unreadable reservation setting %s", key)
                self._delete(key)
                continue
            if rules.expired(r, now) or r.reservation_id in used:
                LOG.info("reservation %d ended while the charger was off", r.reservation_id)
                self._delete(key)
                continue
            if not r.any_connector and r.connector_id not in self._connectors:
                LOG.warning("reservation %d: no connector %d", r.reservation_id, r.connector_id)
                self._delete(key)
                continue
            self._by_id[r.reservation_id] = r
            LOG.info("reservation %d restored until %s", r.reservation_id, iso_utc(r.expiry))
            if not r.any_connector:
                self._place(r)

    def reserve(self, request: Reservation, *, any_connector_supported: bool) -> ReserveResult:
        result = rules.decide(
            request,
            self._situations(),
            self._by_id.values(),
            now=self._clock.utc_now(),
            any_connector_supported=any_connector_supported,
            station_operative=self._station_operative(),
        )
        if result is not ReserveResult.ACCEPTED:
            LOG.info(
                "reservation %d (connector %d, %s) not made: %s",
                request.reservation_id,
                request.connector_id,
                request.id_tag,
                result.value,
            )
            return result
        old = self._by_id.get(request.reservation_id)
        self._save(request)
        with self._batch():
            self._by_id[request.reservation_id] = request
            if old is not None:
                self._unplace(old, keep_for=request)
            if not request.any_connector:
                self._place(request)
        LOG.info(
            "reservation %d %s: connector %d for %s until %s",
            request.reservation_id,
            "replaced" if old is not None else "made",
            request.connector_id,
            request.id_tag,
            iso_utc(request.expiry),
        )
        return result

    def cancel(self, reservation_id: int) -> CancelResult:
        r = self._by_id.get(reservation_id)
        if r is None:
            return CancelResult.REJECTED
        with self._batch():
            self._forget(r, ReservationEnd.CANCELLED)
            self._unplace(r)
        return CancelResult.ACCEPTED

    def claim(self, connector_id: int, id_tag: str, parent_id_tag: str | None) -> None:
        """A driver was authorized on ``connector_id``: if the connector keeps no reservation
        and a reservation for any connector admits the driver, it is used here (3.11: "when
        the reserved idTag is used ... on any connector"), so the transaction ends it."""
        c = self._connectors[connector_id]
        if c.state.reserved_for is not None or c.state.tx_active or not self._by_id:
            return
        for r in self.all():
            if r.any_connector and rules.may_use(r, id_tag, parent_id_tag):
                with self._batch():
                    previous = self._holds.pop(r.reservation_id, None)
                    self._holds[r.reservation_id] = connector_id
                    if previous is not None and previous != connector_id:
                        self._dispatch(previous, sm.ReservationChanged(None))
                    self._dispatch(connector_id, _event(r))
                return

    def used(self, reservation_id: int) -> None:
        """A transaction started with the reservation: it ends (5.13 (1))."""
        r = self._by_id.get(reservation_id)
        if r is not None:
            self._holds.pop(reservation_id, None)
            self._forget(r, ReservationEnd.USED)

    def tick(self, now: datetime) -> None:
        """5.13 (2): at expiryDate the reservation ends and its connector becomes available
        (the state machine reports the status)."""
        ended = [r for r in self._by_id.values() if rules.expired(r, now)]
        if ended:
            with self._batch():
                for r in ended:
                    self._forget(r, ReservationEnd.EXPIRED)
                    self._unplace(r)

    def next_expiry(self) -> datetime | None:
        """The earliest expiryDate of the kept reservations (the tick loop wakes then)."""
        return min((r.expiry for r in self._by_id.values()), default=None)

    # ------------------------------------------------------------------ keeping in step

    def sync(self) -> None:
        """Bring the state machines in step with the reservations, after any event.

        Forget reservations for one connector that its state machine dropped (fault or
        unavailable, 5.13 (3)); end reservations for any connector when the whole station
        becomes unavailable; move the connectors kept for reservations for any connector.
        """
        if self._syncing or not (self._by_id or self._holds):
            return
        self._syncing = True
        try:
            for _ in range(4):  # each round may change a connector; settles in one or two
                if not self._sync_once():
                    break
        finally:
            self._syncing = False

    def _sync_once(self) -> bool:
        changed = False
        for r in list(self._by_id.values()):
            if r.any_connector:
                continue
            s = self._connectors[r.connector_id].state
            if s.reservation_id != r.reservation_id:
                # Dropped by the state machine: the connector faulted or went unavailable.
                why = "connector faulted" if s.fault is not None else "connector unavailable"
                self._forget(r, ReservationEnd.REMOVED, why)
                changed = True
        if not self._station_operative():
            for r in [r for r in self._by_id.values() if r.any_connector]:
                self._forget(r, ReservationEnd.REMOVED, "charge point unavailable")
                self._unplace(r)
                changed = True
        # A kept connector the state machine released (fault, unavailable) keeps it no more.
        for rid, cid in list(self._holds.items()):
            if rid not in self._by_id or self._connectors[cid].state.reservation_id != rid:
                del self._holds[rid]
        wanted = rules.holds(self._by_id.values(), self._situations(), self._holds)
        for rid, cid in list(self._holds.items()):
            if wanted.get(rid) != cid:
                del self._holds[rid]
                if self._connectors[cid].state.reservation_id == rid:
                    self._dispatch(cid, sm.ReservationChanged(None))
                changed = True
        for rid, cid in wanted.items():
            if self._holds.get(rid) != cid:
                self._holds[rid] = cid
                self._dispatch(cid, _event(self._by_id[rid]))
                changed = True
        return changed

    def _place(self, r: Reservation) -> None:
        self._dispatch(r.connector_id, _event(r))

    def _unplace(self, r: Reservation, keep_for: Reservation | None = None) -> None:
        """Take ``r`` off the connector that keeps it (unless ``keep_for``, its replacement,
        is placed on the same connector right after)."""
        cid = self._holds.pop(r.reservation_id, None) if r.any_connector else r.connector_id
        if cid is None:
            return
        if keep_for is not None and not keep_for.any_connector and keep_for.connector_id == cid:
            return
        if self._connectors[cid].state.reservation_id == r.reservation_id:
            self._dispatch(cid, sm.ReservationChanged(None))

    # ------------------------------------------------------------------ storage

    def _forget(self, r: Reservation, end: ReservationEnd, why: str | None = None) -> None:
        self._by_id.pop(r.reservation_id, None)
        self._delete(PREFIX + str(r.reservation_id))
        LOG.info("reservation %d ended: %s", r.reservation_id, why or end.value)
        for listener in list(self._listeners):
            listener(r, end)

    def add_listener(self, listener: Callable[[Reservation, ReservationEnd], None]) -> None:
        """``listener(reservation, end)`` whenever a reservation ends, for any reason."""
        self._listeners.append(listener)

    def _save(self, r: Reservation) -> None:
        try:
            self._store.set_setting(PREFIX + str(r.reservation_id), encode(r))
        except StoreError:
            LOG.exception("reservation %d could not be recorded", r.reservation_id)

    def _delete(self, key: str) -> None:
        try:
            self._store.delete_setting(key)
        except StoreError:
            LOG.exception("setting %s could not be deleted", key)


def _event(r: Reservation) -> sm.ReservationChanged:
    return sm.ReservationChanged(r.id_tag, r.reservation_id, r.parent_id_tag)
