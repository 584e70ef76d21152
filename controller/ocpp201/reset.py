"""OCPP 2.0.1 Reset (B11, B12): of the station (evsed restarts, at once or when idle) or of
one EVSE (its transaction ended, the EVSE out of service for a moment and back)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from controller.core.connector import Phase, StopCause
from controller.core.security import SecurityEventKind
from controller.ocpp201 import firmware as firmware201
from controller.runtime.clock import sleep_or_event

if TYPE_CHECKING:
    from controller.ocpp201.client import Ocpp201Client

LOG = logging.getLogger(__name__)

# What App._on_reset hears (the boot reason of the next start, B01.FR.09): an Immediate
# reset restarts as a 1.6 Hard one would ([maintenance] hard_reset = "reboot" reboots the
# board), an OnIdle one on an idle station as a Soft one (both RemoteReset); an OnIdle
# reset that had to wait for transactions is a ScheduledReset (TC_B_21_CS).
RESTART_IMMEDIATE = "Hard"
RESTART_ON_IDLE = "Soft"
RESTART_SCHEDULED = "Scheduled"
# The TransactionEvent(Ended) of the transactions a reset stopped or waited for gets this
# long (real seconds, while connected) to reach the CSMS before the restart; what is still
# queued then is sent after it (B12.FR.05: the outbox is durable).
DELIVERY_WAIT_S = 5.0
DELIVERY_POLL_S = 0.1
# Without a wake-up (a transaction ended), the wait for idle looks again this often.
IDLE_POLL_S = 1.0


class Resets:
    """The resets under way on one 2.0.1 client: at most one of the station (OnIdle may
    become Immediate) and one per EVSE."""

    def __init__(self, client: Ocpp201Client) -> None:
        self.client = client
        self.station_reset: str | None = None  # "OnIdle" / "Immediate" once accepted
        self.evse_resets: dict[int, str] = {}
        self._wake = asyncio.Event()

    def transaction_ended(self) -> None:
        """A transaction ended (the client's CsmsPort heard its stop): waits look again."""
        self._wake.set()

    # ------------------------------------------------------------------ requests

    def request(self, kind: str, evse_id: int | None) -> dict[str, Any]:
        """ResetResponse (B11.FR.01) for a station reset (no evseId) or an EVSE's."""
        client = self.client
        cids = client.station.connector_ids()
        if evse_id is not None and evse_id not in cids:
            return _rejected("UnknownEvse")
        if evse_id is None and client.on_reset is None:
            # Nothing here can restart evsed (a client without the application).
            return _rejected("NoRestart")
        if evse_id is None and firmware201.blocks_reset(client):
            return _rejected("FwUpdateInProgress")  # B11.FR.06: an install is running
        targets = cids if evse_id is None else [evse_id]
        busy = any(client.station.view(cid).tx_key is not None for cid in targets)
        immediate = kind == "Immediate"
        previous = self.station_reset if evse_id is None else self.evse_resets.get(evse_id)
        if previous == "Immediate" or (previous == "OnIdle" and not immediate):
            # Already under way: the same answer again; an OnIdle reset never slows down
            # an Immediate one.
            return {"status": "Scheduled" if busy and previous == "OnIdle" else "Accepted"}
        if evse_id is None:
            self.station_reset = kind
        else:
            self.evse_resets[evse_id] = kind
        if previous is not None:
            self._wake.set()  # OnIdle became Immediate: stop what runs
        elif evse_id is None:
            client.spawn(self._reset_station(), name="reset")
        else:
            client.spawn(self._reset_evse(evse_id), name=f"reset-evse-{evse_id}")
        # B12.FR.01 (Scheduled) / B12.FR.02 (Accepted); B11: Accepted.
        return {"status": "Scheduled" if busy and not immediate else "Accepted"}

    # ------------------------------------------------------------------ station

    async def _reset_station(self) -> None:
        """B11.FR.03/04, B12.FR.03/04: no new transaction from now on (every connector out
        of service but a reserved one, B11.FR.05: its reservation outlives the restart);
        Immediate: the running transactions end with ImmediateReset (E07.FR.03); OnIdle:
        they end as their drivers end them (B12.FR.03); then the restart."""
        client = self.client
        await asyncio.sleep(0)  # the ResetResponse goes out first
        cids = client.station.connector_ids()
        client.availability.hold(
            [cid for cid in cids if client.station.view(cid).phase is not Phase.RESERVED]
        )
        waited = await self._wait_idle(cids, lambda: self.station_reset == "Immediate")
        await self._deliver()
        kind = self.station_reset
        restart = (
            RESTART_IMMEDIATE
            if kind == "Immediate"
            else (RESTART_SCHEDULED if waited else RESTART_ON_IDLE)
        )
        LOG.warning("%s reset of the station requested by the CSMS: restarting", kind)
        if client.security_log is not None:
            client.security_log.record(
                SecurityEventKind.RESET_OR_REBOOT, f"{kind} reset by the CSMS"
            )
        if client.on_reset is not None:
            client.on_reset(restart)

    async def _deliver(self) -> None:
        """Give the Ended messages a moment to reach the CSMS (B12 3a); they stay queued
        for after the restart anyway."""
        client = self.client
        for _ in range(round(DELIVERY_WAIT_S / DELIVERY_POLL_S)):
            if client.connection_state() != "accepted":
                break
            if not client.store.tx_messages_queued(client.backend):
                break
            await asyncio.sleep(DELIVERY_POLL_S)

    # ------------------------------------------------------------------ EVSE

    async def _reset_evse(self, evse_id: int) -> None:
        """B11.FR.08, B12.FR.07/08: evsed's EVSEs have no controller of their own to
        reboot; resetting one ends its transaction (Immediate: ImmediateReset; OnIdle: as
        its driver ends it, nothing new starts there meanwhile), then takes it out of
        service for a moment (StatusNotification Unavailable, B11.FR.08; any authorization
        or remote start waiting there is dropped) and back as its availability says
        (B12.FR.06). A reserved EVSE keeps its reservation (B11.FR.05): it is not taken
        out of service."""
        client = self.client
        await asyncio.sleep(0)  # the ResetResponse goes out first
        hold = client.station.view(evse_id).phase is not Phase.RESERVED
        if hold:
            client.availability.hold([evse_id])
        # Cancelled (the client closes): the hold stays recorded and the next start undoes
        # it (Availability.restore), nothing is dispatched on the way down.
        await self._wait_idle([evse_id], lambda: self.evse_resets.get(evse_id) == "Immediate")
        if hold:
            await self._reported(evse_id, "Unavailable")
        kind = self.evse_resets.pop(evse_id, "OnIdle")
        if hold and self.station_reset is None:  # a station reset keeps it out of service
            client.availability.release([evse_id])
        LOG.warning("EVSE %d: %s reset by the CSMS done", evse_id, kind)

    # ------------------------------------------------------------------ waiting

    async def _reported(self, connector_id: int, status: str) -> None:
        """Until the CSMS confirmed ``status`` for the connector (it sees the EVSE reset),
        for a few seconds at most while connected: the reset never waits for the network."""
        client = self.client
        for _ in range(round(DELIVERY_WAIT_S / DELIVERY_POLL_S)):
            if client.connection_state() != "accepted":
                return
            if client.reported_status(connector_id) == status:
                return
            await asyncio.sleep(DELIVERY_POLL_S)

    async def _wait_idle(self, cids: list[int], immediate: Callable[[], bool]) -> bool:
        """Until no transaction runs on ``cids``; each one still running is stopped with
        ImmediateReset once ``immediate()`` holds. Whether it had to wait."""
        station = self.client.station
        stopped: set[int] = set()
        waited = False
        while True:
            running = {cid: tx for cid in cids if (tx := station.view(cid).tx_key) is not None}
            if not running:
                return waited
            waited = True
            if immediate():
                for cid, tx_key in running.items():
                    if tx_key not in stopped:
                        stopped.add(tx_key)
                        LOG.info("connector %d: transaction %d ended by the reset", cid, tx_key)
                        station.stop_transaction(tx_key, StopCause.HARD_RESET)
            await self._next_look()

    async def _next_look(self) -> None:
        """A wake-up (a transaction ended, OnIdle became Immediate) or the next poll."""
        self._wake.clear()
        await sleep_or_event(self.client.clock.sleep(IDLE_POLL_S), self._wake)


def _rejected(reason: str) -> dict[str, Any]:
    return {"status": "Rejected", "statusInfo": {"reasonCode": reason}}


async def reset(client: Ocpp201Client, payload: dict[str, Any]) -> dict[str, Any]:
    """ResetRequest: type OnIdle / Immediate, evseId for one EVSE (B11, B12)."""
    evse_id = payload.get("evseId")
    return client.resets.request(
        str(payload["type"]), None if evse_id is None or evse_id == 0 else int(evse_id)
    )


ROUTES = {"Reset": reset}
