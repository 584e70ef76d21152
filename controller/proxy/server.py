"""The proxy's WebSocket server: chargers' handshakes (identity, Basic auth, TLS), the primary
connected before a charger's upgrade is accepted, one ChargerSession per charger."""

from __future__ import annotations

import hmac
import http
import logging
import ssl
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
from controller.csms.upgrade import basic_credentials, station_id_from_path
from controller.proxy.config import ChargerConfig, ProxyConfig
from controller.proxy.protocol import PROTOCOLS, SUBPROTOCOLS
from controller.proxy.secondary import client_tls
from controller.proxy.session import ChargerSession
from controller.proxy.store import ProxyStore
from controller.runtime.clock import Clock

LOG = logging.getLogger(__name__)


def offered_subprotocols(headers: Headers) -> list[str]:
    """The OCPP versions a charger offers, in its order, that the proxy speaks."""
    offered = [
        p.strip() for value in headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",")
    ]
    return [p for p in offered if p in PROTOCOLS]


def server_tls(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


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

    async def start(self) -> None:
        c = self.config
        tls = server_tls(c.tls_cert, c.tls_key) if c.tls_cert and c.tls_key else None
        self._server = await serve(
            self._handle,
            c.listen_host,
            c.listen_port,
            subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
            select_subprotocol=self._select_subprotocol,
            process_request=self._process_request,
            process_response=self._process_response,
            ssl=tls,
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
        for ws in self._pending.values():
            await ws.close()
        self._pending.clear()
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
        session = ChargerSession(
            charger=charger,
            ws=ws,
            primary_ws=primary,
            protocol=PROTOCOLS[str(primary.subprotocol)],
            config=self.config,
            store=self.store,
            clock=self._clock,
        )
        self.sessions[charger_id] = session
        try:
            await session.run()
        finally:
            if self.sessions.get(charger_id) is session:
                del self.sessions[charger_id]

    def status(self) -> dict[str, Any]:
        """Every charger (connected, or with messages still queued) and its backends."""
        chargers = [s.status() for s in self.sessions.values()]
        for charger_id in sorted(set(self.store.queued_chargers()) - set(self.sessions)):
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
        return {"chargers": chargers, "refused_handshakes": self.refused_handshakes}
