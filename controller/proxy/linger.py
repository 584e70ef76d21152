"""Each charger's secondary links, owned by the proxy rather than by one connection of the
charger: after it leaves they keep delivering its queues until they are empty or
proxy.linger_s passed, and a charger coming back meanwhile takes them over."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from typing import Protocol as TypingProtocol

from controller.csms.rpc import CallError
from controller.proxy import txids
from controller.proxy.config import ChargerConfig, ProxyConfig
from controller.proxy.links import CommandGate, LinkStatus
from controller.proxy.protocol import Protocol
from controller.proxy.secondary import SecondaryLink
from controller.proxy.store import ProxyStore
from controller.runtime.clock import Clock
from controller.runtime.tasks import TaskGroup

LOG = logging.getLogger(__name__)


class Charger(TypingProtocol):
    """The connected charger, as the links' commands reach it (a ChargerSession)."""

    async def to_charger(self, action: str, payload: dict[str, Any]) -> dict[str, Any]: ...


class ChargerLinks:
    """One charger's secondary links and the connection (if any) their commands go to."""

    def __init__(
        self,
        charger: ChargerConfig,
        protocol: Protocol,
        config: ProxyConfig,
        store: ProxyStore,
        clock: Clock,
    ) -> None:
        self.charger = charger
        self.protocol = protocol
        self._store = store
        self.session: Charger | None = None
        self.linger_until_s: float | None = None  # monotonic; set while the charger is away
        self.tasks: list[asyncio.Task[Any]] = []
        self.linger_task: asyncio.Task[Any] | None = None
        self.links: list[SecondaryLink] = []
        for backend in charger.secondaries:
            status = LinkStatus(backend.name, backend.role.value)

            def rewrite(action: str, payload: dict[str, Any], name: str = backend.name) -> Any:
                return self._from_secondary(name, action, payload)

            gate = CommandGate(
                charger_id=charger.id,
                backend=backend,
                ownership=charger.ownership,
                protocol=protocol,
                rate=config.rate_limit,
                status=status,
                to_charger=self._to_charger,
                rewrite=rewrite,
            )
            self.links.append(
                SecondaryLink(
                    charger_id=charger.id,
                    backend=backend,
                    protocol=protocol,
                    config=config,
                    store=store,
                    gate=gate,
                    status=status,
                    clock=clock,
                )
            )

    async def _to_charger(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        session = self.session
        if session is None:
            raise CallError(
                self.protocol.dialect.generic_error,
                "the charger is not connected to the proxy",
            )
        return await session.to_charger(action, payload)

    def _from_secondary(self, backend: str, action: str, payload: dict[str, Any]) -> Any:
        if not self.protocol.maps_transaction_ids:
            return payload
        return txids.from_backend(
            action,
            payload,
            lambda tx: self._store.primary_txs(self.charger.id, backend, tx),
        )

    def queued(self) -> int:
        return sum(link.queue_length() for link in self.links)


class SecondaryPool:
    """Starts, hands over and closes every charger's secondary links."""

    def __init__(self, config: ProxyConfig, store: ProxyStore, clock: Clock) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self._tasks = TaskGroup("proxy:secondaries")
        self._by_charger: dict[str, ChargerLinks] = {}
        self._closing = False

    async def attach(self, charger: ChargerConfig, protocol: Protocol) -> ChargerLinks:
        """The links of a charger that (re)connected: those still lingering if they speak
        its version, else new ones. The caller sets ``session`` on the result."""
        entry = self._by_charger.get(charger.id)
        if entry is not None and (entry.protocol is not protocol or entry.charger != charger):
            await self._close(entry, "the charger came back with another OCPP version")
            entry = None
        if entry is not None:
            if entry.linger_task is not None:
                entry.linger_task.cancel()
                entry.linger_task = None
            if entry.linger_until_s is not None:
                LOG.info("%s is back: its secondary links carry on", charger.id)
            entry.linger_until_s = None
            entry.session = None
            return entry
        entry = ChargerLinks(charger, protocol, self._config, self._store, self._clock)
        for link in entry.links:
            entry.tasks.append(
                self._tasks.spawn(link.run(), name=f"{charger.id}:{link.backend.name}")
            )
        self._by_charger[charger.id] = entry
        return entry

    async def detach(self, charger_id: str, session: Charger) -> None:
        """``session`` of the charger ended: its links stay until their queues are empty
        or linger_s passed (0: closed now); a newer session keeps them as they are."""
        entry = self._by_charger.get(charger_id)
        if entry is None or entry.session is not session:
            return
        entry.session = None
        linger_s = self._config.linger_s
        queued = entry.queued()
        if self._closing or linger_s <= 0 or queued == 0:
            await self._close(entry, "charger disconnected from the proxy")
            return
        entry.linger_until_s = self._clock.monotonic_s() + linger_s
        LOG.info(
            "%s left with %d message(s) queued for its secondaries: delivering them for up to %g s",
            charger_id,
            queued,
            linger_s,
        )
        entry.linger_task = self._tasks.spawn(self._linger(entry), name=f"{charger_id}:linger")

    async def _linger(self, entry: ChargerLinks) -> None:
        assert entry.linger_until_s is not None
        while True:
            for link in entry.links:
                link.progress.clear()
            queued = entry.queued()
            if queued == 0:
                await self._close(entry, "queue delivered; the charger is not connected")
                return
            remaining_s = entry.linger_until_s - self._clock.monotonic_s()
            if remaining_s <= 0:
                LOG.warning(
                    "%s: %d message(s) still queued for its secondaries after linger_s: they"
                    " wait on disk for the charger's next connection",
                    entry.charger.id,
                    queued,
                )
                await self._close(entry, "the charger is not connected")
                return
            waits: list[asyncio.Future[Any]] = [
                asyncio.ensure_future(link.progress.wait()) for link in entry.links
            ]
            waits.append(asyncio.ensure_future(self._clock.sleep(remaining_s)))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
                await asyncio.gather(*waits, return_exceptions=True)

    async def _close(self, entry: ChargerLinks, reason: str) -> None:
        if self._by_charger.get(entry.charger.id) is entry:
            del self._by_charger[entry.charger.id]
        for link in entry.links:
            await link.close(reason)
        tasks = entry.tasks
        if entry.linger_task is not None and entry.linger_task is not asyncio.current_task():
            tasks = [*tasks, entry.linger_task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close_all(self) -> None:
        self._closing = True
        for entry in list(self._by_charger.values()):
            await self._close(entry, "proxy stopping")
        await self._tasks.cancel_all()

    def lingering(self) -> list[str]:
        """Chargers whose links are up without the charger."""
        return [cid for cid, e in self._by_charger.items() if e.session is None]

    def status(self, charger_id: str) -> dict[str, Any]:
        """A charger away whose links still deliver, for the status page."""
        entry = self._by_charger[charger_id]
        left_s = (
            max(0.0, entry.linger_until_s - self._clock.monotonic_s())
            if entry.linger_until_s is not None
            else None
        )
        return {
            "id": charger_id,
            "connected": False,
            "ocpp_version": entry.protocol.version,
            "linger_left_s": left_s,
            "backends": [
                {
                    "name": link.status.backend,
                    "role": link.status.role,
                    "state": link.status.state,
                    "last_message": link.status.last_message,
                    "last_message_at": link.status.last_message_at,
                    "queue_length": link.queue_length(),
                    "refused": link.status.refused,
                }
                for link in entry.links
            ],
        }
