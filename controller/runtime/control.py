"""Control commands: remote start and stop, invalidation, availability, unlock, stop all."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from controller.core import connector as sm
from controller.core.control import AvailabilityResult, UnlockResult
from controller.core.policy import ChargingPolicy
from controller.core.records import StationRecords
from controller.runtime.connector import ConnectorRuntime
from controller.runtime.recovery import Recovery

LOG = logging.getLogger(__name__)


class Control:
    """What the CSMS (through its adapter) or the local API asks of the connectors; each
    request becomes events of the connectors' state machines."""

    def __init__(
        self,
        *,
        connectors: dict[int, ConnectorRuntime],
        store: StationRecords,
        policy: Callable[[], ChargingPolicy],
        dispatch: Callable[[int, sm.Event], None],
        recovery: Recovery,
        stopping: Callable[[], bool],
    ) -> None:
        self._connectors = connectors
        self._store = store
        self._policy = policy  # the current one: the CSMS may change it at any time
        self._dispatch = dispatch
        self._recovery = recovery
        self._stopping = stopping  # whether a transaction's stop is still being recorded
        self.station_operative = store.get_setting("availability.0") != "Inoperative"

    def connector_for_tx(self, tx_key: int) -> ConnectorRuntime | None:
        for c in self._connectors.values():
            if c.tx_key == tx_key:
                return c
        return None

    def remote_start(
        self, connector_id: int | None, id_tag: str, parent_id_tag: str | None = None
    ) -> int | None:
        """Pick the connector for a RemoteStartTransaction; None means Rejected."""
        candidates = (
            [self._connectors[connector_id]]
            if connector_id is not None
            else sorted(
                self._connectors.values(),
                key=lambda c: (not c.state.vehicle.plugged, c.connector_id),
            )
        )
        for c in candidates:
            if sm.can_start_remotely(c.state) and c.state.authorized_tag is None:
                if not sm.reservation_admits(c.state, id_tag, parent_id_tag):
                    continue  # reserved for another driver (5.13)
                return c.connector_id
        return None

    def begin_remote(
        self, connector_id: int, id_tag: str, parent_id_tag: str | None = None
    ) -> None:
        self._dispatch(connector_id, sm.RemoteStart(id_tag, parent_id_tag))

    def stop_transaction(self, tx_key: int, reason: sm.StopCause) -> bool:
        c = self.connector_for_tx(tx_key)
        if c is None:
            return False
        self._dispatch(c.connector_id, sm.StopRequest(reason))
        return True

    def deauthorize(self, tx_key: int) -> None:
        """StartTransaction.conf said the idTag is not Accepted (3.5.4 / 4.8, errata 3.17).

        StopTransactionOnInvalidId=true: stop with reason DeAuthorized. False: the
        transaction stays open but energy delivery stops (SuspendedEVSE), after at most
        MaxEnergyOnInvalidId Wh more if that optional key is set (9.1.14).
        """
        c = self.connector_for_tx(tx_key)
        if c is None:
            return  # already stopped
        policy = self._policy()
        if policy.stop_on_invalid_id:
            self.stop_transaction(tx_key, sm.StopCause.DE_AUTHORIZED)
            return
        max_wh = policy.max_energy_on_invalid_id_wh
        limit_wh = (
            round(c.reading.energy_wh) + max_wh
            if max_wh is not None and c.reading is not None
            else None
        )
        LOG.warning(
            "connector %d: idTag of transaction %d invalidated; energy %s",
            c.connector_id,
            tx_key,
            "stopped" if limit_wh is None else f"up to register {limit_wh} Wh",
        )
        self._dispatch(c.connector_id, sm.Deauthorized(limit_wh))
        self._recovery.mark_deauthorized(c, tx_key, limit_wh)

    async def stop_all(self, reason: sm.StopCause) -> None:
        for c in self._connectors.values():
            if c.tx_key is not None:
                self._dispatch(c.connector_id, sm.StopRequest(reason))
        # Let the stop tasks read the meters and persist the StopTransactions.
        for _ in range(50):
            if not self._stopping():
                break
            await asyncio.sleep(0.01)

    def change_availability(
        self, connector_id: int, operative: bool, *, cascade: bool = True
    ) -> AvailabilityResult:
        """ChangeAvailability (5.2): Accepted, or Scheduled while a transaction runs.
        Connector 0 without ``cascade``: the station's own state only (2.0.1)."""
        targets = (
            list(self._connectors.values())
            if connector_id == 0
            else [self._connectors[connector_id]]
        )
        value = "Operative" if operative else "Inoperative"
        self._store.set_setting(f"availability.{connector_id}", value)
        if connector_id == 0:
            self.station_operative = operative
            if not cascade:
                return AvailabilityResult.ACCEPTED
            for c in targets:
                self._store.set_setting(f"availability.{c.connector_id}", value)
        scheduled = False
        for c in targets:
            if c.state.tx_active and not operative:
                scheduled = True
            self._dispatch(c.connector_id, sm.AvailabilityChanged(operative))
        return AvailabilityResult.SCHEDULED if scheduled else AvailabilityResult.ACCEPTED

    async def unlock(self, connector_id: int) -> UnlockResult:
        """UnlockConnector (5.18): stop the transaction, then release the cable."""
        c = self._connectors[connector_id]
        if c.hw.lock is None:
            return UnlockResult.NOT_SUPPORTED
        self._dispatch(connector_id, sm.StopRequest(sm.StopCause.UNLOCK_COMMAND))
        ok = await c.hw.lock.unlock()
        return UnlockResult.UNLOCKED if ok else UnlockResult.UNLOCK_FAILED
