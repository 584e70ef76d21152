"""The proxy's WebSocket server: chargers' handshakes (identity, Basic auth, TLS), the primary
connected before a charger's upgrade is accepted, one ChargerSession per charger."""

from __future__ import annotations

import hmac
import http
import logging
from collections.abc import Sequence
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from controller.csms.connection import (
    CLOSE_TIMEOUT_S,
    MAX_FRAME_BYTES,
    basic_auth_header,
    station_url,
)
from controller.csms.guard import BurstLog
from controller.csms.upgrade import basic_credentials, station_id_from_path
from controller.proxy.config import ChargerConfig, ProxyConfig
from controller.proxy.linger import SecondaryPool
from controller.proxy.protocol import PROTOCOLS, SUBPROTOCOLS
from controller.proxy.secondary import client_tls
from controller.proxy.session import ChargerSession
from controller.proxy.store import ProxyStore
from controller.proxy.tlsaccept import describe, server_tls, tls_connection_class
from controller.runtime.clock import Clock
from controller.runtime.tasks import TaskGroup

LOG = logging.getLogger(__name__)


def offered_subprotocols(headers: Headers) -> list[str]:
    """The OCPP versions a charger offers, in its order, that the proxy speaks."""
    offered = [
        p.strip() for value in headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",")
    ]
    return [p for p in offered if p in PROTOCOLS]


class ProxyServer:
    """Accepts chargers and relays each one; ``start()`` binds, ``stop()`` closes all."""

    def __init__(self, config: ProxyConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.store = ProxyStore(config.storage)
        self._clock = clock or Clock()
        self._server: Server | None = None
        self.sessions: dict[str, ChargerSession] = {}
        # Primary connections opened during a charger's handshake, until its session starts.
        self._pending: dict[int, ClientConnection] = {}
        self.port = 0
        self.refused_handshakes = 0
        self.tls_failures = 0
        self._tls_failed = BurstLog(LOG, "TLS handshake of a charger failed")
        self._tasks = TaskGroup("proxy:server")
        # Each charger's secondary links: they outlive its connection (proxy.linger_s).
        self.secondaries = SecondaryPool(config, self.store, self._clock)

    def _on_tls_failure(self, peer: str, exc: BaseException) -> None:
        self.tls_failures += 1
        self._tls_failed(f"{peer}: {describe(exc)}")

    async def start(self) -> None:
        c = self.config
        tls = server_tls(c.tls_cert, c.tls_key) if c.tls_cert and c.tls_key else None
        create_connection = (
            tls_connection_class(tls, self._tasks, self._on_tls_failure, c.open_timeout_s)
            if tls is not None
            else None
        )
        self._server = await serve(
            self._handle,
            c.listen_host,
            c.listen_port,
            subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request,
            process_response=self._process_response,
            create_connection=create_connection,
            max_size=MAX_FRAME_BYTES,
            close_timeout=CLOSE_TIMEOUT_S,
            logger=logging.getLogger(__name__ + ".ws"),
        )
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])
        LOG.info(
            "evsed proxy listening on %s://%s:%d",
            "wss" if tls else "ws",
            c.listen_host,
            self.port,
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        for session in list(self.sessions.values()):
            await session.close("proxy stopping")
        if server is not None:
            server.close()
            await server.wait_closed()
        await self._tasks.cancel_all()
        for ws in self._pending.values():
            await ws.close()
        self._pending.clear()
        await self.secondaries.close_all()
        self.store.close()

    # ------------------------------------------------------------------ handshake

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        charger_id = station_id_from_path(request.path)
        charger = self.config.charger(charger_id) if charger_id else None
        if charger is None:
            return self._refuse(connection, http.HTTPStatus.NOT_FOUND, charger_id, "unknown")
        if charger.password is not None:
            creds = basic_credentials(request.headers.get("Authorization", ""))
            if (
                creds is None
                or creds[0] != charger_id
                or not hmac.compare_digest(creds[1].encode(), charger.password.encode())
            ):
                response = self._refuse(
                    connection, http.HTTPStatus.UNAUTHORIZED, charger_id, "bad credentials"
                )
                response.headers["WWW-Authenticate"] = 'Basic realm="evsed proxy"'
                return response
        offered = offered_subprotocols(request.headers)
        if not offered:
            return self._refuse(
                connection, http.HTTPStatus.BAD_REQUEST, charger_id, "no OCPP version offered"
            )
        try:
            primary = await self._connect_primary(charger, offered)
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            # The charger's upgrade fails: it keeps its messages and retries with its own
            # back-off, exactly as when its CSMS is unreachable.
            LOG.warning(
                "%s: primary %s unreachable (%s): refusing the charger",
                charger_id,
                charger.primary.name,
                exc,
            )
            return self._refuse(
                connection, http.HTTPStatus.BAD_GATEWAY, charger_id, "primary unreachable"
            )
        if primary.subprotocol not in offered:
            await primary.close()
            return self._refuse(
                connection, http.HTTPStatus.BAD_GATEWAY, charger_id, "primary picked no version"
            )
        self._pending[id(connection)] = primary
        return None

    def _refuse(
        self, connection: ServerConnection, status: http.HTTPStatus, charger_id: str, why: str
    ) -> Response:
        self.refused_handshakes += 1
        LOG.info("refusing charger %r: %s", charger_id[:64], why)
        return connection.respond(status, f"{why}\n")

    async def _connect_primary(
        self, charger: ChargerConfig, offered: list[str]
    ) -> ClientConnection:
        """The primary connection of ``charger``, offered the charger's versions in its order
        (the primary's pick is what the charger and every backend then speak)."""
        primary = charger.primary
        return await connect(
            station_url(primary.url, charger.id),
            subprotocols=[Subprotocol(p) for p in offered],
            additional_headers=basic_auth_header(charger.id, primary.password_for(charger.id)),
            open_timeout=self.config.open_timeout_s,
            close_timeout=CLOSE_TIMEOUT_S,
            max_size=MAX_FRAME_BYTES,
            ssl=client_tls(primary),
            ping_interval=None,
        )

    def _select_subprotocol(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        primary = self._pending.get(id(connection))
        return primary.subprotocol if primary is not None else None

    async def _process_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> None:
        if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
            primary = self._pending.pop(id(connection), None)
            if primary is not None:
                await primary.close()

    # ------------------------------------------------------------------ sessions

    async def _handle(self, ws: ServerConnection) -> None:
        primary = self._pending.pop(id(ws), None)
        assert ws.request is not None
        charger_id = station_id_from_path(ws.request.path)
        charger = self.config.charger(charger_id)
        if primary is None or charger is None:
            await ws.close(CloseCode.INTERNAL_ERROR, "no primary connection")
            return
        old = self.sessions.get(charger_id)
        if old is not None:
            await old.close("replaced by a new connection of the charger")
        protocol = PROTOCOLS[str(primary.subprotocol)]
        links = await self.secondaries.attach(charger, protocol)
        session = ChargerSession(
            charger=charger,
            ws=ws,
            primary_ws=primary,
            protocol=protocol,
            config=self.config,
            store=self.store,
            secondaries=links.links,
        )
        links.session = session
        self.sessions[charger_id] = session
        try:
            await session.run()
        finally:
            if self.sessions.get(charger_id) is session:
                del self.sessions[charger_id]
            await self.secondaries.detach(charger_id, session)

    def status(self) -> dict[str, Any]:
        """Every charger (connected, or with messages still queued) and its backends."""
        chargers = [s.status() for s in self.sessions.values()]
        for charger_id in sorted(self.secondaries.lingering()):
            if charger_id not in self.sessions:
                chargers.append(self.secondaries.status(charger_id))
        listed = {c["id"] for c in chargers}
        for charger_id in sorted(set(self.store.queued_chargers()) - listed):
            charger = self.config.charger(charger_id)
            backends = charger.secondaries if charger else ()
            chargers.append(
                {
                    "id": charger_id,
                    "connected": False,
                    "backends": [
                        {
                            "name": b.name,
                            "role": b.role.value,
                            "state": "offline",
                            "queue_length": self.store.queue_length(charger_id, b.name),
                        }
                        for b in backends
                    ],
                }
            )
        return {
            "chargers": chargers,
            "refused_handshakes": self.refused_handshakes,
            "tls_failures": self.tls_failures,
        }
