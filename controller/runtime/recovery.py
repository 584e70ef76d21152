"""Recovery after a restart: resume or close the transactions an unclean stop left open."""

from __future__ import annotations

import logging
from collections.abc import Callable

from controller.core import connector as sm
from controller.core.port import CsmsPort, TxStop
from controller.core.records import StationRecords, StoreError, TxRecord
from controller.runtime.clock import Clock
from controller.runtime.connector import ConnectorRuntime

LOG = logging.getLogger(__name__)

# Store settings key marking a transaction whose idTag the CSMS invalidated (value: the
# register limit of MaxEnergyOnInvalidId in Wh, or "" for none), so a resumed
# transaction does not get its energy back.
_DEAUTH_KEY = "tx.deauthorized.{}"


class Recovery:
    """Decides, once at start, what becomes of each transaction still open in the store,
    and keeps the marker that a resumed transaction's idTag was invalidated."""

    def __init__(
        self,
        *,
        connectors: dict[int, ConnectorRuntime],
        store: StationRecords,
        clock: Clock,
        port: Callable[[], CsmsPort],
        dispatch: Callable[[int, sm.Event], None],
        boot_id: str,
    ) -> None:
        self._connectors = connectors
        self._store = store
        self._clock = clock
        self._port = port  # attached after construction
        self._dispatch = dispatch
        self._boot_id = boot_id

    def open_transactions(self, *, resume: bool) -> dict[int, TxRecord]:
        """Close what an unclean stop left open; return those that may be resumed instead
        (``resume``: the newest open one per connector, decided once the vehicle interface
        is ready)."""
        resumable: dict[int, TxRecord] = {}
        for tx in self._store.open_transactions():
            if resume and tx.connector_id in self._connectors:
                older = resumable.get(tx.connector_id)
                resumable[tx.connector_id] = tx  # ordered by tx_key: the newest wins
                if older is None:
                    continue
                tx = older
            self.close(tx)
        return resumable

    def close(self, tx: TxRecord) -> None:
        """Stop ``tx`` with its last persisted reading and time (it ran in an earlier process)."""
        # Same OS boot: the controller process died (crash, kill, watchdog) -> Reboot.
        # Different boot id: the whole board lost power -> PowerLoss.
        same_boot = tx.boot_id and tx.boot_id == self._boot_id
        reason = sm.StopCause.REBOOT if same_boot else sm.StopCause.POWER_LOSS
        LOG.warning(
            "closing transaction %d left open by an unclean stop: %s, %d Wh",
            tx.tx_key,
            reason,
            tx.last_meter_wh,
        )
        self._port().stop_transaction(
            tx.tx_key,
            TxStop(
                meter_stop_wh=tx.last_meter_wh,
                timestamp=tx.last_meter_at,
                reason=reason,
                id_tag=None,
                stamped_now=False,
            ),
        )
        self.clear_deauth_mark(tx.tx_key, known=None)

    def resume_or_close(self, c: ConnectorRuntime, tx: TxRecord) -> None:
        """Re-attach ``tx`` if the vehicle is still plugged and the connector can charge;
        otherwise close it like any transaction an unclean stop left open (4.10 / 7.36)."""
        reading_wh = round(c.reading.energy_wh) if c.reading is not None else None
        if reading_wh is None or reading_wh < tx.last_meter_wh:
            # Without a reading at least the persisted one the bill cannot continue.
            LOG.warning(
                "connector %d: transaction %d not resumed (meter %s Wh < stored %d Wh)",
                c.connector_id,
                tx.tx_key,
                reading_wh,
                tx.last_meter_wh,
            )
            self.close(tx)
            return
        mark = self._store.get_setting(_DEAUTH_KEY.format(tx.tx_key))
        limit_wh = float(mark) if mark else None
        if limit_wh is not None and reading_wh >= limit_wh:
            limit_wh = None  # the MaxEnergyOnInvalidId allowance is used up already
        # Attached before dispatch: the contactor may close right away, and it closes
        # only for a recorded transaction.
        c.attach_tx(
            tx.tx_key,
            tx.id_tag,
            tx.meter_start_wh,
            persisted_wh=tx.last_meter_wh,
            now_s=self._clock.monotonic_s(),
            samples=[],
            deauth_marked=mark is not None,
        )
        self._dispatch(
            c.connector_id,
            sm.ResumeTx(
                tx.id_tag,
                parent_id_tag=self._parent_of(tx.id_tag),
                deauthorized=mark is not None,
                energy_limit_wh=limit_wh,
            ),
        )
        if not c.state.tx_active:
            LOG.info(
                "connector %d: transaction %d not resumed (vehicle %s)",
                c.connector_id,
                tx.tx_key,
                c.state.vehicle.value,
            )
            c.tx_key = None
            c.tx_id_tag = None
            c.deauth_marked = False
            self.close(tx)
            return
        LOG.warning(
            "connector %d: transaction %d resumed for %s after an unclean stop, %d Wh",
            c.connector_id,
            tx.tx_key,
            tx.id_tag,
            reading_wh,
        )

    def _parent_of(self, id_tag: str) -> str | None:
        """The parent idTag as last known (local list first, then the cache; 3.5.3)."""
        for info in (self._store.local_list_get(id_tag), self._store.cache_get(id_tag)):
            if info is not None:
                return info[1]
        return None

    def mark_deauthorized(self, c: ConnectorRuntime, tx_key: int, limit_wh: int | None) -> None:
        """Remember that ``tx_key``'s idTag was invalidated, so that a resumed transaction
        does not get its energy back."""
        try:
            self._store.set_setting(
                _DEAUTH_KEY.format(tx_key), "" if limit_wh is None else str(limit_wh)
            )
            c.deauth_marked = True
        except StoreError:
            LOG.exception("could not record the invalidation of transaction %d", tx_key)

    def clear_deauth_mark(self, tx_key: int, *, known: bool | None) -> None:
        """Drop the Deauthorized marker of a closed transaction (``known`` None: look)."""
        key = _DEAUTH_KEY.format(tx_key)
        if known is None:
            known = self._store.get_setting(key) is not None
        if not known:
            return
        try:
            self._store.delete_setting(key)
        except StoreError:
            LOG.exception("could not drop %s", key)
