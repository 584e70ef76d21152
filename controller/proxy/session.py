"""One connected charger: its CALLs go to the primary (whose answer comes back) and, once
answered, into every secondary's durable queue; the primary's commands go to the charger;
each secondary's commands pass its ownership gate."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import WebSocketException
from websockets.frames import CloseCode

from controller.csms.guard import BurstLog
from controller.csms.rpc import CallError, CallTimeout, ConnectionLost, RpcConnection
from controller.proxy.config import ChargerConfig, ProxyConfig
from controller.proxy.links import CommandGate, LinkStatus
from controller.proxy.protocol import Protocol
from controller.proxy.secondary import SecondaryLink
from controller.proxy.store import ProxyStore
from controller.runtime.tasks import TaskGroup

LOG = logging.getLogger(__name__)


def is_transaction_message(protocol: Protocol, action: str, payload: dict[str, Any]) -> bool:
    """Messages the charger itself resends until its CSMS confirms them (1.6 4.x "transaction
    related messages", 2.0.1 E13): copied to the secondaries only once the primary confirmed
    them, so a resend is not a second copy."""
    if protocol.maps_transaction_ids:
        return action in ("StartTransaction", "StopTransaction") or (
            action == "MeterValues" and "transactionId" in payload
        )
    return action == "TransactionEvent"


class ChargerSession:
    def __init__(
        self,
        *,
        charger: ChargerConfig,
        ws: ServerConnection,
        primary_ws: ClientConnection,
        protocol: Protocol,
        config: ProxyConfig,
        store: ProxyStore,
        secondaries: Sequence[SecondaryLink],
    ) -> None:
        self.charger = charger
        self.protocol = protocol
        self.connected_at = time.time()
        self._ws = ws
        self._primary_ws = primary_ws
        self._config = config
        self._store = store
        self._tasks = TaskGroup(f"proxy:{charger.id}")
        d = protocol.dialect
        self._charger_invalid = BurstLog(LOG, f"{charger.id}: the charger sent bad input")
        self.charger_rpc = RpcConnection(
            ws,
            self._from_charger,
            dialect=d,
            response_timeout_s=config.response_timeout_s,
            supported_actions=protocol.charger_actions,
            on_invalid=self._charger_invalid,
            on_replay=self._charger_invalid,
        )
        primary = charger.primary
        self.primary_status = LinkStatus(primary.name, primary.role.value, state="connected")
        self.primary_rpc = RpcConnection(
            primary_ws,
            CommandGate(
                charger_id=charger.id,
                backend=primary,
                ownership=charger.ownership,
                protocol=protocol,
                rate=config.rate_limit,
                status=self.primary_status,
                to_charger=self.to_charger,
            ),
            dialect=d,
            response_timeout_s=config.response_timeout_s,
            supported_actions=protocol.csms_actions,
            on_invalid=BurstLog(LOG, f"{charger.id}: backend {primary.name} sent bad input"),
        )
        # Owned by the proxy (SecondaryPool): they outlive this connection.
        self.secondaries = list(secondaries)
        self._closed = asyncio.Event()

    async def run(self) -> None:
        """Relay until the charger or the primary goes; then close the other side (the
        secondaries' links are the proxy's: they linger to deliver their queues)."""
        LOG.info(
            "%s connected (OCPP %s); primary %s, secondaries %s",
            self.charger.id,
            self.protocol.version,
            self.charger.primary.name,
            ", ".join(s.backend.name for s in self.secondaries) or "none",
        )
        charger = self._tasks.spawn(_until_closed(self.charger_rpc), name="charger")
        primary = self._tasks.spawn(_until_closed(self.primary_rpc), name="primary")
        closed = self._tasks.spawn(self._closed.wait(), name="closed")
        try:
            done, _ = await asyncio.wait(
                {charger, primary, closed}, return_when=asyncio.FIRST_COMPLETED
            )
            if primary in done and charger not in done:
                LOG.warning(
                    "%s: the primary %s closed its connection: closing the charger's, it"
                    " keeps its messages until it is back",
                    self.charger.id,
                    self.charger.primary.name,
                )
        finally:
            self.primary_status.state = "offline"
            await self._close_all("charger or primary gone")
            await self._tasks.cancel_all()
            LOG.info("%s disconnected", self.charger.id)

    async def close(self, reason: str) -> None:
        """End the session from outside (a new connection of the same charger, shutdown)."""
        LOG.info("%s: closing: %s", self.charger.id, reason)
        self._closed.set()

    async def _close_all(self, reason: str) -> None:
        await self._close_charger(reason)
        try:
            await self._primary_ws.close(CloseCode.NORMAL_CLOSURE, "the charger disconnected")
        except (OSError, WebSocketException):
            pass

    async def _close_charger(self, reason: str) -> None:
        try:
            await self._ws.close(CloseCode.GOING_AWAY, reason[:120])
        except (OSError, WebSocketException):
            pass

    # ------------------------------------------------------------------ charger -> CSMS

    async def _from_charger(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        d = self.protocol.dialect
        tx_message = is_transaction_message(self.protocol, action, payload)
        try:
            result = await self.primary_rpc.call(action, payload, prevalidated=True)
        except CallError:
            if not tx_message:
                self._copy(action, payload, None)
            raise  # the primary's CALLERROR, as it sent it
        except ConnectionLost:
            # The primary went while the charger waited: no answer at all, and the charger's
            # connection closes (run()); the charger sends the message again on its next
            # connection, as after any lost connection. Closed before the RPC layer could send
            # a CALLERROR: an error would make a charger drop a message it should resend.
            self._closed.set()
            await self._close_charger("the primary backend's connection was lost")
            raise CallError(d.internal_error, "the primary backend's connection was lost") from None
        except CallTimeout:
            if not tx_message:
                self._copy(action, payload, None)
            raise CallError(
                d.internal_error, f"the primary backend did not answer {action} in time"
            ) from None
        self.primary_status.saw(f"{action}.conf")
        primary_tx = None
        if self.protocol.maps_transaction_ids and action == "StartTransaction":
            primary_tx = int(result["transactionId"])
        # Durable for every secondary before the charger sees the confirmation.
        self._copy(action, payload, primary_tx)
        return result

    def _copy(self, action: str, payload: dict[str, Any], primary_tx: int | None) -> None:
        if not self.secondaries:
            return
        self._store.enqueue(
            self.charger.id,
            [s.backend.name for s in self.secondaries],
            action,
            payload,
            primary_tx,
        )
        for link in self.secondaries:
            link.wake()

    # ------------------------------------------------------------------ CSMS -> charger

    async def to_charger(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.charger_rpc.call(action, payload, prevalidated=True)
        except ConnectionLost:
            raise CallError(
                self.protocol.dialect.generic_error,
                "the charger disconnected before it answered",
            ) from None
        except CallTimeout:
            raise CallError(
                self.protocol.dialect.generic_error, f"the charger did not answer {action} in time"
            ) from None

    def status(self) -> dict[str, Any]:
        backends = [_status(self.primary_status, 0)]
        backends += [_status(s.status, s.queue_length()) for s in self.secondaries]
        return {
            "id": self.charger.id,
            "connected": True,
            "ocpp_version": self.protocol.version,
            "connected_at": self.connected_at,
            "backends": backends,
        }


async def _until_closed(rpc: RpcConnection) -> None:
    """Read until the WebSocket closes; a close, clean or not, is the end of the session."""
    try:
        await rpc.run()
    except (OSError, WebSocketException) as exc:
        LOG.debug("connection ended: %s", exc)


def _status(s: LinkStatus, queued: int) -> dict[str, Any]:
    return {
        "name": s.backend,
        "role": s.role,
        "state": s.state,
        "last_message": s.last_message,
        "last_message_at": s.last_message_at,
        "queue_length": queued,
        "refused": s.refused,
    }
