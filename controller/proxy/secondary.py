"""A charger's link to one secondary backend: its own connection with back-off, its durable
queue delivered in order one at a time, and its commands through the ownership gate."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from websockets.asyncio.client import ClientConnection

from controller.csms.connection import (
    ConnectionOptions,
    CsmsConnection,
    basic_auth_header,
    station_url,
)
from controller.csms.guard import BurstLog
from controller.csms.rpc import CallError, CallTimeout, ConnectionLost, RpcConnection
from controller.proxy import txids
from controller.proxy.config import BackendConfig, ProxyConfig
from controller.proxy.links import CommandGate, LinkStatus
from controller.proxy.protocol import Protocol
from controller.proxy.store import ProxyStore
from controller.runtime.clock import Clock

LOG = logging.getLogger(__name__)

# A message the backend answers with a CALLERROR (or an answer that fails its schema) is tried
# this often, then dropped: a backend that refuses one message must not stop its queue.
MAX_ATTEMPTS = 3
# Answers that another attempt cannot change: the message is dropped at once.
FINAL_ERRORS = frozenset({"NotImplemented", "NotSupported"})


def client_tls(backend: BackendConfig) -> ssl.SSLContext | None:
    """The TLS context of a wss:// backend: its CA bundle, else the system's roots."""
    if not backend.url.startswith("wss://"):
        return None
    ctx = ssl.create_default_context(cafile=backend.ca_bundle)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class SecondaryLink:
    def __init__(
        self,
        *,
        charger_id: str,
        backend: BackendConfig,
        protocol: Protocol,
        config: ProxyConfig,
        store: ProxyStore,
        gate: CommandGate,
        status: LinkStatus,
        clock: Clock,
    ) -> None:
        self.charger_id = charger_id
        self.backend = backend
        self._protocol = protocol
        self._config = config
        self._store = store
        self._gate = gate
        self.status = status
        self._wake = asyncio.Event()
        # Set whenever a message left the queue (the pool waits on it to close a link whose
        # charger left once its queue is empty).
        self.progress = asyncio.Event()
        self._clock = clock
        tls = client_tls(backend)
        self.connection = CsmsConnection(
            url=station_url(backend.url, charger_id),
            subprotocol=protocol.subprotocol,
            options=ConnectionOptions(
                csms_url=backend.url,
                reconnect_min_s=config.reconnect_min_s,
                reconnect_max_s=config.reconnect_max_s,
                response_timeout_s=config.response_timeout_s,
                open_timeout_s=config.open_timeout_s,
            ),
            clock=clock,
            session=self._session,
            headers=lambda: basic_auth_header(charger_id, backend.password_for(charger_id)),
            ssl_context=(lambda: tls) if tls is not None else None,
            on_state=self._state,
            on_failure=lambda exc: self._state(f"failed: {exc}"),
        )
        self._invalid = BurstLog(LOG, f"{charger_id}: backend {backend.name} sent bad input")

    def wake(self) -> None:
        """New messages were queued."""
        self._wake.set()

    def _state(self, state: str) -> None:
        # Keep the reason of a failure visible until the next connection.
        if state == "offline" and self.status.state.startswith("failed"):
            return
        self.status.state = state

    async def _session(self, ws: ClientConnection) -> None:
        rpc = RpcConnection(
            ws,
            self._gate,
            dialect=self._protocol.dialect,
            response_timeout_s=self._config.response_timeout_s,
            supported_actions=self._protocol.csms_actions,
            on_invalid=self._invalid,
            on_replay=self._invalid,
        )
        reader = asyncio.ensure_future(rpc.run())
        pump = asyncio.ensure_future(self._pump(rpc))
        try:
            await asyncio.wait({reader, pump}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, pump):
                task.cancel()
            for result in await asyncio.gather(reader, pump, return_exceptions=True):
                if isinstance(result, Exception) and not isinstance(result, ConnectionLost):
                    LOG.debug("%s/%s session ended: %r", self.charger_id, self.backend.name, result)

    async def _pump(self, rpc: RpcConnection) -> None:
        """Deliver the queue in order, one CALL in flight; each message leaves the queue
        only when the backend confirmed it (and a 1.6 StartTransaction's mapping is stored
        in the same commit)."""
        attempts = 0
        while True:
            self._wake.clear()
            item = self._store.head(self.charger_id, self.backend.name)
            if item is None:
                await self._wake.wait()
                continue
            payload = self._outgoing(item.action, item.payload)
            if payload is None:
                LOG.warning(
                    "%s: not sending %s to %s: its transaction %s was never accepted there",
                    self.charger_id,
                    item.action,
                    self.backend.name,
                    item.payload.get("transactionId"),
                )
                self._confirm(item.id)
                continue
            try:
                result = await rpc.call(item.action, payload, prevalidated=True)
            except CallError as exc:
                attempts += 1
                LOG.warning(
                    "%s: backend %s answered %s with %s (%s), attempt %d of %d",
                    self.charger_id,
                    self.backend.name,
                    item.action,
                    exc.code,
                    exc.description,
                    attempts,
                    MAX_ATTEMPTS,
                )
                if attempts >= MAX_ATTEMPTS or exc.code in FINAL_ERRORS:
                    self._confirm(item.id)
                    attempts = 0
                else:
                    await self._clock.sleep(self._config.reconnect_min_s)
                continue
            except CallTimeout:
                # Sent again on the next connection: at least once, never lost.
                LOG.warning("%s: backend %s did not answer", self.charger_id, self.backend.name)
                await self.connection.reconnect("no answer")
                return
            attempts = 0
            self.status.saw(f"{item.action}.conf")
            self._confirm(item.id, self._mapping(item.action, item.primary_tx, result))

    def _confirm(self, item_id: int, mapping: tuple[str, str, int, int] | None = None) -> None:
        self._store.confirm(item_id, mapping)
        self.progress.set()

    def _outgoing(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        if not self._protocol.maps_transaction_ids:
            return payload
        return txids.to_backend(
            action,
            payload,
            lambda tx: self._store.backend_tx(self.charger_id, self.backend.name, tx),
        )

    def _mapping(
        self, action: str, primary_tx: int | None, result: dict[str, Any]
    ) -> tuple[str, str, int, int] | None:
        if action != "StartTransaction" or primary_tx is None:
            return None
        backend_tx = int(result["transactionId"])
        known = self._store.primary_txs(self.charger_id, self.backend.name, backend_tx)
        if known and known != [primary_tx]:
            LOG.warning(
                "%s: backend %s gave transactionId %d again (already for %s): its commands"
                " naming it are refused",
                self.charger_id,
                self.backend.name,
                backend_tx,
                known,
            )
        return (self.charger_id, self.backend.name, primary_tx, backend_tx)

    def queue_length(self) -> int:
        return self._store.queue_length(self.charger_id, self.backend.name)

    async def run(self) -> None:
        await self.connection.run()

    async def close(self, reason: str = "charger disconnected from the proxy") -> None:
        await self.connection.close(reason)
